//! `wharf` nodes as an operator runs a cluster: three processes started with the same seed
//! list, on loopback ports, each with its own data directory. Formation in any start
//! order, `wharf ctl cluster_status`, users and vhosts made on one node and used on
//! another, a node that misses changes while it is down, a node cut off from the
//! majority refusing changes, a wrong secret, and bad settings. (Faults between machines,
//! in network namespaces, are `tests/cluster_faults.rs`.)

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

/// A connection as `user` to `vhost` on each node.
async fn logged_in_everywhere(
    nodes: &[Node],
    user: &str,
    password: &str,
    vhost: &str,
) -> Vec<lapin::Connection> {
    let mut open = Vec::new();
    for node in nodes {
        open.push(log_in(&node.spec, user, password, vhost).await.unwrap());
    }
    open
}

/// Waits up to 10 s for every connection of `open` to be closed by its node.
async fn all_closed(open: &[lapin::Connection], otherwise: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while open.iter().any(|c| c.status().connected()) {
        assert!(Instant::now() < deadline, "{otherwise}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_form_one_cluster_and_share_users_and_vhosts() {
    let place = Place::new("share");
    let specs = specs(&place, 3);
    let seeds = seeds(&specs);
    // Started last to first: the order does not matter.
    let nodes: Vec<Node> = specs.iter().rev().map(|s| Node::spawn(s, &seeds)).collect();
    let nodes: Vec<Node> = nodes.into_iter().rev().map(Node::ready).collect();
    let all: Vec<&Node> = nodes.iter().collect();
    let leader = agreed(&all);
    assert!(["n0", "n1", "n2"].contains(&leader.as_str()));

    let table = stdout(&nodes[1].ctl(&["cluster_status"]));
    assert!(
        table.starts_with("name\taddress\tstate\trole\tleader\n"),
        "{table}"
    );
    for spec in &specs {
        let row = format!("{}\t127.0.0.1:{}\tup\tvoter\t", spec.name, spec.cluster);
        assert!(table.contains(&row), "{table}");
    }
    assert!(
        table.contains(&format!("Metadata leader: {leader}, term ")),
        "{table}"
    );

    // The default user (--default-user) exists once, on every node.
    for node in &nodes {
        assert!(can_log_in(&node.spec, ADMIN, ADMIN_PASSWORD, "/").await);
    }
    // A user and a vhost made on one node; permissions set on another; used on the third.
    let added = ctl(&specs[0].data, &["add_user", "alice"], "s3cret\n");
    assert!(added.status.success(), "{}", stderr(&added));
    let vhost = nodes[1].ctl(&["add_vhost", "orders"]);
    assert!(vhost.status.success(), "{}", stderr(&vhost));
    let permitted = nodes[2].ctl(&["set_permissions", "-p", "orders", "alice", ".*", ".*", ".*"]);
    assert!(permitted.status.success(), "{}", stderr(&permitted));
    for node in &nodes {
        assert!(
            can_log_in(&node.spec, "alice", "s3cret", "orders").await,
            "{}",
            node.spec.name
        );
    }
    // Through the HTTP API as well: a user made over HTTP on one node is listed on another.
    let (code, body) = http(
        "PUT",
        &specs[2],
        "/api/users/bob",
        Some(r#"{"password":"pw","tags":"monitoring"}"#),
    );
    assert_eq!(code, 201, "{body}");
    let (code, body) = http("GET", &specs[0], "/api/users/bob", None);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"monitoring\""), "{body}");

    // Deleted on one node, gone on all: its connections on every node are closed, and
    // its logins fail everywhere.
    let open = logged_in_everywhere(&nodes, "alice", "s3cret", "orders").await;
    let deleted = nodes[0].ctl(&["delete_user", "alice"]);
    assert!(deleted.status.success(), "{}", stderr(&deleted));
    all_closed(&open, "a deleted user's connection stayed open").await;
    for node in &nodes {
        assert!(!can_log_in(&node.spec, "alice", "s3cret", "orders").await);
    }
    let again = nodes[1].ctl(&["delete_user", "alice"]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("User \"alice\" does not exist"),
        "{}",
        stderr(&again)
    );

    // A vhost deleted on one node: its connections on every node are closed.
    let permitted = nodes[1].ctl(&["set_permissions", "-p", "orders", ADMIN, ".*", ".*", ".*"]);
    assert!(permitted.status.success(), "{}", stderr(&permitted));
    let open = logged_in_everywhere(&nodes, ADMIN, ADMIN_PASSWORD, "orders").await;
    let deleted = nodes[2].ctl(&["delete_vhost", "orders"]);
    assert!(deleted.status.success(), "{}", stderr(&deleted));
    all_closed(&open, "a deleted vhost's connection stayed open").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_refuses_changes_and_a_restarted_one_catches_up() {
    let place = Place::new("minority");
    let specs = specs(&place, 3);
    let seeds = seeds(&specs);
    let mut nodes = start_all(&specs);

    // One node down: the two others are a majority, and go on.
    let down = nodes.remove(0).kill();
    let made = ctl(&specs[1].data, &["add_user", "while-down"], "pw\n");
    assert!(made.status.success(), "{}", stderr(&made));
    let status = cluster_status(&nodes[0]);
    let row = status["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["address"] == down.cluster_address())
        .cloned()
        .unwrap();
    assert_eq!(row["state"], "down", "{status}");
    // Still named (it was seen before it went), and listed by the API as not running.
    assert_eq!(row["name"], down.name.as_str(), "{status}");
    let (code, body) = http("GET", &specs[1], "/api/nodes", None);
    assert_eq!(code, 200, "{body}");
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut running: Vec<(String, bool)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap().to_string(),
                n["running"] == true,
            )
        })
        .collect();
    assert_eq!(
        running[0],
        ("n1".to_string(), true),
        "this node first: {body}"
    );
    running.sort();
    assert_eq!(
        running,
        [
            ("n0".to_string(), false),
            ("n1".to_string(), true),
            ("n2".to_string(), true)
        ],
        "{body}"
    );

    // Back, with its own data: it rejoins and has what it missed.
    let back = Node::spawn(&down, &seeds).ready();
    let users = stdout(&back.ctl(&["list_users"]));
    assert!(users.contains("while-down"), "{users}");
    nodes.insert(0, back);
    agreed(&nodes.iter().collect::<Vec<_>>());

    // Two nodes down: the last one is no majority. It refuses changes at once and says
    // why (ctl and HTTP 503), and keeps serving what it has.
    let second = nodes.remove(1).kill();
    let third = nodes.remove(1).kill();
    let alone = &nodes[0];
    let started = Instant::now();
    let refused = alone.ctl(&["add_vhost", "refused"]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("no reachable leader"),
        "{}",
        stderr(&refused)
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "a refusal, not a hang"
    );
    let (code, body) = http("PUT", &alone.spec, "/api/vhosts/refused", None);
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("no reachable leader"), "{body}");
    assert!(can_log_in(&alone.spec, ADMIN, ADMIN_PASSWORD, "/").await);
    let status = cluster_status(alone);
    assert!(status["leader"].is_null(), "{status}");

    // The others come back: the cluster takes changes again.
    let _second = Node::spawn(&second, &seeds).ready();
    let _third = Node::spawn(&third, &seeds).ready();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let made = alone.ctl(&["add_vhost", "after"]);
        if made.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "{}", stderr(&made));
        std::thread::sleep(Duration::from_millis(300));
    }
    let vhosts = stdout(&_second.ctl(&["list_vhosts"]));
    assert!(vhosts.contains("after"), "{vhosts}");
    assert!(!vhosts.contains("refused"), "{vhosts}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_the_wrong_secret_is_refused_and_says_so() {
    let place = Place::new("secret");
    let mut specs = specs(&place, 3);
    specs[2].secret = place.write_secret("other", "a different secret, just as long\n");
    let seeds = seeds(&specs);
    let honest: Vec<Node> = specs[..2].iter().map(|s| Node::spawn(s, &seeds)).collect();
    let intruder = Node::spawn(&specs[2], &seeds);
    let honest: Vec<Node> = honest.into_iter().map(Node::ready).collect();
    let line = intruder.wait_for_line("secret", Duration::from_secs(20));
    assert!(line.contains("ERROR"), "{line}");
    let status = cluster_status(&honest[0]);
    let row = status["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["address"] == specs[2].cluster_address())
        .cloned()
        .unwrap();
    assert_eq!(row["state"], "down", "{status}");
    // The intruder never got the cluster's users: it is not even ready to serve.
    assert!(!can_log_in(&specs[2], ADMIN, ADMIN_PASSWORD, "/").await);
}

#[test]
fn bad_cluster_settings_stop_the_start_with_a_reason() {
    let place = Place::new("settings");
    let spec = &specs(&place, 1)[0];
    let start = |extra: &[&str]| -> String {
        let output = Command::new(env!("CARGO_BIN_EXE_wharf"))
            .arg("--data-dir")
            .arg(&spec.data)
            .args(["--amqp-listen", &format!("127.0.0.1:{}", spec.amqp)])
            .args(["--http-listen", "none", "--prometheus-listen", "none"])
            .args(extra)
            .env("NO_COLOR", "1")
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap();
        assert!(!output.status.success());
        format!("{}{}", stdout(&output), stderr(&output))
    };
    let seeds = format!("127.0.0.1:{}", spec.cluster);
    let listen = seeds.clone();
    let without_secret = start(&["--cluster-seeds", &seeds, "--cluster-listen", &listen]);
    assert!(
        without_secret.contains("cluster_secret_file"),
        "{without_secret}"
    );
    let open_secret = place.0.join("open-secret");
    std::fs::write(&open_secret, SECRET).unwrap();
    let readable = start(&[
        "--cluster-seeds",
        &seeds,
        "--cluster-listen",
        &listen,
        "--cluster-secret-file",
        open_secret.to_str().unwrap(),
    ]);
    assert!(readable.contains("chmod 600"), "{readable}");
    let short = place.write_secret("short", "short\n");
    let too_short = start(&[
        "--cluster-seeds",
        &seeds,
        "--cluster-listen",
        &listen,
        "--cluster-secret-file",
        short.to_str().unwrap(),
    ]);
    assert!(too_short.contains("at least 16"), "{too_short}");
    let bad_seed = start(&[
        "--cluster-seeds",
        "node2:25672",
        "--cluster-listen",
        &listen,
    ]);
    assert!(bad_seed.contains("'node2:25672'"), "{bad_seed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_down_for_ten_thousand_changes_catches_up_by_snapshot() {
    let place = Place::new("snapshot");
    let specs = specs(&place, 3);
    let seeds = seeds(&specs);
    let mut nodes = start_all(&specs);
    let away = nodes.remove(2).kill();

    // 10,000 users in one definitions import: 10,000 changes in the log, which the
    // others snapshot (every 5,000) and purge behind them.
    let users: Vec<serde_json::Value> = (0..10_000)
        .map(|i| {
            serde_json::json!({
                "name": format!("user-{i}"),
                "password_hash": "",
                "hashing_algorithm": "rabbit_password_hashing_sha256",
                "tags": [],
            })
        })
        .collect();
    let definitions = serde_json::json!({ "users": users }).to_string();
    let file = place.0.join("users.json");
    std::fs::write(&file, definitions).unwrap();
    let imported = ctl(
        &specs[0].data,
        &["import_definitions", file.to_str().unwrap()],
        "",
    );
    assert!(imported.status.success(), "{}", stderr(&imported));

    let back = Node::spawn(&away, &seeds);
    back.wait_for_line("metadata snapshot installed", Duration::from_secs(60));
    let back = back.ready();
    let listed = stdout(&back.ctl(&["list_users"]));
    let count = listed.lines().filter(|l| l.starts_with("user-")).count();
    assert_eq!(count, 10_000);
    // And it goes on from there with the others.
    let made = back.ctl(&["add_vhost", "after-the-snapshot"]);
    assert!(made.status.success(), "{}", stderr(&made));
    for node in &nodes {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !stdout(&node.ctl(&["list_vhosts"])).contains("after-the-snapshot") {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_is_down_is_forgotten_and_the_others_go_on() {
    let place = Place::new("forget");
    let specs = specs(&place, 3);
    let mut nodes = start_all(&specs);
    let gone = nodes.remove(2).kill();

    let running = nodes[0].ctl(&["forget_cluster_node", "n1"]);
    assert!(!running.status.success());
    assert!(
        stderr(&running).contains("n1 is running: stop it"),
        "{}",
        stderr(&running)
    );
    let unknown = nodes[0].ctl(&["forget_cluster_node", "nobody"]);
    assert!(
        stderr(&unknown).contains("'nobody' is not a member"),
        "{}",
        stderr(&unknown)
    );
    let itself = nodes[0].ctl(&["forget_cluster_node", "n0"]);
    assert!(
        stderr(&itself).contains("is this node"),
        "{}",
        stderr(&itself)
    );

    let forgot = nodes[0].ctl(&["forget_cluster_node", &gone.name]);
    assert!(forgot.status.success(), "{}", stderr(&forgot));
    assert_eq!(stdout(&forgot), "Removed n2 from the cluster\n");
    let status = cluster_status(&nodes[1]);
    let members: Vec<&str> = status["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(members.len(), 2, "{status}");
    assert!(!members.contains(&"n2"), "{status}");
    // Two voters left: both up, so changes go on.
    let made = ctl(&specs[1].data, &["add_user", "after-forgetting"], "pw\n");
    assert!(made.status.success(), "{}", stderr(&made));
    let again = nodes[1].ctl(&["forget_cluster_node", &gone.cluster_address()]);
    assert!(
        stderr(&again).contains("is not a member"),
        "{}",
        stderr(&again)
    );

    // Its raft/ removed, the forgotten node joins again, and gets what it missed.
    std::fs::remove_dir_all(gone.data.join("raft")).unwrap();
    let back = Node::spawn(&gone, &seeds(&specs)).ready();
    let users = stdout(&back.ctl(&["list_users"]));
    assert!(users.contains("after-forgetting"), "{users}");
    nodes.push(back);
    agreed(&nodes.iter().collect::<Vec<_>>());
    assert_eq!(
        cluster_status(&nodes[0])["members"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_speak_tls_with_the_brokers_certificates_and_a_stranger_certificate_is_refused() {
    use wharf_integration::pki::Ca;
    let place = Place::new("tls");
    let ca = Ca::new(&place.0.join("pki"), "cluster");
    let mut specs = specs(&place, 3);
    for (i, spec) in specs.iter_mut().enumerate() {
        let (cert, key) = ca.issue_node(&format!("n{i}"), spec.host);
        spec.tls = Some((cert, key, ca.ca_file(), free_port()));
    }
    // The third node's certificate is signed by another CA: the others refuse it.
    let stranger = Ca::new(&place.0.join("other-pki"), "stranger");
    let (cert, key) = stranger.issue_node("n2", specs[2].host);
    specs[2].tls = Some((cert, key, ca.ca_file(), free_port()));
    let seeds = seeds(&specs);
    let nodes: Vec<Node> = specs[..2].iter().map(|s| Node::spawn(s, &seeds)).collect();
    let outsider = Node::spawn(&specs[2], &seeds);
    let nodes: Vec<Node> = nodes.into_iter().map(Node::ready).collect();
    let added = ctl(&specs[0].data, &["add_user", "over-tls"], "pw\n");
    assert!(added.status.success(), "{}", stderr(&added));
    let users = stdout(&nodes[1].ctl(&["list_users"]));
    assert!(users.contains("over-tls"), "{users}");
    let refused = outsider.wait_for_line("TLS", Duration::from_secs(20));
    assert!(
        refused.contains("ERROR") || refused.contains("WARN"),
        "{refused}"
    );
    let status = cluster_status(&nodes[0]);
    let row = status["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["address"] == specs[2].cluster_address())
        .cloned()
        .unwrap();
    assert_eq!(row["state"], "down", "{status}");
}

/// A restarted node does not apply again what it held already: a vhost deleted and made
/// again before the restart keeps the queues and messages put in it since.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_queues_of_a_vhost_deleted_and_made_again() {
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;
    use lapin::BasicProperties;
    let place = Place::new("replay");
    let specs = specs(&place, 3);
    let mut nodes = start_all(&specs);
    for args in [
        &["add_vhost", "v"][..],
        &["delete_vhost", "v"],
        &["add_vhost", "v"],
        &["set_permissions", "-p", "v", ADMIN, ".*", ".*", ".*"],
    ] {
        let output = nodes[1].ctl(args);
        assert!(output.status.success(), "{args:?}: {}", stderr(&output));
    }
    let url = |spec: &NodeSpec| {
        format!(
            "amqp://{ADMIN}:{ADMIN_PASSWORD}@{}:{}/v",
            spec.host, spec.amqp
        )
    };
    let properties = || {
        lapin::ConnectionProperties::default()
            .with_executor(tokio_executor_trait::Tokio::current())
            .with_reactor(tokio_reactor_trait::Tokio)
    };
    {
        let connection = lapin::Connection::connect(&url(&specs[0]), properties())
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        channel
            .queue_declare("kept", durable, FieldTable::default())
            .await
            .unwrap();
        for i in 0..3 {
            channel
                .basic_publish(
                    "",
                    "kept",
                    BasicPublishOptions::default(),
                    format!("m{i}").as_bytes(),
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .unwrap()
                .await
                .unwrap();
        }
    }
    let spec = nodes.remove(0).kill();
    let back = Node::spawn(&spec, &seeds(&specs)).ready();
    let connection = lapin::Connection::connect(&url(&back.spec), properties())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let queue = channel
        .queue_declare("kept", passive, FieldTable::default())
        .await
        .expect("the queue is still there");
    assert_eq!(queue.message_count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_without_seeds_joins_through_ctl_join_cluster() {
    let place = Place::new("join");
    let specs = specs(&place, 4);
    let mut nodes = start_all(&specs[..3]);
    let made = ctl(&specs[0].data, &["add_user", "before-joining"], "pw\n");
    assert!(made.status.success(), "{}", stderr(&made));

    // No seeds: it waits, serving no client, until told where to join.
    let fourth = Node::spawn(&specs[3], "");
    fourth.wait_for_line(
        "waiting for `wharf ctl join_cluster",
        Duration::from_secs(20),
    );
    assert!(!can_log_in(&specs[3], ADMIN, ADMIN_PASSWORD, "/").await);
    for (address, refusal) in [
        ("nowhere".to_string(), "'nowhere' is not a cluster address"),
        (specs[3].cluster_address(), "this node's own address"),
        (
            format!("127.0.0.1:{}", free_port()),
            "cannot reach the node at",
        ),
    ] {
        let refused = fourth.ctl(&["join_cluster", &address]);
        assert!(!refused.status.success());
        assert!(stderr(&refused).contains(refusal), "{}", stderr(&refused));
    }
    let joined = fourth.ctl(&["join_cluster", &specs[1].cluster_address()]);
    assert!(joined.status.success(), "{}", stderr(&joined));
    assert_eq!(stdout(&joined), "Joined the cluster of n1\n");
    let fourth = fourth.ready();
    let users = stdout(&fourth.ctl(&["list_users"]));
    assert!(users.contains("before-joining"), "{users}");
    nodes.push(fourth);
    agreed(&nodes.iter().collect::<Vec<_>>());
    assert_eq!(
        cluster_status(&nodes[0])["members"]
            .as_array()
            .unwrap()
            .len(),
        4
    );

    // A member already: refused, as RabbitMQ refuses a node that is not reset.
    let again = nodes[3].ctl(&["join_cluster", &specs[0].cluster_address()]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("a cluster member already"),
        "{}",
        stderr(&again)
    );
    // Restarted, it rejoins by itself, seeds or not.
    let spec = nodes.remove(3).stop();
    let back = Node::spawn(&spec, "").ready();
    nodes.push(back);
    agreed(&nodes.iter().collect::<Vec<_>>());
}
