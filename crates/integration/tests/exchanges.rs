//! exchange.declare / delete / bind / unbind, as RabbitMQ answers them.

mod common;

use common::*;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, ExchangeKind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declares_each_type_and_redeclares_equivalent() {
    let broker = start_broker().await;
    let (_c, ch) = lapin_channel(&broker).await;
    for kind in [
        ExchangeKind::Direct,
        ExchangeKind::Fanout,
        ExchangeKind::Topic,
        ExchangeKind::Headers,
    ] {
        let name = unique("ex");
        for _ in 0..2 {
            ch.exchange_declare(
                &name,
                kind.clone(),
                Default::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        }
        let passive = ExchangeDeclareOptions {
            passive: true,
            ..Default::default()
        };
        ch.exchange_declare(&name, kind, passive, FieldTable::default())
            .await
            .unwrap();
        ch.exchange_delete(&name, Default::default()).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_exchanges_exist() {
    let broker = start_broker().await;
    let (_c, ch) = lapin_channel(&broker).await;
    let passive = ExchangeDeclareOptions {
        passive: true,
        ..Default::default()
    };
    for name in [
        "amq.direct",
        "amq.fanout",
        "amq.topic",
        "amq.headers",
        "amq.match",
    ] {
        ch.exchange_declare(name, ExchangeKind::Direct, passive, FieldTable::default())
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeclare_with_other_type_is_406() {
    let broker = start_broker().await;
    let (conn, ch) = lapin_channel(&broker).await;
    let name = unique("ex");
    ch.exchange_declare(
        &name,
        ExchangeKind::Direct,
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let err = ch
        .exchange_declare(
            &name,
            ExchangeKind::Fanout,
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        protocol_error(&err),
        (
            406,
            format!("PRECONDITION_FAILED - inequivalent arg 'type' for exchange '{name}' in vhost '/': received 'fanout' but current is 'direct'")
        )
    );
    let ch = conn.create_channel().await.unwrap();
    ch.exchange_delete(&name, Default::default()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_declare_of_missing_exchange_is_404() {
    let broker = start_broker().await;
    let (_c, ch) = lapin_channel(&broker).await;
    let name = unique("missing");
    let passive = ExchangeDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let err = ch
        .exchange_declare(&name, ExchangeKind::Direct, passive, FieldTable::default())
        .await
        .unwrap_err();
    assert_eq!(
        protocol_error(&err),
        (
            404,
            format!("NOT_FOUND - no exchange '{name}' in vhost '/'")
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_amq_prefix_is_403() {
    let broker = start_broker().await;
    let (_c, ch) = lapin_channel(&broker).await;
    let name = format!("amq.{}", unique("x"));
    let err = ch
        .exchange_declare(
            &name,
            ExchangeKind::Direct,
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        protocol_error(&err),
        (
            403,
            format!("ACCESS_REFUSED - exchange name '{name}' contains reserved prefix 'amq.*'")
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_type_closes_the_connection_with_503() {
    let broker = start_broker().await;
    let (conn, ch) = lapin_channel(&broker).await;
    let err = ch
        .exchange_declare(
            &unique("ex"),
            ExchangeKind::Custom("nonsense".into()),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        protocol_error(&err),
        (
            503,
            "COMMAND_INVALID - unknown exchange type 'nonsense'".into()
        )
    );
    within(async {
        while conn.status().connected() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_if_unused_refuses_a_bound_exchange() {
    let broker = start_broker().await;
    let (conn, ch) = lapin_channel(&broker).await;
    let ex = unique("ex");
    ch.exchange_declare(
        &ex,
        ExchangeKind::Direct,
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let q = ch
        .queue_declare(
            "",
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    ch.queue_bind(
        q.name().as_str(),
        &ex,
        "k",
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let err = ch
        .exchange_delete(
            &ex,
            ExchangeDeleteOptions {
                if_unused: true,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        protocol_error(&err),
        (
            406,
            format!("PRECONDITION_FAILED - exchange '{ex}' in vhost '/' in use")
        )
    );
    let ch = conn.create_channel().await.unwrap();
    ch.exchange_delete(&ex, Default::default()).await.unwrap();
    // Deleting what does not exist is not an error.
    ch.exchange_delete(&ex, Default::default()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_to_exchange_binding_routes_and_unbinds() {
    let broker = start_broker().await;
    let (_c, ch) = lapin_channel(&broker).await;
    let (upstream, downstream) = (unique("up"), unique("down"));
    ch.exchange_declare(
        &upstream,
        ExchangeKind::Topic,
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.exchange_declare(
        &downstream,
        ExchangeKind::Fanout,
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.exchange_bind(
        &downstream,
        &upstream,
        "a.*",
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    // A cycle back to the source must not loop or duplicate.
    ch.exchange_bind(
        &upstream,
        &downstream,
        "#",
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let q = ch
        .queue_declare(
            "",
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let q = q.name().as_str().to_string();
    ch.queue_bind(
        &q,
        &downstream,
        "",
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.basic_publish(
        &upstream,
        "a.b",
        Default::default(),
        b"routed",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    ch.basic_publish(
        &upstream,
        "x.y",
        Default::default(),
        b"dropped",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    let got = within(ch.basic_get(&q, BasicGetOptions { no_ack: true }))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.delivery.data, b"routed");
    assert_eq!(got.message_count, 0);
    ch.exchange_unbind(
        &downstream,
        &upstream,
        "a.*",
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.basic_publish(
        &upstream,
        "a.b",
        Default::default(),
        b"after",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    assert!(ch
        .basic_get(&q, BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .is_none());
    ch.exchange_delete(&upstream, Default::default())
        .await
        .unwrap();
    ch.exchange_delete(&downstream, Default::default())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_to_an_internal_exchange_is_403() {
    let broker = start_broker().await;
    let (conn, ch) = lapin_channel(&broker).await;
    let ex = unique("internal");
    ch.exchange_declare(
        &ex,
        ExchangeKind::Fanout,
        ExchangeDeclareOptions {
            internal: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let closed = channel_error(&ch);
    ch.basic_publish(
        &ex,
        "",
        Default::default(),
        b"x",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        closed_with(closed).await,
        (
            403,
            format!("ACCESS_REFUSED - cannot publish to internal exchange '{ex}' in vhost '/'")
        )
    );
    let ch = conn.create_channel().await.unwrap();
    ch.exchange_delete(&ex, Default::default()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_exchange_cannot_be_bound_or_deleted() {
    let broker = start_broker().await;
    let (conn, ch) = lapin_channel(&broker).await;
    let q = ch
        .queue_declare(
            "",
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let err = ch
        .queue_bind(
            q.name().as_str(),
            "",
            "k",
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        protocol_error(&err),
        (
            403,
            "ACCESS_REFUSED - operation not permitted on the default exchange".into()
        )
    );
    let ch = conn.create_channel().await.unwrap();
    let err = ch
        .exchange_delete("amq.direct", Default::default())
        .await
        .unwrap_err();
    assert_eq!(protocol_error(&err).0, 403);
}

/// A channel publishing to an exchange that is deleted and declared again reaches the new
/// one, and gets 404 once it is gone: nothing routes through the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_after_the_exchange_is_deleted_and_redeclared_uses_the_new_one() {
    let broker = start_broker().await;
    let (conn, ch) = lapin_channel(&broker).await;
    let admin = conn.create_channel().await.unwrap();
    let ex = unique("recreated");
    let (first, second) = (exclusive_queue(&ch).await, exclusive_queue(&ch).await);
    let declare_bound_to = |queue: String| {
        let (admin, ex) = (admin.clone(), ex.clone());
        async move {
            admin
                .exchange_declare(
                    &ex,
                    ExchangeKind::Fanout,
                    Default::default(),
                    FieldTable::default(),
                )
                .await
                .unwrap();
            admin
                .queue_bind(&queue, &ex, "", Default::default(), FieldTable::default())
                .await
                .unwrap();
        }
    };
    let publish = |body: &'static [u8]| {
        let (ch, ex) = (ch.clone(), ex.clone());
        async move {
            ch.basic_publish(
                &ex,
                "",
                Default::default(),
                body,
                BasicProperties::default(),
            )
            .await
            .unwrap();
        }
    };
    let count = |queue: String| {
        let admin = admin.clone();
        async move {
            let passive = QueueDeclareOptions {
                passive: true,
                ..Default::default()
            };
            admin
                .queue_declare(&queue, passive, FieldTable::default())
                .await
                .unwrap()
                .message_count()
        }
    };
    declare_bound_to(first.clone()).await;
    publish(b"one").await;
    admin
        .exchange_delete(&ex, Default::default())
        .await
        .unwrap();
    declare_bound_to(second.clone()).await;
    publish(b"two").await;
    // A round trip on the publishing channel: both publishes have been handled.
    ch.basic_qos(1, Default::default()).await.unwrap();
    assert_eq!((count(first).await, count(second).await), (1, 1));

    admin
        .exchange_delete(&ex, Default::default())
        .await
        .unwrap();
    let closed = channel_error(&ch);
    publish(b"three").await;
    let (code, text) = closed_with(closed).await;
    assert_eq!(code, 404, "{text}");
}
