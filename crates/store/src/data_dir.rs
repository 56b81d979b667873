//! The data directory: created on first start with a VERSION file, checked on every later
//! one, so that a directory that is not Wharf's, or was written by a newer Wharf, is refused
//! with a clear message rather than misread. Whoever opens it holds a lock on it (a broker
//! for its whole run, `wharf ctl` while it changes a stopped broker's definitions), so two
//! processes never write it at once.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Result, StoreError};

/// The on-disk format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
const VERSION_FILE: &str = "VERSION";
const LOCK_FILE: &str = "LOCK";
/// Where durable queues keep their messages, a directory each.
pub const QUEUES_DIR: &str = "queues";
/// Where durable delayed exchanges keep the messages they hold, a directory each.
pub const DELAYED_DIR: &str = "delayed";
const VERSION_PREFIX: &str = "wharf-data ";

#[derive(Debug, Clone)]
pub struct DataDir {
    path: PathBuf,
    /// Holds the lock while any clone of this lives.
    _lock: std::sync::Arc<fs::File>,
}

impl DataDir {
    /// Opens (creating if needed) the data directory at `path`.
    pub fn open(path: impl Into<PathBuf>) -> Result<DataDir> {
        let path = path.into();
        if !path.exists() {
            // It will hold password hashes and the control socket: the broker's user only.
            use std::os::unix::fs::DirBuilderExt;
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&path)
                .map_err(StoreError::io(&path))?;
        }
        let version_path = path.join(VERSION_FILE);
        match fs::read_to_string(&version_path) {
            Ok(text) => check_version(&path, &text)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let foreign = fs::read_dir(&path)
                    .map_err(StoreError::io(&path))?
                    .filter_map(|entry| entry.ok())
                    .map(|entry| entry.file_name().to_string_lossy().into_owned())
                    .find(|name| !name.starts_with('.'));
                if let Some(name) = foreign {
                    return Err(StoreError::NotWharf {
                        path,
                        reason: format!("it has no {VERSION_FILE} file but holds '{name}'"),
                    });
                }
                write_atomically(
                    &version_path,
                    format!("{VERSION_PREFIX}{FORMAT_VERSION}\n").as_bytes(),
                )?;
            }
            Err(e) => {
                return Err(StoreError::Io {
                    path: version_path,
                    source: e,
                })
            }
        }
        let lock = lock(&path)?;
        Ok(DataDir {
            path,
            _lock: std::sync::Arc::new(lock),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether any queue or delayed exchange has a directory of messages here.
    pub fn holds_messages(&self) -> Result<bool> {
        for sub in [QUEUES_DIR, DELAYED_DIR] {
            let dir = self.path.join(sub);
            match fs::read_dir(&dir) {
                Ok(mut entries) => {
                    if entries.next().is_some() {
                        return Ok(true);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(StoreError::Io {
                        path: dir,
                        source: e,
                    })
                }
            }
        }
        Ok(false)
    }
}

/// Takes the directory's lock, or says that another process has it.
fn lock(dir: &Path) -> Result<fs::File> {
    let path = dir.join(LOCK_FILE);
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(StoreError::io(&path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(StoreError::Locked {
            path: dir.to_path_buf(),
        }),
        Err(fs::TryLockError::Error(e)) => Err(StoreError::Io { path, source: e }),
    }
}

fn check_version(path: &Path, text: &str) -> Result<()> {
    let not_wharf = |reason: &str| StoreError::NotWharf {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let number = text
        .trim()
        .strip_prefix(VERSION_PREFIX)
        .ok_or_else(|| not_wharf("its VERSION file is not Wharf's"))?;
    let found: u32 = number
        .parse()
        .map_err(|_| not_wharf("its VERSION file has no version number"))?;
    if found > FORMAT_VERSION {
        return Err(StoreError::NewerFormat {
            path: path.to_path_buf(),
            found,
            supported: FORMAT_VERSION,
        });
    }
    Ok(())
}

/// Replaces `path` with `bytes` so that a crash leaves either the old or the new content:
/// write a temporary file, fsync it, rename it over, fsync the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let temp = path.with_extension("tmp");
    {
        let mut file = fs::File::create(&temp).map_err(StoreError::io(&temp))?;
        file.write_all(bytes).map_err(StoreError::io(&temp))?;
        file.sync_all().map_err(StoreError::io(&temp))?;
    }
    fs::rename(&temp, path).map_err(StoreError::io(path))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Makes a rename or a new file in `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::io(dir))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fresh directory under the system temp dir, removed on drop.
    pub struct TempDir(pub PathBuf);

    impl TempDir {
        pub fn new(name: &str) -> TempDir {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let path = std::env::temp_dir().join(format!(
                "wharf-store-{name}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&path);
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn creates_then_reopens() {
        let dir = TempDir::new("create");
        DataDir::open(&dir.0).unwrap();
        let text = fs::read_to_string(dir.0.join(VERSION_FILE)).unwrap();
        assert_eq!(text, format!("wharf-data {FORMAT_VERSION}\n"));
        DataDir::open(&dir.0).unwrap();
    }

    #[test]
    fn a_new_directory_is_the_owners_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new("mode");
        DataDir::open(&dir.0).unwrap();
        let mode = fs::metadata(&dir.0).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn one_opener_at_a_time() {
        let dir = TempDir::new("lock");
        let first = DataDir::open(&dir.0).unwrap();
        let err = DataDir::open(&dir.0).unwrap_err();
        assert!(matches!(err, StoreError::Locked { .. }), "{err}");
        assert!(err.to_string().contains("in use"), "{err}");
        let clone = first.clone();
        drop(first);
        assert!(DataDir::open(&dir.0).is_err(), "a clone still holds it");
        drop(clone);
        DataDir::open(&dir.0).unwrap();
    }

    #[test]
    fn refuses_a_foreign_directory() {
        let dir = TempDir::new("foreign");
        fs::create_dir_all(&dir.0).unwrap();
        fs::write(dir.0.join("mnesia"), b"x").unwrap();
        let err = DataDir::open(&dir.0).unwrap_err();
        assert!(matches!(err, StoreError::NotWharf { .. }), "{err}");
        assert!(err.to_string().contains("'mnesia'"), "{err}");

        fs::write(dir.0.join(VERSION_FILE), b"something else").unwrap();
        let err = DataDir::open(&dir.0).unwrap_err();
        assert!(err.to_string().contains("not Wharf's"), "{err}");
    }

    #[test]
    fn refuses_a_newer_format() {
        let dir = TempDir::new("newer");
        fs::create_dir_all(&dir.0).unwrap();
        fs::write(
            dir.0.join(VERSION_FILE),
            format!("wharf-data {}\n", FORMAT_VERSION + 1),
        )
        .unwrap();
        let err = DataDir::open(&dir.0).unwrap_err();
        assert!(
            matches!(err, StoreError::NewerFormat { found: 2, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("run a newer Wharf"), "{err}");
    }
}
