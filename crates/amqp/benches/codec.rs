//! Codec micro-benchmarks: the frames on the hot path of every message.
//! Run: cargo bench -p wharf-amqp

use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use wharf_amqp::frame::{encode_body, encode_content_header, encode_method};
use wharf_amqp::*;

fn publish_frames() -> BytesMut {
    let mut out = BytesMut::new();
    let publish = Method::BasicPublish(BasicPublish {
        exchange: "amq.direct".into(),
        routing_key: "bench.key".into(),
        mandatory: false,
        immediate: false,
    });
    encode_method(1, &publish, &mut out);
    let header = ContentHeader {
        class_id: 60,
        body_size: 16,
        properties: BasicProperties {
            delivery_mode: Some(1),
            ..Default::default()
        }
        .into(),
    };
    encode_content_header(1, &header, &mut out);
    encode_body(1, &[7u8; 16], 131072, &mut out);
    out
}

fn decode_publish(c: &mut Criterion) {
    let frames = publish_frames().freeze();
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(1));
    group.bench_function("publish (method + header + 16 B body)", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(&frames[..]);
            let mut n = 0;
            while let Some(frame) = Frame::decode(&mut buf, 131072).unwrap() {
                black_box(frame);
                n += 1;
            }
            assert_eq!(n, 3);
        })
    });
    let mut table = FieldTable::new();
    table.insert("x-match", FieldValue::LongStr(Bytes::from_static(b"all")));
    table.insert("format", FieldValue::LongStr(Bytes::from_static(b"pdf")));
    table.insert("type", FieldValue::LongStr(Bytes::from_static(b"report")));
    table.insert("retries", FieldValue::I32(3));
    let mut encoded = BytesMut::new();
    table.encode(&mut encoded);
    let encoded = encoded.freeze();
    group.bench_function("field table (4 entries)", |b| {
        b.iter(|| FieldTable::decode(&mut encoded.clone()).unwrap())
    });
    group.finish();
}

fn encode_deliver(c: &mut Criterion) {
    let deliver = Method::BasicDeliver(Box::new(BasicDeliver {
        consumer_tag: "amq.ctag-1-0123456789abcdef".into(),
        delivery_tag: 123_456,
        redelivered: false,
        exchange: "amq.direct".into(),
        routing_key: "bench.key".into(),
    }));
    let header = ContentHeader {
        class_id: 60,
        body_size: 16,
        properties: BasicProperties {
            delivery_mode: Some(1),
            ..Default::default()
        }
        .into(),
    };
    let body = [7u8; 16];
    let mut out = BytesMut::with_capacity(1 << 20);
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(1));
    group.bench_function("deliver (method + header + 16 B body)", |b| {
        b.iter(|| {
            if out.len() > (1 << 19) {
                out.clear();
            }
            encode_method(1, black_box(&deliver), &mut out);
            encode_content_header(1, black_box(&header), &mut out);
            encode_body(1, black_box(&body), 131072, &mut out);
        })
    });
    group.finish();
}

criterion_group!(benches, decode_publish, encode_deliver);
criterion_main!(benches);
