//! `wharf perf` as a user runs it, against a real broker: it measures both ways, counts
//! exactly when told how many to send, cleans up after itself, and fails clearly when it
//! cannot connect or log in.

use std::process::{Command, Output};

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use wharf_integration::{start_broker, TestBroker};

async fn perf(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_wharf"))
            .arg("perf")
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn args(broker: &TestBroker, rest: &str) -> Vec<String> {
    let mut args = vec!["--uri".to_string(), broker.url()];
    args.extend(rest.split_whitespace().map(String::from));
    args
}

fn summary(output: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "perf failed: {stdout}\n{stderr}");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn count(summary: &serde_json::Value, field: &str) -> u64 {
    summary[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {field} in {summary}"))
}

/// The message count of a queue, or None if it does not exist.
async fn queue_depth(broker: &TestBroker, queue: &str) -> Option<u32> {
    let conn = Connection::connect(&broker.url(), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let depth = ch
        .queue_declare(queue, passive, FieldTable::default())
        .await
        .ok()
        .map(|q| q.message_count());
    let _ = conn.close(200, "done").await;
    depth
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn measures_both_ways_with_confirms_and_acks_then_cleans_up() {
    let broker = start_broker().await;
    let output = perf(args(
        &broker,
        "-z 1.5 -x 1 -y 1 --confirm 100 -q 50 --multi-ack 10 -s 64 --queue-prefix perf-e2e --json",
    ))
    .await;
    let summary = summary(&output);
    let published = count(&summary, "published");
    assert!(published > 0, "{summary}");
    let confirmed = count(&summary, "confirmed");
    assert!(confirmed > 0 && confirmed <= published, "{summary}");
    let consumed = count(&summary, "consumed");
    assert!(consumed > 0 && consumed <= published, "{summary}");
    assert!(
        summary["latency"]["samples"].as_u64().unwrap() > 0,
        "{summary}"
    );
    assert!(
        summary["confirm_latency"]["samples"].as_u64().unwrap() > 0,
        "{summary}"
    );
    assert_eq!(summary["errors"], serde_json::json!([]), "{summary}");
    let lines = String::from_utf8_lossy(&output.stderr);
    assert!(
        lines.contains("sent") && lines.contains("msg/s"),
        "per-second lines: {lines}"
    );
    assert_eq!(
        queue_depth(&broker, "perf-e2e-1").await,
        None,
        "the queue was deleted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counted_run_sends_exactly_that_many_and_keep_leaves_them() {
    let broker = start_broker().await;
    let summary = summary(
        &perf(args(
            &broker,
            "-z 0 -x 2 -y 0 --pmessages 700 --persistent --confirm 50 --keep --queues 2 --queue-prefix perf-fill --json",
        ))
        .await,
    );
    assert_eq!(count(&summary, "published"), 1400, "{summary}");
    assert_eq!(count(&summary, "confirmed"), 1400, "{summary}");
    assert_eq!(queue_depth(&broker, "perf-fill-1").await, Some(700));
    assert_eq!(queue_depth(&broker, "perf-fill-2").await, Some(700));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fans_out_through_an_exchange_to_every_queue() {
    let broker = start_broker().await;
    let summary = summary(
        &perf(args(
            &broker,
            "-z 0 -x 1 -y 3 --queues 3 -e perf.fan -t fanout --pmessages 300 -a --queue-prefix perf-fan --json",
        ))
        .await,
    );
    assert_eq!(count(&summary, "published"), 300, "{summary}");
    assert_eq!(
        count(&summary, "consumed"),
        900,
        "each of 3 queues gets all: {summary}"
    );
    let summary = summary_of_topic(&broker).await;
    assert_eq!(count(&summary, "consumed"), 200, "{summary}");
}

async fn summary_of_topic(broker: &TestBroker) -> serde_json::Value {
    summary(
        &perf(args(
            broker,
            "-z 0 -x 1 -y 2 --queues 2 -e perf.topic -t topic -k a.b.c --binding-key a.# --pmessages 100 -q 10 --queue-prefix perf-topic --json",
        ))
        .await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_clearly_when_it_cannot_connect_or_log_in() {
    let broker = start_broker().await;
    let wrong = perf(vec![
        "--uri".into(),
        broker.url_with("guest", "not-the-password", "/"),
        "-z".into(),
        "1".into(),
    ])
    .await;
    assert!(!wrong.status.success());
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        stderr.contains("login") && stderr.contains("guest"),
        "{stderr}"
    );

    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let nobody = perf(vec![
        "--uri".into(),
        format!("amqp://127.0.0.1:{port}"),
        "-z".into(),
        "1".into(),
    ])
    .await;
    assert!(!nobody.status.success());
    let stderr = String::from_utf8_lossy(&nobody.stderr);
    assert!(
        stderr.contains(&format!("cannot connect to 127.0.0.1:{port}")),
        "{stderr}"
    );

    // Something that accepts connections and never answers: a clear error, not a hang.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let mute = perf(vec![
        "--uri".into(),
        format!("amqp://127.0.0.1:{silent_port}"),
        "--connect-timeout".into(),
        "0.5".into(),
    ])
    .await;
    drop(silent);
    assert!(!mute.status.success());
    let stderr = String::from_utf8_lossy(&mute.stderr);
    assert!(
        stderr.contains("did not complete the AMQP handshake"),
        "{stderr}"
    );

    for (bad, says) in [
        (vec!["--uri", "http://127.0.0.1"], "not an AMQP URI"),
        (vec!["--queues", "0"], "--queues"),
        (vec!["--prefetch", "0"], "--prefetch 0"),
    ] {
        let out = perf(bad.iter().map(|s| s.to_string()).collect()).await;
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{bad:?}: {stderr}");
    }
}
