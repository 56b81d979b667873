//! `wharf ctl list_queues`, `list_connections`, `list_channels` and `list_consumers` on a
//! cluster node list every node's: the node asks the other members for their rows (the
//! same command, run there) and adds them to its own. The `leader` of a queue and the
//! `node` of a connection, channel or consumer say whose each row is. A member that does
//! not answer is left out, but its queues are listed (by what every node knows of them)
//! in state `down`, as rabbitmqctl lists a queue whose node is down.

use std::sync::{Arc, Weak};

use serde_json::Value;
use wharf_core::cluster::{OperatorAnswers, OperatorRequest};
use wharf_core::queue::remote::RemoteQueue;
use wharf_core::Broker;

use crate::commands::{execute, Request, Response};

/// The kind of list other members are asked for: a ctl list command, run there.
const KIND: &str = "ctl:list";

/// Whether `request` lists what each node holds of its own.
pub fn lists_each_nodes(request: &Request) -> bool {
    matches!(
        request,
        Request::ListQueues { .. }
            | Request::ListConnections { .. }
            | Request::ListChannels { .. }
            | Request::ListConsumers { .. }
    )
}

/// Runs a list command on this node and on every other member, and lists every row.
pub async fn cluster_wide(broker: &Broker, request: Request) -> Response {
    let mut listed = execute(broker, request.clone());
    let Some(cluster) = broker.cluster() else {
        return listed;
    };
    if !listed.ok {
        return listed;
    }
    let argument = serde_json::to_string(&request).expect("requests serialize");
    let gathered = cluster
        .gather(OperatorRequest {
            kind: KIND.to_string(),
            argument,
        })
        .await;
    let mut silent = Vec::new();
    for member in gathered {
        match member.items {
            Some(rows) => listed.rows.extend(rows.iter().filter_map(row_cells)),
            None => silent.push(member.node),
        }
    }
    if let Request::ListQueues { vhost, .. } = &request {
        if let Some(vhost) = broker.vhost(vhost) {
            let mut down: Vec<Arc<RemoteQueue>> = vhost
                .remote_queues()
                .into_iter()
                .filter(|remote| silent.contains(&remote.home()))
                .collect();
            down.sort_by(|a, b| a.name.cmp(&b.name));
            for remote in down {
                let row = listed
                    .columns
                    .iter()
                    .map(|key| down_queue_cell(&remote, key))
                    .collect();
                listed.rows.push(row);
            }
        }
    }
    listed
}

/// A row another member answered: its cells, as text.
fn row_cells(row: &Value) -> Option<Vec<String>> {
    row.as_array()?
        .iter()
        .map(|cell| cell.as_str().map(str::to_string))
        .collect()
}

/// A cell of a queue whose node does not answer: what every node knows of it, its
/// figures unknown.
fn down_queue_cell(remote: &RemoteQueue, key: &str) -> String {
    let options = &remote.options;
    match key {
        "name" => remote.name.to_string(),
        "durable" => options.durable.to_string(),
        "auto_delete" => options.auto_delete.to_string(),
        "exclusive" => options.exclusive_owner.is_some().to_string(),
        "arguments" => crate::listing::arguments_json(&options.arguments),
        "type" => wharf_core::queue_arguments::queue_type(&options.arguments).to_string(),
        "leader" => remote.home(),
        "state" => "down".to_string(),
        _ => String::new(),
    }
}

/// This node's rows of a list command another member runs cluster-wide.
pub struct CtlAnswers(pub Weak<Broker>);

impl OperatorAnswers for CtlAnswers {
    fn answer_operator(&self, kind: &str, argument: &str) -> Vec<Value> {
        let Some(broker) = self.0.upgrade() else {
            return Vec::new();
        };
        let request = match serde_json::from_str::<Request>(argument) {
            Ok(request) if kind == KIND && lists_each_nodes(&request) => request,
            // Nothing but a list is run for another node.
            _ => return Vec::new(),
        };
        let response = execute(&broker, request);
        if !response.ok {
            return Vec::new();
        }
        response
            .rows
            .into_iter()
            .map(|row| Value::Array(row.into_iter().map(Value::String).collect()))
            .collect()
    }
}
