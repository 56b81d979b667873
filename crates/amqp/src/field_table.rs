//! Field tables and their values, with RabbitMQ's type tags (which differ from the 0-9-1
//! spec's: 's' is a signed 16-bit integer, 'l' a signed 64-bit one, and there is no 'L').
//! Entries keep their order. Nesting is limited so that a hostile frame cannot exhaust the
//! stack.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::Error;
use crate::wire;
use crate::ByteString;

/// Tables and arrays nested deeper than this are refused.
pub const NESTING_MAX: usize = 64;

#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    Bool(bool),
    I8(i8),
    U8(u8),
    I16(i16),
    U16(u16),
    I32(i32),
    U32(u32),
    I64(i64),
    F32(f32),
    F64(f64),
    Decimal { scale: u8, value: u32 },
    LongStr(Bytes),
    Array(Vec<FieldValue>),
    Timestamp(u64),
    Table(FieldTable),
    Void,
    ByteArray(Bytes),
}

impl FieldValue {
    /// A long string that is valid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            FieldValue::LongStr(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// Any integer, whatever its width.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            FieldValue::I8(v) => Some(v.into()),
            FieldValue::U8(v) => Some(v.into()),
            FieldValue::I16(v) => Some(v.into()),
            FieldValue::U16(v) => Some(v.into()),
            FieldValue::I32(v) => Some(v.into()),
            FieldValue::U32(v) => Some(v.into()),
            FieldValue::I64(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            FieldValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    fn tag(&self) -> u8 {
        match self {
            FieldValue::Bool(_) => b't',
            FieldValue::I8(_) => b'b',
            FieldValue::U8(_) => b'B',
            FieldValue::I16(_) => b's',
            FieldValue::U16(_) => b'u',
            FieldValue::I32(_) => b'I',
            FieldValue::U32(_) => b'i',
            FieldValue::I64(_) => b'l',
            FieldValue::F32(_) => b'f',
            FieldValue::F64(_) => b'd',
            FieldValue::Decimal { .. } => b'D',
            FieldValue::LongStr(_) => b'S',
            FieldValue::Array(_) => b'A',
            FieldValue::Timestamp(_) => b'T',
            FieldValue::Table(_) => b'F',
            FieldValue::Void => b'V',
            FieldValue::ByteArray(_) => b'x',
        }
    }

    fn decode(buf: &mut Bytes, depth: usize) -> Result<FieldValue, Error> {
        let tag = wire::get_u8(buf)?;
        Ok(match tag {
            b't' => FieldValue::Bool(wire::get_u8(buf)? != 0),
            b'b' => FieldValue::I8(wire::get_u8(buf)? as i8),
            b'B' => FieldValue::U8(wire::get_u8(buf)?),
            b's' => FieldValue::I16(wire::get_u16(buf)? as i16),
            b'u' => FieldValue::U16(wire::get_u16(buf)?),
            b'I' => FieldValue::I32(wire::get_u32(buf)? as i32),
            b'i' => FieldValue::U32(wire::get_u32(buf)?),
            b'l' => FieldValue::I64(wire::get_u64(buf)? as i64),
            b'f' => FieldValue::F32(f32::from_bits(wire::get_u32(buf)?)),
            b'd' => FieldValue::F64(f64::from_bits(wire::get_u64(buf)?)),
            b'D' => FieldValue::Decimal {
                scale: wire::get_u8(buf)?,
                value: wire::get_u32(buf)?,
            },
            b'S' => FieldValue::LongStr(wire::get_longstr(buf)?),
            b'x' => FieldValue::ByteArray(wire::get_longstr(buf)?),
            b'T' => FieldValue::Timestamp(wire::get_u64(buf)?),
            b'V' => FieldValue::Void,
            b'A' => {
                let mut raw = wire::get_longstr(buf)?;
                let depth = nested(depth)?;
                let mut values = Vec::new();
                while raw.has_remaining() {
                    values.push(FieldValue::decode(&mut raw, depth)?);
                }
                FieldValue::Array(values)
            }
            b'F' => {
                let raw = wire::get_longstr(buf)?;
                FieldValue::Table(FieldTable::decode_entries_at(raw, nested(depth)?)?)
            }
            other => {
                return Err(Error::syntax(format_args!(
                    "unknown field value type {:?}",
                    other as char
                )))
            }
        })
    }

    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u8(self.tag());
        match self {
            FieldValue::Bool(v) => out.put_u8(u8::from(*v)),
            FieldValue::I8(v) => out.put_i8(*v),
            FieldValue::U8(v) => out.put_u8(*v),
            FieldValue::I16(v) => out.put_i16(*v),
            FieldValue::U16(v) => out.put_u16(*v),
            FieldValue::I32(v) => out.put_i32(*v),
            FieldValue::U32(v) => out.put_u32(*v),
            FieldValue::I64(v) => out.put_i64(*v),
            FieldValue::F32(v) => out.put_f32(*v),
            FieldValue::F64(v) => out.put_f64(*v),
            FieldValue::Decimal { scale, value } => {
                out.put_u8(*scale);
                out.put_u32(*value);
            }
            FieldValue::LongStr(b) | FieldValue::ByteArray(b) => wire::put_longstr(out, b),
            FieldValue::Timestamp(v) => out.put_u64(*v),
            FieldValue::Void => {}
            FieldValue::Array(values) => with_length_prefix(out, |out| {
                values.iter().for_each(|v| v.encode(out));
            }),
            FieldValue::Table(table) => table.encode(out),
        }
    }
}

