//! Frames: type, channel, size, payload, end marker. Parsing is two-phase, as in
//! mini-redis: [`Frame::check`] says whether a whole frame is buffered (refusing one larger
//! than frame_max before anything is allocated), [`Frame::decode`] takes it.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::Error;
use crate::method::Method;
use crate::properties::{ContentHeader, EncodedProperties};

pub const FRAME_METHOD: u8 = 1;
pub const FRAME_HEADER: u8 = 2;
pub const FRAME_BODY: u8 = 3;
pub const FRAME_HEARTBEAT: u8 = 8;
pub const FRAME_END: u8 = 0xCE;
/// Type, channel and size.
pub const FRAME_HEADER_SIZE: usize = 7;
/// Header plus end marker: what a frame costs beyond its payload.
pub const FRAME_OVERHEAD: usize = FRAME_HEADER_SIZE + 1;
pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";

#[derive(Debug, Clone, PartialEq)]
pub enum FramePayload {
    Method(Method),
    Header(ContentHeader),
    Body(Bytes),
    Heartbeat,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub channel: u16,
    pub payload: FramePayload,
}

impl Frame {
    /// Ok(None): more bytes needed. Ok(Some(n)): a whole frame of n bytes is buffered.
    /// A frame whose payload exceeds `frame_max` (0 = no limit) is refused at once, from its
    /// header. As RabbitMQ: the spec bounds the whole frame, header and end octet included,
    /// but RabbitMQ takes a payload of up to frame_max, and clients rely on what it takes.
    pub fn check(buf: &[u8], frame_max: u32) -> Result<Option<usize>, Error> {
        if buf.len() < FRAME_HEADER_SIZE {
            return Ok(None);
        }
        let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]) as usize;
        let total = size + FRAME_OVERHEAD;
        if frame_max != 0 && size > frame_max as usize {
            return Err(Error::FrameTooLarge {
                kind: buf[0],
                size,
                max: frame_max,
            });
        }
        if buf.len() < total {
            return Ok(None);
        }
        Ok(Some(total))
    }

    /// Takes one frame off the front of `buf`, if a whole one is there. Body payloads are
    /// zero-copy slices of `buf`; method and header payloads are copied out of it.
    pub fn decode(buf: &mut BytesMut, frame_max: u32) -> Result<Option<Frame>, Error> {
        let Some(total) = Frame::check(buf, frame_max)? else {
            return Ok(None);
        };
        let end = buf[total - 1];
        if end != FRAME_END {
            return Err(Error::BadFrameEnd(end));
        }
        let mut raw = buf.split_to(total);
        let kind = raw.get_u8();
        let channel = raw.get_u16();
        raw.advance(4);
        raw.truncate(total - FRAME_OVERHEAD);
        // Methods and headers are small and their strings live on in queued messages: they
        // get their own copy so that they do not keep the whole read buffer alive. Bodies
        // stay slices of it; the receiver decides whether to keep or copy them.
        let payload = match kind {
            FRAME_METHOD => {
                FramePayload::Method(Method::decode_bytes(Bytes::copy_from_slice(&raw))?)
            }
            FRAME_HEADER => {
                FramePayload::Header(ContentHeader::decode(Bytes::copy_from_slice(&raw))?)
            }
            FRAME_BODY => FramePayload::Body(raw.freeze()),
            FRAME_HEARTBEAT => FramePayload::Heartbeat,
            other => return Err(Error::UnknownFrameType(other)),
        };
        Ok(Some(Frame { channel, payload }))
    }

    pub fn encode(&self, out: &mut BytesMut) {
        match &self.payload {
            FramePayload::Method(m) => encode_method(self.channel, m, out),
            FramePayload::Header(h) => encode_content_header(self.channel, h, out),
            FramePayload::Body(b) => {
                write_frame(out, FRAME_BODY, self.channel, |out| out.put_slice(b))
            }
            FramePayload::Heartbeat => encode_heartbeat(out),
        }
    }
}

/// Writes one frame, patching its size in after the payload is written.
fn write_frame(out: &mut BytesMut, kind: u8, channel: u16, payload: impl FnOnce(&mut BytesMut)) {
    out.put_u8(kind);
    out.put_u16(channel);
    let size_at = out.len();
    out.put_u32(0);
    payload(out);
    let size = (out.len() - size_at - 4) as u32;
    out[size_at..size_at + 4].copy_from_slice(&size.to_be_bytes());
    out.put_u8(FRAME_END);
}

