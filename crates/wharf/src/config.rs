//! The broker's settings: defaults, then a TOML file (`--config`), then `WHARF_*`
//! environment variables and command-line flags, each overriding the one before.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use serde::Deserialize;
use wharf_core::broker::FsyncPolicy;
use wharf_server::listen::ListenAddress;
use wharf_server::tls::{ClientCertificates, TlsSettings};

/// Flags of `wharf` (and `wharf serve`); each can also come from the environment.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (flags and env override it).
    #[arg(long, env = "WHARF_CONFIG")]
    pub config: Option<PathBuf>,
    /// Addresses for AMQP connections, comma-separated: IP:PORT ([IPv6]:PORT), or a port
    /// alone for every address in both IPv6 and IPv4; "none" to serve AMQP over TLS only
    /// [default: 5672]
    #[arg(long, env = "WHARF_AMQP_LISTEN", value_name = "ADDRS|none", value_parser = parse_listens)]
    pub amqp_listen: Option<Listens>,
    /// Directory for the broker's data [default: ./data]
    #[arg(long, env = "WHARF_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// error, warn, info, debug or trace (or a tracing filter) [default: info]
    #[arg(long, env = "WHARF_LOG_LEVEL", value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// "text" (coloured only on a terminal, and not with NO_COLOR) or "json" (one object a
    /// line, for log shippers) [default: text]
    #[arg(long, env = "WHARF_LOG_FORMAT", value_name = "FORMAT", value_parser = parse_log_format)]
    pub log_format: Option<LogFormat>,
    /// When confirms of persistent messages go out: "batch" (after fsync, shared by many
    /// publishers) or "never" (without waiting for fsync) [default: batch]
    #[arg(long, env = "WHARF_FSYNC", value_name = "POLICY", value_parser = parse_fsync)]
    pub fsync: Option<FsyncPolicy>,
    /// Below this much free space on the data directory's disk, publishers are blocked
    /// [default: 50000000, as RabbitMQ]
    #[arg(long, env = "WHARF_DISK_FREE_LIMIT", value_name = "BYTES")]
    pub disk_free_limit: Option<u64>,
    /// Start even when the stored definitions are damaged or missing: keep a copy of each
    /// damaged file, go on with what still reads, and log every loss (without it, the
    /// broker refuses to start and names the file and byte)
    #[arg(long, env = "WHARF_FORCE_RECOVERY")]
    pub force_recovery: bool,
    /// A channel whose oldest unacknowledged delivery is older than this many
    /// milliseconds is closed (406), its deliveries requeued; 0 turns the check off
    /// [default: 1800000, as RabbitMQ]
    #[arg(long, env = "WHARF_CONSUMER_TIMEOUT", value_name = "MS")]
    pub consumer_timeout: Option<u64>,
    /// Addresses for AMQP over TLS (amqps), as --amqp-listen; served only with
    /// --tls-cert [default: 5671]
    #[arg(long, env = "WHARF_AMQPS_LISTEN", value_name = "ADDRS", value_parser = parse_listens)]
    pub amqps_listen: Option<Listens>,
    /// Addresses for the management HTTP API, as --amqp-listen; "none" turns it off
    /// [default: 15672]
    #[arg(long, env = "WHARF_HTTP_LISTEN", value_name = "ADDRS|none", value_parser = parse_listens)]
    pub http_listen: Option<Listens>,
    /// Addresses for the management HTTP API over TLS, with the certificate of
    /// --tls-cert [default: none]
    #[arg(long, env = "WHARF_HTTPS_LISTEN", value_name = "ADDRS|none", value_parser = parse_listens)]
    pub https_listen: Option<Listens>,
    /// Addresses for Prometheus metrics (/metrics, /metrics/per-object), as
    /// --amqp-listen; "none" turns them off [default: 15692]
    #[arg(long, env = "WHARF_PROMETHEUS_LISTEN", value_name = "ADDRS|none", value_parser = parse_listens)]
    pub prometheus_listen: Option<Listens>,
    /// The server's TLS certificate chain (PEM); turns the amqps listener on. Read again,
    /// with the key and CA, on SIGHUP.
    #[arg(
        long,
        env = "WHARF_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM)
    #[arg(long, env = "WHARF_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM) that client certificates must chain to
    #[arg(long, env = "WHARF_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificates: none, optional (verified when given) or required
    /// [default: none]
    #[arg(long, env = "WHARF_TLS_CLIENT_CERTIFICATES", value_name = "WHEN", value_parser = parse_client_certificates)]
    pub tls_client_certificates: Option<ClientCertificates>,
    /// The user created on the first start, with every permission on vhost "/"
    /// [default: guest]
    #[arg(long, env = "WHARF_DEFAULT_USER", value_name = "NAME")]
    pub default_user: Option<String>,
    /// The password of the default user [default: guest]
    #[arg(long, env = "WHARF_DEFAULT_PASS", value_name = "PASSWORD")]
    pub default_pass: Option<String>,
    /// A failed login is answered after this many milliseconds [default: 1000]
    #[arg(long, env = "WHARF_FAILED_LOGIN_DELAY", value_name = "MS")]
    pub failed_login_delay: Option<u64>,
    /// Connections the broker takes at most; 0: as many as file descriptors allow
    /// [default: 0]
    #[arg(long, env = "WHARF_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// Highest channel number a connection may use [default: 2047, as RabbitMQ]
    #[arg(long, env = "WHARF_CHANNEL_MAX", value_name = "N")]
    pub channel_max: Option<u16>,
    /// Largest frame, in bytes, offered to clients [default: 131072, as RabbitMQ]
    #[arg(long, env = "WHARF_FRAME_MAX", value_name = "BYTES")]
    pub frame_max: Option<u32>,
    /// Largest message body accepted [default: 134217728 (128 MiB), as RabbitMQ]
    #[arg(long, env = "WHARF_MAX_MESSAGE_SIZE", value_name = "BYTES")]
    pub max_message_size: Option<usize>,
    /// A socket that has not finished the AMQP (and TLS) handshake by then is closed
    /// [default: 10000, as RabbitMQ]
    #[arg(long, env = "WHARF_HANDSHAKE_TIMEOUT", value_name = "MS")]
    pub handshake_timeout: Option<u64>,
    /// Consumers one channel may have; 0: no limit [default: 0, as RabbitMQ]
    #[arg(long, env = "WHARF_CONSUMER_MAX_PER_CHANNEL", value_name = "N")]
    pub consumer_max_per_channel: Option<usize>,
    /// Above this resident memory publishers are blocked: a fraction of the machine's
    /// memory (at most 1, e.g. 0.4) or a number of bytes (more than 1)
    /// [default: 0.4, as RabbitMQ 3.10]
    #[arg(long, env = "WHARF_VM_MEMORY_HIGH_WATERMARK", value_name = "FRACTION|BYTES", value_parser = parse_watermark)]
    pub vm_memory_high_watermark: Option<Watermark>,
    #[command(flatten)]
    pub cluster: crate::cluster_config::ClusterArgs,
}

