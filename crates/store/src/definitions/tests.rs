use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;

use super::*;
use crate::data_dir::tests::TempDir;

fn exchange(name: &str) -> ExchangeDef {
    ExchangeDef {
        vhost: "/".into(),
        name: name.into(),
        kind: "topic".into(),
        auto_delete: false,
        internal: false,
        arguments: vec![0, 0, 0, 0],
        durable: true,
    }
}

fn queue(name: &str) -> QueueDef {
    QueueDef {
        vhost: "/".into(),
        name: name.into(),
        auto_delete: false,
        arguments: vec![1, 2, 3, 0xff],
        durable: true,
        exclusive_owner: None,
        home: None,
        quorum: None,
    }
}

fn binding(source: &str, queue: &str) -> BindingDef {
    BindingDef {
        vhost: "/".into(),
        source: source.into(),
        destination: queue.into(),
        destination_kind: DestinationKind::Queue,
        routing_key: "a.#".into(),
        arguments: vec![],
    }
}

#[test]
fn changes_survive_reopen() {
    let dir = TempDir::new("defs");
    let data = DataDir::open(&dir.0).unwrap();
    {
        let mut store = DefinitionStore::open(&data).unwrap();
        store.record(Change::PutExchange(exchange("e"))).unwrap();
        store.record(Change::PutQueue(queue("q"))).unwrap();
        store.record(Change::PutQueue(queue("gone"))).unwrap();
        store.record(Change::PutBinding(binding("e", "q"))).unwrap();
        store
            .record(Change::PutBinding(binding("e", "gone")))
            .unwrap();
        store
            .record(Change::DeleteQueue {
                vhost: "/".into(),
                name: "gone".into(),
            })
            .unwrap();
    }
    let store = DefinitionStore::open(&data).unwrap();
    let defs = store.definitions();
    assert_eq!(defs.exchanges, vec![exchange("e")]);
    assert_eq!(defs.queues, vec![queue("q")]);
    assert_eq!(
        defs.bindings,
        vec![binding("e", "q")],
        "bindings of a deleted queue go"
    );
    // Reopening compacted the log into the snapshot.
    assert_eq!(fs::metadata(dir.0.join(LOG_FILE)).unwrap().len(), 0);
}

#[test]
fn policies_survive_reopen_and_snapshots_without_them_still_load() {
    let dir = TempDir::new("defs-policies");
    let data = DataDir::open(&dir.0).unwrap();
    let policy = PolicyDef {
        vhost: "/".into(),
        name: "ttl".into(),
        pattern: "^orders".into(),
        apply_to: "queues".into(),
        definition: r#"{"message-ttl":60000}"#.into(),
        priority: 1,
    };
    {
        let mut store = DefinitionStore::open(&data).unwrap();
        store.record(Change::PutPolicy(policy.clone())).unwrap();
        let mut other = policy.clone();
        other.name = "gone".into();
        store.record(Change::PutPolicy(other)).unwrap();
        store
            .record(Change::DeletePolicy {
                vhost: "/".into(),
                name: "gone".into(),
            })
            .unwrap();
    }
    let store = DefinitionStore::open(&data).unwrap();
    assert_eq!(store.definitions().policies, vec![policy]);
    let old: Definitions =
        serde_json::from_str(r#"{"exchanges":[],"queues":[],"bindings":[]}"#).unwrap();
    assert!(old.policies.is_empty());
}

#[test]
fn exchanges_and_queues_stored_before_clusters_read_as_durable_and_homeless() {
    let old: Definitions = serde_json::from_str(
        r#"{"exchanges":[{"vhost":"/","name":"x","kind":"topic","auto_delete":false,
            "internal":false,"arguments":"AAAAAA=="}],
            "queues":[{"vhost":"/","name":"q","auto_delete":false,"arguments":"AAAAAA=="}],
            "bindings":[]}"#,
    )
    .unwrap();
    assert!(old.exchanges[0].durable);
    let queue = &old.queues[0];
    assert!(queue.durable);
    assert_eq!((queue.exclusive_owner, queue.home.as_deref()), (None, None));
    let written = serde_json::to_string(queue).unwrap();
    assert!(
        !written.contains("home") && !written.contains("exclusive_owner"),
        "a single node's records stay as they were: {written}"
    );
}

