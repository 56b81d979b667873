//! queue.declare, queue.delete and queue.purge on a vhost: RabbitMQ's checks and texts,
//! exclusive and auto-delete queues, the vhost's queue limit, and what a deleted queue
//! takes with it.

use std::collections::HashMap;
use std::sync::Arc;

use wharf_amqp::{ByteString, FieldTable};
use wharf_store::{Change, QueueDef};

use super::{check_arguments, generated_queue_name, inequivalent, QueueHistory, VHost};
use crate::durability;
use crate::error::{Error, Result};
use crate::exchange::Destination;
use crate::queue::{ConnectionId, Queue, QueueOptions, QueueStats};
use crate::queue_arguments::QueueSettings;

/// The arguments of queue.declare.
#[derive(Debug, Clone, Default)]
pub struct QueueDeclare {
    /// Empty: the broker names the queue.
    pub name: ByteString,
    /// `name` was made by [`generated_queue_name`] for a client that asked for a
    /// server-named queue (so its reserved prefix is allowed).
    pub server_named: bool,
    pub passive: bool,
    pub durable: bool,
    pub exclusive: bool,
    pub auto_delete: bool,
    pub arguments: FieldTable,
}

pub struct QueueDeclared {
    pub name: ByteString,
    /// The queue, when it lives on this node (on a cluster, it may live on another).
    pub queue: Option<Arc<Queue>>,
    pub message_count: u32,
    pub consumer_count: u32,
}

impl VHost {
    pub fn declare_queue(
        &self,
        declare: QueueDeclare,
        connection: ConnectionId,
    ) -> Result<QueueDeclared> {
        self.declare_queue_checked(declare, connection, || Ok(()))
    }

    /// `declare_queue`, with `may_create` asked (under the lock that makes the queue) before
    /// a queue is made: its dead-letter exchange's permissions.
    pub fn declare_queue_checked(
        &self,
        declare: QueueDeclare,
        connection: ConnectionId,
        may_create: impl FnOnce() -> Result<()>,
    ) -> Result<QueueDeclared> {
        if declare.passive {
            // A passive declare with an empty name refers to no queue at all.
            if let Some(remote) = self.remote_queue(&declare.name) {
                remote.check_owner(connection)?;
                return self.declared_remote(&remote);
            }
            let queue = self.queue_for(&declare.name, connection)?;
            return Ok(self.declared(queue));
        }
        // As RabbitMQ, before anything else and whether or not the queue exists: only the
        // broker makes `amq.` queues, and a client may not redeclare one (not even its own
        // server-named queue) to learn its counts.
        if declare.name.starts_with("amq.") && !declare.server_named {
            return Err(Error::access_refused(format_args!(
                "queue name '{}' contains reserved prefix 'amq.*'",
                declare.name
            )));
        }
        if let Err(error) = QueueSettings::from_arguments(&declare.arguments) {
            return Err(Error::precondition(
                error.describe(&declare.name, &self.name),
            ));
        }
        let quorum = crate::queue_arguments::queue_type(&declare.arguments) == "quorum";
        if quorum {
            self.check_quorum_declare(&declare)?;
        }
        if let Some(cluster) = self.cluster.get() {
            return self.propose_queue(cluster.as_ref(), declare, connection, may_create);
        }
        let mut queues = self.queues.write();
        if let Some(existing) = queues.get(&declare.name) {
            existing.check_owner(connection)?;
            self.check_queue_equivalent(&declare, &existing.options)?;
            let existing = existing.clone();
            drop(queues);
            return Ok(self.declared(existing));
        }
        may_create()?;
        let name = if declare.name.is_empty() {
            generated_queue_name()
        } else {
            declare.name
        };
        self.check_queue_limit(&name, queues.len())?;
        let options = QueueOptions {
            durable: declare.durable,
            exclusive_owner: declare.exclusive.then_some(connection),
            auto_delete: declare.auto_delete,
            arguments: declare.arguments,
        };
        let queue = self.create_queue(&mut queues, name, options)?;
        drop(queues);
        self.queue_created(&queue);
        Ok(self.declared(queue))
    }

    /// What queue.declare-ok tells of a queue; a declare, passive or not, counts as a use
    /// for x-expires.
    pub(super) fn declared(&self, queue: Arc<Queue>) -> QueueDeclared {
        self.history.lock().declared += 1;
        queue.touch();
        QueueDeclared {
            name: queue.name.clone(),
            message_count: queue.message_count(),
            consumer_count: queue.consumer_count(),
            queue: Some(queue),
        }
    }

