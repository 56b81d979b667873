//! Many clients at once: thousands of connections and channels, competing consumers on
//! one queue, every message delivered exactly once and in order per queue.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::*;
use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::BasicProperties;
use tokio::sync::Mutex;
use wharf_integration::raw::RawClient;

const CONNECTIONS: usize = 100;
const CHANNELS_PER_CONNECTION: usize = 5;
const MESSAGES_PER_CHANNEL: u32 = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_connections_and_channels_publish_to_competing_consumers() {
    let broker = start_broker().await;
    let (_admin, admin) = lapin_channel(&broker).await;
    let shared = unique("shared");
    admin
        .queue_declare(&shared, Default::default(), FieldTable::default())
        .await
        .unwrap();

    // Ten consumers on separate connections compete for the shared queue.
    let received = Arc::new(Mutex::new(Vec::<(usize, u32)>::new()));
    let total = (CONNECTIONS * CHANNELS_PER_CONNECTION) as u32 * MESSAGES_PER_CHANNEL;
    let mut consumers = Vec::new();
    for i in 0..10 {
        let connection = lapin_connect(&broker.url()).await;
        let ch = connection.create_channel().await.unwrap();
        ch.basic_qos(50, Default::default()).await.unwrap();
        let mut consumer = ch
            .basic_consume(
                &shared,
                &format!("c{i}"),
                Default::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let received = received.clone();
        consumers.push(tokio::spawn(async move {
            let _keep = connection;
            while let Some(Ok(delivery)) = consumer.next().await {
                let body = &delivery.data;
                let publisher = u32::from_be_bytes(body[0..4].try_into().unwrap()) as usize;
                let seq = u32::from_be_bytes(body[4..8].try_into().unwrap());
                delivery.ack(Default::default()).await.unwrap();
                let mut all = received.lock().await;
                all.push((publisher, seq));
                if all.len() as u32 == total {
                    break;
                }
            }
        }));
    }

    // Publishers: many connections, several channels each, each with confirms.
    let mut publishers = Vec::new();
    for c in 0..CONNECTIONS {
        let url = broker.url();
        let shared = shared.clone();
        publishers.push(tokio::spawn(async move {
            let connection = lapin_connect(&url).await;
            let mut tasks = Vec::new();
            for k in 0..CHANNELS_PER_CONNECTION {
                let ch = connection.create_channel().await.unwrap();
                let shared = shared.clone();
                tasks.push(tokio::spawn(async move {
                    ch.confirm_select(Default::default()).await.unwrap();
                    let publisher = (c * CHANNELS_PER_CONNECTION + k) as u32;
                    for seq in 0..MESSAGES_PER_CHANNEL {
                        let mut body = publisher.to_be_bytes().to_vec();
                        body.extend(seq.to_be_bytes());
                        ch.basic_publish(
                            "",
                            &shared,
                            Default::default(),
                            &body,
                            BasicProperties::default(),
                        )
                        .await
                        .unwrap();
                    }
                    ch.wait_for_confirms().await.unwrap();
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }
            // lapin closes each channel as its last handle drops, so the connection may
            // already be closing them: only the close itself matters here.
            let _ = connection.close(200, "done").await;
        }));
    }
    for p in publishers {
        tokio::time::timeout(std::time::Duration::from_secs(60), p)
            .await
            .unwrap()
            .unwrap();
    }
    let deadline = std::time::Duration::from_secs(60);
    let wait_all = async {
        loop {
            if received.lock().await.len() as u32 >= total {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(deadline, wait_all)
        .await
        .expect("all messages consumed");

    let all = received.lock().await.clone();
    assert_eq!(all.len() as u32, total);
    let distinct: HashSet<(usize, u32)> = all.iter().copied().collect();
    assert_eq!(distinct.len(), all.len(), "no message delivered twice");
    // Per publisher, a single consumer saw its messages in order; across consumers the
    // queue handed them out in order, so each publisher's sequence is complete.
    for publisher in 0..CONNECTIONS * CHANNELS_PER_CONNECTION {
        let mut seqs: Vec<u32> = all
            .iter()
            .filter(|(p, _)| *p == publisher)
            .map(|(_, s)| *s)
            .collect();
        seqs.sort_unstable();
        assert_eq!(
            seqs,
            (0..MESSAGES_PER_CHANNEL).collect::<Vec<_>>(),
            "publisher {publisher}"
        );
    }
    for c in consumers {
        c.abort();
    }
    admin
        .queue_delete(&shared, Default::default())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_idle_connections_and_the_broker_still_serves() {
    let broker = start_broker().await;
    let connections = if broker.is_external() { 500 } else { 2000 };
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        clients.push(RawClient::open_with_channel(broker.addr).await);
    }
    let (_c, ch) = lapin_channel(&broker).await;
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
    ch.basic_publish(
        "",
        q.name().as_str(),
        Default::default(),
        b"still here",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    let got = within(ch.basic_get(q.name().as_str(), BasicGetOptions { no_ack: true }))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.delivery.data, b"still here");
    drop(clients);
}