fn permission(user: &str, vhost: &str) -> PermissionDef {
    PermissionDef {
        user: user.into(),
        vhost: vhost.into(),
        configure: ".*".into(),
        write: ".*".into(),
        read: "^$".into(),
    }
}

fn topic_permission(user: &str, vhost: &str, exchange: &str) -> TopicPermissionDef {
    TopicPermissionDef {
        user: user.into(),
        vhost: vhost.into(),
        exchange: exchange.into(),
        write: "^a".into(),
        read: ".*".into(),
    }
}

#[test]
fn access_control_survives_reopen_and_deletions_cascade() {
    let dir = TempDir::new("defs-access");
    let data = DataDir::open(&dir.0).unwrap();
    let user = |name: &str| UserDef {
        name: name.into(),
        password_hash: "AQIDBA==".into(),
        hashing_algorithm: "rabbit_password_hashing_sha256".into(),
        tags: vec!["administrator".into()],
        limits: BTreeMap::from([("max-channels".to_string(), 5)]),
    };
    {
        let mut store = DefinitionStore::open(&data).unwrap();
        assert!(!store.definitions().seeded);
        store.record(Change::Seeded).unwrap();
        for vhost in ["/", "other"] {
            store
                .record(Change::PutVhost(VhostDef {
                    name: vhost.into(),
                    description: String::new(),
                    tags: vec![],
                    limits: BTreeMap::new(),
                }))
                .unwrap();
        }
        store.record(Change::PutUser(user("alice"))).unwrap();
        store.record(Change::PutUser(user("bob"))).unwrap();
        for (u, v) in [("alice", "/"), ("alice", "other"), ("bob", "other")] {
            store
                .record(Change::PutPermission(permission(u, v)))
                .unwrap();
            for x in ["amq.topic", "t2"] {
                store
                    .record(Change::PutTopicPermission(topic_permission(u, v, x)))
                    .unwrap();
            }
        }
        let mut other_queue = queue("q");
        other_queue.vhost = "other".into();
        store.record(Change::PutQueue(other_queue)).unwrap();
        store.record(Change::PutQueue(queue("q"))).unwrap();
        store
            .record(Change::DeleteVhost {
                name: "other".into(),
            })
            .unwrap();
        store
            .record(Change::DeleteTopicPermission {
                user: "alice".into(),
                vhost: "/".into(),
                exchange: Some("t2".into()),
            })
            .unwrap();
        store
            .record(Change::DeleteUser { name: "bob".into() })
            .unwrap();
    }
    let defs = DefinitionStore::open(&data).unwrap().definitions();
    assert!(defs.seeded);
    let names = |v: &[VhostDef]| v.iter().map(|v| v.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&defs.vhosts), vec!["/"]);
    assert_eq!(defs.users, vec![user("alice")]);
    assert_eq!(defs.permissions, vec![permission("alice", "/")]);
    assert_eq!(
        defs.topic_permissions,
        vec![topic_permission("alice", "/", "amq.topic")]
    );
    assert_eq!(
        defs.queues,
        vec![queue("q")],
        "the deleted vhost's queue went"
    );
}

#[test]
fn deleting_an_exchange_removes_its_bindings() {
    let dir = TempDir::new("defs-ex");
    let data = DataDir::open(&dir.0).unwrap();
    let mut store = DefinitionStore::open(&data).unwrap();
    store.record(Change::PutExchange(exchange("e"))).unwrap();
    store.record(Change::PutQueue(queue("q"))).unwrap();
    store.record(Change::PutBinding(binding("e", "q"))).unwrap();
    store
        .record(Change::DeleteExchange {
            vhost: "/".into(),
            name: "e".into(),
        })
        .unwrap();
    assert!(store.definitions().bindings.is_empty());
    assert_eq!(store.definitions().queues.len(), 1);
}

