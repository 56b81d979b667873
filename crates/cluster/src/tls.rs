//! TLS on the cluster port, with the broker's certificates: each node presents its
//! certificate (as server and as client) and accepts only peers whose certificate the
//! CA signed, so that the traffic between nodes is encrypted and both ends are
//! authenticated, before the secret's handshake runs inside. A node's certificate
//! names its cluster IP address (a subject alternative name) and allows both server and
//! client authentication.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::transport::Io;

/// The files of a node's TLS: its certificate chain and key, and the CA every node's
/// certificate is signed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterTlsFiles {
    pub certificate: std::path::PathBuf,
    pub key: std::path::PathBuf,
    pub ca: std::path::PathBuf,
}

/// The acceptor and connector of the cluster port.
#[derive(Clone)]
pub struct ClusterTls {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(path)?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not PEM certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", path.display()));
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read(path)?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| format!("{}: not a PEM private key: {e}", path.display()))?
        .ok_or_else(|| format!("{}: no private key in it", path.display()))
}

impl ClusterTls {
    pub fn load(files: &ClusterTlsFiles) -> Result<ClusterTls, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for cert in certificates(&files.ca)? {
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", files.ca.display()))?;
        }
        let roots = Arc::new(roots);
        let chain = certificates(&files.certificate)?;
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| format!("the cluster's client certificate check: {e}"))?;
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| format!("TLS versions: {e}"))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), private_key(&files.key)?)
            .map_err(|e| format!("{}: {e}", files.certificate.display()))?;
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| format!("TLS versions: {e}"))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, private_key(&files.key)?)
            .map_err(|e| format!("{}: {e}", files.certificate.display()))?;
        Ok(ClusterTls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
        })
    }

    /// TLS as the dialing side, checking that the peer's certificate names `ip`.
    pub async fn connect(&self, ip: IpAddr, stream: TcpStream) -> Result<Io, String> {
        let name = ServerName::IpAddress(ip.into());
        let stream = self
            .connector
            .connect(name, stream)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        Ok(Box::new(stream))
    }

    pub async fn accept(&self, stream: TcpStream) -> Result<Io, String> {
        let stream = self
            .acceptor
            .accept(stream)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        Ok(Box::new(stream))
    }
}
