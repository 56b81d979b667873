//! Rates (`*_details: {"rate": ...}`), as RabbitMQ's "basic" rates mode gives them: every
//! [`INTERVAL`] the sampler reads each object's counters and gauges, and an object's
//! rate is how much each changed per second since the sample before. Objects gone
//! since the last sample are forgotten. Some objects also keep a short history of their
//! samples, which `lengths_age`, `msg_rates_age` and `data_rates_age` read back
//! ([`Rates::series`]). The sampler task ([`sample`]) owns the writing; request handlers
//! read through [`Api::rates`](crate::Api), under one lock.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::Api;

mod history;

use history::History;
pub use history::{
    Range, Ranges, Series, Window, Windows, HISTORY_AGE, HISTORY_SAMPLES_MAX, RANGE_SAMPLES_MAX,
};

/// RabbitMQ's default collect_statistics_interval.
pub const INTERVAL: Duration = Duration::from_secs(5);

/// How long an object keeps its history after a request last asked for it. RabbitMQ
/// keeps every object's history; Wharf keeps queues', exchanges', connections' and
/// channels' only while someone looks, so that 10,000 queues nobody charts keep none.
pub const WATCH_FOR: Duration = Duration::from_secs(600);

/// How many objects may keep a history at once besides the broker and its vhosts. A
/// listing that asks for every queue's history watches at most this many; past it, the
/// object asked about least recently stops being watched. A history of queue values is
/// about 20 KB (122 samples of 14 values), so this bounds them to about 20 MB however
/// many objects there are.
pub const WATCHED_MAX: usize = 1000;

/// Which object a sample is of.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    Overview,
    Queue { vhost: String, name: String },
    Exchange { vhost: String, name: String },
    Vhost(String),
    Connection(u64),
    Channel { connection: u64, number: u16 },
}

impl Key {
    /// Few objects (the broker, its vhosts) always keep a history; the others only
    /// while watched.
    fn keeps_history(&self) -> bool {
        matches!(self, Key::Overview | Key::Vhost(_))
    }
}

#[derive(Debug)]
struct Sample {
    at: Instant,
    values: Vec<f64>,
    rates: Vec<f64>,
    round: u64,
    /// When the round that took it began, in ms since the epoch.
    round_ms: u64,
    /// Kept for the broker and vhosts, and for watched objects.
    history: Option<History>,
}

#[derive(Debug, Default)]
struct Samples {
    round: u64,
    /// When the round before this one began: an object new in this round started from
    /// zero since then at the latest.
    previous_round_at: Option<Instant>,
    this_round_at: Option<Instant>,
    this_round_ms: u64,
    objects: HashMap<Key, Sample>,
    /// Objects whose history a request asked for, and when it last did.
    watched: HashMap<Key, Instant>,
}

impl Samples {
    /// Stops watching the object asked about least recently, and drops its history.
    fn stop_watching_the_least_recent(&mut self) {
        let oldest = self
            .watched
            .iter()
            .min_by_key(|(_, asked)| **asked)
            .map(|(key, _)| key.clone());
        if let Some(key) = oldest {
            self.watched.remove(&key);
            if let Some(sample) = self.objects.get_mut(&key) {
                sample.history = None;
            }
        }
    }
}

/// The latest rates of every object sampled, and the histories kept.
#[derive(Debug, Default)]
pub struct Rates {
    samples: Mutex<Samples>,
}

