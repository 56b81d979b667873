//! The queue arguments Wharf acts on, read once at declare and checked as RabbitMQ checks
//! them: a bad value refuses the declare with 406 and RabbitMQ's reason text.
//! (x-max-length, x-overflow, x-single-active-consumer; see docs/features.md.)

use wharf_amqp::{FieldTable, FieldValue};

pub const MAX_LENGTH: &str = "x-max-length";
pub const OVERFLOW: &str = "x-overflow";
pub const SINGLE_ACTIVE_CONSUMER: &str = "x-single-active-consumer";
/// A consumer argument (basic.consume): consumers of higher priority get messages first.
pub const CONSUMER_PRIORITY: &str = "x-priority";

/// A consumer's `x-priority` (0 without one); any integer, negative ones included.
pub fn consumer_priority(arguments: &FieldTable) -> Result<i64, (&'static str, String)> {
    match arguments.get(CONSUMER_PRIORITY) {
        None => Ok(0),
        Some(value) => value.as_i64().ok_or_else(|| {
            let reason = format!("\"expected integer, got {}\"", type_name(value));
            (CONSUMER_PRIORITY, reason)
        }),
    }
}

/// What a queue at its length limit does with one more message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Overflow {
    /// Drop (later: dead-letter) the oldest ready messages.
    #[default]
    DropHead,
    /// Refuse the new message: the publisher gets basic.nack in confirm mode.
    RejectPublish,
    /// As `RejectPublish`, and dead-letter the refused message (without a dead-letter
    /// exchange, which Wharf does not have yet, the same as `RejectPublish`).
    RejectPublishDlx,
}

/// What a queue's arguments ask of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueSettings {
    /// At most this many ready messages (delivered, unacknowledged ones do not count, as
    /// in RabbitMQ).
    pub max_length: Option<u64>,
    pub overflow: Overflow,
    /// Only the longest-registered consumer gets messages; the next takes over when it
    /// goes.
    pub single_active_consumer: bool,
}

impl QueueSettings {
    /// The settings `arguments` make. Err((argument, reason)) names the first bad one.
    pub fn from_arguments(arguments: &FieldTable) -> Result<QueueSettings, (&'static str, String)> {
        let mut settings = QueueSettings::default();
        if let Some(value) = arguments.get(MAX_LENGTH) {
            let n = non_negative_integer(value).map_err(|reason| (MAX_LENGTH, reason))?;
            settings.max_length = Some(n);
        }
        if let Some(value) = arguments.get(OVERFLOW) {
            settings.overflow = overflow(value).map_err(|reason| (OVERFLOW, reason))?;
        }
        if let Some(value) = arguments.get(SINGLE_ACTIVE_CONSUMER) {
            settings.single_active_consumer = match value {
                FieldValue::Bool(on) => *on,
                other => {
                    let reason = format!("{{unacceptable_type,{}}}", type_name(other));
                    return Err((SINGLE_ACTIVE_CONSUMER, reason));
                }
            };
        }
        Ok(settings)
    }
}

fn non_negative_integer(value: &FieldValue) -> Result<u64, String> {
    match value.as_i64() {
        Some(n) if n >= 0 => Ok(n as u64),
        Some(n) => Err(format!("{{value_negative,{n}}}")),
        None => Err(format!("\"expected integer, got {}\"", type_name(value))),
    }
}

fn overflow(value: &FieldValue) -> Result<Overflow, String> {
    match value {
        FieldValue::LongStr(text) => match &text[..] {
            b"drop-head" => Ok(Overflow::DropHead),
            b"reject-publish" => Ok(Overflow::RejectPublish),
            b"reject-publish-dlx" => Ok(Overflow::RejectPublishDlx),
            _ => Err("invalid_overflow".to_string()),
        },
        other => Err(format!("{{unacceptable_type,{}}}", type_name(other))),
    }
}

/// RabbitMQ's name for a field value's type, as its error texts write it.
pub fn type_name(value: &FieldValue) -> &'static str {
    match value {
        FieldValue::Bool(_) => "bool",
        FieldValue::I8(_) => "byte",
        FieldValue::U8(_) => "unsignedbyte",
        FieldValue::I16(_) => "short",
        FieldValue::U16(_) => "unsignedshort",
        FieldValue::I32(_) => "signedint",
        FieldValue::U32(_) => "unsignedint",
        FieldValue::I64(_) => "long",
        FieldValue::F32(_) => "float",
        FieldValue::F64(_) => "double",
        FieldValue::Decimal { .. } => "decimal",
        FieldValue::LongStr(_) => "longstr",
        FieldValue::Array(_) => "array",
        FieldValue::Timestamp(_) => "timestamp",
        FieldValue::Table(_) => "table",
        FieldValue::Void => "void",
        FieldValue::ByteArray(_) => "binary",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn table(key: &str, value: FieldValue) -> FieldTable {
        let mut t = FieldTable::new();
        t.insert(key, value);
        t
    }

    #[test]
    fn reads_limits_and_refuses_bad_values_with_rabbitmqs_reasons() {
        assert_eq!(
            QueueSettings::from_arguments(&FieldTable::new()),
            Ok(QueueSettings::default())
        );
        let limits = QueueSettings::from_arguments(&table(MAX_LENGTH, FieldValue::I64(5))).unwrap();
        assert_eq!(limits.max_length, Some(5));
        let overflow = FieldValue::LongStr(Bytes::from_static(b"reject-publish"));
        let limits = QueueSettings::from_arguments(&table(OVERFLOW, overflow)).unwrap();
        assert_eq!(limits.overflow, Overflow::RejectPublish);
        let cases = [
            (MAX_LENGTH, FieldValue::I32(-1), "{value_negative,-1}"),
            (
                MAX_LENGTH,
                FieldValue::LongStr(Bytes::from_static(b"10")),
                "\"expected integer, got longstr\"",
            ),
            (
                OVERFLOW,
                FieldValue::LongStr(Bytes::from_static(b"foo")),
                "invalid_overflow",
            ),
            (
                OVERFLOW,
                FieldValue::I32(5),
                "{unacceptable_type,signedint}",
            ),
        ];
        for (key, value, reason) in cases {
            assert_eq!(
                QueueSettings::from_arguments(&table(key, value)),
                Err((key, reason.to_string()))
            );
        }
    }
}
