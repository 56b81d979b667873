//! Topic and headers routing, checked case by case against what RabbitMQ routes.

mod common;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, ExchangeKind};

async fn bound_queue(ch: &lapin::Channel, exchange: &str, key: &str, args: FieldTable) -> String {
    let q = exclusive_queue(ch).await;
    ch.queue_bind(&q, exchange, key, Default::default(), args)
        .await
        .unwrap();
    q
}

async fn count_now(ch: &lapin::Channel, q: &str) -> u32 {
    ch.queue_declare(
        q,
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap()
    .message_count()
}

/// The queue's ready count once it reaches `expected` (RabbitMQ enqueues asynchronously,
/// so a count taken right after publishing may lag); fails if it never does.
async fn settles_at(ch: &lapin::Channel, q: &str, expected: u32) -> u32 {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let n = count_now(ch, q).await;
        if n == expected || tokio::time::Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_patterns() {
    let broker = start_broker().await;
    let (_c, ch) = lapin_channel(&broker).await;
    let ex = unique("topic");
    ch.exchange_declare(
        &ex,
        ExchangeKind::Topic,
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let cases: &[(&str, &[&str], &[&str])] = &[
        ("#", &["", "a", "a.b.c", "."], &[]),
        ("*", &["a", "bcd"], &["", "a.b", "."]),
        ("a.*", &["a.b", "a."], &["a", "a.b.c", "b.a"]),
        ("a.#", &["a", "a.b", "a.b.c"], &["b", "ab.c"]),
        ("a.#.b", &["a.b", "a.x.b", "a.x.y.b"], &["a", "a.b.c", "b"]),
        ("#.#", &["", "a", "a.b"], &[]),
        ("*.*", &["a.b", "."], &["a", "a.b.c"]),
        ("a..b", &["a..b"], &["a.b", "a.x.b"]),
        ("", &[""], &["a"]),
        ("#.z", &["z", "a.z", "a.b.z"], &["za", "z.a"]),
    ];
    for (pattern, matching, other) in cases {
        let q = bound_queue(&ch, &ex, pattern, FieldTable::default()).await;
        for key in matching.iter().chain(other.iter()) {
            ch.basic_publish(
                &ex,
                key,
                Default::default(),
                key.as_bytes(),
                BasicProperties::default(),
            )
            .await
            .unwrap();
        }
        let expected = matching.len() as u32;
        assert_eq!(
            settles_at(&ch, &q, expected).await,
            expected,
            "pattern {pattern:?}"
        );
        for key in matching.iter() {
            let got = ch
                .basic_get(&q, BasicGetOptions { no_ack: true })
                .await
                .unwrap()
                .unwrap();
            assert_eq!(got.delivery.data, key.as_bytes(), "pattern {pattern:?}");
        }
        ch.queue_delete(&q, Default::default()).await.unwrap();
    }
    ch.exchange_delete(&ex, Default::default()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_reaches_a_queue_once_however_many_bindings_match() {
    let broker = start_broker().await;
    let (_c, ch) = lapin_channel(&broker).await;
    let ex = unique("topic");
    ch.exchange_declare(
        &ex,
        ExchangeKind::Topic,
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let q = bound_queue(&ch, &ex, "a.*", FieldTable::default()).await;
    ch.queue_bind(&q, &ex, "#", Default::default(), FieldTable::default())
        .await
        .unwrap();
    ch.queue_bind(&q, &ex, "a.b", Default::default(), FieldTable::default())
        .await
        .unwrap();
    ch.basic_publish(
        &ex,
        "a.b",
        Default::default(),
        b"x",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    assert_eq!(settles_at(&ch, &q, 1).await, 1);
    ch.exchange_delete(&ex, Default::default()).await.unwrap();
}

fn headers(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert((*k).into(), v.clone());
    }
    t
}

fn s(v: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(v))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_exchange_match_modes() {
    let broker = start_broker().await;
    let (_c, ch) = lapin_channel(&broker).await;
    let ex = unique("headers");
    ch.exchange_declare(
        &ex,
        ExchangeKind::Headers,
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let all = bound_queue(
        &ch,
        &ex,
        "",
        headers(&[("x-match", s("all")), ("a", s("1")), ("b", s("2"))]),
    )
    .await;
    let any = bound_queue(
        &ch,
        &ex,
        "",
        headers(&[("x-match", s("any")), ("a", s("1")), ("b", s("2"))]),
    )
    .await;
    let default_all = bound_queue(&ch, &ex, "", headers(&[("a", s("1"))])).await;
    let all_x = bound_queue(
        &ch,
        &ex,
        "",
        headers(&[("x-match", s("all-with-x")), ("x-tag", s("t"))]),
    )
    .await;
    let any_x = bound_queue(
        &ch,
        &ex,
        "",
        headers(&[
            ("x-match", s("any-with-x")),
            ("x-tag", s("t")),
            ("zz", s("no")),
        ]),
    )
    .await;
    let plain_ignores_x = bound_queue(
        &ch,
        &ex,
        "",
        headers(&[("x-match", s("all")), ("x-tag", s("t"))]),
    )
    .await;
    let messages: &[FieldTable] = &[
        headers(&[("a", s("1")), ("b", s("2"))]),
        headers(&[("a", s("1"))]),
        headers(&[("b", s("2")), ("x-tag", s("t"))]),
        headers(&[("a", s("other"))]),
    ];
    for h in messages {
        ch.basic_publish(
            &ex,
            "",
            Default::default(),
            b"m",
            BasicProperties::default().with_headers(h.clone()),
        )
        .await
        .unwrap();
    }
    assert_eq!(settles_at(&ch, &all, 1).await, 1);
    assert_eq!(settles_at(&ch, &any, 3).await, 3);
    assert_eq!(settles_at(&ch, &default_all, 2).await, 2);
    assert_eq!(settles_at(&ch, &all_x, 1).await, 1);
    assert_eq!(settles_at(&ch, &any_x, 1).await, 1);
    assert_eq!(
        settles_at(&ch, &plain_ignores_x, 4).await,
        4,
        "x- arguments are ignored by all"
    );
    ch.exchange_delete(&ex, Default::default()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_and_direct() {
    let broker = start_broker().await;
    let (_c, ch) = lapin_channel(&broker).await;
    let fan = unique("fan");
    ch.exchange_declare(
        &fan,
        ExchangeKind::Fanout,
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let q1 = bound_queue(&ch, &fan, "ignored", FieldTable::default()).await;
    let q2 = bound_queue(&ch, &fan, "", FieldTable::default()).await;
    ch.basic_publish(
        &fan,
        "whatever",
        Default::default(),
        b"x",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    assert_eq!(settles_at(&ch, &q1, 1).await, 1);
    assert_eq!(settles_at(&ch, &q2, 1).await, 1);
    let key = unique("key");
    let d = bound_queue(&ch, "amq.direct", &key, FieldTable::default()).await;
    ch.basic_publish(
        "amq.direct",
        &key,
        Default::default(),
        b"x",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    ch.basic_publish(
        "amq.direct",
        "other",
        Default::default(),
        b"x",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    assert_eq!(settles_at(&ch, &d, 1).await, 1);
    ch.exchange_delete(&fan, Default::default()).await.unwrap();
}
