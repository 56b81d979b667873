//! The AMQP 0-9-1 codec of Wharf, with RabbitMQ's extensions: frames, every method,
//! content headers and field tables, decoded from and encoded to `bytes` buffers. Pure:
//! no I/O, no runtime. Every decoder returns an error on malformed input, never panics,
//! and checks a length against what is there before allocating for it.

pub mod constants;
pub mod error;
pub mod field_table;
pub mod frame;
pub mod method;
pub mod properties;
mod wire;

pub use bytestring::ByteString;
pub use constants::ReplyCode;
pub use error::Error;
pub use field_table::{FieldTable, FieldValue};
pub use frame::{Frame, FramePayload};
pub use method::*;
pub use properties::{BasicProperties, ContentHeader, EncodedProperties};

#[cfg(feature = "proptest")]
pub mod strategies {
    //! proptest strategies for the codec's types, for other crates' property tests.
    pub use crate::field_table::strategies::*;
    pub use crate::method::strategies::*;
    pub use crate::properties::strategies::*;
}
