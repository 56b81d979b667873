//! Client helpers shared by the integration tests.
#![allow(dead_code, unused_imports)]

use std::future::Future;
use std::time::Duration;

use futures_lite::StreamExt;
use lapin::{Channel, Connection, ConnectionProperties};

pub use wharf_integration::{start_broker, unique, TestBroker};

/// How long a test waits for something the broker should do promptly.
pub const WAIT: Duration = Duration::from_secs(5);

pub async fn lapin_connect(url: &str) -> Connection {
    try_lapin_connect(url).await.expect("lapin connect")
}

pub async fn try_lapin_connect(url: &str) -> lapin::Result<Connection> {
    let properties = ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio);
    Connection::connect(url, properties).await
}

pub async fn lapin_channel(broker: &TestBroker) -> (Connection, Channel) {
    let connection = lapin_connect(&broker.url()).await;
    let channel = connection.create_channel().await.expect("create channel");
    (connection, channel)
}

/// A channel in confirm mode, on a connection of its own.
pub async fn confirming_channel(broker: &TestBroker) -> (Connection, Channel) {
    let (connection, ch) = lapin_channel(broker).await;
    ch.confirm_select(Default::default())
        .await
        .expect("confirm.select");
    (connection, ch)
}

/// The reply code and text of a channel or connection closed by the broker.
pub fn protocol_error(error: &lapin::Error) -> (u16, String) {
    match error {
        lapin::Error::ProtocolError(e) => (e.get_id(), e.get_message().to_string()),
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

/// Awaits `f`, failing the test instead of hanging when the broker never answers.
pub async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f)
        .await
        .expect("timed out waiting for the broker")
}

/// The next delivery of a lapin consumer.
pub async fn next_delivery(consumer: &mut lapin::Consumer) -> lapin::message::Delivery {
    within(consumer.next())
        .await
        .expect("consumer stream ended")
        .expect("delivery error")
}

/// Asserts that no delivery arrives for a short while.
pub async fn no_delivery(consumer: &mut lapin::Consumer) {
    let quiet = tokio::time::timeout(Duration::from_millis(300), consumer.next()).await;
    assert!(quiet.is_err(), "unexpected delivery: {quiet:?}");
}

/// Resolves with the error the broker closes `channel` with (set up before provoking it).
pub fn channel_error(channel: &Channel) -> tokio::sync::oneshot::Receiver<lapin::Error> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let tx = std::sync::Mutex::new(Some(tx));
    channel.on_error(move |error| {
        if let Some(tx) = tx.lock().unwrap().take() {
            let _ = tx.send(error);
        }
    });
    rx
}

/// Resolves with the error the broker closes `connection` with (set up before provoking
/// it).
pub fn connection_error(connection: &Connection) -> tokio::sync::oneshot::Receiver<lapin::Error> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let tx = std::sync::Mutex::new(Some(tx));
    connection.on_error(move |error| {
        if let Some(tx) = tx.lock().unwrap().take() {
            let _ = tx.send(error);
        }
    });
    rx
}

/// Waits for the close reason registered with [`channel_error`].
pub async fn closed_with(rx: tokio::sync::oneshot::Receiver<lapin::Error>) -> (u16, String) {
    let error = within(rx).await.expect("channel error handler dropped");
    protocol_error(&error)
}

/// A server-named exclusive queue, gone with the connection.
pub async fn exclusive_queue(ch: &Channel) -> String {
    let options = lapin::options::QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    ch.queue_declare("", options, lapin::types::FieldTable::default())
        .await
        .expect("declare an exclusive queue")
        .name()
        .as_str()
        .to_string()
}

/// A directory under the system temp dir (not created), removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        TempDir(std::env::temp_dir().join(unique(prefix)))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The ready-message count of a queue, by a passive declare.
pub async fn message_count(ch: &Channel, queue: &str) -> u32 {
    let passive = lapin::options::QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    ch.queue_declare(queue, passive, lapin::types::FieldTable::default())
        .await
        .unwrap()
        .message_count()
}

