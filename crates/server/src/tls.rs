//! TLS for AMQP (amqps, RabbitMQ's port 5671) with rustls: the server certificate and key
//! from PEM files, TLS 1.2 and 1.3, client certificates optional or required (verified
//! against a CA bundle), and the files read again on demand (SIGHUP) without a restart;
//! connections already open keep the certificate they started with.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use tokio_rustls::TlsAcceptor;

/// Whether clients present certificates (RabbitMQ's `ssl_options.verify` and
/// `fail_if_no_peer_cert`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCertificates {
    /// Not asked for (verify_none).
    None,
    /// Asked for and verified if given (verify_peer, fail_if_no_peer_cert = false).
    Optional,
    /// A client without a valid certificate is refused (fail_if_no_peer_cert = true).
    Required,
}

impl ClientCertificates {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "none" => Some(ClientCertificates::None),
            "optional" => Some(ClientCertificates::Optional),
            "required" => Some(ClientCertificates::Required),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// The server's certificate chain, PEM, leaf first.
    pub certificate: PathBuf,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates (PEM) that client certificates must chain to.
    pub ca: Option<PathBuf>,
    pub client_certificates: ClientCertificates,
}

/// Why the TLS files could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsError(pub String);

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

/// The TLS configuration in use, which [`Tls::reload`] replaces.
pub struct Tls {
    settings: TlsSettings,
    acceptor: RwLock<TlsAcceptor>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("settings", &self.settings)
            .finish()
    }
}

impl Tls {
    pub fn load(settings: TlsSettings) -> Result<Tls, TlsError> {
        let acceptor = acceptor(&settings)?;
        Ok(Tls {
            settings,
            acceptor: RwLock::new(acceptor),
        })
    }

    /// Reads the files again; on an error, the configuration in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        *self.acceptor.write() = acceptor(&self.settings)?;
        Ok(())
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.read().clone()
    }

    /// The subject and expiry (seconds since the epoch) of each certificate of the chain
    /// the broker presents, as its file holds it now.
    pub fn presented_certificates(&self) -> Result<Vec<(String, i64)>, TlsError> {
        let chain = certificates(&self.settings.certificate)?;
        Ok(chain
            .iter()
            .filter_map(|der| {
                let (_, parsed) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
                Some((
                    parsed.subject().to_string(),
                    parsed.validity().not_after.timestamp(),
                ))
            })
            .collect())
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError(format!("cannot read {}: {e}", path.display())))
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError(format!("{}: not PEM certificates: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "{}: no certificate in it (expected PEM 'BEGIN CERTIFICATE')",
            path.display()
        )));
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| TlsError(format!("{}: not a PEM private key: {e}", path.display())))?
        .ok_or_else(|| TlsError(format!("{}: no private key in it", path.display())))
}

fn acceptor(settings: &TlsSettings) -> Result<TlsAcceptor, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError(format!("TLS versions: {e}")))?;
    let builder = match settings.client_certificates {
        ClientCertificates::None => builder.with_no_client_auth(),
        wanted => {
            let ca = settings.ca.as_deref().ok_or_else(|| {
                TlsError("client certificates need a CA to verify them (--tls-ca)".to_string())
            })?;
            let mut roots = RootCertStore::empty();
            for cert in certificates(ca)? {
                roots
                    .add(cert)
                    .map_err(|e| TlsError(format!("{}: {e}", ca.display())))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match wanted {
                ClientCertificates::Optional => verifier.allow_unauthenticated(),
                _ => verifier,
            };
            let verifier = verifier
                .build()
                .map_err(|e| TlsError(format!("client certificate verifier: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(
            certificates(&settings.certificate)?,
            private_key(&settings.key)?,
        )
        .map_err(|e| {
            TlsError(format!(
                "{} and {}: {e}",
                settings.certificate.display(),
                settings.key.display()
            ))
        })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// What a connection negotiated, for management: RabbitMQ names the protocol
/// "tlsv1.3" and splits the suite into key exchange, cipher and hash.
pub fn details(connection: &rustls::ServerConnection) -> wharf_core::connections::TlsDetails {
    let protocol = match connection.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "tlsv1.3".to_string(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "tlsv1.2".to_string(),
        Some(other) => format!("{other:?}").to_lowercase(),
        None => String::new(),
    };
    let suite = connection
        .negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()))
        .unwrap_or_default();
    let (key_exchange, cipher, hash) = split_suite(&suite);
    let leaf = connection
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|der| x509_parser::parse_x509_certificate(der.as_ref()).ok())
        .map(|(_, parsed)| parsed);
    let text = |time: x509_parser::time::ASN1Time| {
        time.to_datetime()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    wharf_core::connections::TlsDetails {
        protocol,
        key_exchange,
        cipher,
        hash,
        peer_subject: leaf.as_ref().map(|c| c.subject().to_string()),
        peer_issuer: leaf.as_ref().map(|c| c.issuer().to_string()),
        peer_validity: leaf.as_ref().map(|c| {
            let validity = c.validity();
            format!(
                "{} - {}",
                text(validity.not_before),
                text(validity.not_after)
            )
        }),
    }
}

/// "TLS13_AES_256_GCM_SHA384" is (any, aes_256_gcm, sha384);
/// "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" is (ecdhe_rsa, aes_128_gcm, sha256).
fn split_suite(suite: &str) -> (String, String, String) {
    let lower = suite.to_lowercase();
    let (exchange, rest) = match lower.strip_prefix("tls13_") {
        Some(rest) => ("any", rest),
        None => match lower
            .strip_prefix("tls_")
            .and_then(|s| s.split_once("_with_"))
        {
            Some((exchange, rest)) => (exchange, rest),
            None => return (String::new(), lower, String::new()),
        },
    };
    match rest.rsplit_once('_') {
        Some((cipher, hash)) => (exchange.to_string(), cipher.to_string(), hash.to_string()),
        None => (exchange.to_string(), rest.to_string(), String::new()),
    }
}

/// The common name (CN) of a verified client certificate's subject: who SASL EXTERNAL
/// logs in as.
pub fn client_common_name(connection: &rustls::ServerConnection) -> Option<String> {
    let leaf = connection.peer_certificates()?.first()?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let cn = parsed.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

#[cfg(test)]
mod suite_tests {
    use super::split_suite;

    #[test]
    fn suites_split_as_rabbitmq_shows_them() {
        let split = |s: &str| split_suite(s);
        assert_eq!(
            split("TLS13_AES_256_GCM_SHA384"),
            ("any".into(), "aes_256_gcm".into(), "sha384".into())
        );
        assert_eq!(
            split("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
            ("ecdhe_rsa".into(), "aes_128_gcm".into(), "sha256".into())
        );
        assert_eq!(split("odd"), (String::new(), "odd".into(), String::new()));
    }
}
