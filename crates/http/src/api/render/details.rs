//! The `*_details` objects: `{"rate": r}`, and, over a window a detail asked for
//! (`lengths_age`...), RabbitMQ's `samples` (newest first), `avg` and `avg_rate`.

use serde_json::{json, Map, Value};

use crate::rates::{round_rate, Key, Series, Window};
use crate::Api;

/// An object's sampled values as its `*_details` show them.
pub struct Details {
    /// Unrounded, so that a sum (the overview's over vhosts) is rounded once.
    rates: Vec<f64>,
    /// Each value's samples, when a window was asked for.
    series: Option<Vec<Series>>,
}

impl Details {
    /// The `width` values sampled of `key`, with their samples over `window` if one is
    /// given (which watches the object: see [`crate::rates::Rates::series`]).
    pub fn read(api: &Api, key: &Key, width: usize, window: Option<Window>) -> Details {
        Details {
            rates: api.rates.exact(key, width),
            series: window.map(|window| api.rates.series(key, width, &window)),
        }
    }

    /// The sum of several objects' (vhosts') details over the same window.
    pub fn sum(
        parts: impl IntoIterator<Item = Details>,
        width: usize,
        window: Option<Window>,
    ) -> Details {
        let mut sum = Details {
            rates: vec![0.0; width],
            series: window.map(|window| vec![Series::zeros(&window); width]),
        };
        for part in parts {
            for (total, rate) in sum.rates.iter_mut().zip(&part.rates) {
                *total += rate;
            }
            if let (Some(totals), Some(series)) = (&mut sum.series, &part.series) {
                for (total, one) in totals.iter_mut().zip(series) {
                    total.add(one);
                }
            }
        }
        sum
    }

    /// The unrounded rate of value `at` over the last interval.
    pub fn exact_rate(&self, at: usize) -> f64 {
        self.rates.get(at).copied().unwrap_or(0.0)
    }

    /// Inserts `name: count` and `name_details` for value `at`.
    pub fn insert(&self, object: &mut Map<String, Value>, name: &str, count: u64, at: usize) {
        object.insert(name.to_string(), json!(count));
        object.insert(format!("{name}_details"), self.details(at));
    }

    /// Value `at`'s details. With samples, the rate is RabbitMQ's for a range: between
    /// the two newest samples, unrounded.
    fn details(&self, at: usize) -> Value {
        let Some(series) = self.series.as_ref().and_then(|all| all.get(at)) else {
            return json!({ "rate": round_rate(self.exact_rate(at)) });
        };
        let samples: Vec<Value> = series
            .samples
            .iter()
            .map(|(timestamp, sample)| json!({"sample": sample_json(*sample), "timestamp": timestamp}))
            .collect();
        let mut details = Map::new();
        details.insert("rate".into(), json!(series.rate()));
        details.insert("samples".into(), Value::Array(samples));
        if let (Some(avg), Some(avg_rate)) = (series.avg(), series.avg_rate()) {
            details.insert("avg".into(), json!(avg));
            details.insert("avg_rate".into(), json!(avg_rate));
        }
        Value::Object(details)
    }
}

/// A sampled count as an integer, as RabbitMQ gives it (sums of counts are whole).
fn sample_json(value: f64) -> Value {
    const EXACT_MAX: f64 = (1u64 << 53) as f64;
    match value.fract() == 0.0 && (0.0..EXACT_MAX).contains(&value) {
        true => json!(value as u64),
        false => json!(value),
    }
}