/// The memory high watermark, relative or absolute.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Watermark {
    Fraction(f64),
    Bytes(u64),
}

impl Watermark {
    /// In bytes, given the memory available.
    pub fn bytes(self, available: u64) -> u64 {
        match self {
            Watermark::Fraction(f) => (available as f64 * f) as u64,
            Watermark::Bytes(b) => b,
        }
    }
}

fn parse_watermark(value: &str) -> Result<Watermark, String> {
    let bad = || {
        format!(
            "'{value}' is not a memory watermark: use a fraction of memory (0 < f <= 1) or bytes"
        )
    };
    if let Ok(bytes) = value.parse::<u64>() {
        if bytes > 1 {
            return Ok(Watermark::Bytes(bytes));
        }
    }
    match value.parse::<f64>() {
        Ok(f) if f > 0.0 && f <= 1.0 => Ok(Watermark::Fraction(f)),
        _ => Err(bad()),
    }
}

/// A listener's addresses (none: that listener is off).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listens(pub Vec<ListenAddress>);

fn parse_listens(value: &str) -> Result<Listens, String> {
    wharf_server::listen::parse_list(value).map(Listens)
}

/// A listener's addresses in the settings file: a string as on the command line, a port,
/// or an array of either.
fn file_listens(key: &str, value: &toml::Value) -> anyhow::Result<Listens> {
    let bad = |e: String| anyhow::anyhow!("invalid config file: {key}: {e}");
    let one = |value: &toml::Value| -> Result<String, String> {
        match value {
            toml::Value::String(text) => Ok(text.clone()),
            toml::Value::Integer(port) => Ok(port.to_string()),
            other => Err(format!("{other} is not an address or a port")),
        }
    };
    let text = match value {
        toml::Value::Array(items) => {
            if items.is_empty() {
                return Err(bad("an empty list: write \"none\" to turn it off".into()));
            }
            let items: Result<Vec<String>, String> = items.iter().map(one).collect();
            items.map_err(bad)?.join(",")
        }
        value => one(value).map_err(bad)?,
    };
    parse_listens(&text).map_err(bad)
}

