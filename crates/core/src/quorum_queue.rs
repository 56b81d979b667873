//! One quorum queue as a node sees it: its definition and members, the record routing
//! and bindings point at (a [`RemoteQueue`] whose home is the leader's node), this node's
//! replica when it is a member, and, while this node leads, the queue that delivers its
//! messages ([`Leading`]).
//!
//! Every client operation reaches the leader's node as it reaches any other node's queue
//! (forwarded publishes, remote consumers, queue requests; a node's own through its
//! cluster's loopback), so that a leader moving is one thing for all of them: the new
//! leader builds its queue from its ledger, the old one drops its own, and consumers
//! subscribe again to the new one.

use std::sync::{Arc, OnceLock, Weak};

use parking_lot::{Mutex, RwLock};
use wharf_amqp::ByteString;

use crate::flusher::SyncDone;
use crate::message::Message;
use crate::queue::quorum::Committed;
use crate::queue::remote::RemoteQueue;
use crate::queue::{Queue, QueueHost, QueueOptions, QuorumBacking, Window};
use crate::quorum::{
    offset_of, position_of, Applied, Command, Decisions, Records, Replica, ReplicatedQueue, Stored,
    MESSAGES_PER_ENTRY_MAX,
};

/// The most record bytes one enqueue entry carries.
const ENTRY_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Enqueue entries on their way to the group at once: while the first waits for its
/// fsyncs, the next ones are already written and sent.
const PUBLISHES_IN_FLIGHT: usize = 4;

pub struct QuorumQueue {
    pub name: ByteString,
    pub vhost: ByteString,
    pub group: u64,
    pub options: QueueOptions,
    /// What routing, bindings and consumers of every node hold: its home is the leader's
    /// node as last known.
    pub remote: Arc<RemoteQueue>,
    members: RwLock<Vec<String>>,
    replica: OnceLock<Arc<dyn Replica>>,
    leading: Mutex<Option<Arc<Leading>>>,
    window: Window,
    host: Weak<dyn QueueHost>,
}

/// This node leads the queue's group: the queue that delivers, and what it proposes.
struct Leading {
    engine: Arc<Queue>,
    /// Entries up to this index were in the ledger the engine was built from.
    built_at: u64,
    /// Entries up to this index are earlier leaders': their messages may have been
    /// delivered, and their settlements are not this leader's.
    takeover: u64,
    proposer: Arc<Proposer>,
}

impl std::fmt::Debug for QuorumQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "QuorumQueue('{}' in '{}', group {:x})",
            self.name, self.vhost, self.group
        )
    }
}

impl QuorumQueue {
    pub fn new(
        remote: Arc<RemoteQueue>,
        group: u64,
        members: Vec<String>,
        window: Window,
        host: Weak<dyn QueueHost>,
    ) -> QuorumQueue {
        QuorumQueue {
            name: remote.name.clone(),
            vhost: remote.vhost.clone(),
            group,
            options: remote.options.clone(),
            remote,
            members: RwLock::new(members),
            replica: OnceLock::new(),
            leading: Mutex::new(None),
            window,
            host,
        }
    }

    pub fn members(&self) -> Vec<String> {
        self.members.read().clone()
    }

    pub fn set_members(&self, members: Vec<String>) {
        *self.members.write() = members;
    }

    pub fn replica(&self) -> Option<&Arc<dyn Replica>> {
        self.replica.get()
    }

    /// The queue that delivers, while this node leads.
    pub fn engine(&self) -> Option<Arc<Queue>> {
        self.leading.lock().as_ref().map(|l| l.engine.clone())
    }

    /// Whether this node leads the queue now.
    pub fn leads(&self) -> bool {
        self.leading.lock().is_some()
    }

    /// Messages held by the group as this replica last applied it (ready and delivered).
    pub fn held(&self) -> Option<(usize, u64)> {
        let replica = self.replica.get()?;
        let mut counts = None;
        replica.with_ledger(&mut |ledger, _| counts = Some((ledger.len(), ledger.bytes())));
        counts
    }

