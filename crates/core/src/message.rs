//! A published message as the core sees it: where it was published, its properties and
//! its body. Immutable once published and shared (`Arc`) by every queue it is routed to,
//! so a fanout to ten queues holds one copy of the body.

use bytes::Bytes;
use wharf_amqp::{ByteString, EncodedProperties};

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub exchange: ByteString,
    pub routing_key: ByteString,
    pub properties: EncodedProperties,
    pub body: Bytes,
}

impl Message {
    /// delivery_mode 2 asks for the message to survive a restart (when its queue is durable).
    pub fn is_persistent(&self) -> bool {
        self.properties.delivery_mode() == Some(2)
    }

    pub fn body_bytes(&self) -> usize {
        self.body.len()
    }

    /// The per-message TTL the `expiration` property asks for, in milliseconds. Publishing
    /// refuses an expiration that is not one (see [`parse_expiration`]).
    pub fn ttl_ms(&self) -> Option<u64> {
        parse_expiration(self.properties.expiration()?).ok()
    }
}

/// The routing keys a publisher selected besides the routing key (RabbitMQ's
/// sender-selected distribution): the `CC` header's, kept on the message, and the `BCC`
/// header's, which no consumer sees.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SenderRoutes {
    pub cc: Vec<ByteString>,
    pub bcc: Vec<ByteString>,
    /// The message has a `BCC` header (perhaps empty), to be taken off.
    pub has_bcc: bool,
}

impl SenderRoutes {
    /// The `CC` and `BCC` keys of these properties: arrays whose string elements count
    /// (others are ignored, as RabbitMQ does). Err is RabbitMQ's reason for a header
    /// that is not an array.
    pub fn of(properties: &EncodedProperties) -> std::result::Result<SenderRoutes, String> {
        let mut routes = SenderRoutes::default();
        if !properties.has_sender_routes() {
            return Ok(routes);
        }
        let Some(headers) = properties.decode().ok().and_then(|p| p.headers) else {
            return Ok(routes);
        };
        for (name, into) in [("CC", &mut routes.cc), ("BCC", &mut routes.bcc)] {
            match headers.get(name) {
                None => continue,
                Some(wharf_amqp::FieldValue::Array(keys)) => into.extend(
                    keys.iter()
                        .filter_map(wharf_amqp::FieldValue::as_str)
                        .map(ByteString::from),
                ),
                Some(other) => {
                    return Err(format!(
                        "{{unacceptable_type_in_header,\"{name}\",{}}}",
                        crate::queue_arguments::type_name(other)
                    ))
                }
            }
            routes.has_bcc |= name == "BCC";
        }
        Ok(routes)
    }

    /// The properties without their `BCC` header, as consumers receive them.
    pub fn without_bcc(properties: &EncodedProperties) -> EncodedProperties {
        let mut decoded = properties.decode().unwrap_or_default();
        if let Some(headers) = decoded.headers.as_mut() {
            headers.remove("BCC");
        }
        decoded.into()
    }
}

impl Message {
    /// The message with header `name` set to `value` (added, or replaced).
    pub fn with_header(&self, name: &str, value: wharf_amqp::FieldValue) -> Message {
        let mut properties = self.properties.decode().unwrap_or_default();
        properties
            .headers
            .get_or_insert_with(Default::default)
            .insert(name, value);
        Message {
            exchange: self.exchange.clone(),
            routing_key: self.routing_key.clone(),
            properties: properties.into(),
            body: self.body.clone(),
        }
    }

    /// The message with an `x-delivery-count` header: how many deliveries of it ended in
    /// a requeue, as quorum queues report it.
    pub fn with_delivery_count(&self, count: u32) -> Message {
        self.with_header(
            "x-delivery-count",
            wharf_amqp::FieldValue::I64(i64::from(count)),
        )
    }

    /// The message's `CC` and `BCC` keys (see [`SenderRoutes::of`]).
    pub fn sender_routes(&self) -> std::result::Result<SenderRoutes, String> {
        SenderRoutes::of(&self.properties)
    }
}

/// Reads an `expiration` property as RabbitMQ does (Erlang's `string:to_integer`, then a
/// range check): an optional sign and decimal digits, nothing after them, at least 0 and
/// at most ten years of milliseconds. Err gives RabbitMQ's reason, for its 406 text.
pub fn parse_expiration(text: &str) -> std::result::Result<u64, String> {
    let negative = text.starts_with('-');
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    let end = unsigned
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(unsigned.len());
    if end == 0 {
        return Err("no_integer".to_string());
    }
    if end < unsigned.len() {
        let rest = unsigned[end..].replace('\\', "\\\\").replace('"', "\\\"");
        return Err(format!("{{leftover_string,\"{rest}\"}}"));
    }
    let digits = unsigned.trim_start_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits };
    let value: Option<u64> = digits.parse().ok();
    if negative && digits != "0" {
        return Err(format!("{{value_negative,-{digits}}}"));
    }
    match value {
        Some(ms) if ms <= crate::queue_arguments::EXPIRY_MAX_MS => Ok(ms),
        _ => Err(format!("{{value_too_large,{digits}}}")),
    }
}

/// The version byte that starts a stored message record: 1 without an expiry, 2 with one
/// (the expiry follows the version byte, 8 bytes, milliseconds since the Unix epoch).
const RECORD_VERSION: u8 = 1;
const RECORD_VERSION_EXPIRING: u8 = 2;