fn parse_client_certificates(value: &str) -> Result<ClientCertificates, String> {
    ClientCertificates::parse(value).ok_or_else(|| {
        format!("'{value}' is not a client certificate mode: use none, optional or required")
    })
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

fn parse_log_format(value: &str) -> Result<LogFormat, String> {
    match value {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        other => Err(format!("'{other}' is not a log format: use text or json")),
    }
}

fn parse_fsync(value: &str) -> Result<FsyncPolicy, String> {
    match value {
        "batch" => Ok(FsyncPolicy::Batch),
        "never" => Ok(FsyncPolicy::Never),
        other => Err(format!(
            "'{other}' is not an fsync policy: use batch or never"
        )),
    }
}

/// The settings file. Unknown keys are refused, so a typo does not pass silently.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    /// A string, a port or an array of them.
    amqp_listen: Option<toml::Value>,
    data_dir: Option<PathBuf>,
    log_level: Option<String>,
    log_format: Option<String>,
    fsync: Option<String>,
    disk_free_limit: Option<u64>,
    force_recovery: Option<bool>,
    consumer_timeout: Option<u64>,
    amqps_listen: Option<toml::Value>,
    http_listen: Option<toml::Value>,
    https_listen: Option<toml::Value>,
    prometheus_listen: Option<toml::Value>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    tls_client_certificates: Option<String>,
    default_user: Option<String>,
    default_pass: Option<String>,
    failed_login_delay: Option<u64>,
    max_connections: Option<usize>,
    channel_max: Option<u16>,
    frame_max: Option<u32>,
    max_message_size: Option<usize>,
    handshake_timeout: Option<u64>,
    consumer_max_per_channel: Option<usize>,
    /// A number: at most 1 a fraction, more bytes.
    vm_memory_high_watermark: Option<toml::Value>,
    node_name: Option<String>,
    cluster_listen: Option<String>,
    /// A string as on the command line, or an array of addresses.
    cluster_seeds: Option<toml::Value>,
    cluster_secret_file: Option<PathBuf>,
    cluster_tls: Option<bool>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Empty: no plain listener (TLS only).
    pub amqp_listen: Vec<ListenAddress>,
    pub data_dir: PathBuf,
    pub log_level: String,
    pub log_format: LogFormat,
    pub fsync: FsyncPolicy,
    pub disk_free_limit_bytes: u64,
    pub force_recovery: bool,
    /// None: no consumer timeout.
    pub consumer_timeout: Option<std::time::Duration>,
    /// Where amqps listens, when TLS is set up.
    pub amqps_listen: Vec<ListenAddress>,
    /// Where the management HTTP API listens (empty: nowhere).
    pub http_listen: Vec<ListenAddress>,
    /// Where it listens over TLS (needs `tls`).
    pub https_listen: Vec<ListenAddress>,
    /// Where Prometheus metrics are served (empty: nowhere).
    pub prometheus_listen: Vec<ListenAddress>,
    /// None: no amqps listener.
    pub tls: Option<TlsSettings>,
    pub default_user: String,
    pub default_pass: String,
    pub failed_login_delay: std::time::Duration,
    /// None: no limit beyond file descriptors.
    pub max_connections: Option<usize>,
    pub channel_max: u16,
    pub frame_max: u32,
    pub max_message_size: usize,
    pub handshake_timeout: std::time::Duration,
    pub consumer_max_per_channel: Option<usize>,
    pub vm_memory_high_watermark: Watermark,
    /// None: `wharf@` and the host name.
    pub node_name: Option<String>,
    /// None: a single node.
    pub cluster: Option<crate::cluster_config::ClusterSettings>,
}