pub fn encode_method(channel: u16, method: &Method, out: &mut BytesMut) {
    write_frame(out, FRAME_METHOD, channel, |out| method.encode(out));
}

/// The fields of a basic.deliver, borrowed: a broker writes one per message delivered and
/// need not build (and reference-count) an owned [`crate::BasicDeliver`] for it.
#[derive(Debug, Clone, Copy)]
pub struct DeliverRef<'a> {
    pub consumer_tag: &'a str,
    pub delivery_tag: u64,
    pub redelivered: bool,
    pub exchange: &'a str,
    pub routing_key: &'a str,
}

/// Writes a basic.deliver method frame, the same bytes as `encode_method` would.
pub fn encode_deliver(channel: u16, deliver: DeliverRef<'_>, out: &mut BytesMut) {
    write_frame(out, FRAME_METHOD, channel, |out| {
        out.put_u16(crate::BasicDeliver::CLASS_ID);
        out.put_u16(crate::BasicDeliver::METHOD_ID);
        crate::wire::put_shortstr(out, deliver.consumer_tag);
        out.put_u64(deliver.delivery_tag);
        out.put_u8(u8::from(deliver.redelivered));
        crate::wire::put_shortstr(out, deliver.exchange);
        crate::wire::put_shortstr(out, deliver.routing_key);
    });
}

pub fn encode_content_header(channel: u16, header: &ContentHeader, out: &mut BytesMut) {
    write_frame(out, FRAME_HEADER, channel, |out| header.encode(out));
}

/// Writes a basic class content header from borrowed parts: the same bytes as
/// `encode_content_header` with class 60.
pub fn encode_basic_header(
    channel: u16,
    body_size: u64,
    properties: &EncodedProperties,
    out: &mut BytesMut,
) {
    write_frame(out, FRAME_HEADER, channel, |out| {
        out.put_u16(crate::BasicPublish::CLASS_ID);
        out.put_u16(0);
        out.put_u64(body_size);
        out.put_slice(properties.as_bytes());
    });
}

/// Writes `body` as body frames of at most frame_max bytes each (0 = no limit); an
/// empty body needs no frame.
pub fn encode_body(channel: u16, body: &[u8], frame_max: u32, out: &mut BytesMut) {
    let chunk = if frame_max == 0 {
        body.len().max(1)
    } else {
        (frame_max as usize).saturating_sub(FRAME_OVERHEAD).max(1)
    };
    out.reserve(body.len() + body.len().div_ceil(chunk) * FRAME_OVERHEAD);
    for part in body.chunks(chunk) {
        write_frame(out, FRAME_BODY, channel, |out| out.put_slice(part));
    }
}

