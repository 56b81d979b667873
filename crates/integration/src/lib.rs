//! Test harness: starts a real Wharf broker in-process on 127.0.0.1:0 for each test, or,
//! with `WHARF_TEST_EXTERNAL=host:port`, points the same tests at a broker already running
//! there (e.g. RabbitMQ, to check that a test expects what RabbitMQ does).

pub mod management;
pub mod netns;
pub mod pki;
pub mod raw;
pub mod small_disk;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::net::TcpListener;
use wharf_core::broker::{Broker, BrokerConfig};
use wharf_server::{ServerConfig, Shutdown};

pub struct TestBroker {
    pub addr: SocketAddr,
    /// The amqps listener, when started with TLS.
    pub tls_addr: Option<SocketAddr>,
    /// The management HTTP API, when started with it (`WHARF_TEST_EXTERNAL_HTTP` for an
    /// external broker).
    pub http_addr: Option<SocketAddr>,
    /// Its Prometheus metrics, when started with the management API
    /// (`WHARF_TEST_EXTERNAL_PROMETHEUS` for an external broker).
    pub metrics_addr: Option<SocketAddr>,
    /// The in-process broker, for looking inside it (None for an external broker).
    pub broker: Option<Arc<Broker>>,
    /// Stops the in-process broker when the test ends.
    _shutdown: Option<Shutdown>,
    server: Option<tokio::task::JoinHandle<()>>,
    http: Option<tokio::task::JoinHandle<()>>,
    metrics: Option<tokio::task::JoinHandle<()>>,
}

impl TestBroker {
    /// amqp URL for guest on vhost "/".
    pub fn url(&self) -> String {
        self.url_with("guest", "guest", "/")
    }

    pub fn url_with(&self, user: &str, password: &str, vhost: &str) -> String {
        let vhost = vhost.replace('%', "%25").replace('/', "%2f");
        format!("amqp://{user}:{password}@{}/{vhost}", self.addr)
    }

    pub fn is_external(&self) -> bool {
        self._shutdown.is_none()
    }

    /// Administration, given as rabbitmqctl's arguments (`add_user NAME PASSWORD`,
    /// `set_permissions -p VHOST USER CONF WRITE READ`, ...). In-process it goes through
    /// the control socket's requests; against an external broker, through the command
    /// `WHARF_TEST_RABBITMQCTL` names (rabbitmqctl with the environment it needs).
    /// Err holds the refusal's text.
    pub fn admin(&self, args: &[&str]) -> Result<(), String> {
        match &self.broker {
            Some(broker) => {
                let response = wharf_control::execute(broker, admin_request(args));
                match response.ok {
                    true => Ok(()),
                    false => Err(response.error.unwrap_or_default()),
                }
            }
            None => {
                let command = std::env::var("WHARF_TEST_RABBITMQCTL").expect(
                    "WHARF_TEST_RABBITMQCTL (the rabbitmqctl command line) for administration",
                );
                let mut words = command.split_whitespace();
                let program = words.next().expect("a command");
                let output = std::process::Command::new(program)
                    .args(words)
                    .args(args)
                    .output()
                    .expect("run rabbitmqctl");
                match output.status.success() {
                    true => Ok(()),
                    false => Err(String::from_utf8_lossy(&output.stderr).into_owned()),
                }
            }
        }
    }

    /// [`TestBroker::admin`] that must succeed.
    pub fn must(&self, args: &[&str]) {
        if let Err(error) = self.admin(args) {
            panic!("{args:?} refused: {error}");
        }
    }

    /// Shuts the in-process broker down and waits until it has let go of everything.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self._shutdown.take() {
            shutdown.trigger();
        }
        if let Some(server) = self.server.take() {
            server.await.expect("the server task panicked");
        }
        if let Some(http) = self.http.take() {
            http.await.expect("the HTTP API task panicked");
        }
        if let Some(metrics) = self.metrics.take() {
            metrics.await.expect("the metrics task panicked");
        }
    }
}

pub async fn start_broker() -> TestBroker {
    start_broker_with(ServerConfig::default()).await
}

/// Starts a broker with these listener settings (ignored for an external broker).
pub async fn start_broker_with(config: ServerConfig) -> TestBroker {
    start_broker_at("127.0.0.1:0".parse().expect("address"), config).await
}

