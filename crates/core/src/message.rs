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
}

/// The version byte that starts a stored message record.
const RECORD_VERSION: u8 = 1;

impl Message {
    /// The message as stored in a queue's log: version, exchange, routing key, the
    /// properties in their AMQP encoding, body.
    pub fn encode_record(&self) -> Vec<u8> {
        let mut out = bytes::BytesMut::with_capacity(self.body.len() + 64);
        out.extend_from_slice(&[RECORD_VERSION]);
        put_short(&mut out, &self.exchange);
        put_short(&mut out, &self.routing_key);
        let properties_at = out.len();
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(self.properties.as_bytes());
        let properties_len = (out.len() - properties_at - 4) as u32;
        out[properties_at..properties_at + 4].copy_from_slice(&properties_len.to_be_bytes());
        out.extend_from_slice(&self.body);
        out.to_vec()
    }

    /// Reads a stored record back; None if it is not one this version wrote.
    pub fn decode_record(record: Vec<u8>) -> Option<Message> {
        let mut bytes = Bytes::from(record);
        if bytes.first() != Some(&RECORD_VERSION) {
            return None;
        }
        let _ = bytes.split_to(1);
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
        Some(Message {
            exchange,
            routing_key,
            properties,
            body: bytes,
        })
    }
}

fn put_short(out: &mut bytes::BytesMut, s: &str) {
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
        let record = message.encode_record();
        assert_eq!(Message::decode_record(record.clone()), Some(message));
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
