//! The queue arguments Wharf acts on, read once at declare and checked as RabbitMQ checks
//! them: a bad value refuses the declare with 406 and RabbitMQ's reason text.
//! (see docs/features.md for the list.)

use wharf_amqp::{ByteString, FieldTable, FieldValue};

pub const MAX_LENGTH: &str = "x-max-length";
pub const MAX_LENGTH_BYTES: &str = "x-max-length-bytes";
pub const OVERFLOW: &str = "x-overflow";
pub const SINGLE_ACTIVE_CONSUMER: &str = "x-single-active-consumer";
pub const MESSAGE_TTL: &str = "x-message-ttl";
pub const EXPIRES: &str = "x-expires";
pub const DEAD_LETTER_EXCHANGE: &str = "x-dead-letter-exchange";
pub const DEAD_LETTER_ROUTING_KEY: &str = "x-dead-letter-routing-key";
pub const DELIVERY_LIMIT: &str = "x-delivery-limit";
pub const QUEUE_TYPE: &str = "x-queue-type";
pub const MAX_PRIORITY: &str = "x-max-priority";
/// Where a new queue is placed on a cluster: `client-local` or `balanced`.
pub const LEADER_LOCATOR: &str = "x-queue-leader-locator";
/// A consumer argument (basic.consume): consumers of higher priority get messages first.
pub const CONSUMER_PRIORITY: &str = "x-priority";

/// Where a cluster places a new queue (RabbitMQ's queue leader locator): on the node its
/// client is connected to, or on the member that holds the fewest queues. RabbitMQ's
/// older names (`random`, `least-leaders`) are read as `balanced`, as RabbitMQ 3.12+
/// reads them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Locator {
    #[default]
    ClientLocal,
    Balanced,
}

impl Locator {
    pub fn named(name: &str) -> Option<Locator> {
        match name {
            "client-local" => Some(Locator::ClientLocal),
            "balanced" | "random" | "least-leaders" => Some(Locator::Balanced),
            _ => None,
        }
    }

    /// The locator a queue's arguments and its policy ask for: the policy's wins, as in
    /// RabbitMQ; a bad argument is refused with RabbitMQ's reason.
    pub fn of(
        arguments: &FieldTable,
        policy: Option<&FieldTable>,
    ) -> Result<Locator, ArgumentError> {
        let from_policy = policy
            .and_then(|p| p.get("queue-leader-locator"))
            .and_then(FieldValue::as_str)
            .and_then(Locator::named);
        let from_argument = match arguments.get(LEADER_LOCATOR) {
            None => None,
            Some(FieldValue::LongStr(text)) => Some(
                std::str::from_utf8(text)
                    .ok()
                    .and_then(Locator::named)
                    .ok_or_else(|| {
                        ArgumentError::value(LEADER_LOCATOR)("invalid_queue_locator_arg".into())
                    })?,
            ),
            Some(other) => {
                let reason = format!("{{unacceptable_type,{}}}", type_name(other));
                return Err(ArgumentError::value(LEADER_LOCATOR)(reason));
            }
        };
        Ok(from_policy.or(from_argument).unwrap_or_default())
    }
}

/// The queue's type as RabbitMQ reports it: "quorum" for one declared so (Wharf keeps it
/// on one node, with quorum queues' delivery counting), "classic" otherwise.
pub fn queue_type(arguments: &FieldTable) -> &'static str {
    match arguments.get(QUEUE_TYPE).and_then(FieldValue::as_str) {
        Some("quorum") => "quorum",
        _ => "classic",
    }
}

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

/// A queue argument RabbitMQ would refuse, with what its 406 text says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgumentError {
    /// "invalid arg '{argument}' for queue ...: {reason}"
    Value {
        argument: &'static str,
        reason: String,
    },
    /// "invalid type '{type_name}' for arg '{argument}' in queue ..." (the dead-letter
    /// exchange's check).
    Type {
        argument: &'static str,
        type_name: &'static str,
    },
}

impl ArgumentError {
    fn value(argument: &'static str) -> impl FnOnce(String) -> ArgumentError {
        move |reason| ArgumentError::Value { argument, reason }
    }

    /// RabbitMQ's 406 text for this error in queue.declare.
    pub fn describe(&self, queue: &str, vhost: &str) -> String {
        match self {
            ArgumentError::Value { argument, reason } => {
                format!("invalid arg '{argument}' for queue '{queue}' in vhost '{vhost}': {reason}")
            }
            ArgumentError::Type {
                argument,
                type_name,
            } => format!(
                "invalid type '{type_name}' for arg '{argument}' in queue '{queue}' in vhost '{vhost}'"
            ),
        }
    }
}

