//! The `wharf` binary as a user runs it: configuration from env and file, the ready line,
//! AMQP on the configured port, a clean exit on SIGTERM, clear errors for bad settings.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary, its management API and metrics on free ports (tests run side by side).
fn wharf() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wharf"));
    command.env("WHARF_HTTP_LISTEN", "127.0.0.1:0");
    command.env("WHARF_PROMETHEUS_LISTEN", "127.0.0.1:0");
    command
}

/// A running broker, killed if the test ends (or fails) before it stopped: a failed
/// assertion must not leave it running, holding the test's output open.
struct Running(Child);

impl std::ops::Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("wharf-bin-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Waits for the ready line on stdout (logs go to stdout) and returns every line seen.
/// Starts the binary with AMQPS on `amqps_listen` (addresses) serving `cert` and `key`,
/// and `amqp_listen` (addresses, or "none") for plain AMQP.
fn start_with_tls(
    amqp_listen: &str,
    amqps_listen: &str,
    data: &std::path::Path,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Running {
    Running(
        wharf()
            .args(["--amqp-listen", amqp_listen])
            .args(["--amqps-listen", amqps_listen])
            .arg("--data-dir")
            .arg(data)
            .arg("--tls-cert")
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

fn wait_ready(child: &mut Child) -> Vec<String> {
    let stdout = child.stdout.take().unwrap();
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut reader = BufReader::new(stdout).lines();
    for line in reader.by_ref() {
        let line = line.unwrap();
        let ready = line.contains("wharf ready");
        lines.push(line);
        if ready {
            // The broker logs on: keep reading, so that its writes do not fail.
            std::thread::spawn(move || reader.for_each(drop));
            return lines;
        }
        assert!(Instant::now() < deadline, "no ready line: {lines:?}");
    }
    panic!("wharf exited before it was ready: {lines:?}");
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn env_configured_broker_serves_and_stops_on_sigterm() {
    let port = free_port();
    let data = temp_dir("env");
    let mut child = Running(
        wharf()
            .env("WHARF_AMQP_LISTEN", format!("127.0.0.1:{port}"))
            .env("WHARF_DATA_DIR", &data)
            .env("WHARF_LOG_LEVEL", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let lines = wait_ready(&mut child);
    assert!(
        lines.last().unwrap().contains(&format!("127.0.0.1:{port}")),
        "the ready line names the address: {lines:?}"
    );

    // It speaks AMQP there: a protocol header gets connection.start back.
    let mut socket = TcpStream::connect(("127.0.0.1", port)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    socket.write_all(b"AMQP\x00\x00\x09\x01").unwrap();
    let mut head = [0u8; 11];
    socket.read_exact(&mut head).unwrap();
    assert_eq!(head[0], 1, "a method frame");
    assert_eq!(&head[7..11], &[0, 10, 0, 10], "connection.start");

    // The directory was made beforehand with the usual 0755: Wharf says so, and what it
    // writes there (password hashes, the control socket) is its own alone.
    assert!(
        lines
            .iter()
            .any(|l| l.contains("the data directory is open to other users")),
        "{lines:?}"
    );
    for file in ["definitions.json", "wharf.sock"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{file} is {mode:o}");
    }

    sigterm(&child);
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert!(data.is_dir(), "the data dir was created");
    std::fs::remove_dir_all(&data).unwrap();
}

#[test]
fn config_file_is_read_and_flags_win() {
    let (file_port, flag_port) = (free_port(), free_port());
    let dir = temp_dir("file");
    let config = dir.join("wharf.toml");
    std::fs::write(
        &config,
        format!(
            "amqp_listen = \"127.0.0.1:{file_port}\"\ndata_dir = \"{}\"\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    let mut child = Running(
        wharf()
            .arg("--config")
            .arg(&config)
            .arg("--amqp-listen")
            .arg(format!("127.0.0.1:{flag_port}"))
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let lines = wait_ready(&mut child);
    assert!(
        lines
            .last()
            .unwrap()
            .contains(&format!("127.0.0.1:{flag_port}")),
        "{lines:?}"
    );
    assert!(dir.join("data").is_dir(), "data_dir came from the file");
    sigterm(&child);
    assert!(child.wait().unwrap().success());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_settings_fail_with_a_clear_message() {
    let dir = temp_dir("bad");
    let config = dir.join("wharf.toml");
    std::fs::write(&config, "amqp_port = 1\n").unwrap();
    let out = wharf().arg("--config").arg(&config).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid config file") && stderr.contains("amqp_port"),
        "{stderr}"
    );

    // A port that is taken.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let out = wharf()
        .arg("--amqp-listen")
        .arg(addr.to_string())
        .arg("--data-dir")
        .arg(dir.join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );

    let out = wharf()
        .arg("--amqp-listen")
        .arg("not-an-address")
        .output()
        .unwrap();
    assert!(!out.status.success());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_data_dir_that_is_not_wharfs_is_refused() {
    let dir = temp_dir("foreign");
    std::fs::write(dir.join("rabbit@host.pid"), b"123").unwrap();
    let out = wharf()
        .arg("--amqp-listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--data-dir")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is not a Wharf data directory"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_serves_the_configured_certificate_and_sighup_reloads_it() {
    use wharf_integration::pki::{handshake_with, Ca};
    let dir = temp_dir("tls");
    let first = Ca::new(&dir, "first");
    let (cert, key) = first.issue("server", "wharf test server", false);
    let (port, tls_port) = (free_port(), free_port());
    let data = dir.join("data");
    let amqp = format!("127.0.0.1:{port}");
    let amqps = format!("127.0.0.1:{tls_port}");
    let mut child = start_with_tls(&amqp, &amqps, &data, &cert, &key);
    let lines = wait_ready(&mut child);
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("AMQPS (TLS) listening on 127.0.0.1:{tls_port}"))),
        "{lines:?}"
    );
    let addr: std::net::SocketAddr = format!("127.0.0.1:{tls_port}").parse().unwrap();
    let tls13 = &rustls::version::TLS13;
    let start = handshake_with(addr, &first.ca_file(), tls13).await.unwrap();
    assert_eq!(&start[..3], &[1, 0, 0], "connection.start over TLS");

    // A renewed certificate from another CA replaces the files; SIGHUP reads them.
    let second = Ca::new(&dir, "second");
    let (renewed, renewed_key) = second.issue("renewed", "wharf test server", false);
    std::fs::copy(&renewed, &cert).unwrap();
    std::fs::copy(&renewed_key, &key).unwrap();
    let status = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while handshake_with(addr, &second.ca_file(), tls13)
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(handshake_with(addr, &first.ca_file(), tls13).await.is_err());

    sigterm(&child);
    assert!(child.wait().unwrap().success(), "SIGHUP must not stop it");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_amqp_listen_none_only_tls_is_served() {
    use wharf_integration::pki::{handshake_with, Ca};
    let dir = temp_dir("tls-only");
    let ca = Ca::new(&dir, "only");
    let (cert, key) = ca.issue("server", "wharf test server", false);
    let (tls_port, second) = (free_port(), free_port());
    let amqps = format!("127.0.0.1:{tls_port},[::1]:{second}");
    let mut child = start_with_tls("none", &amqps, &dir.join("data"), &cert, &key);
    let lines = wait_ready(&mut child);
    let ready = lines.last().unwrap();
    assert!(
        ready.contains(&format!(
            "wharf ready, AMQPS on 127.0.0.1:{tls_port}, AMQPS on [::1]:{second}"
        )),
        "{ready}"
    );
    assert!(!ready.contains("AMQP listening"), "{ready}");
    for addr in [format!("127.0.0.1:{tls_port}"), format!("[::1]:{second}")] {
        handshake_with(
            addr.parse().unwrap(),
            &ca.ca_file(),
            &rustls::version::TLS12,
        )
        .await
        .unwrap_or_else(|e| panic!("TLS on {addr}: {e}"));
    }
    sigterm(&child);
    assert!(child.wait().unwrap().success());

    // Without TLS, "none" would leave nothing to listen on: refused.
    let output = wharf()
        .args(["--amqp-listen", "none", "--data-dir"])
        .arg(dir.join("data"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("nothing would listen"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Starts the binary on 127.0.0.1:`port` with its data in `data` and these further
/// arguments, its log piped (read it with `wait_ready`).
fn start_on(port: u16, data: &std::path::Path, extra: &[&str]) -> Running {
    Running(
        wharf()
            .arg("--amqp-listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data)
            .args(extra)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

/// Runs the binary on `data` until it is ready, then stops it with SIGTERM; returns what it
/// logged up to ready.
fn start_and_stop(data: &std::path::Path, extra: &[&str]) -> Vec<String> {
    let mut child = start_on(free_port(), data, extra);
    let lines = wait_ready(&mut child);
    sigterm(&child);
    assert!(child.wait().unwrap().success());
    lines
}

/// The binary's stderr when it refuses to start on `data` (a start it did not refuse is
/// stopped and fails the test, rather than hang it).
fn refusal(data: &std::path::Path) -> String {
    let mut child = Running(
        wharf()
            .arg("--amqp-listen")
            .arg(format!("127.0.0.1:{}", free_port()))
            .arg("--data-dir")
            .arg(data)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "started instead of refusing");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "refused");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    stderr
}

/// Issue 13, item 2: damaged definitions refuse the start, naming the file and the byte;
/// `--force-recovery` starts with what reads, and says what it did.
#[test]
fn damaged_definitions_refuse_the_start_until_recovery_is_forced() {
    let data = temp_dir("damaged-definitions");
    start_and_stop(&data, &[]);
    start_and_stop(&data, &[]); // compacts the first start's changes into the snapshot
    let snapshot = data.join("definitions.json");
    let mut bytes = std::fs::read(&snapshot).unwrap();
    let at = bytes
        .windows(5)
        .position(|w| w == b"guest")
        .expect("the default user is in the snapshot");
    bytes[at] ^= 0x01; // "fuest": still JSON
    std::fs::write(&snapshot, &bytes).unwrap();
    let stderr = refusal(&data);
    assert!(
        stderr.contains("definitions.json: corrupt at byte")
            && stderr.contains("checksum")
            && stderr.contains("--force-recovery"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&snapshot).unwrap(), bytes, "nothing changed");

    let lines = start_and_stop(&data, &["--force-recovery"]);
    assert!(
        lines.iter().any(|l| l.contains("FORCED RECOVERY")),
        "{lines:?}"
    );
    let copies = std::fs::read_dir(&data)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("definitions.json.damaged-")
        })
        .count();
    assert_eq!(copies, 1, "the damaged snapshot is kept");
    start_and_stop(&data, &[]); // rewritten: starts without the flag again

    std::fs::remove_file(&snapshot).unwrap();
    let stderr = refusal(&data);
    assert!(
        stderr.contains("definitions.json is damaged")
            && stderr.contains("no definitions snapshot"),
        "{stderr}"
    );
    let lines = start_and_stop(&data, &["--force-recovery"]);
    assert!(
        lines.iter().any(|l| l.contains("FORCED RECOVERY")),
        "{lines:?}"
    );
    std::fs::remove_dir_all(&data).unwrap();
}

/// The broker's resident memory, from /proc.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// Issue 13, item 4: clients that all send a large body at once are received a few at a
/// time, within room the memory high watermark sets, rather than all at once into memory
/// (where, past the watermark, the alarm stopped them all halfway and none could finish).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_large_bodies_is_received_within_the_memory_bound() {
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
    let dir = temp_dir("burst");
    let port = free_port();
    let watermark: u64 = 100_000_000;
    let watermark_arg = watermark.to_string();
    let mut child = start_on(
        port,
        &dir.join("data"),
        &["--vm-memory-high-watermark", &watermark_arg],
    );
    wait_ready(&mut child);
    let pid = child.id();
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_bytes(pid));
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        })
    };
    let url = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    let body = std::sync::Arc::new(vec![b'x'; 16 << 20]);
    let mut publishers = Vec::new();
    for _ in 0..16 {
        let (url, body) = (url.clone(), body.clone());
        publishers.push(tokio::spawn(async move {
            let conn = lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
                .await
                .unwrap();
            let ch = conn.create_channel().await.unwrap();
            let durable = QueueDeclareOptions {
                durable: true,
                ..Default::default()
            };
            ch.queue_declare("burst", durable, Default::default())
                .await
                .unwrap();
            ch.confirm_select(ConfirmSelectOptions::default())
                .await
                .unwrap();
            let confirm = ch
                .basic_publish(
                    "",
                    "burst",
                    BasicPublishOptions::default(),
                    &body,
                    lapin::BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .unwrap();
            confirm.await.unwrap().is_ack()
        }));
    }
    let mut confirmed = 0;
    for publisher in publishers {
        let acked = tokio::time::timeout(Duration::from_secs(120), publisher)
            .await
            .expect("every publisher finishes")
            .unwrap();
        confirmed += usize::from(acked);
    }
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    assert_eq!(confirmed, 16);
    // 256 MiB of bodies sent at once; the broker took in a quarter of the watermark of
    // them at a time (one body here), and stayed under the watermark.
    assert!(
        peak < watermark,
        "peak RSS {peak} bytes, watermark {watermark}"
    );
    sigterm(&child);
    assert!(child.wait().unwrap().success());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// basic.publish on channel 1 to `queue` through the default exchange, and its content
/// header for a body of `body_size` bytes: the body frames are the caller's.
fn publish_head(queue: &str, body_size: u64) -> bytes::BytesMut {
    use wharf_amqp::frame::{encode_content_header, encode_method};
    use wharf_amqp::{BasicPublish, ContentHeader, Method};
    let mut out = bytes::BytesMut::new();
    let publish = Method::BasicPublish(BasicPublish {
        exchange: "".into(),
        routing_key: queue.into(),
        mandatory: false,
        immediate: false,
    });
    encode_method(1, &publish, &mut out);
    let header = ContentHeader {
        class_id: 60,
        body_size,
        properties: Default::default(),
    };
    encode_content_header(1, &header, &mut out);
    out
}

/// Issue 13, item 4: a message larger than the memory high watermark is still received:
/// the alarm it sets off halfway (its body arrives over a few seconds, so the once-a-second
/// sample sees it) lets the body finish; stopped there, the body would hold its memory for
/// good and the alarm would block every publisher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_larger_than_the_watermark_is_received_and_the_broker_goes_on() {
    use wharf_amqp::frame::encode_body;
    use wharf_amqp::{ConfirmSelect, Method};
    use wharf_integration::raw::RawClient;
    let dir = temp_dir("huge-body");
    let port = free_port();
    let mut child = start_on(
        port,
        &dir.join("data"),
        &["--vm-memory-high-watermark", "40000000"],
    );
    wait_ready(&mut child);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let url = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    let conn = lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare("huge", Default::default(), Default::default())
        .await
        .unwrap();

    let mut publisher = RawClient::open_with_channel(addr).await;
    publisher
        .send_method(1, Method::ConfirmSelect(ConfirmSelect { no_wait: false }))
        .await;
    assert!(matches!(
        publisher.read_method().await,
        Method::ConfirmSelectOk(_)
    ));
    let body_bytes = 64 << 20;
    let send_slowly = async {
        publisher
            .send_raw(&publish_head("huge", body_bytes as u64))
            .await;
        // 2 MiB every 100 ms: 3.2 s for the body.
        let chunk = vec![b'h'; 2 << 20];
        for _ in 0..body_bytes / chunk.len() {
            let mut out = bytes::BytesMut::new();
            encode_body(1, &chunk, 131072, &mut out);
            publisher.send_raw(&out).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        loop {
            if let Method::BasicAck(_) = publisher.read_method().await {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), send_slowly)
        .await
        .expect("the body is received, not stopped halfway for good");

    // Taken off the queue, the memory goes, and the alarm with it.
    let got = ch
        .basic_get("huge", lapin::options::BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("the message");
    assert_eq!(got.delivery.data.len(), body_bytes);
    drop(got);
    let publish_small = async {
        let mut out = publish_head("huge", 5);
        encode_body(1, b"small", 131072, &mut out);
        publisher.send_raw(&out).await;
        loop {
            if let Method::BasicAck(_) = publisher.read_method().await {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), publish_small)
        .await
        .expect("the alarm clears");
    sigterm(&child);
    assert!(child.wait().unwrap().success());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Issue 14, item 5: logs written to a pipe or a file carry no colour codes, and
/// `--log-format json` writes one JSON object a line.
#[test]
fn logs_off_a_terminal_are_plain_and_json_on_request() {
    let dir = temp_dir("log-format");
    for format in ["text", "json"] {
        let mut child = Running(
            wharf()
                .arg("--amqp-listen")
                .arg(format!("127.0.0.1:{}", free_port()))
                .arg("--data-dir")
                .arg(dir.join(format))
                .arg("--log-format")
                .arg(format)
                .env_remove("NO_COLOR")
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let lines = wait_ready(&mut child);
        assert!(
            lines.iter().all(|l| !l.contains('\u{1b}')),
            "colour codes in a pipe: {lines:?}"
        );
        if format == "json" {
            for line in &lines {
                let parsed: serde_json::Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                assert!(parsed["level"].is_string(), "{line}");
            }
            let ready = lines.last().unwrap();
            let parsed: serde_json::Value = serde_json::from_str(ready).unwrap();
            let message = parsed["fields"]["message"].as_str().unwrap_or_default();
            assert!(message.starts_with("wharf ready"), "{ready}");
        }
        sigterm(&child);
        assert!(child.wait().unwrap().success());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--amqp-listen` takes a list: a bare port listens on every address in both families (one
/// dual-stack socket, as RabbitMQ's default), and each address of the list is served.
/// guest, loopback only, logs in over 127.0.0.1 through the dual-stack socket, over ::1,
/// and on the second address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_listen_addresses_and_a_bare_port_for_both_families() {
    use wharf_integration::raw::RawClient;
    let data = temp_dir("listen-list");
    let (any, second) = (free_port(), free_port());
    let mut child = Running(
        wharf()
            .arg("--data-dir")
            .arg(&data)
            .env("WHARF_AMQP_LISTEN", format!("{any}, 127.0.0.1:{second}"))
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let lines = wait_ready(&mut child);
    let ready = lines.last().unwrap();
    assert!(
        ready.contains(&format!(
            "AMQP listening on [::]:{any}, AMQP listening on 127.0.0.1:{second}"
        )),
        "{ready}"
    );
    for addr in [
        format!("127.0.0.1:{any}"),
        format!("[::1]:{any}"),
        format!("127.0.0.1:{second}"),
    ] {
        let mut client = RawClient::open_with_channel(addr.parse().unwrap()).await;
        client.close_channel(1).await;
    }
    sigterm(&child);
    assert!(child.wait().unwrap().success());

    // A list with a bad entry, or an address twice, is refused before anything starts.
    for (list, expected) in [
        (
            format!("127.0.0.1:{any},nowhere"),
            "'nowhere' is not an address".to_string(),
        ),
        (
            format!("127.0.0.1:{any},127.0.0.1:{any}"),
            format!("127.0.0.1:{any} is listed twice"),
        ),
        (format!("127.0.0.1:{any},"), "empty address".to_string()),
    ] {
        let out = wharf()
            .args(["--amqp-listen", &list, "--data-dir"])
            .arg(&data)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{list} accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&expected), "{list}: {stderr}");
    }
    std::fs::remove_dir_all(&data).unwrap();
}

/// One HTTP/1.1 request as guest; the status line and the body.
fn http_get(port: u16, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    // guest:guest
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

#[test]
fn the_management_api_and_metrics_are_served_on_their_listeners_and_none_turns_them_off() {
    let dir = temp_dir("http");
    // Port 0 for both: the ready line says which ports they got (no port picked ahead of
    // time that another test could take in between).
    let mut child = start_on(
        free_port(),
        &dir.join("data"),
        &[
            "--http-listen",
            "127.0.0.1:0",
            "--prometheus-listen",
            "127.0.0.1:0",
        ],
    );
    let lines = wait_ready(&mut child);
    let ready = lines.last().unwrap().clone();
    let port_after = |marker: &str| -> u16 {
        let at = ready
            .find(marker)
            .unwrap_or_else(|| panic!("{marker} in {ready}"));
        let rest = &ready[at + marker.len()..];
        let end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        rest[..end].parse().unwrap()
    };
    let http_port = port_after("HTTP API on 127.0.0.1:");
    let metrics_port = port_after("Prometheus on 127.0.0.1:");
    let (status, body) = http_get(http_port, "/api/overview");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    let overview: serde_json::Value = serde_json::from_str(&body).unwrap();
    let listeners = overview["listeners"].as_array().unwrap();
    assert!(
        listeners
            .iter()
            .any(|l| l["protocol"] == "http" && l["port"] == http_port),
        "{listeners:?}"
    );
    let (status, _) = http_get(http_port, "/api/queues/%2F/none-such");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    // Prometheus, with what the binary's monitors measure.
    let (status, text) = http_get(metrics_port, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    for family in [
        "rabbitmq_process_resident_memory_bytes ",
        "rabbitmq_resident_memory_limit_bytes ",
        "rabbitmq_disk_space_available_bytes ",
        "rabbitmq_process_max_tcp_sockets ",
        "rabbitmq_identity_info{",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(family)),
            "{family} in {text}"
        );
    }
    sigterm(&child);
    assert!(child.wait().unwrap().success());

    let lines = start_and_stop(&dir.join("data"), &["--http-listen", "none"]);
    assert!(!lines.iter().any(|l| l.contains("HTTP API")), "{lines:?}");
}
