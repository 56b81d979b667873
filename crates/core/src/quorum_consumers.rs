//! Consumers of quorum queues follow the leader. A channel's consumer of a quorum queue
//! is a subscription to the leader's node, as for any other node's queue (see
//! `remote_consumers`); when the leader moves (a committed move, or the former leader
//! letting its consumers go, or its node gone) the subscription registers again, with
//! the same key, on the new leader's node, and the channel's consumer goes on: no
//! basic.cancel. Deliveries the former leader made stay the channel's; their
//! acknowledgements reach the new leader, which settles the messages wherever they wait.
//!
//! Only a queue that is gone, or no leader found within [`FOLLOW_WAIT`], cancels the
//! consumer.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cluster::{Cluster, ConsumeRequest, LEADER_WAIT};
use crate::error::{ErrorKind, Result};
use crate::queue::remote::{RemoteQueue, Subscription};
use crate::vhost::VHost;

/// How long a consumer looks for its quorum queue's new leader before it is cancelled.
pub const FOLLOW_WAIT: Duration = Duration::from_secs(60);
/// The pause between two attempts.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Whether a refusal of a quorum queue's node may be a leader moving (rather than the
/// queue refusing the consumer).
fn leader_moving(kind: ErrorKind) -> bool {
    matches!(kind, ErrorKind::NotLeader | ErrorKind::NotFound)
}

impl VHost {
    /// Registers a consumer of a quorum queue on its leader's node, looking for the
    /// leader while it moves (up to [`LEADER_WAIT`]).
    pub(crate) fn consume_at_leader(
        &self,
        cluster: &dyn Cluster,
        remote: &RemoteQueue,
        subscription: &Subscription,
        request: ConsumeRequest,
    ) -> Result<()> {
        let deadline = Instant::now() + LEADER_WAIT;
        loop {
            let home = remote.home();
            subscription.set_home(&home);
            match cluster.consume(&home, request.clone()) {
                Ok(()) => return Ok(()),
                Err(error)
                    if leader_moving(error.kind)
                        && !remote.is_deleted()
                        && Instant::now() < deadline =>
                {
                    std::thread::sleep(RETRY_PAUSE);
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// The quorum queue `remote`'s leader moved: this node's consumers of it that
    /// consume elsewhere register again with the new leader.
    pub(crate) fn follow_quorum_queue(&self, remote: &Arc<RemoteQueue>) {
        let home = remote.home();
        let moved: Vec<Arc<Subscription>> = self
            .consuming
            .subscriptions
            .lock()
            .values()
            .filter_map(|weak| weak.upgrade())
            .filter(|s| {
                s.quorum
                    && s.vhost == self.name
                    && s.queue == remote.name
                    && s.home() != home
                    && !s.is_cancelled()
            })
            .collect();
        for subscription in moved {
            follow(subscription, remote.clone());
        }
    }

    /// A quorum queue's consumer was let go by the node it consumed from (the leader
    /// moved away from it, or the node is gone): it follows the leader. False when it is
    /// not a quorum queue's, or the queue is gone (it is cancelled then, as others are).
    pub(crate) fn keep_following(&self, subscription: &Arc<Subscription>) -> bool {
        if !subscription.quorum {
            return false;
        }
        let Some(remote) = self
            .remote_queue(&subscription.queue)
            .filter(|r| r.quorum && !r.is_deleted())
        else {
            return false;
        };
        follow(subscription.clone(), remote);
        true
    }
}

/// Registers `subscription` again with `remote`'s leader, in the background, retrying
/// while the leader is being elected or its move committed.
fn follow(subscription: Arc<Subscription>, remote: Arc<RemoteQueue>) {
    if subscription.following.swap(true, Ordering::AcqRel) {
        return;
    }
    let Some(request) = subscription.request() else {
        subscription.following.store(false, Ordering::Release);
        return;
    };
    let spawned = std::thread::Builder::new()
        .name("wharf-follow".to_string())
        .spawn(move || {
            let deadline = Instant::now() + FOLLOW_WAIT;
            let cluster = subscription.cluster().clone();
            loop {
                if subscription.is_cancelled() {
                    break;
                }
                if remote.is_deleted() {
                    subscription.cancelled_there();
                    break;
                }
                let home = remote.home();
                subscription.set_home(&home);
                match cluster.consume(&home, request.clone()) {
                    Ok(()) => {
                        tracing::debug!(queue = %remote.name, leader = home, "a consumer follows its quorum queue's leader");
                        subscription.following.store(false, Ordering::Release);
                        subscription.offer();
                        return;
                    }
                    Err(error) if leader_moving(error.kind) && Instant::now() < deadline => {
                        std::thread::sleep(RETRY_PAUSE);
                    }
                    Err(error) => {
                        tracing::warn!(queue = %remote.name, %error, "a consumer of a quorum queue found no leader; cancelled");
                        subscription.cancelled_there();
                        break;
                    }
                }
            }
            subscription.following.store(false, Ordering::Release);
        });
    if spawned.is_err() {
        tracing::error!("cannot start a thread to follow a quorum queue's leader");
    }
}
