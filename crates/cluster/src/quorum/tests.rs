//! Groups of three replicas in one process, linked directly (each RPC still encoded and
//! decoded as the network carries it): commit, failover, restart, snapshot, catch-up.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use wharf_core::quorum::{Applied, Command};

use super::codec::{decode_rpc, GroupAnswer};
use super::group::{group_config, GroupReplica, ProposeError};
use super::network::{GroupLink, LinkError};
use super::state_machine::NoEvents;
use crate::config::NodeId;
use crate::raft::Member;

/// Replicas by address; a cut address answers nothing.
#[derive(Default)]
struct Mesh {
    replicas: Mutex<HashMap<String, Arc<GroupReplica>>>,
    cut: Mutex<HashSet<String>>,
}

struct MeshLink(Arc<Mesh>);

impl GroupLink for MeshLink {
    fn call(
        &self,
        address: &str,
        rpc: Vec<u8>,
        _timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = Result<GroupAnswer, LinkError>> + Send + 'static>> {
        let mesh = self.0.clone();
        let address = address.to_string();
        Box::pin(async move {
            if mesh.cut.lock().contains(&address) {
                return Err(LinkError::Unreachable(format!("{address} is cut off")));
            }
            let Some(replica) = mesh.replicas.lock().get(&address).cloned() else {
                return Ok(GroupAnswer::NoGroup);
            };
            let (_, rpc) = decode_rpc(&rpc).map_err(|e| LinkError::Failed(e.to_string()))?;
            Ok(replica.handle(rpc).await)
        })
    }
}

fn address(node: NodeId) -> String {
    format!("node-{node}")
}

struct Trio {
    mesh: Arc<Mesh>,
    dir: tempfile::TempDir,
}

impl Trio {
    async fn start() -> Trio {
        let trio = Trio {
            mesh: Arc::new(Mesh::default()),
            dir: tempfile::tempdir().unwrap(),
        };
        for node in 1..=3 {
            trio.open(node).await;
        }
        let members: BTreeMap<NodeId, Member> = (1..=3)
            .map(|node| {
                (
                    node,
                    Member {
                        address: address(node),
                    },
                )
            })
            .collect();
        trio.replica(1).initialize(members).await.unwrap();
        trio.wait_for_leader(&[1, 2, 3]).await;
        trio
    }

    async fn open(&self, node: NodeId) {
        let replica = GroupReplica::open(
            &self.dir.path().join(node.to_string()),
            0xabc,
            node,
            Arc::new(MeshLink(self.mesh.clone())),
            Arc::new(NoEvents),
            group_config().unwrap(),
        )
        .await
        .unwrap();
        self.mesh
            .replicas
            .lock()
            .insert(address(node), Arc::new(replica));
    }

    fn replica(&self, node: NodeId) -> Arc<GroupReplica> {
        self.mesh.replicas.lock()[&address(node)].clone()
    }

    async fn stop(&self, node: NodeId) {
        let replica = self.mesh.replicas.lock().remove(&address(node)).unwrap();
        replica.shutdown().await;
    }

