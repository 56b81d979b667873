//! The `x-consistent-hash` exchange (RabbitMQ's consistent-hash exchange plugin): each
//! message goes to exactly one of the bound destinations, picked by a hash of its routing
//! key (or of a header, or of a property), so that the same key always reaches the same
//! destination while the bindings stay the same. A binding's key is its weight: a
//! destination bound with weight 3 takes three buckets and so about three times the
//! messages of one bound with weight 1. Adding a binding moves only the share of keys
//! that its new buckets take.
//!
//! Buckets are picked with jump consistent hashing (Lamping and Veach) over a fixed
//! 64-bit hash of the key, so the mapping is the same after a restart. It is not
//! RabbitMQ's hash: the same key may reach a different queue than it would in RabbitMQ,
//! with the same guarantees.

use wharf_amqp::{BasicProperties, ByteString, FieldTable, FieldValue};

use super::Destination;
use crate::message::Message;

/// The exchange argument naming the header to hash instead of the routing key.
pub const HASH_HEADER: &str = "hash-header";
/// The exchange argument naming the property to hash instead of the routing key.
pub const HASH_PROPERTY: &str = "hash-property";

const PROPERTIES: [&str; 3] = ["correlation_id", "message_id", "timestamp"];

/// What the exchange hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    RoutingKey,
    Header(ByteString),
    Property(ByteString),
}

impl HashOn {
    /// Reads the exchange arguments, refusing what RabbitMQ refuses (with its text).
    pub fn from_arguments(arguments: &FieldTable) -> Result<HashOn, String> {
        let text = |value: &FieldValue| match value {
            FieldValue::LongStr(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            other => format!("{other:?}"),
        };
        match (arguments.get(HASH_HEADER), arguments.get(HASH_PROPERTY)) {
            (None, None) => Ok(HashOn::RoutingKey),
            (Some(header), None) => Ok(HashOn::Header(ByteString::from(text(header)))),
            (None, Some(property)) => {
                let property = text(property);
                if PROPERTIES.contains(&property.as_str()) {
                    Ok(HashOn::Property(ByteString::from(property)))
                } else {
                    Err(format!("Unsupported property: {property}"))
                }
            }
            (Some(_), Some(_)) => {
                Err("hash-header and hash-property are mutually exclusive".to_string())
            }
        }
    }

    /// The bytes to hash for `message`; None when the header or property is absent (the
    /// message then goes nowhere, as in RabbitMQ).
    fn key<'h>(
        &self,
        message: &Message,
        headers: &dyn Fn() -> Option<&'h FieldTable>,
    ) -> Option<Vec<u8>> {
        match self {
            HashOn::RoutingKey => Some(message.routing_key.as_bytes().to_vec()),
            HashOn::Header(name) => {
                let headers = headers()?;
                let value = headers.get(name)?;
                Some(match value {
                    FieldValue::LongStr(bytes) => bytes.to_vec(),
                    other => format!("{other:?}").into_bytes(),
                })
            }
            HashOn::Property(name) => {
                let properties: BasicProperties = message.properties.decode().ok()?;
                match &**name {
                    "message_id" => properties.message_id.map(|v| v.as_bytes().to_vec()),
                    "correlation_id" => properties.correlation_id.map(|v| v.as_bytes().to_vec()),
                    "timestamp" => properties.timestamp.map(|t| t.to_string().into_bytes()),
                    _ => None,
                }
            }
        }
    }
}

/// A binding's weight: its routing key, a positive integer. Err is RabbitMQ's reason.
pub fn weight(binding_key: &str) -> Result<u32, String> {
    let digits = binding_key.strip_prefix(['+', '-']).unwrap_or(binding_key);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "The binding key must be an integer: <<\"{}\">>",
            binding_key.escape_default()
        ));
    }
    let negative = binding_key.starts_with('-');
    let value: u64 = digits.parse().unwrap_or(u64::MAX);
    if negative || value < 1 {
        return Err("The binding key must be greater than 0".to_string());
    }
    // More buckets than this would only cost memory: a weight is a share.
    Ok(value.min(u64::from(WEIGHT_MAX)) as u32)
}

/// The most buckets one binding takes.
pub const WEIGHT_MAX: u32 = 10_000;

