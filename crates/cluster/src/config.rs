//! Who a node is in its cluster and what it needs to find the others: its name, the
//! address it listens on for the other nodes (which is also how they reach it), the seed
//! list, and the shared secret.
//!
//! A node's Raft id is derived from its cluster address, so that every node started with
//! the same seed list computes the same ids for all of them before any has spoken: that is
//! what lets each initialize the cluster with the same membership, which Raft makes safe
//! however the nodes race (see `formation`).

use std::net::SocketAddr;
use std::path::Path;

use ring::digest;

/// A node's id in the Raft group.
pub type NodeId = u64;

#[derive(Clone)]
pub struct ClusterConfig {
    /// The node's name, shown in status and lists (RabbitMQ's `rabbit@host`).
    pub node_name: String,
    /// Where this node listens for the other nodes, and the address they know it by.
    pub listen: SocketAddr,
    /// The cluster's founding members. The same list on every node.
    pub seeds: Vec<SocketAddr>,
    pub secret: Secret,
    /// TLS on the cluster port (the broker's certificate and key, and the CA).
    pub tls: Option<crate::tls::ClusterTlsFiles>,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("node_name", &self.node_name)
            .field("listen", &self.listen)
            .field("seeds", &self.seeds)
            .finish_non_exhaustive()
    }
}

impl ClusterConfig {
    pub fn node_id(&self) -> NodeId {
        node_id(&self.listen)
    }

    /// Whether this node is one of the seeds (and so founds the cluster with them).
    pub fn is_seed(&self) -> bool {
        self.seeds.contains(&self.listen)
    }
}

/// The id of the node at `address`: the first 63 bits of a SHA-256 of its text, never 0.
pub fn node_id(address: &SocketAddr) -> NodeId {
    let hash = digest::digest(&digest::SHA256, address.to_string().as_bytes());
    let bytes: [u8; 8] = hash.as_ref()[..8].try_into().expect("8 bytes");
    (u64::from_be_bytes(bytes) >> 1).max(1)
}

/// Parses a seed list: `host:port` addresses separated by commas (IP addresses).
pub fn parse_seeds(text: &str) -> Result<Vec<SocketAddr>, String> {
    let mut seeds = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let address: SocketAddr = part.parse().map_err(|_| {
            format!(
                "'{part}' in the cluster seeds is not an address (IP:port, such as 10.0.0.1:25672)"
            )
        })?;
        if !seeds.contains(&address) {
            seeds.push(address);
        }
    }
    if seeds.is_empty() {
        return Err("the cluster seed list is empty".to_string());
    }
    Ok(seeds)
}

/// The secret every node of a cluster shares (RabbitMQ's Erlang cookie). It proves a peer
/// belongs; it is never sent.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

/// The fewest bytes a secret may have: fewer are guessable.
pub const SECRET_BYTES_MIN: usize = 16;

impl Secret {
    /// Reads the secret from a file that only its owner may read (as Erlang insists for
    /// its cookie): a secret others can read is no secret. A trailing newline is not part
    /// of it.
    pub fn load(path: &Path) -> Result<Secret, String> {
        let shown = path.display();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let metadata = std::fs::metadata(path)
                .map_err(|e| format!("cannot read the cluster secret file {shown}: {e}"))?;
            let mode = metadata.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(format!(
                    "the cluster secret file {shown} may be read by others (mode {:o}); \
                     make it the owner's only: chmod 600 {shown}",
                    mode & 0o777
                ));
            }
        }
        let bytes = std::fs::read(path)
            .map_err(|e| format!("cannot read the cluster secret file {shown}: {e}"))?;
        Secret::from_bytes(&bytes).map_err(|e| format!("the cluster secret file {shown}: {e}"))
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Secret, String> {
        let mut secret = bytes.to_vec();
        while secret.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            secret.pop();
        }
        if secret.len() < SECRET_BYTES_MIN {
            return Err(format!(
                "the secret has {} bytes; it needs at least {SECRET_BYTES_MIN}",
                secret.len()
            ));
        }
        Ok(Secret(secret))
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_computes_the_same_distinct_ids() {
        let seeds = parse_seeds("127.0.0.1:25672, 127.0.0.1:25673,127.0.0.1:25674").unwrap();
        let ids: Vec<NodeId> = seeds.iter().map(node_id).collect();
        assert_eq!(ids, seeds.iter().map(node_id).collect::<Vec<_>>());
        assert!(ids.iter().all(|id| *id != 0));
        assert_ne!(ids[0], ids[1]);
        assert_ne!(ids[1], ids[2]);
        assert_eq!(
            node_id(&"[::1]:25672".parse().unwrap()),
            node_id(&"[0:0:0:0:0:0:0:1]:25672".parse().unwrap()),
            "the same address written two ways is one node"
        );
    }

    #[test]
    fn bad_seed_lists_say_what_is_wrong() {
        assert!(parse_seeds("").unwrap_err().contains("empty"));
        assert!(parse_seeds("node1:25672")
            .unwrap_err()
            .contains("'node1:25672'"));
        assert_eq!(parse_seeds("10.0.0.1:1,10.0.0.1:1").unwrap().len(), 1);
    }

    #[test]
    fn a_secret_must_be_long_and_the_owners_only() {
        assert!(Secret::from_bytes(b"short\n").is_err());
        let secret = Secret::from_bytes(b"0123456789abcdef\n").unwrap();
        assert_eq!(secret.bytes(), b"0123456789abcdef");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, b"0123456789abcdef").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let refused = Secret::load(&path).err().unwrap();
        assert!(refused.contains("chmod 600"), "{refused}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Secret::load(&path).is_ok());
        assert!(Secret::load(&dir.path().join("missing")).is_err());
    }
}
