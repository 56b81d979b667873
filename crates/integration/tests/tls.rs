//! AMQP over TLS: the amqps listener with a certificate from PEM files (made here by a
//! test CA with rcgen), TLS 1.2 and 1.3, client certificates (optional, required, from
//! the wrong CA), SASL EXTERNAL by the certificate's common name, and a certificate
//! reloaded without a restart. Real clients: amqprs over rustls, and rustls directly.

mod common;

use std::path::Path;

use bytes::BytesMut;
use std::sync::Arc;

use amqprs::callbacks::{DefaultChannelCallback, DefaultConnectionCallback};
use amqprs::channel::QueueDeclareArguments;
use amqprs::connection::{Connection, OpenConnectionArguments};
use amqprs::security::SecurityCredentials;
use amqprs::tls::TlsAdaptor;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wharf_integration::pki::{certificates as rustls_pemfile_certs, handshake_with, Ca};
use wharf_server::tls::{ClientCertificates, Tls, TlsSettings};

fn settings(ca: &Ca, client_certificates: ClientCertificates) -> TlsSettings {
    let (certificate, key) = ca.issue("server", "wharf test server", false);
    TlsSettings {
        certificate,
        key,
        ca: Some(ca.ca_file()),
        client_certificates,
    }
}

async fn tls_broker(settings: TlsSettings) -> (TestBroker, Arc<Tls>) {
    let tls = Arc::new(Tls::load(settings).expect("the test certificates load"));
    (
        wharf_integration::start_broker_with_tls(tls.clone()).await,
        tls,
    )
}

fn arguments(broker: &TestBroker, user: &str, password: &str) -> OpenConnectionArguments {
    let addr = broker.tls_addr.expect("a TLS listener");
    OpenConnectionArguments::new(&addr.ip().to_string(), addr.port(), user, password)
}

async fn open(
    mut args: OpenConnectionArguments,
    adaptor: TlsAdaptor,
) -> Result<Connection, amqprs::error::Error> {
    args.tls_adaptor(adaptor);
    let connection = within(Connection::open(&args)).await?;
    connection
        .register_callback(DefaultConnectionCallback)
        .await
        .unwrap();
    Ok(connection)
}