    /// This node's replica now leads (`here`) or follows; `last_log_index` is the last
    /// entry of its log as leadership changed. A new leader builds its queue from the
    /// ledger; a former one drops its own (its consumers are told, and subscribe again
    /// to the new leader).
    fn lead_or_follow(&self, here: bool, last_log_index: u64) {
        let mut leading = self.leading.lock();
        match (here, leading.is_some()) {
            (true, false) => {
                let Some(replica) = self.replica.get().cloned() else {
                    return;
                };
                let engine = Arc::new(Queue::new(
                    self.name.clone(),
                    self.vhost.clone(),
                    self.options.clone(),
                    self.window,
                    self.host.clone(),
                ));
                let proposer = Arc::new(Proposer::new(replica.clone()));
                let records = Arc::new(GroupRecords {
                    replica: replica.clone(),
                    takeover: last_log_index,
                });
                let mut built_at = 0;
                let mut held = Vec::new();
                replica.with_ledger(&mut |ledger, applied| {
                    built_at = applied;
                    held = ledger
                        .messages()
                        .map(|(offset, stored)| (offset, u64::from(stored.bytes)))
                        .collect();
                });
                engine.lead_quorum(
                    QuorumBacking {
                        decisions: Arc::new(Decider(proposer.clone())),
                        records,
                    },
                    held,
                );
                if let Some(host) = self.host.upgrade() {
                    host.queue_started(&engine);
                }
                tracing::info!(queue = %self.name, vhost = %self.vhost, term_start = last_log_index, "this node leads the quorum queue");
                *leading = Some(Arc::new(Leading {
                    engine,
                    built_at,
                    takeover: last_log_index,
                    proposer,
                }));
            }
            (false, true) => {
                let Some(former) = leading.take() else {
                    return;
                };
                drop(leading);
                tracing::info!(queue = %self.name, vhost = %self.vhost, "this node no longer leads the quorum queue");
                former.proposer.stop();
                former.engine.mark_deleted();
            }
            _ => {}
        }
    }

    /// The queue is gone (deleted, or this node no longer a member): the queue that
    /// delivered goes without a word to the group.
    pub fn retire(&self) {
        if let Some(former) = self.leading.lock().take() {
            former.proposer.stop();
            former.engine.mark_deleted();
        }
    }

    /// An entry of the group was applied on this node's replica.
    fn take_applied(&self, index: u64, command: &Command) {
        let Some(leading) = self.leading.lock().clone() else {
            return;
        };
        if index <= leading.built_at {
            return;
        }
        match command {
            Command::Enqueue(records) => {
                let committed = records
                    .iter()
                    .enumerate()
                    .filter_map(|(position, record)| {
                        let (message, expires_at) = Message::decode_record_bytes(record.clone())?;
                        Some(Committed {
                            offset: offset_of(index, position),
                            message: Arc::new(message),
                            expires_at,
                            redelivered: index <= leading.takeover,
                        })
                    })
                    .collect();
                leading.engine.take_committed(committed);
            }
            // An earlier leader's settlements, committed since: the messages go.
            Command::Settle(offsets) if index <= leading.takeover => {
                leading.engine.forget_settled(offsets);
            }
            _ => {}
        }
    }

    /// A publish that reached the leader's node: proposed to the group, with the others
    /// that came meanwhile; `done` says whether the group took it (false on a node that
    /// does not lead, and for a queue at its limit under reject-publish).
    pub fn publish(&self, message: Arc<Message>, done: SyncDone) {
        let Some(leading) = self.leading.lock().clone() else {
            return done(false);
        };
        let (pending, pending_bytes) = leading.proposer.pending();
        if !leading.engine.admits(&message, pending, pending_bytes) {
            return done(false);
        }
        let expires_at = leading.engine.expiry_of(&message);
        let record = bytes::Bytes::from(message.encode_record(expires_at));
        leading
            .proposer
            .publish(record, message.body.len() as u64, done);
    }

    /// Acknowledgements a consumer sends for deliveries this leader does not know (an
    /// earlier leader made them): settled wherever the messages wait.
    pub fn settle_elsewhere(&self, offsets: &[u64]) {
        if let Some(engine) = self.engine() {
            engine.settle_elsewhere(offsets);
        }
    }
}

/// What a leader reads back from its group.
struct GroupRecords {
    replica: Arc<dyn Replica>,
    takeover: u64,
}

impl Records for GroupRecords {
    fn read(&self, offset: u64) -> Option<Stored> {
        let (record, held) = self.replica.read(offset)?;
        Some(Stored {
            record,
            returns: held.returns,
            redelivered: held.returns > 0 || position_of(offset).0 <= self.takeover,
        })
    }
}

/// A leader's proposals, batched: while one entry of a kind is on its way to the group,
/// the next gathers what comes meanwhile, so a busy queue writes few large entries.
struct Proposer {
    replica: Arc<dyn Replica>,
    state: Mutex<Proposals>,
}

#[derive(Default)]
struct Proposals {
    publishes: Vec<(bytes::Bytes, u64, SyncDone)>,
    /// Enqueue entries proposed and not yet answered.
    publishing: usize,
    /// Body bytes of the publishes not yet committed (waiting and on their way).
    pending_bytes: u64,
    pending: u64,
    settles: Vec<u64>,
    settling: bool,
    returns: Vec<u64>,
    returning: bool,
    stopped: bool,
}

impl Proposer {
    fn new(replica: Arc<dyn Replica>) -> Proposer {
        Proposer {
            replica,
            state: Mutex::new(Proposals::default()),
        }
    }

    fn pending(&self) -> (u64, u64) {
        let state = self.state.lock();
        (state.pending, state.pending_bytes)
    }

