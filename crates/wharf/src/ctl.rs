//! `wharf ctl`: administration with rabbitmqctl's command names. It talks to the running
//! broker through the control socket in its data directory; when no broker runs there,
//! it opens the data directory itself (locked meanwhile) and changes it directly, so
//! users and permissions can be set up before the first start.

use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use wharf_control::{Request, Response};
use wharf_core::broker::BrokerConfig;
use wharf_core::Broker;

#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The broker's data directory: its control socket is there [default: ./data]
    #[arg(long, env = "WHARF_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// How lists are printed: "table" (tab-separated with a header row, as rabbitmqctl
    /// -q prints them) or "json" (an array of objects, as rabbitmqctl --formatter json)
    #[arg(long, global = true, default_value = "table", value_parser = ["table", "json"])]
    formatter: String,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Debug, Subcommand)]
enum CtlCommand {
    /// Sets a policy: DEFINITION (JSON) applies to the queues and/or exchanges whose
    /// names match PATTERN (a regular expression), e.g.
    /// `wharf ctl set_policy DLX '^orders\.' '{"dead-letter-exchange":"dlx"}' --apply-to queues`
    #[command(name = "set_policy")]
    SetPolicy {
        name: String,
        pattern: String,
        definition: String,
        #[arg(short = 'p', long, default_value = "/")]
        vhost: String,
        /// Of the policies matching an object, the highest priority applies.
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        priority: i64,
        /// queues, exchanges or all.
        #[arg(long, default_value = "all")]
        apply_to: String,
    },
    /// Removes a policy.
    #[command(name = "clear_policy")]
    ClearPolicy {
        name: String,
        #[arg(short = 'p', long, default_value = "/")]
        vhost: String,
    },
    /// Lists a vhost's policies: vhost, name, pattern, apply-to, definition, priority.
    #[command(name = "list_policies")]
    ListPolicies {
        #[arg(short = 'p', long, default_value = "/")]
        vhost: String,
    },
    /// Adds a user. Without PASSWORD, it is read from the first line of standard input
    /// (keeping it out of the process list).
    #[command(name = "add_user")]
    AddUser {
        name: String,
        password: Option<String>,
        /// A user without password, who can log in only with a client certificate.
        #[arg(long, conflicts_with = "password")]
        no_password: bool,
        /// Tags, comma-separated: administrator, monitoring, policymaker, management.
        #[arg(long, value_delimiter = ',')]
        tags: Vec<String>,
    },
    /// Deletes a user and their permissions, and closes their connections.
    #[command(name = "delete_user")]
    DeleteUser { name: String },
    /// Sets a user's password (read from standard input when not given).
    #[command(name = "change_password")]
    ChangePassword {
        name: String,
        password: Option<String>,
    },
    /// Removes a user's password: certificate login only.
    #[command(name = "clear_password")]
    ClearPassword { name: String },
    /// Checks a user's password (read from standard input when not given).
    #[command(name = "authenticate_user")]
    AuthenticateUser {
        name: String,
        password: Option<String>,
    },
    /// Replaces a user's tags (none given: no tags).
    #[command(name = "set_user_tags")]
    SetUserTags { name: String, tags: Vec<String> },
    /// Lists users and their tags.
    #[command(name = "list_users")]
    ListUsers,
    /// Adds a vhost. No user may use it until given permissions on it.
    #[command(name = "add_vhost")]
    AddVhost {
        name: String,
        #[arg(long, default_value = "")]
        description: String,
        #[arg(long, value_delimiter = ',')]
        tags: Vec<String>,
    },
    /// Deletes a vhost with everything in it (messages included) and closes its
    /// connections.
    #[command(name = "delete_vhost")]
    DeleteVhost { name: String },
    /// Lists vhosts.
    #[command(name = "list_vhosts")]
    ListVhosts,
    /// Sets what USER may do in a vhost: regular expressions over the names of the
    /// exchanges and queues it may configure (declare, delete), write (publish to, bind
    /// to) and read (consume from, bind from, purge). "" allows nothing, ".*" all.
    #[command(name = "set_permissions")]
    SetPermissions {
        #[arg(short = 'p', long, default_value = "/")]
        vhost: String,
        user: String,
        configure: String,
        write: String,
        read: String,
    },
    /// Removes a user's permissions in a vhost (they can no longer connect to it).
    #[command(name = "clear_permissions")]
    ClearPermissions {
        #[arg(short = 'p', long, default_value = "/")]
        vhost: String,
        user: String,
    },
    /// Lists the permissions in a vhost.
    #[command(name = "list_permissions")]
    ListPermissions {
        #[arg(short = 'p', long, default_value = "/")]
        vhost: String,
    },
    /// Lists a user's permissions in every vhost.
    #[command(name = "list_user_permissions")]
    ListUserPermissions { user: String },
    /// Limits the routing keys USER may publish with (WRITE) and bind with (READ) on a
    /// topic exchange; `{username}` and `{vhost}` in a pattern stand for the user's.
    #[command(name = "set_topic_permissions")]
    SetTopicPermissions {
        #[arg(short = 'p', long, default_value = "/")]
        vhost: String,
        user: String,
        exchange: String,
        write: String,
        read: String,
    },
    /// Removes a user's topic permissions on EXCHANGE (or on every exchange).
    #[command(name = "clear_topic_permissions")]
    ClearTopicPermissions {
        #[arg(short = 'p', long, default_value = "/")]
        vhost: String,
        user: String,
        exchange: Option<String>,
    },
    /// Lists the topic permissions in a vhost.
    #[command(name = "list_topic_permissions")]
    ListTopicPermissions {
        #[arg(short = 'p', long, default_value = "/")]
        vhost: String,
    },
    /// Lists the open client connections with the columns named (info keys: id, name,
    /// user, vhost, peer, peer_host, peer_port, host, port, ssl, channels, recv_oct,
    /// send_oct, connected_at, user_provided_name, client_product, client_version,
    /// client_platform, protocol, state) [default: id user vhost peer]; `id` is what
    /// close_connection takes.
    #[command(name = "list_connections")]
    ListConnections { columns: Vec<String> },
    /// Closes a client connection, telling the client EXPLANATION (320 CONNECTION_FORCED);
    /// ID as list_connections shows it.
    #[command(name = "close_connection")]
    CloseConnection { id: u64, explanation: String },
    /// Lists the open channels with the columns named (info keys: connection, name,
    /// number, user, vhost, transactional, confirm, consumer_count,
    /// messages_unacknowledged, prefetch_count, global_prefetch_count, published,
    /// delivered, acked) [default: connection number user consumer_count
    /// messages_unacknowledged]
    #[command(name = "list_channels")]
    ListChannels { columns: Vec<String> },
    /// Lists a vhost's consumers with the columns named (info keys: queue_name,
    /// connection, channel, consumer_tag, ack_required, prefetch_count,
    /// messages_unacknowledged) [default: all but messages_unacknowledged]
    #[command(name = "list_consumers")]
    ListConsumers {
        #[arg(short = 'p', long, default_value = "/")]
        vhost: String,
        columns: Vec<String>,
    },
    /// The broker as a whole: version, uptime, listeners, memory and disk against their
    /// limits, alarms, and totals (connections, channels, queues, consumers, messages).
    #[command(name = "status")]
    Status,
    /// The cluster this node belongs to: each member's name, address, state (up, down,
    /// catching up), role (voter, learner) and whether it leads the metadata group
    #[command(name = "cluster_status")]
    ClusterStatus,
    /// Removes a member that is down from the cluster for good, by node name or cluster
    /// address (a running member is refused: stop it first). Before it may come back, its
    /// data directory's raft/ must be removed.
    #[command(name = "forget_cluster_node")]
    ForgetClusterNode { node: String },
    /// Joins this node to the cluster of the member at a cluster address (IP:PORT): for a
    /// node started with --cluster-listen and --cluster-secret-file but no seeds. A node
    /// that belongs to a cluster already is refused.
    #[command(name = "join_cluster")]
    JoinCluster { address: String },
    /// Lists a vhost's queues with the columns named (rabbitmqctl's info keys: name,
    /// durable, auto_delete, exclusive, arguments, policy, messages, messages_ready,
    /// messages_unacknowledged, messages_ready_ram, message_bytes, message_bytes_ready,
    /// message_bytes_unacknowledged, consumers, state, type, leader) [default: name
    /// messages]
    #[command(name = "list_queues")]
    ListQueues {
        #[arg(short = 'p', long, default_value = "/")]
        vhost: String,
        columns: Vec<String>,
    },
    /// Lists a vhost's exchanges (keys: name, type, durable, auto_delete, internal,
    /// arguments, policy) [default: name type]
    #[command(name = "list_exchanges")]
    ListExchanges {
        #[arg(short = 'p', long, default_value = "/")]
        vhost: String,
        columns: Vec<String>,
    },
    /// Lists a vhost's bindings, the default exchange's too (keys: source_name,
    /// source_kind, destination_name, destination_kind, routing_key, arguments)
    #[command(name = "list_bindings")]
    ListBindings {
        #[arg(short = 'p', long, default_value = "/")]
        vhost: String,
        columns: Vec<String>,
    },
    /// Removes the ready messages of a queue.
    #[command(name = "purge_queue")]
    PurgeQueue {
        name: String,
        #[arg(short = 'p', long, default_value = "/")]
        vhost: String,
    },
    /// Deletes a queue (an exclusive one too), with its messages.
    #[command(name = "delete_queue")]
    DeleteQueue {
        name: String,
        #[arg(short = 'p', long, default_value = "/")]
        vhost: String,
        /// Only if it has no consumers.
        #[arg(short = 'u', long)]
        if_unused: bool,
        /// Only if it has no messages.
        #[arg(short = 'e', long)]
        if_empty: bool,
    },
    /// Sets a vhost's limits, replacing those set before: JSON with max-connections
    /// and/or max-queues (negative: no limit; 0: none allowed), e.g.
    /// `wharf ctl set_vhost_limits -p shop '{"max-connections": 100}'`
    #[command(name = "set_vhost_limits")]
    SetVhostLimits {
        #[arg(short = 'p', long, default_value = "/")]
        vhost: String,
        limits: String,
    },
    /// Removes a vhost's limits.
    #[command(name = "clear_vhost_limits")]
    ClearVhostLimits {
        #[arg(short = 'p', long, default_value = "/")]
        vhost: String,
    },
    /// Lists the vhosts that have limits, with them.
    #[command(name = "list_vhost_limits")]
    ListVhostLimits,
    /// Names the cluster (RabbitMQ's set_cluster_name): the name clients see in the
    /// cluster_name server property, the management API and Prometheus show; on a
    /// cluster, every node's. Unset, it is the node's name (on a cluster, the first
    /// leader's).
    #[command(name = "set_cluster_name")]
    SetClusterName { name: String },
    /// Sets a user's limits, replacing those set before: JSON with max-connections
    /// and/or max-channels (over all the user's connections).
    #[command(name = "set_user_limits")]
    SetUserLimits { user: String, limits: String },
    /// Removes a user's limits.
    #[command(name = "clear_user_limits")]
    ClearUserLimits { user: String },
    /// Lists the users that have limits, with them.
    #[command(name = "list_user_limits")]
    ListUserLimits,
    /// Writes every definition (vhosts, users with password hashes, permissions,
    /// policies, exchanges, queues, bindings) as RabbitMQ's definitions JSON to FILE
    /// ("-": standard output).
    #[command(name = "export_definitions")]
    ExportDefinitions { file: PathBuf },
    /// Applies definitions in RabbitMQ's JSON format from FILE ("-": standard input),
    /// e.g. a file from `rabbitmqctl export_definitions`.
    #[command(name = "import_definitions")]
    ImportDefinitions { file: PathBuf },
}