fn nested(depth: usize) -> Result<usize, Error> {
    if depth >= NESTING_MAX {
        return Err(Error::syntax(format_args!(
            "field tables nested deeper than {NESTING_MAX}"
        )));
    }
    Ok(depth + 1)
}

/// Writes a 32-bit length, then what `body` writes, then patches the length.
fn with_length_prefix(out: &mut BytesMut, body: impl FnOnce(&mut BytesMut)) {
    let at = out.len();
    out.put_u32(0);
    body(out);
    let len = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// An AMQP field table: named values, in the order they were written.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FieldTable(pub Vec<(ByteString, FieldValue)>);

impl FieldTable {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, key: &str) -> Option<&FieldValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Sets `key`, replacing its value if it is already there.
    pub fn insert(&mut self, key: impl Into<ByteString>, value: FieldValue) {
        let key = key.into();
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = value,
            None => self.0.push((key, value)),
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<FieldValue> {
        let at = self.0.iter().position(|(k, _)| k == key)?;
        Some(self.0.remove(at).1)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &(ByteString, FieldValue)> {
        self.0.iter()
    }

    /// Reads a table: a 32-bit length and that many bytes of entries.
    pub fn decode(buf: &mut Bytes) -> Result<FieldTable, Error> {
        let raw = wire::get_longstr(buf)?;
        Self::decode_entries_at(raw, 0)
    }

    /// Reads entries without the leading length (SASL AMQPLAIN sends a table this way).
    pub fn decode_entries(raw: &[u8]) -> Result<FieldTable, Error> {
        Self::decode_entries_at(Bytes::copy_from_slice(raw), 0)
    }

    fn decode_entries_at(mut raw: Bytes, depth: usize) -> Result<FieldTable, Error> {
        let mut entries = Vec::new();
        while raw.has_remaining() {
            let key = wire::get_shortstr(&mut raw)?;
            let value = FieldValue::decode(&mut raw, depth)?;
            entries.push((key, value));
        }
        Ok(FieldTable(entries))
    }

    /// Writes the table with its length.
    pub fn encode(&self, out: &mut BytesMut) {
        with_length_prefix(out, |out| {
            for (key, value) in &self.0 {
                wire::put_shortstr(out, key);
                value.encode(out);
            }
        });
    }

    /// The bytes `encode` writes.
    pub fn encoded_len(&self) -> usize {
        let mut out = BytesMut::new();
        self.encode(&mut out);
        out.len()
    }
}

impl FromIterator<(ByteString, FieldValue)> for FieldTable {
    fn from_iter<I: IntoIterator<Item = (ByteString, FieldValue)>>(iter: I) -> Self {
        let mut table = FieldTable::new();
        for (k, v) in iter {
            table.insert(k, v);
        }
        table
    }
}

#[cfg(any(test, feature = "proptest"))]
pub mod strategies {
    //! proptest strategies for field tables and the strings inside them.
    use super::*;
    use proptest::prelude::*;

    pub fn short_string() -> impl Strategy<Value = ByteString> {
        "[a-zA-Z0-9._\\-é]{0,40}".prop_map(ByteString::from)
    }

    pub fn bytes() -> impl Strategy<Value = Bytes> {
        prop::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from)
    }

    /// Floats are generated without NaN so that round trips compare equal.
    pub fn field_value() -> impl Strategy<Value = FieldValue> {
        let leaf = prop_oneof![
            any::<bool>().prop_map(FieldValue::Bool),
            any::<i8>().prop_map(FieldValue::I8),
            any::<u8>().prop_map(FieldValue::U8),
            any::<i16>().prop_map(FieldValue::I16),
            any::<u16>().prop_map(FieldValue::U16),
            any::<i32>().prop_map(FieldValue::I32),
            any::<u32>().prop_map(FieldValue::U32),
            any::<i64>().prop_map(FieldValue::I64),
            (-1e30f32..1e30).prop_map(FieldValue::F32),
            (-1e300f64..1e300).prop_map(FieldValue::F64),
            (any::<u8>(), any::<u32>())
                .prop_map(|(scale, value)| FieldValue::Decimal { scale, value }),
            bytes().prop_map(FieldValue::LongStr),
            any::<u64>().prop_map(FieldValue::Timestamp),
            Just(FieldValue::Void),
            bytes().prop_map(FieldValue::ByteArray),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(FieldValue::Array),
                prop::collection::vec((short_string(), inner), 0..6)
                    .prop_map(|entries| FieldValue::Table(entries.into_iter().collect())),
            ]
        })
    }

    pub fn field_table() -> impl Strategy<Value = FieldTable> {
        prop::collection::vec((short_string(), field_value()), 0..6)
            .prop_map(|entries| entries.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::strategies::*;
    use super::*;
    use proptest::prelude::*;

    fn round_trip(table: &FieldTable) -> FieldTable {
        let mut out = BytesMut::new();
        table.encode(&mut out);
        assert_eq!(out.len(), table.encoded_len());
        let mut bytes = out.freeze();
        let decoded = FieldTable::decode(&mut bytes).unwrap();
        assert!(bytes.is_empty());
        decoded
    }

    #[test]
    fn every_type_has_rabbitmq_tag() {
        let mut out = BytesMut::new();
        FieldValue::I16(-2).encode(&mut out);
        FieldValue::I64(-3).encode(&mut out);
        FieldValue::U32(7).encode(&mut out);
        assert_eq!(out[0], b's');
        assert_eq!(&out[1..3], &(-2i16).to_be_bytes());
        assert_eq!(out[3], b'l');
        assert_eq!(out[12], b'i');
    }

    #[test]
    fn known_bytes() {
        // {"a": true, "n": I32 5}
        let raw = [0, 0, 0, 11, 1, b'a', b't', 1, 1, b'n', b'I', 0, 0, 0, 5];
        let mut b = Bytes::copy_from_slice(&raw);
        let t = FieldTable::decode(&mut b).unwrap();
        assert_eq!(t.get("a"), Some(&FieldValue::Bool(true)));
        assert_eq!(t.get("n").and_then(FieldValue::as_i64), Some(5));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn unknown_tag_and_truncation_are_errors() {
        let mut b = Bytes::from_static(&[0, 0, 0, 3, 1, b'a', b'L']);
        assert!(matches!(FieldTable::decode(&mut b), Err(Error::Syntax(_))));
        let mut b = Bytes::from_static(&[0, 0, 0, 4, 1, b'a', b'I', 0]);
        assert!(FieldTable::decode(&mut b).is_err());
        let mut b = Bytes::from_static(&[0, 0, 0, 200, 1]);
        assert!(FieldTable::decode(&mut b).is_err());
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let mut value = FieldValue::Void;
        for _ in 0..(NESTING_MAX + 5) {
            value = FieldValue::Array(vec![value]);
        }
        let mut table = FieldTable::new();
        table.insert("deep", value);
        let mut out = BytesMut::new();
        table.encode(&mut out);
        let mut bytes = out.freeze();
        assert!(matches!(
            FieldTable::decode(&mut bytes),
            Err(Error::Syntax(_))
        ));
    }

    #[test]
    fn insert_replaces() {
        let mut t = FieldTable::new();
        t.insert("k", FieldValue::I8(1));
        t.insert("k", FieldValue::I8(2));
        assert_eq!(t.len(), 1);
        assert_eq!(t.get("k"), Some(&FieldValue::I8(2)));
        assert_eq!(t.remove("k"), Some(FieldValue::I8(2)));
        assert!(t.is_empty());
    }

    proptest! {
        #[test]
        fn tables_round_trip(table in field_table()) {
            prop_assert_eq!(round_trip(&table), table);
        }
    }
}
