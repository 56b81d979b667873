//! Where the broker listens. An address is either one socket address (`127.0.0.1:5672`,
//! `[::1]:5672`) or a bare port, which means every address of the machine in both
//! families, as RabbitMQ's `listeners.tcp.default = 5672` does: one dual-stack IPv6 socket
//! (IPv4 clients arrive as `::ffff:a.b.c.d`), or an IPv4 one where the machine has no IPv6.

use std::fmt;
use std::io;
use std::net::{Ipv6Addr, SocketAddr};
use std::str::FromStr;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;

/// Pending connections the kernel queues for a listener (tokio's own default).
const BACKLOG: i32 = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenAddress {
    /// Exactly this address.
    Socket(SocketAddr),
    /// Every address of the machine, IPv6 and IPv4, on this port.
    AnyHost(u16),
}

impl FromStr for ListenAddress {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Ok(port) = text.parse::<u16>() {
            return Ok(ListenAddress::AnyHost(port));
        }
        text.parse().map(ListenAddress::Socket).map_err(|_| {
            format!("'{text}' is not an address: use IP:PORT ([IPv6]:PORT) or a port alone")
        })
    }
}

impl fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddress::Socket(address) => write!(f, "{address}"),
            ListenAddress::AnyHost(port) => write!(f, "{port}"),
        }
    }
}

/// A comma-separated list of addresses ("none" or "off" for none). An address listed
/// twice is refused: the second bind would fail with a less clear error.
pub fn parse_list(text: &str) -> Result<Vec<ListenAddress>, String> {
    if matches!(text.trim(), "none" | "off") {
        return Ok(Vec::new());
    }
    let mut addresses = Vec::new();
    for part in text.split(',') {
        if part.trim().is_empty() {
            return Err(format!("'{text}' has an empty address in its list"));
        }
        let address: ListenAddress = part.parse()?;
        if addresses.contains(&address) {
            return Err(format!("{address} is listed twice"));
        }
        addresses.push(address);
    }
    Ok(addresses)
}

/// Binds `address` and starts listening (SO_REUSEADDR set, as tokio does).
pub fn bind(address: ListenAddress) -> io::Result<TcpListener> {
    match address {
        ListenAddress::Socket(address) => bind_socket(address, None),
        ListenAddress::AnyHost(port) => {
            let any6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, port));
            match bind_socket(any6, Some(false)) {
                Ok(listener) => Ok(listener),
                Err(error) if no_ipv6(&error) => {
                    tracing::info!(
                        %error,
                        "no IPv6 on this machine: listening on IPv4 only (port {port})"
                    );
                    bind_socket(SocketAddr::from(([0, 0, 0, 0], port)), None)
                }
                Err(error) => Err(error),
            }
        }
    }
}

/// Whether binding an IPv6 socket failed because the machine has no IPv6 (the kernel was
/// built or booted without it), rather than for a reason IPv4 would share.
pub fn no_ipv6(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL | libc::EPROTONOSUPPORT)
    )
}

fn bind_socket(address: SocketAddr, only_v6: Option<bool>) -> io::Result<TcpListener> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    if let Some(only_v6) = only_v6 {
        socket.set_only_v6(only_v6)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_lists_parse() {
        assert_eq!("5672".parse(), Ok(ListenAddress::AnyHost(5672)));
        assert_eq!(
            " [::1]:5672 ".parse(),
            Ok(ListenAddress::Socket("[::1]:5672".parse().unwrap()))
        );
        assert_eq!(
            parse_list("127.0.0.1:5672,[::1]:5673"),
            Ok(vec![
                ListenAddress::Socket("127.0.0.1:5672".parse().unwrap()),
                ListenAddress::Socket("[::1]:5673".parse().unwrap()),
            ])
        );
        assert_eq!(parse_list("none"), Ok(Vec::new()));
        for bad in [
            "localhost:5672",
            "::1:5672",
            "70000",
            "1.2.3.4",
            "",
            "5672,",
            "a,b",
        ] {
            assert!(parse_list(bad).is_err(), "{bad:?} accepted");
        }
        let twice = parse_list("5672, 5672").unwrap_err();
        assert!(twice.contains("listed twice"), "{twice}");
        let bad = parse_list("127.0.0.1:5672,localhost:1").unwrap_err();
        assert!(bad.contains("'localhost:1' is not an address"), "{bad}");
    }

    #[test]
    fn a_missing_address_family_is_told_from_other_bind_errors() {
        assert!(no_ipv6(&io::Error::from_raw_os_error(libc::EAFNOSUPPORT)));
        assert!(!no_ipv6(&io::Error::from_raw_os_error(libc::EADDRINUSE)));
        assert!(!no_ipv6(&io::Error::from_raw_os_error(libc::EACCES)));
    }

    #[tokio::test]
    async fn a_bare_port_takes_both_families() {
        let listener = bind(ListenAddress::AnyHost(0)).unwrap();
        let address = listener.local_addr().unwrap();
        let port = address.port();
        assert!(address.ip().is_unspecified(), "{address}");
        if address.is_ipv6() {
            for client in ["127.0.0.1", "::1"] {
                let ip: std::net::IpAddr = client.parse().unwrap();
                tokio::net::TcpStream::connect((ip, port))
                    .await
                    .unwrap_or_else(|e| panic!("connect over {client}: {e}"));
                let (_, peer) = listener.accept().await.unwrap();
                assert_eq!(peer.ip().to_canonical(), ip, "{peer}");
            }
        } else {
            // Only on a machine without IPv6 sockets at all.
            let v6 = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP));
            assert!(v6.is_err(), "fell back to IPv4 with IPv6 available");
        }
    }
}