/// Starts a broker whose data lives in `data_dir` (durable definitions are restored from
/// it), on a free port. Not available against an external broker.
pub async fn start_broker_in(data_dir: &std::path::Path) -> TestBroker {
    start_broker_in_with(data_dir, BrokerConfig::default()).await
}

/// `start_broker_in`, with these broker settings.
pub async fn start_broker_in_with(data_dir: &std::path::Path, config: BrokerConfig) -> TestBroker {
    let broker = Broker::open(config, data_dir).expect("open the data dir");
    serve_on(
        "127.0.0.1:0".parse().expect("address"),
        broker,
        ServerConfig::default(),
    )
    .await
}

/// `start_broker_in_with`, with these listener settings too (alarms, limits).
pub async fn start_broker_in_serving(
    data_dir: &std::path::Path,
    config: BrokerConfig,
    server: ServerConfig,
) -> TestBroker {
    let broker = Broker::open(config, data_dir).expect("open the data dir");
    serve_on("127.0.0.1:0".parse().expect("address"), broker, server).await
}

async fn serve_on(bind: SocketAddr, broker: Broker, config: ServerConfig) -> TestBroker {
    let listener = TcpListener::bind(bind).await.expect("bind the test broker");
    let addr = listener.local_addr().expect("local addr");
    let (shutdown, shutdown_rx) = Shutdown::new();
    let broker = Arc::new(broker);
    let server = tokio::spawn(wharf_server::serve(
        listener,
        broker.clone(),
        config,
        shutdown_rx,
    ));
    TestBroker {
        addr,
        tls_addr: None,
        http_addr: None,
        metrics_addr: None,
        broker: Some(broker),
        _shutdown: Some(shutdown),
        server: Some(server),
        http: None,
        metrics: None,
    }
}

/// Starts an in-process broker with an amqps listener (on its own free port) besides the
/// plain one. Not available against an external broker.
pub async fn start_broker_with_tls(tls: Arc<wharf_server::tls::Tls>) -> TestBroker {
    start_broker_with_tls_and(tls, ServerConfig::default()).await
}

/// As [`start_broker_with_tls`], both listeners with clones of `config`.
pub async fn start_broker_with_tls_and(
    tls: Arc<wharf_server::tls::Tls>,
    config: ServerConfig,
) -> TestBroker {
    let plain = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the test broker");
    let secure = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the TLS listener");
    let addr = plain.local_addr().expect("local addr");
    let tls_addr = Some(secure.local_addr().expect("local addr"));
    let (shutdown, shutdown_rx) = Shutdown::new();
    let broker = Arc::new(Broker::new(BrokerConfig::default()));
    let listeners = vec![
        wharf_server::Listening {
            listener: plain,
            tls: None,
        },
        wharf_server::Listening {
            listener: secure,
            tls: Some(tls),
        },
    ];
    let server = tokio::spawn(wharf_server::serve_all(
        listeners,
        broker.clone(),
        config,
        shutdown_rx,
    ));
    TestBroker {
        addr,
        tls_addr,
        http_addr: None,
        metrics_addr: None,
        broker: Some(broker),
        _shutdown: Some(shutdown),
        server: Some(server),
        http: None,
        metrics: None,
    }
}

/// Starts a broker with its management HTTP API on a free port too. Against an external
/// broker, `WHARF_TEST_EXTERNAL_HTTP` (host:port) names its API.
pub async fn start_broker_with_management() -> TestBroker {
    start_broker_with_management_and(ServerConfig::default()).await
}

