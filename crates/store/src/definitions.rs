//! Durable definitions: vhosts, users and their permissions, exchanges, queues, bindings
//! and policies that must survive a restart.
//! Changes are appended to a log (one JSON object a line) and fsynced before the client is
//! answered; at open, the snapshot and the log are replayed, then compacted into a new
//! snapshot written atomically. A torn last line (a crash mid-append) is dropped and
//! logged: its change was never acknowledged to a client.
//!
//! Arguments are opaque bytes here (the core stores AMQP-encoded field tables): the store
//! knows nothing of AMQP.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::data_dir::{sync_dir, write_atomically, DataDir};
use crate::error::{Result, StoreError};

const SNAPSHOT_FILE: &str = "definitions.json";
const LOG_FILE: &str = "definitions.log";
/// Compact when the log holds this many changes.
const LOG_ENTRIES_MAX: usize = 10_000;

mod opaque {
    use super::*;

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExchangeDef {
    pub vhost: String,
    pub name: String,
    pub kind: String,
    pub auto_delete: bool,
    pub internal: bool,
    #[serde(with = "opaque")]
    pub arguments: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueDef {
    pub vhost: String,
    pub name: String,
    pub auto_delete: bool,
    #[serde(with = "opaque")]
    pub arguments: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DestinationKind {
    Queue,
    Exchange,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BindingDef {
    pub vhost: String,
    pub source: String,
    pub destination: String,
    pub destination_kind: DestinationKind,
    pub routing_key: String,
    #[serde(with = "opaque")]
    pub arguments: Vec<u8>,
}

/// A policy: arguments applied to the queues and exchanges whose names match a pattern.
/// The definition is JSON text, as given (the store does not read it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyDef {
    pub vhost: String,
    pub name: String,
    pub pattern: String,
    pub apply_to: String,
    pub definition: String,
    pub priority: i64,
}

/// A user. The password is kept as RabbitMQ keeps it: `password_hash` is base64 of a
/// 4-byte salt and the digest of salt ++ password (empty: no password, certificate login
/// only); `hashing_algorithm` names the digest as RabbitMQ does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserDef {
    pub name: String,
    pub password_hash: String,
    pub hashing_algorithm: String,
    pub tags: Vec<String>,
    /// max-connections, max-channels (absent: no limit).
    #[serde(default)]
    pub limits: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VhostDef {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// max-connections, max-queues (absent: no limit).
    #[serde(default)]
    pub limits: BTreeMap<String, u64>,
}

/// What a user may do in a vhost: regular expressions over resource names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PermissionDef {
    pub user: String,
    pub vhost: String,
    pub configure: String,
    pub write: String,
    pub read: String,
}

/// What routing keys a user may publish with (write) and bind with (read) on a topic
/// exchange of a vhost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicPermissionDef {
    pub user: String,
    pub vhost: String,
    pub exchange: String,
    pub write: String,
    pub read: String,
}

/// One change to the durable definitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    PutExchange(ExchangeDef),
    DeleteExchange {
        vhost: String,
        name: String,
    },
    PutQueue(QueueDef),
    DeleteQueue {
        vhost: String,
        name: String,
    },
    PutBinding(BindingDef),
    DeleteBinding(BindingDef),
    PutPolicy(PolicyDef),
    DeletePolicy {
        vhost: String,
        name: String,
    },
    PutUser(UserDef),
    /// Also removes the user's permissions.
    DeleteUser {
        name: String,
    },
    PutVhost(VhostDef),
    /// Also removes everything in the vhost and every permission on it.
    DeleteVhost {
        name: String,
    },
    PutPermission(PermissionDef),
    DeletePermission {
        user: String,
        vhost: String,
    },
    PutTopicPermission(TopicPermissionDef),
    /// `exchange` None: the user's topic permissions on every exchange of the vhost.
    DeleteTopicPermission {
        user: String,
        vhost: String,
        exchange: Option<String>,
    },
    /// The default vhost and user were created (once, on the first start).
    Seeded,
}

