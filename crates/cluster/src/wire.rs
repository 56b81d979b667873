//! The inter-node protocol's framing: pure, bytes in and typed frames out.
//!
//! A connection starts with a preamble, `WHRF` and the protocol version (u16, big-endian),
//! so that a node meets a stranger (a browser, an AMQP client, another version) with a
//! clear refusal instead of misreading it. Then frames: `[length u32][kind u8][id u64]
//! [payload]`, big-endian, `length` counting kind, id and payload. Payloads are JSON of the
//! message types of `messages`, but for a delivery's (a message for another node's queues,
//! in a binary layout of its own: see `forward`) and a quorum queue group's RPCs (see
//! `quorum::codec`); the refusal frame's payload is plain
//! UTF-8 text, a format that never changes, so that any version can tell any other why
//! it was refused.

use bytes::{Buf, BufMut, BytesMut};

/// The protocol this build speaks. A peer that speaks another is refused, not misread.
/// 2: heartbeat frames, operator requests, gets with acknowledgements and the API's get
/// on another node's queue. 3: quorum queues' group frames.
pub const PROTOCOL_VERSION: u16 = 3;
pub const MAGIC: [u8; 4] = *b"WHRF";
pub const PREAMBLE_BYTES: usize = 6;
/// Kind, id.
const FRAME_HEADER_BYTES: usize = 1 + 8;
/// The largest frame accepted: a metadata snapshot of a large broker fits many times.
pub const FRAME_BYTES_MAX: usize = 256 * 1024 * 1024;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    Hello = 1,
    Challenge = 2,
    Proof = 3,
    Welcome = 4,
    Request = 5,
    Response = 6,
    /// A message for the receiver's queues; answered with a response frame.
    Deliver = 7,
    /// Deliveries for the receiver's consumers on the sender's queues; answered with a
    /// response frame.
    Push = 8,
    /// The dialing node's heartbeat, sent every second, echoed by the other: a
    /// connection that brings nothing for [`crate::transport::PEER_TIMEOUT`] is taken
    /// for lost (the peer paused, or the network between them cut).
    Heartbeat = 9,
    /// A quorum queue group's Raft RPC (binary: see `quorum::codec`); answered with a
    /// group answer frame.
    Group = 10,
    GroupAnswer = 11,
    /// The peer closes the connection; the payload says why, as text.
    Refused = 255,
}

impl FrameKind {
    fn from_byte(byte: u8) -> Option<FrameKind> {
        Some(match byte {
            1 => FrameKind::Hello,
            2 => FrameKind::Challenge,
            3 => FrameKind::Proof,
            4 => FrameKind::Welcome,
            5 => FrameKind::Request,
            6 => FrameKind::Response,
            7 => FrameKind::Deliver,
            8 => FrameKind::Push,
            9 => FrameKind::Heartbeat,
            10 => FrameKind::Group,
            11 => FrameKind::GroupAnswer,
            255 => FrameKind::Refused,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameKind,
    /// Pairs a response with its request (0 in the handshake).
    pub id: u64,
    pub payload: Vec<u8>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("not a Wharf cluster node (the connection did not start with WHRF)")]
    NotWharf,
    #[error(
        "the peer speaks cluster protocol version {theirs}; this node speaks {PROTOCOL_VERSION}"
    )]
    Version { theirs: u16 },
    #[error("a frame of {0} bytes, over the limit of {FRAME_BYTES_MAX}")]
    TooLarge(usize),
    #[error("a frame too short for its header ({0} bytes)")]
    TooShort(usize),
    #[error("an unknown frame kind {0}")]
    UnknownKind(u8),
}

pub fn encode_preamble(out: &mut BytesMut) {
    out.put_slice(&MAGIC);
    out.put_u16(PROTOCOL_VERSION);
}

/// Checks a whole preamble (`PREAMBLE_BYTES` bytes).
pub fn check_preamble(bytes: &[u8; PREAMBLE_BYTES]) -> Result<(), WireError> {
    if bytes[..4] != MAGIC {
        return Err(WireError::NotWharf);
    }
    let theirs = u16::from_be_bytes([bytes[4], bytes[5]]);
    if theirs != PROTOCOL_VERSION {
        return Err(WireError::Version { theirs });
    }
    Ok(())
}