#[test]
fn a_torn_last_line_is_dropped() {
    let dir = TempDir::new("defs-torn");
    let data = DataDir::open(&dir.0).unwrap();
    {
        let mut store = DefinitionStore::open(&data).unwrap();
        store.record(Change::PutQueue(queue("kept"))).unwrap();
    }
    // Simulate a crash in the middle of appending a second change.
    let mut line = serde_json::to_vec(&Change::PutQueue(queue("torn"))).unwrap();
    line.truncate(line.len() / 2);
    let mut log = OpenOptions::new()
        .append(true)
        .open(dir.0.join(LOG_FILE))
        .unwrap();
    log.write_all(&line).unwrap();
    drop(log);
    let store = DefinitionStore::open(&data).unwrap();
    let names: Vec<String> = store
        .definitions()
        .queues
        .into_iter()
        .map(|q| q.name)
        .collect();
    assert_eq!(names, vec!["kept".to_string()]);
}

#[test]
fn a_damaged_line_with_changes_after_it_is_an_error() {
    let dir = TempDir::new("defs-damaged");
    let data = DataDir::open(&dir.0).unwrap();
    {
        let mut store = DefinitionStore::open(&data).unwrap();
        store.record(Change::PutQueue(queue("first"))).unwrap();
    }
    let mut log = OpenOptions::new()
        .append(true)
        .open(dir.0.join(LOG_FILE))
        .unwrap();
    // A whole line that is not a change (a damaged disk block), then a good one.
    log.write_all(b"{\"PutQueue\": garbage}\n").unwrap();
    let mut later = serde_json::to_vec(&Change::DeleteQueue {
        vhost: "/".into(),
        name: "first".into(),
    })
    .unwrap();
    later.push(b'\n');
    log.write_all(&later).unwrap();
    drop(log);
    let error = DefinitionStore::open(&data).err().expect("refused");
    let text = error.to_string();
    assert!(
        text.contains(LOG_FILE) && text.contains("corrupt at byte"),
        "{text}"
    );
}

#[test]
fn a_failed_append_changes_nothing_and_one_not_taken_back_stops_changes() {
    let dir = TempDir::new("defs-failed-append");
    let data = DataDir::open(&dir.0).unwrap();
    let mut store = DefinitionStore::open(&data).unwrap();
    store.record(Change::PutQueue(queue("kept"))).unwrap();
    // A log that can be neither written nor truncated: the append fails, and so does
    // taking it back.
    store.log = File::open(dir.0.join(LOG_FILE)).unwrap();
    assert!(store.record(Change::PutQueue(queue("lost"))).is_err());
    let names = |store: &DefinitionStore| -> Vec<String> {
        store
            .definitions()
            .queues
            .into_iter()
            .map(|q| q.name)
            .collect()
    };
    assert_eq!(names(&store), vec!["kept".to_string()], "not applied");
    store.log = open_log(&dir.0.join(LOG_FILE)).unwrap();
    let error = store.record(Change::PutQueue(queue("later"))).unwrap_err();
    assert!(error.to_string().contains("restart"), "{error}");
    drop(store);
    let store = DefinitionStore::open(&data).unwrap();
    assert_eq!(names(&store), vec!["kept".to_string()]);
}

#[test]
fn a_corrupt_snapshot_is_an_error_naming_the_file() {
    let dir = TempDir::new("defs-corrupt");
    let data = DataDir::open(&dir.0).unwrap();
    fs::write(dir.0.join(SNAPSHOT_FILE), b"{ not json").unwrap();
    let err = DefinitionStore::open(&data).err().expect("refused");
    assert!(err.to_string().contains(SNAPSHOT_FILE), "{err}");
}

#[test]
fn compaction_keeps_everything() {
    let dir = TempDir::new("defs-compact");
    let data = DataDir::open(&dir.0).unwrap();
    let mut store = DefinitionStore::open(&data).unwrap();
    for i in 0..(LOG_ENTRIES_MAX + 5) {
        store
            .record(Change::PutQueue(queue(&format!("q{i}"))))
            .unwrap();
    }
    assert_eq!(store.log_entries, 5, "compacted once the log was full");
    drop(store);
    let store = DefinitionStore::open(&data).unwrap();
    assert_eq!(store.definitions().queues.len(), LOG_ENTRIES_MAX + 5);
}