pub fn encode_heartbeat(out: &mut BytesMut) {
    out.put_slice(&[FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::method::*;

    use crate::method::strategies::method;
    use crate::properties::strategies::content_header;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn borrowed_deliver_encodes_as_the_owned_one(
            channel in any::<u16>(),
            delivery_tag in any::<u64>(),
            redelivered in any::<bool>(),
            tag in "\\PC{0,40}",
            exchange in "\\PC{0,300}",
            routing_key in "[a-z.]{0,20}",
        ) {
            let owned = Method::BasicDeliver(Box::new(BasicDeliver {
                consumer_tag: tag.as_str().into(),
                delivery_tag,
                redelivered,
                exchange: exchange.as_str().into(),
                routing_key: routing_key.as_str().into(),
            }));
            let mut expected = BytesMut::new();
            encode_method(channel, &owned, &mut expected);
            let mut got = BytesMut::new();
            let deliver = DeliverRef {
                consumer_tag: &tag,
                delivery_tag,
                redelivered,
                exchange: &exchange,
                routing_key: &routing_key,
            };
            encode_deliver(channel, deliver, &mut got);
            prop_assert_eq!(got, expected);
        }

        #[test]
        fn borrowed_header_encodes_as_the_owned_one(
            channel in any::<u16>(),
            header in content_header(),
        ) {
            let header = ContentHeader { class_id: 60, ..header };
            let mut expected = BytesMut::new();
            encode_content_header(channel, &header, &mut expected);
            let mut got = BytesMut::new();
            encode_basic_header(channel, header.body_size, &header.properties, &mut got);
            prop_assert_eq!(got, expected);
        }
    }

    fn frame() -> impl Strategy<Value = Frame> {
        let payload = prop_oneof![
            method().prop_map(FramePayload::Method),
            content_header().prop_map(FramePayload::Header),
            prop::collection::vec(any::<u8>(), 0..300)
                .prop_map(|b| FramePayload::Body(Bytes::from(b))),
            Just(FramePayload::Heartbeat),
        ];
        (any::<u16>(), payload).prop_map(|(channel, payload)| Frame {
            channel: if payload == FramePayload::Heartbeat {
                0
            } else {
                channel
            },
            payload,
        })
    }

    proptest! {
        #[test]
        fn every_method_round_trips(m in method()) {
            let mut out = BytesMut::new();
            m.encode(&mut out);
            prop_assert_eq!(Method::decode(&out).unwrap(), m);
        }

        #[test]
        fn frames_round_trip_back_to_back(frames in prop::collection::vec(frame(), 1..6)) {
            let mut out = BytesMut::new();
            for f in &frames {
                f.encode(&mut out);
            }
            let mut decoded = Vec::new();
            while let Some(f) = Frame::decode(&mut out, 0).unwrap() {
                decoded.push(f);
            }
            prop_assert!(out.is_empty());
            prop_assert_eq!(decoded, frames);
        }
    }

    #[test]
    fn publish_frame_known_bytes() {
        let publish = Method::BasicPublish(BasicPublish {
            exchange: "ex".into(),
            routing_key: "rk".into(),
            mandatory: true,
            immediate: false,
        });
        let mut out = BytesMut::new();
        encode_method(1, &publish, &mut out);
        let expected: &[u8] = &[
            1, 0, 1, 0, 0, 0, 13, // method frame, channel 1, size 13
            0, 60, 0, 40, // basic.publish
            0, 0, // reserved ticket
            2, b'e', b'x', 2, b'r', b'k', 1, // exchange, routing key, mandatory bit
            0xCE,
        ];
        assert_eq!(&out[..], expected);
        let frame = Frame::decode(&mut out, 131072).unwrap().unwrap();
        assert_eq!(frame.channel, 1);
        assert_eq!(frame.payload, FramePayload::Method(publish));
        assert!(out.is_empty());
    }

    #[test]
    fn partial_frames_wait_for_more() {
        let mut out = BytesMut::new();
        encode_heartbeat(&mut out);
        for cut in 0..out.len() {
            let mut partial = BytesMut::from(&out[..cut]);
            assert_eq!(Frame::decode(&mut partial, 0).unwrap(), None);
            assert_eq!(partial.len(), cut, "nothing consumed");
        }
    }

    #[test]
    fn bad_end_unknown_type_and_oversize() {
        let mut bad_end = BytesMut::from(&[8u8, 0, 0, 0, 0, 0, 0, 0xAB][..]);
        assert_eq!(
            Frame::decode(&mut bad_end, 0),
            Err(Error::BadFrameEnd(0xAB))
        );
        let mut unknown = BytesMut::from(&[9u8, 0, 0, 0, 0, 0, 0, 0xCE][..]);
        assert_eq!(
            Frame::decode(&mut unknown, 0),
            Err(Error::UnknownFrameType(9))
        );
        let huge = [3u8, 0, 1, 0x7f, 0xff, 0xff, 0xff];
        let error = Frame::check(&huge, 131072).unwrap_err();
        assert_eq!(
            error.to_string(),
            "type 3, all octets = <<>>: {frame_too_large,2147483647,131064}"
        );
        // As RabbitMQ: a payload of frame_max is taken, one byte more is not.
        let at_max = [1u8, 0, 1, 0, 0, 0x10, 0x00];
        assert_eq!(Frame::check(&at_max, 4096), Ok(None));
        let over = [2u8, 0, 1, 0, 0, 0x10, 0x01];
        assert_eq!(
            Frame::check(&over, 4096).unwrap_err().to_string(),
            "type 2, all octets = <<>>: {frame_too_large,4097,4088}"
        );
    }

    #[test]
    fn body_split_by_frame_max() {
        let body = vec![7u8; 10_000];
        let mut out = BytesMut::new();
        encode_body(3, &body, 4096, &mut out);
        let mut received = Vec::new();
        let mut frames = 0;
        while let Some(frame) = Frame::decode(&mut out, 4096).unwrap() {
            let FramePayload::Body(b) = frame.payload else {
                panic!("not a body frame")
            };
            assert!(b.len() <= 4096 - FRAME_OVERHEAD);
            received.extend_from_slice(&b);
            frames += 1;
        }
        assert_eq!(frames, 3);
        assert_eq!(received, body);
        let mut empty = BytesMut::new();
        encode_body(3, &[], 4096, &mut empty);
        assert!(empty.is_empty());
    }
}