/// The queue argument of deduplication (`queue::dedup`): the window, in milliseconds.
pub const DEDUPLICATION: &str = "x-message-deduplication";
/// The queue argument of deduplication: how many keys are remembered at most.
pub const CACHE_SIZE: &str = "x-cache-size";
/// Keys remembered when `x-cache-size` is not given.
pub const CACHE_SIZE_DEFAULT: u64 = 100_000;

/// The longest TTL or expiry RabbitMQ accepts: ten years of milliseconds.
pub const EXPIRY_MAX_MS: u64 = 315_360_000_000;

/// What a queue at its length limit does with one more message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Overflow {
    /// Drop (or dead-letter) the oldest ready messages.
    #[default]
    DropHead,
    /// Refuse the new message: the publisher gets basic.nack in confirm mode.
    RejectPublish,
    /// As `RejectPublish`, and dead-letter the refused message.
    RejectPublishDlx,
}

/// What a queue's arguments ask of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueSettings {
    /// At most this many ready messages (delivered, unacknowledged ones do not count, as
    /// in RabbitMQ).
    pub max_length: Option<u64>,
    /// At most this many body bytes of ready messages.
    pub max_length_bytes: Option<u64>,
    pub overflow: Overflow,
    /// Only the longest-registered consumer gets messages; the next takes over when it
    /// goes.
    pub single_active_consumer: bool,
    /// Messages expire this many milliseconds after they are enqueued.
    pub message_ttl: Option<u64>,
    /// The queue is deleted once unused (no consumers, no basic.get, no redeclare) for
    /// this many milliseconds.
    pub expires: Option<u64>,
    /// Where messages that leave without being consumed are republished.
    pub dead_letter_exchange: Option<ByteString>,
    /// The routing key they are republished with (their own without one).
    pub dead_letter_routing_key: Option<ByteString>,
    /// A message requeued more times than this is dead-lettered (or dropped).
    pub delivery_limit: Option<u64>,
    /// Declared as a quorum queue: deliveries carry `x-delivery-count` as quorum queues'.
    pub quorum: bool,
    /// A priority queue: messages of priority 0 to this (higher ones count as this), the
    /// highest first.
    pub max_priority: Option<u8>,
    /// Deduplication: (window in ms, keys remembered at most).
    pub deduplication: Option<(u64, u64)>,
    /// `x-overflow` was given: a policy's overflow does not apply.
    overflow_given: bool,
}