/// Now, in milliseconds since the epoch (the samples' timestamps).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Rates {
    /// Starts a sampling round: objects not recorded in it are forgotten at its end.
    pub fn begin(&self) {
        self.begin_at(Instant::now(), now_ms());
    }

    /// Starts a round at `at`, `at_ms` since the epoch; stops watching objects nobody
    /// asked about for [`WATCH_FOR`].
    fn begin_at(&self, at: Instant, at_ms: u64) {
        let mut samples = self.samples.lock();
        samples.round += 1;
        samples.previous_round_at = samples.this_round_at.replace(at);
        samples.this_round_ms = at_ms;
        samples
            .watched
            .retain(|_, asked| at.saturating_duration_since(*asked) < WATCH_FOR);
    }

    /// Records an object's values (counters and gauges, in a fixed order per kind).
    pub fn record(&self, key: Key, values: Vec<f64>) {
        self.record_at(key, values, Instant::now());
    }

    fn record_at(&self, key: Key, values: Vec<f64>, at: Instant) {
        let mut guard = self.samples.lock();
        let samples = &mut *guard;
        let (round, round_ms) = (samples.round, samples.this_round_ms);
        let keeps_history = key.keeps_history()
            || (!samples.watched.is_empty() && samples.watched.contains_key(&key));
        if let Some(before) = samples.objects.get_mut(&key) {
            if before.values.len() == values.len() {
                let seconds = at.duration_since(before.at).as_secs_f64();
                if seconds > 0.0 {
                    before.rates = values
                        .iter()
                        .zip(&before.values)
                        .map(|(now, then)| (now - then) / seconds)
                        .collect();
                }
                before.history = match (keeps_history, before.history.take()) {
                    (false, _) => None,
                    (true, Some(history)) => Some(history),
                    // Watched since the last round: its history starts now.
                    (true, None) => Some(History::beginning_with(before.round_ms, &before.values)),
                };
                if let Some(history) = &mut before.history {
                    history.push(round_ms, &values);
                }
                before.at = at;
                before.values = values;
                before.round = round;
                before.round_ms = round_ms;
                return;
            }
        }
        // New since the last round: it counted from zero, at most since then.
        let rates = match samples.previous_round_at {
            Some(then) if at > then => {
                let seconds = at.duration_since(then).as_secs_f64();
                values.iter().map(|v| v / seconds).collect()
            }
            _ => vec![0.0; values.len()],
        };
        let history = keeps_history.then(|| {
            let mut history = History::of_new_object();
            history.push(round_ms, &values);
            history
        });
        samples.objects.insert(
            key,
            Sample {
                at,
                values,
                rates,
                round,
                round_ms,
                history,
            },
        );
    }

    /// Ends a round: forgets what it did not record.
    pub fn end(&self) {
        let mut samples = self.samples.lock();
        let round = samples.round;
        samples.objects.retain(|_, sample| sample.round == round);
    }

    /// The object's rates with RabbitMQ's precision, per value recorded, or zeros before
    /// its first sample.
    pub fn of(&self, key: &Key, count: usize) -> Vec<f64> {
        self.exact(key, count).into_iter().map(round_rate).collect()
    }

    /// As [`Rates::of`], unrounded.
    pub fn exact(&self, key: &Key, count: usize) -> Vec<f64> {
        self.samples
            .lock()
            .objects
            .get(key)
            .map(|sample| sample.rates.clone())
            .filter(|rates| rates.len() == count)
            .unwrap_or_else(|| vec![0.0; count])
    }

    /// Each of the object's `count` values sampled over `window`, newest first, and
    /// watches the object for [`WATCH_FOR`] (its history grows from now on). An object
    /// not sampled yet reads zeros; one whose history begins now repeats its latest
    /// sample back over the window.
    pub fn series(&self, key: &Key, count: usize, window: &Window) -> Vec<Series> {
        self.series_at(key, count, window, Instant::now())
    }

    fn series_at(&self, key: &Key, count: usize, window: &Window, now: Instant) -> Vec<Series> {
        let mut samples = self.samples.lock();
        if !key.keeps_history() {
            match samples.watched.get_mut(key) {
                Some(asked) => *asked = now,
                None => {
                    if samples.watched.len() >= WATCHED_MAX {
                        samples.stop_watching_the_least_recent();
                    }
                    samples.watched.insert(key.clone(), now);
                }
            }
        }
        let Some(sample) = samples.objects.get(key).filter(|s| s.values.len() == count) else {
            return vec![Series::zeros(window); count];
        };
        match &sample.history {
            Some(history) => history.series(window, count),
            None => History::beginning_with(sample.round_ms, &sample.values).series(window, count),
        }
    }

    /// How many objects keep a history now (the broker's, the vhosts', the watched).
    #[cfg(test)]
    fn histories(&self) -> usize {
        let samples = self.samples.lock();
        samples
            .objects
            .values()
            .filter(|s| s.history.is_some())
            .count()
    }
}

/// A rate with RabbitMQ's precision (one decimal).
pub fn round_rate(rate: f64) -> f64 {
    (rate * 10.0).round() / 10.0
}

