//! Durable definitions: vhosts, users and their permissions, exchanges, queues, bindings
//! and policies that must survive a restart.
//!
//! Changes are appended to a log (one checksummed change a line, [`log`]) and fsynced
//! before the client is answered; at open, the snapshot ([`snapshot`], checksummed too)
//! and the log are replayed, and compacted into a new snapshot written atomically when the
//! log had changes. Nothing is written when nothing changed, so a broker starts on a full
//! disk. A torn last line (a crash mid-append) is dropped and logged: its change was never
//! acknowledged to a client. Any other damage, and a missing snapshot in a directory that
//! holds data, refuse the start with the file and the byte offset, unless the operator
//! forces recovery ([`Recovery::Force`]), which keeps a copy of each damaged file, goes on
//! with what reads, and logs what was lost.
//!
//! Arguments are opaque bytes here (the core stores AMQP-encoded field tables): the store
//! knows nothing of AMQP.

mod diff;
mod log;
mod model;
mod snapshot;
mod state;
#[cfg(test)]
mod tests;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

pub use model::*;
use snapshot::Snapshot;
pub use state::State as DefinitionState;
use state::State;

use crate::data_dir::{sync_dir, write_atomically, DataDir};
use crate::error::{Result, StoreError};

const SNAPSHOT_FILE: &str = "definitions.json";
const LOG_FILE: &str = "definitions.log";
/// Compact when the log holds this many changes.
const LOG_ENTRIES_MAX: usize = 10_000;

/// What to do with damaged definitions at open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Recovery {
    /// Refuse to start, naming the file and the offset of the damage.
    #[default]
    Refuse,
    /// Start with what still reads: keep a copy of each damaged file beside it, skip what
    /// does not read, and log every loss.
    Force,
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
    /// Loads the definitions, refusing damaged ones.
    pub fn open(data_dir: &DataDir) -> Result<DefinitionStore> {
        Self::open_with(data_dir, Recovery::Refuse)
    }

    /// Loads the definitions, compacts them if the log had changes, and opens the log for
    /// new ones.
    pub fn open_with(data_dir: &DataDir, recovery: Recovery) -> Result<DefinitionStore> {
        let dir = data_dir.path().to_path_buf();
        let snapshot_path = dir.join(SNAPSHOT_FILE);
        let log_path = dir.join(LOG_FILE);
        let snapshot = snapshot::read(&snapshot_path, recovery)?;
        let log_exists = match std::fs::metadata(&log_path) {
            Ok(_) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => {
                return Err(StoreError::Io {
                    path: log_path,
                    source: e,
                })
            }
        };
        // A directory is new only when it holds nothing at all: the first start writes a
        // snapshot before it creates the log (below), so a log, even an empty one, or a
        // queue's messages without a snapshot mean the snapshot was lost.
        let fresh =
            matches!(snapshot, Snapshot::Missing) && !log_exists && !data_dir.holds_messages()?;
        let (definitions, checked) = match snapshot {
            Snapshot::Checked(definitions) => (definitions, true),
            Snapshot::Unchecked(definitions) => (definitions, false),
            Snapshot::Missing if fresh => (Definitions::default(), false),
            Snapshot::Missing => {
                let reason = "there is no definitions snapshot, yet the directory holds data \
                              (a definitions log, or queues' messages): it was lost, and starting \
                              without it would drop every queue, exchange and user";
                if recovery != Recovery::Force {
                    return Err(StoreError::Damaged {
                        path: snapshot_path,
                        reason: reason.to_string(),
                    });
                }
                tracing::error!(file = %snapshot_path.display(), reason,
                    "FORCED RECOVERY: starting with only the definitions logged since the last \
                     compaction; the default user is not created again (add users with `wharf ctl`)");
                // Seeded: a default user deleted long ago must not come back with its
                // well-known password.
                let definitions = Definitions {
                    seeded: true,
                    ..Definitions::default()
                };
                (definitions, false)
            }
        };
        let mut state = State::from_definitions(definitions);
        let replay = log::replay(&log_path, &mut state, recovery)?;
        if fresh {
            write_atomically(&snapshot_path, &snapshot::encode(&state.to_definitions()))?;
        }
        let log = open_log(&log_path)?;
        if replay.valid_bytes < replay.total_bytes && replay.skipped == 0 {
            // Cut the torn tail now: a change appended after it would be unreadable. This
            // only shrinks the file, so it works on a full disk.
            log.set_len(replay.valid_bytes)
                .and_then(|()| log.sync_all())
                .map_err(StoreError::io(&log_path))?;
        }
        let mut store = DefinitionStore {
            log,
            dir,
            state,
            log_entries: replay.entries + replay.skipped,
            log_damaged: false,
        };
        if fresh || !checked || store.log_entries > 0 {
            match store.compact() {
                Ok(()) => {}
                // The first snapshot must exist before anything is logged (see `fresh`).
                Err(error) if fresh || replay.skipped > 0 => return Err(error),
                // A full disk: start anyway, with the log as it is, and compact later.
                Err(error) => {
                    tracing::warn!(%error, "definitions not compacted at start; the log goes on")
                }
            }
        }
        Ok(store)
    }

    pub fn definitions(&self) -> Definitions {
        self.state.to_definitions()
    }

    /// Appends a change and fsyncs it: once this returns, the change survives a crash.
    /// When it fails (a full disk), the change is not made and the log is as it was.
    pub fn record(&mut self, change: Change) -> Result<()> {
        let line = log::encode(&change);
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

    /// Replaces every definition with `definitions`, written as the new snapshot (a
    /// cluster node that installed the cluster's snapshot mirrors it so).
    pub fn replace(&mut self, definitions: Definitions) -> Result<()> {
        self.state = State::from_definitions(definitions);
        self.compact()
    }

    /// Writes the whole state as the new snapshot, then empties the log.
    fn compact(&mut self) -> Result<()> {
        let snapshot = snapshot::encode(&self.state.to_definitions());
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

/// Keeps a copy of a damaged file beside it (`<name>.damaged-<unix seconds>`) before
/// recovery goes on without its damage. A copy that cannot be made is logged, not fatal:
/// the operator asked to go on.
fn set_aside(path: &Path) {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".damaged-{seconds}"));
    let copy = path.with_file_name(name);
    match std::fs::copy(path, &copy) {
        Ok(_) => tracing::error!(file = %path.display(), copy = %copy.display(),
            "FORCED RECOVERY: a copy of the damaged file is kept"),
        Err(error) => tracing::error!(file = %path.display(), %error,
            "FORCED RECOVERY: the damaged file could not be copied aside"),
    }
}
