//! The broker's settings: defaults, then a TOML file (`--config`), then `WHARF_*`
//! environment variables and command-line flags, each overriding the one before.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use serde::Deserialize;
use wharf_core::broker::FsyncPolicy;
use wharf_server::tls::{ClientCertificates, TlsSettings};

/// Flags of `wharf` (and `wharf serve`); each can also come from the environment.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (flags and env override it).
    #[arg(long, env = "WHARF_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address for AMQP connections [default: 0.0.0.0:5672]
    #[arg(long, env = "WHARF_AMQP_LISTEN", value_name = "ADDR:PORT")]
    pub amqp_listen: Option<SocketAddr>,
    /// Directory for the broker's data [default: ./data]
    #[arg(long, env = "WHARF_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// error, warn, info, debug or trace (or a tracing filter) [default: info]
    #[arg(long, env = "WHARF_LOG_LEVEL", value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// When confirms of persistent messages go out: "batch" (after fsync, shared by many
    /// publishers) or "never" (without waiting for fsync) [default: batch]
    #[arg(long, env = "WHARF_FSYNC", value_name = "POLICY", value_parser = parse_fsync)]
    pub fsync: Option<FsyncPolicy>,
    /// Below this much free space on the data directory's disk, publishers are blocked
    /// [default: 50000000, as RabbitMQ]
    #[arg(long, env = "WHARF_DISK_FREE_LIMIT", value_name = "BYTES")]
    pub disk_free_limit: Option<u64>,
    /// A channel whose oldest unacknowledged delivery is older than this many
    /// milliseconds is closed (406), its deliveries requeued; 0 turns the check off
    /// [default: 1800000, as RabbitMQ]
    #[arg(long, env = "WHARF_CONSUMER_TIMEOUT", value_name = "MS")]
    pub consumer_timeout: Option<u64>,
    /// Address for AMQP over TLS (amqps); served only with --tls-cert
    /// [default: 0.0.0.0:5671]
    #[arg(long, env = "WHARF_AMQPS_LISTEN", value_name = "ADDR:PORT")]
    pub amqps_listen: Option<SocketAddr>,
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
}

fn parse_client_certificates(value: &str) -> Result<ClientCertificates, String> {
    ClientCertificates::parse(value).ok_or_else(|| {
        format!("'{value}' is not a client certificate mode: use none, optional or required")
    })
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
    amqp_listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    log_level: Option<String>,
    fsync: Option<String>,
    disk_free_limit: Option<u64>,
    consumer_timeout: Option<u64>,
    amqps_listen: Option<SocketAddr>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    tls_client_certificates: Option<String>,
    default_user: Option<String>,
    default_pass: Option<String>,
    failed_login_delay: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub amqp_listen: SocketAddr,
    pub data_dir: PathBuf,
    pub log_level: String,
    pub fsync: FsyncPolicy,
    pub disk_free_limit_bytes: u64,
    /// None: no consumer timeout.
    pub consumer_timeout: Option<std::time::Duration>,
    pub amqps_listen: SocketAddr,
    /// None: no amqps listener.
    pub tls: Option<TlsSettings>,
    pub default_user: String,
    pub default_pass: String,
    pub failed_login_delay: std::time::Duration,
}

impl Config {
    pub fn resolve(args: &ServeArgs) -> anyhow::Result<Config> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let tls = tls_settings(args, &file)?;
        Ok(Config {
            amqp_listen: args
                .amqp_listen
                .or(file.amqp_listen)
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 5672))),
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
            consumer_timeout: match args.consumer_timeout.or(file.consumer_timeout) {
                Some(0) => None,
                Some(ms) => Some(std::time::Duration::from_millis(ms)),
                None => Some(wharf_server::CONSUMER_TIMEOUT_DEFAULT),
            },
            amqps_listen: args
                .amqps_listen
                .or(file.amqps_listen)
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 5671))),
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
        assert_eq!(config.amqp_listen, "0.0.0.0:5672".parse().unwrap());
        assert_eq!(config.data_dir, PathBuf::from("./data"));
        assert_eq!(config.log_level, "info");
        assert_eq!(config.fsync, FsyncPolicy::Batch);
        assert_eq!(
            config.consumer_timeout,
            Some(std::time::Duration::from_secs(1800))
        );
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
        assert_eq!(config.amqp_listen, "127.0.0.1:5800".parse().unwrap());
        assert_eq!(config.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(config.log_level, "warn");

        std::fs::write(&path, "amqp_lisen = \"127.0.0.1:1\"\n").unwrap();
        let error = Config::resolve(&args).unwrap_err();
        assert!(format!("{error:#}").contains("unknown field"), "{error:#}");
        std::fs::remove_dir_all(&dir).unwrap();
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
