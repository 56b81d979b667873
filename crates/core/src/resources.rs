//! The node's resources as its monitors last measured them: resident memory against the
//! high watermark, the data directory's free disk space against its limit, and whether
//! each alarm is on. The monitors (in the AMQP server, which also blocks publishers) write
//! here; every front end reads the same figures (the HTTP API's nodes and health checks,
//! Prometheus, `wharf ctl status`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Resources {
    memory_alarm: AtomicBool,
    memory_used_bytes: AtomicU64,
    memory_limit_bytes: AtomicU64,
    disk_alarm: AtomicBool,
    disk_free_bytes: AtomicU64,
    disk_free_limit_bytes: AtomicU64,
    /// Whether each monitor has measured at least once.
    memory_known: AtomicBool,
    disk_known: AtomicBool,
}

/// One reading of [`Resources`]. A figure is None until its monitor measured it (a broker
/// without that monitor, such as one in a test).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResourceReading {
    pub memory_alarm: bool,
    pub memory_used_bytes: Option<u64>,
    pub memory_limit_bytes: Option<u64>,
    pub disk_alarm: bool,
    pub disk_free_bytes: Option<u64>,
    pub disk_free_limit_bytes: Option<u64>,
}

impl Resources {
    pub fn record_memory(&self, used_bytes: u64, limit_bytes: u64, alarm: bool) {
        self.memory_used_bytes.store(used_bytes, Ordering::Relaxed);
        self.memory_limit_bytes
            .store(limit_bytes, Ordering::Relaxed);
        self.memory_alarm.store(alarm, Ordering::Relaxed);
        self.memory_known.store(true, Ordering::Release);
    }

    pub fn record_disk(&self, free_bytes: u64, free_limit_bytes: u64, alarm: bool) {
        self.disk_free_bytes.store(free_bytes, Ordering::Relaxed);
        self.disk_free_limit_bytes
            .store(free_limit_bytes, Ordering::Relaxed);
        self.disk_alarm.store(alarm, Ordering::Relaxed);
        self.disk_known.store(true, Ordering::Release);
    }

    pub fn read(&self) -> ResourceReading {
        let memory = self.memory_known.load(Ordering::Acquire);
        let disk = self.disk_known.load(Ordering::Acquire);
        let known = |known: bool, value: &AtomicU64| known.then(|| value.load(Ordering::Relaxed));
        ResourceReading {
            memory_alarm: self.memory_alarm.load(Ordering::Relaxed),
            memory_used_bytes: known(memory, &self.memory_used_bytes),
            memory_limit_bytes: known(memory, &self.memory_limit_bytes),
            disk_alarm: self.disk_alarm.load(Ordering::Relaxed),
            disk_free_bytes: known(disk, &self.disk_free_bytes),
            disk_free_limit_bytes: known(disk, &self.disk_free_limit_bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_unknown_until_measured() {
        let resources = Resources::default();
        assert_eq!(resources.read(), ResourceReading::default());
        resources.record_disk(10, 50, true);
        let reading = resources.read();
        assert_eq!(reading.disk_free_bytes, Some(10));
        assert_eq!(reading.disk_free_limit_bytes, Some(50));
        assert!(reading.disk_alarm);
        assert_eq!(reading.memory_used_bytes, None);
        resources.record_memory(100, 400, false);
        let reading = resources.read();
        assert_eq!(
            (reading.memory_used_bytes, reading.memory_limit_bytes),
            (Some(100), Some(400))
        );
        assert!(!reading.memory_alarm);
    }
}
