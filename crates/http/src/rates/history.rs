//! An object's history of samples and what a request reads of it: the ranges asked for
//! (`lengths_age`/`lengths_incr`...), the windows of timestamps they give, and each
//! value's series over a window. Pure arithmetic on timestamps in ms since the epoch;
//! [`super::Rates`] owns the histories.

use std::collections::VecDeque;
use std::time::Duration;

use super::INTERVAL;

/// How far back a history reaches: 600 s at the 5 s [`INTERVAL`], the first (finest)
/// step of RabbitMQ's "basic" sample retention policy. Older slots of a longer range
/// repeat the oldest sample kept.
pub const HISTORY_AGE: Duration = Duration::from_secs(600);

/// Samples kept per object with a history: [`HISTORY_AGE`] at [`INTERVAL`], plus one
/// at each end (the sample before a range's first slot, which that slot shows, and the
/// newest, which may be past a range's end).
pub const HISTORY_SAMPLES_MAX: usize = (HISTORY_AGE.as_secs() / INTERVAL.as_secs()) as usize + 2;

/// RabbitMQ's bound on the samples a range asks for (`age / incr`).
pub const RANGE_SAMPLES_MAX: u64 = 500;

/// What a request asks with `<prefix>_age` and `<prefix>_incr`: samples every `incr_s`
/// seconds over the last `age_s` seconds (checked: both positive, at most
/// [`RANGE_SAMPLES_MAX`] increments).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub age_s: u64,
    pub incr_s: u64,
}

impl Range {
    /// The slots as RabbitMQ places them: the range ends at the last whole `incr`
    /// (since the epoch) at or before now, and begins `age` before that.
    pub fn window(&self, now_ms: u64) -> Window {
        let incr_ms = self.incr_s.saturating_mul(1000).max(1);
        self.ending_at(now_ms / incr_ms * incr_ms, incr_ms)
    }

    /// As [`Range::window`], ending at the first whole `incr` at or after now (RabbitMQ
    /// ends a queue's lengths there, so that they include the newest sample).
    pub fn window_rounded_up(&self, now_ms: u64) -> Window {
        let incr_ms = self.incr_s.saturating_mul(1000).max(1);
        let floor = now_ms / incr_ms * incr_ms;
        let last_ms = match floor == now_ms {
            true => floor,
            false => floor.saturating_add(incr_ms),
        };
        self.ending_at(last_ms, incr_ms)
    }

    fn ending_at(&self, last_ms: u64, incr_ms: u64) -> Window {
        Window {
            first_ms: last_ms.saturating_sub(self.age_s.saturating_mul(1000)),
            last_ms,
            incr_ms,
        }
    }
}

/// The ranges a request asks for, by RabbitMQ's prefixes: `lengths` (queue depths),
/// `msg_rates` (message_stats, churn) and `data_rates` (connections' bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ranges {
    pub lengths: Option<Range>,
    pub msg_rates: Option<Range>,
    pub data_rates: Option<Range>,
}

impl Ranges {
    /// Every range ending at the last whole `incr` (RabbitMQ's `range`).
    pub fn windows(&self, now_ms: u64) -> Windows {
        Windows {
            lengths: self.lengths.map(|r| r.window(now_ms)),
            msg_rates: self.msg_rates.map(|r| r.window(now_ms)),
            data_rates: self.data_rates.map(|r| r.window(now_ms)),
        }
    }

    /// As [`Ranges::windows`], the lengths' rounded up (RabbitMQ's `range_ceil`, which
    /// a queue's detail uses).
    pub fn windows_lengths_rounded_up(&self, now_ms: u64) -> Windows {
        Windows {
            lengths: self.lengths.map(|r| r.window_rounded_up(now_ms)),
            ..self.windows(now_ms)
        }
    }
}

/// The slots of a range: every `incr_ms` from `first_ms` while at most `last_ms`, in
/// milliseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub first_ms: u64,
    pub last_ms: u64,
    pub incr_ms: u64,
}

impl Window {
    /// The slots' timestamps, oldest first (at most [`RANGE_SAMPLES_MAX`] + 1).
    pub fn timestamps(&self) -> impl Iterator<Item = u64> + '_ {
        (0..=RANGE_SAMPLES_MAX)
            .map_while(|k| self.incr_ms.checked_mul(k)?.checked_add(self.first_ms))
            .take_while(|t| *t <= self.last_ms)
    }
}

/// The windows a detail renders its samples over (none: rates only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Windows {
    pub lengths: Option<Window>,
    pub msg_rates: Option<Window>,
    pub data_rates: Option<Window>,
}

/// One value's samples over a window, newest first: `(timestamp_ms, value)`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    pub samples: Vec<(u64, f64)>,
}

impl Series {
    /// The change per second between the two newest samples, as RabbitMQ rates a range
    /// (0 with fewer than two).
    pub fn rate(&self) -> f64 {
        match self.samples.as_slice() {
            [(t1, v1), (t0, v0), ..] if t1 > t0 => (v1 - v0) * 1000.0 / (t1 - t0) as f64,
            _ => 0.0,
        }
    }

