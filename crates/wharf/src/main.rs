//! The `wharf` command: runs the broker (the default), and its tools (`wharf perf`,
//! `wharf ctl`).

mod cluster_config;
mod config;
mod ctl;

use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use wharf_core::broker::{Broker, BrokerConfig};
use wharf_server::alarm::{DiskAlarmConfig, MemoryAlarmConfig};
use wharf_server::listen;
use wharf_server::sockets::SocketBudget;
use wharf_server::{Listening, ServerConfig, Shutdown};
use wharf_store::StoreError;

use crate::config::{Config, ServeArgs};

#[derive(Debug, Parser)]
#[command(name = "wharf", version, about = "An AMQP 0-9-1 message broker")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the broker (what `wharf` with no subcommand does).
    Serve(Box<ServeArgs>),
    /// Measure an AMQP 0-9-1 broker (Wharf, RabbitMQ, ...): rates and latencies.
    Perf(wharf_perf::PerfArgs),
    /// Administer the broker (users, vhosts, permissions, policies): a running one through
    /// its control socket, a stopped one through its data directory.
    Ctl(ctl::CtlArgs),
}

fn main() -> anyhow::Result<()> {
    // Everything Wharf writes is its own: definitions with password hashes, messages, the
    // control socket (which administers the broker), exported definitions.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Serve(args)) => *args,
        Some(Command::Perf(args)) => return perf(&args),
        Some(Command::Ctl(args)) => return ctl::run(args),
        None => cli.serve,
    };
    let config = Config::resolve(&args)?;
    init_logging(&config.log_level, config.log_format)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(serve(config))
}

/// The data directory holds password hashes and the control socket: others should not be
/// able to enter it. Wharf makes it 0700; one made beforehand is the operator's to fix.
fn warn_if_shared(data_dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(metadata) = std::fs::metadata(data_dir) {
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                data_dir = %data_dir.display(),
                mode = format_args!("{mode:o}"),
                "the data directory is open to other users; `chmod 700` it"
            );
        }
    }
}

/// File descriptors kept back from connections: segment files, logs, the control socket.
const RESERVED_FILE_DESCRIPTORS: u64 = 256;

/// The connection limit and the socket budget of all listeners together. Sockets: what the
/// file descriptors allow (raising the soft limit to the hard one first, as RabbitMQ's
/// packaging does), less those kept for the store. Connections: the number configured, or
/// an eighth less than the sockets, so that clients over the limit still get its reason at
/// connection.open; sockets are capped an eighth (and 64) above the connections.
fn connection_limits(configured: Option<usize>) -> (usize, SocketBudget) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let descriptors = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Err(_) => 1024,
    };
    let by_descriptors = descriptors
        .saturating_sub(RESERVED_FILE_DESCRIPTORS)
        .max(16);
    let by_descriptors = usize::try_from(by_descriptors).unwrap_or(usize::MAX);
    let connections = configured
        .unwrap_or(by_descriptors - by_descriptors / 8)
        .min(by_descriptors);
    let sockets = connections
        .saturating_add(connections / 8 + 64)
        .min(by_descriptors);
    tracing::info!(
        connections,
        sockets,
        file_descriptors = descriptors,
        "connection limit"
    );
    (connections, SocketBudget::new(Some(sockets)))
}

/// Runs `wharf perf`; a run that saw errors exits non-zero after its summary.
fn perf(args: &wharf_perf::PerfArgs) -> anyhow::Result<()> {
    let summary = wharf_perf::run(args)?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print!("{}", summary.text());
    }
    if !summary.errors.is_empty() {
        anyhow::bail!("the run saw {} error(s)", summary.errors.len());
    }
    Ok(())
}

