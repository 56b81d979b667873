//! What a run counts and measures: message counters shared by every connection, latency
//! histograms (each connection records into its own and merges it in now and then, so the
//! hot path takes no lock), the line printed every second, and the final summary.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// How often a connection merges its latencies into the shared histograms.
const MERGE_EVERY: Duration = Duration::from_millis(20);

pub fn new_histogram() -> Histogram<u64> {
    // 1 ns to 10 minutes, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("valid histogram bounds")
}

/// A latency histogram for one interval and one for the whole run.
struct Latencies {
    interval: Histogram<u64>,
    total: Histogram<u64>,
}

impl Latencies {
    fn new() -> Latencies {
        Latencies {
            interval: new_histogram(),
            total: new_histogram(),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Latency {
    /// From the send time written in the body to its delivery.
    EndToEnd,
    /// From publishing to the broker's basic.ack.
    Confirm,
}

pub struct Stats {
    /// The clock that send times in bodies are measured on.
    epoch: Instant,
    pub published: AtomicU64,
    pub confirmed: AtomicU64,
    pub nacked: AtomicU64,
    pub consumed: AtomicU64,
    end_to_end: Mutex<Latencies>,
    confirm: Mutex<Latencies>,
    errors: Mutex<Vec<String>>,
}

/// A connection's own latency recorder, merged into [`Stats`] every few milliseconds.
pub struct Recorder {
    which: Latency,
    local: Histogram<u64>,
    merged_at: Instant,
}

impl Recorder {
    pub fn new(which: Latency) -> Recorder {
        Recorder {
            which,
            local: new_histogram(),
            merged_at: Instant::now(),
        }
    }

    pub fn record(&mut self, nanos: u64) {
        self.local.saturating_record(nanos.max(1));
    }

    /// Merges into the shared histograms if it is time (or `now` is forced).
    pub fn maybe_merge(&mut self, stats: &Stats, force: bool) {
        if self.local.is_empty() || (!force && self.merged_at.elapsed() < MERGE_EVERY) {
            return;
        }
        let shared = match self.which {
            Latency::EndToEnd => &stats.end_to_end,
            Latency::Confirm => &stats.confirm,
        };
        let mut shared = shared.lock().expect("latency lock");
        let _ = shared.interval.add(&self.local);
        let _ = shared.total.add(&self.local);
        drop(shared);
        self.local.reset();
        self.merged_at = Instant::now();
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    pub samples: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

fn percentiles(h: &Histogram<u64>) -> Percentiles {
    let us = |nanos: u64| nanos as f64 / 1000.0;
    Percentiles {
        samples: h.len(),
        p50_us: us(h.value_at_quantile(0.5)),
        p99_us: us(h.value_at_quantile(0.99)),
        p999_us: us(h.value_at_quantile(0.999)),
        max_us: us(h.max()),
    }
}

/// Counters at one moment, to compute rates between two of them.
#[derive(Clone, Copy, Default)]
pub struct Snapshot {
    pub at: Option<Instant>,
    pub published: u64,
    pub confirmed: u64,
    pub consumed: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub seconds: f64,
    pub published: u64,
    pub published_per_second: f64,
    pub confirmed: u64,
    pub confirmed_per_second: f64,
    pub nacked: u64,
    pub consumed: u64,
    pub consumed_per_second: f64,
    pub latency: Percentiles,
    pub confirm_latency: Percentiles,
    /// CPU time perf itself used (user + system), in seconds.
    pub perf_cpu_seconds: f64,
    pub errors: Vec<String>,
}

impl Stats {
    pub fn new() -> Stats {
        Stats {
            epoch: Instant::now(),
            published: AtomicU64::new(0),
            confirmed: AtomicU64::new(0),
            nacked: AtomicU64::new(0),
            consumed: AtomicU64::new(0),
            end_to_end: Mutex::new(Latencies::new()),
            confirm: Mutex::new(Latencies::new()),
            errors: Mutex::new(Vec::new()),
        }
    }

    /// Nanoseconds since the run's epoch (never 0, so 0 can mean "none").
    pub fn now_nanos(&self) -> u64 {
        (self.epoch.elapsed().as_nanos() as u64).max(1)
    }

    pub fn error(&self, message: String) {
        eprintln!("error: {message}");
        self.errors.lock().expect("errors lock").push(message);
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            at: Some(Instant::now()),
            published: self.published.load(Ordering::Relaxed),
            confirmed: self.confirmed.load(Ordering::Relaxed),
            consumed: self.consumed.load(Ordering::Relaxed),
        }
    }

    /// The line printed every second: rates since `previous`, latencies of the interval.
    pub fn interval_line(
        &self,
        since_start: Duration,
        previous: &Snapshot,
        now: &Snapshot,
    ) -> String {
        let seconds = match (previous.at, now.at) {
            (Some(a), Some(b)) => b.duration_since(a).as_secs_f64().max(1e-9),
            _ => 1.0,
        };
        let rate = |a: u64, b: u64| (b - a) as f64 / seconds;
        let take = |latencies: &Mutex<Latencies>| {
            let mut l = latencies.lock().expect("latency lock");
            let p = percentiles(&l.interval);
            l.interval.reset();
            p
        };
        let end_to_end = take(&self.end_to_end);
        let confirm = take(&self.confirm);
        let mut line = format!(
            "{:>6.1}s  sent {:>9.0} msg/s  confirmed {:>9.0} msg/s  received {:>9.0} msg/s",
            since_start.as_secs_f64(),
            rate(previous.published, now.published),
            rate(previous.confirmed, now.confirmed),
            rate(previous.consumed, now.consumed),
        );
        if end_to_end.samples > 0 {
            line += &format!(
                "  latency p50 {} p99 {}",
                micros(end_to_end.p50_us),
                micros(end_to_end.p99_us)
            );
        }
        if confirm.samples > 0 {
            line += &format!(
                "  confirm p50 {} p99 {}",
                micros(confirm.p50_us),
                micros(confirm.p99_us)
            );
        }
        line
    }

    pub fn summary(&self, from: &Snapshot, to: &Snapshot, cpu_seconds: f64) -> Summary {
        let seconds = match (from.at, to.at) {
            (Some(a), Some(b)) => b.duration_since(a).as_secs_f64().max(1e-9),
            _ => 1e-9,
        };
        let total = |latencies: &Mutex<Latencies>| {
            percentiles(&latencies.lock().expect("latency lock").total)
        };
        Summary {
            seconds,
            published: to.published - from.published,
            published_per_second: (to.published - from.published) as f64 / seconds,
            confirmed: to.confirmed - from.confirmed,
            confirmed_per_second: (to.confirmed - from.confirmed) as f64 / seconds,
            nacked: self.nacked.load(Ordering::Relaxed),
            consumed: to.consumed - from.consumed,
            consumed_per_second: (to.consumed - from.consumed) as f64 / seconds,
            latency: total(&self.end_to_end),
            confirm_latency: total(&self.confirm),
            perf_cpu_seconds: cpu_seconds,
            errors: self.errors.lock().expect("errors lock").clone(),
        }
    }
}

/// A duration in microseconds, printed with a unit that keeps it short.
pub fn micros(us: f64) -> String {
    if us >= 10_000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

impl Summary {
    pub fn text(&self) -> String {
        let mut out = format!(
            "summary over {:.1} s:\n  sent      {:>12} msg  {:>10.0} msg/s\n",
            self.seconds, self.published, self.published_per_second
        );
        if self.confirmed > 0 || self.nacked > 0 {
            out += &format!(
                "  confirmed {:>12} msg  {:>10.0} msg/s  (nacked: {})\n",
                self.confirmed, self.confirmed_per_second, self.nacked
            );
        }
        out += &format!(
            "  received  {:>12} msg  {:>10.0} msg/s\n",
            self.consumed, self.consumed_per_second
        );
        for (name, p) in [
            ("latency (end to end)", &self.latency),
            ("latency (publish to confirm)", &self.confirm_latency),
        ] {
            if p.samples > 0 {
                out += &format!(
                    "  {name}: p50 {}  p99 {}  p99.9 {}  max {}\n",
                    micros(p.p50_us),
                    micros(p.p99_us),
                    micros(p.p999_us),
                    micros(p.max_us)
                );
            }
        }
        out += &format!(
            "  perf's own CPU: {:.2} s ({:.0}% of one core)\n",
            self.perf_cpu_seconds,
            100.0 * self.perf_cpu_seconds / self.seconds
        );
        if self.errors.is_empty() {
            out += "  errors: none\n";
        } else {
            out += &format!("  errors: {}\n", self.errors.len());
            for e in &self.errors {
                out += &format!("    {e}\n");
            }
        }
        out
    }
}

/// CPU time (user + system) this process has used, in seconds.
pub fn cpu_seconds() -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(usage) => {
            let seconds = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
            seconds(usage.user_time()) + seconds(usage.system_time())
        }
        Err(_) => 0.0,
    }
}