/// Publishes `body` to `queue` through the default exchange, with no properties.
pub async fn publish_to(ch: &Channel, queue: &str, body: &[u8]) {
    ch.basic_publish(
        "",
        queue,
        Default::default(),
        body,
        lapin::BasicProperties::default(),
    )
    .await
    .unwrap();
}

/// Takes every ready message of `queue` with basic.get (no_ack) and returns their bodies.
pub async fn take_all_bodies(ch: &Channel, queue: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(got) = ch
        .basic_get(queue, lapin::options::BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        out.push(got.delivery.data);
    }
    out
}

/// Polls the queue's ready-message count until it is `expected`; false if it never got
/// there within [`WAIT`]. For what the broker does on its own time (expiry).
pub async fn count_becomes(ch: &Channel, queue: &str, expected: u32) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if message_count(ch, queue).await == expected {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An exclusive, server-named queue with these arguments.
pub async fn exclusive_queue_with(ch: &Channel, arguments: lapin::types::FieldTable) -> String {
    let options = lapin::options::QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    ch.queue_declare("", options, arguments)
        .await
        .expect("declare an exclusive queue")
        .name()
        .as_str()
        .to_string()
}

/// A field table from (name, value) pairs.
pub fn table(entries: &[(&str, lapin::types::AMQPValue)]) -> lapin::types::FieldTable {
    let mut table = lapin::types::FieldTable::default();
    for (name, value) in entries {
        table.insert((*name).into(), value.clone());
    }
    table
}

/// A long-string field value.
pub fn text(s: &str) -> lapin::types::AMQPValue {
    lapin::types::AMQPValue::LongString(s.into())
}

/// A 64-bit integer field value.
pub fn int(n: i64) -> lapin::types::AMQPValue {
    lapin::types::AMQPValue::LongLongInt(n)
}

/// A vhost, and a user with the given permissions in it; guest may do anything there
/// (to set things up). Deleted at the end of the test.
pub struct Tenant<'a> {
    pub broker: &'a TestBroker,
    pub vhost: String,
    pub user: String,
}

/// The password of a [`Tenant`]'s user.
pub const PASSWORD: &str = "s3cret";

impl<'a> Tenant<'a> {
    pub fn new(broker: &'a TestBroker, configure: &str, write: &str, read: &str) -> Tenant<'a> {
        let vhost = unique("acl-vhost");
        let user = unique("acl-user");
        broker.must(&["add_vhost", &vhost]);
        broker.must(&["add_user", &user, PASSWORD]);
        broker.must(&[
            "set_permissions",
            "-p",
            &vhost,
            &user,
            configure,
            write,
            read,
        ]);
        broker.must(&["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"]);
        Tenant {
            broker,
            vhost,
            user,
        }
    }

    /// The amqp URL of the tenant's user on its vhost.
    pub fn url(&self) -> String {
        self.broker.url_with(&self.user, PASSWORD, &self.vhost)
    }

    pub async fn connect(&self) -> Connection {
        lapin_connect(&self.url()).await
    }

    pub async fn channel(&self) -> (Connection, Channel) {
        let connection = self.connect().await;
        let channel = connection.create_channel().await.unwrap();
        (connection, channel)
    }

    /// A channel of guest's in the tenant's vhost.
    pub async fn guest_channel(&self) -> (Connection, Channel) {
        let connection = lapin_connect(&self.broker.url_with("guest", "guest", &self.vhost)).await;
        let channel = connection.create_channel().await.unwrap();
        (connection, channel)
    }

    /// RabbitMQ's refusal, which does not say which access was missing: the tests name
    /// it anyway (`access`), for the reader.
    pub fn refusal(&self, _access: &str, what: &str) -> (u16, String) {
        (
            403,
            format!(
                "ACCESS_REFUSED - access to {what} in vhost '{}' refused for user '{}'",
                self.vhost, self.user
            ),
        )
    }
}

impl Drop for Tenant<'_> {
    fn drop(&mut self) {
        let _ = self.broker.admin(&["delete_vhost", &self.vhost]);
        let _ = self.broker.admin(&["delete_user", &self.user]);
    }
}