/// Logs go to standard output: as text, coloured only on a terminal (and never with
/// NO_COLOR set), or as one JSON object a line.
fn init_logging(level: &str, format: config::LogFormat) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    // openraft narrates every election and vote at info: with a group per quorum queue
    // that drowns the broker's own lines, so its info is not shown unless asked for.
    let directives = if level.contains("openraft") {
        level.to_string()
    } else {
        format!("{level},openraft=warn")
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .with_context(|| format!("invalid log level '{level}'"))?;
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        config::LogFormat::Text => {
            let colour = std::io::stdout().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            logs.with_ansi(colour).init();
        }
        config::LogFormat::Json => logs.json().init(),
    }
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let broker_config = BrokerConfig {
        fsync: config.fsync,
        default_user: config.default_user.clone(),
        default_pass: config.default_pass.clone(),
        force_recovery: config.force_recovery,
        // A cluster makes the default vhost and user once, for every node.
        seed_defaults: config.cluster.is_none(),
        clustered: config.cluster.is_some(),
        node_name: config.node_name.clone(),
        ..BrokerConfig::default()
    };
    let broker = match Broker::open(broker_config, &config.data_dir) {
        Ok(broker) => broker,
        Err(error) => {
            let damaged = matches!(
                error,
                StoreError::Corrupt { .. } | StoreError::Damaged { .. }
            ) && !config.force_recovery;
            let error = anyhow::Error::new(error).context(format!(
                "cannot open data dir {}",
                config.data_dir.display()
            ));
            if damaged {
                return Err(error.context(
                    "refusing to start on damaged data; nothing on disk was changed. \
                     --force-recovery starts with what still reads, logging every loss and \
                     keeping a copy of each damaged file (see docs/storage.md)",
                ));
            }
            return Err(error);
        }
    };
    warn_if_shared(&config.data_dir);
    let broker = Arc::new(broker);
    let (shutdown, shutdown_rx) = Shutdown::new();
    // First: a cluster node waiting to join is told where through `wharf ctl join_cluster`.
    let control_socket = config.data_dir.join(wharf_control::SOCKET_FILE);
    let control = match wharf_control::bind(&control_socket) {
        Ok(listener) => Some(tokio::spawn(wharf_control::serve(
            listener,
            control_socket.clone(),
            broker.clone(),
            shutdown_rx.clone(),
        ))),
        Err(error) => {
            tracing::warn!(
                %error,
                socket = %control_socket.display(),
                "cannot serve the control socket: wharf ctl cannot reach this broker"
            );
            None
        }
    };
    if let Some(settings) = &config.cluster {
        // Before any listener: a node serves clients only once it has the cluster's
        // definitions (its users above all), never its own defaults.
        join_cluster(settings, &config, &broker, shutdown_rx.clone()).await?;
    }
    let mut listeners = Vec::new();
    for &address in &config.amqp_listen {
        let listener =
            listen::bind(address).with_context(|| format!("cannot listen on {address} (AMQP)"))?;
        listeners.push(Listening {
            listener,
            tls: None,
        });
    }
    let (max_connections, sockets) = connection_limits(config.max_connections);
    broker.node.set_connection_limit(max_connections as u64);
    let server_config = ServerConfig {
        disk_alarm: Some(DiskAlarmConfig::new(
            config.data_dir.clone(),
            config.disk_free_limit_bytes,
        )),
        consumer_timeout: config.consumer_timeout,
        failed_login_delay: config.failed_login_delay,
        max_connections: Some(max_connections),
        sockets,
        channel_max: config.channel_max,
        frame_max: config.frame_max,
        max_message_bytes: config.max_message_size,
        handshake_timeout: config.handshake_timeout,
        consumer_max_per_channel: config.consumer_max_per_channel,
        memory_alarm: Some(MemoryAlarmConfig::new(
            config
                .vm_memory_high_watermark
                .bytes(wharf_server::alarm::available_memory_bytes().unwrap_or(u64::MAX)),
        )),
        ..ServerConfig::default()
    };
    let tls = match &config.tls {
        Some(settings) => {
            let tls = Arc::new(
                wharf_server::tls::Tls::load(settings.clone()).context("cannot set up TLS")?,
            );
            note_certificates(&broker, &tls);
            for &address in &config.amqps_listen {
                let listener = listen::bind(address)
                    .with_context(|| format!("cannot listen on {address} (AMQPS)"))?;
                listeners.push(Listening {
                    listener,
                    tls: Some(tls.clone()),
                });
            }
            Some(tls)
        }
        None => None,
    };
    let mut listening = Vec::new();
    for Listening { listener, tls } in &listeners {
        let address = listener.local_addr()?;
        let protocol = if tls.is_some() { "amqp/ssl" } else { "amqp" };
        broker.node.add_listener(protocol, address);
        match tls {
            None => {
                tracing::info!(%address, "AMQP listening on {address}");
                listening.push(format!("AMQP listening on {address}"));
            }
            Some(_) => {
                tracing::info!(%address, "AMQPS (TLS) listening on {address}");
                listening.push(format!("AMQPS on {address}"));
            }
        }
    }
    let server = tokio::spawn(wharf_server::serve_all(
        listeners,
        broker.clone(),
        server_config,
        shutdown_rx.clone(),
    ));
    let http = serve_http(&config, &broker, tls.as_ref(), &shutdown)?;
    for line in &http.listening {
        listening.push(line.clone());
    }
    let mut signals = Signals::install()?;
    let listening = listening.join(", ");
    tracing::info!(data_dir = %config.data_dir.display(), "wharf ready, {listening}");
    while signals.wait().await == Signal::Reload {
        match &tls {
            Some(tls) => match tls.reload() {
                Ok(()) => {
                    note_certificates(&broker, tls);
                    tracing::info!("TLS certificate, key and CA read again")
                }
                Err(error) => {
                    tracing::error!(%error, "TLS files not reloaded: the ones in use stay")
                }
            },
            None => tracing::info!("SIGHUP: nothing to reload (no TLS listener)"),
        }
    }
    tracing::info!("shutting down");
    shutdown.trigger();
    server.await.context("server task failed")?;
    if let Some(control) = control {
        control.await.context("control socket task failed")?;
    }
    for task in http.tasks {
        task.await.context("HTTP task failed")?;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Tells the node which certificates its listeners present (for the API's
/// certificate-expiration check).
/// How long a restarted cluster node waits to catch up with the others before it serves
/// what it has.
const CATCH_UP_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// Starts this node's cluster membership: its Raft state, its listener for the other
/// nodes, formation or rejoining; then waits until the cluster's definitions (its users
/// above all) are here, so that no client is served with a node's own defaults.
async fn join_cluster(
    settings: &cluster_config::ClusterSettings,
    config: &Config,
    broker: &Arc<Broker>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    use wharf_cluster::{BrokerApplier, ClusterConfig, ClusterHandle, ClusterNode, Secret};
    let secret = Secret::load(&settings.secret_file).map_err(anyhow::Error::msg)?;
    let cluster_config = ClusterConfig {
        node_name: broker.node.name().to_string(),
        listen: settings.listen,
        seeds: settings.seeds.clone(),
        secret,
        tls: settings.tls.clone(),
    };
    let applier = Arc::new(BrokerApplier {
        broker: broker.clone(),
    });
    let node = ClusterNode::start(cluster_config, &config.data_dir, applier, shutdown.clone())
        .await
        .context("cannot start the cluster node")?;
    broker.attach_cluster(Arc::new(ClusterHandle {
        node: node.clone(),
        runtime: tokio::runtime::Handle::current(),
    }));
    broker.node.add_listener("clustering", settings.listen);
    tokio::spawn(node.clone().seed_when_leading(
        wharf_core::broker::seed_changes(&broker.config),
        shutdown.clone(),
    ));
    let mut waited = 0u64;
    while !node.is_seeded() {
        if *shutdown.borrow() {
            return Ok(());
        }
        if waited.is_multiple_of(10) && !settings.seeds.is_empty() {
            tracing::info!(
                seeds = ?settings.seeds,
                "waiting for the cluster: a majority of the seeds must be up"
            );
        }
        waited += 1;
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    // A node that was down catches up before it serves: what changed meanwhile (a user
    // deleted) must hold here too. Cut off from the majority, it serves what it has.
    let caught_up = tokio::time::timeout(CATCH_UP_WAIT, async {
        while node.sync().await.is_err() {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
    })
    .await;
    match caught_up {
        Ok(()) => {
            tracing::info!(node = %broker.node.name(), "in step with the cluster");
            let forgotten = broker.forget_lost_queues();
            if forgotten > 0 {
                tracing::info!(
                    queues = forgotten,
                    "transient and exclusive queues of this node's last run deleted"
                );
            }
        }
        Err(_) => tracing::warn!(
            node = %broker.node.name(),
            "the cluster's majority is not reachable: serving the definitions this node has; \
             changes are refused until it is"
        ),
    }
    Ok(())
}

fn note_certificates(broker: &Broker, tls: &wharf_server::tls::Tls) {
    match tls.presented_certificates() {
        Ok(chain) => broker.node.set_certificates(
            chain
                .into_iter()
                .map(|(subject, not_after)| wharf_core::node::NodeCertificate {
                    subject,
                    not_after,
                })
                .collect(),
        ),
        Err(error) => tracing::warn!(%error, "cannot read the certificate's expiry"),
    }
}

/// The management HTTP API and the Prometheus metrics, started.
struct HttpServing {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// For the ready line.
    listening: Vec<String>,
}

/// Binds the HTTP (and HTTPS) listeners of the management API, and Prometheus's, and
/// serves them.
fn serve_http(
    config: &Config,
    broker: &Arc<Broker>,
    tls: Option<&Arc<wharf_server::tls::Tls>>,
    shutdown: &Shutdown,
) -> anyhow::Result<HttpServing> {
    let mut bound = Vec::new();
    for &address in &config.http_listen {
        let listener = listen::bind(address)
            .with_context(|| format!("cannot listen on {address} (HTTP API)"))?;
        bound.push((listener, None));
    }
    if let Some(tls) = tls {
        for &address in &config.https_listen {
            let listener = listen::bind(address)
                .with_context(|| format!("cannot listen on {address} (HTTPS API)"))?;
            let tls = tls.clone();
            let source: wharf_http::TlsSource = Arc::new(move || tls.acceptor());
            bound.push((listener, Some(source)));
        }
    }
    let mut listening = Vec::new();
    let mut listeners = Vec::new();
    let mut metrics = Vec::new();
    for &address in &config.prometheus_listen {
        let listener = listen::bind(address)
            .with_context(|| format!("cannot listen on {address} (Prometheus)"))?;
        let address = listener.local_addr()?;
        broker.node.add_listener("http/prometheus", address);
        tracing::info!(%address, "Prometheus metrics on {address}");
        listening.push(format!("Prometheus on {address}"));
        metrics.push(wharf_http::Listening {
            listener,
            tls: None,
        });
    }
    for (listener, tls) in bound {
        let address = listener.local_addr()?;
        let (protocol, name) = match tls {
            None => ("http", "HTTP API"),
            Some(_) => ("https", "HTTPS API"),
        };
        broker.node.add_listener(protocol, address);
        tracing::info!(%address, "{name} listening on {address}");
        listening.push(format!("{name} on {address}"));
        listeners.push(wharf_http::Listening { listener, tls });
    }
    let mut tasks = Vec::new();
    if !listeners.is_empty() {
        // The web UI's sessions are signed with a key kept beside the data, so that a
        // restart does not log everyone out.
        let key = config.data_dir.join("http-session.key");
        let sessions = match wharf_http::session::Sessions::load_or_create(&key) {
            Ok(sessions) => sessions,
            Err(error) => {
                // The UI still works; its logins just end with this run.
                tracing::warn!(%error, path = %key.display(), "cannot keep the web UI's session key: sessions end at restart");
                wharf_http::session::Sessions::ephemeral()
            }
        };
        tasks.push(tokio::spawn(wharf_http::serve(
            listeners,
            broker.clone(),
            sessions,
            shutdown.subscribe(),
        )));
    }
    if !metrics.is_empty() {
        tasks.push(tokio::spawn(wharf_http::serve_prometheus(
            metrics,
            broker.clone(),
            shutdown.subscribe(),
        )));
    }
    Ok(HttpServing { tasks, listening })
}

/// Signal handlers, installed before the ready line so that a SIGTERM sent as soon as the
/// broker says it is ready still shuts it down cleanly.
struct Signals {
    term: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

#[derive(Debug, PartialEq, Eq)]
enum Signal {
    /// SIGTERM or SIGINT.
    Stop,
    /// SIGHUP: read the TLS files again.
    Reload,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            interrupt: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            hangup: signal(SignalKind::hangup()).context("cannot handle SIGHUP")?,
        })
    }

    async fn wait(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Stop,
            _ = self.interrupt.recv() => Signal::Stop,
            _ = self.hangup.recv() => Signal::Reload,
        }
    }
}
