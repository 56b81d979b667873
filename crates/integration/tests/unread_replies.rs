//! A client that sends requests and never reads the replies (here basic.get, which
//! answers a 40-byte request with a whole message): the broker stops reading from it once
//! a bounded amount waits to be written, instead of buffering without bound, and serves it
//! again, losing nothing, once it reads.

mod common;

use bytes::BytesMut;
use common::*;
use lapin::types::FieldTable;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wharf_amqp::frame::encode_method;
use wharf_amqp::*;
use wharf_integration::raw::RawClient;
use wharf_server::alarm::resident_bytes;

const BODY_BYTES: usize = 128 * 1024;
/// get + reject rounds: 512 MiB of replies if nothing held the broker back.
const ROUNDS: u64 = 4096;
/// What the broker may hold for the client, with room for allocator slack: the pause
/// threshold (16 MiB) plus the batch being written, well under the 512 MiB above.
const GROWTH_ALLOWED: u64 = 128 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_not_read_either() {
    let broker = start_broker().await;
    if broker.is_external() {
        return; // measures this process's memory
    }
    let queue = unique("unread");
    let (_conn, ch) = lapin_channel(&broker).await;
    ch.queue_declare(&queue, Default::default(), FieldTable::default())
        .await
        .unwrap();
    publish_to(&ch, &queue, &vec![7u8; BODY_BYTES]).await;
    assert!(count_becomes(&ch, &queue, 1).await);

    // Each round takes the message and puts it back: the nth get-ok has delivery tag n.
    let mut requests = BytesMut::new();
    for tag in 1..=ROUNDS {
        let get = Method::BasicGet(BasicGet {
            queue: queue.as_str().into(),
            no_ack: false,
        });
        encode_method(1, &get, &mut requests);
        let reject = Method::BasicReject(BasicReject {
            delivery_tag: tag,
            requeue: true,
        });
        encode_method(1, &reject, &mut requests);
    }
    let client = RawClient::open_with_channel(broker.addr).await;
    let before = resident_bytes().unwrap();
    let (mut from_broker, mut to_broker) = client.socket.into_split();
    // The writes may block once the broker stops reading: they go on in their own task.
    let writer = tokio::spawn(async move {
        to_broker.write_all(&requests).await.unwrap();
        to_broker
    });

    let mut grown = 0;
    for _ in 0..20 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        grown = grown.max(resident_bytes().unwrap().saturating_sub(before));
    }
    assert!(
        grown < GROWTH_ALLOWED,
        "the broker buffered {} MiB for a client that does not read",
        grown >> 20
    );

    // Reading now, the client gets every reply, in order, and the broker finishes reading.
    let read_all = async {
        let mut buffer = BytesMut::new();
        let (mut gets, mut body_bytes) = (0u64, 0u64);
        loop {
            while let Some(frame) = Frame::decode(&mut buffer, 0).unwrap() {
                match frame.payload {
                    FramePayload::Method(Method::BasicGetOk(ok)) => {
                        gets += 1;
                        assert_eq!(ok.delivery_tag, gets);
                    }
                    FramePayload::Body(body) => body_bytes += body.len() as u64,
                    FramePayload::Header(_) | FramePayload::Heartbeat => {}
                    other => panic!("unexpected frame {other:?}"),
                }
            }
            if gets == ROUNDS && body_bytes == ROUNDS * BODY_BYTES as u64 {
                break;
            }
            let read = from_broker.read_buf(&mut buffer).await.unwrap();
            assert!(read > 0, "the broker closed the connection");
        }
        (gets, body_bytes)
    };
    let (gets, body_bytes) = tokio::time::timeout(std::time::Duration::from_secs(30), read_all)
        .await
        .expect("the replies did not all come");
    assert_eq!((gets, body_bytes), (ROUNDS, ROUNDS * BODY_BYTES as u64));
    within(writer).await.unwrap();
    assert!(
        count_becomes(&ch, &queue, 1).await,
        "the message is still there"
    );
}
