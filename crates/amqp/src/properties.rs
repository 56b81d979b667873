//! Content headers: the class, the body size and the basic class's fourteen properties,
//! present or absent according to a flags word.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::Error;
use crate::field_table::FieldTable;
use crate::wire;
use crate::ByteString;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct BasicProperties {
    pub content_type: Option<ByteString>,
    pub content_encoding: Option<ByteString>,
    pub headers: Option<FieldTable>,
    pub delivery_mode: Option<u8>,
    pub priority: Option<u8>,
    pub correlation_id: Option<ByteString>,
    pub reply_to: Option<ByteString>,
    pub expiration: Option<ByteString>,
    pub message_id: Option<ByteString>,
    pub timestamp: Option<u64>,
    /// The AMQP `type` property.
    pub kind: Option<ByteString>,
    pub user_id: Option<ByteString>,
    pub app_id: Option<ByteString>,
    pub cluster_id: Option<ByteString>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ContentHeader {
    pub class_id: u16,
    pub body_size: u64,
    pub properties: EncodedProperties,
}

/// The basic class's properties as they came off the wire: checked once, kept encoded and
/// written back out byte for byte. A broker routes and stores a message without looking at
/// most of its properties; building fourteen optional fields for every published message,
/// moving them along and encoding them again on delivery was a fifth of the publish path.
/// The two the broker reads on every message are kept beside the bytes; [`Self::decode`]
/// gives the typed form when more is needed.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedProperties {
    raw: Bytes,
    delivery_mode: Option<u8>,
    priority: Option<u8>,
    /// Where the expiration shortstr's length byte is in `raw`; 0 = no expiration (the
    /// flags are at 0).
    expiration_at: u32,
    /// The same for reply-to (direct reply-to looks at it on every publish).
    reply_to_at: u32,
    /// The headers hold a `CC` or `BCC` entry (sender-selected routing keys).
    sender_routes: bool,
}

/// How each property is written, in flag order.
#[derive(Clone, Copy)]
enum Field {
    Short,
    Table,
    Octet,
    LongLong,
}

const LAYOUT: [(u16, Field); 14] = [
    (CONTENT_TYPE, Field::Short),
    (CONTENT_ENCODING, Field::Short),
    (HEADERS, Field::Table),
    (DELIVERY_MODE, Field::Octet),
    (PRIORITY, Field::Octet),
    (CORRELATION_ID, Field::Short),
    (REPLY_TO, Field::Short),
    (EXPIRATION, Field::Short),
    (MESSAGE_ID, Field::Short),
    (TIMESTAMP, Field::LongLong),
    (TYPE, Field::Short),
    (USER_ID, Field::Short),
    (APP_ID, Field::Short),
    (CLUSTER_ID, Field::Short),
];

/// No property set: two zero flag bytes.
static NO_PROPERTIES: [u8; 2] = [0, 0];

impl EncodedProperties {
    /// Checks `raw` as [`BasicProperties::decode`] would, without building anything, and
    /// keeps the bytes the properties take (anything after them is dropped).
    pub fn parse(raw: Bytes) -> Result<EncodedProperties, Error> {
        let truncated = |what: &str| Error::syntax(format_args!("truncated {what} in properties"));
        let word = |at: usize| -> Result<u16, Error> {
            match raw.get(at..at + 2) {
                Some(w) => Ok(u16::from_be_bytes([w[0], w[1]])),
                None => Err(truncated("flags")),
            }
        };
        let flags = word(0)?;
        let mut at = 2;
        // Later flag words name properties no class of 0-9-1 has: read and ignore them.
        let mut more = flags & CONTINUATION != 0;
        while more {
            more = word(at)? & CONTINUATION != 0;
            at += 2;
        }
        let mut delivery_mode = None;
        let mut priority = None;
        let mut expiration_at = 0;
        let mut reply_to_at = 0;
        let mut sender_routes = false;
        for (bit, field) in LAYOUT {
            if flags & bit == 0 {
                continue;
            }
            match field {
                Field::Short => {
                    let len = usize::from(*raw.get(at).ok_or_else(|| truncated("shortstr"))?);
                    let text = raw
                        .get(at + 1..at + 1 + len)
                        .ok_or_else(|| truncated("shortstr"))?;
                    if std::str::from_utf8(text).is_err() {
                        return Err(Error::syntax("shortstr is not valid UTF-8"));
                    }
                    if bit == EXPIRATION || bit == REPLY_TO {
                        let position = u32::try_from(at)
                            .map_err(|_| Error::syntax("properties longer than 4 GiB"))?;
                        if bit == EXPIRATION {
                            expiration_at = position;
                        } else {
                            reply_to_at = position;
                        }
                    }
                    at += 1 + len;
                }
                Field::Table => {
                    let mut rest = raw.slice(at..);
                    let before = rest.len();
                    let headers = FieldTable::decode(&mut rest)?;
                    sender_routes = headers.get("CC").is_some() || headers.get("BCC").is_some();
                    at += before - rest.len();
                }
                Field::Octet => {
                    let value = *raw.get(at).ok_or_else(|| truncated("octet"))?;
                    if bit == DELIVERY_MODE {
                        delivery_mode = Some(value);
                    } else {
                        priority = Some(value);
                    }
                    at += 1;
                }
                Field::LongLong => {
                    if raw.len() < at + 8 {
                        return Err(truncated("timestamp"));
                    }
                    at += 8;
                }
            }
        }
        let mut raw = raw;
        raw.truncate(at);
        Ok(EncodedProperties {
            raw,
            delivery_mode,
            priority,
            expiration_at,
            reply_to_at,
            sender_routes,
        })
    }