/// A store with one queue, compacted into the snapshot, and one more change in the log.
fn store_with_a_queue_in_each(dir: &TempDir) -> DataDir {
    let data = DataDir::open(&dir.0).unwrap();
    {
        let mut store = DefinitionStore::open(&data).unwrap();
        store.record(Change::PutQueue(queue("orders"))).unwrap();
    }
    // Reopening compacted "orders" into the snapshot; "invoices" goes to the log.
    let mut store = DefinitionStore::open(&data).unwrap();
    store.record(Change::PutQueue(queue("invoices"))).unwrap();
    drop(store);
    data
}

fn queue_names(store: &DefinitionStore) -> Vec<String> {
    store
        .definitions()
        .queues
        .into_iter()
        .map(|q| q.name)
        .collect()
}

/// Flips one bit of the first occurrence of `needle` in `path`.
fn flip_bit_in(path: &Path, needle: &[u8]) -> u64 {
    let mut bytes = fs::read(path).unwrap();
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the text is in the file");
    bytes[at] ^= 0x02;
    fs::write(path, bytes).unwrap();
    at as u64
}

fn damaged_copies(dir: &Path, name: &str) -> usize {
    fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{name}.damaged-"))
        })
        .count()
}

#[test]
fn a_flipped_bit_in_the_snapshot_refuses_the_start_naming_file_and_offset() {
    let dir = TempDir::new("defs-snapshot-bit");
    let data = store_with_a_queue_in_each(&dir);
    let snapshot = dir.0.join(SNAPSHOT_FILE);
    // "orders" becomes "mrders": still valid JSON, a different queue.
    flip_bit_in(&snapshot, b"orders");
    let error = DefinitionStore::open(&data).err().expect("refused");
    assert!(matches!(error, StoreError::Corrupt { .. }), "{error}");
    let text = error.to_string();
    assert!(
        text.contains(SNAPSHOT_FILE) && text.contains("checksum"),
        "{text}"
    );
    // The offset is where the checksummed definitions start, inside the file.
    let StoreError::Corrupt { offset, .. } = error else {
        unreachable!()
    };
    let bytes = fs::read(&snapshot).unwrap();
    assert_eq!(&bytes[offset as usize..offset as usize + 1], b"{");
    assert!(offset > 0 && offset < bytes.len() as u64);
    // Refusing wrote nothing.
    assert_eq!(fs::read(&snapshot).unwrap(), bytes);
    assert_eq!(damaged_copies(&dir.0, SNAPSHOT_FILE), 0);

    // Forced: what reads is used, said so, and the damaged file is kept.
    let store = DefinitionStore::open_with(&data, Recovery::Force).unwrap();
    assert_eq!(queue_names(&store), vec!["invoices", "mrders"]);
    assert_eq!(damaged_copies(&dir.0, SNAPSHOT_FILE), 1);
    drop(store);
    // It was rewritten, checked, and opens without force from now on.
    let store = DefinitionStore::open(&data).unwrap();
    assert_eq!(queue_names(&store), vec!["invoices", "mrders"]);
}

#[test]
fn a_snapshot_that_does_not_parse_names_the_byte_not_the_column() {
    let dir = TempDir::new("defs-snapshot-json");
    let data = DataDir::open(&dir.0).unwrap();
    let text = "{\n  \"format\": 2,\n  \"crc32c\": ]\n}\n";
    fs::write(dir.0.join(SNAPSHOT_FILE), text).unwrap();
    let Err(StoreError::Corrupt { offset, .. }) = DefinitionStore::open(&data) else {
        panic!("refused as corrupt");
    };
    assert_eq!(offset as usize, text.find(']').unwrap());

    // Unreadable and forced: no definitions from it, and no default user made again.
    let store = DefinitionStore::open_with(&data, Recovery::Force).unwrap();
    assert_eq!(store.definitions().queues.len(), 0);
}