    /// Waits until one of `nodes` leads and the others follow it; returns the leader.
    async fn wait_for_leader(&self, nodes: &[NodeId]) -> NodeId {
        for _ in 0..200 {
            let leaders: Vec<Option<NodeId>> =
                nodes.iter().map(|n| self.replica(*n).leader()).collect();
            if let Some(Some(leader)) = leaders.first() {
                if leaders.iter().all(|l| *l == Some(*leader)) && self.replica(*leader).is_leader()
                {
                    return *leader;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("no leader among {nodes:?}");
    }

    /// Has `nodes` elect until one leads (what the supervisor does when a leader goes).
    async fn elect_among(&self, nodes: &[NodeId]) -> NodeId {
        for _ in 0..40 {
            for node in nodes {
                let _ = self.replica(*node).raft.trigger().elect().await;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            if let Some(leader) = nodes.iter().find(|n| self.replica(**n).is_leader()) {
                return *leader;
            }
        }
        panic!("no leader elected among {nodes:?}");
    }

    /// Waits until every one of `nodes` holds `count` messages.
    async fn wait_for_count(&self, nodes: &[NodeId], count: usize) {
        for _ in 0..200 {
            // A write's commit reaches followers with the next append: nudge them.
            for node in nodes {
                let replica = self.replica(*node);
                if replica.is_leader() {
                    let _ = replica.raft.trigger().heartbeat().await;
                }
            }
            if nodes
                .iter()
                .all(|n| self.replica(*n).state.with_ledger(|l| l.len()) == count)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let counts: Vec<usize> = nodes
            .iter()
            .map(|n| self.replica(*n).state.with_ledger(|l| l.len()))
            .collect();
        panic!("counts {counts:?}, not {count} on each");
    }
}

fn records(first: usize, n: usize) -> Vec<bytes::Bytes> {
    (first..first + n)
        .map(|i| bytes::Bytes::from(format!("message {i}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_enqueue_is_on_every_replica_and_a_follower_cannot_propose() {
    let trio = Trio::start().await;
    let leader = trio.wait_for_leader(&[1, 2, 3]).await;
    let applied = trio
        .replica(leader)
        .propose(&Command::Enqueue(records(0, 3)))
        .await
        .unwrap();
    let Applied::Enqueued {
        first_offset,
        count: 3,
    } = applied
    else {
        panic!("applied as {applied:?}");
    };
    trio.wait_for_count(&[1, 2, 3], 3).await;
    for node in 1..=3 {
        let record = trio.replica(node).state.record(first_offset + 1).unwrap();
        assert_eq!(record.as_deref(), Some(b"message 1".as_slice()));
    }
    let follower = (1..=3).find(|n| *n != leader).unwrap();
    assert_eq!(
        trio.replica(follower)
            .propose(&Command::Settle(vec![first_offset]))
            .await,
        Err(ProposeError::NotLeader {
            leader: Some(leader)
        })
    );
    trio.replica(leader)
        .propose(&Command::Settle(vec![first_offset]))
        .await
        .unwrap();
    trio.wait_for_count(&[1, 2, 3], 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_leader_goes_the_others_elect_one_that_holds_every_committed_message() {
    let trio = Trio::start().await;
    let leader = trio.wait_for_leader(&[1, 2, 3]).await;
    for batch in 0..10 {
        trio.replica(leader)
            .propose(&Command::Enqueue(records(batch * 5, 5)))
            .await
            .unwrap();
    }
    trio.stop(leader).await;
    let others: Vec<NodeId> = (1..=3).filter(|n| *n != leader).collect();
    let new_leader = trio.elect_among(&others).await;
    assert_ne!(new_leader, leader);
    // Everything committed under the old leader is there, in order.
    let offsets: Vec<u64> = trio
        .replica(new_leader)
        .state
        .with_ledger(|l| l.messages().map(|(o, _)| o).collect());
    assert_eq!(offsets.len(), 50);
    assert!(offsets.windows(2).all(|w| w[0] < w[1]));
    trio.replica(new_leader)
        .propose(&Command::Enqueue(records(50, 1)))
        .await
        .unwrap();
    trio.wait_for_count(&others, 51).await;
    // The old leader comes back as a follower and catches up.
    trio.open(leader).await;
    trio.wait_for_count(&[1, 2, 3], 51).await;
    assert_eq!(trio.replica(leader).leader(), Some(new_leader));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_majority_commits_nothing() {
    let trio = Trio::start().await;
    let leader = trio.wait_for_leader(&[1, 2, 3]).await;
    for node in (1..=3).filter(|n| *n != leader) {
        trio.mesh.cut.lock().insert(address(node));
    }
    let replica = trio.replica(leader);
    let proposal = tokio::time::timeout(
        Duration::from_secs(2),
        replica.propose(&Command::Enqueue(records(0, 1))),
    )
    .await;
    assert!(
        proposal.is_err(),
        "committed without a majority: {proposal:?}"
    );
    assert_eq!(replica.state.with_ledger(|l| l.len()), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_restarted_from_its_disk_holds_what_it_held() {
    let trio = Trio::start().await;
    let leader = trio.wait_for_leader(&[1, 2, 3]).await;
    let applied = trio
        .replica(leader)
        .propose(&Command::Enqueue(records(0, 4)))
        .await
        .unwrap();
    let Applied::Enqueued { first_offset, .. } = applied else {
        panic!("applied as {applied:?}");
    };
    trio.replica(leader)
        .propose(&Command::Return(vec![first_offset + 2]))
        .await
        .unwrap();
    trio.replica(leader)
        .propose(&Command::Settle(vec![first_offset]))
        .await
        .unwrap();
    trio.wait_for_count(&[1, 2, 3], 3).await;
    let follower = (1..=3).find(|n| *n != leader).unwrap();
    trio.stop(follower).await;
    trio.open(follower).await;
    // Its log is replayed up to the commit it noted (the rest once the leader tells it).
    trio.wait_for_count(&[follower], 3).await;
    let replica = trio.replica(follower);
    assert_eq!(
        replica
            .state
            .with_ledger(|l| l.get(first_offset + 2))
            .unwrap()
            .returns,
        1
    );
    assert_eq!(
        replica.state.record(first_offset + 3).unwrap().as_deref(),
        Some(b"message 3".as_slice())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_far_behind_catches_up_from_a_snapshot_with_the_records_it_holds() {
    let trio = Trio::start().await;
    let leader = trio.wait_for_leader(&[1, 2, 3]).await;
    let behind = (1..=3).find(|n| *n != leader).unwrap();
    trio.stop(behind).await;
    let mut kept = Vec::new();
    for batch in 0..400 {
        let applied = trio
            .replica(leader)
            .propose(&Command::Enqueue(records(batch * 2, 2)))
            .await
            .unwrap();
        let Applied::Enqueued { first_offset, .. } = applied else {
            panic!("applied as {applied:?}");
        };
        // All but the last message of every hundredth batch is consumed.
        if batch % 100 == 0 {
            kept.push((first_offset + 1, batch * 2 + 1));
            trio.replica(leader)
                .propose(&Command::Settle(vec![first_offset]))
                .await
                .unwrap();
        } else {
            trio.replica(leader)
                .propose(&Command::Settle(vec![first_offset, first_offset + 1]))
                .await
                .unwrap();
        }
    }
    let replica = trio.replica(leader);
    replica.raft.trigger().snapshot().await.unwrap();
    for _ in 0..100 {
        if replica.raft.metrics().borrow().snapshot.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let snapshot_at = replica.raft.metrics().borrow().snapshot.unwrap().index;
    // The log behind the snapshot goes (all but the entries openraft keeps behind it).
    replica.raft.trigger().purge_log(snapshot_at).await.unwrap();
    trio.open(behind).await;
    trio.wait_for_count(&[1, 2, 3], kept.len()).await;
    let caught_up = trio.replica(behind);
    // It could only have caught up through the snapshot: the log before it is gone.
    assert!(caught_up.raft.metrics().borrow().snapshot.is_some());
    assert!(caught_up.state.with_ledger(|l| l.enqueued_total) >= 800);
    for (offset, number) in kept {
        assert_eq!(
            caught_up.state.record(offset).unwrap(),
            Some(format!("message {number}").into_bytes())
        );
    }
}
