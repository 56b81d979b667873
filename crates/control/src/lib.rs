//! Wharf's administration front end for `wharf ctl`: the commands (a JSON request, a
//! response) and the Unix socket a running broker serves them on. Like the AMQP server,
//! it only calls the core's operations; the HTTP API will call the same ones.

pub mod cluster_lists;
pub mod commands;
pub mod listing;
pub mod socket;

pub use commands::{execute, Request, Response};
pub use socket::{bind, request, serve, SOCKET_FILE};
