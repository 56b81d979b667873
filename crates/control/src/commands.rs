//! The commands of `wharf ctl` (rabbitmqctl's, as far as Wharf has them): a request names
//! an administration operation of the core, a response carries its refusal or its result
//! as a table or a text. [`execute`] runs one against a broker, whether it came over the
//! control socket or `wharf ctl` opened a stopped broker's data directory itself.

use serde::{Deserialize, Serialize};
use wharf_core::access::Permission;
use wharf_core::definitions_json;
use wharf_core::policy::Policy;
use wharf_core::{AdminResult, Broker};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    SetPolicy {
        vhost: String,
        name: String,
        pattern: String,
        definition: String,
        priority: i64,
        apply_to: String,
    },
    ClearPolicy {
        vhost: String,
        name: String,
    },
    ListPolicies {
        vhost: String,
    },
    /// `password` None: the user can log in only with a certificate.
    AddUser {
        name: String,
        password: Option<String>,
        #[serde(default)]
        tags: Vec<String>,
    },
    DeleteUser {
        name: String,
    },
    ChangePassword {
        name: String,
        password: String,
    },
    ClearPassword {
        name: String,
    },
    AuthenticateUser {
        name: String,
        password: String,
    },
    SetUserTags {
        name: String,
        tags: Vec<String>,
    },
    ListUsers,
    AddVhost {
        name: String,
        #[serde(default)]
        description: String,
        #[serde(default)]
        tags: Vec<String>,
    },
    DeleteVhost {
        name: String,
    },
    ListVhosts,
    SetPermissions {
        vhost: String,
        user: String,
        configure: String,
        write: String,
        read: String,
    },
    ClearPermissions {
        vhost: String,
        user: String,
    },
    /// Of one vhost.
    ListPermissions {
        vhost: String,
    },
    /// Of one user, in every vhost.
    ListUserPermissions {
        user: String,
    },
    SetTopicPermissions {
        vhost: String,
        user: String,
        exchange: String,
        write: String,
        read: String,
    },
    /// `exchange` None: on every exchange.
    ClearTopicPermissions {
        vhost: String,
        user: String,
        exchange: Option<String>,
    },
    ListTopicPermissions {
        vhost: String,
    },
    /// The open client connections; `columns`: rabbitmqctl's info keys (none: id, user,
    /// vhost, peer).
    ListConnections {
        #[serde(default)]
        columns: Vec<String>,
    },
    /// A vhost's consumers; `columns`: rabbitmqctl's info keys.
    ListConsumers {
        vhost: String,
        #[serde(default)]
        columns: Vec<String>,
    },
    /// Every open channel; `columns`: rabbitmqctl's info keys.
    ListChannels {
        #[serde(default)]
        columns: Vec<String>,
    },
    /// The broker as a whole: version, uptime, listeners, memory, disk, alarms, totals.
    Status,
    /// The cluster's members, their state, and the metadata leader and term.
    ClusterStatus,
    /// Removes a member that is down from the cluster (by node name or address).
    ForgetClusterNode {
        node: String,
    },
    /// Joins this (fresh) node to the cluster of the member at a cluster address.
    JoinCluster {
        address: String,
    },
    /// Closes a client connection (the id list_connections shows) with 320 and `reason`.
    CloseConnection {
        id: u64,
        reason: String,
    },
    /// A vhost's queues; `columns`: rabbitmqctl's info keys (none: name, messages).
    ListQueues {
        vhost: String,
        #[serde(default)]
        columns: Vec<String>,
    },
    /// A vhost's exchanges; `columns` as for queues (none: name, type).
    ListExchanges {
        vhost: String,
        #[serde(default)]
        columns: Vec<String>,
    },
    /// A vhost's bindings, the default exchange's implicit ones too.
    ListBindings {
        vhost: String,
        #[serde(default)]
        columns: Vec<String>,
    },
    /// Removes a queue's ready messages; the response's text is how many.
    PurgeQueue {
        vhost: String,
        name: String,
    },
    /// Deletes a queue (an exclusive one too); the response's text is how many messages
    /// it held.
    DeleteQueue {
        vhost: String,
        name: String,
        #[serde(default)]
        if_unused: bool,
        #[serde(default)]
        if_empty: bool,
    },
    /// `limits`: a JSON object of max-connections and max-queues.
    SetVhostLimits {
        vhost: String,
        limits: String,
    },
    ClearVhostLimits {
        vhost: String,
    },
    ListVhostLimits,
    /// The name clients, the management API and Prometheus show for the cluster.
    SetClusterName {
        name: String,
    },
    /// `limits`: a JSON object of max-connections and max-channels.
    SetUserLimits {
        user: String,
        limits: String,
    },
    ClearUserLimits {
        user: String,
    },
    ListUserLimits,
    /// Everything, as RabbitMQ's definitions JSON.
    ExportDefinitions,
    /// Definitions in RabbitMQ's JSON format, as text.
    ImportDefinitions {
        definitions: String,
    },
}

