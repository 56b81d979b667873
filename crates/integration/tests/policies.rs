//! Policies, as RabbitMQ's: settings given to the queues and exchanges whose names match
//! a pattern, the highest-priority matching policy applying, numeric limits resolved to
//! the smaller of policy and argument, other settings to the argument; a changed or
//! cleared policy applies at once; policies survive a restart. Set here through the
//! broker's own API (the same calls `wharf ctl` makes).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel};
use wharf_core::policy::Policy;
use wharf_core::VHost;

fn external() -> bool {
    std::env::var("WHARF_TEST_EXTERNAL").is_ok()
}

fn vhost(broker: &TestBroker) -> Arc<VHost> {
    broker.broker.as_ref().unwrap().vhost("/").unwrap()
}

fn policy(name: &str, pattern: &str, apply_to: &str, definition: &str, priority: i64) -> Policy {
    Policy::new(name, pattern, apply_to, definition, priority).unwrap()
}

async fn declare(ch: &Channel, name: &str, arguments: FieldTable) {
    let options = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    ch.queue_declare(name, options, arguments).await.unwrap();
}

async fn publish(ch: &Channel, queue: &str, body: &[u8]) {
    let confirm = ch
        .basic_publish(
            "",
            queue,
            Default::default(),
            body,
            BasicProperties::default(),
        )
        .await
        .unwrap();
    within(confirm).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_limits_the_queues_it_matches_and_only_those() {
    if external() {
        return;
    }
    let broker = start_broker().await;
    let (_c, ch) = confirming_channel(&broker).await;
    vhost(&broker)
        .set_policy(policy(
            "cap",
            "^capped\\.",
            "queues",
            r#"{"max-length":2}"#,
            0,
        ))
        .unwrap();
    let capped = unique("capped.");
    let free = unique("free.");
    declare(&ch, &capped, FieldTable::default()).await;
    declare(&ch, &free, FieldTable::default()).await;
    for i in 0..4u8 {
        publish(&ch, &capped, &[i]).await;
        publish(&ch, &free, &[i]).await;
    }
    assert_eq!(message_count(&ch, &capped).await, 2);
    assert_eq!(message_count(&ch, &free).await, 4);
    assert_eq!(
        take_all_bodies(&ch, &capped).await,
        vec![vec![2], vec![3]],
        "drop-head, as an argument would"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setting_changing_and_clearing_a_policy_applies_at_once() {
    if external() {
        return;
    }
    let broker = start_broker().await;
    let (_c, ch) = confirming_channel(&broker).await;
    let queue = unique("live.");
    declare(&ch, &queue, FieldTable::default()).await;
    for i in 0..5u8 {
        publish(&ch, &queue, &[i]).await;
    }
    let vhost = vhost(&broker);
    vhost
        .set_policy(policy("cap", "^live\\.", "all", r#"{"max-length":3}"#, 0))
        .unwrap();
    assert_eq!(
        message_count(&ch, &queue).await,
        3,
        "a new limit drops at once"
    );
    assert_eq!(
        broker
            .broker
            .as_ref()
            .unwrap()
            .vhost("/")
            .unwrap()
            .queue(&queue)
            .unwrap()
            .policy()
            .as_deref(),
        Some("cap")
    );
    // Replaced by a higher-priority policy, then cleared.
    vhost
        .set_policy(policy(
            "tighter",
            "^live\\.",
            "queues",
            r#"{"max-length":1}"#,
            5,
        ))
        .unwrap();
    assert_eq!(message_count(&ch, &queue).await, 1);
    vhost.clear_policy("tighter").unwrap();
    vhost.clear_policy("cap").unwrap();
    for i in 0..3u8 {
        publish(&ch, &queue, &[i]).await;
    }
    assert_eq!(message_count(&ch, &queue).await, 4, "no limit any more");
    assert!(!vhost.clear_policy("cap").unwrap(), "already gone");
}

/// Numeric limits: the smaller of argument and policy; others: the argument.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arguments_and_policies_resolve_as_in_rabbitmq() {
    if external() {
        return;
    }
    let broker = start_broker().await;
    let (_c, ch) = confirming_channel(&broker).await;
    vhost(&broker)
        .set_policy(policy(
            "p",
            "^res\\.",
            "queues",
            r#"{"max-length":5,"overflow":"reject-publish","message-ttl":1000}"#,
            0,
        ))
        .unwrap();
    // The argument's limit is smaller: 2. Its overflow wins over the policy's.
    let queue = unique("res.");
    declare(
        &ch,
        &queue,
        table(&[("x-max-length", int(2)), ("x-overflow", text("drop-head"))]),
    )
    .await;
    for i in 0..4u8 {
        publish(&ch, &queue, &[i]).await;
    }
    assert_eq!(
        take_all_bodies(&ch, &queue).await,
        vec![vec![2], vec![3]],
        "limit 2 with drop-head (reject-publish would have kept the first two)"
    );
    // The policy's TTL applies (the queue has none of its own).
    publish(&ch, &queue, b"expiring").await;
    assert!(
        count_becomes(&ch, &queue, 0).await,
        "expired by the policy's TTL"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_lettering_and_alternate_exchanges_by_policy() {
    if external() {
        return;
    }
    let broker = start_broker().await;
    let (_c, ch) = confirming_channel(&broker).await;
    let dead = unique("dead");
    declare(&ch, &dead, FieldTable::default()).await;
    let vhost = vhost(&broker);
    vhost
        .set_policy(policy(
            "dlx",
            "^work\\.",
            "queues",
            &format!(r#"{{"dead-letter-exchange":"","dead-letter-routing-key":"{dead}"}}"#),
            0,
        ))
        .unwrap();
    let work = unique("work.");
    declare(&ch, &work, FieldTable::default()).await;
    publish(&ch, &work, b"bad").await;
    let got = ch
        .basic_get(&work, BasicGetOptions { no_ack: false })
        .await
        .unwrap()
        .unwrap();
    got.delivery
        .reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    assert!(
        count_becomes(&ch, &dead, 1).await,
        "dead-lettered by the policy"
    );

    // An exchange's alternate, by policy.
    let exchange = unique("ae-src");
    let lost = unique("lost");
    declare(&ch, &lost, FieldTable::default()).await;
    ch.queue_bind(
        &lost,
        "amq.fanout",
        "",
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    vhost
        .set_policy(policy(
            "ae",
            "^ae-src",
            "exchanges",
            r#"{"alternate-exchange":"amq.fanout"}"#,
            0,
        ))
        .unwrap();
    ch.exchange_declare(
        &exchange,
        lapin::ExchangeKind::Direct,
        ExchangeDeclareOptions {
            auto_delete: false,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let confirm = ch
        .basic_publish(
            &exchange,
            "nowhere",
            Default::default(),
            b"x",
            BasicProperties::default(),
        )
        .await
        .unwrap();
    within(confirm).await.unwrap();
    assert_eq!(
        message_count(&ch, &lost).await,
        1,
        "through the policy's alternate"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_survive_a_restart() {
    if external() {
        return;
    }
    let dir = TempDir::new("policy-restart");
    {
        let broker = wharf_integration::start_broker_in(&dir.0).await;
        vhost(&broker)
            .set_policy(policy(
                "ttl",
                "^t\\.",
                "queues",
                r#"{"message-ttl":100}"#,
                3,
            ))
            .unwrap();
        broker.stop().await;
    }
    let broker = wharf_integration::start_broker_in(&dir.0).await;
    let policies = vhost(&broker).policies();
    assert_eq!(policies.len(), 1);
    assert_eq!(
        (
            policies[0].name.as_ref(),
            policies[0].pattern.as_str(),
            policies[0].priority
        ),
        ("ttl", "^t\\.", 3)
    );
    let (_c, ch) = confirming_channel(&broker).await;
    let queue = unique("t.");
    declare(&ch, &queue, FieldTable::default()).await;
    publish(&ch, &queue, b"m").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(count_becomes(&ch, &queue, 0).await);
}

/// An `expires` set by a policy on a queue that has been there a while counts from when
/// the policy applies, not from the queue's creation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_expiry_counts_from_when_it_applies() {
    if external() {
        return;
    }
    let broker = start_broker().await;
    let (_c, ch) = confirming_channel(&broker).await;
    let queue = unique("idle.");
    ch.queue_declare(
        &queue,
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    vhost(&broker)
        .set_policy(policy(
            "exp",
            "^idle\\.",
            "queues",
            r#"{"expires":2000}"#,
            0,
        ))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        vhost(&broker).queue(&queue).is_ok(),
        "still there a while after the policy applies"
    );
    let deadline = std::time::Instant::now() + WAIT;
    while vhost(&broker).queue(&queue).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "expired by the policy"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
