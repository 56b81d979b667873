//! The disk free space alarm: a task watches the free space of the data directory's file
//! system and, below the limit, raises the alarm; connections that publish are then
//! blocked (and told so with connection.blocked) until space returns, as RabbitMQ does.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// RabbitMQ's default `disk_free_limit`.
pub const DISK_FREE_LIMIT_BYTES_DEFAULT: u64 = 50 * 1000 * 1000;

#[derive(Debug, Clone)]
pub struct DiskAlarmConfig {
    /// A path on the file system to watch (the data directory).
    pub path: PathBuf,
    /// Below this many free bytes, publishers are blocked. Shared so it can change at
    /// run time.
    pub free_limit_bytes: Arc<AtomicU64>,
    pub check_interval: Duration,
}

impl DiskAlarmConfig {
    pub fn new(path: PathBuf, free_limit_bytes: u64) -> Self {
        DiskAlarmConfig {
            path,
            free_limit_bytes: Arc::new(AtomicU64::new(free_limit_bytes)),
            check_interval: Duration::from_secs(1),
        }
    }
}

/// Bytes available to unprivileged users on the file system holding `path`.
// The statvfs fields are u64 on 64-bit Linux but narrower elsewhere.
#[allow(clippy::useless_conversion)]
pub fn free_bytes(path: &std::path::Path) -> std::io::Result<u64> {
    let stats = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
    Ok(u64::from(stats.blocks_available()).saturating_mul(u64::from(stats.fragment_size())))
}

/// Checks the free space every interval and publishes whether the alarm is on.
pub async fn monitor(
    config: DiskAlarmConfig,
    alarm: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let limit = config.free_limit_bytes.load(Ordering::Relaxed);
        match free_bytes(&config.path) {
            Ok(free) => {
                let low = free < limit;
                if low != *alarm.borrow() {
                    if low {
                        tracing::warn!(
                            free_bytes = free,
                            limit_bytes = limit,
                            "disk alarm set: publishers are blocked"
                        );
                    } else {
                        tracing::info!(
                            free_bytes = free,
                            limit_bytes = limit,
                            "disk alarm cleared"
                        );
                    }
                    let _ = alarm.send(low);
                }
            }
            Err(error) => {
                tracing::warn!(%error, path = %config.path.display(), "cannot read free disk space")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(config.check_interval) => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_space_is_readable() {
        let free = free_bytes(&std::env::temp_dir()).unwrap();
        assert!(free > 0);
        assert!(free_bytes(std::path::Path::new("/nonexistent/path")).is_err());
    }
}
