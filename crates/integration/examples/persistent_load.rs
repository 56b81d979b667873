//! A small load test for the storage path (issue 3), until `wharf perf` exists: one
//! producer publishes persistent messages with confirms (a window of outstanding
//! confirms) to a durable queue while one consumer takes them with manual acks.
//! Prints msg/s both ways and end-to-end latency percentiles. Works against any AMQP
//! 0-9-1 broker, so Wharf and RabbitMQ can be measured the same way.
//!
//! cargo run --release -p wharf-integration --example persistent_load -- \
//!     amqp://guest:guest@127.0.0.1:5672/%2f [messages] [bytes] [outstanding] [--fill-only]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

async fn connect(url: &str) -> Connection {
    let properties = ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio);
    Connection::connect(url, properties).await.expect("connect")
}

fn percentile(sorted: &[u64], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    Duration::from_nanos(sorted[at])
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let messages: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let size: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(1024);
    let outstanding: usize = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let fill_only = args.iter().any(|a| a == "--fill-only");
    let queue = "persistent-load";

    let setup = connect(&url).await;
    let ch = setup.create_channel().await.unwrap();
    ch.queue_declare(
        queue,
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    if !fill_only {
        ch.queue_purge(queue, Default::default()).await.unwrap();
    }

    let consumer = if fill_only {
        None
    } else {
        let url = url.clone();
        Some(tokio::spawn(async move {
            let connection = connect(&url).await;
            let ch = connection.create_channel().await.unwrap();
            ch.basic_qos(500, Default::default()).await.unwrap();
            let mut consumer = ch
                .basic_consume(queue, "load", Default::default(), FieldTable::default())
                .await
                .unwrap();
            let mut latencies = Vec::with_capacity(messages as usize);
            while (latencies.len() as u64) < messages {
                let delivery = consumer.next().await.unwrap().unwrap();
                let sent = u64::from_be_bytes(delivery.data[..8].try_into().unwrap());
                latencies.push(now_nanos().saturating_sub(sent));
                if latencies.len() % 50 == 0 || latencies.len() as u64 == messages {
                    delivery
                        .ack(BasicAckOptions { multiple: true })
                        .await
                        .unwrap();
                }
            }
            latencies
        }))
    };

    let connection = connect(&url).await;
    let publisher = connection.create_channel().await.unwrap();
    publisher.confirm_select(Default::default()).await.unwrap();
    let properties = BasicProperties::default().with_delivery_mode(2);
    let mut body = vec![0u8; size.max(8)];
    let started = Instant::now();
    let mut pending = std::collections::VecDeque::with_capacity(outstanding);
    for _ in 0..messages {
        body[..8].copy_from_slice(&now_nanos().to_be_bytes());
        let confirm = publisher
            .basic_publish("", queue, Default::default(), &body, properties.clone())
            .await
            .unwrap();
        pending.push_back(confirm);
        if pending.len() >= outstanding {
            assert!(pending.pop_front().unwrap().await.unwrap().is_ack());
        }
    }
    for confirm in pending {
        assert!(confirm.await.unwrap().is_ack());
    }
    let published = started.elapsed();
    println!(
        "published {messages} x {size} B persistent with confirms ({outstanding} outstanding): {:.0} msg/s",
        messages as f64 / published.as_secs_f64()
    );
    if let Some(consumer) = consumer {
        let mut latencies = consumer.await.unwrap();
        let consumed = started.elapsed();
        latencies.sort_unstable();
        println!(
            "consumed {messages} with manual acks: {:.0} msg/s end to end; latency p50 {:?} p99 {:?}",
            messages as f64 / consumed.as_secs_f64(),
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.99)
        );
    }
}
