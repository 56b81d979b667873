//! One function per decoder of input Wharf does not control: the wire (frames, methods,
//! content headers, properties, field tables, SASL responses), what clients put in
//! arguments and properties (queue arguments, policies, expirations, limits), what
//! operators hand it (definitions files, control requests), and what is read back from
//! disk (segments, message records, the definitions log). Each takes arbitrary bytes and
//! must return without panicking, hanging, or allocating by a length it was told.
//!
//! cargo-fuzz runs them with coverage guidance (`crates/fuzz/fuzz`, nightly); the tests
//! of this crate run them on stable over seeded random and mutated inputs, in CI.

use bytes::{Bytes, BytesMut};
use wharf_amqp::{ContentHeader, EncodedProperties, FieldTable, Frame};

/// The largest frame the fuzzed decoders accept (the broker's default).
const FRAME_MAX: u32 = 131_072;

/// A fuzz target: arbitrary bytes in, nothing out; it must not panic.
pub type Target = fn(&[u8]);

/// Every target, by name, for the stable runner.
pub const TARGETS: &[(&str, Target)] = &[
    ("frame", frame),
    ("content_header", content_header),
    ("properties", properties),
    ("field_table", field_table),
    ("sasl", sasl),
    ("queue_arguments", queue_arguments),
    ("policy", policy),
    ("expiration", expiration),
    ("limits", limits),
    ("definitions", definitions),
    ("control_request", control_request),
    ("message_record", message_record),
    ("segment", segment),
    ("definitions_log", definitions_log),
];

/// A stream of frames, as a connection reads them: each decoded frame, then the rest.
pub fn frame(data: &[u8]) {
    let mut buffer = BytesMut::from(data);
    while let Ok(Some(_frame)) = Frame::decode(&mut buffer, FRAME_MAX) {}
}

pub fn content_header(data: &[u8]) {
    if let Ok(header) = ContentHeader::decode(Bytes::copy_from_slice(data)) {
        // What parse accepted must decode.
        header
            .properties
            .decode()
            .expect("parsed properties decode");
    }
}

pub fn properties(data: &[u8]) {
    if let Ok(properties) = EncodedProperties::parse(Bytes::copy_from_slice(data)) {
        properties.decode().expect("parsed properties decode");
        let _ = properties.expiration();
        let _ = properties.reply_to();
        let _ = properties.has_user_id();
        if properties.has_sender_routes() {
            let _ = wharf_core::message::SenderRoutes::of(&properties);
        }
    }
}

pub fn field_table(data: &[u8]) {
    let mut bytes = Bytes::copy_from_slice(data);
    if let Ok(table) = FieldTable::decode(&mut bytes) {
        // What decodes encodes to the same length it says it has.
        let mut out = BytesMut::new();
        table.encode(&mut out);
        assert_eq!(out.len(), table.encoded_len());
    }
    let _ = FieldTable::decode_entries(data);
}

/// The first byte picks the mechanism; the rest is the response.
pub fn sasl(data: &[u8]) {
    let Some((&pick, response)) = data.split_first() else {
        return;
    };
    let mechanism = ["PLAIN", "AMQPLAIN", "EXTERNAL"][usize::from(pick % 3)];
    let _ = wharf_server::sasl::parse_response(mechanism, response);
}

/// Queue arguments as a client sends them in queue.declare.
pub fn queue_arguments(data: &[u8]) {
    let mut bytes = Bytes::copy_from_slice(data);
    if let Ok(arguments) = FieldTable::decode(&mut bytes) {
        if let Ok(settings) = wharf_core::queue_arguments::QueueSettings::from_arguments(&arguments)
        {
            let _ = settings.with_policy(&arguments);
        }
        let _ = wharf_core::queue_arguments::consumer_priority(&arguments);
    }
}

/// A policy as `set_policy` takes it: the bytes split into pattern and definition.
pub fn policy(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (pattern, definition) = text.split_once('\n').unwrap_or((".*", &text));
    for apply_to in ["queues", "exchanges", "all"] {
        if let Ok(policy) = wharf_core::policy::Policy::new("p", pattern, apply_to, definition, 0) {
            let _ = policy.applies_to_queue("q");
        }
    }
}

pub fn expiration(data: &[u8]) {
    let _ = wharf_core::message::parse_expiration(&String::from_utf8_lossy(data));
}

pub fn limits(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = wharf_core::limits::Limits::parse(&text, wharf_core::limits::VHOST_LIMITS);
    let _ = wharf_core::limits::Limits::parse(&text, wharf_core::limits::USER_LIMITS);
}

/// A definitions file imported into a fresh in-memory broker.
pub fn definitions(data: &[u8]) {
    let Ok(defs) = wharf_core::definitions_json::parse(&String::from_utf8_lossy(data)) else {
        return;
    };
    let broker = wharf_core::Broker::new(Default::default());
    let _ = wharf_core::definitions_json::import(&broker, &defs);
    let _ = wharf_core::definitions_json::export(&broker);
}

/// A line on the control socket, run against a fresh in-memory broker.
pub fn control_request(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(request) = serde_json::from_str::<wharf_control::Request>(&text) {
        let broker = wharf_core::Broker::new(Default::default());
        let _ = wharf_control::execute(&broker, request);
    }
}

/// A message record as read back from a segment.
pub fn message_record(data: &[u8]) {
    if let Some((message, _expires_at)) = wharf_core::Message::decode_record(data.to_vec()) {
        let _ = message.properties.decode();
        let _ = message.ttl_ms();
    }
}

/// A segment file: a valid header, then the bytes; scanned, and every record it finds
/// read back.
pub fn segment(data: &[u8]) {
    use wharf_store::segment;
    let dir = scratch_dir("segment");
    let path = dir.join("0.seg");
    let mut bytes = segment::segment_header().to_vec();
    bytes.extend_from_slice(data);
    std::fs::write(&path, &bytes).expect("write the scratch segment");
    let file = std::fs::File::open(&path).expect("open the scratch segment");
    if let Ok(scan) = segment::scan(&path, &file) {
        for record in scan.records {
            let payload = segment::read_record(&path, &file, scan.format, record)
                .expect("scanned records read");
            message_record(&payload);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A definitions log (the first half of the bytes) and snapshot (the rest), opened, and
/// opened with forced recovery where that is refused.
pub fn definitions_log(data: &[u8]) {
    let dir = scratch_dir("definitions");
    std::fs::create_dir_all(&dir).expect("create the scratch dir");
    std::fs::write(dir.join("VERSION"), "wharf-data 1\n").expect("write VERSION");
    let (log, snapshot) = data.split_at(data.len() / 2);
    std::fs::write(dir.join("definitions.log"), log).expect("write the log");
    if !snapshot.is_empty() {
        std::fs::write(dir.join("definitions.json"), snapshot).expect("write the snapshot");
    }
    if let Ok(data_dir) = wharf_store::DataDir::open(&dir) {
        if wharf_store::DefinitionStore::open(&data_dir).is_err() {
            // What --force-recovery salvages from the same bytes.
            let _ =
                wharf_store::DefinitionStore::open_with(&data_dir, wharf_store::Recovery::Force);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A directory of this process's own for a target's files.
fn scratch_dir(what: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "wharf-fuzz-{what}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("create the scratch dir");
    dir
}