/// Declares a queue over the connection: the session works end to end.
async fn works(connection: &Connection) {
    let channel = connection.open_channel(None).await.unwrap();
    channel
        .register_callback(DefaultChannelCallback)
        .await
        .unwrap();
    let (name, _, _) = channel
        .queue_declare(QueueDeclareArguments::exclusive_server_named())
        .await
        .unwrap()
        .unwrap();
    assert!(name.starts_with("amq.gen-"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_with_a_password_over_tls_1_2_and_1_3() {
    let dir = TempDir::new("wharf-tls");
    let ca = Ca::new(&dir.0, "main");
    let (broker, _tls) = tls_broker(settings(&ca, ClientCertificates::None)).await;
    let adaptor = TlsAdaptor::without_client_auth(Some(&ca.ca_file()), "localhost".into()).unwrap();
    let connection = open(arguments(&broker, "guest", "guest"), adaptor)
        .await
        .unwrap();
    works(&connection).await;

    let addr = broker.tls_addr.unwrap();
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let start = handshake_with(addr, &ca.ca_file(), version).await.unwrap();
        // A method frame on channel 0: connection.start.
        assert_eq!(&start[..3], &[1, 0, 0], "{version:?}");
    }
    // A client that does not trust the server's CA does not get through.
    let other = Ca::new(&dir.0, "other");
    let error = handshake_with(addr, &other.ca_file(), &rustls::version::TLS13)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("certificate"), "{error}");
    // And the plain listener still serves plain AMQP.
    lapin_connect(&broker.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_logs_in_with_external_as_its_common_name() {
    let dir = TempDir::new("wharf-tls-external");
    let ca = Ca::new(&dir.0, "main");
    let (broker, _tls) = tls_broker(settings(&ca, ClientCertificates::Required)).await;
    // A user without a password: only its certificate lets it in.
    broker.must(&["add_user", "cert-user", "unused"]);
    broker.must(&["clear_password", "cert-user"]);
    broker.must(&["set_permissions", "cert-user", ".*", ".*", ".*"]);
    let (cert, key) = ca.issue("client", "cert-user", true);
    let adaptor = || {
        TlsAdaptor::with_client_auth(Some(&ca.ca_file()), &cert, &key, "localhost".into()).unwrap()
    };
    let mut args = arguments(&broker, "", "");
    args.credentials(SecurityCredentials::new_external());
    let connection = open(args.clone(), adaptor()).await.unwrap();
    works(&connection).await;

    // Password login still works over the same TLS connection kind.
    let connection = open(arguments(&broker, "guest", "guest"), adaptor())
        .await
        .unwrap();
    works(&connection).await;

    // A certificate whose name is no user is refused at login, with RabbitMQ's 403 for a
    // client that asks for a close on failed logins.
    let (stranger, stranger_key) = ca.issue("stranger", "nobody-here", true);
    let (code, text, mechanisms) =
        external_login(broker.tls_addr.unwrap(), &ca, &stranger, &stranger_key).await;
    assert!(
        mechanisms.split(' ').any(|m| m == "EXTERNAL"),
        "{mechanisms}"
    );
    assert_eq!(
        (code, text.as_str()),
        (
            403,
            "ACCESS_REFUSED - Login was refused using authentication mechanism EXTERNAL. For details see the broker logfile."
        )
    );
}

/// AMQP frames over a rustls client stream.
struct TlsClient {
    stream: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    buffer: bytes::BytesMut,
}

impl TlsClient {
    async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    async fn next_method(&mut self) -> wharf_amqp::Method {
        use wharf_amqp::{Frame, FramePayload};
        loop {
            if let Some(Frame {
                payload: FramePayload::Method(m),
                ..
            }) = Frame::decode(&mut self.buffer, 0).unwrap()
            {
                return m;
            }
            let read = within(self.stream.read_buf(&mut self.buffer)).await;
            assert!(read.unwrap() > 0, "the broker closed the connection");
        }
    }
}

/// Logs in with EXTERNAL over TLS with a client certificate, announcing
/// authentication_failure_close: (close code, close text, the mechanisms offered).
async fn external_login(
    addr: std::net::SocketAddr,
    ca: &Ca,
    cert: &Path,
    key: &Path,
) -> (u16, String, String) {
    use wharf_amqp::frame::{encode_method, PROTOCOL_HEADER};
    use wharf_amqp::{ConnectionStartOk, FieldTable, FieldValue, Method};
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile_certs(&std::fs::read(ca.ca_file()).unwrap()) {
        roots.add(c).unwrap();
    }
    let chain = rustls_pemfile_certs(&std::fs::read(cert).unwrap());
    let key = {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::PrivateKeyDer::from_pem_file(key).unwrap()
    };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = within(connector.connect(name, socket)).await.unwrap();
    let mut client = TlsClient {
        stream,
        buffer: BytesMut::new(),
    };
    client.send_raw(PROTOCOL_HEADER).await;
    let Method::ConnectionStart(start) = client.next_method().await else {
        panic!("expected connection.start");
    };
    let mechanisms = String::from_utf8_lossy(&start.mechanisms).into_owned();
    let mut capabilities = FieldTable::new();
    capabilities.insert("authentication_failure_close", FieldValue::Bool(true));
    let mut properties = FieldTable::new();
    properties.insert("capabilities", FieldValue::Table(capabilities));
    let start_ok = Method::ConnectionStartOk(Box::new(ConnectionStartOk {
        client_properties: properties,
        mechanism: "EXTERNAL".into(),
        response: bytes::Bytes::new(),
        locale: "en_US".into(),
    }));
    let mut out = BytesMut::new();
    encode_method(0, &start_ok, &mut out);
    client.send_raw(&out).await;
    match client.next_method().await {
        Method::ConnectionClose(close) => {
            (close.reply_code, close.reply_text.to_string(), mechanisms)
        }
        other => panic!("expected connection.close, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_client_certificates_turn_away_clients_without_a_valid_one() {
    let dir = TempDir::new("wharf-tls-required");
    let ca = Ca::new(&dir.0, "main");
    let (broker, _tls) = tls_broker(settings(&ca, ClientCertificates::Required)).await;
    let without = TlsAdaptor::without_client_auth(Some(&ca.ca_file()), "localhost".into()).unwrap();
    assert!(open(arguments(&broker, "guest", "guest"), without)
        .await
        .is_err());

    let other = Ca::new(&dir.0, "other");
    let (cert, key) = other.issue("foreign", "guest", true);
    let foreign =
        TlsAdaptor::with_client_auth(Some(&ca.ca_file()), &cert, &key, "localhost".into()).unwrap();
    assert!(open(arguments(&broker, "guest", "guest"), foreign)
        .await
        .is_err());

    // With optional certificates, a client without one logs in with its password, and
    // EXTERNAL is not offered to it.
    let (broker, _tls) = tls_broker(settings(&ca, ClientCertificates::Optional)).await;
    let without = TlsAdaptor::without_client_auth(Some(&ca.ca_file()), "localhost".into()).unwrap();
    let connection = open(arguments(&broker, "guest", "guest"), without)
        .await
        .unwrap();
    works(&connection).await;
    let mut external = arguments(&broker, "", "");
    external.credentials(SecurityCredentials::new_external());
    let without = TlsAdaptor::without_client_auth(Some(&ca.ca_file()), "localhost".into()).unwrap();
    assert!(open(external, without).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_certificate_serves_new_connections() {
    let dir = TempDir::new("wharf-tls-reload");
    let first = Ca::new(&dir.0, "first");
    let settings = settings(&first, ClientCertificates::None);
    let (broker, tls) = tls_broker(settings.clone()).await;
    let addr = broker.tls_addr.unwrap();
    let tls13 = &rustls::version::TLS13;
    handshake_with(addr, &first.ca_file(), tls13).await.unwrap();

    // The files are replaced by ones from another CA, then reloaded.
    let second = Ca::new(&dir.0, "second");
    let (cert, key) = second.issue("renewed", "wharf test server", false);
    std::fs::copy(&cert, &settings.certificate).unwrap();
    std::fs::copy(&key, &settings.key).unwrap();
    assert!(
        handshake_with(addr, &first.ca_file(), tls13).await.is_ok(),
        "nothing changes before the reload"
    );
    tls.reload().unwrap();
    handshake_with(addr, &second.ca_file(), tls13)
        .await
        .unwrap();
    assert!(handshake_with(addr, &first.ca_file(), tls13).await.is_err());

    // A broken file is refused; what was in use stays.
    std::fs::write(&settings.key, "not a key").unwrap();
    let error = tls.reload().unwrap_err();
    assert!(error.to_string().contains("private key"), "{error}");
    handshake_with(addr, &second.ca_file(), tls13)
        .await
        .unwrap();
}

#[test]
fn bad_tls_files_are_refused_naming_the_file() {
    let dir = TempDir::new("wharf-tls-bad");
    let ca = Ca::new(&dir.0, "main");
    let good = settings(&ca, ClientCertificates::None);
    let missing = TlsSettings {
        certificate: dir.0.join("missing.pem"),
        ..good.clone()
    };
    let error = Tls::load(missing).unwrap_err();
    assert!(error.to_string().contains("missing.pem"), "{error}");
    let swapped = TlsSettings {
        certificate: good.key.clone(),
        ..good.clone()
    };
    let error = Tls::load(swapped).unwrap_err();
    assert!(error.to_string().contains("no certificate"), "{error}");
    let no_ca = TlsSettings {
        ca: None,
        client_certificates: ClientCertificates::Required,
        ..good.clone()
    };
    let error = Tls::load(no_ca).unwrap_err();
    assert!(error.to_string().contains("need a CA"), "{error}");
    let (other_cert, _) = ca.issue("other", "other", false);
    let mismatched = TlsSettings {
        certificate: other_cert,
        ..good
    };
    assert!(
        Tls::load(mismatched).is_err(),
        "a key that is not the certificate's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_listeners_share_one_socket_budget() {
    if std::env::var("WHARF_TEST_EXTERNAL").is_ok() {
        return; // an in-process broker's listeners
    }
    let dir = TempDir::new("wharf-tls");
    let ca = Ca::new(&dir.0, "main");
    let tls = Arc::new(Tls::load(settings(&ca, ClientCertificates::None)).unwrap());
    let config = wharf_server::ServerConfig {
        sockets: wharf_server::sockets::SocketBudget::new(Some(3)),
        ..Default::default()
    };
    let broker = wharf_integration::start_broker_with_tls_and(tls, config).await;
    let tls_addr = broker.tls_addr.unwrap();
    // Three silent sockets, two plain and one on the TLS port, spend the budget.
    let first = tokio::net::TcpStream::connect(broker.addr).await.unwrap();
    let _second = tokio::net::TcpStream::connect(broker.addr).await.unwrap();
    let _third = tokio::net::TcpStream::connect(tls_addr).await.unwrap();
    let closed_at_once = |addr| async move {
        let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut byte = [0u8; 1];
        // A socket within the budget is held open (until the handshake timeout).
        match within(socket.read(&mut byte)).await {
            Ok(0) | Err(_) => true,
            Ok(_) => false,
        }
    };
    // Whichever listener the next one reaches, it is closed as accepted.
    assert!(closed_at_once(broker.addr).await);
    assert!(closed_at_once(tls_addr).await);
    drop(first);
    // The budget comes back: a plain client is served again.
    let again = async {
        loop {
            let mut socket = tokio::net::TcpStream::connect(broker.addr).await.unwrap();
            socket.write_all(b"AMQP\x00\x00\x09\x01").await.unwrap();
            let mut byte = [0u8; 1];
            if let Ok(1) = socket.read(&mut byte).await {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    within(again).await;
}
