//! A test certificate authority (rcgen) and a one-version TLS client (rustls), for the
//! TLS tests of the integration suite and of the `wharf` binary.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a TLS client waits for the broker.
const WAIT: Duration = Duration::from_secs(5);

async fn within<T>(f: impl std::future::Future<Output = T>) -> std::io::Result<T> {
    tokio::time::timeout(WAIT, f)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "the broker did not answer"))
}

/// A certificate authority that signs server and client certificates into `dir`.
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    dir: PathBuf,
    name: String,
}

impl Ca {
    pub fn new(dir: &Path, name: &str) -> Ca {
        std::fs::create_dir_all(dir).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join(format!("{name}-ca.pem")), cert.pem()).unwrap();
        Ca {
            cert,
            key,
            dir: dir.to_path_buf(),
            name: name.to_string(),
        }
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.pem", self.name))
    }

    /// Signs a certificate for `common_name` (with these subject names, as server or
    /// client); writes `<file>.pem` and `<file>.key`, returns their paths.
    pub fn issue(&self, file: &str, common_name: &str, client: bool) -> (PathBuf, PathBuf) {
        let names = if client {
            Vec::new()
        } else {
            vec!["localhost".to_string(), "127.0.0.1".to_string()]
        };
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        self.sign(params, file)
    }
}

impl Ca {
    /// Signs `params` with a new key; writes `<file>.pem` and `<file>.key`.
    fn sign(&self, params: CertificateParams, file: &str) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let (cert_path, key_path) = (
            self.dir.join(format!("{file}.pem")),
            self.dir.join(format!("{file}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    /// Signs a cluster node's certificate: it names the node's IP address, and serves both
    /// as server and as client certificate (nodes dial each other).
    pub fn issue_node(&self, file: &str, ip: std::net::IpAddr) -> (PathBuf, PathBuf) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names.push(rcgen::SanType::IpAddress(ip));
        params
            .distinguished_name
            .push(DnType::CommonName, format!("node {ip}"));
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        self.sign(params, file)
    }
}

/// A rustls client of exactly one TLS version: whether the handshake completes, and
/// then whether the broker answers the protocol header with connection.start.
pub async fn handshake_with(
    addr: std::net::SocketAddr,
    ca: &Path,
    version: &'static rustls::SupportedProtocolVersion,
) -> std::io::Result<Vec<u8>> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).unwrap();
    for cert in certificates(&pem) {
        roots.add(cert).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[version])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let socket = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut stream = within(connector.connect(name, socket)).await??;
    stream.write_all(b"AMQP\x00\x00\x09\x01").await?;
    let mut start = vec![0u8; 7];
    within(stream.read_exact(&mut start)).await??;
    Ok(start)
}

pub fn certificates(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .map(|c| c.unwrap())
        .collect()
}
