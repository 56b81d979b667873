//! Resource alarms, as RabbitMQ has them: the disk alarm (free space of the data
//! directory's file system below a limit) and the memory alarm (the broker's resident
//! memory above its high watermark). A task checks each every so often, and the disk one
//! also whenever half the room left above the limit has been written since it last
//! looked (counted by the store as it writes: [`wharf_store::write_meter`]); while either
//! is on, connections that publish are blocked (and told so with connection.blocked)
//! until it clears. Consumers go on, which is how memory and disk come back.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use wharf_core::resources::Resources;

/// Which alarms are on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Alarms {
    pub disk: bool,
    pub memory: bool,
}

impl Alarms {
    pub fn any(self) -> bool {
        self.disk || self.memory
    }

    /// The reason connection.blocked gives, RabbitMQ's words.
    pub fn reason(self) -> &'static str {
        match (self.memory, self.disk) {
            (true, true) => "low on memory and disk",
            (true, false) => "low on memory",
            _ => "low on disk",
        }
    }
}

/// RabbitMQ's default `vm_memory_high_watermark` (3.10): 40% of the machine's memory.
pub const MEMORY_HIGH_WATERMARK_DEFAULT: f64 = 0.4;

#[derive(Debug, Clone)]
pub struct MemoryAlarmConfig {
    /// Above this many resident bytes, publishers are blocked. Shared so it can change at
    /// run time.
    pub high_watermark_bytes: Arc<AtomicU64>,
    pub check_interval: Duration,
}

impl MemoryAlarmConfig {
    pub fn new(high_watermark_bytes: u64) -> Self {
        MemoryAlarmConfig {
            high_watermark_bytes: Arc::new(AtomicU64::new(high_watermark_bytes)),
            check_interval: Duration::from_secs(1),
        }
    }
}

/// The memory this broker may count on: the machine's, or its cgroup's limit if lower
/// (a container).
pub fn available_memory_bytes() -> Option<u64> {
    let total = kib_field(&std::fs::read_to_string("/proc/meminfo").ok()?, "MemTotal:")?;
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok());
    Some(cgroup.map_or(total, |limit| limit.min(total)))
}

/// The broker's resident memory (RSS), from /proc.
pub fn resident_bytes() -> std::io::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    kib_field(&status, "VmRSS:")
        .ok_or_else(|| std::io::Error::other("no VmRSS in /proc/self/status"))
}

/// Asks the allocator to return the memory it holds free to the system (glibc keeps
/// freed blocks in its arenas; `malloc_trim` hands back whole free pages).
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers and only walks the allocator's own lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The bytes of a `Name:   1234 kB` line of a /proc file.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    let rest = text.lines().find_map(|l| l.strip_prefix(name))?;
    let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

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

/// The least the disk alarm lets be written between two looks at the free space.
const DISK_CHECK_BUDGET_MIN: u64 = 64 * 1024;

/// Checks the free space every interval, and whenever half the room that was left above
/// the limit has been written since, and sets or clears the disk alarm.
pub async fn monitor_disk(
    config: DiskAlarmConfig,
    resources: Arc<Resources>,
    alarms: watch::Sender<Alarms>,
    shutdown: watch::Receiver<bool>,
) {
    let written = Arc::new(tokio::sync::Notify::new());
    let wake = written.clone();
    let meter = wharf_store::write_meter::watch(move || wake.notify_one());
    let check = || {
        let limit = config.free_limit_bytes.load(Ordering::Relaxed);
        match free_bytes(&config.path) {
            Ok(free) => {
                meter.arm((free.saturating_sub(limit) / 2).max(DISK_CHECK_BUDGET_MIN));
                resources.record_disk(free, limit, free < limit);
                Some((free < limit, format!("{free} bytes free, limit {limit}")))
            }
            Err(error) => {
                tracing::warn!(%error, path = %config.path.display(), "cannot read free disk space");
                None
            }
        }
    };
    monitor(
        "disk",
        |a| &mut a.disk,
        config.check_interval,
        Some(&written),
        check,
        alarms,
        shutdown,
    )
    .await
}

