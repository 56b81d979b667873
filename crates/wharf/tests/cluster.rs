//! `wharf` nodes as an operator runs a cluster: three processes started with the same seed
//! list, on loopback ports, each with its own data directory. Formation in any start
//! order, `wharf ctl cluster_status`, users and vhosts made on one node and used on
//! another, a node that misses changes while it is down, a node cut off from the
//! majority refusing changes, a wrong secret, and bad settings. (Faults between machines,
//! in network namespaces, are `tests/cluster_faults.rs`.)

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lapin::{Connection, ConnectionProperties};

const SECRET: &str = "the cluster secret, long enough\n";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A temporary directory for one test's nodes, with the secret file in it.
struct Place(PathBuf);

impl Place {
    fn new(name: &str) -> Place {
        let dir = std::env::temp_dir().join(format!("wharf-cluster-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let place = Place(dir);
        place.write_secret("secret", SECRET);
        place
    }

    fn write_secret(&self, name: &str, text: &str) -> PathBuf {
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

/// One node's settings: its ports and directory.
#[derive(Clone)]
struct NodeSpec {
    name: String,
    data: PathBuf,
    amqp: u16,
    http: u16,
    cluster: u16,
    secret: PathBuf,
}

fn specs(place: &Place, count: usize) -> Vec<NodeSpec> {
    (0..count)
        .map(|i| NodeSpec {
            name: format!("n{i}"),
            data: place.0.join(format!("n{i}")),
            amqp: free_port(),
            http: free_port(),
            cluster: free_port(),
            secret: place.0.join("secret"),
        })
        .collect()
}

fn seeds(specs: &[NodeSpec]) -> String {
    specs
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.cluster))
        .collect::<Vec<_>>()
        .join(",")
}

/// A running node, killed when dropped.
struct Node {
    child: Child,
    spec: NodeSpec,
    /// Every line it logged, as it logs them.
    lines: mpsc::Receiver<String>,
}

impl Node {
    /// Starts a node; does not wait for it to be ready (a lone seed never is).
    fn spawn(spec: &NodeSpec, seeds: &str) -> Node {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wharf"))
            .args(["--node-name", &spec.name])
            .arg("--data-dir")
            .arg(&spec.data)
            .args(["--amqp-listen", &format!("127.0.0.1:{}", spec.amqp)])
            .args(["--http-listen", &format!("127.0.0.1:{}", spec.http)])
            .args(["--prometheus-listen", "none", "--amqps-listen", "none"])
            .args(["--cluster-listen", &format!("127.0.0.1:{}", spec.cluster)])
            .args(["--cluster-seeds", seeds])
            .arg("--cluster-secret-file")
            .arg(&spec.secret)
            .args(["--failed-login-delay", "0"])
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
    fn wait_for_line(&self, text: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => {}
                Err(_) => panic!(
                    "{}: no line with '{text}' within {within:?}",
                    self.spec.name
                ),
            }
        }
    }

    fn ready(self) -> Node {
        self.wait_for_line("wharf ready", Duration::from_secs(30));
        self
    }

    fn ctl(&self, args: &[&str]) -> Output {
        ctl(&self.spec.data, args, "")
    }

    fn kill(mut self) -> NodeSpec {
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

fn ctl(data: &Path, args: &[&str], stdin: &str) -> Output {
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

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `cluster_status --formatter json` of a node.
fn cluster_status(node: &Node) -> serde_json::Value {
    let output = node.ctl(&["cluster_status", "--formatter", "json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    serde_json::from_str(&stdout(&output)).unwrap()
}

/// Waits until every node reports every member up and the same leader.
fn agreed(nodes: &[&Node]) -> String {
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

async fn can_log_in(port: u16, user: &str, password: &str, vhost: &str) -> bool {
    let properties = ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio);
    let vhost = vhost.replace('/', "%2f");
    let url = format!("amqp://{user}:{password}@127.0.0.1:{port}/{vhost}");
    // A node that does not answer within the time does not let anyone in either.
    let attempt = Connection::connect(&url, properties);
    matches!(
        tokio::time::timeout(Duration::from_secs(10), attempt).await,
        Ok(Ok(_))
    )
}

fn http(method: &str, port: u16, path: &str, body: Option<&str>) -> (u16, String) {
    let mut command = Command::new("curl");
    command
        .args([
            "-s",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "-u",
            "guest:guest",
            "-X",
            method,
        ])
        .arg(format!("http://127.0.0.1:{port}{path}"));
    if let Some(body) = body {
        command.args(["-H", "content-type: application/json", "-d", body]);
    }
    let output = command.output().expect("curl runs");
    let text = stdout(&output);
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_form_one_cluster_and_share_users_and_vhosts() {
    let place = Place::new("share");
    let specs = specs(&place, 3);
    let seeds = seeds(&specs);
    // Started last to first: the order does not matter.
    let nodes: Vec<Node> = specs.iter().rev().map(|s| Node::spawn(s, &seeds)).collect();
    let nodes: Vec<Node> = nodes.into_iter().rev().map(Node::ready).collect();
    let all: Vec<&Node> = nodes.iter().collect();
    let leader = agreed(&all);
    assert!(["n0", "n1", "n2"].contains(&leader.as_str()));

    let table = stdout(&nodes[1].ctl(&["cluster_status"]));
    assert!(
        table.starts_with("name\taddress\tstate\trole\tleader\n"),
        "{table}"
    );
    for spec in &specs {
        let row = format!("{}\t127.0.0.1:{}\tup\tvoter\t", spec.name, spec.cluster);
        assert!(table.contains(&row), "{table}");
    }
    assert!(
        table.contains(&format!("Metadata leader: {leader}, term ")),
        "{table}"
    );

    // The default user exists once, on every node.
    for node in &nodes {
        assert!(can_log_in(node.spec.amqp, "guest", "guest", "/").await);
    }
    // A user and a vhost made on one node; permissions set on another; used on the third.
    let added = ctl(&specs[0].data, &["add_user", "alice"], "s3cret\n");
    assert!(added.status.success(), "{}", stderr(&added));
    let vhost = nodes[1].ctl(&["add_vhost", "orders"]);
    assert!(vhost.status.success(), "{}", stderr(&vhost));
    let permitted = nodes[2].ctl(&["set_permissions", "-p", "orders", "alice", ".*", ".*", ".*"]);
    assert!(permitted.status.success(), "{}", stderr(&permitted));
    for node in &nodes {
        assert!(
            can_log_in(node.spec.amqp, "alice", "s3cret", "orders").await,
            "{}",
            node.spec.name
        );
    }
    // Through the HTTP API as well: a user made over HTTP on one node is listed on another.
    let (code, body) = http(
        "PUT",
        specs[2].http,
        "/api/users/bob",
        Some(r#"{"password":"pw","tags":"monitoring"}"#),
    );
    assert_eq!(code, 201, "{body}");
    let (code, body) = http("GET", specs[0].http, "/api/users/bob", None);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"monitoring\""), "{body}");

    // Deleted on one node, gone on all: its logins fail everywhere.
    let deleted = nodes[0].ctl(&["delete_user", "alice"]);
    assert!(deleted.status.success(), "{}", stderr(&deleted));
    for node in &nodes {
        assert!(!can_log_in(node.spec.amqp, "alice", "s3cret", "orders").await);
    }
    let again = nodes[1].ctl(&["delete_user", "alice"]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("User \"alice\" does not exist"),
        "{}",
        stderr(&again)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_refuses_changes_and_a_restarted_one_catches_up() {
    let place = Place::new("minority");
    let specs = specs(&place, 3);
    let seeds = seeds(&specs);
    let nodes: Vec<Node> = specs.iter().map(|s| Node::spawn(s, &seeds)).collect();
    let mut nodes: Vec<Node> = nodes.into_iter().map(Node::ready).collect();
    agreed(&nodes.iter().collect::<Vec<_>>());

    // One node down: the two others are a majority, and go on.
    let down = nodes.remove(0).kill();
    let made = ctl(&specs[1].data, &["add_user", "while-down"], "pw\n");
    assert!(made.status.success(), "{}", stderr(&made));
    let status = cluster_status(&nodes[0]);
    let row = status["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["address"] == format!("127.0.0.1:{}", down.cluster))
        .cloned()
        .unwrap();
    assert_eq!(row["state"], "down", "{status}");

    // Back, with its own data: it rejoins and has what it missed.
    let back = Node::spawn(&down, &seeds).ready();
    let users = stdout(&back.ctl(&["list_users"]));
    assert!(users.contains("while-down"), "{users}");
    nodes.insert(0, back);
    agreed(&nodes.iter().collect::<Vec<_>>());

    // Two nodes down: the last one is no majority. It refuses changes at once and says
    // why (ctl and HTTP 503), and keeps serving what it has.
    let second = nodes.remove(1).kill();
    let third = nodes.remove(1).kill();
    let alone = &nodes[0];
    let started = Instant::now();
    let refused = alone.ctl(&["add_vhost", "refused"]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("no reachable leader"),
        "{}",
        stderr(&refused)
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "a refusal, not a hang"
    );
    let (code, body) = http("PUT", alone.spec.http, "/api/vhosts/refused", None);
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("no reachable leader"), "{body}");
    assert!(can_log_in(alone.spec.amqp, "guest", "guest", "/").await);
    let status = cluster_status(alone);
    assert!(status["leader"].is_null(), "{status}");

    // The others come back: the cluster takes changes again.
    let _second = Node::spawn(&second, &seeds).ready();
    let _third = Node::spawn(&third, &seeds).ready();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let made = alone.ctl(&["add_vhost", "after"]);
        if made.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "{}", stderr(&made));
        std::thread::sleep(Duration::from_millis(300));
    }
    let vhosts = stdout(&_second.ctl(&["list_vhosts"]));
    assert!(vhosts.contains("after"), "{vhosts}");
    assert!(!vhosts.contains("refused"), "{vhosts}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_the_wrong_secret_is_refused_and_says_so() {
    let place = Place::new("secret");
    let mut specs = specs(&place, 3);
    specs[2].secret = place.write_secret("other", "a different secret, just as long\n");
    let seeds = seeds(&specs);
    let honest: Vec<Node> = specs[..2].iter().map(|s| Node::spawn(s, &seeds)).collect();
    let intruder = Node::spawn(&specs[2], &seeds);
    let honest: Vec<Node> = honest.into_iter().map(Node::ready).collect();
    let line = intruder.wait_for_line("secret", Duration::from_secs(20));
    assert!(line.contains("ERROR"), "{line}");
    let status = cluster_status(&honest[0]);
    let row = status["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["address"] == format!("127.0.0.1:{}", specs[2].cluster))
        .cloned()
        .unwrap();
    assert_eq!(row["state"], "down", "{status}");
    // The intruder never got the cluster's users: it is not even ready to serve.
    assert!(!can_log_in(specs[2].amqp, "guest", "guest", "/").await);
}

#[test]
fn bad_cluster_settings_stop_the_start_with_a_reason() {
    let place = Place::new("settings");
    let spec = &specs(&place, 1)[0];
    let start = |extra: &[&str]| -> String {
        let output = Command::new(env!("CARGO_BIN_EXE_wharf"))
            .arg("--data-dir")
            .arg(&spec.data)
            .args(["--amqp-listen", &format!("127.0.0.1:{}", spec.amqp)])
            .args(["--http-listen", "none", "--prometheus-listen", "none"])
            .args(extra)
            .env("NO_COLOR", "1")
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap();
        assert!(!output.status.success());
        format!("{}{}", stdout(&output), stderr(&output))
    };
    let seeds = format!("127.0.0.1:{}", spec.cluster);
    let listen = seeds.clone();
    let without_secret = start(&["--cluster-seeds", &seeds, "--cluster-listen", &listen]);
    assert!(
        without_secret.contains("cluster_secret_file"),
        "{without_secret}"
    );
    let open_secret = place.0.join("open-secret");
    std::fs::write(&open_secret, SECRET).unwrap();
    let readable = start(&[
        "--cluster-seeds",
        &seeds,
        "--cluster-listen",
        &listen,
        "--cluster-secret-file",
        open_secret.to_str().unwrap(),
    ]);
    assert!(readable.contains("chmod 600"), "{readable}");
    let short = place.write_secret("short", "short\n");
    let too_short = start(&[
        "--cluster-seeds",
        &seeds,
        "--cluster-listen",
        &listen,
        "--cluster-secret-file",
        short.to_str().unwrap(),
    ]);
    assert!(too_short.contains("at least 16"), "{too_short}");
    let bad_seed = start(&[
        "--cluster-seeds",
        "node2:25672",
        "--cluster-listen",
        &listen,
    ]);
    assert!(bad_seed.contains("'node2:25672'"), "{bad_seed}");
}