impl QueueSettings {
    /// The settings `arguments` make. Err((argument, reason)) names the first bad one.
    pub fn from_arguments(arguments: &FieldTable) -> Result<QueueSettings, ArgumentError> {
        let mut settings = QueueSettings::default();
        let value_error = ArgumentError::value;
        if let Some(value) = arguments.get(MAX_LENGTH) {
            let n = non_negative_integer(value).map_err(value_error(MAX_LENGTH))?;
            settings.max_length = Some(n);
        }
        if let Some(value) = arguments.get(MAX_LENGTH_BYTES) {
            let n = non_negative_integer(value).map_err(value_error(MAX_LENGTH_BYTES))?;
            settings.max_length_bytes = Some(n);
        }
        if let Some(value) = arguments.get(OVERFLOW) {
            settings.overflow = overflow(value).map_err(value_error(OVERFLOW))?;
            settings.overflow_given = true;
        }
        if let Some(value) = arguments.get(SINGLE_ACTIVE_CONSUMER) {
            settings.single_active_consumer = match value {
                FieldValue::Bool(on) => *on,
                other => {
                    let reason = format!("{{unacceptable_type,{}}}", type_name(other));
                    return Err(value_error(SINGLE_ACTIVE_CONSUMER)(reason));
                }
            };
        }
        if let Some(value) = arguments.get(MESSAGE_TTL) {
            let ttl = non_negative_integer(value)
                .and_then(at_most_expiry_max)
                .map_err(value_error(MESSAGE_TTL))?;
            settings.message_ttl = Some(ttl);
        }
        if let Some(value) = arguments.get(EXPIRES) {
            let expires = positive_integer(value)
                .and_then(at_most_expiry_max)
                .map_err(value_error(EXPIRES))?;
            settings.expires = Some(expires);
        }
        if let Some(value) = arguments.get(DEAD_LETTER_EXCHANGE) {
            let name = long_string(value).map_err(|type_name| ArgumentError::Type {
                argument: DEAD_LETTER_EXCHANGE,
                type_name,
            })?;
            settings.dead_letter_exchange = Some(name);
        }
        if let Some(value) = arguments.get(DEAD_LETTER_ROUTING_KEY) {
            let key = long_string(value).map_err(|type_name| {
                value_error(DEAD_LETTER_ROUTING_KEY)(format!("{{unacceptable_type,{type_name}}}"))
            })?;
            if settings.dead_letter_exchange.is_none() {
                let reason = "routing_key_but_no_dlx_defined".to_string();
                return Err(value_error(DEAD_LETTER_ROUTING_KEY)(reason));
            }
            settings.dead_letter_routing_key = Some(key);
        }
        if let Some(value) = arguments.get(DELIVERY_LIMIT) {
            let limit = non_negative_integer(value).map_err(value_error(DELIVERY_LIMIT))?;
            settings.delivery_limit = Some(limit);
        }
        if let Some(value) = arguments.get(MAX_PRIORITY) {
            let max = non_negative_integer(value).map_err(value_error(MAX_PRIORITY))?;
            let max = u8::try_from(max)
                .map_err(|_| value_error(MAX_PRIORITY)(format!("{{max_value_exceeded,{max}}}")))?;
            settings.max_priority = Some(max);
        }
        if let Some(value) = arguments.get(DEDUPLICATION) {
            let window = positive_integer(value).map_err(value_error(DEDUPLICATION))?;
            let capacity = match arguments.get(CACHE_SIZE) {
                Some(value) => positive_integer(value).map_err(value_error(CACHE_SIZE))?,
                None => CACHE_SIZE_DEFAULT,
            };
            settings.deduplication = Some((window, capacity));
        }
        match arguments.get(QUEUE_TYPE) {
            None => {}
            Some(FieldValue::LongStr(text)) => match std::str::from_utf8(text) {
                Ok("classic" | "stream") => {}
                Ok("quorum") => settings.quorum = true,
                Ok(other) => {
                    return Err(ArgumentError::value(QUEUE_TYPE)(format!(
                        "\"unsupported queue type '{other}'\""
                    )))
                }
                Err(_) => {
                    return Err(ArgumentError::value(QUEUE_TYPE)(
                        "\"unsupported queue type\"".to_string(),
                    ))
                }
            },
            Some(other) => {
                return Err(ArgumentError::value(QUEUE_TYPE)(format!(
                    "{{unacceptable_type,{}}}",
                    type_name(other)
                )))
            }
        }
        // Checked here, read where a cluster places the queue.
        Locator::of(arguments, None)?;
        Ok(settings)
    }

    /// These settings with a policy's definition (checked when the policy was set) laid
    /// over them as RabbitMQ resolves the two: for the numeric limits the smaller value
    /// wins, for the rest the queue's own argument does.
    pub fn with_policy(mut self, policy: &FieldTable) -> QueueSettings {
        let number = |key: &str| {
            policy
                .get(key)
                .and_then(FieldValue::as_i64)
                .map(|n| n as u64)
        };
        let text = |key: &str| {
            policy
                .get(key)
                .and_then(FieldValue::as_str)
                .map(ByteString::from)
        };
        let smaller = |own: Option<u64>, key: &str| match (own, number(key)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.message_ttl = smaller(self.message_ttl, "message-ttl");
        self.expires = smaller(self.expires, "expires");
        self.max_length = smaller(self.max_length, "max-length");
        self.max_length_bytes = smaller(self.max_length_bytes, "max-length-bytes");
        self.delivery_limit = smaller(self.delivery_limit, "delivery-limit");
        if !self.overflow_given {
            if let Some(value) = policy.get("overflow") {
                self.overflow = overflow(value).unwrap_or_default();
            }
        }
        if self.dead_letter_exchange.is_none() {
            self.dead_letter_exchange = text("dead-letter-exchange");
        }
        if self.dead_letter_routing_key.is_none() {
            self.dead_letter_routing_key = text("dead-letter-routing-key");
        }
        self
    }

    /// Whether redelivered messages carry an `x-delivery-count` header.
    pub fn counts_deliveries(&self) -> bool {
        self.delivery_limit.is_some() || self.quorum
    }
}

fn positive_integer(value: &FieldValue) -> Result<u64, String> {
    match value.as_i64() {
        Some(n) if n > 0 => Ok(n as u64),
        Some(0) => Err("{value_zero,0}".to_string()),
        Some(n) => Err(format!("{{value_negative,{n}}}")),
        None => Err(format!("\"expected integer, got {}\"", type_name(value))),
    }
}

fn at_most_expiry_max(ms: u64) -> Result<u64, String> {
    if ms > EXPIRY_MAX_MS {
        return Err(format!("{{value_too_large,{ms}}}"));
    }
    Ok(ms)
}

/// A long string's text; Err names the type it was instead (text that is not UTF-8
/// counts as binary: a name must be text).
fn long_string(value: &FieldValue) -> Result<ByteString, &'static str> {
    match value {
        FieldValue::LongStr(bytes) => ByteString::try_from(bytes.clone()).map_err(|_| "binary"),
        other => Err(type_name(other)),
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
        for (argument, value, reason) in cases {
            assert_eq!(
                QueueSettings::from_arguments(&table(argument, value)),
                Err(ArgumentError::Value {
                    argument,
                    reason: reason.to_string()
                })
            );
        }
    }

