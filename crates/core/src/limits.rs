//! Per-vhost and per-user limits, as RabbitMQ's `set_vhost_limits` and `set_user_limits`
//! take them: a JSON object of named limits, where a negative value means "no limit" and
//! 0 allows nothing; setting them replaces what was set before. Vhosts: max-connections,
//! max-queues. Users: max-connections, max-channels.

use std::collections::BTreeMap;

/// Limits by their RabbitMQ names; an absent name is no limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    values: BTreeMap<String, u64>,
}

pub const MAX_CONNECTIONS: &str = "max-connections";
pub const MAX_QUEUES: &str = "max-queues";
pub const MAX_CHANNELS: &str = "max-channels";

/// The limit names a vhost takes.
pub const VHOST_LIMITS: &[&str] = &[MAX_CONNECTIONS, MAX_QUEUES];
/// The limit names a user takes.
pub const USER_LIMITS: &[&str] = &[MAX_CONNECTIONS, MAX_CHANNELS];

impl Limits {
    /// Reads a JSON object of limits (`{"max-connections": 10}`), each name one of
    /// `known`, each value an integer (negative: no limit).
    pub fn parse(json: &str, known: &[&str]) -> Result<Limits, String> {
        let value: serde_json::Value =
            serde_json::from_str(json).map_err(|e| format!("limits are not JSON: {e}"))?;
        let serde_json::Value::Object(entries) = value else {
            return Err(format!(
                "limits must be a JSON object, e.g. {{\"{}\": 10}}",
                known[0]
            ));
        };
        let mut limits = Limits::default();
        for (name, value) in entries {
            if !known.contains(&name.as_str()) {
                return Err(format!(
                    "unknown limit '{name}' (known: {})",
                    known.join(", ")
                ));
            }
            let n = value
                .as_i64()
                .ok_or_else(|| format!("limit '{name}' must be an integer, not {value}"))?;
            if let Ok(n) = u64::try_from(n) {
                limits.values.insert(name, n);
            }
        }
        Ok(limits)
    }

    pub fn get(&self, name: &str) -> Option<u64> {
        self.values.get(name).copied()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// As the store keeps them.
    pub fn from_map(values: &BTreeMap<String, u64>) -> Limits {
        Limits {
            values: values.clone(),
        }
    }

    pub fn to_map(&self) -> BTreeMap<String, u64> {
        self.values.clone()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.values.iter().map(|(k, v)| (k.as_str(), *v))
    }

    /// As stored and exported: a JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.values
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::from(*v)))
                .collect(),
        )
    }

    pub fn to_json_text(&self) -> String {
        self.to_json().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rabbitmq_limits() {
        let limits =
            Limits::parse(r#"{"max-connections": 10, "max-queues": 0}"#, VHOST_LIMITS).unwrap();
        assert_eq!(limits.get(MAX_CONNECTIONS), Some(10));
        assert_eq!(limits.get(MAX_QUEUES), Some(0), "0 allows nothing");
        let none = Limits::parse(r#"{"max-connections": -1}"#, VHOST_LIMITS).unwrap();
        assert_eq!(none.get(MAX_CONNECTIONS), None, "negative: no limit");
        assert!(Limits::parse(r#"{"max-channels": 1}"#, VHOST_LIMITS)
            .unwrap_err()
            .contains("unknown limit 'max-channels'"));
        assert!(Limits::parse(r#"{"max-queues": "x"}"#, VHOST_LIMITS).is_err());
        assert!(Limits::parse("[1]", VHOST_LIMITS).is_err());
        assert!(Limits::parse("{", VHOST_LIMITS).is_err());
    }
}