impl Config {
    pub fn resolve(args: &ServeArgs) -> anyhow::Result<Config> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let tls = tls_settings(args, &file)?;
        let amqp_listen = match (&args.amqp_listen, &file.amqp_listen) {
            (Some(listens), _) => listens.0.clone(),
            (None, Some(value)) => file_listens("amqp_listen", value)?.0,
            (None, None) => vec![ListenAddress::AnyHost(5672)],
        };
        let amqps_listen = match (&args.amqps_listen, &file.amqps_listen) {
            (Some(listens), _) => listens.0.clone(),
            (None, Some(value)) => file_listens("amqps_listen", value)?.0,
            (None, None) => vec![ListenAddress::AnyHost(5671)],
        };
        let http_listen = match (&args.http_listen, &file.http_listen) {
            (Some(listens), _) => listens.0.clone(),
            (None, Some(value)) => file_listens("http_listen", value)?.0,
            (None, None) => vec![ListenAddress::AnyHost(15672)],
        };
        let https_listen = match (&args.https_listen, &file.https_listen) {
            (Some(listens), _) => listens.0.clone(),
            (None, Some(value)) => file_listens("https_listen", value)?.0,
            (None, None) => Vec::new(),
        };
        let prometheus_listen = match (&args.prometheus_listen, &file.prometheus_listen) {
            (Some(listens), _) => listens.0.clone(),
            (None, Some(value)) => file_listens("prometheus_listen", value)?.0,
            (None, None) => vec![ListenAddress::AnyHost(15692)],
        };
        if !https_listen.is_empty() && tls.is_none() {
            anyhow::bail!("https_listen needs TLS set up (tls_cert, tls_key)");
        }
        if tls.is_some() && amqps_listen.is_empty() {
            anyhow::bail!("amqps_listen is none while TLS is set up: use amqp_listen for plain AMQP only and leave out tls_cert");
        }
        if amqp_listen.is_empty() && tls.is_none() {
            anyhow::bail!(
                "amqp_listen is none and TLS is not set up (tls_cert, tls_key): nothing would listen"
            );
        }
        let defaults = wharf_server::ServerConfig::default();
        let node_name = args.cluster.node_name.clone().or(file.node_name.clone());
        if node_name.as_deref() == Some("") {
            anyhow::bail!("node_name must not be empty");
        }
        let cluster = crate::cluster_config::resolve(
            &args.cluster,
            crate::cluster_config::FileCluster {
                cluster_listen: file.cluster_listen.clone(),
                cluster_seeds: file.cluster_seeds.clone(),
                cluster_secret_file: file.cluster_secret_file.clone(),
                cluster_tls: file.cluster_tls,
                tls: tls
                    .as_ref()
                    .map(|t| (t.certificate.clone(), t.key.clone(), t.ca.clone())),
            },
        )?;
        Ok(Config {
            node_name,
            cluster,
            amqp_listen,
            data_dir: args
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("./data")),
            log_level: args
                .log_level
                .clone()
                .or(file.log_level)
                .unwrap_or_else(|| "info".to_string()),
            log_format: match (args.log_format, file.log_format) {
                (Some(format), _) => format,
                (None, Some(text)) => parse_log_format(&text)
                    .map_err(|e| anyhow::anyhow!("invalid config file: log_format: {e}"))?,
                (None, None) => LogFormat::Text,
            },
            fsync: match (args.fsync, file.fsync) {
                (Some(policy), _) => policy,
                (None, Some(text)) => parse_fsync(&text)
                    .map_err(|e| anyhow::anyhow!("invalid config file: fsync: {e}"))?,
                (None, None) => FsyncPolicy::Batch,
            },
            disk_free_limit_bytes: args
                .disk_free_limit
                .or(file.disk_free_limit)
                .unwrap_or(wharf_server::alarm::DISK_FREE_LIMIT_BYTES_DEFAULT),
            force_recovery: args.force_recovery || file.force_recovery.unwrap_or(false),
            consumer_timeout: match args.consumer_timeout.or(file.consumer_timeout) {
                Some(0) => None,
                Some(ms) => Some(std::time::Duration::from_millis(ms)),
                None => Some(wharf_server::CONSUMER_TIMEOUT_DEFAULT),
            },
            amqps_listen,
            http_listen,
            https_listen,
            prometheus_listen,
            tls,
            default_user: args
                .default_user
                .clone()
                .or(file.default_user)
                .unwrap_or_else(|| "guest".to_string()),
            default_pass: args
                .default_pass
                .clone()
                .or(file.default_pass)
                .unwrap_or_else(|| "guest".to_string()),
            failed_login_delay: args
                .failed_login_delay
                .or(file.failed_login_delay)
                .map(std::time::Duration::from_millis)
                .unwrap_or(wharf_server::FAILED_LOGIN_DELAY_DEFAULT),
            max_connections: args
                .max_connections
                .or(file.max_connections)
                .filter(|n| *n > 0),
            channel_max: args
                .channel_max
                .or(file.channel_max)
                .unwrap_or(defaults.channel_max),
            frame_max: match args.frame_max.or(file.frame_max) {
                Some(n) if n < 4096 => anyhow::bail!("frame_max must be at least 4096, not {n}"),
                Some(n) => n,
                None => defaults.frame_max,
            },
            max_message_size: args
                .max_message_size
                .or(file.max_message_size)
                .unwrap_or(defaults.max_message_bytes),
            handshake_timeout: args
                .handshake_timeout
                .or(file.handshake_timeout)
                .map(std::time::Duration::from_millis)
                .unwrap_or(defaults.handshake_timeout),
            consumer_max_per_channel: args
                .consumer_max_per_channel
                .or(file.consumer_max_per_channel)
                .filter(|n| *n > 0),
            vm_memory_high_watermark: match (
                args.vm_memory_high_watermark,
                &file.vm_memory_high_watermark,
            ) {
                (Some(w), _) => w,
                (None, Some(value)) => parse_watermark(&value.to_string()).map_err(|e| {
                    anyhow::anyhow!("invalid config file: vm_memory_high_watermark: {e}")
                })?,
                (None, None) => {
                    Watermark::Fraction(wharf_server::alarm::MEMORY_HIGH_WATERMARK_DEFAULT)
                }
            },
        })
    }
}