#[test]
fn a_snapshot_of_a_newer_format_is_refused() {
    let dir = TempDir::new("defs-snapshot-newer");
    let data = DataDir::open(&dir.0).unwrap();
    fs::write(
        dir.0.join(SNAPSHOT_FILE),
        r#"{"format":3,"crc32c":"00000000","definitions":{}}"#,
    )
    .unwrap();
    let error = DefinitionStore::open(&data).err().expect("refused");
    assert!(
        matches!(error, StoreError::NewerFormat { found: 3, .. }),
        "{error}"
    );
}

#[test]
fn a_flipped_bit_in_a_logged_change_refuses_the_start() {
    let dir = TempDir::new("defs-log-bit");
    let data = store_with_a_queue_in_each(&dir);
    let log_path = dir.0.join(LOG_FILE);
    // The last line, whole, still valid JSON: damage, not a torn tail.
    flip_bit_in(&log_path, b"invoices");
    let error = DefinitionStore::open(&data).err().expect("refused");
    assert!(
        matches!(error, StoreError::Corrupt { offset: 0, .. }),
        "{error}"
    );
    assert!(error.to_string().contains(LOG_FILE), "{error}");

    // The same change after a good one: the offset is that of its line.
    let good = log::encode(&Change::PutQueue(queue("first")));
    let damaged = fs::read(&log_path).unwrap();
    let mut both = good.clone();
    both.extend_from_slice(&damaged);
    fs::write(&log_path, &both).unwrap();
    let Err(StoreError::Corrupt { offset, .. }) = DefinitionStore::open(&data) else {
        panic!("refused as corrupt");
    };
    assert_eq!(offset, good.len() as u64);

    // Forced: the damaged change is skipped, the others kept, the log kept aside.
    let store = DefinitionStore::open_with(&data, Recovery::Force).unwrap();
    assert_eq!(queue_names(&store), vec!["first", "orders"]);
    assert_eq!(damaged_copies(&dir.0, LOG_FILE), 1);
    assert_eq!(fs::metadata(&log_path).unwrap().len(), 0, "compacted");
}

#[test]
fn a_last_line_padded_with_zeros_is_a_torn_tail() {
    let dir = TempDir::new("defs-log-zeros");
    let data = store_with_a_queue_in_each(&dir);
    let log_path = dir.0.join(LOG_FILE);
    let mut line = log::encode(&Change::PutQueue(queue("torn")));
    let len = line.len();
    // The length reached the disk, the middle of the data did not.
    line[10..len - 1].fill(0);
    let mut log = OpenOptions::new().append(true).open(&log_path).unwrap();
    log.write_all(&line).unwrap();
    drop(log);
    let store = DefinitionStore::open(&data).unwrap();
    assert_eq!(queue_names(&store), vec!["invoices", "orders"]);
}

#[test]
fn a_missing_snapshot_beside_a_log_or_messages_is_not_a_fresh_start() {
    let dir = TempDir::new("defs-missing");
    let data = store_with_a_queue_in_each(&dir);
    fs::remove_file(dir.0.join(SNAPSHOT_FILE)).unwrap();
    let error = DefinitionStore::open(&data).err().expect("refused");
    assert!(matches!(error, StoreError::Damaged { .. }), "{error}");
    assert!(error.to_string().contains(SNAPSHOT_FILE), "{error}");

    // An empty log (everything compacted into the lost snapshot) is enough to refuse.
    fs::write(dir.0.join(LOG_FILE), b"").unwrap();
    let error = DefinitionStore::open(&data).err().expect("refused");
    assert!(matches!(error, StoreError::Damaged { .. }), "{error}");

    // Without the log either, messages on disk are enough to refuse.
    fs::remove_file(dir.0.join(LOG_FILE)).unwrap();
    fs::create_dir_all(dir.0.join("queues/0123abcd")).unwrap();
    let error = DefinitionStore::open(&data).err().expect("refused");
    assert!(matches!(error, StoreError::Damaged { .. }), "{error}");

    // Forced: the log's changes, and "seeded" so the default user does not come back.
    fs::write(
        dir.0.join(LOG_FILE),
        log::encode(&Change::PutQueue(queue("logged"))),
    )
    .unwrap();
    let store = DefinitionStore::open_with(&data, Recovery::Force).unwrap();
    assert_eq!(queue_names(&store), vec!["logged"]);
    assert!(store.definitions().seeded);
    drop(store);
    DefinitionStore::open(&data).expect("a snapshot again");
}

