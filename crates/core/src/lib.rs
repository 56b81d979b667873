//! Wharf's broker core: virtual hosts, exchanges, bindings, queues and consumers, and the
//! users who may reach them. It knows nothing of sockets or frames: the AMQP server (and
//! later MQTT and HTTP) drive it through these types. It borrows the AMQP crate's value
//! types (field tables, message properties) as its data model, as RabbitMQ's core does.

pub mod access;
pub mod administration;
pub mod broker;
pub mod census;
pub mod cluster;
pub mod connections;
pub mod consuming;
pub mod definitions_json;
pub mod direct_reply;
pub mod durability;
pub mod error;
pub mod exchange;
pub mod flusher;
pub mod forwarding;
pub mod limits;
pub mod message;
pub mod node;
pub mod policy;
pub mod queue;
pub mod queue_arguments;
pub mod quorum;
pub mod quorum_consumers;
pub mod quorum_queue;
pub mod remote_consumers;
pub mod replicated;
pub mod resources;
pub mod timer;
pub mod vhost;

pub use access::{AccessControl, Grant, User};
pub use administration::{AdminError, AdminErrorKind, AdminResult};
pub use broker::Broker;
pub use error::{Error, ErrorKind, Result};
pub use exchange::{Exchange, ExchangeKind};
pub use message::Message;
pub use queue::consumer::{Consumer, Delivery, DeliveryTarget};
pub use queue::{ConnectionId, ConsumerRemoved, Enqueued, GetResult, Queue};
pub use vhost::{ExchangeDeclare, Published, QueueDeclare, QueueDeclared, RouteCache, VHost};
