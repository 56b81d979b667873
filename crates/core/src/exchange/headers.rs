//! Headers routing: a binding's arguments are matched against the message's headers.
//! `x-match` chooses `all` (default), `any`, `all-with-x` or `any-with-x`; with the plain
//! forms, binding arguments starting with `x-` are not compared. A binding value of type
//! void asks only that the header be present. Integers compare by value whatever their
//! width, and floats likewise, as RabbitMQ compares them by type class.

use wharf_amqp::{FieldTable, FieldValue};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MatchKind {
    All,
    Any,
    AllWithX,
    AnyWithX,
}

fn match_kind(arguments: &FieldTable) -> MatchKind {
    match arguments.get("x-match").and_then(FieldValue::as_str) {
        Some("any") => MatchKind::Any,
        Some("all-with-x") => MatchKind::AllWithX,
        Some("any-with-x") => MatchKind::AnyWithX,
        _ => MatchKind::All,
    }
}

/// Checks the `x-match` argument of a binding: absent, or one of the four known words.
pub fn validate_binding(arguments: &FieldTable) -> Result<(), String> {
    match arguments.get("x-match") {
        None => Ok(()),
        Some(value) => match value.as_str() {
            Some("all" | "any" | "all-with-x" | "any-with-x") => Ok(()),
            _ => Err(format!(
                "Invalid x-match field value {value:?}; expected all, any, all-with-x, or any-with-x"
            )),
        },
    }
}

fn values_equal(binding: &FieldValue, header: &FieldValue) -> bool {
    if let (Some(a), Some(b)) = (binding.as_i64(), header.as_i64()) {
        return a == b;
    }
    match (binding, header) {
        (FieldValue::F32(a), FieldValue::F64(b)) | (FieldValue::F64(b), FieldValue::F32(a)) => {
            f64::from(*a) == *b
        }
        _ => binding == header,
    }
}

/// Whether a message with `headers` is routed through a binding with `arguments`.
pub fn headers_match(arguments: &FieldTable, headers: Option<&FieldTable>) -> bool {
    let kind = match_kind(arguments);
    let with_x = matches!(kind, MatchKind::AllWithX | MatchKind::AnyWithX);
    let mut compared = arguments
        .iter()
        .filter(|(key, _)| *key != "x-match" && (with_x || !key.starts_with("x-")))
        .map(|(key, expected)| {
            let found = headers.and_then(|h| h.get(key));
            match (expected, found) {
                (_, None) => false,
                (FieldValue::Void, Some(_)) => true,
                (expected, Some(found)) => values_equal(expected, found),
            }
        });
    match kind {
        MatchKind::All | MatchKind::AllWithX => compared.all(|matched| matched),
        MatchKind::Any | MatchKind::AnyWithX => compared.any(|matched| matched),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn table(entries: &[(&str, FieldValue)]) -> FieldTable {
        let mut t = FieldTable::new();
        for (k, v) in entries {
            t.insert(*k, v.clone());
        }
        t
    }

    fn s(v: &'static str) -> FieldValue {
        FieldValue::LongStr(Bytes::from_static(v.as_bytes()))
    }

    #[test]
    fn all_needs_every_key() {
        let binding = table(&[("a", s("1")), ("b", FieldValue::I32(2))]);
        let full = table(&[("a", s("1")), ("b", FieldValue::I64(2)), ("c", s("x"))]);
        let partial = table(&[("a", s("1"))]);
        assert!(headers_match(&binding, Some(&full)));
        assert!(!headers_match(&binding, Some(&partial)));
        assert!(!headers_match(&binding, None));
    }

    #[test]
    fn any_needs_one_key() {
        let binding = table(&[("x-match", s("any")), ("a", s("1")), ("b", s("2"))]);
        assert!(headers_match(&binding, Some(&table(&[("b", s("2"))]))));
        assert!(!headers_match(&binding, Some(&table(&[("b", s("3"))]))));
        assert!(!headers_match(&table(&[("x-match", s("any"))]), None));
    }

    #[test]
    fn empty_all_matches_everything() {
        assert!(headers_match(&FieldTable::new(), None));
    }

    #[test]
    fn x_keys_only_with_x() {
        let plain = table(&[("x-match", s("all")), ("x-k", s("v"))]);
        assert!(headers_match(&plain, None), "x- keys ignored by all");
        let with_x = table(&[("x-match", s("all-with-x")), ("x-k", s("v"))]);
        assert!(!headers_match(&with_x, None));
        assert!(headers_match(&with_x, Some(&table(&[("x-k", s("v"))]))));
        let any_x = table(&[("x-match", s("any-with-x")), ("x-k", s("v"))]);
        assert!(headers_match(&any_x, Some(&table(&[("x-k", s("v"))]))));
    }

    #[test]
    fn void_means_present() {
        let binding = table(&[("a", FieldValue::Void)]);
        assert!(headers_match(
            &binding,
            Some(&table(&[("a", s("anything"))]))
        ));
        assert!(!headers_match(&binding, Some(&table(&[("b", s("x"))]))));
    }

    #[test]
    fn validates_x_match() {
        assert!(validate_binding(&table(&[("x-match", s("any"))])).is_ok());
        assert!(validate_binding(&table(&[("x-match", s("some"))])).is_err());
        assert!(validate_binding(&table(&[("x-match", FieldValue::I32(1))])).is_err());
    }
}
