//! The opening of a connection: protocol header, connection.start / start-ok (SASL),
//! tune / tune-ok, and open / open-ok. Everything the rest of the connection needs to
//! know about its client comes out of here as a [`Handshake`].

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::AsyncRead;
use wharf_amqp::frame::{encode_method, PROTOCOL_HEADER};
use wharf_amqp::*;
use wharf_core::connections::{Census, Closer, Registration};
use wharf_core::{limits, Broker, ConnectionId, Grant, VHost};

use crate::error::AmqpError;
use crate::frame_reader::{FrameReader, ReadError};
use crate::outbound::Outbound;
use crate::sasl;
use crate::ServerConfig;

/// Frames may not be smaller than this (AMQP's frame-min-size).
const FRAME_MIN_BYTES: u32 = 4096;

/// Until tune-ok no frame may be larger, so that a client that has not logged in cannot make
/// the broker buffer more for it. RabbitMQ took 4096 until 4.1, then 8192, for the long
/// passwords (OAuth 2 tokens) that start-ok carries.
pub const HANDSHAKE_FRAME_MAX_BYTES: u32 = 8192;

/// The capabilities of RabbitMQ that Wharf implements, announced in connection.start.
const CAPABILITIES: &[&str] = &[
    "publisher_confirms",
    "exchange_exchange_bindings",
    "basic.nack",
    "consumer_cancel_notify",
    "connection.blocked",
    "authentication_failure_close",
    "per_consumer_qos",
];

#[derive(Debug)]
pub struct Handshake {
    pub vhost: Arc<VHost>,
    pub username: String,
    /// The connection's place in the broker's list, taken at connection.open.
    pub registration: Registration,
    /// What the user may do in the vhost.
    pub grant: Grant,
    pub channel_max: u16,
    pub frame_max: u32,
    pub heartbeat_secs: u16,
    pub consumer_cancel_notify: bool,
    /// The client wants connection.blocked / unblocked.
    pub connection_blocked: bool,
}

/// How the connection is listed once open: its id, and how administration closes it (a
/// deleted user's or vhost's connection).
pub struct Listing {
    pub id: ConnectionId,
    pub close: Closer,
    /// Where its reader and writer count bytes.
    pub traffic: Arc<wharf_core::connections::Traffic>,
    /// The broker's address the client connected to, and whether over TLS.
    pub local: String,
    pub tls: Option<wharf_core::connections::TlsDetails>,
}

/// Why a handshake did not complete.
#[derive(Debug)]
pub enum HandshakeError {
    /// The client spoke another protocol (we answered with ours) or went away.
    Abandoned,
    /// A protocol error to report with connection.close before closing.
    Refused(AmqpError),
    /// Authentication failed; the client did not ask for a close frame.
    SilentRefusal,
}

impl From<ReadError> for HandshakeError {
    fn from(error: ReadError) -> Self {
        match error {
            ReadError::Malformed(e) => HandshakeError::Refused(e.into()),
            _ => HandshakeError::Abandoned,
        }
    }
}

/// What the broker tells a client about itself; `cluster_name` as RabbitMQ's.
fn server_properties(cluster_name: &str) -> FieldTable {
    let mut capabilities = FieldTable::new();
    for name in CAPABILITIES {
        capabilities.insert(*name, FieldValue::Bool(true));
    }
    let text = |s: &str| FieldValue::LongStr(bytes::Bytes::copy_from_slice(s.as_bytes()));
    let mut props = FieldTable::new();
    props.insert("capabilities", FieldValue::Table(capabilities));
    props.insert("cluster_name", text(cluster_name));
    props.insert("copyright", text("Copyright (c) the Wharf authors"));
    props.insert("information", text("Licensed under the Apache License 2.0"));
    props.insert("platform", text("Rust"));
    props.insert("product", text("Wharf"));
    props.insert("version", text(env!("CARGO_PKG_VERSION")));
    props
}

/// A client property that is text (product, version...), or empty.
fn client_property(client_properties: &FieldTable, name: &str) -> String {
    client_properties
        .get(name)
        .and_then(FieldValue::as_str)
        .unwrap_or_default()
        .to_string()
}

fn client_capability(client_properties: &FieldTable, name: &str) -> bool {
    match client_properties.get("capabilities") {
        Some(FieldValue::Table(caps)) => caps.get(name).and_then(FieldValue::as_bool) == Some(true),
        _ => false,
    }
}

/// A tune-ok value checked as RabbitMQ checks it: the client may ask for less than the
/// broker offered (down to `min`), not more, and not 0 ("no limit") where the broker has a
/// limit. The reason is RabbitMQ's text.
fn negotiate<T>(name: &str, client: T, server: T, min: T) -> Result<T, String>
where
    T: Copy + PartialOrd + Default + std::fmt::Display,
{
    let none = T::default();
    if client != none && client < min {
        return Err(format!(
            "negotiated {name} = {client} is lower than the minimum allowed value ({min})"
        ));
    }
    if server != none && (client == none || client > server) {
        let no_limit = if client == none && name == "channel_max" {
            " (no limit)"
        } else {
            ""
        };
        return Err(format!(
            "negotiated {name} = {client}{no_limit} is higher than the maximum allowed value ({server})"
        ));
    }
    Ok(client)
}