/// Every durable definition, as of the last change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Definitions {
    pub exchanges: Vec<ExchangeDef>,
    pub queues: Vec<QueueDef>,
    pub bindings: Vec<BindingDef>,
    /// (Absent from snapshots written before policies existed; the same for every field
    /// below, added with access control.)
    #[serde(default)]
    pub policies: Vec<PolicyDef>,
    #[serde(default)]
    pub vhosts: Vec<VhostDef>,
    #[serde(default)]
    pub users: Vec<UserDef>,
    #[serde(default)]
    pub permissions: Vec<PermissionDef>,
    #[serde(default)]
    pub topic_permissions: Vec<TopicPermissionDef>,
    /// Whether the default vhost and user were created: they are created once, so that
    /// deleting them is not undone by a restart.
    #[serde(default)]
    pub seeded: bool,
}

/// The definitions being replayed, keyed for fast changes.
#[derive(Default)]
struct State {
    exchanges: BTreeMap<(String, String), ExchangeDef>,
    queues: BTreeMap<(String, String), QueueDef>,
    bindings: BTreeMap<BindingDef, ()>,
    policies: BTreeMap<(String, String), PolicyDef>,
    vhosts: BTreeMap<String, VhostDef>,
    users: BTreeMap<String, UserDef>,
    /// By (vhost, user).
    permissions: BTreeMap<(String, String), PermissionDef>,
    /// By (vhost, user, exchange).
    topic_permissions: BTreeMap<(String, String, String), TopicPermissionDef>,
    seeded: bool,
}

impl State {
    fn from_definitions(defs: Definitions) -> State {
        let mut state = State::default();
        for e in defs.exchanges {
            state.apply(Change::PutExchange(e));
        }
        for q in defs.queues {
            state.apply(Change::PutQueue(q));
        }
        for b in defs.bindings {
            state.apply(Change::PutBinding(b));
        }
        for p in defs.policies {
            state.apply(Change::PutPolicy(p));
        }
        for v in defs.vhosts {
            state.apply(Change::PutVhost(v));
        }
        for u in defs.users {
            state.apply(Change::PutUser(u));
        }
        for p in defs.permissions {
            state.apply(Change::PutPermission(p));
        }
        for p in defs.topic_permissions {
            state.apply(Change::PutTopicPermission(p));
        }
        state.seeded = defs.seeded;
        state
    }

    fn apply(&mut self, change: Change) {
        match change {
            Change::PutExchange(e) => {
                self.exchanges.insert((e.vhost.clone(), e.name.clone()), e);
            }
            Change::DeleteExchange { vhost, name } => {
                self.bindings.retain(|b, _| {
                    !(b.vhost == vhost
                        && (b.source == name
                            || (b.destination_kind == DestinationKind::Exchange
                                && b.destination == name)))
                });
                self.exchanges.remove(&(vhost, name));
            }
            Change::PutQueue(q) => {
                self.queues.insert((q.vhost.clone(), q.name.clone()), q);
            }
            Change::DeleteQueue { vhost, name } => {
                self.bindings.retain(|b, _| {
                    !(b.vhost == vhost
                        && b.destination_kind == DestinationKind::Queue
                        && b.destination == name)
                });
                self.queues.remove(&(vhost, name));
            }
            Change::PutBinding(b) => {
                self.bindings.insert(b, ());
            }
            Change::DeleteBinding(b) => {
                self.bindings.remove(&b);
            }
            Change::PutPolicy(p) => {
                self.policies.insert((p.vhost.clone(), p.name.clone()), p);
            }
            Change::DeletePolicy { vhost, name } => {
                self.policies.remove(&(vhost, name));
            }
            Change::PutUser(u) => {
                self.users.insert(u.name.clone(), u);
            }
            Change::DeleteUser { name } => {
                self.permissions.retain(|(_, user), _| *user != name);
                self.topic_permissions
                    .retain(|(_, user, _), _| *user != name);
                self.users.remove(&name);
            }
            Change::PutVhost(v) => {
                self.vhosts.insert(v.name.clone(), v);
            }
            Change::DeleteVhost { name } => {
                self.exchanges.retain(|(vhost, _), _| *vhost != name);
                self.queues.retain(|(vhost, _), _| *vhost != name);
                self.bindings.retain(|b, _| b.vhost != name);
                self.policies.retain(|(vhost, _), _| *vhost != name);
                self.permissions.retain(|(vhost, _), _| *vhost != name);
                self.topic_permissions
                    .retain(|(vhost, _, _), _| *vhost != name);
                self.vhosts.remove(&name);
            }
            Change::PutPermission(p) => {
                self.permissions
                    .insert((p.vhost.clone(), p.user.clone()), p);
            }
            Change::DeletePermission { user, vhost } => {
                self.permissions.remove(&(vhost, user));
            }
            Change::PutTopicPermission(p) => {
                self.topic_permissions
                    .insert((p.vhost.clone(), p.user.clone(), p.exchange.clone()), p);
            }
            Change::DeleteTopicPermission {
                user,
                vhost,
                exchange,
            } => self.topic_permissions.retain(|(v, u, e), _| {
                !(*v == vhost && *u == user && exchange.as_ref().is_none_or(|x| x == e))
            }),
            Change::Seeded => self.seeded = true,
        }
    }

