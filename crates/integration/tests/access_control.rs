//! Access control: who may log in, which vhost they may open, and what each operation
//! needs (configure, write, read, topic permissions), with RabbitMQ's refusals. Each test
//! makes its own vhost and user through administration (rabbitmqctl's commands), so the
//! same tests run against RabbitMQ (`WHARF_TEST_EXTERNAL` with `WHARF_TEST_RABBITMQCTL`).

mod common;

use common::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldArray, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ExchangeKind};
use wharf_integration::raw::RawClient;

async fn declare_queue(ch: &Channel, name: &str) -> lapin::Result<lapin::Queue> {
    ch.queue_declare(name, QueueDeclareOptions::default(), FieldTable::default())
        .await
}

async fn declare_exchange(ch: &Channel, name: &str, args: FieldTable) -> lapin::Result<()> {
    ch.exchange_declare(
        name,
        ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        args,
    )
    .await
}

/// Publishes in confirm mode: Ok once confirmed, or the error the channel closed with.
async fn publish(ch: &Channel, exchange: &str, key: &str) -> Result<(), (u16, String)> {
    publish_with(ch, exchange, key, BasicProperties::default()).await
}

async fn publish_with(
    ch: &Channel,
    exchange: &str,
    key: &str,
    properties: BasicProperties,
) -> Result<(), (u16, String)> {
    let closed = channel_error(ch);
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let confirm = ch
        .basic_publish(
            exchange,
            key,
            BasicPublishOptions::default(),
            b"m",
            properties,
        )
        .await
        .unwrap();
    match confirm.await {
        Ok(_) => Ok(()),
        Err(_) => Err(closed_with(closed).await),
    }
}

