//! SASL mechanisms a client may log in with: PLAIN (RFC 4616), RabbitMQ's AMQPLAIN (a
//! field table holding LOGIN and PASSWORD), and, on TLS connections whose client gave a
//! verified certificate, EXTERNAL (RFC 4422: the certificate says who the client is).

use wharf_amqp::FieldTable;

/// The mechanisms offered: EXTERNAL only to a client with a verified certificate.
pub fn mechanisms(certificate: bool) -> &'static str {
    if certificate {
        "PLAIN AMQPLAIN EXTERNAL"
    } else {
        "PLAIN AMQPLAIN"
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// Reads the credentials from a start-ok response; None when the mechanism is unknown or
/// the response is malformed.
pub fn parse_response(mechanism: &str, response: &[u8]) -> Option<Credentials> {
    match mechanism {
        "PLAIN" => parse_plain(response),
        "AMQPLAIN" => parse_amqplain(response),
        _ => None,
    }
}

/// `[authzid] NUL authcid NUL passwd`
fn parse_plain(response: &[u8]) -> Option<Credentials> {
    let mut parts = response.split(|b| *b == 0);
    let _authzid = parts.next()?;
    let username = std::str::from_utf8(parts.next()?).ok()?;
    let password = std::str::from_utf8(parts.next()?).ok()?;
    if parts.next().is_some() {
        return None;
    }
    Some(Credentials {
        username: username.to_string(),
        password: password.to_string(),
    })
}

/// A field table without its leading length, as the clients send it.
fn parse_amqplain(response: &[u8]) -> Option<Credentials> {
    let table = FieldTable::decode_entries(response).ok()?;
    let username = table.get("LOGIN")?.as_str()?.to_string();
    let password = table.get("PASSWORD")?.as_str()?.to_string();
    Some(Credentials { username, password })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use wharf_amqp::FieldValue;

    #[test]
    fn plain() {
        let c = parse_response("PLAIN", b"\0guest\0secret").unwrap();
        assert_eq!(c.username, "guest");
        assert_eq!(c.password, "secret");
        assert!(parse_response("PLAIN", b"authz\0u\0p").is_some());
        assert!(parse_response("PLAIN", b"guest").is_none());
        assert!(parse_response("PLAIN", b"\0a\0b\0c").is_none());
        assert!(parse_response("PLAIN", b"\0\xff\0b").is_none());
        assert!(parse_response("CRAM-MD5", b"\0a\0b").is_none());
    }

    #[test]
    fn external_is_offered_only_with_a_certificate() {
        assert!(!mechanisms(false).contains("EXTERNAL"));
        assert!(mechanisms(true).split(' ').any(|m| m == "EXTERNAL"));
    }

    #[test]
    fn amqplain() {
        let mut table = FieldTable::new();
        table.insert("LOGIN", FieldValue::LongStr("guest".into()));
        table.insert("PASSWORD", FieldValue::LongStr("pw".into()));
        let mut encoded = BytesMut::new();
        table.encode(&mut encoded);
        // Clients send the entries without the table's 4-byte length.
        let c = parse_response("AMQPLAIN", &encoded[4..]).unwrap();
        assert_eq!(c.username, "guest");
        assert_eq!(c.password, "pw");
        assert!(parse_response("AMQPLAIN", &encoded[4..10]).is_none());
    }
}