/// The first line of standard input, for a password not given on the command line.
fn read_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

fn password_or_stdin(password: Option<String>) -> anyhow::Result<String> {
    match password {
        Some(password) => Ok(password),
        None => read_password(),
    }
}

fn request_of(command: CtlCommand) -> anyhow::Result<Request> {
    Ok(match command {
        CtlCommand::SetPolicy {
            name,
            pattern,
            definition,
            vhost,
            priority,
            apply_to,
        } => Request::SetPolicy {
            vhost,
            name,
            pattern,
            definition,
            priority,
            apply_to,
        },
        CtlCommand::ClearPolicy { name, vhost } => Request::ClearPolicy { vhost, name },
        CtlCommand::ListPolicies { vhost } => Request::ListPolicies { vhost },
        CtlCommand::AddUser {
            name,
            password,
            no_password,
            tags,
        } => Request::AddUser {
            name,
            password: if no_password {
                None
            } else {
                Some(password_or_stdin(password)?)
            },
            tags,
        },
        CtlCommand::DeleteUser { name } => Request::DeleteUser { name },
        CtlCommand::ChangePassword { name, password } => Request::ChangePassword {
            name,
            password: password_or_stdin(password)?,
        },
        CtlCommand::ClearPassword { name } => Request::ClearPassword { name },
        CtlCommand::AuthenticateUser { name, password } => Request::AuthenticateUser {
            name,
            password: password_or_stdin(password)?,
        },
        CtlCommand::SetUserTags { name, tags } => Request::SetUserTags { name, tags },
        CtlCommand::ListUsers => Request::ListUsers,
        CtlCommand::AddVhost {
            name,
            description,
            tags,
        } => Request::AddVhost {
            name,
            description,
            tags,
        },
        CtlCommand::DeleteVhost { name } => Request::DeleteVhost { name },
        CtlCommand::ListVhosts => Request::ListVhosts,
        CtlCommand::SetPermissions {
            vhost,
            user,
            configure,
            write,
            read,
        } => Request::SetPermissions {
            vhost,
            user,
            configure,
            write,
            read,
        },
        CtlCommand::ClearPermissions { vhost, user } => Request::ClearPermissions { vhost, user },
        CtlCommand::ListPermissions { vhost } => Request::ListPermissions { vhost },
        CtlCommand::ListUserPermissions { user } => Request::ListUserPermissions { user },
        CtlCommand::SetTopicPermissions {
            vhost,
            user,
            exchange,
            write,
            read,
        } => Request::SetTopicPermissions {
            vhost,
            user,
            exchange,
            write,
            read,
        },
        CtlCommand::ClearTopicPermissions {
            vhost,
            user,
            exchange,
        } => Request::ClearTopicPermissions {
            vhost,
            user,
            exchange,
        },
        CtlCommand::ListTopicPermissions { vhost } => Request::ListTopicPermissions { vhost },
        CtlCommand::ListConnections { columns } => Request::ListConnections { columns },
        CtlCommand::Status => Request::Status,
        CtlCommand::ClusterStatus => Request::ClusterStatus,
        CtlCommand::ForgetClusterNode { node } => Request::ForgetClusterNode { node },
        CtlCommand::JoinCluster { address } => Request::JoinCluster { address },
        CtlCommand::ListChannels { columns } => Request::ListChannels { columns },
        CtlCommand::ListConsumers { vhost, columns } => Request::ListConsumers { vhost, columns },
        CtlCommand::CloseConnection { id, explanation } => Request::CloseConnection {
            id,
            reason: explanation,
        },
        CtlCommand::ListQueues { vhost, columns } => Request::ListQueues { vhost, columns },
        CtlCommand::ListExchanges { vhost, columns } => Request::ListExchanges { vhost, columns },
        CtlCommand::ListBindings { vhost, columns } => Request::ListBindings { vhost, columns },
        CtlCommand::PurgeQueue { name, vhost } => Request::PurgeQueue { vhost, name },
        CtlCommand::DeleteQueue {
            name,
            vhost,
            if_unused,
            if_empty,
        } => Request::DeleteQueue {
            vhost,
            name,
            if_unused,
            if_empty,
        },
        CtlCommand::SetVhostLimits { vhost, limits } => Request::SetVhostLimits { vhost, limits },
        CtlCommand::ClearVhostLimits { vhost } => Request::ClearVhostLimits { vhost },
        CtlCommand::ListVhostLimits => Request::ListVhostLimits,
        CtlCommand::SetClusterName { name } => Request::SetClusterName { name },
        CtlCommand::SetUserLimits { user, limits } => Request::SetUserLimits { user, limits },
        CtlCommand::ClearUserLimits { user } => Request::ClearUserLimits { user },
        CtlCommand::ListUserLimits => Request::ListUserLimits,
        CtlCommand::ExportDefinitions { .. } => Request::ExportDefinitions,
        CtlCommand::ImportDefinitions { file } => {
            let definitions = if file.as_os_str() == "-" {
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .context("cannot read the definitions from standard input")?;
                text
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?
            };
            Request::ImportDefinitions { definitions }
        }
    })
}

