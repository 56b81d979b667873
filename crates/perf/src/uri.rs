//! AMQP URIs as RabbitMQ's clients read them: `amqp://user:password@host:port/vhost`, with
//! percent-encoding in each part and the vhost `/` written `%2f`. Defaults: guest/guest,
//! localhost, 5672, vhost `/` when the path is absent.

use anyhow::{bail, Context};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpUri {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub vhost: String,
}

fn percent_decode(part: &str) -> anyhow::Result<String> {
    let bytes = part.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = part
                .get(i + 1..i + 3)
                .with_context(|| format!("'{part}': '%' must be followed by two hex digits"))?;
            let byte = u8::from_str_radix(hex, 16)
                .with_context(|| format!("'{part}': '%{hex}' is not a hex escape"))?;
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).with_context(|| format!("'{part}' does not decode to UTF-8"))
}

impl AmqpUri {
    pub fn parse(uri: &str) -> anyhow::Result<AmqpUri> {
        let rest = match uri.split_once("://") {
            Some(("amqp", rest)) => rest,
            Some(("amqps", _)) => bail!("'{uri}': amqps (TLS) is not supported by wharf perf yet"),
            _ => bail!("'{uri}' is not an AMQP URI (amqp://user:password@host:port/vhost)"),
        };
        let (authority, path) = match rest.split_once('/') {
            Some((authority, path)) => (authority, Some(path)),
            None => (rest, None),
        };
        let (credentials, address) = match authority.rsplit_once('@') {
            Some((credentials, address)) => (Some(credentials), address),
            None => (None, authority),
        };
        let (user, password) = match credentials {
            Some(c) => match c.split_once(':') {
                Some((u, p)) => (percent_decode(u)?, percent_decode(p)?),
                None => (percent_decode(c)?, String::new()),
            },
            None => ("guest".to_string(), "guest".to_string()),
        };
        let (host, port) = if let Some(bracketed) = address.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .with_context(|| format!("'{uri}': unclosed '[' in the host"))?;
            (host.to_string(), after.strip_prefix(':'))
        } else {
            match address.rsplit_once(':') {
                Some((host, port)) => (host.to_string(), Some(port)),
                None => (address.to_string(), None),
            }
        };
        let port = match port {
            Some(p) => p
                .parse()
                .with_context(|| format!("'{uri}': '{p}' is not a port number"))?,
            None => 5672,
        };
        let host = if host.is_empty() {
            "localhost".to_string()
        } else {
            host
        };
        let vhost = match path {
            None => "/".to_string(),
            Some(p) => percent_decode(p.split('?').next().unwrap_or(""))?,
        };
        Ok(AmqpUri {
            host,
            port,
            user,
            password,
            vhost,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_part() {
        let uri = AmqpUri::parse("amqp://bob:s%40cret@10.0.0.1:5673/prod%2fa").unwrap();
        assert_eq!(
            uri,
            AmqpUri {
                host: "10.0.0.1".into(),
                port: 5673,
                user: "bob".into(),
                password: "s@cret".into(),
                vhost: "prod/a".into(),
            }
        );
    }

    #[test]
    fn defaults_like_rabbitmq_clients() {
        let uri = AmqpUri::parse("amqp://localhost").unwrap();
        assert_eq!(
            (uri.user.as_str(), uri.password.as_str()),
            ("guest", "guest")
        );
        assert_eq!((uri.port, uri.vhost.as_str()), (5672, "/"));
        assert_eq!(AmqpUri::parse("amqp://h/%2f").unwrap().vhost, "/");
        assert_eq!(AmqpUri::parse("amqp://h/").unwrap().vhost, "");
        assert_eq!(AmqpUri::parse("amqp://[::1]:5700").unwrap().host, "::1");
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        for bad in [
            "http://h",
            "localhost:5672",
            "amqp://h:port",
            "amqp://h:99999",
            "amqp://h/%zz",
            "amqp://[::1",
            "amqps://h",
        ] {
            assert!(AmqpUri::parse(bad).is_err(), "{bad}");
        }
    }
}
