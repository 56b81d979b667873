//! The cluster's settings: the node's name, where it listens for the other nodes, the seed
//! list and the secret file. Without seeds the broker is a single node, as ever.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

/// Flags (and `WHARF_*` variables) of a cluster node.
#[derive(Debug, Clone, Default, Args)]
pub struct ClusterArgs {
    /// The node's name, shown by cluster_status and the management API
    /// [default: wharf@ and the host name]
    #[arg(long, env = "WHARF_NODE_NAME", value_name = "NAME")]
    pub node_name: Option<String>,
    /// Where this node listens for the other nodes of its cluster, IP:PORT: also the
    /// address they reach it at, so one of --cluster-seeds for a founding node
    #[arg(long, env = "WHARF_CLUSTER_LISTEN", value_name = "IP:PORT")]
    pub cluster_listen: Option<String>,
    /// The cluster's founding nodes' cluster addresses, comma-separated, the same list on
    /// every node; the cluster forms once a majority of them is up. Without it, Wharf is a
    /// single node
    #[arg(long, env = "WHARF_CLUSTER_SEEDS", value_name = "IP:PORT,...")]
    pub cluster_seeds: Option<String>,
    /// A file holding the secret every node of the cluster shares (at least 16 bytes,
    /// readable by its owner only)
    #[arg(long, env = "WHARF_CLUSTER_SECRET_FILE", value_name = "FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// TLS between the nodes, with --tls-cert and --tls-key (naming this node's cluster IP,
    /// for server and client authentication) and --tls-ca (which signed every node's)
    #[arg(long, env = "WHARF_CLUSTER_TLS")]
    pub cluster_tls: bool,
}

/// The settings file's cluster keys.
#[derive(Debug, Default)]
pub struct FileCluster {
    pub cluster_listen: Option<String>,
    /// A string as on the command line, or an array of addresses.
    pub cluster_seeds: Option<toml::Value>,
    pub cluster_secret_file: Option<PathBuf>,
    pub cluster_tls: Option<bool>,
    /// The broker's TLS files (certificate, key, CA), if set.
    pub tls: Option<(PathBuf, PathBuf, Option<PathBuf>)>,
}

/// A cluster node's settings, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    pub listen: SocketAddr,
    pub seeds: Vec<SocketAddr>,
    pub secret_file: PathBuf,
    pub tls: Option<wharf_cluster::tls::ClusterTlsFiles>,
}