    /// Refuses a declare that does not match the existing queue, as RabbitMQ does.
    pub(super) fn check_queue_equivalent(
        &self,
        declare: &QueueDeclare,
        options: &QueueOptions,
    ) -> Result<()> {
        let (name, vhost) = (&declare.name, &self.name);
        let check = |arg: &str, got: bool, current: bool| {
            if got == current {
                Ok(())
            } else {
                Err(inequivalent(
                    "queue",
                    name,
                    vhost,
                    arg,
                    &got.to_string(),
                    &current.to_string(),
                ))
            }
        };
        check("durable", declare.durable, options.durable)?;
        check(
            "exclusive",
            declare.exclusive,
            options.exclusive_owner.is_some(),
        )?;
        check("auto_delete", declare.auto_delete, options.auto_delete)?;
        check_arguments("queue", name, vhost, &declare.arguments, &options.arguments)
    }

    /// Only queues made now count against the vhost's limit.
    pub(super) fn check_queue_limit(&self, name: &str, queues: usize) -> Result<()> {
        if let Some(max) = self.limits.read().get(crate::limits::MAX_QUEUES) {
            if queues as u64 >= max {
                return Err(Error::precondition(format_args!(
                    "cannot declare queue '{name}': queue limit in vhost '{}' ({max}) is reached",
                    self.name
                )));
            }
        }
        Ok(())
    }

    /// The definition a queue is stored and replicated as.
    pub(super) fn queue_def(
        &self,
        name: &str,
        options: &QueueOptions,
        home: Option<&str>,
    ) -> QueueDef {
        QueueDef {
            vhost: self.name.to_string(),
            name: name.to_string(),
            auto_delete: options.auto_delete,
            arguments: durability::encode_arguments(&options.arguments),
            durable: options.durable,
            exclusive_owner: options.exclusive_owner,
            home: home.map(str::to_string),
            quorum: None,
        }
    }

    /// Makes a queue of this node, its log opened and its definition stored (a single
    /// node's declare, and its home node's once a cluster committed the declare). The
    /// caller holds the map and checked the name is free.
    pub(super) fn create_queue(
        &self,
        queues: &mut HashMap<ByteString, Arc<Queue>>,
        name: ByteString,
        options: QueueOptions,
    ) -> Result<Arc<Queue>> {
        let queue = Arc::new(Queue::new(
            name.clone(),
            self.name.clone(),
            options,
            self.queue_window,
            self.this.clone(),
        ));
        if let Some(durability) = &self.durability {
            if durability::is_durable_queue(&queue) {
                durability.attach_log(&queue, true)?;
            } else {
                queue.set_spill_dir(durability.spill_dir());
            }
        }
        if self.keeps(durability::is_durable_queue(&queue)) {
            let home = self.cluster.member();
            self.record(|| Change::PutQueue(self.queue_def(&name, &queue.options, home)))?;
        }
        queues.insert(name, queue.clone());
        Ok(queue)
    }

    /// What follows a queue's creation, outside the map's lock.
    pub(super) fn queue_created(&self, queue: &Arc<Queue>) {
        self.history.lock().created += 1;
        queue.apply_policy(self.policy_for_queue(&queue.name).as_ref());
    }

    /// Deletes a queue; returns how many ready messages it held. A missing queue is not an
    /// error (RabbitMQ answers delete-ok with a count of 0).
    pub fn delete_queue(
        &self,
        name: &str,
        connection: ConnectionId,
        if_unused: bool,
        if_empty: bool,
    ) -> Result<u32> {
        if let Some(cluster) = self.cluster.get() {
            let deleted = self.propose_queue_deletion(
                cluster.as_ref(),
                name,
                Some(connection),
                if_unused,
                if_empty,
            )?;
            return Ok(deleted.unwrap_or(0));
        }
        match self.remove_queue(name, Some(connection), if_unused, if_empty)? {
            Some(queue) => Ok(self.finish_queue_deletion(queue)),
            None => Ok(0),
        }
    }