    fn to_definitions(&self) -> Definitions {
        Definitions {
            exchanges: self.exchanges.values().cloned().collect(),
            queues: self.queues.values().cloned().collect(),
            bindings: self.bindings.keys().cloned().collect(),
            policies: self.policies.values().cloned().collect(),
            vhosts: self.vhosts.values().cloned().collect(),
            users: self.users.values().cloned().collect(),
            permissions: self.permissions.values().cloned().collect(),
            topic_permissions: self.topic_permissions.values().cloned().collect(),
            seeded: self.seeded,
        }
    }
}

/// The durable definitions of one data directory. Owned by the broker; every durable
/// declare, delete, bind and unbind goes through [`DefinitionStore::record`].
pub struct DefinitionStore {
    dir: PathBuf,
    log: File,
    state: State,
    log_entries: usize,
    /// A failed append could not be taken back: the log may end in half a change, and a
    /// change recorded after it would be lost at the next start. No more are taken.
    log_damaged: bool,
}

impl DefinitionStore {
    /// Loads the definitions, compacts them, and opens the log for new changes.
    pub fn open(data_dir: &DataDir) -> Result<DefinitionStore> {
        let dir = data_dir.path().to_path_buf();
        let snapshot_path = dir.join(SNAPSHOT_FILE);
        let definitions = match fs::read(&snapshot_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                path: snapshot_path.clone(),
                offset: e.column() as u64,
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Definitions::default(),
            Err(e) => {
                return Err(StoreError::Io {
                    path: snapshot_path,
                    source: e,
                })
            }
        };
        let mut state = State::from_definitions(definitions);
        let log_path = dir.join(LOG_FILE);
        replay_log(&log_path, &mut state)?;
        let mut store = DefinitionStore {
            log: open_log(&log_path)?,
            dir,
            state,
            log_entries: 0,
            log_damaged: false,
        };
        store.compact()?;
        Ok(store)
    }

    pub fn definitions(&self) -> Definitions {
        self.state.to_definitions()
    }

    /// Appends a change and fsyncs it: once this returns, the change survives a crash.
    /// When it fails (a full disk), the change is not made and the log is as it was.
    pub fn record(&mut self, change: Change) -> Result<()> {
        let mut line = serde_json::to_vec(&change).expect("definitions serialize");
        line.push(b'\n');
        let log_path = self.dir.join(LOG_FILE);
        if self.log_damaged {
            return Err(StoreError::Io {
                path: log_path,
                source: std::io::Error::other(
                    "an earlier failed write could not be taken back; restart to go on",
                ),
            });
        }
        let before = self
            .log
            .metadata()
            .map_err(StoreError::io(&log_path))?
            .len();
        let appended = self
            .log
            .write_all(&line)
            .and_then(|()| self.log.sync_data());
        if let Err(error) = appended {
            // Half a change left at the end would, once a later change is appended after
            // it, stop the replay there. Take it back.
            let restored = self.log.set_len(before).and_then(|()| self.log.sync_data());
            if let Err(restore_error) = restored {
                tracing::error!(file = %log_path.display(), %error, %restore_error,
                    "a failed definitions change could not be taken back; no more changes until restart");
                self.log_damaged = true;
            }
            return Err(StoreError::Io {
                path: log_path,
                source: error,
            });
        }
        self.state.apply(change);
        self.log_entries += 1;
        if self.log_entries >= LOG_ENTRIES_MAX {
            // The change is recorded whatever becomes of this: a compaction that fails (a
            // full disk) leaves the log as it was, and the next change tries again.
            if let Err(error) = self.compact() {
                tracing::warn!(%error, "definitions not compacted; the log goes on");
            }
        }
        Ok(())
    }