pub fn run(args: CtlArgs) -> anyhow::Result<()> {
    let data_dir = args.data_dir.unwrap_or_else(|| PathBuf::from("./data"));
    let export_to = match &args.command {
        CtlCommand::ExportDefinitions { file } if file.as_os_str() != "-" => Some(file.clone()),
        _ => None,
    };
    // What a command that answers with a count says about it.
    let is_status = matches!(args.command, CtlCommand::Status);
    let is_cluster_status = matches!(args.command, CtlCommand::ClusterStatus);
    let told = match &args.command {
        CtlCommand::PurgeQueue { name, .. } => Some(format!("Queue '{name}' purged of")),
        CtlCommand::DeleteQueue { .. } => Some("Queue was successfully deleted with".to_string()),
        _ => None,
    };
    let request = request_of(args.command)?;
    let response = send(&data_dir, &request)?;
    if !response.ok {
        anyhow::bail!("{}", response.error.unwrap_or_default());
    }
    if is_cluster_status {
        match (args.formatter.as_str(), &response.text) {
            ("json", Some(json)) => println!("{json}"),
            _ => {
                println!("{}", response.columns.join("\t"));
                for row in &response.rows {
                    println!("{}", row.join("\t"));
                }
                let whole: serde_json::Value = response
                    .text
                    .as_deref()
                    .and_then(|text| serde_json::from_str(text).ok())
                    .unwrap_or_default();
                let leader = whole["leader"]
                    .as_str()
                    .unwrap_or("none (no majority reachable)");
                println!("\nMetadata leader: {leader}, term {}", whole["term"]);
            }
        }
        return Ok(());
    }
    if !response.columns.is_empty() {
        if args.formatter == "json" && is_status {
            println!("{}", json_status(&response.rows));
        } else if args.formatter == "json" {
            println!("{}", json_rows(&response.columns, &response.rows));
        } else {
            println!("{}", response.columns.join("\t"));
            for row in &response.rows {
                println!("{}", row.join("\t"));
            }
        }
    }
    if let (Some(told), Some(count)) = (told, &response.text) {
        println!("{told} {count} messages");
        return Ok(());
    }
    match (response.text, export_to) {
        (Some(text), Some(file)) => std::fs::write(&file, text)
            .with_context(|| format!("cannot write {}", file.display()))?,
        (Some(text), None) => print!("{text}"),
        (None, _) => {}
    }
    Ok(())
}

