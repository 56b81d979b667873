//! Cluster nodes in one process, on loopback ports, each with its own data directory:
//! formation from the seed list, changes proposed on any node and applied on all,
//! restarts, joins, and a node with the wrong secret. (Separate processes in network
//! namespaces, for faults, are the integration suite's.)

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use wharf_cluster::config::parse_seeds;
use wharf_cluster::{
    ClusterConfig, ClusterNode, Command, MemberState, NoApplier, Outcome, Secret, WriteError,
};
use wharf_store::{Change, VhostDef};

const SECRET: &str = "a cluster secret of some length";

/// Loopback addresses with free ports.
fn free_addresses(count: usize) -> Vec<SocketAddr> {
    let listeners: Vec<std::net::TcpListener> = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners.iter().map(|l| l.local_addr().unwrap()).collect()
}

struct Node {
    cluster: Arc<ClusterNode>,
    stop: watch::Sender<bool>,
    dir: PathBuf,
    config: ClusterConfig,
}

impl Node {
    async fn start(config: ClusterConfig, dir: PathBuf) -> Node {
        let (stop, stopped) = watch::channel(false);
        let cluster = ClusterNode::start(config.clone(), &dir, Arc::new(NoApplier), stopped)
            .await
            .unwrap();
        Node {
            cluster,
            stop,
            dir,
            config,
        }
    }

    async fn stop(self) -> (ClusterConfig, PathBuf) {
        let _ = self.stop.send(true);
        let _ = self.cluster.raft().shutdown().await;
        // Let the listener close before the port is used again.
        tokio::time::sleep(Duration::from_millis(100)).await;
        (self.config, self.dir)
    }
}

fn config(name: &str, listen: SocketAddr, seeds: &[SocketAddr], secret: &str) -> ClusterConfig {
    let seeds_text: Vec<String> = seeds.iter().map(|s| s.to_string()).collect();
    ClusterConfig {
        node_name: name.to_string(),
        listen,
        seeds: parse_seeds(&seeds_text.join(",")).unwrap(),
        secret: Secret::from_bytes(secret.as_bytes()).unwrap(),
        tls: None,
    }
}

fn vhost(name: &str) -> Command {
    Command::Change(Change::PutVhost(VhostDef {
        name: name.to_string(),
        description: String::new(),
        tags: Vec::new(),
        limits: Default::default(),
    }))
}

fn has_vhost(node: &Node, name: &str) -> bool {
    node.cluster
        .definitions()
        .vhosts
        .iter()
        .any(|v| v.name == name)
}