#[test]
fn a_fresh_directory_gets_its_snapshot_first() {
    let dir = TempDir::new("defs-fresh");
    let data = DataDir::open(&dir.0).unwrap();
    let mut store = DefinitionStore::open(&data).unwrap();
    assert!(dir.0.join(SNAPSHOT_FILE).exists());
    assert!(!store.definitions().seeded);
    store.record(Change::Seeded).unwrap();
    drop(store);
    assert!(DefinitionStore::open(&data).unwrap().definitions().seeded);
}

#[test]
fn opening_unchanged_definitions_writes_nothing() {
    use std::os::unix::fs::MetadataExt;
    let dir = TempDir::new("defs-unchanged");
    let data = store_with_a_queue_in_each(&dir);
    drop(DefinitionStore::open(&data).unwrap());
    let snapshot = dir.0.join(SNAPSHOT_FILE);
    let before = fs::metadata(&snapshot).unwrap();
    drop(DefinitionStore::open(&data).unwrap());
    let after = fs::metadata(&snapshot).unwrap();
    assert_eq!(
        (before.ino(), before.mtime_nsec()),
        (after.ino(), after.mtime_nsec()),
        "not rewritten"
    );
}

#[test]
fn definitions_from_before_checksums_are_read_and_rewritten_with_them() {
    let dir = TempDir::new("defs-legacy");
    let data = DataDir::open(&dir.0).unwrap();
    let legacy = Definitions {
        queues: vec![queue("old")],
        seeded: true,
        ..Definitions::default()
    };
    fs::write(
        dir.0.join(SNAPSHOT_FILE),
        serde_json::to_vec_pretty(&legacy).unwrap(),
    )
    .unwrap();
    let mut line = serde_json::to_vec(&Change::PutQueue(queue("older-log"))).unwrap();
    line.push(b'\n');
    fs::write(dir.0.join(LOG_FILE), line).unwrap();
    let store = DefinitionStore::open(&data).unwrap();
    assert_eq!(queue_names(&store), vec!["old", "older-log"]);
    drop(store);
    let text = fs::read_to_string(dir.0.join(SNAPSHOT_FILE)).unwrap();
    assert!(text.starts_with("{\"format\":2,\"crc32c\":\""), "{text}");
}

#[test]
fn a_quorum_queue_moves_and_changes_members_only_for_its_own_group() {
    let mut state = crate::DefinitionState::default();
    let mut def = queue("qq");
    def.quorum = Some(crate::QuorumDef {
        group: 7,
        members: vec!["a".into(), "b".into(), "c".into()],
    });
    def.home = Some("a".into());
    state.apply(Change::PutQueue(def));
    let move_to = |group, home: &str| Change::MoveQueue {
        vhost: "/".into(),
        name: "qq".into(),
        group,
        home: home.into(),
    };
    state.apply(move_to(7, "b"));
    // A move of the group of an earlier queue of that name changes nothing.
    state.apply(move_to(6, "c"));
    state.apply(Change::SetQueueMembers {
        vhost: "/".into(),
        name: "qq".into(),
        group: 6,
        members: vec!["x".into()],
    });
    let defs = state.to_definitions();
    assert_eq!(defs.queues[0].home.as_deref(), Some("b"));
    assert_eq!(
        defs.queues[0].quorum.as_ref().unwrap().members,
        ["a", "b", "c"]
    );
    state.apply(Change::SetQueueMembers {
        vhost: "/".into(),
        name: "qq".into(),
        group: 7,
        members: vec!["a".into(), "b".into()],
    });
    assert_eq!(
        state.to_definitions().queues[0]
            .quorum
            .as_ref()
            .unwrap()
            .members,
        ["a", "b"]
    );
    // Moves of a queue that is not there change nothing either.
    state.apply(Change::DeleteQueue {
        vhost: "/".into(),
        name: "qq".into(),
    });
    state.apply(move_to(7, "a"));
    assert!(state.to_definitions().queues.is_empty());
}
