//! The fuzz targets on stable Rust, without coverage guidance: each runs over valid seed
//! inputs, seeded random bytes, and the seeds mutated (bit flips, truncations, spliced
//! and repeated bytes, length fields set to extremes). A panic fails the test; the seed
//! in the message reproduces it. cargo-fuzz (crates/fuzz/fuzz) searches deeper.

use bytes::{Bytes, BytesMut};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wharf_amqp::frame::{encode_body, encode_content_header, encode_method};
use wharf_amqp::*;

/// Inputs per target (file-backed targets take a tenth).
const ITERATIONS: usize = 4_000;

fn table() -> FieldTable {
    let mut inner = FieldTable::new();
    inner.insert("n", FieldValue::I64(-5));
    let mut table = FieldTable::new();
    table.insert("x-max-length", FieldValue::I32(10));
    table.insert("x-message-ttl", FieldValue::I64(60_000));
    table.insert(
        "x-overflow",
        FieldValue::LongStr(Bytes::from_static(b"reject-publish")),
    );
    table.insert(
        "x-dead-letter-exchange",
        FieldValue::LongStr(Bytes::from_static(b"dlx")),
    );
    table.insert("x-max-priority", FieldValue::U8(5));
    table.insert(
        "CC",
        FieldValue::Array(vec![FieldValue::LongStr(Bytes::from_static(b"k"))]),
    );
    table.insert("nested", FieldValue::Table(inner));
    table.insert("d", FieldValue::Decimal { scale: 1, value: 5 });
    table
}

fn properties() -> BasicProperties {
    BasicProperties {
        content_type: Some("text/plain".into()),
        headers: Some(table()),
        delivery_mode: Some(2),
        priority: Some(3),
        reply_to: Some("amq.rabbitmq.reply-to".into()),
        expiration: Some("1000".into()),
        message_id: Some("id".into()),
        timestamp: Some(7),
        user_id: Some("guest".into()),
        ..Default::default()
    }
}

fn encoded_properties() -> Vec<u8> {
    let mut out = BytesMut::new();
    properties().encode(&mut out);
    out.to_vec()
}

fn table_bytes() -> Vec<u8> {
    let mut out = BytesMut::new();
    table().encode(&mut out);
    out.to_vec()
}

fn message_record() -> Vec<u8> {
    let message = wharf_core::Message {
        exchange: "amq.topic".into(),
        routing_key: "a.b".into(),
        properties: EncodedProperties::parse(Bytes::from(encoded_properties())).unwrap(),
        body: Bytes::from_static(b"hello"),
    };
    message.encode_record(Some(123))
}

