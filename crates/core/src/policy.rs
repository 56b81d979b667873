//! Policies, as RabbitMQ's: a named rule that gives the queues and/or exchanges whose
//! names match a regular expression a set of settings (the definition), so that TTLs,
//! limits, dead-lettering and alternate exchanges can be set without touching the
//! applications that declare them. Of the policies matching an object, the one with the
//! highest priority applies (between equal priorities, the first by name). Where an
//! object's own `x-` argument and its policy both set something, the numeric limits take
//! the smaller value and the rest keep the argument, as RabbitMQ resolves them.

use regex::Regex;
use wharf_amqp::{ByteString, FieldTable, FieldValue};

/// What a policy applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyTo {
    Queues,
    Exchanges,
    All,
}

impl ApplyTo {
    pub fn parse(text: &str) -> Result<ApplyTo, String> {
        match text {
            "queues" => Ok(ApplyTo::Queues),
            "exchanges" => Ok(ApplyTo::Exchanges),
            "all" => Ok(ApplyTo::All),
            other => Err(format!(
                "'{other}' is not a valid apply-to value: use queues, exchanges or all"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ApplyTo::Queues => "queues",
            ApplyTo::Exchanges => "exchanges",
            ApplyTo::All => "all",
        }
    }
}

/// The settings a policy can give, and the kind of value each takes.
const KEYS: &[(&str, Kind)] = &[
    ("message-ttl", Kind::NonNegative),
    ("expires", Kind::Positive),
    ("max-length", Kind::NonNegative),
    ("max-length-bytes", Kind::NonNegative),
    ("overflow", Kind::Overflow),
    ("dead-letter-exchange", Kind::Text),
    ("dead-letter-routing-key", Kind::Text),
    ("delivery-limit", Kind::NonNegative),
    ("alternate-exchange", Kind::Text),
    // Accepted for compatibility with RabbitMQ definitions; Wharf's queues behave as lazy.
    ("queue-mode", Kind::Text),
    // Where a new queue is placed on a cluster (see queue_arguments::Locator).
    ("queue-leader-locator", Kind::Locator),
];

#[derive(Debug, Clone, Copy)]
enum Kind {
    NonNegative,
    Positive,
    Overflow,
    Text,
    Locator,
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub name: ByteString,
    pub pattern: String,
    regex: Regex,
    pub apply_to: ApplyTo,
    /// The definition as given (JSON), kept to list and store it as it was.
    pub definition_json: String,
    /// The definition's settings, by their policy names (`message-ttl`, not `x-message-ttl`).
    pub definition: FieldTable,
    pub priority: i64,
}

impl Policy {
    /// A policy from its parts, refusing a bad pattern, apply-to or definition with a
    /// reason that names the problem.
    pub fn new(
        name: &str,
        pattern: &str,
        apply_to: &str,
        definition_json: &str,
        priority: i64,
    ) -> Result<Policy, String> {
        if name.is_empty() {
            return Err("a policy needs a name".to_string());
        }
        let regex = Regex::new(pattern).map_err(|e| format!("invalid pattern '{pattern}': {e}"))?;
        let apply_to = ApplyTo::parse(apply_to)?;
        let definition = parse_definition(definition_json)?;
        Ok(Policy {
            name: ByteString::from(name),
            pattern: pattern.to_string(),
            regex,
            apply_to,
            definition_json: definition_json.to_string(),
            definition,
            priority,
        })
    }

    pub fn applies_to_queue(&self, name: &str) -> bool {
        self.apply_to != ApplyTo::Exchanges && self.regex.is_match(name)
    }

    pub fn applies_to_exchange(&self, name: &str) -> bool {
        self.apply_to != ApplyTo::Queues && self.regex.is_match(name)
    }
}

/// Of `policies` matching (per `matches`), the one that applies.
pub fn pick<'p>(
    policies: impl Iterator<Item = &'p Policy>,
    matches: impl Fn(&Policy) -> bool,
) -> Option<&'p Policy> {
    policies
        .filter(|p| matches(p))
        .min_by(|a, b| b.priority.cmp(&a.priority).then(a.name.cmp(&b.name)))
}