    /// The properties in their wire encoding, flags first.
    pub fn as_bytes(&self) -> &[u8] {
        &self.raw
    }

    pub fn delivery_mode(&self) -> Option<u8> {
        self.delivery_mode
    }

    pub fn priority(&self) -> Option<u8> {
        self.priority
    }

    /// The expiration property (a per-message TTL in milliseconds, as text), if set.
    pub fn expiration(&self) -> Option<&str> {
        self.short_at(self.expiration_at)
    }

    /// Whether the user-id property is set.
    pub fn has_user_id(&self) -> bool {
        // parse() checked that the flags are there.
        u16::from_be_bytes([self.raw[0], self.raw[1]]) & USER_ID != 0
    }

    /// Whether the headers hold `CC` or `BCC` routing keys.
    pub fn has_sender_routes(&self) -> bool {
        self.sender_routes
    }

    /// The reply-to property, if set.
    pub fn reply_to(&self) -> Option<&str> {
        self.short_at(self.reply_to_at)
    }

    /// The shortstr whose length byte is at `at` (0: none).
    fn short_at(&self, at: u32) -> Option<&str> {
        if at == 0 {
            return None;
        }
        let at = at as usize;
        let len = usize::from(self.raw[at]);
        // parse() checked that these bytes are there and are UTF-8.
        std::str::from_utf8(&self.raw[at + 1..at + 1 + len]).ok()
    }

    /// The typed properties. Bytes that `parse` accepted always decode.
    pub fn decode(&self) -> Result<BasicProperties, Error> {
        BasicProperties::decode(&mut self.raw.clone())
    }
}

impl Default for EncodedProperties {
    fn default() -> Self {
        EncodedProperties {
            raw: Bytes::from_static(&NO_PROPERTIES),
            delivery_mode: None,
            priority: None,
            expiration_at: 0,
            reply_to_at: 0,
            sender_routes: false,
        }
    }
}

impl From<&BasicProperties> for EncodedProperties {
    fn from(properties: &BasicProperties) -> Self {
        let mut out = BytesMut::new();
        properties.encode(&mut out);
        let raw = out.freeze();
        // Text cut at 255 bytes inside a character would not parse: keep the bytes anyway.
        EncodedProperties::parse(raw.clone()).unwrap_or(EncodedProperties {
            raw,
            delivery_mode: properties.delivery_mode,
            priority: properties.priority,
            expiration_at: 0,
            reply_to_at: 0,
            sender_routes: false,
        })
    }
}

impl From<BasicProperties> for EncodedProperties {
    fn from(properties: BasicProperties) -> Self {
        EncodedProperties::from(&properties)
    }
}

// Flag bits, most significant first, in the order the properties are written.
const CONTENT_TYPE: u16 = 1 << 15;
const CONTENT_ENCODING: u16 = 1 << 14;
const HEADERS: u16 = 1 << 13;
const DELIVERY_MODE: u16 = 1 << 12;
const PRIORITY: u16 = 1 << 11;
const CORRELATION_ID: u16 = 1 << 10;
const REPLY_TO: u16 = 1 << 9;
const EXPIRATION: u16 = 1 << 8;
const MESSAGE_ID: u16 = 1 << 7;
const TIMESTAMP: u16 = 1 << 6;
const TYPE: u16 = 1 << 5;
const USER_ID: u16 = 1 << 4;
const APP_ID: u16 = 1 << 3;
const CLUSTER_ID: u16 = 1 << 2;
/// Another flags word follows.
const CONTINUATION: u16 = 1;