    /// The mean of the samples (None with fewer than two, as RabbitMQ leaves it out).
    pub fn avg(&self) -> Option<f64> {
        let count = self.samples.len();
        (count > 1).then(|| self.samples.iter().map(|(_, v)| v).sum::<f64>() / count as f64)
    }

    /// The change per second from the oldest sample to the newest (None with fewer than
    /// two).
    pub fn avg_rate(&self) -> Option<f64> {
        let (newest, oldest) = (self.samples.first()?, self.samples.last()?);
        (newest.0 > oldest.0).then(|| (newest.1 - oldest.1) * 1000.0 / (newest.0 - oldest.0) as f64)
    }

    /// Zeros at every slot of `window`, newest first (to add others to).
    pub fn zeros(window: &Window) -> Series {
        let mut samples: Vec<(u64, f64)> = window.timestamps().map(|t| (t, 0.0)).collect();
        samples.reverse();
        Series { samples }
    }

    /// Adds another series over the same window, sample by sample (a sum over vhosts).
    pub fn add(&mut self, other: &Series) {
        for ((_, sum), (_, v)) in self.samples.iter_mut().zip(&other.samples) {
            *sum += v;
        }
    }
}

/// An object's past samples, oldest first, at most [`HISTORY_SAMPLES_MAX`].
#[derive(Debug)]
pub(super) struct History {
    samples: VecDeque<(u64, Vec<f64>)>,
    /// The object was new at the oldest sample: slots before it read zeros (it counted
    /// from zero), as RabbitMQ pads a new object's range. Otherwise they repeat the
    /// oldest sample, the best known of a time not kept.
    from_zero: bool,
}

impl History {
    /// The history of an object new in this round.
    pub(super) fn of_new_object() -> History {
        History {
            samples: VecDeque::new(),
            from_zero: true,
        }
    }

    /// A history that begins with a sample of an object seen before.
    pub(super) fn beginning_with(at_ms: u64, values: &[f64]) -> History {
        History {
            samples: VecDeque::from([(at_ms, values.to_vec())]),
            from_zero: false,
        }
    }

    /// How many samples it holds.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.samples.len()
    }

    pub(super) fn push(&mut self, at_ms: u64, values: &[f64]) {
        if self.samples.back().is_some_and(|(t, _)| *t >= at_ms) {
            return;
        }
        self.samples.push_back((at_ms, values.to_vec()));
        if self.samples.len() > HISTORY_SAMPLES_MAX {
            self.samples.pop_front();
            self.from_zero = false;
        }
    }

    /// Each value's series over `window`: at each slot, the newest sample at or before it.
    pub(super) fn series(&self, window: &Window, width: usize) -> Vec<Series> {
        let zeros = vec![0.0; width];
        let before_oldest: &[f64] = match (self.from_zero, self.samples.front()) {
            (false, Some((_, oldest))) => oldest,
            _ => &zeros,
        };
        let mut columns = vec![Series::default(); width];
        let mut next = 0;
        let mut current = before_oldest;
        for t in window.timestamps() {
            while let Some((_, values)) = self.samples.get(next).filter(|(at, _)| *at <= t) {
                current = values;
                next += 1;
            }
            for (column, v) in columns.iter_mut().zip(current) {
                column.samples.push((t, *v));
            }
        }
        for column in &mut columns {
            column.samples.reverse();
        }
        columns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_end_at_a_whole_increment_and_reach_back_age_seconds() {
        let now_ms = 1_000_003_200;
        let every_5s = Range {
            age_s: 60,
            incr_s: 5,
        };
        let window = every_5s.window(now_ms);
        assert_eq!(window.last_ms, 1_000_000_000);
        assert_eq!(window.first_ms, 999_940_000);
        let stamps: Vec<u64> = window.timestamps().collect();
        assert_eq!(stamps.len(), 13);
        assert!(stamps.iter().all(|t| t % 5000 == 0));
        assert_eq!(every_5s.window_rounded_up(now_ms).last_ms, 1_000_005_000);
        assert_eq!(
            every_5s.window_rounded_up(1_000_000_000).last_ms,
            1_000_000_000
        );
        // An age that is no multiple of the increment: slots from its start, as
        // RabbitMQ places them (age 7, incr 5: two slots, the newest 3 s before the end).
        let odd = Range {
            age_s: 7,
            incr_s: 5,
        }
        .window(now_ms);
        let stamps: Vec<u64> = odd.timestamps().collect();
        assert_eq!(stamps, [999_993_000, 999_998_000]);
        assert_eq!(
            Range {
                age_s: 3,
                incr_s: 5
            }
            .window(now_ms)
            .timestamps()
            .count(),
            1
        );
        // Absurd values neither overflow nor give more than RabbitMQ's bound.
        let huge = Range {
            age_s: u64::MAX,
            incr_s: u64::MAX / 500,
        }
        .window(now_ms);
        assert!(huge.timestamps().count() as u64 <= RANGE_SAMPLES_MAX + 1);
    }

    #[test]
    fn series_over_the_same_window_add_up() {
        let mut sum = Series {
            samples: vec![(10, 1.0), (5, 2.0)],
        };
        sum.add(&Series {
            samples: vec![(10, 3.0), (5, 4.0)],
        });
        assert_eq!(sum.samples, [(10, 4.0), (5, 6.0)]);
    }
}
