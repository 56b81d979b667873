//! queue.declare / bind / unbind / purge / delete, as RabbitMQ answers them.

mod common;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, ExchangeKind};

fn exclusive() -> QueueDeclareOptions {
    QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    }
}

async fn publish(ch: &lapin::Channel, exchange: &str, key: &str, body: &[u8]) {
    ch.basic_publish(
        exchange,
        key,
        Default::default(),
        body,
        BasicProperties::default(),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_named_queue() {
    let broker = start_broker().await;
    let (_c, ch) = lapin_channel(&broker).await;
    let q = ch
        .queue_declare("", exclusive(), FieldTable::default())
        .await
        .unwrap();
    let name = q.name().as_str();
    assert!(name.starts_with("amq.gen-"), "{name}");
    assert_eq!(name.len(), "amq.gen-".len() + 22, "{name}");
    assert_eq!((q.message_count(), q.consumer_count()), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declare_ok_counts_messages_and_consumers() {
    let broker = start_broker().await;
    let (_c, ch) = lapin_channel(&broker).await;
    let name = unique("q");
    ch.queue_declare(&name, exclusive(), FieldTable::default())
        .await
        .unwrap();
    for i in 0..3u8 {
        publish(&ch, "", &name, &[i]).await;
    }
    let _consumer = ch
        .basic_consume(
            &name,
            "c1",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    // The consumer (no prefetch) takes all three; they are unacked, not ready.
    let q = within(async {
        loop {
            let q = ch
                .queue_declare(&name, exclusive(), FieldTable::default())
                .await
                .unwrap();
            if q.message_count() == 0 {
                return q;
            }
        }
    })
    .await;
    assert_eq!(q.consumer_count(), 1);
    let ch2 = ch.clone();
    ch2.basic_cancel("c1", Default::default()).await.unwrap();
    let q = ch
        .queue_declare(&name, exclusive(), FieldTable::default())
        .await
        .unwrap();
    assert_eq!(q.consumer_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_declare_of_missing_queue_is_404() {
    let broker = start_broker().await;
    let (_c, ch) = lapin_channel(&broker).await;
    let name = unique("missing");
    let err = ch
        .queue_declare(
            &name,
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        protocol_error(&err),
        (404, format!("NOT_FOUND - no queue '{name}' in vhost '/'"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeclare_with_other_durability_is_406() {
    let broker = start_broker().await;
    let (conn, ch) = lapin_channel(&broker).await;
    let name = unique("q");
    ch.queue_declare(&name, Default::default(), FieldTable::default())
        .await
        .unwrap();
    let err = ch
        .queue_declare(
            &name,
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        protocol_error(&err),
        (
            406,
            format!("PRECONDITION_FAILED - inequivalent arg 'durable' for queue '{name}' in vhost '/': received 'true' but current is 'false'")
        )
    );
    let ch = conn.create_channel().await.unwrap();
    ch.queue_delete(&name, Default::default()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeclare_with_other_arguments_is_406() {
    let broker = start_broker().await;
    let (conn, ch) = lapin_channel(&broker).await;
    let name = unique("q");
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(10));
    ch.queue_declare(&name, Default::default(), args)
        .await
        .unwrap();
    let mut other = FieldTable::default();
    other.insert("x-max-length".into(), AMQPValue::LongInt(20));
    let err = ch
        .queue_declare(&name, Default::default(), other)
        .await
        .unwrap_err();
    let inequivalent = |tail: &str| {
        (
            406,
            format!(
                "PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue '{name}' in \
                 vhost '/': {tail}"
            ),
        )
    };
    assert_eq!(
        protocol_error(&err),
        inequivalent("received '20' but current is '10'")
    );
    // Left out: shown with its type.
    let ch = conn.create_channel().await.unwrap();
    let err = ch
        .queue_declare(&name, Default::default(), FieldTable::default())
        .await
        .unwrap_err();
    assert_eq!(
        protocol_error(&err),
        inequivalent("received none but current is the value '10' of type 'signedint'")
    );
    let ch = conn.create_channel().await.unwrap();
    ch.queue_delete(&name, Default::default()).await.unwrap();
    // A queue declared as classic is the one declared without a type, and the reverse.
    let classic = unique("q");
    let mut typed = FieldTable::default();
    typed.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("classic".into()),
    );
    ch.queue_declare(&classic, Default::default(), typed.clone())
        .await
        .unwrap();
    ch.queue_declare(&classic, Default::default(), FieldTable::default())
        .await
        .unwrap();
    ch.queue_delete(&classic, Default::default()).await.unwrap();
    ch.queue_declare(&classic, Default::default(), FieldTable::default())
        .await
        .unwrap();
    ch.queue_declare(&classic, Default::default(), typed)
        .await
        .unwrap();
    ch.queue_delete(&classic, Default::default()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_queue_is_locked_to_its_connection_and_goes_with_it() {
    let broker = start_broker().await;
    let (owner, ch) = lapin_channel(&broker).await;
    let name = unique("excl");
    ch.queue_declare(&name, exclusive(), FieldTable::default())
        .await
        .unwrap();
    let (_other, ch2) = lapin_channel(&broker).await;
    let err = ch2
        .basic_consume(&name, "", Default::default(), FieldTable::default())
        .await
        .unwrap_err();
    assert_eq!(
        protocol_error(&err),
        (
            405,
            format!("RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{name}' in vhost '/'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration.")
        )
    );
    owner.close(200, "bye").await.unwrap();
    let (_third, ch3) = lapin_channel(&broker).await;
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let err = within(async {
        loop {
            match ch3
                .queue_declare(&name, passive, FieldTable::default())
                .await
            {
                Err(e) => return e,
                Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
    })
    .await;
    assert_eq!(protocol_error(&err).0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_delete_queue_goes_when_its_last_consumer_cancels() {
    let broker = start_broker().await;
    let (_c, ch) = lapin_channel(&broker).await;
    let name = unique("auto");
    ch.queue_declare(
        &name,
        QueueDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    // lapin cancels a consumer when its handle is dropped: keep both.
    let _a = ch
        .basic_consume(&name, "a", Default::default(), FieldTable::default())
        .await
        .unwrap();
    let _b = ch
        .basic_consume(&name, "b", Default::default(), FieldTable::default())
        .await
        .unwrap();
    ch.basic_cancel("a", Default::default()).await.unwrap();
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    ch.queue_declare(&name, passive, FieldTable::default())
        .await
        .unwrap();
    ch.basic_cancel("b", Default::default()).await.unwrap();
    let err = ch
        .queue_declare(&name, passive, FieldTable::default())
        .await
        .unwrap_err();
    assert_eq!(protocol_error(&err).0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_and_delete_report_counts() {
    let broker = start_broker().await;
    let (_c, ch) = lapin_channel(&broker).await;
    let name = unique("q");
    ch.queue_declare(&name, Default::default(), FieldTable::default())
        .await
        .unwrap();
    for i in 0..5u8 {
        publish(&ch, "", &name, &[i]).await;
    }
    assert_eq!(ch.queue_purge(&name, Default::default()).await.unwrap(), 5);
    for i in 0..2u8 {
        publish(&ch, "", &name, &[i]).await;
    }
    assert_eq!(ch.queue_delete(&name, Default::default()).await.unwrap(), 2);
    // Deleting a queue that is not there answers delete-ok with 0.
    assert_eq!(ch.queue_delete(&name, Default::default()).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_if_empty_and_if_unused() {
    let broker = start_broker().await;
    let (conn, ch) = lapin_channel(&broker).await;
    let name = unique("q");
    ch.queue_declare(&name, Default::default(), FieldTable::default())
        .await
        .unwrap();
    publish(&ch, "", &name, b"x").await;
    let err = ch
        .queue_delete(
            &name,
            QueueDeleteOptions {
                if_empty: true,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        protocol_error(&err),
        (
            406,
            format!("PRECONDITION_FAILED - queue '{name}' in vhost '/' not empty")
        )
    );
    let ch = conn.create_channel().await.unwrap();
    let _consumer = ch
        .basic_consume(&name, "c", Default::default(), FieldTable::default())
        .await
        .unwrap();
    let ch2 = conn.create_channel().await.unwrap();
    let err = ch2
        .queue_delete(
            &name,
            QueueDeleteOptions {
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
            format!("PRECONDITION_FAILED - queue '{name}' in vhost '/' in use")
        )
    );
    let ch3 = conn.create_channel().await.unwrap();
    ch3.queue_delete(&name, Default::default()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_to_missing_exchange_is_404_and_unbind_stops_routing() {
    let broker = start_broker().await;
    let (conn, ch) = lapin_channel(&broker).await;
    let q = ch
        .queue_declare("", exclusive(), FieldTable::default())
        .await
        .unwrap();
    let q = q.name().as_str().to_string();
    let missing = unique("nox");
    let err = ch
        .queue_bind(&q, &missing, "k", Default::default(), FieldTable::default())
        .await
        .unwrap_err();
    assert_eq!(
        protocol_error(&err),
        (
            404,
            format!("NOT_FOUND - no exchange '{missing}' in vhost '/'")
        )
    );
    let ch = conn.create_channel().await.unwrap();
    let ex = unique("ex");
    ch.exchange_declare(
        &ex,
        ExchangeKind::Direct,
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(&q, &ex, "k", Default::default(), FieldTable::default())
        .await
        .unwrap();
    publish(&ch, &ex, "k", b"one").await;
    ch.queue_unbind(&q, &ex, "k", FieldTable::default())
        .await
        .unwrap();
    publish(&ch, &ex, "k", b"two").await;
    let got = ch
        .basic_get(&q, BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.delivery.data, b"one");
    assert!(ch
        .basic_get(&q, BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .is_none());
    ch.exchange_delete(&ex, Default::default()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_queue_name_is_403() {
    let broker = start_broker().await;
    let (_c, ch) = lapin_channel(&broker).await;
    let name = format!("amq.{}", unique("q"));
    let err = ch
        .queue_declare(&name, Default::default(), FieldTable::default())
        .await
        .unwrap_err();
    assert_eq!(
        protocol_error(&err),
        (
            403,
            format!("ACCESS_REFUSED - queue name '{name}' contains reserved prefix 'amq.*'")
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_named_queue_cannot_be_redeclared_by_name() {
    // As RabbitMQ: the reserved prefix is refused before the queue is looked up, so even
    // the queue's own connection gets 403 (a passive declare is the way to ask for it).
    let broker = start_broker().await;
    let (_c, ch) = lapin_channel(&broker).await;
    let declared = ch
        .queue_declare("", Default::default(), FieldTable::default())
        .await
        .unwrap();
    let name = declared.name().as_str().to_string();
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    ch.queue_declare(&name, passive, FieldTable::default())
        .await
        .unwrap();
    let err = ch
        .queue_declare(&name, Default::default(), FieldTable::default())
        .await
        .unwrap_err();
    assert_eq!(
        protocol_error(&err),
        (
            403,
            format!("ACCESS_REFUSED - queue name '{name}' contains reserved prefix 'amq.*'")
        )
    );
}

/// A channel that publishes through the default exchange keeps the queue it routed to
/// last; a queue deleted and declared again under the same name must get the next
/// message, and once it is gone a mandatory message comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_to_a_queue_deleted_and_redeclared_reaches_the_new_one() {
    let broker = start_broker().await;
    let (conn, ch) = lapin_channel(&broker).await;
    let admin = conn.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    let q = unique("redeclared");
    let publish_confirmed = |body: &'static [u8]| {
        let (ch, q) = (ch.clone(), q.clone());
        async move {
            let confirm = ch
                .basic_publish(
                    "",
                    &q,
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    body,
                    BasicProperties::default(),
                )
                .await
                .unwrap();
            within(confirm).await.unwrap()
        }
    };
    admin
        .queue_declare(&q, Default::default(), FieldTable::default())
        .await
        .unwrap();
    assert!(publish_confirmed(b"one").await.take_message().is_none());
    admin.queue_delete(&q, Default::default()).await.unwrap();
    admin
        .queue_declare(&q, Default::default(), FieldTable::default())
        .await
        .unwrap();
    assert!(publish_confirmed(b"two").await.take_message().is_none());
    let got = admin
        .basic_get(&q, BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("the new queue got the second message");
    assert_eq!(got.delivery.data, b"two");
    assert_eq!(message_count(&admin, &q).await, 0);
    admin.queue_delete(&q, Default::default()).await.unwrap();
    let returned = publish_confirmed(b"three")
        .await
        .take_message()
        .expect("a basic.return once the queue is gone");
    assert_eq!(returned.reply_code, 312);
}

/// Issue 14, item 1: as in RabbitMQ, unbinding what is not there (the queue, the exchange,
/// both, or just the binding) answers unbind-ok and the channel goes on; binding to or
/// purging a queue that is not there stays 404, and so does the default exchange's 403.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbinding_what_is_not_there_is_ok() {
    let broker = start_broker().await;
    let (conn, ch) = lapin_channel(&broker).await;
    let q = ch
        .queue_declare("", exclusive(), FieldTable::default())
        .await
        .unwrap();
    let q = q.name().as_str().to_string();
    let ex = unique("ex");
    ch.exchange_declare(
        &ex,
        ExchangeKind::Direct,
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let (gone_queue, gone_exchange) = (unique("noq"), unique("nox"));
    for (queue, exchange) in [
        (q.as_str(), ex.as_str()),
        (gone_queue.as_str(), ex.as_str()),
        (q.as_str(), gone_exchange.as_str()),
        (gone_queue.as_str(), gone_exchange.as_str()),
    ] {
        ch.queue_unbind(queue, exchange, "k", FieldTable::default())
            .await
            .unwrap_or_else(|e| panic!("unbind {queue} from {exchange}: {e}"));
    }
    ch.exchange_unbind(
        &gone_exchange,
        &unique("nox"),
        "k",
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.exchange_unbind(
        &ex,
        &gone_exchange,
        "k",
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    // The channel is still open.
    ch.queue_declare(
        &q,
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();

    let err = ch
        .queue_unbind(&gone_queue, "", "k", FieldTable::default())
        .await
        .unwrap_err();
    assert_eq!(protocol_error(&err).0, 403);
    let ch = conn.create_channel().await.unwrap();
    let err = ch
        .queue_bind(
            &gone_queue,
            &ex,
            "k",
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        protocol_error(&err),
        (
            404,
            format!("NOT_FOUND - no queue '{gone_queue}' in vhost '/'")
        )
    );
    let ch = conn.create_channel().await.unwrap();
    let err = ch
        .queue_purge(&gone_queue, Default::default())
        .await
        .unwrap_err();
    assert_eq!(protocol_error(&err).0, 404);
    let ch = conn.create_channel().await.unwrap();
    ch.exchange_delete(&ex, Default::default()).await.unwrap();
}

/// Issue 14, item 1, the rest of the family: deleting a queue or an exchange that is not
/// there, and cancelling a consumer tag that is not there, answer -ok, as in RabbitMQ.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_and_cancelling_what_is_not_there_is_ok() {
    let broker = start_broker().await;
    let (_conn, ch) = lapin_channel(&broker).await;
    let deleted = ch
        .queue_delete(&unique("noq"), Default::default())
        .await
        .unwrap();
    assert_eq!(deleted, 0);
    ch.exchange_delete(&unique("nox"), Default::default())
        .await
        .unwrap();
    ch.basic_cancel(&unique("no-such-consumer"), Default::default())
        .await
        .unwrap();
    // The channel is still open.
    let q = ch
        .queue_declare("", exclusive(), FieldTable::default())
        .await
        .unwrap();
    assert_eq!(q.message_count(), 0);
}

/// The nowait forms of the same paths: deletes, an unbind and a cancel of what is not there
/// send nothing back and leave the channel open; a purge, a bind or an exchange bind of a
/// missing name close it with 404, as without nowait (checked against RabbitMQ 3.10.8).
#[tokio::test]
async fn nowait_methods_on_missing_names_answer_as_the_waiting_ones() {
    use wharf_amqp::*;
    use wharf_integration::raw::RawClient;
    let broker = start_broker().await;
    let mut client = RawClient::open_with_channel(broker.addr).await;
    let (gone_queue, gone_exchange, gone_other) = (unique("noq"), unique("nox"), unique("nox"));
    let silent: Vec<Method> = vec![
        Method::QueueDelete(QueueDelete {
            queue: gone_queue.as_str().into(),
            if_unused: false,
            if_empty: false,
            no_wait: true,
        }),
        Method::ExchangeDelete(ExchangeDelete {
            exchange: gone_exchange.as_str().into(),
            if_unused: false,
            no_wait: true,
        }),
        Method::BasicCancel(BasicCancel {
            consumer_tag: unique("no-such-consumer").as_str().into(),
            no_wait: true,
        }),
        Method::ExchangeUnbind(Box::new(wharf_amqp::ExchangeUnbind {
            destination: gone_exchange.as_str().into(),
            source: gone_other.as_str().into(),
            routing_key: "k".into(),
            no_wait: true,
            arguments: wharf_amqp::FieldTable::new(),
        })),
    ];
    for method in silent {
        client.send_method(1, method).await;
    }
    client
        .send_method(
            1,
            BasicQos {
                prefetch_size: 0,
                prefetch_count: 10,
                global: false,
            },
        )
        .await;
    let next = client.read_method().await;
    assert!(matches!(next, Method::BasicQosOk(_)), "{next:?}");

    let refused: Vec<(Method, String)> = vec![
        (
            Method::QueuePurge(QueuePurge {
                queue: gone_queue.as_str().into(),
                no_wait: true,
            }),
            format!("NOT_FOUND - no queue '{gone_queue}' in vhost '/'"),
        ),
        (
            Method::QueueBind(Box::new(wharf_amqp::QueueBind {
                queue: gone_queue.as_str().into(),
                exchange: "amq.direct".into(),
                routing_key: "k".into(),
                no_wait: true,
                arguments: wharf_amqp::FieldTable::new(),
            })),
            format!("NOT_FOUND - no queue '{gone_queue}' in vhost '/'"),
        ),
        (
            Method::ExchangeBind(Box::new(wharf_amqp::ExchangeBind {
                destination: gone_exchange.as_str().into(),
                source: "amq.direct".into(),
                routing_key: "k".into(),
                no_wait: true,
                arguments: wharf_amqp::FieldTable::new(),
            })),
            format!("NOT_FOUND - no exchange '{gone_exchange}' in vhost '/'"),
        ),
    ];
    for (method, expected) in refused {
        let what = format!("{method:?}");
        client.send_method(1, method).await;
        let (code, text) = client.expect_channel_close(1).await;
        assert_eq!((code, text.as_str()), (404, expected.as_str()), "{what}");
        client.send_method(1, ChannelOpen {}).await;
        let ok = client.read_method().await;
        assert!(matches!(ok, Method::ChannelOpenOk(_)), "{ok:?}");
    }
}

/// The rest of the "not there" family, each answered as RabbitMQ 3.10.8 answers it: a
/// conditional delete of a missing queue or exchange is -ok (nothing to be used or full),
/// get, consume and publish name what is missing with 404.
#[tokio::test]
async fn every_other_path_to_a_missing_name_answers_as_rabbitmq() {
    use wharf_amqp::*;
    use wharf_integration::raw::RawClient;
    let broker = start_broker().await;
    let mut client = RawClient::open_with_channel(broker.addr).await;
    let (gone_queue, gone_exchange) = (unique("noq"), unique("nox"));
    client
        .send_method(
            1,
            QueueDelete {
                queue: gone_queue.as_str().into(),
                if_unused: true,
                if_empty: true,
                no_wait: false,
            },
        )
        .await;
    let ok = client.read_method().await;
    assert_eq!(
        ok,
        Method::QueueDeleteOk(QueueDeleteOk { message_count: 0 })
    );
    client
        .send_method(
            1,
            ExchangeDelete {
                exchange: gone_exchange.as_str().into(),
                if_unused: true,
                no_wait: false,
            },
        )
        .await;
    let ok = client.read_method().await;
    assert_eq!(ok, Method::ExchangeDeleteOk(ExchangeDeleteOk {}));

    let no_queue = format!("NOT_FOUND - no queue '{gone_queue}' in vhost '/'");
    let refused: Vec<(Method, &str)> = vec![
        (
            Method::BasicGet(BasicGet {
                queue: gone_queue.as_str().into(),
                no_ack: true,
            }),
            &no_queue,
        ),
        (
            Method::BasicConsume(Box::new(BasicConsume {
                queue: gone_queue.as_str().into(),
                consumer_tag: "".into(),
                no_local: false,
                no_ack: true,
                exclusive: false,
                no_wait: false,
                arguments: wharf_amqp::FieldTable::new(),
            })),
            &no_queue,
        ),
    ];
    for (method, expected) in refused {
        let what = format!("{method:?}");
        client.send_method(1, method).await;
        let (code, text) = client.expect_channel_close(1).await;
        assert_eq!((code, text.as_str()), (404, expected), "{what}");
        client.send_method(1, ChannelOpen {}).await;
        let ok = client.read_method().await;
        assert!(matches!(ok, Method::ChannelOpenOk(_)), "{ok:?}");
    }
    client.publish(1, &gone_exchange, "k", b"lost").await;
    let (code, text) = client.expect_channel_close(1).await;
    assert_eq!(
        (code, text),
        (
            404,
            format!("NOT_FOUND - no exchange '{gone_exchange}' in vhost '/'")
        )
    );
}
