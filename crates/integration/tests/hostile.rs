//! Random, mutated, truncated and oversized frames thrown at a live broker from many
//! connections while a well-behaved client publishes with confirms: every hostile
//! connection ends with a connection.close of a frame or syntax error (or a closed
//! socket), the broker keeps serving, and no confirmed message is lost.

mod common;

use bytes::BytesMut;
use common::*;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::BasicProperties;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wharf_amqp::frame::{encode_body, encode_content_header, encode_method};
use wharf_amqp::*;
use wharf_integration::raw::RawClient;

const HOSTILE_CONNECTIONS: u64 = 24;
const ROUNDS_PER_CONNECTION: usize = 6;

fn valid_frames(queue: &str) -> Vec<u8> {
    let mut out = BytesMut::new();
    let publish = Method::BasicPublish(BasicPublish {
        exchange: "".into(),
        routing_key: queue.into(),
        mandatory: false,
        immediate: false,
    });
    encode_method(1, &publish, &mut out);
    encode_content_header(
        1,
        &ContentHeader {
            class_id: 60,
            body_size: 3,
            properties: Default::default(),
        },
        &mut out,
    );
    encode_body(1, b"abc", 131072, &mut out);
    encode_method(
        1,
        &Method::BasicQos(BasicQos {
            prefetch_size: 0,
            prefetch_count: 5,
            global: false,
        }),
        &mut out,
    );
    out.to_vec()
}

fn mutate(rng: &mut StdRng, bytes: &mut Vec<u8>) {
    match rng.gen_range(0..6) {
        // Truncated: the frame stops short (the rest never comes, or other frames do).
        4 => bytes.truncate(rng.gen_range(1..bytes.len())),
        // Oversized: a frame header announcing far more than frame_max.
        5 => {
            let size: u32 = rng.gen_range(131_073..=u32::MAX);
            let mut header = vec![rng.gen_range(1..=3u8), 0, 1];
            header.extend_from_slice(&size.to_be_bytes());
            bytes.splice(0..0, header);
        }
        0 => {
            for _ in 0..rng.gen_range(1..6) {
                let at = rng.gen_range(0..bytes.len());
                bytes[at] ^= 1 << rng.gen_range(0..8);
            }
        }
        1 => {
            let at = rng.gen_range(0..bytes.len());
            bytes[at] = rng.gen();
        }
        2 => {
            let junk: Vec<u8> = (0..rng.gen_range(1..64)).map(|_| rng.gen()).collect();
            let at = rng.gen_range(0..bytes.len());
            bytes.splice(at..at, junk);
        }
        _ => *bytes = (0..rng.gen_range(8..200)).map(|_| rng.gen()).collect(),
    }
}

/// One hostile connection: valid traffic, then mutated frames until the broker hangs up.
async fn attack(broker: std::net::SocketAddr, seed: u64, queue: String, external: bool) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut client = RawClient::open_with_channel(broker).await;
    client.strict = !external;
    for _ in 0..ROUNDS_PER_CONNECTION {
        let mut bytes = valid_frames(&queue);
        mutate(&mut rng, &mut bytes);
        if client.socket.try_write(&bytes).is_err() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    // Finish with bytes no broker can accept, then hang up (a frame cut short leaves the
    // broker waiting for its rest until the socket closes), so every connection must end.
    let _ = client.socket.try_write(&[1, 0, 1, 0, 0, 0, 0, 0x00]);
    let _ = tokio::io::AsyncWriteExt::shutdown(&mut client.socket).await;
    loop {
        match client.read_frame().await {
            None => break,
            Some(Frame {
                payload: FramePayload::Method(Method::ConnectionClose(close)),
                ..
            }) => {
                // RabbitMQ itself answers some of these with 541 INTERNAL_ERROR; Wharf must not.
                let internal_ok = external && close.reply_code == 541;
                assert!(
                    internal_ok || matches!(close.reply_code, 501..=505 | 530 | 540),
                    "unexpected close {close:?}"
                );
                let mut out = BytesMut::new();
                encode_method(
                    0,
                    &Method::ConnectionCloseOk(ConnectionCloseOk {}),
                    &mut out,
                );
                let _ = client.socket.try_write(&out);
                break;
            }
            Some(_) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_frames_from_many_connections() {
    let broker = start_broker().await;
    let (_conn, ch) = lapin_channel(&broker).await;
    let safe = unique("safe");
    ch.queue_declare(&safe, Default::default(), FieldTable::default())
        .await
        .unwrap();
    let target = unique("target");
    ch.queue_declare(&target, Default::default(), FieldTable::default())
        .await
        .unwrap();
    ch.confirm_select(Default::default()).await.unwrap();

    let attacks: Vec<_> = (0..HOSTILE_CONNECTIONS)
        .map(|i| {
            tokio::spawn(attack(
                broker.addr,
                1000 + i,
                target.clone(),
                broker.is_external(),
            ))
        })
        .collect();

    // Meanwhile a good client publishes with confirms.
    let mut confirmed = 0u32;
    for i in 0..300u32 {
        let confirm = ch
            .basic_publish(
                "",
                &safe,
                Default::default(),
                &i.to_be_bytes(),
                BasicProperties::default(),
            )
            .await
            .unwrap();
        if within(confirm).await.unwrap().is_ack() {
            confirmed += 1;
        }
    }
    for attack in attacks {
        within(attack)
            .await
            .expect("a hostile connection task panicked");
    }
    assert_eq!(confirmed, 300);

    // Everything confirmed is there, in order, exactly once.
    let (_c2, reader) = lapin_channel(&broker).await;
    for i in 0..300u32 {
        let got = within(reader.basic_get(&safe, BasicGetOptions { no_ack: true }))
            .await
            .unwrap()
            .expect("confirmed message present");
        assert_eq!(got.delivery.data, i.to_be_bytes());
    }
    assert!(reader
        .basic_get(&safe, Default::default())
        .await
        .unwrap()
        .is_none());
    reader
        .queue_delete(&safe, Default::default())
        .await
        .unwrap();
    reader
        .queue_delete(&target, Default::default())
        .await
        .unwrap();
}
