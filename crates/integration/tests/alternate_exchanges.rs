//! The `alternate-exchange` exchange argument, as RabbitMQ applies it: a message an
//! exchange's bindings do not match goes to its alternate exchange, along a chain of them,
//! each exchange at most once; it then counts as routed for `mandatory`.

mod common;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, ExchangeKind};

fn with_alternate(name: &str) -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "alternate-exchange".into(),
        AMQPValue::LongString(LongString::from(name)),
    );
    arguments
}

async fn declare(ch: &Channel, name: &str, kind: ExchangeKind, arguments: FieldTable) {
    ch.exchange_declare(name, kind, Default::default(), arguments)
        .await
        .unwrap();
}

async fn bind(ch: &Channel, queue: &str, exchange: &str, key: &str) {
    ch.queue_bind(
        queue,
        exchange,
        key,
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
}

/// Publishes a mandatory message with confirms on; true if it came back unroutable.
async fn returned(ch: &Channel, exchange: &str, key: &str, body: &[u8]) -> bool {
    let options = BasicPublishOptions {
        mandatory: true,
        ..Default::default()
    };
    let confirm = ch
        .basic_publish(exchange, key, options, body, BasicProperties::default())
        .await
        .unwrap();
    let confirmation = within(confirm).await.unwrap();
    match confirmation.take_message() {
        Some(message) => {
            assert_eq!(message.reply_code, 312);
            true
        }
        None => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unroutable_messages_go_to_the_alternate_and_count_as_routed() {
    let broker = start_broker().await;
    let (_c, ch) = lapin_channel(&broker).await;
    ch.confirm_select(Default::default()).await.unwrap();
    let (main, ae) = (unique("main"), unique("ae"));
    declare(&ch, &ae, ExchangeKind::Fanout, FieldTable::default()).await;
    declare(&ch, &main, ExchangeKind::Direct, with_alternate(&ae)).await;
    let (routed, unrouted) = (exclusive_queue(&ch).await, exclusive_queue(&ch).await);
    bind(&ch, &routed, &main, "k1").await;
    bind(&ch, &unrouted, &ae, "").await;

    assert!(!returned(&ch, &main, "k1", b"matched").await);
    assert!(!returned(&ch, &main, "k2", b"unmatched").await);
    assert_eq!(
        take_all_bodies(&ch, &routed).await,
        vec![b"matched".to_vec()]
    );
    assert_eq!(
        take_all_bodies(&ch, &unrouted).await,
        vec![b"unmatched".to_vec()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_alternate_drops_the_message_and_mandatory_returns_it() {
    let broker = start_broker().await;
    let (_c, ch) = lapin_channel(&broker).await;
    ch.confirm_select(Default::default()).await.unwrap();
    let main = unique("main");
    declare(
        &ch,
        &main,
        ExchangeKind::Direct,
        with_alternate("no-such-exchange"),
    )
    .await;
    assert!(returned(&ch, &main, "k", b"lost").await);
    assert!(returned(&ch, &main, "k", b"lost again").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chains_are_followed_and_cycles_end() {
    let broker = start_broker().await;
    let (_c, ch) = lapin_channel(&broker).await;
    ch.confirm_select(Default::default()).await.unwrap();
    let (a, b) = (unique("a"), unique("b"));
    // a's alternate is b and b's is a: nothing bound, so the message is unroutable.
    declare(&ch, &a, ExchangeKind::Direct, with_alternate(&b)).await;
    declare(&ch, &b, ExchangeKind::Direct, with_alternate(&a)).await;
    assert!(returned(&ch, &a, "k", b"round").await);
    // Once b routes it, a message published to a arrives through the chain.
    let queue = exclusive_queue(&ch).await;
    bind(&ch, &queue, &b, "k").await;
    assert!(!returned(&ch, &a, "k", b"through").await);
    assert_eq!(
        take_all_bodies(&ch, &queue).await,
        vec![b"through".to_vec()]
    );
}

/// RabbitMQ hands a message to an exchange's alternate only when that exchange's own
/// bindings matched nothing; a binding to another exchange counts as a match even if that
/// exchange routes nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exchange_binding_that_matches_keeps_the_alternate_out() {
    let broker = start_broker().await;
    let (_c, ch) = lapin_channel(&broker).await;
    ch.confirm_select(Default::default()).await.unwrap();
    let (main, ae, downstream) = (unique("main"), unique("ae"), unique("down"));
    declare(&ch, &ae, ExchangeKind::Fanout, FieldTable::default()).await;
    declare(&ch, &main, ExchangeKind::Direct, with_alternate(&ae)).await;
    declare(
        &ch,
        &downstream,
        ExchangeKind::Direct,
        FieldTable::default(),
    )
    .await;
    ch.exchange_bind(
        &downstream,
        &main,
        "k",
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let caught = exclusive_queue(&ch).await;
    bind(&ch, &caught, &ae, "").await;
    assert!(returned(&ch, &main, "k", b"to downstream").await);
    assert!(!returned(&ch, &main, "other", b"to the alternate").await);
    assert_eq!(
        take_all_bodies(&ch, &caught).await,
        vec![b"to the alternate".to_vec()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeclaring_with_another_alternate_is_406() {
    let broker = start_broker().await;
    let (conn, ch) = lapin_channel(&broker).await;
    let main = unique("main");
    declare(&ch, &main, ExchangeKind::Direct, with_alternate("first")).await;
    declare(&ch, &main, ExchangeKind::Direct, with_alternate("first")).await;
    let other = conn.create_channel().await.unwrap();
    let err = other
        .exchange_declare(
            &main,
            ExchangeKind::Direct,
            Default::default(),
            with_alternate("second"),
        )
        .await
        .unwrap_err();
    let (code, text) = protocol_error(&err);
    assert_eq!(code, 406);
    assert_eq!(
        text,
        format!(
            "PRECONDITION_FAILED - inequivalent arg 'alternate-exchange' for exchange '{main}' \
             in vhost '/': received 'second' but current is 'first'"
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_exchange_keeps_its_alternate_across_a_restart() {
    if std::env::var("WHARF_TEST_EXTERNAL").is_ok() {
        return; // restarts an in-process broker
    }
    let dir = TempDir::new("alternate-restart");
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    {
        let broker = wharf_integration::start_broker_in(&dir.0).await;
        let (conn, ch) = lapin_channel(&broker).await;
        ch.exchange_declare("ae", ExchangeKind::Fanout, durable, FieldTable::default())
            .await
            .unwrap();
        ch.exchange_declare("main", ExchangeKind::Direct, durable, with_alternate("ae"))
            .await
            .unwrap();
        let queue_options = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.queue_declare("caught", queue_options, FieldTable::default())
            .await
            .unwrap();
        bind(&ch, "caught", "ae", "").await;
        conn.close(200, "restart").await.unwrap();
        broker.stop().await;
    }
    let broker = wharf_integration::start_broker_in(&dir.0).await;
    let (_c, ch) = lapin_channel(&broker).await;
    ch.confirm_select(Default::default()).await.unwrap();
    assert!(!returned(&ch, "main", "nowhere", b"after restart").await);
    assert_eq!(
        take_all_bodies(&ch, "caught").await,
        vec![b"after restart".to_vec()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alternate_that_is_not_a_string_is_406() {
    let broker = start_broker().await;
    let (_conn, ch) = lapin_channel(&broker).await;
    let main = unique("main");
    let mut arguments = FieldTable::default();
    arguments.insert("alternate-exchange".into(), AMQPValue::LongInt(5));
    let err = ch
        .exchange_declare(&main, ExchangeKind::Direct, Default::default(), arguments)
        .await
        .unwrap_err();
    assert_eq!(
        protocol_error(&err),
        (
            406,
            format!(
                "PRECONDITION_FAILED - invalid type 'signedint' for arg 'alternate-exchange' \
                 in exchange '{main}' in vhost '/'"
            )
        )
    );
}