/// The buckets, in binding order: each destination as many times as its weight.
#[derive(Debug, Default)]
pub struct Ring {
    buckets: Vec<Destination>,
}

impl Ring {
    /// Rebuilds the buckets from the bindings (key = weight). Buckets are laid out in the
    /// order of the destinations' names, not of binding: the same bindings make the same
    /// ring however they were made (a restart restores them in another order).
    pub fn rebuild<'b>(&mut self, bindings: impl Iterator<Item = (&'b str, &'b Destination)>) {
        let mut bindings: Vec<(&str, &Destination)> = bindings.collect();
        bindings.sort_by(|(ka, a), (kb, b)| (a.name(), *ka).cmp(&(b.name(), *kb)));
        self.buckets.clear();
        for (key, destination) in bindings {
            // Keys were checked at bind time; a restored one that is not a weight counts 1.
            let weight = weight(key).unwrap_or(1);
            for _ in 0..weight {
                self.buckets.push(destination.clone());
            }
        }
    }

    pub fn pick<'h>(
        &self,
        hash_on: &HashOn,
        message: &Message,
        headers: &dyn Fn() -> Option<&'h FieldTable>,
    ) -> Option<&Destination> {
        if self.buckets.is_empty() {
            return None;
        }
        let key = hash_on.key(message, headers)?;
        let bucket = jump_hash(hash64(&key), self.buckets.len() as u32);
        self.buckets.get(bucket as usize)
    }
}

/// FNV-1a, then a 64-bit finalizer so that keys differing only at the end spread.
fn hash64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}

/// Jump consistent hash: a bucket in 0..buckets for `key`; growing `buckets` by one moves
/// only the keys that land in the new bucket.
fn jump_hash(mut key: u64, buckets: u32) -> u32 {
    let mut b: i64 = -1;
    let mut j: i64 = 0;
    while j < i64::from(buckets) {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_positive_integers_with_rabbitmqs_reasons() {
        assert_eq!(weight("1"), Ok(1));
        assert_eq!(weight("+20"), Ok(20));
        assert_eq!(weight("999999999999"), Ok(WEIGHT_MAX));
        assert_eq!(
            weight("0"),
            Err("The binding key must be greater than 0".into())
        );
        assert_eq!(
            weight("-3"),
            Err("The binding key must be greater than 0".into())
        );
        assert_eq!(
            weight("abc"),
            Err("The binding key must be an integer: <<\"abc\">>".into())
        );
        assert_eq!(
            weight(""),
            Err("The binding key must be an integer: <<\"\">>".into())
        );
    }

    #[test]
    fn jump_hash_stays_in_range_and_moves_few_keys_when_growing() {
        let keys: Vec<u64> = (0..10_000u64).map(|k| hash64(&k.to_be_bytes())).collect();
        for n in 1..20 {
            assert!(keys.iter().all(|&k| jump_hash(k, n) < n));
        }
        // From 10 to 11 buckets about a tenth of the keys move, all to the new bucket.
        let moved: Vec<u64> = keys
            .iter()
            .copied()
            .filter(|&k| jump_hash(k, 10) != jump_hash(k, 11))
            .collect();
        assert!(moved.iter().all(|&k| jump_hash(k, 11) == 10));
        assert!((600..1_200).contains(&moved.len()), "moved {}", moved.len());
    }

    #[test]
    fn arguments_choose_what_is_hashed() {
        let mut args = FieldTable::new();
        assert_eq!(HashOn::from_arguments(&args), Ok(HashOn::RoutingKey));
        args.insert(HASH_PROPERTY, FieldValue::LongStr("message_id".into()));
        assert_eq!(
            HashOn::from_arguments(&args),
            Ok(HashOn::Property("message_id".into()))
        );
        args.insert(HASH_HEADER, FieldValue::LongStr("h".into()));
        assert_eq!(
            HashOn::from_arguments(&args),
            Err("hash-header and hash-property are mutually exclusive".into())
        );
        let mut args = FieldTable::new();
        args.insert(HASH_PROPERTY, FieldValue::LongStr("app_id".into()));
        assert_eq!(
            HashOn::from_arguments(&args),
            Err("Unsupported property: app_id".into())
        );
    }
}
