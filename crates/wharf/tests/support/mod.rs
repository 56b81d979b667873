//! Cluster nodes as separate `wharf` processes, for the cluster tests: their settings,
//! starting and killing them, `wharf ctl` on them, what they log, and their clients. A
//! node runs on loopback, or inside a network namespace of a [`Network`] for fault tests.

#![allow(dead_code)] // each test file uses its own part

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lapin::{Connection, ConnectionProperties};
pub use wharf_integration::netns::Network;

pub mod quorum;

/// The cluster's default user: an administrator that may log in from anywhere (guest may
/// not leave loopback, and fault tests reach nodes over their own network).
pub const ADMIN: &str = "admin";
pub const ADMIN_PASSWORD: &str = "admin-password";

pub const SECRET: &str = "the cluster secret, long enough\n";

/// A port for a node to listen on: free now, below the kernel's ephemeral range (so
/// that no outgoing connection of the many the nodes open takes it before the node
/// binds it, as happens to a port the kernel picked from that range), and never handed
/// out twice by this test process.
pub fn free_port() -> u16 {
    use rand::Rng;
    use std::sync::Mutex;
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let mut random = rand::thread_rng();
    loop {
        let port = random.gen_range(10_000..32_000);
        if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
}

/// A temporary directory for one test's nodes, with the secret file in it.
pub struct Place(pub PathBuf);

impl Place {
    pub fn new(name: &str) -> Place {
        let dir = std::env::temp_dir().join(format!("wharf-cluster-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let place = Place(dir);
        place.write_secret("secret", SECRET);
        place
    }

    pub fn write_secret(&self, name: &str, text: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One node's settings: its address, ports and directory, and the namespace it runs in.
#[derive(Clone)]
pub struct NodeSpec {
    pub name: String,
    pub data: PathBuf,
    pub host: IpAddr,
    pub amqp: u16,
    pub http: u16,
    /// Prometheus' port.
    pub metrics: u16,
    pub cluster: u16,
    pub secret: PathBuf,
    /// None: the test's own namespace.
    pub namespace: Option<String>,
    /// TLS between the nodes: the node's certificate, key, the CA, and the amqps port
    /// that the broker's TLS then opens too.
    pub tls: Option<(PathBuf, PathBuf, PathBuf, u16)>,
}

impl NodeSpec {
    pub fn cluster_address(&self) -> String {
        format!("{}:{}", self.host, self.cluster)
    }
}

/// Nodes on loopback, on free ports.
pub fn specs(place: &Place, count: usize) -> Vec<NodeSpec> {
    (0..count)
        .map(|i| NodeSpec {
            name: format!("n{i}"),
            data: place.0.join(format!("n{i}")),
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            amqp: free_port(),
            http: free_port(),
            metrics: free_port(),
            cluster: free_port(),
            secret: place.0.join("secret"),
            namespace: None,
            tls: None,
        })
        .collect()
}

/// Nodes each in its namespace of `network`, on the standard ports of their own address.
pub fn specs_in(place: &Place, network: &Network, count: usize) -> Vec<NodeSpec> {
    (0..count)
        .map(|i| NodeSpec {
            name: format!("n{i}"),
            data: place.0.join(format!("n{i}")),
            host: IpAddr::V4(network.address(i)),
            amqp: 5672,
            http: 15672,
            metrics: 15692,
            cluster: 25672,
            secret: place.0.join("secret"),
            namespace: Some(network.namespace(i).to_string()),
            tls: None,
        })
        .collect()
}

pub fn seeds(specs: &[NodeSpec]) -> String {
    specs
        .iter()
        .map(NodeSpec::cluster_address)
        .collect::<Vec<_>>()
        .join(",")
}

/// Starts a node for each spec, waits until each is ready and all agree on a leader.
pub fn start_all(specs: &[NodeSpec]) -> Vec<Node> {
    let seeds = seeds(specs);
    let nodes: Vec<Node> = specs.iter().map(|s| Node::spawn(s, &seeds)).collect();
    let nodes: Vec<Node> = nodes.into_iter().map(Node::ready).collect();
    agreed(&nodes.iter().collect::<Vec<_>>());
    nodes
}

/// A running node, killed when dropped.
pub struct Node {
    child: Child,
    pub spec: NodeSpec,
    /// Every line it logged, as it logs them.
    lines: mpsc::Receiver<String>,
}

impl Node {
    /// Starts a node (with no seeds: one that waits to be joined); does not wait for it
    /// to be ready (a lone seed never is).
    pub fn spawn(spec: &NodeSpec, seeds: &str) -> Node {
        let binary = env!("CARGO_BIN_EXE_wharf");
        let mut command = match &spec.namespace {
            None => Command::new(binary),
            Some(namespace) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", namespace, binary]);
                command
            }
        };
        command
            .args(["--node-name", &spec.name])
            .arg("--data-dir")
            .arg(&spec.data)
            .args(["--amqp-listen", &format!("{}:{}", spec.host, spec.amqp)])
            .args(["--http-listen", &format!("{}:{}", spec.host, spec.http)])
            .args([
                "--prometheus-listen",
                &format!("{}:{}", spec.host, spec.metrics),
            ]);
        match &spec.tls {
            None => {
                command.args(["--amqps-listen", "none"]);
            }
            Some((cert, key, ca, amqps)) => {
                command
                    .arg("--tls-cert")
                    .arg(cert)
                    .arg("--tls-key")
                    .arg(key)
                    .arg("--tls-ca")
                    .arg(ca)
                    .args(["--amqps-listen", &format!("{}:{amqps}", spec.host)])
                    .arg("--cluster-tls");
            }
        }
        if !seeds.is_empty() {
            // Without: a node that waits for `wharf ctl join_cluster`.
            command.args(["--cluster-seeds", seeds]);
        }
        let mut child = command
            .args(["--cluster-listen", &spec.cluster_address()])
            .arg("--cluster-secret-file")
            .arg(&spec.secret)
            .args(["--failed-login-delay", "0"])
            .args(["--default-user", ADMIN, "--default-pass", ADMIN_PASSWORD])
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (sender, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let out = sender.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = out.send(line);
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
        Node {
            child,
            spec: spec.clone(),
            lines,
        }
    }

    /// Waits for a logged line containing `text`; returns it.
    /// On a timeout, the panic shows the last lines the node logged meanwhile.
    pub fn wait_for_line(&self, text: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        let mut seen: std::collections::VecDeque<String> = Default::default();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(text) => return line,
                Ok(line) => {
                    if seen.len() == 60 {
                        seen.pop_front();
                    }
                    // A panic's message is kept whatever follows it.
                    if line.contains("panicked") {
                        seen.clear();
                    }
                    seen.push_back(line);
                }
                Err(_) => panic!(
                    "{}: no line with '{text}' within {within:?}; it logged meanwhile:\n{}",
                    self.spec.name,
                    Vec::from(seen).join("\n")
                ),
            }
        }
    }

    pub fn ready(self) -> Node {
        self.wait_for_line("wharf ready", Duration::from_secs(30));
        self
    }

    pub fn ctl(&self, args: &[&str]) -> Output {
        ctl(&self.spec.data, args, "")
    }

    /// Freezes the process (SIGSTOP): it holds its connections but answers nothing.
    pub fn pause(&self) {
        signal(self.child.id(), "-STOP");
    }

    pub fn resume(&self) {
        signal(self.child.id(), "-CONT");
    }

    /// Stops the node as an operator would (SIGTERM), and waits for it to exit.
    pub fn stop(mut self) -> NodeSpec {
        signal(self.child.id(), "-TERM");
        let _ = self.child.wait();
        self.spec.clone()
    }

    pub fn kill(mut self) -> NodeSpec {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.spec.clone()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn ctl(data: &Path, args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .arg("ctl")
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `cluster_status --formatter json` of a node.
pub fn cluster_status(node: &Node) -> serde_json::Value {
    let output = node.ctl(&["cluster_status", "--formatter", "json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    serde_json::from_str(&stdout(&output)).unwrap()
}

/// Waits until every node reports every member up and the same leader.
pub fn agreed(nodes: &[&Node]) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let statuses: Vec<serde_json::Value> = nodes.iter().map(|n| cluster_status(n)).collect();
        let leaders: Vec<&serde_json::Value> = statuses.iter().map(|s| &s["leader"]).collect();
        let all_up = statuses.iter().all(|s| {
            s["members"]
                .as_array()
                .is_some_and(|m| m.iter().all(|m| m["state"] == "up"))
        });
        if all_up && leaders[0].is_string() && leaders.iter().all(|l| *l == leaders[0]) {
            return leaders[0].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "no agreement: {statuses:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub async fn can_log_in(node: &NodeSpec, user: &str, password: &str, vhost: &str) -> bool {
    log_in(node, user, password, vhost).await.is_some()
}

/// A connection as `user` to `vhost` of a node, if it lets the user in within 10 s.
pub async fn log_in(
    node: &NodeSpec,
    user: &str,
    password: &str,
    vhost: &str,
) -> Option<Connection> {
    let (host, port) = (node.host, node.amqp);
    let properties = ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio);
    let vhost = vhost.replace('/', "%2f");
    let url = format!("amqp://{user}:{password}@{host}:{port}/{vhost}");
    // A node that does not answer within the time does not let anyone in either.
    let attempt = Connection::connect(&url, properties);
    match tokio::time::timeout(Duration::from_secs(10), attempt).await {
        Ok(Ok(connection)) => Some(connection),
        _ => None,
    }
}

pub fn http(method: &str, node: &NodeSpec, path: &str, body: Option<&str>) -> (u16, String) {
    let mut command = Command::new("curl");
    command
        .args([
            "-s",
            "--max-time",
            "20",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "-u",
            &format!("{ADMIN}:{ADMIN_PASSWORD}"),
            "-X",
            method,
        ])
        .arg(format!("http://{}:{}{path}", node.host, node.http));
    if let Some(body) = body {
        command.args(["-H", "content-type: application/json", "-d", body]);
    }
    let output = command.output().expect("curl runs");
    let text = stdout(&output);
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn signal(pid: u32, which: &str) {
    let status = Command::new("kill")
        .args([which, &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {which} {pid}");
}

/// An AMQP connection to a node, as the cluster's administrator, on vhost `/`.
pub async fn connect(spec: &NodeSpec) -> lapin::Connection {
    try_connect(spec).await.unwrap()
}

/// [`connect`], or the error (a node down, cut off or paused: the caller retries).
pub async fn try_connect(spec: &NodeSpec) -> lapin::Result<lapin::Connection> {
    let properties = ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio);
    let url = format!(
        "amqp://{ADMIN}:{ADMIN_PASSWORD}@{}:{}/%2f",
        spec.host, spec.amqp
    );
    Connection::connect(&url, properties).await
}

/// A channel on a connection of its own (a refused operation closes the channel, and
/// some close the connection).
pub async fn channel(spec: &NodeSpec) -> lapin::Channel {
    connect(spec).await.create_channel().await.unwrap()
}

pub fn durable() -> lapin::options::QueueDeclareOptions {
    lapin::options::QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

/// The text a refused operation closed its channel (or connection) with: "code - text".
pub fn refusal(error: lapin::Error) -> String {
    match error {
        lapin::Error::ProtocolError(e) => format!("{} - {}", e.get_id(), e.get_message()),
        other => other.to_string(),
    }
}