fn tls_settings(args: &ServeArgs, file: &FileConfig) -> anyhow::Result<Option<TlsSettings>> {
    let certificate = args.tls_cert.clone().or(file.tls_cert.clone());
    let key = args.tls_key.clone().or(file.tls_key.clone());
    let (certificate, key) = match (certificate, key) {
        (Some(certificate), Some(key)) => (certificate, key),
        (None, None) => return Ok(None),
        _ => anyhow::bail!("TLS needs both a certificate (tls_cert) and its key (tls_key)"),
    };
    let client_certificates = match (args.tls_client_certificates, &file.tls_client_certificates) {
        (Some(mode), _) => mode,
        (None, Some(text)) => parse_client_certificates(text)
            .map_err(|e| anyhow::anyhow!("invalid config file: tls_client_certificates: {e}"))?,
        (None, None) => ClientCertificates::None,
    };
    Ok(Some(TlsSettings {
        certificate,
        key,
        ca: args.tls_ca.clone().or(file.tls_ca.clone()),
        client_certificates,
    }))
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let config = Config::resolve(&ServeArgs::default()).unwrap();
        assert_eq!(config.amqp_listen, [ListenAddress::AnyHost(5672)]);
        assert_eq!(config.amqps_listen, [ListenAddress::AnyHost(5671)]);
        assert_eq!(config.http_listen, [ListenAddress::AnyHost(15672)]);
        assert!(config.https_listen.is_empty());
        assert_eq!(config.prometheus_listen, [ListenAddress::AnyHost(15692)]);
        assert_eq!(config.data_dir, PathBuf::from("./data"));
        assert_eq!(config.log_level, "info");
        assert_eq!(config.fsync, FsyncPolicy::Batch);
        assert_eq!(
            config.consumer_timeout,
            Some(std::time::Duration::from_secs(1800))
        );
        assert!(
            !config.force_recovery,
            "damage refuses the start by default"
        );
    }

    #[test]
    fn log_format_from_file_or_flag_and_a_bad_one_refused() {
        let dir = std::env::temp_dir().join(format!("wharf-log-format-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("wharf.toml");
        std::fs::write(&path, "log_format = \"json\"\n").unwrap();
        let from_file = ServeArgs {
            config: Some(path.clone()),
            ..Default::default()
        };
        assert_eq!(
            Config::resolve(&from_file).unwrap().log_format,
            LogFormat::Json
        );
        let flag_wins = ServeArgs {
            config: Some(path.clone()),
            log_format: Some(LogFormat::Text),
            ..Default::default()
        };
        assert_eq!(
            Config::resolve(&flag_wins).unwrap().log_format,
            LogFormat::Text
        );
        assert_eq!(
            Config::resolve(&ServeArgs::default()).unwrap().log_format,
            LogFormat::Text
        );
        std::fs::write(&path, "log_format = \"xml\"\n").unwrap();
        let error = Config::resolve(&from_file).unwrap_err().to_string();
        assert!(error.contains("'xml' is not a log format"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn force_recovery_from_file_or_flag() {
        let dir = std::env::temp_dir().join(format!("wharf-recovery-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("wharf.toml");
        std::fs::write(&path, "force_recovery = true\n").unwrap();
        let from_file = ServeArgs {
            config: Some(path.clone()),
            ..Default::default()
        };
        assert!(Config::resolve(&from_file).unwrap().force_recovery);
        let from_flag = ServeArgs {
            force_recovery: true,
            ..Default::default()
        };
        assert!(Config::resolve(&from_flag).unwrap().force_recovery);
        std::fs::write(&path, "force_recovery = \"yes\"\n").unwrap();
        assert!(Config::resolve(&from_file).is_err(), "not a boolean");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn consumer_timeout_in_milliseconds_and_zero_turns_it_off() {
        let args = ServeArgs {
            consumer_timeout: Some(0),
            ..Default::default()
        };
        assert_eq!(Config::resolve(&args).unwrap().consumer_timeout, None);
        let args = ServeArgs {
            consumer_timeout: Some(2500),
            ..Default::default()
        };
        assert_eq!(
            Config::resolve(&args).unwrap().consumer_timeout,
            Some(std::time::Duration::from_millis(2500))
        );
    }

    #[test]
    fn fsync_policy_from_file_and_flag() {
        assert_eq!(parse_fsync("never"), Ok(FsyncPolicy::Never));
        assert!(parse_fsync("always")
            .unwrap_err()
            .contains("use batch or never"));
        let dir = std::env::temp_dir().join(format!("wharf-fsync-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("wharf.toml");
        std::fs::write(&path, "fsync = \"never\"\n").unwrap();
        let args = ServeArgs {
            config: Some(path.clone()),
            ..Default::default()
        };
        assert_eq!(Config::resolve(&args).unwrap().fsync, FsyncPolicy::Never);
        std::fs::write(&path, "fsync = \"sometimes\"\n").unwrap();
        assert!(Config::resolve(&args).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn flags_override_file() {
        let dir = std::env::temp_dir().join(format!("wharf-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("wharf.toml");
        std::fs::write(
            &path,
            "amqp_listen = \"127.0.0.1:5800\"\ndata_dir = \"/tmp/x\"\nlog_level = \"debug\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path.clone()),
            log_level: Some("warn".into()),
            ..Default::default()
        };
        let config = Config::resolve(&args).unwrap();
        assert_eq!(
            config.amqp_listen,
            [ListenAddress::Socket("127.0.0.1:5800".parse().unwrap())]
        );
        assert_eq!(config.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(config.log_level, "warn");

        // A list, as an array of addresses and ports, or as one string.
        std::fs::write(
            &path,
            "amqp_listen = [\"127.0.0.1:5800\", 5801, \"[::1]:5802\"]\n",
        )
        .unwrap();
        let listens = [
            ListenAddress::Socket("127.0.0.1:5800".parse().unwrap()),
            ListenAddress::AnyHost(5801),
            ListenAddress::Socket("[::1]:5802".parse().unwrap()),
        ];
        assert_eq!(Config::resolve(&args).unwrap().amqp_listen, listens);
        std::fs::write(&path, "amqp_listen = \"127.0.0.1:5800,5801,[::1]:5802\"\n").unwrap();
        assert_eq!(Config::resolve(&args).unwrap().amqp_listen, listens);
        std::fs::write(&path, "amqps_listen = 5999\n").unwrap();
        assert_eq!(
            Config::resolve(&args).unwrap().amqps_listen,
            [ListenAddress::AnyHost(5999)]
        );
        for (bad, expected) in [
            ("amqp_listen = []", "empty list"),
            ("amqp_listen = [true]", "not an address or a port"),
            ("amqp_listen = [\"x\"]", "'x' is not an address"),
            ("amqps_listen = 70000", "'70000' is not an address"),
        ] {
            std::fs::write(&path, format!("{bad}\n")).unwrap();
            let error = format!("{:#}", Config::resolve(&args).unwrap_err());
            assert!(error.contains(expected), "{bad}: {error}");
        }

        std::fs::write(&path, "amqp_lisen = \"127.0.0.1:1\"\n").unwrap();
        let error = Config::resolve(&args).unwrap_err();
        assert!(format!("{error:#}").contains("unknown field"), "{error:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn limits_and_the_memory_watermark() {
        assert_eq!(parse_watermark("0.4"), Ok(Watermark::Fraction(0.4)));
        assert_eq!(parse_watermark("1"), Ok(Watermark::Fraction(1.0)));
        assert_eq!(
            parse_watermark("2000000000"),
            Ok(Watermark::Bytes(2_000_000_000))
        );
        assert!(parse_watermark("1.5").is_err());
        assert!(parse_watermark("0").is_err());
        assert!(parse_watermark("lots").is_err());
        assert_eq!(Watermark::Fraction(0.5).bytes(1000), 500);
        let config = Config::resolve(&ServeArgs::default()).unwrap();
        assert_eq!(config.max_connections, None);
        assert_eq!(config.channel_max, 2047);
        assert_eq!(config.frame_max, 131_072);
        assert_eq!(config.handshake_timeout, std::time::Duration::from_secs(10));
        assert_eq!(config.vm_memory_high_watermark, Watermark::Fraction(0.4));
        let small_frames = ServeArgs {
            frame_max: Some(1000),
            ..Default::default()
        };
        assert!(Config::resolve(&small_frames).is_err());
        let dir = std::env::temp_dir().join(format!("wharf-limits-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("wharf.toml");
        std::fs::write(
            &path,
            "max_connections = 100\nvm_memory_high_watermark = 0.6\nconsumer_max_per_channel = 8\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path),
            ..Default::default()
        };
        let config = Config::resolve(&args).unwrap();
        assert_eq!(config.max_connections, Some(100));
        assert_eq!(config.consumer_max_per_channel, Some(8));
        assert_eq!(config.vm_memory_high_watermark, Watermark::Fraction(0.6));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tls_needs_a_certificate_and_its_key() {
        let only_cert = ServeArgs {
            tls_cert: Some("cert.pem".into()),
            ..Default::default()
        };
        let error = Config::resolve(&only_cert).unwrap_err();
        assert!(error.to_string().contains("tls_key"), "{error}");
        let both = ServeArgs {
            tls_cert: Some("cert.pem".into()),
            tls_key: Some("key.pem".into()),
            tls_client_certificates: Some(ClientCertificates::Required),
            ..Default::default()
        };
        let tls = Config::resolve(&both).unwrap().tls.unwrap();
        assert_eq!(tls.client_certificates, ClientCertificates::Required);
        let tls_only = ServeArgs {
            amqp_listen: Some(Listens(Vec::new())),
            ..both.clone()
        };
        assert_eq!(Config::resolve(&tls_only).unwrap().amqp_listen, []);
        let no_amqps = ServeArgs {
            amqps_listen: parse_listens("none").ok(),
            ..both
        };
        let error = Config::resolve(&no_amqps).unwrap_err();
        assert!(
            error.to_string().contains("amqps_listen is none"),
            "{error}"
        );
        let nothing = ServeArgs {
            amqp_listen: Some(Listens(Vec::new())),
            ..Default::default()
        };
        let error = Config::resolve(&nothing).unwrap_err();
        assert!(
            error.to_string().contains("nothing would listen"),
            "{error}"
        );
        assert_eq!(parse_listens("none"), Ok(Listens(Vec::new())));
        assert!(parse_listens("nowhere").is_err());
        let https_without_tls = ServeArgs {
            https_listen: parse_listens("15671").ok(),
            ..Default::default()
        };
        let error = Config::resolve(&https_without_tls).unwrap_err();
        assert!(
            error.to_string().contains("https_listen needs TLS"),
            "{error}"
        );
        let no_http = ServeArgs {
            http_listen: parse_listens("none").ok(),
            ..Default::default()
        };
        assert_eq!(Config::resolve(&no_http).unwrap().http_listen, []);
        assert!(parse_client_certificates("sometimes").is_err());
    }

    #[test]
    fn missing_file_is_an_error() {
        let args = ServeArgs {
            config: Some("/nonexistent/wharf.toml".into()),
            ..Default::default()
        };
        assert!(Config::resolve(&args).is_err());
    }
}