impl BasicProperties {
    fn flags(&self) -> u16 {
        let mut flags = 0;
        let mut set = |present: bool, bit: u16| {
            if present {
                flags |= bit;
            }
        };
        set(self.content_type.is_some(), CONTENT_TYPE);
        set(self.content_encoding.is_some(), CONTENT_ENCODING);
        set(self.headers.is_some(), HEADERS);
        set(self.delivery_mode.is_some(), DELIVERY_MODE);
        set(self.priority.is_some(), PRIORITY);
        set(self.correlation_id.is_some(), CORRELATION_ID);
        set(self.reply_to.is_some(), REPLY_TO);
        set(self.expiration.is_some(), EXPIRATION);
        set(self.message_id.is_some(), MESSAGE_ID);
        set(self.timestamp.is_some(), TIMESTAMP);
        set(self.kind.is_some(), TYPE);
        set(self.user_id.is_some(), USER_ID);
        set(self.app_id.is_some(), APP_ID);
        set(self.cluster_id.is_some(), CLUSTER_ID);
        flags
    }

    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u16(self.flags());
        let short = |out: &mut BytesMut, v: &Option<ByteString>| {
            if let Some(s) = v {
                wire::put_shortstr(out, s);
            }
        };
        short(out, &self.content_type);
        short(out, &self.content_encoding);
        if let Some(headers) = &self.headers {
            headers.encode(out);
        }
        if let Some(v) = self.delivery_mode {
            out.put_u8(v);
        }
        if let Some(v) = self.priority {
            out.put_u8(v);
        }
        short(out, &self.correlation_id);
        short(out, &self.reply_to);
        short(out, &self.expiration);
        short(out, &self.message_id);
        if let Some(v) = self.timestamp {
            out.put_u64(v);
        }
        short(out, &self.kind);
        short(out, &self.user_id);
        short(out, &self.app_id);
        short(out, &self.cluster_id);
    }

    pub fn decode(buf: &mut Bytes) -> Result<BasicProperties, Error> {
        let flags = wire::get_u16(buf)?;
        // Later flag words name properties no class of 0-9-1 has: read and ignore them.
        let mut more = flags & CONTINUATION != 0;
        while more {
            more = wire::get_u16(buf)? & CONTINUATION != 0;
        }
        let has = |bit: u16| flags & bit != 0;
        let short = |buf: &mut Bytes, bit: u16| -> Result<Option<ByteString>, Error> {
            if has(bit) {
                Ok(Some(wire::get_shortstr(buf)?))
            } else {
                Ok(None)
            }
        };
        Ok(BasicProperties {
            content_type: short(buf, CONTENT_TYPE)?,
            content_encoding: short(buf, CONTENT_ENCODING)?,
            headers: if has(HEADERS) {
                Some(FieldTable::decode(buf)?)
            } else {
                None
            },
            delivery_mode: if has(DELIVERY_MODE) {
                Some(wire::get_u8(buf)?)
            } else {
                None
            },
            priority: if has(PRIORITY) {
                Some(wire::get_u8(buf)?)
            } else {
                None
            },
            correlation_id: short(buf, CORRELATION_ID)?,
            reply_to: short(buf, REPLY_TO)?,
            expiration: short(buf, EXPIRATION)?,
            message_id: short(buf, MESSAGE_ID)?,
            timestamp: if has(TIMESTAMP) {
                Some(wire::get_u64(buf)?)
            } else {
                None
            },
            kind: short(buf, TYPE)?,
            user_id: short(buf, USER_ID)?,
            app_id: short(buf, APP_ID)?,
            cluster_id: short(buf, CLUSTER_ID)?,
        })
    }
}

impl ContentHeader {
    /// Appends the header frame's payload: class, weight (always 0), body size, properties.
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u16(self.class_id);
        out.put_u16(0);
        out.put_u64(self.body_size);
        out.put_slice(self.properties.as_bytes());
    }

    pub fn decode(mut payload: Bytes) -> Result<ContentHeader, Error> {
        let buf = &mut payload;
        let class_id = wire::get_u16(buf)?;
        let _weight = wire::get_u16(buf)?;
        let body_size = wire::get_u64(buf)?;
        let properties = EncodedProperties::parse(payload)?;
        Ok(ContentHeader {
            class_id,
            body_size,
            properties,
        })
    }
}

#[cfg(any(test, feature = "proptest"))]
pub mod strategies {
    //! proptest strategies for content headers.
    use super::*;
    use crate::field_table::strategies::{field_table, short_string};
    use proptest::prelude::*;