impl Message {
    /// The message as stored in a queue's log: version, the expiry if it has one,
    /// exchange, routing key, the properties in their AMQP encoding, body.
    pub fn encode_record(&self, expires_at: Option<u64>) -> Vec<u8> {
        let mut out = self.encode_record_head(expires_at);
        out.extend_from_slice(&self.body);
        out
    }

    /// A stored record but for the body, which follows it: stored as two parts, a body
    /// is written from where it is rather than copied.
    pub fn encode_record_head(&self, expires_at: Option<u64>) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.properties.as_bytes().len());
        match expires_at {
            None => out.extend_from_slice(&[RECORD_VERSION]),
            Some(at) => {
                out.extend_from_slice(&[RECORD_VERSION_EXPIRING]);
                out.extend_from_slice(&at.to_be_bytes());
            }
        }
        put_short(&mut out, &self.exchange);
        put_short(&mut out, &self.routing_key);
        let properties_at = out.len();
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(self.properties.as_bytes());
        let properties_len = (out.len() - properties_at - 4) as u32;
        out[properties_at..properties_at + 4].copy_from_slice(&properties_len.to_be_bytes());
        out
    }

    /// Reads a stored record back, with its expiry; None if it is not one this version
    /// wrote.
    pub fn decode_record(record: Vec<u8>) -> Option<(Message, Option<u64>)> {
        Message::decode_record_bytes(Bytes::from(record))
    }

    /// [`Message::decode_record`] of a record already in shared bytes: the message's
    /// body and properties are slices of it, not copies.
    pub fn decode_record_bytes(mut bytes: Bytes) -> Option<(Message, Option<u64>)> {
        let expires_at = match bytes.first() {
            Some(&RECORD_VERSION) => {
                let _ = bytes.split_to(1);
                None
            }
            Some(&RECORD_VERSION_EXPIRING) if bytes.len() >= 9 => {
                let at = u64::from_be_bytes(bytes[1..9].try_into().ok()?);
                let _ = bytes.split_to(9);
                Some(at)
            }
            _ => return None,
        };
        let exchange = take_short(&mut bytes)?;
        let routing_key = take_short(&mut bytes)?;
        if bytes.len() < 4 {
            return None;
        }
        let properties_len = u32::from_be_bytes(bytes[..4].try_into().ok()?) as usize;
        let _ = bytes.split_to(4);
        if bytes.len() < properties_len {
            return None;
        }
        let properties = EncodedProperties::parse(bytes.split_to(properties_len)).ok()?;
        let message = Message {
            exchange,
            routing_key,
            properties,
            body: bytes,
        };
        Some((message, expires_at))
    }
}

fn put_short(out: &mut Vec<u8>, s: &str) {
    let len = s.len().min(255);
    out.extend_from_slice(&[len as u8]);
    out.extend_from_slice(&s.as_bytes()[..len]);
}

fn take_short(bytes: &mut Bytes) -> Option<ByteString> {
    let len = usize::from(*bytes.first()?);
    if bytes.len() < 1 + len {
        return None;
    }
    let _ = bytes.split_to(1);
    ByteString::try_from(bytes.split_to(len)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_amqp::{BasicProperties, FieldTable, FieldValue};

    #[test]
    fn records_round_trip() {
        let mut headers = FieldTable::new();
        headers.insert("k", FieldValue::I32(7));
        let message = Message {
            exchange: "amq.topic".into(),
            routing_key: "a.b".into(),
            properties: BasicProperties {
                delivery_mode: Some(2),
                headers: Some(headers),
                message_id: Some("m1".into()),
                ..Default::default()
            }
            .into(),
            body: Bytes::from_static(b"hello"),
        };
        for expires_at in [None, Some(1_700_000_000_123)] {
            let record = message.encode_record(expires_at);
            assert_eq!(
                Message::decode_record(record.clone()),
                Some((message.clone(), expires_at))
            );
            for cut in 0..record.len() - 5 {
                assert_eq!(
                    Message::decode_record(record[..cut].to_vec()),
                    None,
                    "cut at {cut}"
                );
            }
            let mut other_version = record;
            other_version[0] = 9;
            assert_eq!(Message::decode_record(other_version), None);
        }
    }

    #[test]
    fn expirations_parse_as_rabbitmq_reads_them() {
        assert_eq!(parse_expiration("0"), Ok(0));
        assert_eq!(parse_expiration("60000"), Ok(60_000));
        assert_eq!(parse_expiration("+5"), Ok(5));
        assert_eq!(parse_expiration("00100"), Ok(100));
        assert_eq!(parse_expiration("-0"), Ok(0));
        assert_eq!(parse_expiration("315360000000"), Ok(315_360_000_000));
        let refused = [
            ("-1", "{value_negative,-1}"),
            ("-007", "{value_negative,-7}"),
            ("", "no_integer"),
            ("abc", "no_integer"),
            (" 100", "no_integer"),
            ("+-1", "no_integer"),
            ("10.5", "{leftover_string,\".5\"}"),
            ("100 ", "{leftover_string,\" \"}"),
            ("1e3", "{leftover_string,\"e3\"}"),
            ("315360000001", "{value_too_large,315360000001}"),
            (
                "99999999999999999999",
                "{value_too_large,99999999999999999999}",
            ),
        ];
        for (text, reason) in refused {
            assert_eq!(parse_expiration(text), Err(reason.to_string()), "{text:?}");
        }
    }
}