/// Waits until every node names the same leader; returns its index among `nodes`.
async fn agreed_leader(nodes: &[&Node]) -> usize {
    for _ in 0..200 {
        let leaders: Vec<_> = nodes
            .iter()
            .map(|n| n.cluster.raft().metrics().borrow().current_leader)
            .collect();
        if let Some(Some(leader)) = leaders.first() {
            if leaders.iter().all(|l| *l == Some(*leader)) {
                if let Some(i) = nodes.iter().position(|n| n.cluster.node_id() == *leader) {
                    return i;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the nodes did not agree on a leader within 10 s");
}

/// Retries a write until the cluster has a leader (an election may be under way).
async fn write(node: &Node, command: Command) -> Outcome {
    for _ in 0..100 {
        match node.cluster.write(command.clone()).await {
            Ok(outcome) => return outcome,
            Err(WriteError::NoLeader) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(error) => panic!("write failed: {error}"),
        }
    }
    panic!("no leader within 10 s");
}

async fn eventually(what: &str, check: impl Fn() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not within 10 s");
}

async fn three_nodes() -> (Vec<Node>, tempfile::TempDir) {
    let root = tempfile::tempdir().unwrap();
    let addresses = free_addresses(3);
    let mut nodes = Vec::new();
    for (i, address) in addresses.iter().enumerate() {
        let dir = root.path().join(format!("n{i}"));
        nodes.push(Node::start(config(&format!("n{i}"), *address, &addresses, SECRET), dir).await);
    }
    (nodes, root)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeds_form_one_cluster_and_a_change_on_any_node_is_applied_on_all() {
    let (nodes, _root) = three_nodes().await;
    let all: Vec<&Node> = nodes.iter().collect();
    let leader = agreed_leader(&all).await;
    let follower = (leader + 1) % 3;

    assert_eq!(
        write(&nodes[follower], vhost("made-on-a-follower")).await,
        Outcome::Applied
    );
    // Applied on the proposer before it answered; on the others soon after.
    assert!(has_vhost(&nodes[follower], "made-on-a-follower"));
    assert_eq!(
        write(&nodes[leader], vhost("made-on-the-leader")).await,
        Outcome::Applied
    );
    for node in &nodes {
        eventually("every node applies both changes", || {
            has_vhost(node, "made-on-a-follower") && has_vhost(node, "made-on-the-leader")
        })
        .await;
    }

    let status = nodes[follower].cluster.status().await;
    assert_eq!(status.members.len(), 3);
    assert_eq!(status.leader, Some(nodes[leader].cluster.node_id()));
    assert!(status.term >= 1);
    assert!(status
        .members
        .iter()
        .all(|m| m.voter && m.state == MemberState::Up));
    let mut names: Vec<_> = status
        .members
        .iter()
        .filter_map(|m| m.name.clone())
        .collect();
    names.sort();
    assert_eq!(names, ["n0", "n1", "n2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_rejoins_and_catches_up() {
    let (mut nodes, _root) = three_nodes().await;
    let leader = agreed_leader(&nodes.iter().collect::<Vec<_>>()).await;
    let follower = (leader + 1) % 3;
    write(&nodes[leader], vhost("before")).await;
    // Each node has seen the others answer (a status asks every member).
    for node in &nodes {
        let status = node.cluster.status().await;
        assert!(
            status.members.iter().all(|m| m.name.is_some()),
            "{status:?}"
        );
    }
    let (config, dir) = nodes.remove(follower).stop().await;

    // The two others are a majority: changes go on without it, and status says it is down.
    write(&nodes[0], vhost("while-it-was-down")).await;
    let status = nodes[0].cluster.status().await;
    let down: Vec<_> = status
        .members
        .iter()
        .filter(|m| m.state == MemberState::Down)
        .map(|m| m.name.clone())
        .collect();
    // Shown by its name, which it gave while it was up.
    assert_eq!(down, [Some(config.node_name.clone())], "{status:?}");

    let back = Node::start(config, dir).await;
    eventually("the restarted node applies what it missed", || {
        has_vhost(&back, "before") && has_vhost(&back, "while-it-was-down")
    })
    .await;
    assert_eq!(write(&back, vhost("after")).await, Outcome::Applied);
    assert!(has_vhost(&back, "after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_seed_of_three_waits_and_the_second_forms_the_cluster() {
    let root = tempfile::tempdir().unwrap();
    let addresses = free_addresses(3);
    let first = Node::start(
        config("n0", addresses[0], &addresses, SECRET),
        root.path().join("n0"),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        first.cluster.write(vhost("too-early")).await,
        Err(WriteError::NoLeader),
        "one seed of three is no majority"
    );
    let second = Node::start(
        config("n1", addresses[1], &addresses, SECRET),
        root.path().join("n1"),
    )
    .await;
    agreed_leader(&[&first, &second]).await;
    assert_eq!(
        write(&second, vhost("two-of-three")).await,
        Outcome::Applied
    );
    // The third, started last, is a member already: it receives everything.
    let third = Node::start(
        config("n2", addresses[2], &addresses, SECRET),
        root.path().join("n2"),
    )
    .await;
    eventually("the late seed catches up", || {
        has_vhost(&third, "two-of-three")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_is_not_a_seed_joins_through_the_seeds() {
    let (nodes, root) = three_nodes().await;
    agreed_leader(&nodes.iter().collect::<Vec<_>>()).await;
    write(&nodes[0], vhost("existing")).await;
    let seeds: Vec<SocketAddr> = nodes.iter().map(|n| n.config.listen).collect();
    let address = free_addresses(1)[0];
    let fourth = Node::start(
        config("n3", address, &seeds, SECRET),
        root.path().join("n3"),
    )
    .await;
    eventually("the new node receives the definitions", || {
        has_vhost(&fourth, "existing")
    })
    .await;
    let mut status = nodes[1].cluster.status().await;
    for _ in 0..100 {
        if status.members.len() == 4 && status.members.iter().all(|m| m.voter) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        status = nodes[1].cluster.status().await;
    }
    assert_eq!(status.members.len(), 4, "{status:?}");
    assert!(status.members.iter().all(|m| m.voter), "{status:?}");
    assert_eq!(
        write(&fourth, vhost("from-the-new-node")).await,
        Outcome::Applied
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_another_secret_is_kept_out() {
    let root = tempfile::tempdir().unwrap();
    let addresses = free_addresses(3);
    let honest: Vec<Node> = futures::future::join_all((0..2).map(|i| {
        Node::start(
            config(&format!("n{i}"), addresses[i], &addresses, SECRET),
            root.path().join(format!("n{i}")),
        )
    }))
    .await;
    let intruder = Node::start(
        config(
            "intruder",
            addresses[2],
            &addresses,
            "not the cluster's secret",
        ),
        root.path().join("intruder"),
    )
    .await;
    agreed_leader(&honest.iter().collect::<Vec<_>>()).await;
    write(&honest[0], vhost("private")).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !has_vhost(&intruder, "private"),
        "the intruder got the definitions"
    );
    assert_eq!(
        intruder.cluster.raft().metrics().borrow().current_leader,
        None
    );
    let status = honest[0].cluster.status().await;
    let intruder_row = status
        .members
        .iter()
        .find(|m| m.address == addresses[2].to_string())
        .unwrap();
    assert_eq!(intruder_row.state, MemberState::Down);
}
