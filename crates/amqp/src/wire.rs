//! Reading and writing AMQP's primitive types. Reads are checked: a value that runs past
//! the end of its frame is a syntax error, never a panic.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::Error;
use crate::ByteString;

fn need(buf: &Bytes, n: usize, what: &str) -> Result<(), Error> {
    if buf.remaining() < n {
        return Err(Error::syntax(format_args!(
            "truncated {what}: need {n} bytes, {} left",
            buf.remaining()
        )));
    }
    Ok(())
}

pub fn get_u8(buf: &mut Bytes) -> Result<u8, Error> {
    need(buf, 1, "octet")?;
    Ok(buf.get_u8())
}

pub fn get_u16(buf: &mut Bytes) -> Result<u16, Error> {
    need(buf, 2, "short")?;
    Ok(buf.get_u16())
}

pub fn get_u32(buf: &mut Bytes) -> Result<u32, Error> {
    need(buf, 4, "long")?;
    Ok(buf.get_u32())
}

pub fn get_u64(buf: &mut Bytes) -> Result<u64, Error> {
    need(buf, 8, "longlong")?;
    Ok(buf.get_u64())
}

/// Takes `n` bytes as a slice sharing `buf`'s memory.
pub fn get_bytes(buf: &mut Bytes, n: usize, what: &str) -> Result<Bytes, Error> {
    need(buf, n, what)?;
    Ok(buf.split_to(n))
}

/// shortstr: a length octet and up to 255 bytes of UTF-8.
pub fn get_shortstr(buf: &mut Bytes) -> Result<ByteString, Error> {
    let len = usize::from(get_u8(buf)?);
    let raw = get_bytes(buf, len, "shortstr")?;
    ByteString::try_from(raw).map_err(|_| Error::syntax("shortstr is not valid UTF-8"))
}

/// longstr: a 32-bit length and that many bytes, binary allowed.
pub fn get_longstr(buf: &mut Bytes) -> Result<Bytes, Error> {
    let len = get_u32(buf)? as usize;
    get_bytes(buf, len, "longstr")
}

/// Writes a shortstr. Strings longer than 255 bytes cannot be represented; callers
/// validate lengths where users supply them, and this cuts at the last whole character
/// within 255 bytes rather than corrupt the frame.
pub fn put_shortstr(out: &mut BytesMut, s: &str) {
    let mut len = s.len().min(255);
    while !s.is_char_boundary(len) {
        len -= 1;
    }
    out.put_u8(len as u8);
    out.put_slice(&s.as_bytes()[..len]);
}

pub fn put_longstr(out: &mut BytesMut, b: &[u8]) {
    out.put_u32(u32::try_from(b.len()).unwrap_or(u32::MAX));
    out.put_slice(&b[..b.len().min(u32::MAX as usize)]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_reads_fail() {
        let mut b = Bytes::from_static(&[1]);
        assert!(get_u16(&mut b).is_err());
        let mut b = Bytes::from_static(&[5, b'a', b'b']);
        assert!(get_shortstr(&mut b).is_err());
        let mut b = Bytes::from_static(&[0, 0, 0, 9, 1]);
        assert!(get_longstr(&mut b).is_err());
        let mut b = Bytes::from_static(&[2, 0xff, 0xfe]);
        assert!(matches!(get_shortstr(&mut b), Err(Error::Syntax(_))));
    }

    #[test]
    fn shortstr_is_cut_on_a_char_boundary() {
        let long = "é".repeat(200); // 400 bytes
        let mut out = BytesMut::new();
        put_shortstr(&mut out, &long);
        assert_eq!(out[0], 254);
        let mut b = out.freeze();
        assert_eq!(get_shortstr(&mut b).unwrap().len(), 254);
    }
}
