//! Definitions in RabbitMQ's JSON format (`rabbitmqctl export_definitions`, the management
//! API's /api/definitions): vhosts, users with their password hashes, permissions, topic
//! permissions, policies, exchanges, queues and bindings. A file exported from RabbitMQ
//! imports here with working logins, and the other way round.
//!
//! Export writes what RabbitMQ 3.10 writes, keys sorted, with two differences: the
//! version key is `wharf_version`, and internal exchanges are included (with
//! `"internal": true`) rather than left out. Exclusive queues are not exported (they
//! belong to a connection); neither are the `amq.*` and default exchanges.

use serde_json::{json, Value};
use wharf_amqp::{ByteString, FieldTable, FieldValue};

use crate::administration::{AdminError, AdminResult};
use crate::broker::Broker;
use crate::policy::Policy;
use crate::vhost::{ExchangeDeclare, QueueDeclare};

/// The connection id imports declare queues as: no connection, so nothing exclusive.
const NO_CONNECTION: u64 = 0;

/// An AMQP field value as JSON, as RabbitMQ's export writes it.
pub fn value_to_json(value: &FieldValue) -> Value {
    match value {
        FieldValue::Bool(b) => Value::Bool(*b),
        FieldValue::I8(n) => json!(n),
        FieldValue::U8(n) => json!(n),
        FieldValue::I16(n) => json!(n),
        FieldValue::U16(n) => json!(n),
        FieldValue::I32(n) => json!(n),
        FieldValue::U32(n) => json!(n),
        FieldValue::I64(n) => json!(n),
        FieldValue::F32(n) => json!(n),
        FieldValue::F64(n) => json!(n),
        FieldValue::Decimal { scale, value } => {
            json!(f64::from(*value) / 10f64.powi(i32::from(*scale)))
        }
        FieldValue::LongStr(b) | FieldValue::ByteArray(b) => {
            Value::String(String::from_utf8_lossy(b).into_owned())
        }
        FieldValue::Array(items) => Value::Array(items.iter().map(value_to_json).collect()),
        FieldValue::Timestamp(t) => json!(t),
        FieldValue::Table(table) => table_to_json(table),
        FieldValue::Void => Value::Null,
    }
}

/// A field table as a JSON object. A key the client sent twice keeps its first value, the
/// one every lookup (and so every check) used.
pub fn table_to_json(table: &FieldTable) -> Value {
    let mut object = serde_json::Map::new();
    for (k, v) in table.iter() {
        object
            .entry(k.to_string())
            .or_insert_with(|| value_to_json(v));
    }
    Value::Object(object)
}