pub fn encode_frame(out: &mut BytesMut, kind: FrameKind, id: u64, payload: &[u8]) {
    out.reserve(4 + FRAME_HEADER_BYTES + payload.len());
    out.put_u32((FRAME_HEADER_BYTES + payload.len()) as u32);
    out.put_u8(kind as u8);
    out.put_u64(id);
    out.put_slice(payload);
}

/// Takes one whole frame off the front of `buffer`, or None when more bytes are needed.
/// The length is checked before anything is allocated.
pub fn decode_frame(buffer: &mut BytesMut) -> Result<Option<Frame>, WireError> {
    if buffer.len() < 4 {
        return Ok(None);
    }
    let length = u32::from_be_bytes(buffer[..4].try_into().expect("4 bytes")) as usize;
    if length > FRAME_BYTES_MAX {
        return Err(WireError::TooLarge(length));
    }
    if length < FRAME_HEADER_BYTES {
        return Err(WireError::TooShort(length));
    }
    if buffer.len() < 4 + length {
        buffer.reserve(4 + length - buffer.len());
        return Ok(None);
    }
    buffer.advance(4);
    let kind_byte = buffer.get_u8();
    let kind = FrameKind::from_byte(kind_byte).ok_or(WireError::UnknownKind(kind_byte));
    let id = buffer.get_u64();
    let payload = buffer.split_to(length - FRAME_HEADER_BYTES).to_vec();
    Ok(Some(Frame {
        kind: kind?,
        id,
        payload,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_arrive_whole_however_they_are_cut() {
        let mut encoded = BytesMut::new();
        encode_frame(&mut encoded, FrameKind::Request, 7, b"{\"a\":1}");
        encode_frame(&mut encoded, FrameKind::Refused, 0, b"wrong secret");
        let bytes = encoded.to_vec();
        for cut in 0..bytes.len() {
            let mut buffer = BytesMut::from(&bytes[..cut]);
            let mut frames = Vec::new();
            while let Some(frame) = decode_frame(&mut buffer).unwrap() {
                frames.push(frame);
            }
            buffer.extend_from_slice(&bytes[cut..]);
            while let Some(frame) = decode_frame(&mut buffer).unwrap() {
                frames.push(frame);
            }
            assert_eq!(frames.len(), 2, "cut at {cut}");
            assert_eq!(frames[0].id, 7);
            assert_eq!(frames[0].payload, b"{\"a\":1}");
            assert_eq!(frames[1].kind, FrameKind::Refused);
            assert!(buffer.is_empty());
        }
    }

    #[test]
    fn bad_frames_are_refused_before_anything_is_allocated() {
        let mut huge = BytesMut::from(&u32::MAX.to_be_bytes()[..]);
        assert_eq!(
            decode_frame(&mut huge),
            Err(WireError::TooLarge(u32::MAX as usize))
        );
        let mut short = BytesMut::from(&3u32.to_be_bytes()[..]);
        short.extend_from_slice(&[5, 0, 0]);
        assert_eq!(decode_frame(&mut short), Err(WireError::TooShort(3)));
        let mut unknown = BytesMut::new();
        encode_frame(&mut unknown, FrameKind::Request, 1, b"");
        unknown[4] = 42;
        assert_eq!(decode_frame(&mut unknown), Err(WireError::UnknownKind(42)));
    }

    #[test]
    fn a_preamble_names_strangers_and_other_versions() {
        let mut ours = BytesMut::new();
        encode_preamble(&mut ours);
        let ours: [u8; PREAMBLE_BYTES] = ours[..].try_into().unwrap();
        assert_eq!(check_preamble(&ours), Ok(()));
        assert_eq!(check_preamble(b"AMQP\x00\x00"), Err(WireError::NotWharf));
        let mut newer = ours;
        newer[5] += 1;
        assert_eq!(
            check_preamble(&newer),
            Err(WireError::Version {
                theirs: PROTOCOL_VERSION + 1
            })
        );
    }
}