    /// Deletes a queue for an administrator (`wharf ctl delete_queue`, the HTTP API): as
    /// queue.delete, an exclusive queue too, and a missing queue is a 404.
    pub fn delete_queue_as_administrator(
        &self,
        name: &str,
        if_unused: bool,
        if_empty: bool,
    ) -> Result<u32> {
        if let Some(cluster) = self.cluster.get() {
            return self
                .propose_queue_deletion(cluster.as_ref(), name, None, if_unused, if_empty)?
                .ok_or_else(|| self.no_queue(name));
        }
        match self.remove_queue(name, None, if_unused, if_empty)? {
            Some(queue) => Ok(self.finish_queue_deletion(queue)),
            None => Err(self.no_queue(name)),
        }
    }

    /// Takes a queue out of the vhost (its removal recorded first, if durable), after the
    /// owner check (when a connection asks) and the if-unused and if-empty checks.
    pub(super) fn remove_queue(
        &self,
        name: &str,
        connection: Option<ConnectionId>,
        if_unused: bool,
        if_empty: bool,
    ) -> Result<Option<Arc<Queue>>> {
        let queue = {
            let mut queues = self.queues.write();
            let Some(queue) = queues.get(name).cloned() else {
                return Ok(None);
            };
            if let Some(connection) = connection {
                queue.check_owner(connection)?;
            }
            queue.check_deletable(if_unused, if_empty)?;
            if self.keeps(durability::is_durable_queue(&queue)) {
                self.record(|| Change::DeleteQueue {
                    vhost: self.name.to_string(),
                    name: name.to_string(),
                })?;
            }
            queues.remove(name);
            self.retire_counters(&queue);
            queue
        };
        Ok(Some(queue))
    }

    /// Keeps a queue's counters in the vhost's history as it leaves the map, under the
    /// same write lock: a reader of the map and the history together
    /// ([`VHost::queues_and_history`]) sees its counts once, never twice or not at all.
    fn retire_counters(&self, queue: &Queue) {
        let counters = queue.stats().counters;
        let mut history = self.history.lock();
        history.deleted += 1;
        history.retired.add(&counters);
    }

    /// Every queue with its statistics, and the vhost's history, read together.
    pub fn queues_and_history(&self) -> (Vec<(Arc<Queue>, QueueStats)>, QueueHistory) {
        let queues = self.queues.read();
        let read = queues.values().map(|q| (q.clone(), q.stats())).collect();
        let history = *self.history.lock();
        (read, history)
    }

    /// Deletes `queue` if it is still the one registered under its name (auto-delete and
    /// exclusive queues go this way, without owner checks).
    /// On a cluster the deletion is committed in the background (every node removes the
    /// queue once it is), as this is called where nothing may wait: a connection closing,
    /// a consumer cancelled, a timer.
    pub fn delete_queue_instance(&self, queue: &Arc<Queue>) {
        if let Some(cluster) = self.cluster.get() {
            let leads = |name: &str| {
                self.quorum_queue(name)
                    .and_then(|q| q.engine())
                    .is_some_and(|engine| Arc::ptr_eq(&engine, queue))
            };
            if self
                .queues
                .read()
                .get(&queue.name)
                .is_some_and(|current| Arc::ptr_eq(current, queue))
                || leads(&queue.name)
            {
                cluster.commit_later(Change::DeleteQueue {
                    vhost: self.name.to_string(),
                    name: queue.name.to_string(),
                });
            }
            return;
        }
        let removed = {
            let mut queues = self.queues.write();
            match queues.get(&queue.name) {
                Some(current) if Arc::ptr_eq(current, queue) => {
                    if durability::is_durable_queue(queue) {
                        let _ = self.record(|| Change::DeleteQueue {
                            vhost: self.name.to_string(),
                            name: queue.name.to_string(),
                        });
                    }
                    let removed = queues.remove(&queue.name);
                    self.retire_counters(queue);
                    removed
                }
                _ => None,
            }
        };
        if let Some(queue) = removed {
            self.finish_queue_deletion(queue);
        }
    }

    pub(super) fn finish_queue_deletion(&self, queue: Arc<Queue>) -> u32 {
        let count = queue.mark_deleted();
        self.remove_bindings_to(&Destination::Queue(queue));
        count
    }

    pub fn purge_queue(&self, name: &str, connection: ConnectionId) -> Result<u32> {
        if let Some(remote) = self.remote_queue(name) {
            remote.check_owner(connection)?;
            return self.purge_remote(&remote);
        }
        Ok(self.queue_for(name, connection)?.purge())
    }
}