/// [`start_broker_with_management`] with these listener settings (alarms, limits).
pub async fn start_broker_with_management_and(config: ServerConfig) -> TestBroker {
    let mut broker = start_broker_with(config).await;
    if broker.is_external() {
        let http = std::env::var("WHARF_TEST_EXTERNAL_HTTP")
            .expect("WHARF_TEST_EXTERNAL_HTTP (host:port of the management API)");
        broker.http_addr = Some(http.parse().expect("WHARF_TEST_EXTERNAL_HTTP is host:port"));
        broker.metrics_addr = std::env::var("WHARF_TEST_EXTERNAL_PROMETHEUS")
            .ok()
            .map(|m| {
                m.parse()
                    .expect("WHARF_TEST_EXTERNAL_PROMETHEUS is host:port")
            });
        return broker;
    }
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the management API");
    broker.http_addr = Some(listener.local_addr().expect("local addr"));
    let shutdown = broker._shutdown.as_ref().expect("in-process").subscribe();
    let core = broker.broker.clone().expect("in-process");
    // What the binary records of its listeners, for the health checks that ask.
    core.node.add_listener("amqp", broker.addr);
    core.node
        .add_listener("http", broker.http_addr.expect("bound above"));
    let listening = vec![wharf_http::Listening {
        listener,
        tls: None,
    }];
    broker.http = Some(tokio::spawn(wharf_http::serve(
        listening,
        core.clone(),
        wharf_http::session::Sessions::ephemeral(),
        shutdown.clone(),
    )));
    let metrics = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the metrics listener");
    broker.metrics_addr = Some(metrics.local_addr().expect("local addr"));
    let listening = vec![wharf_http::Listening {
        listener: metrics,
        tls: None,
    }];
    broker.metrics = Some(tokio::spawn(wharf_http::serve_prometheus(
        listening, core, shutdown,
    )));
    broker
}

/// Starts a broker listening on `bind` (port 0 picks a free port).
pub async fn start_broker_at(bind: SocketAddr, config: ServerConfig) -> TestBroker {
    if let Ok(external) = std::env::var("WHARF_TEST_EXTERNAL") {
        let addr = external
            .parse()
            .expect("WHARF_TEST_EXTERNAL must be host:port");
        return TestBroker {
            addr,
            tls_addr: None,
            http_addr: None,
            metrics_addr: None,
            broker: None,
            _shutdown: None,
            server: None,
            http: None,
            metrics: None,
        };
    }
    serve_on(bind, Broker::new(BrokerConfig::default()), config).await
}

/// rabbitmqctl's arguments as a control request (the commands the tests use).
fn admin_request(args: &[&str]) -> wharf_control::Request {
    use wharf_control::Request;
    let mut vhost = "/".to_string();
    let mut rest: Vec<String> = Vec::new();
    let mut words = args.iter();
    while let Some(word) = words.next() {
        if *word == "-p" {
            vhost = words.next().expect("-p VHOST").to_string();
        } else {
            rest.push(word.to_string());
        }
    }
    let arg = |i: usize| rest.get(i).cloned().unwrap_or_default();
    match rest.first().map(String::as_str) {
        Some("add_user") => Request::AddUser {
            name: arg(1),
            password: Some(arg(2)),
            tags: Vec::new(),
        },
        Some("delete_user") => Request::DeleteUser { name: arg(1) },
        Some("clear_password") => Request::ClearPassword { name: arg(1) },
        Some("change_password") => Request::ChangePassword {
            name: arg(1),
            password: arg(2),
        },
        Some("set_user_tags") => Request::SetUserTags {
            name: arg(1),
            tags: rest[2..].to_vec(),
        },
        Some("add_vhost") => Request::AddVhost {
            name: arg(1),
            description: String::new(),
            tags: Vec::new(),
        },
        Some("delete_vhost") => Request::DeleteVhost { name: arg(1) },
        Some("set_vhost_limits") => Request::SetVhostLimits {
            vhost,
            limits: arg(1),
        },
        Some("set_user_limits") => Request::SetUserLimits {
            user: arg(1),
            limits: arg(2),
        },
        Some("set_permissions") => Request::SetPermissions {
            vhost,
            user: arg(1),
            configure: arg(2),
            write: arg(3),
            read: arg(4),
        },
        Some("clear_permissions") => Request::ClearPermissions {
            vhost,
            user: arg(1),
        },
        Some("set_topic_permissions") => Request::SetTopicPermissions {
            vhost,
            user: arg(1),
            exchange: arg(2),
            write: arg(3),
            read: arg(4),
        },
        Some("import_definitions") => Request::ImportDefinitions {
            definitions: std::fs::read_to_string(arg(1)).expect("read the definitions file"),
        },
        Some("clear_topic_permissions") => Request::ClearTopicPermissions {
            vhost,
            user: arg(1),
            exchange: rest.get(2).cloned(),
        },
        other => panic!("no test mapping for {other:?}"),
    }
}

/// A name no other test (or earlier run against an external broker) uses.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{n}-{nanos:x}", std::process::id())
}