/// Valid inputs for each target.
fn seeds(target: &str) -> Vec<Vec<u8>> {
    match target {
        "frame" => {
            let mut out = BytesMut::new();
            let publish = Method::BasicPublish(BasicPublish {
                exchange: "x".into(),
                routing_key: "k".into(),
                mandatory: true,
                immediate: false,
            });
            encode_method(1, &publish, &mut out);
            let header = ContentHeader {
                class_id: 60,
                body_size: 5,
                properties: EncodedProperties::parse(Bytes::from(encoded_properties())).unwrap(),
            };
            encode_content_header(1, &header, &mut out);
            encode_body(1, b"hello", 131_072, &mut out);
            let declare = Method::QueueDeclare(QueueDeclare {
                queue: "q".into(),
                arguments: table(),
                ..Default::default()
            });
            encode_method(1, &declare, &mut out);
            vec![out.to_vec()]
        }
        "content_header" => {
            let mut out = BytesMut::new();
            out.extend_from_slice(&60u16.to_be_bytes());
            out.extend_from_slice(&0u16.to_be_bytes());
            out.extend_from_slice(&5u64.to_be_bytes());
            out.extend_from_slice(&encoded_properties());
            vec![out.to_vec()]
        }
        "properties" => vec![encoded_properties()],
        "field_table" | "queue_arguments" => vec![table_bytes()],
        "sasl" => {
            let mut amqplain = vec![1u8];
            let mut login = FieldTable::new();
            login.insert("LOGIN", FieldValue::LongStr(Bytes::from_static(b"guest")));
            login.insert("PASSWORD", FieldValue::LongStr(Bytes::from_static(b"guest")));
            let mut out = BytesMut::new();
            login.encode(&mut out);
            amqplain.extend_from_slice(&out[4..]);
            vec![b"\x00\x00guest\x00guest".to_vec(), amqplain, vec![2]]
        }
        "policy" => vec![
            br#"^q\.
{"max-length":1,"dead-letter-exchange":"x","message-ttl":5,"overflow":"drop-head"}"#
                .to_vec(),
        ],
        "expiration" => vec![b"60000".to_vec(), b"0".to_vec()],
        "limits" => vec![br#"{"max-connections":1,"max-queues":-1,"max-channels":3}"#.to_vec()],
        "definitions" => vec![include_bytes!(
            "../../integration/tests/fixtures/rabbitmq-3.10.8-definitions.json"
        )
        .to_vec()],
        "control_request" => vec![
            br#"{"command":"add_user","name":"u","password":"p","tags":["administrator"]}"#
                .to_vec(),
            br#"{"command":"set_permissions","vhost":"/","user":"guest","configure":".*","write":"^a","read":""}"#
                .to_vec(),
            br#"{"command":"set_vhost_limits","vhost":"/","limits":"{\"max-queues\":1}"}"#.to_vec(),
        ],
        "message_record" => vec![message_record()],
        "segment" => {
            // Two records as the segment writer lays them out (length word, CRC, payload).
            let dir = std::env::temp_dir().join(format!("wharf-fuzz-seed-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("seed.seg");
            let mut writer = wharf_store::segment::SegmentWriter::create(path.clone()).unwrap();
            writer
                .append(&message_record(), wharf_store::segment::Lifetime::Persistent)
                .unwrap();
            writer
                .append(&message_record(), wharf_store::segment::Lifetime::Transient)
                .unwrap();
            writer.flush().unwrap();
            let bytes = std::fs::read(&path).unwrap();
            std::fs::remove_dir_all(&dir).unwrap();
            let header = wharf_store::segment::SEGMENT_HEADER_BYTES as usize;
            vec![bytes[header..].to_vec()]
        }
        "definitions_log" => {
            let line = br#"{"op":"put_queue","vhost":"/","name":"q","auto_delete":false,"arguments":""}
{"op":"put_user","name":"u","password_hash":"","hashing_algorithm":"rabbit_password_hashing_sha256","tags":[]}
"#;
            let mut both = line.to_vec();
            both.extend_from_slice(br#"{"exchanges":[],"queues":[],"bindings":[],"seeded":true}"#);
            vec![both]
        }
        other => panic!("no seeds for {other}"),
    }
}

fn mutate(rng: &mut StdRng, input: &mut Vec<u8>) {
    for _ in 0..rng.gen_range(1..4) {
        if input.is_empty() {
            input.push(rng.gen());
            continue;
        }
        let at = rng.gen_range(0..input.len());
        match rng.gen_range(0..6) {
            0 => input[at] ^= 1 << rng.gen_range(0..8),
            1 => input.truncate(at),
            2 => {
                let garbage: Vec<u8> = (0..rng.gen_range(1..16)).map(|_| rng.gen()).collect();
                input.splice(at..at, garbage);
            }
            3 => {
                let end = (at + rng.gen_range(1..32)).min(input.len());
                let copy = input[at..end].to_vec();
                input.splice(at..at, copy);
            }
            4 => input[at] = [0x00, 0x7f, 0x80, 0xff][rng.gen_range(0..4)],
            _ => {
                let end = (at + 4).min(input.len());
                for byte in &mut input[at..end] {
                    *byte = 0xff;
                }
            }
        }
    }
}

#[test]
fn every_target_survives_random_and_mutated_input() {
    for (index, (name, target)) in wharf_fuzz::TARGETS.iter().enumerate() {
        let file_backed = matches!(
            *name,
            "segment" | "definitions_log" | "definitions" | "control_request"
        );
        let iterations = if file_backed {
            ITERATIONS / 10
        } else {
            ITERATIONS
        };
        let seed = 0x5eed_0000 + index as u64;
        let mut rng = StdRng::seed_from_u64(seed);
        let seeds = seeds(name);
        for input in &seeds {
            target(input);
        }
        for i in 0..iterations {
            let mut input = if i % 4 == 0 {
                let len = rng.gen_range(0..256);
                (0..len).map(|_| rng.gen()).collect()
            } else {
                seeds[i % seeds.len()].clone()
            };
            if i % 4 != 0 {
                mutate(&mut rng, &mut input);
            }
            let outcome = std::panic::catch_unwind(|| target(&input));
            assert!(
                outcome.is_ok(),
                "target {name} panicked (rng seed {seed:#x}, iteration {i}) on {input:02x?}"
            );
        }
    }
}

#[test]
fn every_target_has_seeds() {
    for (name, _) in wharf_fuzz::TARGETS {
        assert!(!seeds(name).is_empty(), "{name}");
    }
}
