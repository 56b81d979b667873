//! Durable definitions: exchanges, queues, bindings and policies that must survive a
//! restart.
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

/// One change to the durable definitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    PutExchange(ExchangeDef),
    DeleteExchange { vhost: String, name: String },
    PutQueue(QueueDef),
    DeleteQueue { vhost: String, name: String },
    PutBinding(BindingDef),
    DeleteBinding(BindingDef),
    PutPolicy(PolicyDef),
    DeletePolicy { vhost: String, name: String },
}

/// Every durable definition, as of the last change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Definitions {
    pub exchanges: Vec<ExchangeDef>,
    pub queues: Vec<QueueDef>,
    pub bindings: Vec<BindingDef>,
    /// (Absent from snapshots written before policies existed.)
    #[serde(default)]
    pub policies: Vec<PolicyDef>,
}

/// The definitions being replayed, keyed for fast changes.
#[derive(Default)]
struct State {
    exchanges: BTreeMap<(String, String), ExchangeDef>,
    queues: BTreeMap<(String, String), QueueDef>,
    bindings: BTreeMap<BindingDef, ()>,
    policies: BTreeMap<(String, String), PolicyDef>,
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
        }
    }

    fn to_definitions(&self) -> Definitions {
        Definitions {
            exchanges: self.exchanges.values().cloned().collect(),
            queues: self.queues.values().cloned().collect(),
            bindings: self.bindings.keys().cloned().collect(),
            policies: self.policies.values().cloned().collect(),
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
        };
        store.compact()?;
        Ok(store)
    }

    pub fn definitions(&self) -> Definitions {
        self.state.to_definitions()
    }

    /// Appends a change and fsyncs it: once this returns, the change survives a crash.
    pub fn record(&mut self, change: Change) -> Result<()> {
        let mut line = serde_json::to_vec(&change).expect("definitions serialize");
        line.push(b'\n');
        let log_path = self.dir.join(LOG_FILE);
        self.log
            .write_all(&line)
            .map_err(StoreError::io(&log_path))?;
        self.log.sync_data().map_err(StoreError::io(&log_path))?;
        self.state.apply(change);
        self.log_entries += 1;
        if self.log_entries >= LOG_ENTRIES_MAX {
            self.compact()?;
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

/// Applies every whole, valid line; stops at the first that is not (a torn append).
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
