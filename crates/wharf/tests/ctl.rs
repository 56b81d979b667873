//! `wharf ctl` against a running `wharf`: policies set, listed and cleared through the
//! data directory's control socket, and what they do seen over AMQP.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

/// The binary, its management API and metrics on free ports (tests run side by side).
fn wharf() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wharf"));
    command.env("WHARF_HTTP_LISTEN", "127.0.0.1:0");
    command.env("WHARF_PROMETHEUS_LISTEN", "127.0.0.1:0");
    command
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running broker, stopped (SIGTERM) when dropped.
struct Broker {
    child: Child,
    data: std::path::PathBuf,
    port: u16,
}

impl Broker {
    fn start(name: &str) -> Broker {
        let data = std::env::temp_dir().join(format!("wharf-ctl-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        Broker::start_in(data)
    }

    fn start_in(data: std::path::PathBuf) -> Broker {
        let port = free_port();
        let mut child = wharf()
            .args(["--amqp-listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(&data)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        // From here the child is waited for when the Broker is dropped, ready or not.
        let broker = Broker { child, data, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref() {
            if line.unwrap().contains("wharf ready") {
                // The broker logs on: keep reading, so that its writes do not fail.
                std::thread::spawn(move || lines.for_each(drop));
                return broker;
            }
            assert!(Instant::now() < deadline, "no ready line");
        }
        panic!("wharf exited before it was ready");
    }

    /// A new broker process on the data directory `stopped` used.
    fn restart(stopped: &Broker) -> Broker {
        Broker::start_in(stopped.data.clone())
    }

    fn ctl(&self, args: &[&str]) -> Output {
        wharf()
            .arg("ctl")
            .arg("--data-dir")
            .arg(&self.data)
            .args(args)
            .output()
            .unwrap()
    }
}

impl Broker {
    /// Stops the broker (SIGTERM) and waits for it to exit.
    fn stop_process(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return; // exited (and reaped) already: its pid may belong to another process now
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop_process();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// Runs `wharf ctl` on `data` with `stdin` as its standard input.
fn ctl_with_input(data: &std::path::Path, args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut child = wharf()
        .arg("ctl")
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

async fn can_log_in(port: u16, user: &str, password: &str, vhost: &str) -> bool {
    let properties = ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio);
    let vhost = vhost.replace('/', "%2f");
    let url = format!("amqp://{user}:{password}@127.0.0.1:{port}/{vhost}");
    Connection::connect(&url, properties).await.is_ok()
}

async fn guest_connection(port: u16) -> Connection {
    let properties = ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio);
    let url = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    Connection::connect(&url, properties).await.unwrap()
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn ready_count_after_publishing(port: u16, queue: &str, messages: u8) -> u32 {
    let properties = ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio);
    let url = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    let connection = Connection::connect(&url, properties).await.unwrap();
    let ch = connection.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    let options = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    ch.queue_declare(queue, options, FieldTable::default())
        .await
        .unwrap();
    for i in 0..messages {
        ch.basic_publish(
            "",
            queue,
            Default::default(),
            &[i],
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    ch.queue_declare(queue, passive, FieldTable::default())
        .await
        .unwrap()
        .message_count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_set_listed_and_cleared_from_the_command_line() {
    let broker = Broker::start("policies");
    let set = broker.ctl(&[
        "set_policy",
        "cap",
        "^capped\\.",
        r#"{"max-length":1}"#,
        "--apply-to",
        "queues",
        "--priority",
        "2",
    ]);
    assert!(set.status.success(), "{:?}", text(&set));
    let list = broker.ctl(&["list_policies"]);
    let (out, _) = text(&list);
    assert!(list.status.success());
    assert!(
        out.lines()
            .any(|l| l == "/\tcap\t^capped\\.\tqueues\t{\"max-length\":1}\t2"),
        "{out}"
    );
    assert_eq!(
        ready_count_after_publishing(broker.port, "capped.q", 3).await,
        1,
        "the policy applies"
    );
    assert_eq!(
        ready_count_after_publishing(broker.port, "other.q", 3).await,
        3
    );

    let clear = broker.ctl(&["clear_policy", "cap"]);
    assert!(clear.status.success(), "{:?}", text(&clear));
    let (out, _) = text(&broker.ctl(&["list_policies"]));
    assert_eq!(out.lines().count(), 1, "only the header: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_policies_and_unknown_names_fail_with_a_reason() {
    let broker = Broker::start("bad");
    let cases: [(&[&str], &str); 4] = [
        (
            &["set_policy", "p", ".*", r#"{"max-length":-1}"#],
            "'max-length' must be a non-negative integer, not -1",
        ),
        (
            &["set_policy", "p", "(", r#"{"max-length":1}"#],
            "invalid pattern '('",
        ),
        (&["clear_policy", "nope"], "no policy 'nope' in vhost '/'"),
        (
            &["list_policies", "--vhost", "nowhere"],
            "Virtual host 'nowhere' does not exist",
        ),
    ];
    for (args, reason) in cases {
        let output = broker.ctl(args);
        let (_, err) = text(&output);
        assert!(!output.status.success(), "{args:?} should fail");
        assert!(err.contains(reason), "{args:?}: {err}");
    }
}

#[test]
fn without_a_running_broker_ctl_says_so() {
    let data = std::env::temp_dir().join(format!("wharf-ctl-none-{}", std::process::id()));
    let output = wharf()
        .args(["ctl", "--data-dir"])
        .arg(&data)
        .arg("list_policies")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let (_, err) = text(&output);
    assert!(err.contains("cannot reach the broker"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_vhosts_and_permissions_from_the_command_line() {
    let broker = Broker::start("users");
    let ok = |output: Output| {
        assert!(output.status.success(), "{:?}", text(&output));
        text(&output).0
    };
    // The password from standard input, kept out of the process list.
    ok(ctl_with_input(
        &broker.data,
        &["add_user", "alice", "--tags", "monitoring,policymaker"],
        "wonderland\n",
    ));
    ok(broker.ctl(&["add_vhost", "shop"]));
    ok(broker.ctl(&["set_permissions", "-p", "shop", "alice", "^a", ".*", ".*"]));
    ok(broker.ctl(&[
        "set_topic_permissions",
        "-p",
        "shop",
        "alice",
        "amq.topic",
        "^x",
        ".*",
    ]));
    assert!(can_log_in(broker.port, "alice", "wonderland", "shop").await);
    assert!(!can_log_in(broker.port, "alice", "wonderland", "/").await);

    let users = ok(broker.ctl(&["list_users"]));
    assert!(
        users
            .lines()
            .any(|l| l == "alice\t[monitoring, policymaker]"),
        "{users}"
    );
    let vhosts = ok(broker.ctl(&["list_vhosts"]));
    assert!(vhosts.lines().any(|l| l.starts_with("shop\t")), "{vhosts}");
    let permissions = ok(broker.ctl(&["list_permissions", "-p", "shop"]));
    assert_eq!(
        permissions,
        "user\tconfigure\twrite\tread\nalice\t^a\t.*\t.*\n"
    );
    let mine = ok(broker.ctl(&["list_user_permissions", "alice"]));
    assert_eq!(mine, "vhost\tconfigure\twrite\tread\nshop\t^a\t.*\t.*\n");
    let topics = ok(broker.ctl(&["list_topic_permissions", "-p", "shop"]));
    assert!(topics.contains("alice\tamq.topic\t^x\t.*"), "{topics}");
    ok(broker.ctl(&["authenticate_user", "alice", "wonderland"]));
    let wrong = broker.ctl(&["authenticate_user", "alice", "nope"]);
    assert!(!wrong.status.success());
    assert!(
        text(&wrong).1.contains("invalid credentials"),
        "{:?}",
        text(&wrong)
    );

    ok(broker.ctl(&["change_password", "alice", "looking-glass"]));
    assert!(!can_log_in(broker.port, "alice", "wonderland", "shop").await);
    assert!(can_log_in(broker.port, "alice", "looking-glass", "shop").await);

    let refusals: [(&[&str], &str); 4] = [
        (&["add_user", "alice", "x"], "User \"alice\" already exists"),
        (&["delete_user", "bob"], "User \"bob\" does not exist"),
        (
            &[
                "set_permissions",
                "-p",
                "nowhere",
                "alice",
                ".*",
                ".*",
                ".*",
            ],
            "Virtual host nowhere does not exist",
        ),
        (
            &["set_permissions", "-p", "shop", "alice", "(", ".*", ".*"],
            "invalid regular expression '('",
        ),
    ];
    for (args, reason) in refusals {
        let output = broker.ctl(args);
        assert!(!output.status.success(), "{args:?} should fail");
        assert!(
            text(&output).1.contains(reason),
            "{args:?}: {:?}",
            text(&output)
        );
    }

    ok(broker.ctl(&["delete_vhost", "shop"]));
    assert!(!can_log_in(broker.port, "alice", "looking-glass", "shop").await);
    ok(broker.ctl(&["delete_user", "alice"]));
    let users = ok(broker.ctl(&["list_users"]));
    assert!(!users.contains("alice"), "{users}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_brokers_data_directory_is_changed_directly() {
    let mut broker = Broker::start("offline");
    broker.stop_process();
    let run = |args: &[&str]| {
        let output = broker.ctl(args);
        assert!(output.status.success(), "{args:?}: {:?}", text(&output));
    };
    run(&["add_vhost", "ops"]);
    run(&["add_user", "carol", "pw"]);
    run(&["set_permissions", "-p", "ops", "carol", ".*", ".*", ".*"]);
    run(&["delete_user", "guest"]);

    let mut restarted = Broker::restart(&broker);
    assert!(can_log_in(restarted.port, "carol", "pw", "ops").await);
    assert!(!can_log_in(restarted.port, "guest", "guest", "/").await);
    // While it runs, a second opener of the data directory is turned away.
    let second = wharf()
        .args(["--amqp-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(&restarted.data)
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(
        text(&second).1.contains("in use by another Wharf process"),
        "{:?}",
        text(&second)
    );
    restarted.stop_process();
}

/// `list_queues`, `list_exchanges` and `list_bindings` show what AMQP clients made, with
/// the columns asked for, as a table or as JSON; `purge_queue` and `delete_queue` act on
/// it; unknown keys, vhosts and queues are refused with a reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_exchanges_and_bindings_are_listed_purged_and_deleted() {
    let broker = Broker::start("lists");
    let connection = guest_connection(broker.port).await;
    let ch = connection.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    let mut capped = FieldTable::default();
    capped.insert("x-max-length".into(), lapin::types::AMQPValue::LongInt(10));
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare("stock", durable, capped).await.unwrap();
    ch.queue_declare("busy", Default::default(), FieldTable::default())
        .await
        .unwrap();
    ch.exchange_declare(
        "events",
        lapin::ExchangeKind::Topic,
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        "stock",
        "events",
        "stock.#",
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    for _ in 0..3 {
        ch.basic_publish(
            "events",
            "stock.in",
            Default::default(),
            b"m",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    // Kept: a lapin consumer dropped is cancelled.
    let _watcher = ch
        .basic_consume("busy", "watcher", Default::default(), FieldTable::default())
        .await
        .unwrap();

    let listed = broker.ctl(&["list_queues", "name", "messages", "consumers"]);
    let (out, err) = text(&listed);
    assert!(listed.status.success(), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        ["name\tmessages\tconsumers", "busy\t0\t1", "stock\t3\t0"]
    );

    let (out, _) =
        text(&broker.ctl(&["list_queues", "name", "message_bytes", "messages_ready_ram"]));
    assert_eq!(
        out,
        "name\tmessage_bytes\tmessages_ready_ram\nbusy\t0\t0\nstock\t3\t3\n"
    );

    let json = broker.ctl(&[
        "list_queues",
        "--formatter",
        "json",
        "name",
        "messages_ready",
        "durable",
        "arguments",
    ]);
    let parsed: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(
        parsed,
        serde_json::json!([
            {"name": "busy", "messages_ready": 0, "durable": false, "arguments": []},
            {"name": "stock", "messages_ready": 3, "durable": true, "arguments": {"x-max-length": 10}},
        ])
    );

    let (out, _) = text(&broker.ctl(&["list_exchanges"]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "name\ttype");
    for expected in ["\tdirect", "amq.topic\ttopic", "events\ttopic"] {
        assert!(lines.contains(&expected), "{expected:?} in {lines:?}");
    }
    let (out, _) = text(&broker.ctl(&["list_bindings"]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "source_name\tsource_kind\tdestination_name\tdestination_kind\trouting_key\targuments",
            "\texchange\tbusy\tqueue\tbusy\t[]",
            "\texchange\tstock\tqueue\tstock\t[]",
            "events\texchange\tstock\tqueue\tstock.#\t[]",
        ]
    );

    // Refusals: a key rabbitmqctl does not have, a vhost or a queue that is not there, a
    // delete whose condition does not hold. Nothing changes.
    for (args, expected) in [
        (
            &["list_queues", "name", "colour"][..],
            "Info key(s) colour are not supported",
        ),
        (
            &["list_queues", "-p", "nowhere"][..],
            "Virtual host 'nowhere' does not exist",
        ),
        (&["purge_queue", "gone"][..], "no queue 'gone' in vhost '/'"),
        (
            &["delete_queue", "gone"][..],
            "no queue 'gone' in vhost '/'",
        ),
        (
            &["delete_queue", "stock", "--if-empty"][..],
            "queue 'stock' in vhost '/' not empty",
        ),
        (
            &["delete_queue", "busy", "--if-unused"][..],
            "queue 'busy' in vhost '/' in use",
        ),
    ] {
        let refused = broker.ctl(args);
        let (_, err) = text(&refused);
        assert!(!refused.status.success(), "{args:?} accepted");
        assert!(err.contains(expected), "{args:?}: {err}");
    }

    let purged = broker.ctl(&["purge_queue", "stock"]);
    assert_eq!(text(&purged).0, "Queue 'stock' purged of 3 messages\n");
    let deleted = broker.ctl(&["delete_queue", "stock", "--if-empty"]);
    assert_eq!(
        text(&deleted).0,
        "Queue was successfully deleted with 0 messages\n"
    );
    let (out, _) = text(&broker.ctl(&["list_queues"]));
    assert_eq!(out, "name\tmessages\nbusy\t0\n");
    // The binding went with the queue.
    let (out, _) = text(&broker.ctl(&["list_bindings", "source_name", "destination_name"]));
    assert_eq!(out, "source_name\tdestination_name\n\tbusy\n");
}

/// `status` reports the broker as a whole: where it listens, its memory and disk against
/// their limits (as its monitors measured them), the alarms, and totals that match what
/// the clients made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_listeners_resources_and_totals() {
    let broker = Broker::start("status");
    let connection = guest_connection(broker.port).await;
    let ch = connection.create_channel().await.unwrap();
    let _second = connection.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    ch.queue_declare("waiting", Default::default(), FieldTable::default())
        .await
        .unwrap();
    for _ in 0..2 {
        ch.basic_publish(
            "",
            "waiting",
            Default::default(),
            b"m",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }

    let status = broker.ctl(&["status"]);
    let (out, err) = text(&status);
    assert!(status.status.success(), "{err}");
    let rows: std::collections::HashMap<&str, &str> = out
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once('\t'))
        .collect();
    // AMQP, then the management API and Prometheus (on free ports).
    let listeners: Vec<&str> = rows["listeners"].split(", ").collect();
    assert_eq!(
        listeners[0],
        format!("amqp 127.0.0.1:{}", broker.port),
        "{out}"
    );
    for protocol in ["http", "http/prometheus"] {
        let prefix = format!("{protocol} 127.0.0.1:");
        assert!(listeners.iter().any(|l| l.starts_with(&prefix)), "{out}");
    }
    for (key, expected) in [
        ("connections", "1"),
        ("channels", "2"),
        ("queues", "1"),
        ("messages", "2"),
        ("messages_ready", "2"),
        ("consumers", "0"),
        ("memory_alarm", "false"),
        ("disk_alarm", "false"),
    ] {
        assert_eq!(rows[key], expected, "{key} in {out}");
    }

    let json = broker.ctl(&["status", "--formatter", "json"]);
    let parsed: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    for key in [
        "pid",
        "uptime_seconds",
        "memory_used_bytes",
        "memory_high_watermark_bytes",
        "disk_free_bytes",
        "disk_free_limit_bytes",
    ] {
        assert!(parsed[key].is_u64(), "{key}: {parsed}");
    }
    assert!(parsed["memory_used_bytes"].as_u64().unwrap() > 0);
    assert_eq!(
        parsed["disk_free_limit_bytes"], 50_000_000,
        "the default limit"
    );
    assert_eq!(parsed["channels"], 2);
    assert_eq!(parsed["disk_alarm"], false);
    assert_eq!(parsed["version"], env!("CARGO_PKG_VERSION"));

    // The connection as list_connections shows it, with rabbitmqctl's info keys.
    let listed = broker.ctl(&[
        "list_connections",
        "--formatter",
        "json",
        "user",
        "vhost",
        "peer_host",
        "port",
        "ssl",
        "channels",
        "recv_oct",
        "send_oct",
        "client_product",
        "protocol",
    ]);
    let parsed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let connection = &parsed[0];
    assert_eq!(parsed.as_array().map(Vec::len), Some(1), "{parsed}");
    assert_eq!(connection["user"], "guest");
    assert_eq!(connection["vhost"], "/");
    assert_eq!(connection["peer_host"], "127.0.0.1");
    assert_eq!(connection["port"], u64::from(broker.port));
    assert_eq!(connection["ssl"], false);
    assert_eq!(connection["channels"], 2);
    assert_eq!(connection["client_product"], "lapin");
    assert_eq!(connection["protocol"], "AMQP 0-9-1");
    // Two publishes of a byte each, and their confirms, at the least.
    assert!(
        connection["recv_oct"].as_u64().unwrap() > 2 * 20,
        "{connection}"
    );
    assert!(
        connection["send_oct"].as_u64().unwrap() > 2 * 20,
        "{connection}"
    );
    let refused = broker.ctl(&["list_connections", "pid"]);
    assert!(!refused.status.success());
    assert!(text(&refused)
        .1
        .contains("Info key(s) pid are not supported"));

    // Channels: a consumer with a prefetch of 5 takes both messages and acks one.
    ch.basic_qos(5, Default::default()).await.unwrap();
    let mut consumer = ch
        .basic_consume("waiting", "c", Default::default(), FieldTable::default())
        .await
        .unwrap();
    let first = next_delivery(&mut consumer).await;
    let _second = next_delivery(&mut consumer).await;
    first.ack(Default::default()).await.unwrap();
    let keys = [
        "number",
        "confirm",
        "published",
        "consumer_count",
        "prefetch_count",
        "delivered",
        "acked",
        "messages_unacknowledged",
    ];
    let deadline = Instant::now() + Duration::from_secs(5);
    let channels = loop {
        let mut args = vec!["list_channels", "--formatter", "json"];
        args.extend(keys);
        let listed = broker.ctl(&args);
        let parsed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
        // The ack counts once the broker has read it.
        if parsed[0]["acked"] == 1 || Instant::now() > deadline {
            break parsed;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        channels,
        serde_json::json!([
            {"number": 1, "confirm": true, "published": 2, "consumer_count": 1,
             "prefetch_count": 5, "delivered": 2, "acked": 1, "messages_unacknowledged": 1},
            {"number": 2, "confirm": false, "published": 0, "consumer_count": 0,
             "prefetch_count": 0, "delivered": 0, "acked": 0, "messages_unacknowledged": 0},
        ])
    );

    let listed = broker.ctl(&[
        "list_consumers",
        "--formatter",
        "json",
        "queue_name",
        "channel",
        "consumer_tag",
        "ack_required",
        "prefetch_count",
        "messages_unacknowledged",
    ]);
    let consumers: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(
        consumers,
        serde_json::json!([{"queue_name": "waiting", "channel": 1, "consumer_tag": "c",
            "ack_required": true, "prefetch_count": 5, "messages_unacknowledged": 1}])
    );
    let (out, _) = text(&broker.ctl(&["list_consumers", "queue_name", "consumer_tag"]));
    assert_eq!(out, "queue_name\tconsumer_tag\nwaiting\tc\n");
    let elsewhere = broker.ctl(&["list_consumers", "-p", "nowhere"]);
    assert!(!elsewhere.status.success());
    assert!(text(&elsewhere)
        .1
        .contains("Virtual host 'nowhere' does not exist"));
}

/// The next delivery of `consumer` (failing the test after 5 s without one).
async fn next_delivery(consumer: &mut lapin::Consumer) -> lapin::message::Delivery {
    use futures_lite::StreamExt;
    tokio::time::timeout(Duration::from_secs(5), consumer.next())
        .await
        .expect("no delivery in time")
        .expect("the consumer ended")
        .expect("a delivery")
}

/// `close_connection` closes the connection list_connections names, and its client hears
/// why (320 CONNECTION_FORCED with the explanation); an id that is not open is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_is_closed_by_id_with_a_reason() {
    let broker = Broker::start("close");
    let connection = guest_connection(broker.port).await;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let tx = std::sync::Mutex::new(Some(tx));
    connection.on_error(move |error| {
        if let Some(tx) = tx.lock().unwrap().take() {
            let _ = tx.send(error);
        }
    });
    let (out, _) = text(&broker.ctl(&["list_connections"]));
    let id = out
        .lines()
        .nth(1)
        .and_then(|row| row.split('\t').next())
        .unwrap_or_else(|| panic!("no connection listed: {out}"))
        .to_string();

    let closed = broker.ctl(&["close_connection", &id, "maintenance window"]);
    assert!(closed.status.success(), "{:?}", text(&closed));
    let error = tokio::time::timeout(Duration::from_secs(5), rx)
        .await
        .expect("the client was not told")
        .unwrap();
    match error {
        lapin::Error::ProtocolError(e) => assert_eq!(
            (e.get_id(), e.get_message().to_string()),
            (320, "CONNECTION_FORCED - maintenance window".to_string())
        ),
        other => panic!("expected a connection.close, got {other:?}"),
    }

    // Gone from the list once the broker is done with it; then it cannot be closed again.
    let deadline = Instant::now() + Duration::from_secs(5);
    while text(&broker.ctl(&["list_connections"])).0.lines().count() > 1 {
        assert!(Instant::now() < deadline, "the connection stays listed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let again = broker.ctl(&["close_connection", &id, "twice"]);
    let (_, err) = text(&again);
    assert!(!again.status.success());
    assert!(
        err.contains(&format!("no connection {id} is open")),
        "{err}"
    );
}
