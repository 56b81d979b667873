//! Fuzz-style test on stable Rust: random bytes, and valid frames mutated (bit flips,
//! truncations, corrupted lengths, spliced garbage), fed to every decoder. Each input must
//! give a frame or a proper error — never a panic, a hang, or an allocation sized by a
//! hostile length field. Seeded, so a failure reproduces.

use bytes::{BufMut, Bytes, BytesMut};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wharf_amqp::frame::{encode_body, encode_content_header, encode_method};
use wharf_amqp::*;

const ITERATIONS: usize = 20_000;
const FRAME_MAX: u32 = 131_072;

/// Valid frames of many kinds to mutate.
fn seeds() -> Vec<Vec<u8>> {
    let mut headers = FieldTable::new();
    headers.insert("x-match", FieldValue::LongStr(Bytes::from_static(b"any")));
    headers.insert(
        "nested",
        FieldValue::Array(vec![
            FieldValue::I32(-1),
            FieldValue::Table(FieldTable::new()),
            FieldValue::Decimal { scale: 2, value: 7 },
        ]),
    );
    let methods: Vec<Method> = vec![
        BasicPublish {
            exchange: "amq.topic".into(),
            routing_key: "a.b.c".into(),
            mandatory: true,
            immediate: false,
        }
        .into(),
        QueueDeclare {
            queue: "q".into(),
            durable: true,
            arguments: headers.clone(),
            ..Default::default()
        }
        .into(),
        ConnectionStartOk {
            client_properties: headers.clone(),
            mechanism: "PLAIN".into(),
            response: Bytes::from_static(b"\0guest\0guest"),
            locale: "en_US".into(),
        }
        .into(),
        BasicDeliver {
            consumer_tag: "ctag".into(),
            delivery_tag: 42,
            redelivered: true,
            exchange: "".into(),
            routing_key: "q".into(),
        }
        .into(),
        BasicAck {
            delivery_tag: 7,
            multiple: true,
        }
        .into(),
        ExchangeBind {
            destination: "d".into(),
            source: "s".into(),
            routing_key: "#".into(),
            no_wait: false,
            arguments: headers.clone(),
        }
        .into(),
    ];
    let mut seeds = Vec::new();
    for (i, method) in methods.iter().enumerate() {
        let mut out = BytesMut::new();
        encode_method(i as u16, method, &mut out);
        seeds.push(out.to_vec());
    }
    let mut out = BytesMut::new();
    let header = ContentHeader {
        class_id: 60,
        body_size: 5,
        properties: BasicProperties {
            content_type: Some("text/plain".into()),
            headers: Some(headers),
            delivery_mode: Some(2),
            timestamp: Some(1),
            ..Default::default()
        }
        .into(),
    };
    encode_content_header(1, &header, &mut out);
    seeds.push(out.to_vec());
    let mut out = BytesMut::new();
    encode_body(1, b"hello", FRAME_MAX, &mut out);
    seeds.push(out.to_vec());
    seeds
}

fn mutate(rng: &mut StdRng, seed: &[u8]) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    match rng.gen_range(0..6) {
        0 => {
            // Flip a few bits.
            for _ in 0..rng.gen_range(1..4) {
                let at = rng.gen_range(0..bytes.len());
                bytes[at] ^= 1 << rng.gen_range(0..8);
            }
        }
        1 => bytes.truncate(rng.gen_range(0..bytes.len())),
        2 => {
            // Corrupt a byte inside the payload that may be a length or a type tag.
            if bytes.len() > 8 {
                let at = rng.gen_range(7..bytes.len() - 1);
                bytes[at] = rng.gen();
            }
        }
        3 => {
            // Make the frame's size field lie, keeping the bytes.
            let size: u32 = rng.gen();
            bytes[3..7].copy_from_slice(&size.to_be_bytes());
        }
        4 => {
            // Splice random bytes into the payload and fix the frame size to match.
            let at = rng.gen_range(7..bytes.len());
            let junk: Vec<u8> = (0..rng.gen_range(1..32)).map(|_| rng.gen()).collect();
            bytes.splice(at..at, junk);
            let size = (bytes.len() - 8) as u32;
            bytes[3..7].copy_from_slice(&size.to_be_bytes());
        }
        _ => {
            // Large length prefixes for strings and tables inside the payload.
            if bytes.len() > 12 {
                let at = rng.gen_range(7..bytes.len() - 5);
                bytes[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
            }
        }
    }
    bytes
}

/// Decodes every frame in `input`; returns how many decoded before an error or the end.
fn decode_all(input: &[u8]) -> usize {
    let mut buf = BytesMut::from(input);
    let mut frames = 0;
    loop {
        match Frame::decode(&mut buf, FRAME_MAX) {
            Ok(Some(_)) => frames += 1,
            Ok(None) => return frames,
            Err(error) => {
                // Every error maps to a connection-level reply code.
                assert!(matches!(error.reply_code(), 501 | 540), "{error:?}");
                return frames;
            }
        }
    }
}

#[test]
fn mutated_frames_never_panic() {
    let mut rng = StdRng::seed_from_u64(0x57A4F);
    let seeds = seeds();
    for seed in &seeds {
        assert_eq!(decode_all(seed), 1, "each seed is one valid frame");
    }
    let mut decoded_some = 0;
    let mut rejected_some = 0;
    for _ in 0..ITERATIONS {
        let seed = &seeds[rng.gen_range(0..seeds.len())];
        let input = mutate(&mut rng, seed);
        let mut buf = BytesMut::from(&input[..]);
        match Frame::decode(&mut buf, FRAME_MAX) {
            Ok(Some(_)) => decoded_some += 1,
            Ok(None) => {}
            Err(_) => rejected_some += 1,
        }
        // The method decoder on its own, over whatever follows the frame header.
        if input.len() > 7 {
            let _ = Method::decode(&input[7..]);
            let _ = ContentHeader::decode(Bytes::copy_from_slice(&input[7..]));
        }
    }
    // The mutations must exercise both outcomes, or this test proves little.
    assert!(decoded_some > 100, "decoded {decoded_some}");
    assert!(rejected_some > 100, "rejected {rejected_some}");
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = StdRng::seed_from_u64(0xF00D);
    for _ in 0..ITERATIONS {
        let len = rng.gen_range(0..256);
        let mut input: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        // Half the time, a plausible frame header with a small size and a valid end byte.
        if rng.gen_bool(0.5) && input.len() > 8 {
            input[0] = rng.gen_range(1..4);
            let size = (input.len() - 8) as u32;
            input[3..7].copy_from_slice(&size.to_be_bytes());
            let last = input.len() - 1;
            input[last] = 0xCE;
        }
        decode_all(&input);
        let _ = Method::decode(&input);
        let _ = FieldTable::decode_entries(&input);
    }
}

#[test]
fn hostile_lengths_do_not_allocate_what_they_claim() {
    // A field table claiming 4 GiB of entries inside a 20-byte frame is a syntax error.
    let mut payload = BytesMut::new();
    payload.put_u16(50);
    payload.put_u16(10);
    payload.put_u16(0);
    payload.put_u8(1);
    payload.put_u8(b'q');
    payload.put_u8(0);
    payload.put_u32(u32::MAX);
    assert!(matches!(Method::decode(&payload), Err(Error::Syntax(_))));
    // A frame announcing a payload larger than frame_max is refused before it is buffered.
    let header = [3u8, 0, 1, 0xFF, 0xFF, 0xFF, 0xF0];
    assert!(matches!(
        Frame::check(&header, FRAME_MAX),
        Err(Error::FrameTooLarge { .. })
    ));
}