    /// Writes the whole state as the new snapshot, then empties the log.
    fn compact(&mut self) -> Result<()> {
        let snapshot =
            serde_json::to_vec_pretty(&self.state.to_definitions()).expect("definitions serialize");
        write_atomically(&self.dir.join(SNAPSHOT_FILE), &snapshot)?;
        let log_path = self.dir.join(LOG_FILE);
        self.log.set_len(0).map_err(StoreError::io(&log_path))?;
        self.log.sync_all().map_err(StoreError::io(&log_path))?;
        self.log_entries = 0;
        Ok(())
    }
}

fn open_log(path: &Path) -> Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(StoreError::io(path))?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(file)
}

/// Applies every whole, valid line. A last line cut short (a crash while appending) is
/// dropped; a bad line with changes after it is an error, since going on without it, or
/// without what follows it, would silently undo changes (a deleted user's return).
fn replay_log(path: &Path, state: &mut State) -> Result<()> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(StoreError::Io {
                path: path.to_path_buf(),
                source: e,
            })
        }
    };
    let total = file.metadata().map_err(StoreError::io(path))?.len();
    let mut reader = BufReader::new(file);
    let mut offset = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .map_err(StoreError::io(path))?;
        if read == 0 {
            return Ok(());
        }
        let whole = line.last() == Some(&b'\n');
        match serde_json::from_slice::<Change>(&line) {
            Ok(change) if whole => state.apply(change),
            Err(error) if offset + (read as u64) < total => {
                return Err(StoreError::Corrupt {
                    path: path.to_path_buf(),
                    offset,
                    reason: format!(
                        "a damaged change ({error}) with {} bytes of changes after it; \
                         remove that line to start with the others",
                        total - offset - read as u64
                    ),
                });
            }
            _ => {
                tracing::warn!(
                    file = %path.display(),
                    offset,
                    dropped_bytes = total - offset,
                    "definitions log ends with an incomplete change; dropping it"
                );
                return Ok(());
            }
        }
        offset += read as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data_dir::tests::TempDir;

    fn exchange(name: &str) -> ExchangeDef {
        ExchangeDef {
            vhost: "/".into(),
            name: name.into(),
            kind: "topic".into(),
            auto_delete: false,
            internal: false,
            arguments: vec![0, 0, 0, 0],
        }
    }

    fn queue(name: &str) -> QueueDef {
        QueueDef {
            vhost: "/".into(),
            name: name.into(),
            auto_delete: false,
            arguments: vec![1, 2, 3, 0xff],
        }
    }

    fn binding(source: &str, queue: &str) -> BindingDef {
        BindingDef {
            vhost: "/".into(),
            source: source.into(),
            destination: queue.into(),
            destination_kind: DestinationKind::Queue,
            routing_key: "a.#".into(),
            arguments: vec![],
        }
    }

    #[test]
    fn changes_survive_reopen() {
        let dir = TempDir::new("defs");
        let data = DataDir::open(&dir.0).unwrap();
        {
            let mut store = DefinitionStore::open(&data).unwrap();
            store.record(Change::PutExchange(exchange("e"))).unwrap();
            store.record(Change::PutQueue(queue("q"))).unwrap();
            store.record(Change::PutQueue(queue("gone"))).unwrap();
            store.record(Change::PutBinding(binding("e", "q"))).unwrap();
            store
                .record(Change::PutBinding(binding("e", "gone")))
                .unwrap();
            store
                .record(Change::DeleteQueue {
                    vhost: "/".into(),
                    name: "gone".into(),
                })
                .unwrap();
        }
        let store = DefinitionStore::open(&data).unwrap();
        let defs = store.definitions();
        assert_eq!(defs.exchanges, vec![exchange("e")]);
        assert_eq!(defs.queues, vec![queue("q")]);
        assert_eq!(
            defs.bindings,
            vec![binding("e", "q")],
            "bindings of a deleted queue go"
        );
        // Reopening compacted the log into the snapshot.
        assert_eq!(fs::metadata(dir.0.join(LOG_FILE)).unwrap().len(), 0);
    }

    #[test]
    fn policies_survive_reopen_and_snapshots_without_them_still_load() {
        let dir = TempDir::new("defs-policies");
        let data = DataDir::open(&dir.0).unwrap();
        let policy = PolicyDef {
            vhost: "/".into(),
            name: "ttl".into(),
            pattern: "^orders".into(),
            apply_to: "queues".into(),
            definition: r#"{"message-ttl":60000}"#.into(),
            priority: 1,
        };
        {
            let mut store = DefinitionStore::open(&data).unwrap();
            store.record(Change::PutPolicy(policy.clone())).unwrap();
            let mut other = policy.clone();
            other.name = "gone".into();
            store.record(Change::PutPolicy(other)).unwrap();
            store
                .record(Change::DeletePolicy {
                    vhost: "/".into(),
                    name: "gone".into(),
                })
                .unwrap();
        }
        let store = DefinitionStore::open(&data).unwrap();
        assert_eq!(store.definitions().policies, vec![policy]);
        let old: Definitions =
            serde_json::from_str(r#"{"exchanges":[],"queues":[],"bindings":[]}"#).unwrap();
        assert!(old.policies.is_empty());
    }

    fn permission(user: &str, vhost: &str) -> PermissionDef {
        PermissionDef {
            user: user.into(),
            vhost: vhost.into(),
            configure: ".*".into(),
            write: ".*".into(),
            read: "^$".into(),
        }
    }

    fn topic_permission(user: &str, vhost: &str, exchange: &str) -> TopicPermissionDef {
        TopicPermissionDef {
            user: user.into(),
            vhost: vhost.into(),
            exchange: exchange.into(),
            write: "^a".into(),
            read: ".*".into(),
        }
    }

    #[test]
    fn access_control_survives_reopen_and_deletions_cascade() {
        let dir = TempDir::new("defs-access");
        let data = DataDir::open(&dir.0).unwrap();
        let user = |name: &str| UserDef {
            name: name.into(),
            password_hash: "AQIDBA==".into(),
            hashing_algorithm: "rabbit_password_hashing_sha256".into(),
            tags: vec!["administrator".into()],
            limits: BTreeMap::from([("max-channels".to_string(), 5)]),
        };
        {
            let mut store = DefinitionStore::open(&data).unwrap();
            assert!(!store.definitions().seeded);
            store.record(Change::Seeded).unwrap();
            for vhost in ["/", "other"] {
                store
                    .record(Change::PutVhost(VhostDef {
                        name: vhost.into(),
                        description: String::new(),
                        tags: vec![],
                        limits: BTreeMap::new(),
                    }))
                    .unwrap();
            }
            store.record(Change::PutUser(user("alice"))).unwrap();
            store.record(Change::PutUser(user("bob"))).unwrap();
            for (u, v) in [("alice", "/"), ("alice", "other"), ("bob", "other")] {
                store
                    .record(Change::PutPermission(permission(u, v)))
                    .unwrap();
                for x in ["amq.topic", "t2"] {
                    store
                        .record(Change::PutTopicPermission(topic_permission(u, v, x)))
                        .unwrap();
                }
            }
            let mut other_queue = queue("q");
            other_queue.vhost = "other".into();
            store.record(Change::PutQueue(other_queue)).unwrap();
            store.record(Change::PutQueue(queue("q"))).unwrap();
            store
                .record(Change::DeleteVhost {
                    name: "other".into(),
                })
                .unwrap();
            store
                .record(Change::DeleteTopicPermission {
                    user: "alice".into(),
                    vhost: "/".into(),
                    exchange: Some("t2".into()),
                })
                .unwrap();
            store
                .record(Change::DeleteUser { name: "bob".into() })
                .unwrap();
        }
        let defs = DefinitionStore::open(&data).unwrap().definitions();
        assert!(defs.seeded);
        let names = |v: &[VhostDef]| v.iter().map(|v| v.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&defs.vhosts), vec!["/"]);
        assert_eq!(defs.users, vec![user("alice")]);
        assert_eq!(defs.permissions, vec![permission("alice", "/")]);
        assert_eq!(
            defs.topic_permissions,
            vec![topic_permission("alice", "/", "amq.topic")]
        );
        assert_eq!(
            defs.queues,
            vec![queue("q")],
            "the deleted vhost's queue went"
        );
    }

    #[test]
    fn deleting_an_exchange_removes_its_bindings() {
        let dir = TempDir::new("defs-ex");
        let data = DataDir::open(&dir.0).unwrap();
        let mut store = DefinitionStore::open(&data).unwrap();
        store.record(Change::PutExchange(exchange("e"))).unwrap();
        store.record(Change::PutQueue(queue("q"))).unwrap();
        store.record(Change::PutBinding(binding("e", "q"))).unwrap();
        store
            .record(Change::DeleteExchange {
                vhost: "/".into(),
                name: "e".into(),
            })
            .unwrap();
        assert!(store.definitions().bindings.is_empty());
        assert_eq!(store.definitions().queues.len(), 1);
    }

    #[test]
    fn a_torn_last_line_is_dropped() {
        let dir = TempDir::new("defs-torn");
        let data = DataDir::open(&dir.0).unwrap();
        {
            let mut store = DefinitionStore::open(&data).unwrap();
            store.record(Change::PutQueue(queue("kept"))).unwrap();
        }
        // Simulate a crash in the middle of appending a second change.
        let mut line = serde_json::to_vec(&Change::PutQueue(queue("torn"))).unwrap();
        line.truncate(line.len() / 2);
        let mut log = OpenOptions::new()
            .append(true)
            .open(dir.0.join(LOG_FILE))
            .unwrap();
        log.write_all(&line).unwrap();
        drop(log);
        let store = DefinitionStore::open(&data).unwrap();
        let names: Vec<String> = store
            .definitions()
            .queues
            .into_iter()
            .map(|q| q.name)
            .collect();
        assert_eq!(names, vec!["kept".to_string()]);
    }

    #[test]
    fn a_damaged_line_with_changes_after_it_is_an_error() {
        let dir = TempDir::new("defs-damaged");
        let data = DataDir::open(&dir.0).unwrap();
        {
            let mut store = DefinitionStore::open(&data).unwrap();
            store.record(Change::PutQueue(queue("first"))).unwrap();
        }
        let mut log = OpenOptions::new()
            .append(true)
            .open(dir.0.join(LOG_FILE))
            .unwrap();
        // A whole line that is not a change (a damaged disk block), then a good one.
        log.write_all(b"{\"PutQueue\": garbage}\n").unwrap();
        let mut later = serde_json::to_vec(&Change::DeleteQueue {
            vhost: "/".into(),
            name: "first".into(),
        })
        .unwrap();
        later.push(b'\n');
        log.write_all(&later).unwrap();
        drop(log);
        let error = DefinitionStore::open(&data).err().expect("refused");
        let text = error.to_string();
        assert!(
            text.contains(LOG_FILE) && text.contains("corrupt at byte"),
            "{text}"
        );
    }

    #[test]
    fn a_failed_append_changes_nothing_and_one_not_taken_back_stops_changes() {
        let dir = TempDir::new("defs-failed-append");
        let data = DataDir::open(&dir.0).unwrap();
        let mut store = DefinitionStore::open(&data).unwrap();
        store.record(Change::PutQueue(queue("kept"))).unwrap();
        // A log that can be neither written nor truncated: the append fails, and so does
        // taking it back.
        store.log = File::open(dir.0.join(LOG_FILE)).unwrap();
        assert!(store.record(Change::PutQueue(queue("lost"))).is_err());
        let names = |store: &DefinitionStore| -> Vec<String> {
            store
                .definitions()
                .queues
                .into_iter()
                .map(|q| q.name)
                .collect()
        };
        assert_eq!(names(&store), vec!["kept".to_string()], "not applied");
        store.log = open_log(&dir.0.join(LOG_FILE)).unwrap();
        let error = store.record(Change::PutQueue(queue("later"))).unwrap_err();
        assert!(error.to_string().contains("restart"), "{error}");
        drop(store);
        let store = DefinitionStore::open(&data).unwrap();
        assert_eq!(names(&store), vec!["kept".to_string()]);
    }

    #[test]
    fn a_corrupt_snapshot_is_an_error_naming_the_file() {
        let dir = TempDir::new("defs-corrupt");
        let data = DataDir::open(&dir.0).unwrap();
        fs::write(dir.0.join(SNAPSHOT_FILE), b"{ not json").unwrap();
        let err = DefinitionStore::open(&data).err().expect("refused");
        assert!(err.to_string().contains(SNAPSHOT_FILE), "{err}");
    }

    #[test]
    fn compaction_keeps_everything() {
        let dir = TempDir::new("defs-compact");
        let data = DataDir::open(&dir.0).unwrap();
        let mut store = DefinitionStore::open(&data).unwrap();
        for i in 0..(LOG_ENTRIES_MAX + 5) {
            store
                .record(Change::PutQueue(queue(&format!("q{i}"))))
                .unwrap();
        }
        assert_eq!(store.log_entries, 5, "compacted once the log was full");
        drop(store);
        let store = DefinitionStore::open(&data).unwrap();
        assert_eq!(store.definitions().queues.len(), LOG_ENTRIES_MAX + 5);
    }
}