async fn expect_method<R: AsyncRead + Unpin>(
    reader: &mut FrameReader<R>,
) -> Result<Method, HandshakeError> {
    loop {
        let frame = reader.next().await?;
        match frame.payload {
            FramePayload::Heartbeat => continue,
            FramePayload::Method(method) if frame.channel == 0 => return Ok(method),
            _ => {
                return Err(HandshakeError::Refused(AmqpError::new(
                    ReplyCode::CommandInvalid,
                    "expected a connection method during the handshake",
                )))
            }
        }
    }
}

fn unexpected(method: &Method, expected: &str) -> HandshakeError {
    HandshakeError::Refused(
        AmqpError::new(
            ReplyCode::CommandInvalid,
            format_args!("expected '{expected}', got '{}'", method.name()),
        )
        .during(method),
    )
}

pub async fn run<R: AsyncRead + Unpin>(
    reader: &mut FrameReader<R>,
    outbound: &Outbound,
    broker: &Broker,
    config: &ServerConfig,
    peer: SocketAddr,
    certificate_name: Option<&str>,
    listing: Listing,
) -> Result<Handshake, HandshakeError> {
    let mechanisms = sasl::mechanisms(certificate_name.is_some());
    let header = reader.read_exact_raw(PROTOCOL_HEADER.len()).await?;
    if header[..] != PROTOCOL_HEADER[..] {
        // As RabbitMQ does: answer with the protocol version we speak, then close.
        outbound.write(|out| out.extend_from_slice(PROTOCOL_HEADER));
        return Err(HandshakeError::Abandoned);
    }

    let start = Method::ConnectionStart(Box::new(ConnectionStart {
        version_major: 0,
        version_minor: 9,
        server_properties: server_properties(&broker.node.cluster_name()),
        mechanisms: bytes::Bytes::from_static(mechanisms.as_bytes()),
        locales: bytes::Bytes::from_static(b"en_US"),
    }));
    outbound.write(|out| encode_method(0, &start, out));

    let method = expect_method(reader).await?;
    let Method::ConnectionStartOk(start_ok) = &method else {
        return Err(unexpected(&method, "connection.start-ok"));
    };
    let failure_close =
        client_capability(&start_ok.client_properties, "authentication_failure_close");
    let consumer_cancel_notify =
        client_capability(&start_ok.client_properties, "consumer_cancel_notify");
    let connection_blocked = client_capability(&start_ok.client_properties, "connection.blocked");
    let client_properties = start_ok.client_properties.clone();
    let mechanism = start_ok.mechanism.to_string();
    if !mechanisms.split(' ').any(|m| m == mechanism) {
        return Err(HandshakeError::Refused(
            AmqpError::new(
                ReplyCode::CommandInvalid,
                format_args!("unknown authentication mechanism '{mechanism}'"),
            )
            .during(&method),
        ));
    }
    let (username, user) = if mechanism == "EXTERNAL" {
        // Offered only with a verified certificate: its common name is the user, who
        // must exist; no password is involved.
        let name = certificate_name.unwrap_or_default().to_string();
        let user = broker.access.user(&name);
        (name, user)
    } else {
        let credentials = sasl::parse_response(&mechanism, &start_ok.response);
        let user = credentials
            .as_ref()
            .and_then(|c| broker.access.authenticate(&c.username, &c.password));
        (credentials.map(|c| c.username).unwrap_or_default(), user)
    };
    let user = user.filter(|user| is_loopback(peer.ip()) || broker.allows_remote(&user.name));
    let Some(user) = user else {
        tracing::warn!(%peer, mechanism, user = username, "login refused");
        // Slows down password guessing: the refusal comes only after the delay.
        tokio::time::sleep(config.failed_login_delay).await;
        if !failure_close {
            return Err(HandshakeError::SilentRefusal);
        }
        return Err(HandshakeError::Refused(
            AmqpError::new(
                ReplyCode::AccessRefused,
                format_args!(
                    "Login was refused using authentication mechanism {mechanism}. For details see the broker logfile."
                ),
            )
            .during(&method),
        ));
    };

    let tune = Method::ConnectionTune(ConnectionTune {
        channel_max: config.channel_max,
        frame_max: config.frame_max,
        heartbeat: config.heartbeat_secs,
    });
    outbound.write(|out| encode_method(0, &tune, out));
    let method = expect_method(reader).await?;
    let Method::ConnectionTuneOk(tune_ok) = &method else {
        return Err(unexpected(&method, "connection.tune-ok"));
    };
    let refuse = |detail: String| {
        HandshakeError::Refused(AmqpError::new(ReplyCode::NotAllowed, detail).during(&method))
    };
    let channel_max =
        negotiate("channel_max", tune_ok.channel_max, config.channel_max, 0).map_err(refuse)?;
    let frame_max = negotiate(
        "frame_max",
        tune_ok.frame_max,
        config.frame_max,
        FRAME_MIN_BYTES,
    )
    .map_err(refuse)?;
    reader.frame_max = frame_max;

    let method = expect_method(reader).await?;
    let Method::ConnectionOpen(open) = &method else {
        return Err(unexpected(&method, "connection.open"));
    };
    let Some(vhost) = broker.vhost(&open.virtual_host) else {
        return Err(HandshakeError::Refused(
            AmqpError::new(
                ReplyCode::NotAllowed,
                format_args!("vhost {} not found", open.virtual_host),
            )
            .during(&method),
        ));
    };
    // RabbitMQ's order: the node's limit, the vhost's, the user's, then the permission.
    // The limits are counted and the connection listed at once, so that connections
    // opening together cannot all slip under one.
    let refused = |text: String| {
        HandshakeError::Refused(AmqpError::new(ReplyCode::NotAllowed, text).during(&method))
    };
    let vhost_max = vhost.limits.read().get(limits::MAX_CONNECTIONS);
    let user_max = user.limits.get(limits::MAX_CONNECTIONS);
    // On a cluster, these limits count every node's connections.
    let elsewhere = match vhost_max.is_some() || user_max.is_some() {
        true => broker.connections_elsewhere(&vhost.name, &user.name).await,
        false => Default::default(),
    };
    let admit = |census: Census<'_>| {
        if let Some(max) = config.max_connections {
            if census.total() >= max {
                return Err(refused(format!(
                    "connection refused: node connection limit ({max}) is reached"
                )));
            }
        }
        if let Some(max) = vhost_max {
            if (census.in_vhost() + elsewhere.in_vhost) as u64 >= max {
                return Err(refused(format!(
                    "access to vhost '{}' refused for user '{}': connection limit ({max}) is reached",
                    vhost.name, user.name
                )));
            }
        }
        if let Some(max) = user_max {
            if (census.of_user() + elsewhere.of_user) as u64 >= max {
                return Err(refused(format!(
                    "connection refused for user '{}': user connection limit ({max}) is reached",
                    user.name
                )));
            }
        }
        Ok(())
    };
    let details = wharf_core::connections::ConnectionDetails {
        user: user.name.clone(),
        vhost: vhost.name.to_string(),
        peer: peer.to_string(),
        local: listing.local,
        tls: listing.tls,
        client_product: client_property(&client_properties, "product"),
        client_version: client_property(&client_properties, "version"),
        client_platform: client_property(&client_properties, "platform"),
        client_connection_name: client_property(&client_properties, "connection_name"),
        connected_at_ms: wharf_core::timer::now_ms(),
    };
    let registration = broker.connections.register_if(
        listing.id,
        details,
        listing.traffic,
        listing.close,
        admit,
    )?;
    // Listed now, the connection is closed by any later deletion of its user or vhost. One
    // that came between the login and the listing is seen here: the user must still be the
    // one who logged in (not deleted, nor made again with another password), and the vhost
    // still the one opened.
    let same_user = broker
        .access
        .user(&user.name)
        .is_some_and(|now| now.password == user.password);
    if !same_user {
        return Err(HandshakeError::Refused(
            AmqpError::new(
                ReplyCode::ConnectionForced,
                format_args!("user '{}' is deleted", user.name),
            )
            .during(&method),
        ));
    }
    if !broker
        .vhost(&vhost.name)
        .is_some_and(|now| Arc::ptr_eq(&now, &vhost))
    {
        return Err(HandshakeError::Refused(
            AmqpError::new(
                ReplyCode::ConnectionForced,
                format_args!("vhost '{}' is down", vhost.name),
            )
            .during(&method),
        ));
    }
    let grant = broker.access.grant(&user.name, &vhost.name);
    if !grant.may_enter() {
        return Err(HandshakeError::Refused(
            AmqpError::new(
                ReplyCode::NotAllowed,
                format_args!(
                    "access to vhost '{}' refused for user '{}'",
                    vhost.name, user.name
                ),
            )
            .during(&method),
        ));
    }
    outbound.write(|out| encode_method(0, &Method::ConnectionOpenOk(ConnectionOpenOk {}), out));
    Ok(Handshake {
        vhost,
        username: user.name,
        registration,
        grant,
        channel_max,
        frame_max,
        heartbeat_secs: tune_ok.heartbeat,
        consumer_cancel_notify,
        connection_blocked,
    })
}

/// Whether a peer is on this machine: 127.0.0.0/8, ::1, or an IPv4 loopback address seen
/// through a dual-stack socket (`::ffff:127.0.0.1`), so that `guest` may log in over
/// 127.0.0.1 whichever way the listener was bound.
fn is_loopback(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => v4.is_loopback(),
        std::net::IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}
