//! Errors the core reports to whichever protocol drives it: a kind, which each front end
//! maps to its own terms (an AMQP reply code and whether it closes the channel or the
//! connection; an HTTP status), and RabbitMQ's words for what happened. [`Error::text`] is
//! the full AMQP reply text RabbitMQ would send ("NOT_FOUND - no queue ..."), so clients
//! that match on it keep working; the HTTP API, as RabbitMQ's, gives the words alone.

use std::fmt;

/// The name of [`ErrorKind::NotLeader`]: what a quorum queue's former leader answers
/// another node's request or consume with; the asking node finds the new leader and asks
/// again.
pub const NOT_LEADER: &str = "QUORUM_QUEUE_NOT_LEADER";

/// What went wrong, in the protocol-neutral terms of the core. The server maps each kind
/// to its AMQP reply code (and whether it closes the channel or the connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    AccessRefused,
    NotFound,
    ResourceLocked,
    PreconditionFailed,
    NotAllowed,
    CommandInvalid,
    NotImplemented,
    ResourceError,
    InternalError,
    /// The cluster has no majority this node can reach: the change was not made. A
    /// channel error for AMQP clients (PRECONDITION_FAILED, so that only the channel
    /// closes), 503 for the HTTP API.
    Unavailable,
    /// Between cluster nodes: the node asked does not lead the quorum queue (any more);
    /// the asking node finds the leader and asks again. Shown to a client only when no
    /// leader was found in time, as [`ErrorKind::Unavailable`] is.
    NotLeader,
}

impl ErrorKind {
    /// The symbolic name RabbitMQ prefixes its reply texts with.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::AccessRefused => "ACCESS_REFUSED",
            ErrorKind::NotFound => "NOT_FOUND",
            ErrorKind::ResourceLocked => "RESOURCE_LOCKED",
            ErrorKind::PreconditionFailed => "PRECONDITION_FAILED",
            ErrorKind::NotAllowed => "NOT_ALLOWED",
            ErrorKind::CommandInvalid => "COMMAND_INVALID",
            ErrorKind::NotImplemented => "NOT_IMPLEMENTED",
            ErrorKind::ResourceError => "RESOURCE_ERROR",
            ErrorKind::InternalError => "INTERNAL_ERROR",
            ErrorKind::Unavailable => "PRECONDITION_FAILED",
            ErrorKind::NotLeader => NOT_LEADER,
        }
    }

    /// The kind a [`ErrorKind::name`] names.
    pub fn from_name(name: &str) -> Option<ErrorKind> {
        [
            ErrorKind::AccessRefused,
            ErrorKind::NotFound,
            ErrorKind::ResourceLocked,
            ErrorKind::PreconditionFailed,
            ErrorKind::NotAllowed,
            ErrorKind::CommandInvalid,
            ErrorKind::NotImplemented,
            ErrorKind::ResourceError,
            ErrorKind::InternalError,
            ErrorKind::NotLeader,
        ]
        .into_iter()
        .find(|kind| kind.name() == name)
    }
}

/// A refused operation: its kind and RabbitMQ's words for it ("no queue 'q' in vhost '/'").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub detail: String,
}

impl Error {
    pub fn new(kind: ErrorKind, detail: impl fmt::Display) -> Self {
        Error {
            kind,
            detail: detail.to_string(),
        }
    }

    /// The AMQP reply text: "NOT_FOUND - no queue 'q' in vhost '/'".
    pub fn text(&self) -> String {
        format!("{} - {}", self.kind.name(), self.detail)
    }

    pub fn not_found(detail: impl fmt::Display) -> Self {
        Self::new(ErrorKind::NotFound, detail)
    }

    pub fn precondition(detail: impl fmt::Display) -> Self {
        Self::new(ErrorKind::PreconditionFailed, detail)
    }

    pub fn access_refused(detail: impl fmt::Display) -> Self {
        Self::new(ErrorKind::AccessRefused, detail)
    }

    pub fn locked(detail: impl fmt::Display) -> Self {
        Self::new(ErrorKind::ResourceLocked, detail)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} - {}", self.kind.name(), self.detail)
    }
}

impl std::error::Error for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;