/// JSON as an AMQP field value, as RabbitMQ's import reads it: integers as 64-bit.
pub fn json_to_value(value: &Value) -> FieldValue {
    match value {
        Value::Null => FieldValue::Void,
        Value::Bool(b) => FieldValue::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => FieldValue::I64(i),
            None => FieldValue::F64(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => FieldValue::LongStr(s.clone().into_bytes().into()),
        Value::Array(items) => FieldValue::Array(items.iter().map(json_to_value).collect()),
        Value::Object(_) => FieldValue::Table(json_to_table(value)),
    }
}

/// A JSON object as a field table (anything else: an empty table).
pub fn json_to_table(value: &Value) -> FieldTable {
    let mut table = FieldTable::new();
    if let Value::Object(entries) = value {
        for (k, v) in entries {
            table.insert(k.as_str(), json_to_value(v));
        }
    }
    table
}

/// Every definition of the broker, as RabbitMQ's JSON.
pub fn export(broker: &Broker) -> Value {
    let users: Vec<Value> = broker
        .access
        .users()
        .iter()
        .map(|u| {
            let (hash, algorithm) = match &u.password {
                Some(p) => (p.to_base64(), p.algorithm.name()),
                None => (String::new(), "rabbit_password_hashing_sha256"),
            };
            json!({
                "hashing_algorithm": algorithm,
                "limits": u.limits.to_json(),
                "name": u.name,
                "password_hash": hash,
                "tags": u.tags,
            })
        })
        .collect();
    let vhosts: Vec<Value> = broker
        .vhost_infos()
        .into_iter()
        .map(|v| {
            // RabbitMQ 3.10 writes a vhost's limits as [name, value] pairs.
            let limits: Vec<Value> = v.limits.iter().map(|(k, n)| json!([k, n])).collect();
            json!({
                "limits": limits,
                "metadata": {"description": v.description, "tags": v.tags},
                "name": v.name,
            })
        })
        .collect();
    let permissions: Vec<Value> = broker
        .access
        .permissions()
        .into_iter()
        .map(|(vhost, user, p)| {
            json!({
                "configure": p.configure.as_str(),
                "read": p.read.as_str(),
                "user": user,
                "vhost": vhost,
                "write": p.write.as_str(),
            })
        })
        .collect();
    let topic_permissions: Vec<Value> = broker
        .access
        .topic_permissions()
        .into_iter()
        .map(|(vhost, user, p)| {
            json!({
                "exchange": p.exchange,
                "read": p.read,
                "user": user,
                "vhost": vhost,
                "write": p.write,
            })
        })
        .collect();
    let (mut policies, mut exchanges, mut queues, mut bindings) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for vhost in broker.vhosts() {
        let vhost_name = vhost.name.to_string();
        for p in vhost.policies() {
            let definition: Value = serde_json::from_str(&p.definition_json).unwrap_or_default();
            policies.push(json!({
                "apply-to": p.apply_to.as_str(),
                "definition": definition,
                "name": p.name.to_string(),
                "pattern": p.pattern,
                "priority": p.priority,
                "vhost": vhost_name,
            }));
        }
        let mut vhost_exchanges = vhost.exchanges();
        vhost_exchanges.sort_by(|a, b| a.name.cmp(&b.name));
        for x in &vhost_exchanges {
            let standard = x.name.is_empty() || x.name.starts_with("amq.");
            if !standard {
                exchanges.push(json!({
                    "arguments": table_to_json(&x.arguments),
                    "auto_delete": x.auto_delete,
                    "durable": x.durable,
                    "internal": x.internal,
                    "name": x.name.to_string(),
                    "type": x.kind.as_str(),
                    "vhost": vhost_name,
                }));
            }
            if x.name.is_empty() {
                continue; // its bindings are implicit
            }
            for b in x.bindings() {
                let (destination, kind) = match &b.destination {
                    d if d.is_exclusive_queue() => continue,
                    d if d.is_queue() => (d.name().to_string(), "queue"),
                    d => (d.name().to_string(), "exchange"),
                };
                bindings.push(json!({
                    "arguments": table_to_json(&b.arguments),
                    "destination": destination,
                    "destination_type": kind,
                    "routing_key": b.routing_key.to_string(),
                    "source": x.name.to_string(),
                    "vhost": vhost_name,
                }));
            }
        }
        // On a cluster, the other nodes' queues too: the export is the cluster's.
        let mut vhost_queues: Vec<(ByteString, crate::queue::QueueOptions)> = vhost
            .queues()
            .iter()
            .map(|q| (q.name.clone(), q.options.clone()))
            .chain(
                vhost
                    .remote_queues()
                    .iter()
                    .map(|q| (q.name.clone(), q.options.clone())),
            )
            .collect();
        vhost_queues.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, options) in vhost_queues
            .iter()
            .filter(|(_, options)| options.exclusive_owner.is_none())
        {
            queues.push(json!({
                "arguments": table_to_json(&options.arguments),
                "auto_delete": options.auto_delete,
                "durable": options.durable,
                "name": name.to_string(),
                "type": "classic",
                "vhost": vhost_name,
            }));
        }
    }
    json!({
        "bindings": bindings,
        "exchanges": exchanges,
        "global_parameters": [],
        "parameters": [],
        "permissions": permissions,
        "policies": policies,
        "queues": queues,
        "topic_permissions": topic_permissions,
        "users": users,
        "vhosts": vhosts,
        "wharf_version": env!("CARGO_PKG_VERSION"),
    })
}

/// What an import made.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Imported {
    pub vhosts: usize,
    pub users: usize,
    pub permissions: usize,
    pub policies: usize,
    pub exchanges: usize,
    pub queues: usize,
    pub bindings: usize,
}

/// The error for one item of a definitions file, showing the item without its password
/// hash (errors reach logs and terminals).
fn bad(what: &str, item: &Value, reason: impl std::fmt::Display) -> AdminError {
    let mut shown = item.clone();
    if let Some(hash) = shown.get_mut("password_hash") {
        *hash = Value::String("<hidden>".into());
    }
    AdminError::invalid(format!("cannot import {what} {shown}: {reason}"))
}

fn text<'a>(item: &'a Value, key: &str) -> Option<&'a str> {
    item.get(key).and_then(Value::as_str)
}

fn required<'a>(what: &str, item: &'a Value, key: &str) -> AdminResult<&'a str> {
    text(item, key).ok_or_else(|| bad(what, item, format_args!("no \"{key}\"")))
}