/// A list as rabbitmqctl's JSON formatter prints it: an array of objects, counts as
/// numbers, flags as booleans, arguments as objects, the rest as strings.
fn json_rows(columns: &[String], rows: &[Vec<String>]) -> String {
    use serde_json::Value;
    let typed = |column: &str, cell: &str| -> Value {
        match column {
            "messages"
            | "messages_ready"
            | "messages_unacknowledged"
            | "messages_ready_ram"
            | "message_bytes"
            | "message_bytes_ready"
            | "message_bytes_unacknowledged"
            | "consumers"
            | "consumer_count"
            | "connection"
            | "channel"
            | "number"
            | "prefetch_count"
            | "global_prefetch_count"
            | "published"
            | "delivered"
            | "acked"
            | "channels"
            | "recv_oct"
            | "send_oct"
            | "connected_at"
            | "peer_port"
            | "port"
            | "id"
            | "memory"
            | "messages_unacknowledged_ram"
            | "priority" => cell
                .parse::<i64>()
                .map(Value::from)
                .unwrap_or_else(|_| cell.into()),
            "consumer_utilisation" => cell
                .parse::<f64>()
                .map(Value::from)
                .unwrap_or_else(|_| cell.into()),
            "durable" | "auto_delete" | "exclusive" | "internal" | "ssl" | "confirm"
            | "transactional" | "ack_required" | "active" => match cell {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                other => other.into(),
            },
            "arguments" => serde_json::from_str(cell).unwrap_or_else(|_| cell.into()),
            _ => cell.into(),
        }
    };
    let objects: Vec<Value> = rows
        .iter()
        .map(|row| {
            Value::Object(
                columns
                    .iter()
                    .zip(row)
                    .map(|(column, cell)| (column.clone(), typed(column, cell)))
                    .collect(),
            )
        })
        .collect();
    Value::Array(objects).to_string()
}

