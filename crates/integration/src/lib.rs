//! Test harness: starts a real Wharf broker in-process on 127.0.0.1:0 for each test, or,
//! with `WHARF_TEST_EXTERNAL=host:port`, points the same tests at a broker already running
//! there (e.g. RabbitMQ, to check that a test expects what RabbitMQ does).

pub mod raw;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::net::TcpListener;
use wharf_core::broker::{Broker, BrokerConfig};
use wharf_server::{ServerConfig, Shutdown};

pub struct TestBroker {
    pub addr: SocketAddr,
    /// The in-process broker, for looking inside it (None for an external broker).
    pub broker: Option<Arc<Broker>>,
    /// Stops the in-process broker when the test ends.
    _shutdown: Option<Shutdown>,
    server: Option<tokio::task::JoinHandle<()>>,
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

    /// Shuts the in-process broker down and waits until it has let go of everything.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self._shutdown.take() {
            shutdown.trigger();
        }
        if let Some(server) = self.server.take() {
            server.await.expect("the server task panicked");
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
        broker: Some(broker),
        _shutdown: Some(shutdown),
        server: Some(server),
    }
}

/// Starts a broker listening on `bind` (port 0 picks a free port).
pub async fn start_broker_at(bind: SocketAddr, config: ServerConfig) -> TestBroker {
    if let Ok(external) = std::env::var("WHARF_TEST_EXTERNAL") {
        let addr = external
            .parse()
            .expect("WHARF_TEST_EXTERNAL must be host:port");
        return TestBroker {
            addr,
            broker: None,
            _shutdown: None,
            server: None,
        };
    }
    serve_on(bind, Broker::new(BrokerConfig::default()), config).await
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
