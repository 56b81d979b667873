//! Wharf's storage: the data directory and its format version, the durable definitions,
//! and the message logs. It knows nothing of AMQP or the network: the core hands
//! it names, flags and opaque bytes.

pub mod data_dir;
pub mod definitions;
pub mod error;
pub mod queue_log;
pub mod quorum_log;
pub mod raft_log;
pub mod segment;
pub mod segment_index;
pub mod write_meter;

pub use data_dir::DataDir;
pub use definitions::{
    BindingDef, Change, DefinitionState, DefinitionStore, Definitions, DestinationKind,
    ExchangeDef, PermissionDef, PolicyDef, QueueDef, QuorumDef, Recovery, TopicPermissionDef,
    UserDef, VhostDef,
};
pub use error::{Result, StoreError};