    #[test]
    fn reads_ttls_and_dead_lettering_with_rabbitmqs_reasons() {
        let long = |s: &'static str| FieldValue::LongStr(Bytes::from_static(s.as_bytes()));
        let ttl = QueueSettings::from_arguments(&table(MESSAGE_TTL, FieldValue::I8(0))).unwrap();
        assert_eq!(ttl.message_ttl, Some(0));
        let max = FieldValue::I64(EXPIRY_MAX_MS as i64);
        let expires = QueueSettings::from_arguments(&table(EXPIRES, max)).unwrap();
        assert_eq!(expires.expires, Some(EXPIRY_MAX_MS));
        let mut dlx = table(DEAD_LETTER_EXCHANGE, long("dlx"));
        dlx.insert(DEAD_LETTER_ROUTING_KEY, long("rk"));
        let dlx = QueueSettings::from_arguments(&dlx).unwrap();
        assert_eq!(dlx.dead_letter_exchange.as_deref(), Some("dlx"));
        assert_eq!(dlx.dead_letter_routing_key.as_deref(), Some("rk"));

        let value_cases = [
            (MESSAGE_TTL, FieldValue::I32(-1), "{value_negative,-1}"),
            (
                MESSAGE_TTL,
                FieldValue::F64(1.5),
                "\"expected integer, got double\"",
            ),
            (
                MESSAGE_TTL,
                FieldValue::I64(EXPIRY_MAX_MS as i64 + 1),
                "{value_too_large,315360000001}",
            ),
            (EXPIRES, FieldValue::I32(0), "{value_zero,0}"),
            (EXPIRES, FieldValue::I32(-5), "{value_negative,-5}"),
            (EXPIRES, long("x"), "\"expected integer, got longstr\""),
            (
                MAX_PRIORITY,
                FieldValue::I32(256),
                "{max_value_exceeded,256}",
            ),
            (MAX_PRIORITY, FieldValue::I32(-1), "{value_negative,-1}"),
            (MAX_PRIORITY, long("a"), "\"expected integer, got longstr\""),
            (
                DEAD_LETTER_ROUTING_KEY,
                long("rk"),
                "routing_key_but_no_dlx_defined",
            ),
        ];
        for (argument, value, reason) in value_cases {
            assert_eq!(
                QueueSettings::from_arguments(&table(argument, value)),
                Err(ArgumentError::Value {
                    argument,
                    reason: reason.to_string()
                })
            );
        }
        let mut bad_key = table(DEAD_LETTER_EXCHANGE, long("dlx"));
        bad_key.insert(DEAD_LETTER_ROUTING_KEY, FieldValue::I32(5));
        assert_eq!(
            QueueSettings::from_arguments(&bad_key),
            Err(ArgumentError::Value {
                argument: DEAD_LETTER_ROUTING_KEY,
                reason: "{unacceptable_type,signedint}".to_string()
            })
        );
        let error = QueueSettings::from_arguments(&table(DEAD_LETTER_EXCHANGE, FieldValue::I32(5)))
            .unwrap_err();
        assert_eq!(
            error.describe("q", "/"),
            "invalid type 'signedint' for arg 'x-dead-letter-exchange' in queue 'q' in vhost '/'"
        );
    }
}