/// Runs `op` on a fresh channel of `connection`; the error it closed the channel with.
async fn refused<T, F>(connection: &Connection, op: impl FnOnce(Channel) -> F) -> (u16, String)
where
    F: std::future::Future<Output = lapin::Result<T>>,
{
    let ch = connection.create_channel().await.unwrap();
    match within(op(ch)).await {
        Ok(_) => panic!("the operation was allowed"),
        Err(error) => protocol_error(&error),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_operation_needs_the_permission_rabbitmq_checks() {
    let broker = start_broker().await;
    let t = Tenant::new(&broker, "^c-", "^w-", "^r-");
    let (_g, guest) = t.guest_channel().await;
    for queue in ["r-q", "w-q"] {
        declare_queue(&guest, queue).await.unwrap();
    }
    for exchange in ["r-x", "w-x"] {
        declare_exchange(&guest, exchange, FieldTable::default())
            .await
            .unwrap();
    }
    let conn = t.connect().await;
    let ch = conn.create_channel().await.unwrap();

    // configure: declare and delete.
    declare_queue(&ch, "c-q").await.unwrap();
    declare_exchange(&ch, "c-x", FieldTable::default())
        .await
        .unwrap();
    let got = refused(&conn, |ch| async move { declare_queue(&ch, "w-new").await }).await;
    assert_eq!(got, t.refusal("configure", "queue 'w-new'"));
    let got = refused(&conn, |ch| async move {
        declare_exchange(&ch, "r-new", FieldTable::default()).await
    })
    .await;
    assert_eq!(got, t.refusal("configure", "exchange 'r-new'"));
    let got = refused(&conn, |ch| async move {
        ch.queue_delete("r-q", QueueDeleteOptions::default()).await
    })
    .await;
    assert_eq!(got, t.refusal("configure", "queue 'r-q'"));
    let got = refused(&conn, |ch| async move {
        ch.exchange_delete("w-x", ExchangeDeleteOptions::default())
            .await
    })
    .await;
    assert_eq!(got, t.refusal("configure", "exchange 'w-x'"));

    // A passive declare checks nothing.
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    ch.queue_declare("w-q", passive, FieldTable::default())
        .await
        .unwrap();

    // write: publish (the default exchange is checked as amq.default).
    let ch2 = conn.create_channel().await.unwrap();
    publish(&ch2, "w-x", "k").await.unwrap();
    let ch3 = conn.create_channel().await.unwrap();
    assert_eq!(
        publish(&ch3, "r-x", "k").await.unwrap_err(),
        t.refusal("write", "exchange 'r-x'")
    );
    let ch4 = conn.create_channel().await.unwrap();
    assert_eq!(
        publish(&ch4, "", "w-q").await.unwrap_err(),
        t.refusal("write", "exchange 'amq.default'")
    );

    // read: get, consume, purge.
    ch.basic_get("r-q", BasicGetOptions::default())
        .await
        .unwrap();
    let got = refused(&conn, |ch| async move {
        ch.basic_get("w-q", BasicGetOptions::default()).await
    })
    .await;
    assert_eq!(got, t.refusal("read", "queue 'w-q'"));
    let got = refused(&conn, |ch| async move {
        ch.basic_consume(
            "w-q",
            "",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
    })
    .await;
    assert_eq!(got, t.refusal("read", "queue 'w-q'"));
    let got = refused(&conn, |ch| async move {
        ch.queue_purge("w-q", QueuePurgeOptions::default()).await
    })
    .await;
    assert_eq!(got, t.refusal("read", "queue 'w-q'"));

    // Binding: write on the destination first, then read on the source.
    ch.queue_bind(
        "w-q",
        "r-x",
        "k",
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let got = refused(&conn, |ch| async move {
        ch.queue_bind(
            "r-q",
            "w-x",
            "k",
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
    })
    .await;
    assert_eq!(got, t.refusal("write", "queue 'r-q'"));
    let got = refused(&conn, |ch| async move {
        ch.queue_bind(
            "w-q",
            "w-x",
            "k",
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
    })
    .await;
    assert_eq!(got, t.refusal("read", "exchange 'w-x'"));
    let got = refused(&conn, |ch| async move {
        ch.exchange_bind(
            "r-x",
            "r-x",
            "k",
            ExchangeBindOptions::default(),
            FieldTable::default(),
        )
        .await
    })
    .await;
    assert_eq!(got, t.refusal("write", "exchange 'r-x'"));
    ch.queue_delete("c-q", QueueDeleteOptions::default())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_named_queue_is_checked_under_its_generated_name() {
    let broker = start_broker().await;
    let allowed = Tenant::new(&broker, "^amq\\.gen-", "", "");
    let (_c, ch) = allowed.channel().await;
    let queue = declare_queue(&ch, "").await.unwrap();
    assert!(queue.name().as_str().starts_with("amq.gen-"));

    let denied = Tenant::new(&broker, "^c-", "", "");
    let conn = denied.connect().await;
    let (code, text) = refused(&conn, |ch| async move { declare_queue(&ch, "").await }).await;
    assert_eq!(code, 403);
    let prefix = "ACCESS_REFUSED - access to queue 'amq.gen-";
    assert!(text.starts_with(prefix), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_and_alternate_exchanges_need_read_here_and_write_there() {
    let broker = start_broker().await;
    let t = Tenant::new(&broker, "^c-", "^w-", "^c-");
    let conn = t.connect().await;
    let (_c, ch) = (0, conn.create_channel().await.unwrap());
    let dlx = |name: &str| table(&[("x-dead-letter-exchange", text(name))]);
    ch.queue_declare("c-q1", QueueDeclareOptions::default(), dlx("w-dlx"))
        .await
        .unwrap();
    let got = refused(&conn, |ch| async move {
        ch.queue_declare("c-q2", QueueDeclareOptions::default(), dlx("c-dlx"))
            .await
    })
    .await;
    assert_eq!(got, t.refusal("write", "exchange 'c-dlx'"));

    let ae = |name: &str| table(&[("alternate-exchange", text(name))]);
    declare_exchange(&ch, "c-x1", ae("w-ae")).await.unwrap();
    let got = refused(&conn, |ch| async move {
        declare_exchange(&ch, "c-x2", ae("c-ae")).await
    })
    .await;
    assert_eq!(got, t.refusal("write", "exchange 'c-ae'"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_permissions_limit_routing_keys_on_their_exchange() {
    let broker = start_broker().await;
    let t = Tenant::new(&broker, ".*", ".*", ".*");
    broker.must(&[
        "set_topic_permissions",
        "-p",
        &t.vhost,
        &t.user,
        "amq.topic",
        "^{username}\\.",
        "^ok\\.",
    ]);
    let conn = t.connect().await;
    let ch = conn.create_channel().await.unwrap();
    publish(&ch, "amq.topic", &format!("{}.news", t.user))
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let refusal = |_access: &str, key: &str| {
        (
            403,
            format!(
                "ACCESS_REFUSED - access to topic '{key}' in exchange 'amq.topic' in vhost '{}' refused for user '{}'",
                t.vhost, t.user
            ),
        )
    };
    assert_eq!(
        publish(&ch, "amq.topic", "other.news").await.unwrap_err(),
        refusal("write", "other.news")
    );
    // Other exchanges are not limited.
    let ch = conn.create_channel().await.unwrap();
    publish(&ch, "amq.direct", "other.news").await.unwrap();

    let ch = conn.create_channel().await.unwrap();
    declare_queue(&ch, "q").await.unwrap();
    ch.queue_bind(
        "q",
        "amq.topic",
        "ok.#",
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let got = refused(&conn, |ch| async move {
        ch.queue_bind(
            "q",
            "amq.topic",
            "bad.#",
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
    })
    .await;
    assert_eq!(got, refusal("read", "bad.#"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_deleted_between_login_and_open_does_not_get_in() {
    let broker = start_broker().await;
    if broker.is_external() {
        return; // RabbitMQ lets such a connection in with the login it checked
    }
    let t = Tenant::new(&broker, ".*", ".*", ".*");
    let (mut client, tune) =
        RawClient::until_tune_as(broker.addr, Default::default(), &t.user, PASSWORD).await;
    // Logged in with the old password; the user is deleted and made again with another,
    // with the same permissions, before the client opens its vhost.
    broker.must(&["delete_user", &t.user]);
    broker.must(&["add_user", &t.user, "another password"]);
    broker.must(&["set_permissions", "-p", &t.vhost, &t.user, ".*", ".*", ".*"]);
    client
        .tune_and_open_vhost(
            wharf_amqp::ConnectionTuneOk {
                channel_max: tune.channel_max,
                frame_max: tune.frame_max,
                heartbeat: 0,
            },
            &t.vhost,
        )
        .await;
    let (code, text) = client.expect_connection_close().await;
    assert_eq!(
        (code, text),
        (
            320,
            format!("CONNECTION_FORCED - user '{}' is deleted", t.user)
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cc_and_bcc_keys_need_the_topic_permission_too() {
    let broker = start_broker().await;
    if broker.is_external() {
        // RabbitMQ checks these keys since 4.0 (rabbitmq-server#12553); 3.10 lets them by.
        return;
    }
    let t = Tenant::new(&broker, ".*", ".*", ".*");
    broker.must(&[
        "set_topic_permissions",
        "-p",
        &t.vhost,
        &t.user,
        "amq.topic",
        "^mine\\.",
        ".*",
    ]);
    let conn = t.connect().await;
    let with_header = |name: &str, keys: &[&str]| {
        let keys: Vec<AMQPValue> = keys
            .iter()
            .map(|k| AMQPValue::LongString((*k).into()))
            .collect();
        let mut headers = FieldTable::default();
        headers.insert(name.into(), AMQPValue::FieldArray(FieldArray::from(keys)));
        BasicProperties::default().with_headers(headers)
    };
    for header in ["CC", "BCC"] {
        let ch = conn.create_channel().await.unwrap();
        publish_with(&ch, "amq.topic", "mine.a", with_header(header, &["mine.b"]))
            .await
            .unwrap();
        let got = publish_with(
            &ch,
            "amq.topic",
            "mine.a",
            with_header(header, &["mine.c", "theirs.secret"]),
        )
        .await
        .unwrap_err();
        assert_eq!(
            got,
            (
                403,
                format!(
                    "ACCESS_REFUSED - access to topic 'theirs.secret' in exchange 'amq.topic' in vhost '{}' refused for user '{}'",
                    t.vhost, t.user
                )
            ),
            "{header}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_needs_an_existing_vhost_and_a_permission_on_it() {
    let broker = start_broker().await;
    let t = Tenant::new(&broker, ".*", ".*", ".*");
    let error = try_lapin_connect(&broker.url_with(&t.user, PASSWORD, "nowhere"))
        .await
        .unwrap_err();
    assert_eq!(
        protocol_error(&error),
        (530, "NOT_ALLOWED - vhost nowhere not found".to_string())
    );
    broker.must(&["clear_permissions", "-p", &t.vhost, &t.user]);
    let error = try_lapin_connect(&broker.url_with(&t.user, PASSWORD, &t.vhost))
        .await
        .unwrap_err();
    assert_eq!(
        protocol_error(&error),
        (
            530,
            format!(
                "NOT_ALLOWED - access to vhost '{}' refused for user '{}'",
                t.vhost, t.user
            )
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_and_passwordless_users_are_refused() {
    let broker = start_broker().await;
    let t = Tenant::new(&broker, ".*", ".*", ".*");
    let login_refused = (
        403,
        "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile."
            .to_string(),
    );
    let wrong = try_lapin_connect(&broker.url_with(&t.user, "wrong", &t.vhost))
        .await
        .unwrap_err();
    assert_eq!(protocol_error(&wrong), login_refused);
    broker.must(&["clear_password", &t.user]);
    for password in ["", PASSWORD] {
        let error = try_lapin_connect(&broker.url_with(&t.user, password, &t.vhost))
            .await
            .unwrap_err();
        assert_eq!(protocol_error(&error), login_refused);
    }
    broker.must(&["change_password", &t.user, "new-one"]);
    lapin_connect(&broker.url_with(&t.user, "new-one", &t.vhost)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_login_is_answered_after_the_delay() {
    if std::env::var("WHARF_TEST_EXTERNAL").is_ok() {
        return; // RabbitMQ has no such delay
    }
    let delay = std::time::Duration::from_millis(400);
    let broker = wharf_integration::start_broker_with(wharf_server::ServerConfig {
        failed_login_delay: delay,
        ..Default::default()
    })
    .await;
    let started = std::time::Instant::now();
    let error = try_lapin_connect(&broker.url_with("guest", "wrong", "/"))
        .await
        .unwrap_err();
    assert_eq!(protocol_error(&error).0, 403);
    assert!(started.elapsed() >= delay, "{:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permission_changes_apply_to_open_channels() {
    if std::env::var("WHARF_TEST_EXTERNAL").is_ok() {
        // RabbitMQ lets a channel keep a permission it used for about a second after it
        // was revoked (a per-channel cache); Wharf applies the change to the next
        // operation (docs/security.md).
        return;
    }
    let broker = start_broker().await;
    let t = Tenant::new(&broker, ".*", ".*", ".*");
    let (_c, ch) = t.channel().await;
    declare_exchange(&ch, "x", FieldTable::default())
        .await
        .unwrap();
    let closed = channel_error(&ch);
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for _ in 0..3 {
        ch.basic_publish(
            "x",
            "k",
            BasicPublishOptions::default(),
            b"m",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    broker.must(&["set_permissions", "-p", &t.vhost, &t.user, ".*", "^$", ".*"]);
    let _ = ch
        .basic_publish(
            "x",
            "k",
            BasicPublishOptions::default(),
            b"m",
            BasicProperties::default(),
        )
        .await;
    assert_eq!(
        closed_with(closed).await,
        t.refusal("write", "exchange 'x'")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_may_claim_only_its_publisher_as_user_id() {
    let broker = start_broker().await;
    let (_c, ch) = lapin_channel(&broker).await;
    let queue = exclusive_queue(&ch).await;
    let as_user = |user: &str| BasicProperties::default().with_user_id(user.into());
    publish_with(&ch, "", &queue, as_user("guest"))
        .await
        .unwrap();
    assert_eq!(
        publish_with(&ch, "", &queue, as_user("admin"))
            .await
            .unwrap_err(),
        (
            406,
            "PRECONDITION_FAILED - user_id property set to 'admin' but authenticated user was 'guest'"
                .to_string()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_vhost_or_a_user_closes_their_connections() {
    let broker = start_broker().await;
    let t = Tenant::new(&broker, ".*", ".*", ".*");
    let (conn, ch) = t.channel().await;
    declare_queue(&ch, "q").await.unwrap();
    let closed = connection_error(&conn);
    broker.must(&["delete_vhost", &t.vhost]);
    let expected = format!("CONNECTION_FORCED - vhost '{}' is down", t.vhost);
    // RabbitMQ 3.10.8 says "is deleted" instead now and then: which of its processes
    // notices first is a race there (one run in four).
    let racing = format!("CONNECTION_FORCED - vhost '{}' is deleted", t.vhost);
    assert_forced_close_with(&broker, closed, &expected, Some(&racing)).await;

    let t = Tenant::new(&broker, ".*", ".*", ".*");
    let conn = t.connect().await;
    let closed = connection_error(&conn);
    broker.must(&["delete_user", &t.user]);
    let expected = format!("CONNECTION_FORCED - user '{}' is deleted", t.user);
    assert_forced_close(&broker, closed, &expected).await;
}

/// The connection was closed with 320 and `text`. (RabbitMQ resets the socket right
/// after its connection.close, so a client may see only the reset: accepted from it.)
async fn assert_forced_close(
    broker: &TestBroker,
    closed: tokio::sync::oneshot::Receiver<lapin::Error>,
    text: &str,
) {
    assert_forced_close_with(broker, closed, text, None).await
}

/// `assert_forced_close`, where an external broker may also close with `external_text`.
async fn assert_forced_close_with(
    broker: &TestBroker,
    closed: tokio::sync::oneshot::Receiver<lapin::Error>,
    text: &str,
    external_text: Option<&str>,
) {
    match within(closed).await.unwrap() {
        lapin::Error::IOError(e)
            if broker.is_external() && e.kind() == std::io::ErrorKind::ConnectionReset => {}
        error => {
            let (code, got) = protocol_error(&error);
            let also = external_text.filter(|_| broker.is_external());
            if also != Some(got.as_str()) {
                assert_eq!((code, got.as_str()), (320, text));
            }
            assert_eq!(code, 320, "{got}");
        }
    }
}
