//! Rates (`*_details: {"rate": ...}`), as RabbitMQ's "basic" rates mode gives them: every
//! [`INTERVAL`] the sampler reads each object's counters and gauges, and an object's
//! rate is how much each changed per second since the sample before. Objects gone
//! since the last sample are forgotten.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::Api;

/// RabbitMQ's default collect_statistics_interval.
pub const INTERVAL: Duration = Duration::from_secs(5);

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

#[derive(Debug)]
struct Sample {
    at: Instant,
    values: Vec<f64>,
    rates: Vec<f64>,
    round: u64,
}

#[derive(Debug, Default)]
struct Samples {
    round: u64,
    /// When the round before this one began: an object new in this round started from
    /// zero since then at the latest.
    previous_round_at: Option<Instant>,
    this_round_at: Option<Instant>,
    objects: HashMap<Key, Sample>,
}

/// The latest rates of every object sampled.
#[derive(Debug, Default)]
pub struct Rates {
    samples: Mutex<Samples>,
}

impl Rates {
    /// Starts a sampling round: objects not recorded in it are forgotten at its end.
    pub fn begin(&self) {
        self.begin_at(Instant::now());
    }

    fn begin_at(&self, at: Instant) {
        let mut samples = self.samples.lock();
        samples.round += 1;
        samples.previous_round_at = samples.this_round_at.replace(at);
    }

    /// Records an object's values (counters and gauges, in a fixed order per kind).
    pub fn record(&self, key: Key, values: Vec<f64>) {
        self.record_at(key, values, Instant::now());
    }

    fn record_at(&self, key: Key, values: Vec<f64>, at: Instant) {
        let mut samples = self.samples.lock();
        let round = samples.round;
        let rates = match samples.objects.get(&key) {
            Some(before) if before.values.len() == values.len() => {
                let seconds = at.duration_since(before.at).as_secs_f64();
                if seconds <= 0.0 {
                    before.rates.clone()
                } else {
                    values
                        .iter()
                        .zip(&before.values)
                        .map(|(now, then)| (now - then) / seconds)
                        .collect()
                }
            }
            // New since the last round: it counted from zero, at most since then.
            _ => match samples.previous_round_at {
                Some(then) if at > then => {
                    let seconds = at.duration_since(then).as_secs_f64();
                    values.iter().map(|v| v / seconds).collect()
                }
                _ => vec![0.0; values.len()],
            },
        };
        samples.objects.insert(
            key,
            Sample {
                at,
                values,
                rates,
                round,
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
}