fn flag(item: &Value, key: &str) -> bool {
    item.get(key).and_then(Value::as_bool).unwrap_or(false)
}

/// Tags as RabbitMQ writes them: a list, or (3.10 vhosts, older users) one
/// comma-separated string.
fn tags(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        Some(Value::String(s)) => s
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

/// Limits as RabbitMQ writes them (an object, or for vhosts [name, value] pairs), as a
/// JSON object's text; None when there are none.
fn limits_json(value: Option<&Value>) -> Option<String> {
    let object: serde_json::Map<String, Value> = match value? {
        Value::Object(map) => map.clone(),
        Value::Array(pairs) => pairs
            .iter()
            .filter_map(|pair| {
                let pair = pair.as_array()?;
                Some((pair.first()?.as_str()?.to_string(), pair.get(1)?.clone()))
            })
            .collect(),
        _ => return None,
    };
    (!object.is_empty()).then(|| Value::Object(object).to_string())
}

fn list<'a>(defs: &'a Value, key: &str) -> &'a [Value] {
    defs.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// Applies definitions in RabbitMQ's format: creates what is missing and replaces users,
/// permissions and policies of the same names. Stops at the first item that cannot be
/// applied, saying which (what came before it stays).
pub fn import(broker: &Broker, defs: &Value) -> AdminResult<Imported> {
    if !defs.is_object() {
        return Err(AdminError::invalid(
            "definitions must be a JSON object (as rabbitmqctl export_definitions writes)",
        ));
    }
    let mut done = Imported::default();
    for item in list(defs, "vhosts") {
        let name = required("vhost", item, "name")?;
        let metadata = item.get("metadata");
        let description = metadata
            .and_then(|m| text(m, "description"))
            .or_else(|| text(item, "description"))
            .unwrap_or("");
        let vhost_tags = tags(metadata.and_then(|m| m.get("tags")).or(item.get("tags")));
        broker
            .add_vhost(name, description, vhost_tags)
            .map_err(|e| bad("vhost", item, e))?;
        if let Some(limits) = limits_json(item.get("limits")) {
            broker
                .set_vhost_limits(name, &limits)
                .map_err(|e| bad("vhost", item, e))?;
        }
        done.vhosts += 1;
    }
    for item in list(defs, "users") {
        let name = required("user", item, "name")?;
        let hash = text(item, "password_hash").unwrap_or("");
        let algorithm = text(item, "hashing_algorithm").unwrap_or("rabbit_password_hashing_sha256");
        broker
            .import_user(name, hash, algorithm, tags(item.get("tags")))
            .map_err(|e| bad("user", item, e))?;
        if let Some(limits) = limits_json(item.get("limits")) {
            broker
                .set_user_limits(name, &limits)
                .map_err(|e| bad("user", item, e))?;
        }
        done.users += 1;
    }
    for item in list(defs, "permissions") {
        let field = |key| required("permission", item, key);
        broker
            .set_permissions(
                field("user")?,
                field("vhost")?,
                field("configure")?,
                field("write")?,
                field("read")?,
            )
            .map_err(|e| bad("permission", item, e))?;
        done.permissions += 1;
    }
    for item in list(defs, "topic_permissions") {
        let field = |key| required("topic permission", item, key);
        broker
            .set_topic_permissions(
                field("user")?,
                field("vhost")?,
                field("exchange")?,
                field("write")?,
                field("read")?,
            )
            .map_err(|e| bad("topic permission", item, e))?;
        done.permissions += 1;
    }
    for item in list(defs, "policies") {
        let vhost = required("policy", item, "vhost")?;
        let vhost = broker
            .vhost(vhost)
            .ok_or_else(|| bad("policy", item, "its vhost does not exist"))?;
        let definition = item
            .get("definition")
            .map(Value::to_string)
            .unwrap_or_else(|| "{}".to_string());
        let priority = item.get("priority").and_then(Value::as_i64).unwrap_or(0);
        let policy = Policy::new(
            required("policy", item, "name")?,
            required("policy", item, "pattern")?,
            text(item, "apply-to").unwrap_or("all"),
            &definition,
            priority,
        )
        .map_err(|e| bad("policy", item, e))?;
        vhost
            .set_policy(policy)
            .map_err(|e| bad("policy", item, e))?;
        done.policies += 1;
    }
    for item in list(defs, "exchanges") {
        let vhost = broker
            .vhost(required("exchange", item, "vhost")?)
            .ok_or_else(|| bad("exchange", item, "its vhost does not exist"))?;
        vhost
            .declare_exchange(ExchangeDeclare {
                name: ByteString::from(required("exchange", item, "name")?),
                kind: ByteString::from(required("exchange", item, "type")?),
                passive: false,
                durable: flag(item, "durable"),
                auto_delete: flag(item, "auto_delete"),
                internal: flag(item, "internal"),
                arguments: json_to_table(item.get("arguments").unwrap_or(&Value::Null)),
            })
            .map_err(|e| bad("exchange", item, e))?;
        done.exchanges += 1;
    }
    for item in list(defs, "queues") {
        let vhost = broker
            .vhost(required("queue", item, "vhost")?)
            .ok_or_else(|| bad("queue", item, "its vhost does not exist"))?;
        vhost
            .declare_queue(
                QueueDeclare {
                    name: ByteString::from(required("queue", item, "name")?),
                    server_named: false,
                    passive: false,
                    durable: flag(item, "durable"),
                    exclusive: false,
                    auto_delete: flag(item, "auto_delete"),
                    arguments: json_to_table(item.get("arguments").unwrap_or(&Value::Null)),
                },
                NO_CONNECTION,
            )
            .map_err(|e| bad("queue", item, e))?;
        done.queues += 1;
    }
    for item in list(defs, "bindings") {
        let vhost = broker
            .vhost(required("binding", item, "vhost")?)
            .ok_or_else(|| bad("binding", item, "its vhost does not exist"))?;
        let source = required("binding", item, "source")?;
        let destination = required("binding", item, "destination")?;
        let key = ByteString::from(text(item, "routing_key").unwrap_or(""));
        let arguments = json_to_table(item.get("arguments").unwrap_or(&Value::Null));
        let result = match required("binding", item, "destination_type")? {
            "queue" => vhost.bind_queue(destination, source, key, arguments, NO_CONNECTION),
            "exchange" => vhost.bind_exchange(destination, source, key, arguments),
            other => {
                return Err(bad(
                    "binding",
                    item,
                    format_args!("destination_type {other}"),
                ))
            }
        };
        result.map_err(|e| bad("binding", item, e))?;
        done.bindings += 1;
    }
    Ok(done)
}