/// Samples every [`INTERVAL`] until shutdown.
pub async fn sample(api: Arc<Api>, mut shutdown: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => crate::api::sample_rates(&api),
            _ = async { let _ = shutdown.wait_for(|stop| *stop).await; } => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_is_the_change_per_second_between_two_samples() {
        let rates = Rates::default();
        let start = Instant::now();
        let key = Key::Overview;
        rates.begin();
        rates.record_at(key.clone(), vec![100.0, 5.0], start);
        assert_eq!(rates.of(&key, 2), [0.0, 0.0]);
        rates.begin();
        rates.record_at(
            key.clone(),
            vec![600.0, 0.0],
            start + Duration::from_secs(5),
        );
        assert_eq!(rates.of(&key, 2), [100.0, -1.0]);
        rates.end();
        // Not recorded in the next round: forgotten.
        rates.begin();
        rates.end();
        assert_eq!(rates.of(&key, 2), [0.0, 0.0]);
    }
    /// A round at `start + seconds`, whose wall clock is `EPOCH_MS + seconds`.
    const EPOCH_MS: u64 = 1_000_000_001_000;

    fn round(rates: &Rates, start: Instant, seconds: u64, objects: &[(Key, f64)]) {
        let at = start + Duration::from_secs(seconds);
        rates.begin_at(at, EPOCH_MS + seconds * 1000);
        for (key, value) in objects {
            rates.record_at(key.clone(), vec![*value, 2.0 * value], at);
        }
        rates.end();
    }

    fn queue(name: &str) -> Key {
        Key::Queue {
            vhost: "/".into(),
            name: name.into(),
        }
    }

    fn kept(rates: &Rates, key: &Key) -> Option<usize> {
        let samples = rates.samples.lock();
        Some(samples.objects.get(key)?.history.as_ref()?.len())
    }

    fn values(series: &Series) -> Vec<f64> {
        series.samples.iter().map(|(_, v)| *v).collect()
    }

    #[test]
    fn a_slot_shows_the_newest_sample_at_or_before_it() {
        let rates = Rates::default();
        let start = Instant::now();
        round(&rates, start, 0, &[(Key::Overview, 10.0)]);
        round(&rates, start, 5, &[(Key::Overview, 20.0)]);
        round(&rates, start, 10, &[(Key::Overview, 50.0)]);
        // Samples at EPOCH_MS + 0, 5, 10 s (…001_000, …006_000, …011_000); now 1.5 s later.
        let window = Range {
            age_s: 20,
            incr_s: 5,
        }
        .window(EPOCH_MS + 11_500);
        assert_eq!(window.last_ms, EPOCH_MS + 9_000);
        let series = rates.series_at(&Key::Overview, 2, &window, start);
        let first = &series[0];
        let stamps: Vec<u64> = first.samples.iter().map(|(t, _)| *t).collect();
        let last = window.last_ms;
        assert_eq!(
            stamps,
            [
                last,
                last - 5000,
                last - 10_000,
                last - 15_000,
                last - 20_000
            ]
        );
        // Newest first; before its first sample the broker counted from zero.
        assert_eq!(values(first), [20.0, 10.0, 0.0, 0.0, 0.0]);
        assert_eq!(values(&series[1]), [40.0, 20.0, 0.0, 0.0, 0.0]);
        assert_eq!(first.rate(), 2.0);
        assert_eq!(first.avg(), Some(6.0));
        assert_eq!(first.avg_rate(), Some(1.0));
        // Rounded up, the window ends past now and shows the newest sample.
        let up = Range {
            age_s: 5,
            incr_s: 5,
        }
        .window_rounded_up(EPOCH_MS + 11_500);
        let series = rates.series_at(&Key::Overview, 2, &up, start);
        assert_eq!(values(&series[0]), [50.0, 20.0]);
        // One slot: no rate between slots, no average.
        let one = Range {
            age_s: 1,
            incr_s: 5,
        }
        .window(EPOCH_MS + 11_500);
        let series = rates.series_at(&Key::Overview, 2, &one, start);
        assert_eq!(series[0].rate(), 0.0);
        assert_eq!(series[0].avg(), None);
        assert_eq!(series[0].avg_rate(), None);
    }

    #[test]
    fn the_history_is_bounded() {
        let rates = Rates::default();
        let start = Instant::now();
        let rounds = 3 * HISTORY_SAMPLES_MAX as u64;
        for n in 0..rounds {
            round(&rates, start, n * 5, &[(Key::Overview, n as f64)]);
        }
        assert_eq!(kept(&rates, &Key::Overview), Some(HISTORY_SAMPLES_MAX));
        // The full retention reads real samples all the way back.
        let now_ms = EPOCH_MS + (rounds - 1) * 5000;
        let window = Range {
            age_s: 600,
            incr_s: 5,
        }
        .window_rounded_up(now_ms);
        let series = rates.series_at(&Key::Overview, 2, &window, start);
        let newest = (rounds - 1) as f64;
        assert_eq!(series[0].samples.len(), 121);
        assert_eq!(series[0].samples[0].1, newest);
        assert_eq!(series[0].samples[120].1, newest - 120.0);
        // Past the retention, the oldest sample kept is repeated, not zeros.
        let window = Range {
            age_s: 3600,
            incr_s: 60,
        }
        .window_rounded_up(now_ms);
        let series = rates.series_at(&Key::Overview, 2, &window, start);
        let oldest_kept = newest - (HISTORY_SAMPLES_MAX - 1) as f64;
        assert_eq!(series[0].samples.last().unwrap().1, oldest_kept);
    }

    #[test]
    fn only_watched_queues_keep_a_history_until_nobody_asked_for_a_while() {
        let rates = Rates::default();
        let start = Instant::now();
        let (watched, ignored) = (queue("watched"), queue("ignored"));
        let both = [(watched.clone(), 1.0), (ignored.clone(), 1.0)];
        round(&rates, start, 0, &both);
        assert_eq!(kept(&rates, &watched), None);
        // Asked for: its latest sample is repeated back over the window...
        let window = Range {
            age_s: 10,
            incr_s: 5,
        }
        .window_rounded_up(EPOCH_MS + 2_000);
        let series = rates.series_at(&watched, 2, &window, start);
        assert_eq!(values(&series[0]), [1.0, 1.0, 1.0]);
        // ...and it keeps a history from the next round on; the other queue does not.
        round(
            &rates,
            start,
            5,
            &[(watched.clone(), 2.0), (ignored.clone(), 2.0)],
        );
        round(
            &rates,
            start,
            10,
            &[(watched.clone(), 3.0), (ignored.clone(), 3.0)],
        );
        assert_eq!(kept(&rates, &watched), Some(3));
        assert_eq!(kept(&rates, &ignored), None);
        assert_eq!(rates.histories(), 1);
        let window = Range {
            age_s: 10,
            incr_s: 5,
        }
        .window_rounded_up(EPOCH_MS + 12_000);
        let series = rates.series_at(&watched, 2, &window, start);
        assert_eq!(values(&series[0]), [3.0, 2.0, 1.0]);
        // Asked again just before the watch ends: it goes on.
        let asked = start + WATCH_FOR;
        rates.series_at(&watched, 2, &window, asked);
        let later = WATCH_FOR.as_secs() + 5;
        round(&rates, start, later, &both);
        assert!(kept(&rates, &watched).is_some());
        // Nobody asked for WATCH_FOR: the history is dropped.
        let much_later = later + WATCH_FOR.as_secs();
        round(&rates, start, much_later, &both);
        assert_eq!(kept(&rates, &watched), None);
        assert!(rates.samples.lock().watched.is_empty());
        // A queue that goes away is forgotten with its history.
        rates.series_at(
            &watched,
            2,
            &window,
            start + Duration::from_secs(much_later),
        );
        round(&rates, start, much_later + 5, &both);
        assert!(kept(&rates, &watched).is_some());
        round(&rates, start, much_later + 10, &[]);
        assert_eq!(kept(&rates, &watched), None);
        assert_eq!(rates.of(&watched, 2), [0.0, 0.0]);
    }

    #[test]
    fn at_most_watched_max_objects_keep_a_history_and_the_least_recently_asked_goes_first() {
        let rates = Rates::default();
        let start = Instant::now();
        let queues: Vec<Key> = (0..=WATCHED_MAX).map(|i| queue(&format!("q{i}"))).collect();
        let all: Vec<(Key, f64)> = queues.iter().map(|q| (q.clone(), 1.0)).collect();
        round(&rates, start, 0, &all);
        let window = Range {
            age_s: 10,
            incr_s: 5,
        }
        .window_rounded_up(EPOCH_MS + 2_000);
        // Every queue asked for, one millisecond apart: the first is the least recent.
        for (i, key) in queues.iter().enumerate() {
            let asked = start + Duration::from_millis(i as u64);
            rates.series_at(key, 2, &window, asked);
        }
        round(&rates, start, 5, &all);
        assert_eq!(rates.samples.lock().watched.len(), WATCHED_MAX);
        assert_eq!(rates.histories(), WATCHED_MAX);
        assert_eq!(kept(&rates, &queues[0]), None);
        assert!(kept(&rates, &queues[1]).is_some());
        assert!(kept(&rates, &queues[WATCHED_MAX]).is_some());
        // Asked again, the first comes back and the next least recent goes.
        let later = start + Duration::from_secs(1);
        rates.series_at(&queues[0], 2, &window, later);
        assert_eq!(kept(&rates, &queues[1]), None);
        round(&rates, start, 10, &all);
        assert!(kept(&rates, &queues[0]).is_some());
        assert_eq!(rates.histories(), WATCHED_MAX);
    }

    #[test]
    fn an_object_not_sampled_yet_reads_zeros() {
        let rates = Rates::default();
        let window = Range {
            age_s: 10,
            incr_s: 5,
        }
        .window(EPOCH_MS);
        let series = rates.series_at(&queue("new"), 3, &window, Instant::now());
        assert_eq!(series.len(), 3);
        assert_eq!(values(&series[2]), [0.0, 0.0, 0.0]);
    }
}