/// Resolves the cluster settings: flags over the file; None without seeds.
pub fn resolve(args: &ClusterArgs, file: FileCluster) -> anyhow::Result<Option<ClusterSettings>> {
    let seeds_text = match (&args.cluster_seeds, file.cluster_seeds) {
        (Some(text), _) => Some(text.clone()),
        (None, Some(toml::Value::String(text))) => Some(text),
        (None, Some(toml::Value::Array(items))) => {
            let texts: Option<Vec<String>> = items
                .iter()
                .map(|item| item.as_str().map(str::to_string))
                .collect();
            Some(
                texts
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "invalid config file: cluster_seeds: a list of \"IP:PORT\" strings"
                        )
                    })?
                    .join(","),
            )
        }
        (None, Some(other)) => {
            anyhow::bail!("invalid config file: cluster_seeds: {other} is not a list of addresses")
        }
        (None, None) => None,
    };
    let listen_text = args.cluster_listen.clone().or(file.cluster_listen);
    let secret_file = args
        .cluster_secret_file
        .clone()
        .or(file.cluster_secret_file);
    let cluster_tls = args.cluster_tls || file.cluster_tls.unwrap_or(false);
    let seeds = match seeds_text {
        Some(text) => wharf_cluster::config::parse_seeds(&text).map_err(|e| anyhow::anyhow!(e))?,
        // Without seeds nor a cluster address, a single node; with an address, a node
        // that waits for `wharf ctl join_cluster`.
        None if listen_text.is_none() && secret_file.is_none() => return Ok(None),
        None => Vec::new(),
    };
    let listen_text = listen_text.ok_or_else(|| {
        anyhow::anyhow!(
            "a cluster node needs cluster_listen: the address the other nodes reach it at"
        )
    })?;
    let listen: SocketAddr = listen_text.parse().map_err(|_| {
        anyhow::anyhow!(
            "cluster_listen '{listen_text}' is not an address (IP:PORT, such as 10.0.0.1:25672)"
        )
    })?;
    if listen.ip().is_unspecified() {
        anyhow::bail!(
            "cluster_listen {listen} is not an address other nodes can reach: give this node's own IP"
        );
    }
    let secret_file = secret_file.ok_or_else(|| {
        anyhow::anyhow!("a cluster node needs cluster_secret_file: the secret every node shares")
    })?;
    let tls = match (cluster_tls, file.tls) {
        (false, _) => None,
        (true, Some((certificate, key, Some(ca)))) => Some(wharf_cluster::tls::ClusterTlsFiles {
            certificate,
            key,
            ca,
        }),
        (true, _) => anyhow::bail!(
            "cluster_tls needs tls_cert, tls_key and tls_ca: every node's certificate, its key, and the CA that signed them all"
        ),
    };
    Ok(Some(ClusterSettings {
        listen,
        seeds,
        secret_file,
        tls,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(listen: Option<&str>, seeds: Option<&str>, secret: Option<&str>) -> ClusterArgs {
        ClusterArgs {
            node_name: None,
            cluster_listen: listen.map(str::to_string),
            cluster_seeds: seeds.map(str::to_string),
            cluster_secret_file: secret.map(PathBuf::from),
            cluster_tls: false,
        }
    }

    #[test]
    fn without_seeds_the_broker_is_a_single_node() {
        assert_eq!(
            resolve(&ClusterArgs::default(), FileCluster::default()).unwrap(),
            None
        );
    }

    #[test]
    fn a_cluster_address_without_seeds_makes_a_node_that_waits_to_be_joined() {
        let settings = resolve(
            &args(Some("10.0.0.4:25672"), None, Some("/etc/wharf/secret")),
            FileCluster::default(),
        )
        .unwrap()
        .unwrap();
        assert!(settings.seeds.is_empty());
        assert_eq!(settings.listen, "10.0.0.4:25672".parse().unwrap());
        // It still needs its secret.
        let error = resolve(
            &args(Some("127.0.0.1:25672"), None, None),
            FileCluster::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("cluster_secret_file"), "{error}");
    }

    #[test]
    fn a_cluster_node_needs_an_address_and_a_secret() {
        let seeds = Some("10.0.0.1:25672,10.0.0.2:25672,10.0.0.3:25672");
        let settings = resolve(
            &args(Some("10.0.0.1:25672"), seeds, Some("/etc/wharf/secret")),
            FileCluster::default(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(settings.seeds.len(), 3);
        assert_eq!(settings.listen, "10.0.0.1:25672".parse().unwrap());
        let no_secret = resolve(
            &args(Some("10.0.0.1:25672"), seeds, None),
            FileCluster::default(),
        );
        assert!(no_secret
            .unwrap_err()
            .to_string()
            .contains("cluster_secret_file"));
        let no_listen = resolve(&args(None, seeds, Some("s")), FileCluster::default());
        assert!(no_listen
            .unwrap_err()
            .to_string()
            .contains("cluster_listen"));
        let anywhere = resolve(
            &args(Some("0.0.0.0:25672"), seeds, Some("s")),
            FileCluster::default(),
        );
        assert!(anywhere.unwrap_err().to_string().contains("own IP"));
        let bad_seed = resolve(
            &args(Some("10.0.0.1:25672"), Some("node2:25672"), Some("s")),
            FileCluster::default(),
        );
        assert!(bad_seed.unwrap_err().to_string().contains("'node2:25672'"));
    }

    #[test]
    fn tls_between_nodes_needs_a_certificate_a_key_and_a_ca() {
        let mut with_tls = args(Some("10.0.0.1:25672"), Some("10.0.0.1:25672"), Some("s"));
        with_tls.cluster_tls = true;
        let refused = resolve(&with_tls, FileCluster::default()).unwrap_err();
        assert!(refused.to_string().contains("tls_ca"), "{refused}");
        let no_ca = FileCluster {
            tls: Some((PathBuf::from("c.pem"), PathBuf::from("c.key"), None)),
            ..Default::default()
        };
        assert!(resolve(&with_tls, no_ca).is_err());
        let files = FileCluster {
            tls: Some((
                PathBuf::from("c.pem"),
                PathBuf::from("c.key"),
                Some(PathBuf::from("ca.pem")),
            )),
            ..Default::default()
        };
        let settings = resolve(&with_tls, files).unwrap().unwrap();
        assert_eq!(settings.tls.unwrap().ca, PathBuf::from("ca.pem"));
    }

    #[test]
    fn seeds_from_the_file_as_a_list_and_flags_over_the_file() {
        let file = FileCluster {
            cluster_listen: Some("10.0.0.2:25672".into()),
            cluster_seeds: Some(toml::Value::Array(vec![
                toml::Value::String("10.0.0.1:25672".into()),
                toml::Value::String("10.0.0.2:25672".into()),
            ])),
            cluster_secret_file: Some(PathBuf::from("/secret")),
            ..Default::default()
        };
        let settings = resolve(&args(Some("10.0.0.1:25672"), None, None), file)
            .unwrap()
            .unwrap();
        assert_eq!(settings.listen, "10.0.0.1:25672".parse().unwrap());
        assert_eq!(settings.seeds.len(), 2);
    }
}