/// The answer to a request: a refusal, or success with a table (list commands) or a text.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rows: Vec<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

impl Response {
    pub fn ok() -> Response {
        Response {
            ok: true,
            ..Response::default()
        }
    }

    pub fn error(text: impl Into<String>) -> Response {
        Response {
            ok: false,
            error: Some(text.into()),
            ..Response::default()
        }
    }

    pub fn text(text: impl Into<String>) -> Response {
        Response {
            ok: true,
            text: Some(text.into()),
            ..Response::default()
        }
    }

    pub fn table(columns: &[&str], rows: Vec<Vec<String>>) -> Response {
        Response {
            ok: true,
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows,
            ..Response::default()
        }
    }
}

impl From<AdminResult> for Response {
    fn from(result: AdminResult) -> Self {
        match result {
            Ok(()) => Response::ok(),
            Err(error) => Response::error(error.message),
        }
    }
}

/// Tags as rabbitmqctl lists them: `[administrator, monitoring]`.
fn tag_list(tags: &[String]) -> String {
    format!("[{}]", tags.join(", "))
}

/// Runs one request against the broker.
pub fn execute(broker: &Broker, request: Request) -> Response {
    let vhost_named = |name: &str| {
        broker
            .vhost(name)
            .ok_or_else(|| Response::error(format!("Virtual host '{name}' does not exist")))
    };
    match request {
        Request::SetPolicy {
            vhost,
            name,
            pattern,
            definition,
            priority,
            apply_to,
        } => {
            let vhost = match vhost_named(&vhost) {
                Ok(vhost) => vhost,
                Err(response) => return response,
            };
            let policy = match Policy::new(&name, &pattern, &apply_to, &definition, priority) {
                Ok(policy) => policy,
                Err(reason) => return Response::error(reason),
            };
            match vhost.set_policy(policy) {
                Ok(()) => Response::ok(),
                Err(error) => Response::error(error.to_string()),
            }
        }
        Request::ClearPolicy { vhost, name } => {
            let vhost = match vhost_named(&vhost) {
                Ok(vhost) => vhost,
                Err(response) => return response,
            };
            match vhost.clear_policy(&name) {
                Ok(true) => Response::ok(),
                Ok(false) => {
                    Response::error(format!("no policy '{name}' in vhost '{}'", vhost.name))
                }
                Err(error) => Response::error(error.to_string()),
            }
        }
        Request::ListPolicies { vhost } => {
            let vhost = match vhost_named(&vhost) {
                Ok(vhost) => vhost,
                Err(response) => return response,
            };
            let rows = vhost
                .policies()
                .into_iter()
                .map(|p| {
                    vec![
                        vhost.name.to_string(),
                        p.name.to_string(),
                        p.pattern,
                        p.apply_to.as_str().to_string(),
                        p.definition_json,
                        p.priority.to_string(),
                    ]
                })
                .collect();
            Response::table(
                &[
                    "vhost",
                    "name",
                    "pattern",
                    "apply-to",
                    "definition",
                    "priority",
                ],
                rows,
            )
        }
        Request::AddUser {
            name,
            password,
            tags,
        } => broker.add_user(&name, password.as_deref(), tags).into(),
        Request::DeleteUser { name } => broker.delete_user(&name).into(),
        Request::ChangePassword { name, password } => {
            broker.change_password(&name, Some(&password)).into()
        }
        Request::ClearPassword { name } => broker.change_password(&name, None).into(),
        Request::AuthenticateUser { name, password } => {
            match broker.access.authenticate(&name, &password) {
                Some(_) => Response::ok(),
                None => Response::error(format!(
                    "Error: failed to authenticate user \"{name}\"\nuser '{name}' - invalid credentials"
                )),
            }
        }
        Request::SetUserTags { name, tags } => broker.set_user_tags(&name, tags).into(),
        Request::ListUsers => Response::table(
            &["user", "tags"],
            broker
                .access
                .users()
                .into_iter()
                .map(|u| vec![u.name, tag_list(&u.tags)])
                .collect(),
        ),
        Request::AddVhost {
            name,
            description,
            tags,
        } => broker.add_vhost(&name, &description, tags).into(),
        Request::DeleteVhost { name } => broker.delete_vhost(&name).into(),
        Request::ListVhosts => Response::table(
            &["name", "description", "tags"],
            broker
                .vhost_infos()
                .into_iter()
                .map(|v| vec![v.name, v.description, tag_list(&v.tags)])
                .collect(),
        ),
        Request::SetPermissions {
            vhost,
            user,
            configure,
            write,
            read,
        } => broker
            .set_permissions(&user, &vhost, &configure, &write, &read)
            .into(),
        Request::ClearPermissions { vhost, user } => broker.clear_permissions(&user, &vhost).into(),
        Request::ListPermissions { vhost } => {
            if let Err(response) = vhost_named(&vhost) {
                return response;
            }
            let rows = broker
                .access
                .permissions()
                .into_iter()
                .filter(|(v, _, _)| *v == vhost)
                .map(|(_, user, p)| permission_row(user, &p))
                .collect();
            Response::table(&["user", "configure", "write", "read"], rows)
        }
        Request::ListUserPermissions { user } => {
            if broker.access.user(&user).is_none() {
                return Response::error(format!("User \"{user}\" does not exist"));
            }
            let rows = broker
                .access
                .permissions()
                .into_iter()
                .filter(|(_, u, _)| *u == user)
                .map(|(vhost, _, p)| permission_row(vhost, &p))
                .collect();
            Response::table(&["vhost", "configure", "write", "read"], rows)
        }
        Request::SetTopicPermissions {
            vhost,
            user,
            exchange,
            write,
            read,
        } => broker
            .set_topic_permissions(&user, &vhost, &exchange, &write, &read)
            .into(),
        Request::ClearTopicPermissions {
            vhost,
            user,
            exchange,
        } => broker
            .clear_topic_permissions(&user, &vhost, exchange.as_deref())
            .into(),
        Request::ListTopicPermissions { vhost } => {
            if let Err(response) = vhost_named(&vhost) {
                return response;
            }
            let rows = broker
                .access
                .topic_permissions()
                .into_iter()
                .filter(|(v, _, _)| *v == vhost)
                .map(|(_, user, p)| vec![user, p.exchange, p.write, p.read])
                .collect();
            Response::table(&["user", "exchange", "write", "read"], rows)
        }
        Request::SetVhostLimits { vhost, limits } => {
            broker.set_vhost_limits(&vhost, &limits).into()
        }
        Request::ClearVhostLimits { vhost } => broker.clear_vhost_limits(&vhost).into(),
        Request::ListVhostLimits => Response::table(
            &["vhost", "limits"],
            broker
                .vhost_infos()
                .into_iter()
                .filter(|v| !v.limits.is_empty())
                .map(|v| vec![v.name, v.limits.to_json_text()])
                .collect(),
        ),
        Request::SetClusterName { name } => broker.set_cluster_name(&name).into(),
        Request::SetUserLimits { user, limits } => broker.set_user_limits(&user, &limits).into(),
        Request::ClearUserLimits { user } => broker.clear_user_limits(&user).into(),
        Request::ListUserLimits => Response::table(
            &["user", "limits"],
            broker
                .access
                .users()
                .into_iter()
                .filter(|u| !u.limits.is_empty())
                .map(|u| vec![u.name, u.limits.to_json_text()])
                .collect(),
        ),
        Request::ExportDefinitions => Response {
            ok: true,
            text: Some(definitions_json::export(broker).to_string()),
            ..Response::default()
        },
        Request::ImportDefinitions { definitions } => {
            match definitions_json::parse(&definitions)
                .and_then(|defs| definitions_json::import(broker, &defs))
            {
                Ok(done) => Response {
                    ok: true,
                    text: Some(format!(
                        "Imported {} vhosts, {} users, {} permissions, {} policies, {} exchanges, {} queues, {} bindings\n",
                        done.vhosts,
                        done.users,
                        done.permissions,
                        done.policies,
                        done.exchanges,
                        done.queues,
                        done.bindings
                    )),
                    ..Response::default()
                },
                Err(error) => Response::error(error.message),
            }
        }
        Request::ListQueues { vhost, columns } => match vhost_named(&vhost) {
            Ok(vhost) => crate::listing::queues(broker.node.name(), &vhost, &columns),
            Err(response) => response,
        },
        Request::ListExchanges { vhost, columns } => match vhost_named(&vhost) {
            Ok(vhost) => crate::listing::exchanges(&vhost, &columns),
            Err(response) => response,
        },
        Request::ListBindings { vhost, columns } => match vhost_named(&vhost) {
            Ok(vhost) => crate::listing::bindings(&vhost, &columns),
            Err(response) => response,
        },
        Request::PurgeQueue { vhost, name } => {
            let vhost = match vhost_named(&vhost) {
                Ok(vhost) => vhost,
                Err(response) => return response,
            };
            match vhost.queue(&name) {
                Ok(queue) => Response::text(queue.purge().to_string()),
                Err(error) => Response::error(error.detail),
            }
        }
        Request::DeleteQueue {
            vhost,
            name,
            if_unused,
            if_empty,
        } => {
            let vhost = match vhost_named(&vhost) {
                Ok(vhost) => vhost,
                Err(response) => return response,
            };
            match vhost.delete_queue_as_administrator(&name, if_unused, if_empty) {
                Ok(messages) => Response::text(messages.to_string()),
                Err(error) => Response::error(error.detail),
            }
        }
        Request::Status => crate::listing::status(broker),
        // Answered by the control socket, which can wait for the members' answers.
        Request::ClusterStatus
        | Request::ForgetClusterNode { .. }
        | Request::JoinCluster { .. } => match broker.cluster() {
            Some(_) => Response::error("cluster commands are answered by a running node only"),
            None => Response::error(
                "this node is not part of a cluster (started without --cluster-seeds or \
                 --cluster-listen); a node that is to join one is started with \
                 --cluster-listen and --cluster-secret-file",
            ),
        },
        Request::ListChannels { columns } => crate::listing::channels(broker, &columns),
        Request::ListConsumers { vhost, columns } => match vhost_named(&vhost) {
            Ok(found) => crate::listing::consumers(broker, &found.name, &columns),
            Err(response) => response,
        },
        Request::CloseConnection { id, reason } => {
            if broker.connections.close(id, &reason) {
                Response::ok()
            } else {
                Response::error(format!("no connection {id} is open"))
            }
        }
        Request::ListConnections { columns } => crate::listing::connections(broker, &columns),
    }
}

fn permission_row(first: String, p: &Permission) -> Vec<String> {
    vec![
        first,
        p.configure.as_str().to_string(),
        p.write.as_str().to_string(),
        p.read.as_str().to_string(),
    ]
}