/// Reads a JSON definition into settings, checking each key and value.
fn parse_definition(json: &str) -> Result<FieldTable, String> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("the definition is not JSON: {e}"))?;
    let serde_json::Value::Object(entries) = value else {
        return Err("the definition must be a JSON object".to_string());
    };
    if entries.is_empty() {
        return Err("the definition is empty".to_string());
    }
    let mut table = FieldTable::new();
    for (key, value) in entries {
        let Some((_, kind)) = KEYS.iter().find(|(k, _)| *k == key) else {
            return Err(format!("'{key}' is not a recognised policy setting"));
        };
        let field = match (kind, &value) {
            (Kind::NonNegative, serde_json::Value::Number(n))
                if n.as_i64().is_some_and(|n| n >= 0) =>
            {
                FieldValue::I64(n.as_i64().expect("checked"))
            }
            (Kind::Positive, serde_json::Value::Number(n)) if n.as_i64().is_some_and(|n| n > 0) => {
                FieldValue::I64(n.as_i64().expect("checked"))
            }
            (Kind::Overflow, serde_json::Value::String(s))
                if matches!(
                    s.as_str(),
                    "drop-head" | "reject-publish" | "reject-publish-dlx"
                ) =>
            {
                FieldValue::LongStr(s.clone().into_bytes().into())
            }
            (Kind::Locator, serde_json::Value::String(s))
                if crate::queue_arguments::Locator::named(s).is_some() =>
            {
                FieldValue::LongStr(s.clone().into_bytes().into())
            }
            (Kind::Text, serde_json::Value::String(s)) => {
                FieldValue::LongStr(s.clone().into_bytes().into())
            }
            _ => {
                let wanted = match kind {
                    Kind::NonNegative => "a non-negative integer",
                    Kind::Positive => "a positive integer",
                    Kind::Overflow => "drop-head, reject-publish or reject-publish-dlx",
                    Kind::Text => "a string",
                    Kind::Locator => "client-local or balanced",
                };
                return Err(format!("'{key}' must be {wanted}, not {value}"));
            }
        };
        table.insert(key.as_str(), field);
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_are_checked_key_by_key() {
        let policy = Policy::new(
            "p",
            "^orders\\.",
            "queues",
            r#"{"message-ttl":1000,"dead-letter-exchange":"dlx"}"#,
            0,
        )
        .unwrap();
        assert_eq!(
            policy.definition.get("message-ttl"),
            Some(&FieldValue::I64(1000))
        );
        assert!(policy.applies_to_queue("orders.eu"));
        assert!(!policy.applies_to_queue("billing"));
        assert!(!policy.applies_to_exchange("orders.eu"), "queues only");
        let refused = [
            (r#"{"message-ttl":-1}"#, "'message-ttl' must be a non-negative integer, not -1"),
            (r#"{"expires":0}"#, "'expires' must be a positive integer, not 0"),
            (r#"{"overflow":"drop-tail"}"#, "'overflow' must be drop-head, reject-publish or reject-publish-dlx, not \"drop-tail\""),
            (r#"{"foo":1}"#, "'foo' is not a recognised policy setting"),
            (r#"{}"#, "the definition is empty"),
            (r#"[1]"#, "the definition must be a JSON object"),
        ];
        for (json, reason) in refused {
            assert_eq!(
                Policy::new("p", ".*", "all", json, 0).unwrap_err(),
                reason,
                "{json}"
            );
        }
        assert!(Policy::new("p", "(", "all", r#"{"max-length":1}"#, 0)
            .unwrap_err()
            .starts_with("invalid pattern '('"));
        assert_eq!(
            Policy::new("p", ".*", "streams", r#"{"max-length":1}"#, 0).unwrap_err(),
            "'streams' is not a valid apply-to value: use queues, exchanges or all"
        );
    }

    #[test]
    fn the_highest_priority_applies_then_the_first_name() {
        let make = |name: &str, priority| {
            Policy::new(name, ".*", "all", r#"{"max-length":1}"#, priority).unwrap()
        };
        let policies = [make("b", 1), make("a", 1), make("c", 5), make("z", 0)];
        assert_eq!(pick(policies.iter(), |_| true).unwrap().name, "c");
        assert_eq!(pick(policies[..2].iter(), |_| true).unwrap().name, "a");
        assert!(pick(policies.iter(), |_| false).is_none());
    }
}