    pub fn properties() -> impl Strategy<Value = BasicProperties> {
        let s = || proptest::option::of(short_string());
        (
            (s(), s(), proptest::option::of(field_table())),
            (
                proptest::option::of(any::<u8>()),
                proptest::option::of(any::<u8>()),
            ),
            (s(), s(), s(), s()),
            proptest::option::of(any::<u64>()),
            (s(), s(), s(), s()),
        )
            .prop_map(
                |(
                    (content_type, content_encoding, headers),
                    (delivery_mode, priority),
                    (correlation_id, reply_to, expiration, message_id),
                    timestamp,
                    (kind, user_id, app_id, cluster_id),
                )| BasicProperties {
                    content_type,
                    content_encoding,
                    headers,
                    delivery_mode,
                    priority,
                    correlation_id,
                    reply_to,
                    expiration,
                    message_id,
                    timestamp,
                    kind,
                    user_id,
                    app_id,
                    cluster_id,
                },
            )
    }

    pub fn content_header() -> impl Strategy<Value = ContentHeader> {
        (any::<u16>(), any::<u64>(), properties()).prop_map(|(class_id, body_size, properties)| {
            ContentHeader {
                class_id,
                body_size,
                properties: properties.into(),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::strategies::*;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn flags_in_spec_order() {
        let props = BasicProperties {
            content_type: Some("text/plain".into()),
            delivery_mode: Some(2),
            cluster_id: Some("c".into()),
            ..Default::default()
        };
        let mut out = BytesMut::new();
        props.encode(&mut out);
        assert_eq!(&out[..2], &(0x8000u16 | 0x1000 | 0x0004).to_be_bytes());
        assert_eq!(out[2], 10);
        assert_eq!(&out[3..13], b"text/plain");
        assert_eq!(out[13], 2);
    }

    #[test]
    fn continuation_words_are_skipped() {
        // content_type present + continuation; a second word (no more continuation).
        let raw = [0x80, 0x01, 0x00, 0x00, 1, b'x'];
        let props = BasicProperties::decode(&mut Bytes::copy_from_slice(&raw)).unwrap();
        assert_eq!(props.content_type.as_deref(), Some("x"));
    }

    #[test]
    fn truncated_properties_fail() {
        let raw = [0x10, 0x00];
        assert!(BasicProperties::decode(&mut Bytes::copy_from_slice(&raw)).is_err());
    }

    #[test]
    fn encoded_properties_drop_what_follows_them() {
        // delivery_mode 2, then two stray bytes.
        let raw = Bytes::from_static(&[0x10, 0x00, 2, 0xAA, 0xBB]);
        let parsed = EncodedProperties::parse(raw).unwrap();
        assert_eq!(parsed.as_bytes(), &[0x10, 0x00, 2]);
        assert_eq!(parsed.delivery_mode(), Some(2));
        assert_eq!(parsed.priority(), None);
    }

    #[test]
    fn encoded_properties_refuse_invalid_utf8_and_bad_tables() {
        let bad_text = Bytes::from_static(&[0x80, 0x00, 2, 0xC3, 0x28]);
        assert!(EncodedProperties::parse(bad_text).is_err());
        // headers claiming 100 bytes where 1 follows.
        let bad_table = Bytes::from_static(&[0x20, 0x00, 0, 0, 0, 100, b'x']);
        assert!(EncodedProperties::parse(bad_table).is_err());
        assert!(EncodedProperties::parse(Bytes::from_static(&[0x80])).is_err());
    }

    proptest! {
        #[test]
        fn headers_round_trip(header in content_header()) {
            let mut out = BytesMut::new();
            header.encode(&mut out);
            prop_assert_eq!(ContentHeader::decode(out.freeze()).unwrap(), header);
        }

        #[test]
        fn encoded_properties_agree_with_decode(props in properties()) {
            let mut out = BytesMut::new();
            props.encode(&mut out);
            let encoded = out.freeze();
            let parsed = EncodedProperties::parse(encoded.clone()).unwrap();
            prop_assert_eq!(parsed.as_bytes(), &encoded[..]);
            prop_assert_eq!(parsed.delivery_mode(), props.delivery_mode);
            prop_assert_eq!(parsed.priority(), props.priority);
            prop_assert_eq!(parsed.expiration(), props.expiration.as_deref());
            prop_assert_eq!(parsed.reply_to(), props.reply_to.as_deref());
            prop_assert_eq!(parsed.decode().unwrap(), props);
            // Every cut that decode refuses, parse refuses too, and the other way round.
            for cut in 0..encoded.len() {
                let short = encoded.slice(..cut);
                prop_assert_eq!(
                    EncodedProperties::parse(short.clone()).is_ok(),
                    BasicProperties::decode(&mut short.clone()).is_ok(),
                    "cut at {}", cut
                );
            }
        }
    }
}
