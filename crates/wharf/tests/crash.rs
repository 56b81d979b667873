//! Crash test: the broker runs as a child process; publishers send persistent messages
//! with confirms through a fanout to two durable queues while a consumer acks from one;
//! the broker is killed with SIGKILL at random moments, several times, and restarted.
//! At the end every confirmed message is in each queue exactly once, and no message whose
//! ack the broker had processed comes back.
//!
//! WHARF_CRASH_ROUNDS sets the number of kills (default 4).

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use rand::Rng;

const PUBLISHERS: u32 = 3;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The broker child process, killed when dropped (also when the test fails).
struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(data_dir: &Path, port: u16) -> Broker {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .arg("--amqp-listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(data_dir)
        .env("WHARF_HTTP_LISTEN", "127.0.0.1:0")
        .env("WHARF_PROMETHEUS_LISTEN", "127.0.0.1:0")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        if line.unwrap().contains("wharf ready") {
            break;
        }
    }
    // Keep draining the log so the broker never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Broker(child)
}

async fn try_connect(port: u16) -> lapin::Result<Connection> {
    let properties = ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio);
    Connection::connect(
        &format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
        properties,
    )
    .await
}

async fn connect(port: u16) -> Connection {
    try_connect(port).await.unwrap()
}

/// A channel for a client that may find the broker already killed.
async fn try_channel(port: u16) -> Option<(Connection, Channel)> {
    let connection = try_connect(port).await.ok()?;
    let channel = connection.create_channel().await.ok()?;
    Some((connection, channel))
}

async fn declare(ch: &Channel) {
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.exchange_declare(
        "crash.fan",
        ExchangeKind::Fanout,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    for q in ["crash.a", "crash.b"] {
        ch.queue_declare(q, durable, FieldTable::default())
            .await
            .unwrap();
        ch.queue_bind(
            q,
            "crash.fan",
            "",
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
}

/// Publishes until the connection dies; records each message id whose confirm arrived.
async fn publish(port: u16, publisher: u32, round: u32, confirmed: Arc<Mutex<HashSet<String>>>) {
    let Some((_connection, ch)) = try_channel(port).await else {
        return;
    };
    if ch.confirm_select(Default::default()).await.is_err() {
        return;
    }
    let persistent = BasicProperties::default().with_delivery_mode(2);
    for seq in 0.. {
        let id = format!("{round}-{publisher}-{seq}");
        let Ok(confirm) = ch
            .basic_publish(
                "crash.fan",
                "",
                Default::default(),
                id.as_bytes(),
                persistent.clone(),
            )
            .await
        else {
            return;
        };
        match confirm.await {
            Ok(c) if c.is_ack() => {
                confirmed.lock().unwrap().insert(id);
            }
            _ => return,
        }
    }
}

/// Takes messages from crash.a and acks them. `ack_sent` gets every id whose ack went out
/// (the broker may or may not have handled it before it died); `acked` gets it once a later
/// round trip on the same channel completed (the broker handles a channel's frames in
/// order, so it handled the ack).
async fn consume(
    port: u16,
    ack_sent: Arc<Mutex<HashSet<String>>>,
    acked: Arc<Mutex<HashSet<String>>>,
) {
    let Some((_connection, ch)) = try_channel(port).await else {
        return;
    };
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    loop {
        let got = match ch.basic_get("crash.a", Default::default()).await {
            Ok(Some(got)) => got,
            Ok(None) => {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            Err(_) => return,
        };
        let id = String::from_utf8(got.delivery.data.clone()).unwrap();
        ack_sent.lock().unwrap().insert(id.clone());
        if got.delivery.ack(Default::default()).await.is_err() {
            return;
        }
        if ch
            .queue_declare("crash.a", passive, FieldTable::default())
            .await
            .is_err()
        {
            return;
        }
        acked.lock().unwrap().insert(id);
    }
}

async fn drain(ch: &Channel, queue: &str) -> HashMap<String, u32> {
    let mut seen = HashMap::new();
    while let Some(got) = ch
        .basic_get(queue, BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        *seen
            .entry(String::from_utf8(got.delivery.data.clone()).unwrap())
            .or_insert(0) += 1;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_messages_survive_kill_9_exactly_once() {
    let rounds: u32 = std::env::var("WHARF_CRASH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(4);
    let data_dir = std::env::temp_dir().join(format!("wharf-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let confirmed = Arc::new(Mutex::new(HashSet::new()));
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let ack_sent = Arc::new(Mutex::new(HashSet::new()));
    for round in 0..rounds {
        let port = free_port();
        let child = start(&data_dir, port);
        {
            let connection = connect(port).await;
            declare(&connection.create_channel().await.unwrap()).await;
        }
        let mut tasks = Vec::new();
        for publisher in 0..PUBLISHERS {
            tasks.push(tokio::spawn(publish(
                port,
                publisher,
                round,
                confirmed.clone(),
            )));
        }
        tasks.push(tokio::spawn(consume(port, ack_sent.clone(), acked.clone())));
        let pause = rand::thread_rng().gen_range(200..800);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        drop(child); // SIGKILL
        for mut task in tasks {
            // The broker is dead; a client library that has not noticed yet is stopped here.
            match tokio::time::timeout(Duration::from_secs(10), &mut task).await {
                Ok(result) => result.expect("a client task panicked"),
                Err(_) => task.abort(),
            }
        }
    }

    let port = free_port();
    let child = start(&data_dir, port);
    let connection = connect(port).await;
    let ch = connection.create_channel().await.unwrap();
    let in_a = drain(&ch, "crash.a").await;
    let in_b = drain(&ch, "crash.b").await;
    let confirmed = confirmed.lock().unwrap().clone();
    let acked = acked.lock().unwrap().clone();
    let ack_sent = ack_sent.lock().unwrap().clone();
    assert!(
        confirmed.len() > 100,
        "the test confirmed only {} messages",
        confirmed.len()
    );
    assert!(!acked.is_empty(), "the consumer acked nothing");
    for (queue, seen) in [("crash.a", &in_a), ("crash.b", &in_b)] {
        let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "{queue} holds duplicates: {twice:?}");
    }
    let lost_b: Vec<_> = confirmed
        .iter()
        .filter(|id| !in_b.contains_key(*id))
        .collect();
    assert!(
        lost_b.is_empty(),
        "confirmed but missing from crash.b: {lost_b:?}"
    );
    let lost_a: Vec<_> = confirmed
        .iter()
        .filter(|id| !ack_sent.contains(*id) && !in_a.contains_key(*id))
        .collect();
    assert!(
        lost_a.is_empty(),
        "confirmed, never acked, missing from crash.a: {lost_a:?}"
    );
    let resurrected: Vec<_> = acked.iter().filter(|id| in_a.contains_key(*id)).collect();
    assert!(
        resurrected.is_empty(),
        "acked but back in crash.a: {resurrected:?}"
    );
    eprintln!(
        "crash test: {rounds} kills, {} confirmed, {} acked, {} left in crash.a, {} in crash.b",
        confirmed.len(),
        acked.len(),
        in_a.len(),
        in_b.len()
    );
    drop(child);
    std::fs::remove_dir_all(&data_dir).unwrap();
}