    /// No more proposals: what waits is refused.
    fn stop(&self) {
        let waiting = {
            let mut state = self.state.lock();
            state.stopped = true;
            state.settles.clear();
            state.returns.clear();
            std::mem::take(&mut state.publishes)
        };
        for (_, _, done) in waiting {
            done(false);
        }
    }

    fn publish(self: &Arc<Self>, record: bytes::Bytes, body_bytes: u64, done: SyncDone) {
        {
            let mut state = self.state.lock();
            if state.stopped {
                drop(state);
                return done(false);
            }
            state.pending += 1;
            state.pending_bytes += body_bytes;
            state.publishes.push((record, body_bytes, done));
            if state.publishing >= PUBLISHES_IN_FLIGHT {
                return;
            }
            state.publishing += 1;
        }
        self.propose_publishes();
    }

    /// Proposes what waits to be published, in one entry (up to its limits).
    fn propose_publishes(self: &Arc<Self>) {
        let batch: Vec<(bytes::Bytes, u64, SyncDone)> = {
            let mut state = self.state.lock();
            let mut bytes = 0;
            let count = state
                .publishes
                .iter()
                .take(MESSAGES_PER_ENTRY_MAX)
                .take_while(|(record, _, _)| {
                    bytes += record.len();
                    bytes <= ENTRY_BYTES_MAX
                })
                .count()
                .max(1)
                .min(state.publishes.len());
            if count == 0 {
                state.publishing -= 1;
                return;
            }
            state.publishes.drain(..count).collect()
        };
        let mut records = Vec::with_capacity(batch.len());
        let mut dones = Vec::with_capacity(batch.len());
        let mut bytes = 0;
        for (record, body_bytes, done) in batch {
            records.push(record);
            bytes += body_bytes;
            dones.push(done);
        }
        let count = dones.len() as u64;
        let this = self.clone();
        self.replica.propose(
            Command::Enqueue(records),
            Box::new(move |result| {
                {
                    let mut state = this.state.lock();
                    state.pending -= count;
                    state.pending_bytes -= bytes;
                }
                let taken = matches!(result, Ok(Applied::Enqueued { .. }));
                if let Err(reason) = &result {
                    tracing::debug!(reason, "publishes to a quorum queue not committed");
                }
                for done in dones {
                    done(taken);
                }
                this.propose_publishes();
            }),
        );
    }

    /// Proposes the settlements (or returns) that wait, in one entry.
    fn propose_offsets(self: &Arc<Self>, returns: bool) {
        let offsets = {
            let mut state = self.state.lock();
            let (waiting, busy) = if returns {
                (std::mem::take(&mut state.returns), &mut state.returning)
            } else {
                (std::mem::take(&mut state.settles), &mut state.settling)
            };
            if waiting.is_empty() {
                *busy = false;
                return;
            }
            waiting
        };
        let command = if returns {
            Command::Return(offsets)
        } else {
            Command::Settle(offsets)
        };
        let this = self.clone();
        self.replica.propose(
            command,
            Box::new(move |result| {
                if let Err(reason) = result {
                    // Not committed: the messages stay in the group, and a later leader
                    // delivers them again.
                    tracing::debug!(reason, "settlements of a quorum queue not committed");
                }
                this.propose_offsets(returns);
            }),
        );
    }

    fn decided(self: &Arc<Self>, offset: u64, returns: bool) {
        {
            let mut state = self.state.lock();
            if state.stopped {
                return;
            }
            let busy = if returns {
                state.returns.push(offset);
                std::mem::replace(&mut state.returning, true)
            } else {
                state.settles.push(offset);
                std::mem::replace(&mut state.settling, true)
            };
            if busy {
                return;
            }
        }
        self.propose_offsets(returns);
    }
}

/// The engine's decisions, into the proposer.
struct Decider(Arc<Proposer>);

impl Decisions for Decider {
    fn settled(&self, offset: u64) {
        self.0.decided(offset, false);
    }

    fn returned(&self, offset: u64) {
        self.0.decided(offset, true);
    }
}

impl ReplicatedQueue for QuorumQueue {
    fn group(&self) -> u64 {
        self.group
    }

    fn members(&self) -> Vec<String> {
        QuorumQueue::members(self)
    }

    fn attach_replica(&self, replica: Arc<dyn Replica>) {
        let _ = self.replica.set(replica);
    }

    fn applied(&self, index: u64, command: &Command) {
        self.take_applied(index, command);
    }

    fn leadership(&self, leader: Option<String>, here: bool, last_log_index: u64) -> bool {
        self.lead_or_follow(here, last_log_index);
        let Some(leader) = leader else {
            return false;
        };
        if self.remote.home() == leader {
            return false;
        }
        // Known here before the cluster's record says so: this node's clients go there
        // now (a new leader's own publishes to itself, without waiting for the record).
        self.remote.set_home(&leader);
        here
    }

    fn names(&self) -> (String, String) {
        (self.vhost.to_string(), self.name.to_string())
    }
}