/// Checks the resident memory every interval and sets or clears the memory alarm.
pub async fn monitor_memory(
    config: MemoryAlarmConfig,
    resources: Arc<Resources>,
    alarms: watch::Sender<Alarms>,
    shutdown: watch::Receiver<bool>,
) {
    let check = || {
        let watermark = config.high_watermark_bytes.load(Ordering::Relaxed);
        let measured = resident_bytes().and_then(|used| {
            if used <= watermark {
                return Ok(used);
            }
            // Memory the allocator keeps after it was freed is not the broker's to
            // count: give it back, then look again.
            release_free_memory();
            resident_bytes()
        });
        match measured {
            Ok(used) => {
                resources.record_memory(used, watermark, used > watermark);
                Some((
                    used > watermark,
                    format!("{used} bytes resident, high watermark {watermark}"),
                ))
            }
            Err(error) => {
                tracing::warn!(%error, "cannot read the broker's memory use");
                None
            }
        }
    };
    monitor(
        "memory",
        |a| &mut a.memory,
        config.check_interval,
        None,
        check,
        alarms,
        shutdown,
    )
    .await
}

/// Every `interval` (and whenever `woken` is notified) until shutdown: `check` says
/// whether the alarm should be on (and what it measured), and the alarm `flag` picks is
/// set or cleared when that changes.
async fn monitor(
    name: &str,
    flag: fn(&mut Alarms) -> &mut bool,
    interval: Duration,
    woken: Option<&tokio::sync::Notify>,
    check: impl Fn() -> Option<(bool, String)>,
    alarms: watch::Sender<Alarms>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        if let Some((on, measured)) = check() {
            let mut current = *alarms.borrow();
            if *flag(&mut current) != on {
                if on {
                    tracing::warn!(measured, "{name} alarm set: publishers are blocked");
                } else {
                    tracing::info!(measured, "{name} alarm cleared");
                }
                alarms.send_modify(|a| *flag(a) = on);
            }
        }
        let woken = async {
            match woken {
                Some(notify) => notify.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = woken => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Freed blocks the allocator kept (here, holes between blocks still in use, which it
    /// cannot hand back by shrinking its heap) are given back by `release_free_memory`,
    /// which the memory alarm calls before it trusts an RSS above the watermark.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn memory_the_allocator_kept_is_given_back() {
        let mut blocks: Vec<Vec<u8>> = (0..400).map(|i| vec![i as u8 | 1; 64 * 1024]).collect();
        let mut kept = Vec::new();
        for (i, block) in blocks.drain(..).enumerate() {
            if i % 2 == 1 {
                kept.push(block);
            }
        }
        let before = resident_bytes().unwrap();
        release_free_memory();
        let after = resident_bytes().unwrap();
        assert!(
            before.saturating_sub(after) > 8 << 20,
            "{before} -> {after} bytes resident"
        );
        assert_eq!(kept.len(), 200);
    }

    #[test]
    fn memory_is_readable() {
        let used = resident_bytes().unwrap();
        let available = available_memory_bytes().unwrap();
        assert!(used > 0 && used < available, "{used} of {available}");
    }

    #[test]
    fn proc_fields_are_read_in_bytes() {
        let text = "Name:\twharf\nVmRSS:\t   2048 kB\nBad:\t x kB\n";
        assert_eq!(kib_field(text, "VmRSS:"), Some(2 * 1024 * 1024));
        assert_eq!(kib_field(text, "Bad:"), None);
        assert_eq!(kib_field(text, "MemTotal:"), None);
    }

    #[test]
    fn the_reason_names_what_is_low() {
        let memory = Alarms {
            memory: true,
            disk: false,
        };
        assert_eq!(memory.reason(), "low on memory");
        let disk = Alarms {
            memory: false,
            disk: true,
        };
        assert_eq!(disk.reason(), "low on disk");
        assert!(!Alarms::default().any());
    }

    #[test]
    fn free_space_is_readable() {
        let free = free_bytes(&std::env::temp_dir()).unwrap();
        assert!(free > 0);
        assert!(free_bytes(std::path::Path::new("/nonexistent/path")).is_err());
    }
}