/// Parses definitions text; a refusal says where the JSON is broken.
pub fn parse(text: &str) -> AdminResult<Value> {
    serde_json::from_str(text)
        .map_err(|e| AdminError::invalid(format!("the definitions are not JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_values_round_trip_through_json_as_rabbitmq_reads_them() {
        let value: Value = serde_json::from_str(
            r#"{"x-message-ttl":30000,"f":1.5,"s":"t","b":true,"a":[1,"x"],"o":{"n":null}}"#,
        )
        .unwrap();
        let table = json_to_table(&value);
        assert_eq!(table.get("x-message-ttl"), Some(&FieldValue::I64(30000)));
        assert_eq!(table.get("f"), Some(&FieldValue::F64(1.5)));
        assert_eq!(table_to_json(&table), value);
        assert_eq!(value_to_json(&FieldValue::I8(-3)), json!(-3));
        assert_eq!(
            value_to_json(&FieldValue::Decimal {
                scale: 2,
                value: 150
            }),
            json!(1.5)
        );
    }

    #[test]
    fn a_key_sent_twice_is_exported_with_the_value_lookups_use() {
        let table = FieldTable(vec![
            ("x-max-length".into(), FieldValue::I32(10)),
            ("x-max-length".into(), FieldValue::I32(1_000_000)),
        ]);
        assert_eq!(table.get("x-max-length"), Some(&FieldValue::I32(10)));
        assert_eq!(table_to_json(&table), json!({"x-max-length": 10}));
    }

    #[test]
    fn an_import_error_does_not_show_the_password_hash() {
        let user = json!({"name": "u", "password_hash": "c2VjcmV0aGFzaA==", "tags": []});
        let error = bad("user", &user, "no such thing").message;
        assert!(!error.contains("c2VjcmV0aGFzaA=="), "{error}");
        assert!(
            error.contains("\"name\":\"u\"") && error.contains("<hidden>"),
            "{error}"
        );
    }

    #[test]
    fn tags_are_read_as_lists_or_comma_separated_text() {
        assert_eq!(tags(Some(&json!(["a", "b"]))), vec!["a", "b"]);
        assert_eq!(tags(Some(&json!("a, b"))), vec!["a", "b"]);
        assert!(tags(Some(&json!(""))).is_empty());
        assert!(tags(None).is_empty());
    }
}