/// `status` as one JSON object: figures as numbers, flags as booleans, an unmeasured
/// figure as null.
fn json_status(rows: &[Vec<String>]) -> String {
    use serde_json::Value;
    let object: serde_json::Map<String, Value> = rows
        .iter()
        .filter_map(|row| match row.as_slice() {
            [key, value] => {
                let value = if value.is_empty() && key.ends_with("_bytes") {
                    Value::Null
                } else if let Ok(n) = value.parse::<u64>() {
                    Value::from(n)
                } else if let Ok(b) = value.parse::<bool>() {
                    Value::Bool(b)
                } else {
                    Value::from(value.as_str())
                };
                Some((key.clone(), value))
            }
            _ => None,
        })
        .collect();
    Value::Object(object).to_string()
}

/// Runs the request on the broker serving `data_dir`, or, if none runs there, on the
/// data directory itself.
fn send(data_dir: &Path, request: &Request) -> anyhow::Result<Response> {
    let socket = data_dir.join(wharf_control::SOCKET_FILE);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    match runtime.block_on(wharf_control::request(&socket, request)) {
        Ok(response) => Ok(response),
        Err(error)
            if matches!(
                error.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) && data_dir.join("VERSION").exists() =>
        {
            // No broker listens: change the stopped broker's data directory. Opening it
            // takes its lock, so a broker starting meanwhile waits for nothing half-written.
            let broker = Broker::open(BrokerConfig::default(), data_dir).with_context(|| {
                format!(
                    "no broker answers at {}, and its data directory cannot be opened",
                    socket.display()
                )
            })?;
            Ok(wharf_control::execute(&broker, request.clone()))
        }
        Err(error) => Err(error).with_context(|| {
            format!(
                "cannot reach the broker at {} (is it running with --data-dir {}?)",
                socket.display(),
                data_dir.display()
            )
        }),
    }
}
