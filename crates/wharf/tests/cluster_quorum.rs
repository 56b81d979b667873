//! Quorum queues on a cluster: a queue replicated on three nodes, published to and
//! consumed from through any node; a confirm means a majority holds the message; when
//! the leader's node dies, another replica leads within seconds and no confirmed message
//! is lost.

mod support;

use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use support::quorum::*;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_queue_takes_messages_through_any_node_and_gives_them_through_any_other() {
    let place = Place::new("quorum-basics");
    let specs = specs(&place, 3);
    let _nodes = start_all(&specs);
    declare_quorum(&specs[0], "qq").await;
    // Declared again on another node, as declared: the same queue.
    let declared = channel(&specs[1])
        .await
        .queue_declare("qq", durable(), quorum())
        .await
        .unwrap();
    assert_eq!(declared.message_count(), 0);
    // Each node holds a replica: its own log of the queue's group.
    for spec in &specs {
        let groups: Vec<_> = std::fs::read_dir(spec.data.join("quorum"))
            .unwrap_or_else(|e| panic!("{}: no quorum/ directory: {e}", spec.name))
            .collect();
        assert_eq!(groups.len(), 1, "{}", spec.name);
    }
    let publisher = confirming(&specs[1]).await;
    let sent = numbered(0, 300);
    assert_eq!(publish_all(&publisher, "qq", &sent).await, sent);
    let passive = channel(&specs[2])
        .await
        .queue_declare(
            "qq",
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(passive.message_count(), 300);
    // Every node's tools show it as its leader's node does: a quorum queue, led by the
    // first node, on all three.
    let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    for spec in &specs {
        let (code, body) = http("GET", spec, "/api/queues/%2f/qq", None);
        assert_eq!(code, 200, "{body}");
        let queue: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(queue["type"], "quorum", "{body}");
        assert_eq!(queue["leader"], names[0].as_str(), "{body}");
        assert_eq!(queue["node"], names[0].as_str(), "{body}");
        assert_eq!(queue["messages"], 300, "{body}");
        let mut members: Vec<String> = serde_json::from_value(queue["members"].clone()).unwrap();
        members.sort();
        assert_eq!(members, names);
    }
    let listed = stdout(&_nodes[2].ctl(&[
        "list_queues",
        "name",
        "type",
        "leader",
        "members",
        "messages",
    ]));
    let row = listed
        .lines()
        .find(|line| line.starts_with("qq"))
        .unwrap_or_else(|| panic!("no qq in:\n{listed}"));
    let cells: Vec<&str> = row.split('\t').collect();
    assert_eq!(cells[1..3], ["quorum", names[0].as_str()], "{row}");
    assert_eq!(cells[3].split(',').count(), 3, "{row}");
    assert_eq!(cells[4], "300", "{row}");
    // A consumer on the third node gets them all, in order.
    let consumer_channel = channel(&specs[2]).await;
    let mut consumer = consumer_channel
        .basic_consume(
            "qq",
            "c",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 300 {
        let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("a delivery within 10 s")
            .unwrap()
            .unwrap();
        assert!(!delivery.redelivered);
        got.push(String::from_utf8(delivery.data.clone()).unwrap());
        delivery.ack(BasicAckOptions::default()).await.unwrap();
    }
    assert_eq!(got, sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_leaders_node_is_killed_another_leads_and_no_confirmed_message_is_lost() {
    let place = Place::new("quorum-failover");
    let specs = specs(&place, 3);
    let mut nodes = start_all(&specs);
    // Declared on the first node: it leads (the client-local locator).
    declare_quorum(&specs[0], "qq").await;
    let publisher = confirming(&specs[1]).await;
    let first = numbered(0, 200);
    assert_eq!(publish_all(&publisher, "qq", &first).await, first);
    let killed = Instant::now();
    nodes.remove(0).kill();
    // Published through a node that survives: nacked while no node leads, republished
    // until confirmed.
    let second = numbered(200, 100);
    let mut waiting = second.clone();
    let mut first_confirm = None;
    while !waiting.is_empty() && killed.elapsed() < Duration::from_secs(30) {
        let acked = publish_all(&publisher, "qq", &waiting).await;
        if !acked.is_empty() && first_confirm.is_none() {
            first_confirm = Some(killed.elapsed());
        }
        waiting.retain(|body| !acked.contains(body));
        if !waiting.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert!(waiting.is_empty(), "never confirmed: {waiting:?}");
    let failover = first_confirm.unwrap();
    println!("first confirm {failover:?} after the leader's node was killed");
    assert!(
        failover < Duration::from_secs(15),
        "first confirm after {failover:?}"
    );
    let got = get_until(&specs[2], "qq", 300, Duration::from_secs(20)).await;
    let mut expected = first.clone();
    expected.extend(second);
    let mut sorted = got.clone();
    sorted.sort_by_key(|b| b[1..].parse::<u32>().unwrap());
    sorted.dedup();
    assert_eq!(sorted, expected, "got {} messages", got.len());
    // What was confirmed before the kill comes first, in order.
    assert_eq!(&got[..200], &first[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_keeps_consuming_across_a_leader_change_and_gets_what_it_had_not_acked_again() {
    let place = Place::new("quorum-consumer-follows");
    let specs = specs(&place, 3);
    let mut nodes = start_all(&specs);
    declare_quorum(&specs[0], "qq").await;
    let publisher = confirming(&specs[1]).await;
    let sent = numbered(0, 100);
    assert_eq!(publish_all(&publisher, "qq", &sent).await, sent);
    // A consumer on the third node takes ten and acknowledges five.
    let consumer_channel = channel(&specs[2]).await;
    consumer_channel
        .basic_qos(10, lapin::options::BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = consumer_channel
        .basic_consume(
            "qq",
            "follower",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut unacked = Vec::new();
    for i in 0..10 {
        let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("a delivery within 10 s")
            .unwrap()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&delivery.data), format!("m{i}"));
        if i < 5 {
            delivery.ack(BasicAckOptions::default()).await.unwrap();
        } else {
            unacked.push(delivery);
        }
    }
    // Acknowledgements travel asynchronously: let the first five settle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    nodes.remove(0).kill();
    // The same consumer goes on (no cancel): the new leader delivers what was not
    // acknowledged again (redelivered), then the rest.
    let mut seen = std::collections::BTreeSet::new();
    let mut redelivered = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < 95 && Instant::now() < deadline {
        let delivery = match tokio::time::timeout(Duration::from_secs(20), consumer.next()).await {
            Ok(Some(Ok(delivery))) => delivery,
            other => panic!("the consumer stopped: {other:?}"),
        };
        let body = String::from_utf8(delivery.data.clone()).unwrap();
        let number: usize = body[1..].parse().unwrap();
        assert!(
            number >= 5,
            "m{number} was acknowledged before the failover"
        );
        redelivered += usize::from(delivery.redelivered);
        seen.insert(number);
        delivery.ack(BasicAckOptions::default()).await.unwrap();
    }
    assert_eq!(
        seen,
        (5..100).collect(),
        "every message not acknowledged, once at least"
    );
    assert!(redelivered >= 5, "{redelivered} redelivered");
    drop(unacked);
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    for item in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        found.push(item.path().display().to_string());
        if item.path().is_dir() {
            found.extend(walk(&item.path()));
        }
    }
    found
}

/// The group directories a node keeps.
fn groups_on(spec: &NodeSpec) -> usize {
    std::fs::read_dir(spec.data.join("quorum"))
        .map(|items| items.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_quorum_queue_is_gone_from_every_replica_and_its_name_starts_afresh() {
    let place = Place::new("quorum-delete");
    let specs = specs(&place, 3);
    let nodes = start_all(&specs);
    declare_quorum(&specs[1], "doomed").await;
    let publisher = confirming(&specs[0]).await;
    assert_eq!(
        publish_all(&publisher, "doomed", &numbered(0, 10))
            .await
            .len(),
        10
    );
    // Deleted through a node that does not lead it, with its conditions checked there.
    let ch = channel(&specs[2]).await;
    let refused = ch
        .queue_delete(
            "doomed",
            lapin::options::QueueDeleteOptions {
                if_empty: true,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        refusal(refused),
        "406 - PRECONDITION_FAILED - queue 'doomed' in vhost '/' not empty"
    );
    let deleted = channel(&specs[2])
        .await
        .queue_delete("doomed", Default::default())
        .await
        .unwrap();
    assert_eq!(deleted, 10);
    nodes[0].wait_for_line("replica goes", Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(10);
    while specs.iter().any(|s| groups_on(s) > 0) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for spec in &specs {
        let left: Vec<String> = walk(&spec.data.join("quorum"));
        assert_eq!(
            groups_on(spec),
            0,
            "{} still holds a replica: {left:?}",
            spec.name
        );
    }
    // Declared again: a new, empty queue.
    declare_quorum(&specs[0], "doomed").await;
    let again = channel(&specs[1])
        .await
        .queue_declare("doomed", durable(), quorum())
        .await
        .unwrap();
    assert_eq!(again.message_count(), 0);
    assert_eq!(
        publish_all(&publisher, "doomed", &numbered(0, 3))
            .await
            .len(),
        3
    );
    assert_eq!(
        get_until(&specs[2], "doomed", 3, Duration::from_secs(10)).await,
        numbered(0, 3)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_restarted_in_turn_keeps_every_confirmed_message() {
    let place = Place::new("quorum-rolling");
    let specs = specs(&place, 3);
    let seeds = seeds(&specs);
    let mut nodes = start_all(&specs);
    declare_quorum(&specs[0], "qq").await;
    let mut confirmed = Vec::new();
    let first = numbered(0, 100);
    assert_eq!(
        publish_all(&confirming(&specs[1]).await, "qq", &first).await,
        first
    );
    confirmed.extend(first);
    for i in 0..nodes.len() {
        let spec = nodes.remove(i).stop();
        nodes.insert(i, Node::spawn(&spec, &seeds).ready());
        // Published through the next node, republished on nack until confirmed.
        let through = &specs[(i + 1) % specs.len()];
        let mut waiting = numbered(100 * (i + 1), 100);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !waiting.is_empty() && Instant::now() < deadline {
            let acked = publish_all(&confirming(through).await, "qq", &waiting).await;
            waiting.retain(|body| !acked.contains(body));
            confirmed.extend(acked);
            if !waiting.is_empty() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        assert!(
            waiting.is_empty(),
            "after restarting {}: {waiting:?}",
            spec.name
        );
    }
    let got = get_until(&specs[2], "qq", confirmed.len(), Duration::from_secs(30)).await;
    for body in &confirmed {
        assert!(got.contains(body), "{body} was confirmed and is lost");
    }
    // The replicas agree: each holds the group's files and took part.
    for spec in &specs {
        assert_eq!(groups_on(spec), 1, "{}", spec.name);
    }
}
