//! The log's own tests: appends, acks, segments rolling and going, reopening.
use super::*;
use crate::data_dir::tests::TempDir;
use crate::segment::{Lifetime, RECORD_HEADER_BYTES};
use crate::segment_index::SegmentIndex;
use std::fs::OpenOptions;
use std::io::Write;

fn drain(log: &mut QueueLog) -> Vec<(Position, Vec<u8>)> {
    let mut cursor = log.cursor();
    let mut out = Vec::new();
    while let Some(item) = log.next(&mut cursor).unwrap() {
        out.push(item);
    }
    out
}

/// Thirty persistent 100-byte records, [i; 100], over several small segments.
fn append_thirty(log: &mut QueueLog) -> Vec<Position> {
    (0..30u8)
        .map(|i| log.append(&[i; 100], Lifetime::Persistent).unwrap())
        .collect()
}

fn bodies(items: &[(Position, Vec<u8>)]) -> Vec<Vec<u8>> {
    items.iter().map(|(_, b)| b.clone()).collect()
}

#[test]
fn acks_are_gathered_until_written_or_closed() {
    let dir = TempDir::new("qlog-acks");
    let (mut log, _) = QueueLog::open(&dir.0, 1 << 20).unwrap();
    let positions: Vec<Position> = (0..4u8)
        .map(|i| log.append(&[i; 3], Lifetime::Persistent).unwrap())
        .collect();
    let ack_file = ack_path(&dir.0, positions[0].segment);
    let ack_file_len = || fs::metadata(&ack_file).map(|m| m.len()).unwrap_or(0);
    log.ack(positions[0], Lifetime::Persistent).unwrap();
    log.ack(positions[1], Lifetime::Persistent).unwrap();
    assert_eq!(ack_file_len(), 0, "gathered, not written yet");
    log.write_acks().unwrap();
    assert_eq!(ack_file_len(), 16, "two acks of 8 bytes, one write");
    log.ack(positions[2], Lifetime::Persistent).unwrap();
    drop(log);
    assert_eq!(
        ack_file_len(),
        24,
        "closing the log writes what it gathered"
    );
    let (log, recovery) = QueueLog::open(&dir.0, 1 << 20).unwrap();
    assert_eq!(recovery.messages, 1);
    drop(log);
}

#[test]
fn append_read_ack_and_reopen() {
    let dir = TempDir::new("qlog");
    let (mut log, recovery) = QueueLog::open(&dir.0, 1 << 20).unwrap();
    assert_eq!(recovery.messages, 0);
    let positions: Vec<Position> = (0..5u8)
        .map(|i| log.append(&[i; 3], Lifetime::Persistent).unwrap())
        .collect();
    log.sync().unwrap();
    assert_eq!(log.read(positions[3]).unwrap(), vec![3; 3]);
    log.ack(positions[1], Lifetime::Persistent).unwrap();
    log.ack(positions[3], Lifetime::Persistent).unwrap();
    assert_eq!(log.message_count(), 3);
    assert_eq!(
        bodies(&drain(&mut log)),
        vec![vec![0; 3], vec![2; 3], vec![4; 3]]
    );
    drop(log);
    let (mut log, recovery) = QueueLog::open(&dir.0, 1 << 20).unwrap();
    assert_eq!(recovery.messages, 3);
    assert_eq!(
        bodies(&drain(&mut log)),
        vec![vec![0; 3], vec![2; 3], vec![4; 3]]
    );
    // Appends continue after the recovered records.
    log.append(b"new", Lifetime::Persistent).unwrap();
    assert_eq!(drain(&mut log).len(), 4);
}

#[test]
fn segments_roll_and_go_when_fully_acked() {
    let dir = TempDir::new("qlog-roll");
    // Small segments: a few 100-byte records each.
    let (mut log, _) = QueueLog::open(&dir.0, 400).unwrap();
    let positions: Vec<Position> = (0..20u8)
        .map(|i| log.append(&[i; 100], Lifetime::Persistent).unwrap())
        .collect();
    log.sync().unwrap();
    assert!(log.segment_count() > 5, "{} segments", log.segment_count());
    for p in &positions[..19] {
        log.ack(*p, Lifetime::Persistent).unwrap();
    }
    assert_eq!(log.segment_count(), 1, "only the newest segment is left");
    let files = fs::read_dir(&dir.0).unwrap().count();
    assert!(files <= 2, "{files} files left");
    assert_eq!(bodies(&drain(&mut log)), vec![vec![19; 100]]);
    log.ack(positions[19], Lifetime::Persistent).unwrap();
    assert_eq!(log.message_count(), 0);
    drop(log);
    let (log, recovery) = QueueLog::open(&dir.0, 400).unwrap();
    assert_eq!((recovery.messages, log.message_count()), (0, 0));
}

#[test]
fn a_torn_tail_is_cut_at_reopen_and_reported() {
    let dir = TempDir::new("qlog-torn");
    let (mut log, _) = QueueLog::open(&dir.0, 1 << 20).unwrap();
    for i in 0..3u8 {
        log.append(&[i; 50], Lifetime::Persistent).unwrap();
    }
    log.sync().unwrap();
    drop(log);
    let seg = segment_path(&dir.0, 1);
    let len = fs::metadata(&seg).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    let (mut log, recovery) = QueueLog::open(&dir.0, 1 << 20).unwrap();
    assert_eq!(recovery.messages, 2);
    assert_eq!(
        recovery.truncated_bytes,
        50 + u64::from(RECORD_HEADER_BYTES) - 10
    );
    assert_eq!(
        fs::metadata(&seg).unwrap().len(),
        len - 50 - u64::from(RECORD_HEADER_BYTES),
        "the tail was cut"
    );
    log.append(b"after the cut", Lifetime::Persistent).unwrap();
    assert_eq!(drain(&mut log).len(), 3);
}

#[test]
fn a_torn_ack_entry_is_ignored() {
    let dir = TempDir::new("qlog-ack");
    let (mut log, _) = QueueLog::open(&dir.0, 1 << 20).unwrap();
    let a = log.append(b"a", Lifetime::Persistent).unwrap();
    log.append(b"b", Lifetime::Persistent).unwrap();
    log.ack(a, Lifetime::Persistent).unwrap();
    drop(log);
    let mut acks = OpenOptions::new()
        .append(true)
        .open(ack_path(&dir.0, 1))
        .unwrap();
    acks.write_all(&[0, 0]).unwrap();
    drop(acks);
    let (mut log, recovery) = QueueLog::open(&dir.0, 1 << 20).unwrap();
    assert_eq!(recovery.messages, 1);
    assert_eq!(bodies(&drain(&mut log)), vec![b"b".to_vec()]);
}

#[test]
fn ack_from_acknowledges_the_rest_in_bulk() {
    let dir = TempDir::new("qlog-ackfrom");
    let (mut log, _) = QueueLog::open(&dir.0, 400).unwrap();
    let positions: Vec<Position> = (0..20u8)
        .map(|i| log.append(&[i; 100], Lifetime::Persistent).unwrap())
        .collect();
    // Read (and keep) the first three, ack one of the rest individually.
    let mut cursor = log.cursor();
    for _ in 0..3 {
        log.next(&mut cursor).unwrap().unwrap();
    }
    log.ack(positions[10], Lifetime::Persistent).unwrap();
    assert_eq!(log.ack_from(&mut cursor, 16).unwrap(), 16);
    assert_eq!(log.message_count(), 3, "only the three taken before remain");
    assert_eq!(log.next(&mut cursor).unwrap(), None);
    drop(log);
    let (mut log, recovery) = QueueLog::open(&dir.0, 400).unwrap();
    assert_eq!(recovery.messages, 3);
    assert_eq!(
        bodies(&drain(&mut log)),
        vec![vec![0; 100], vec![1; 100], vec![2; 100]]
    );
}

#[test]
fn sealed_segments_are_opened_from_their_index() {
    let dir = TempDir::new("qlog-index");
    let (mut log, _) = QueueLog::open(&dir.0, 400).unwrap();
    let positions: Vec<Position> = (0..10u8)
        .map(|i| log.append(&[i; 100], Lifetime::Persistent).unwrap())
        .collect();
    log.sync().unwrap();
    log.ack(positions[0], Lifetime::Persistent).unwrap();
    drop(log);
    let first = positions[0].segment;
    assert!(
        index_path(&dir.0, first).exists(),
        "sealed segments are indexed"
    );
    let newest = positions[9].segment;
    assert!(
        !index_path(&dir.0, newest).exists(),
        "the open segment is not"
    );
    // Damage a record of a sealed segment: opening trusts the index and does not read
    // it, so the count is whole; reading that record then reports the damage.
    let damaged = positions[2];
    assert_eq!(damaged.segment, first, "three records to a segment");
    let seg = segment_path(&dir.0, damaged.segment);
    let mut bytes = fs::read(&seg).unwrap();
    bytes[(damaged.record.offset + RECORD_HEADER_BYTES) as usize] ^= 0xff;
    fs::write(&seg, &bytes).unwrap();
    let (mut log, recovery) = QueueLog::open(&dir.0, 400).unwrap();
    assert_eq!(recovery.messages, 9);
    let err = log.read(damaged).unwrap_err();
    assert!(err.to_string().contains("CRC mismatch"), "{err}");
    drop(log);
    // Without its index, the segment is scanned (the damage found) and indexed again.
    fs::remove_file(index_path(&dir.0, damaged.segment)).unwrap();
    let (_log, recovery) = QueueLog::open(&dir.0, 400).unwrap();
    assert_eq!(recovery.messages, 8, "the scan stops at the damaged record");
    assert!(index_path(&dir.0, damaged.segment).exists());
}

#[test]
fn acks_of_transient_records_are_not_written_but_still_free_segments() {
    let dir = TempDir::new("qlog-transient-ack");
    let (mut log, _) = QueueLog::open(&dir.0, 400).unwrap();
    let positions: Vec<Position> = (0..10u8)
        .map(|i| log.append(&[i; 100], Lifetime::Transient).unwrap())
        .collect();
    for p in &positions[..9] {
        log.ack(*p, Lifetime::Transient).unwrap();
    }
    assert_eq!(log.segment_count(), 1, "fully acked segments went");
    let ack_files = fs::read_dir(&dir.0)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension() == Some("ack".as_ref()))
        .count();
    assert_eq!(ack_files, 0);
    assert_eq!(log.message_count(), 1);
}

#[test]
fn reads_in_order_across_read_ahead_buffers_and_segments() {
    let dir = TempDir::new("qlog-readahead");
    let (mut log, _) = QueueLog::open(&dir.0, 1 << 20).unwrap();
    // Odd sizes so records straddle buffer ends; one larger than a buffer; some
    // transient ones still pending in the writer when reading starts.
    let mut expected = Vec::new();
    for i in 0..3000u32 {
        let len = if i == 1500 {
            300 * 1024
        } else {
            997 + (i as usize % 13)
        };
        let body: Vec<u8> = (0..len).map(|j| (i as usize * 31 + j) as u8).collect();
        let lifetime = if i % 7 == 0 {
            Lifetime::Transient
        } else {
            Lifetime::Persistent
        };
        log.append(&body, lifetime).unwrap();
        expected.push(body);
    }
    assert!(log.segment_count() > 2);
    assert_eq!(bodies(&drain(&mut log)), expected);
}

#[test]
fn reading_steps_over_damage_and_counts_what_it_lost() {
    let dir = TempDir::new("qlog-skip");
    let (mut log, _) = QueueLog::open(&dir.0, 1 << 20).unwrap();
    let positions: Vec<Position> = (0..6u8)
        .map(|i| log.append(&[i; 100], Lifetime::Persistent).unwrap())
        .collect();
    log.sync().unwrap();
    let seg = segment_path(&dir.0, 1);
    let mut bytes = fs::read(&seg).unwrap();
    bytes[(positions[1].record.offset + RECORD_HEADER_BYTES) as usize] ^= 0xff;
    // And a damaged length word: the records after it are still found.
    let at = positions[3].record.offset as usize;
    bytes[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
    fs::write(&seg, &bytes).unwrap();
    let mut cursor = log.cursor();
    assert_eq!(log.next(&mut cursor).unwrap().unwrap().1, vec![0; 100]);
    let err = log.next(&mut cursor).unwrap_err();
    assert!(
        matches!(err, StoreError::Lost { records: 2, offset, .. } if offset == u64::from(positions[1].record.offset)),
        "{err}"
    );
    assert_eq!(
        log.message_count(),
        4,
        "the lost ones are no longer counted"
    );
    let rest: Vec<u8> = std::iter::from_fn(|| log.next(&mut cursor).unwrap())
        .map(|(_, payload)| payload[0])
        .collect();
    assert_eq!(rest, vec![2, 4, 5]);
    // Reopened, the damage is found by the scan and stepped over without a word more.
    drop(log);
    let (mut log, recovery) = QueueLog::open(&dir.0, 1 << 20).unwrap();
    assert_eq!(recovery.messages, 4);
    assert_eq!(bodies(&drain(&mut log)).len(), 4);
}

/// Issue 13: damage in a sealed segment opened from its index is found when read; the
/// records after it are served, and once the readable ones are acknowledged the segment
/// is set aside, not deleted.
#[test]
fn damage_in_an_indexed_segment_is_stepped_over_and_the_segment_kept() {
    let dir = TempDir::new("qlog-indexed-damage");
    let (mut log, _) = QueueLog::open(&dir.0, 2000).unwrap();
    let positions = append_thirty(&mut log);
    log.sync().unwrap();
    drop(log);
    let sealed: Vec<&Position> = positions.iter().filter(|p| p.segment == 1).collect();
    assert!(sealed.len() > 5);
    let seg = segment_path(&dir.0, 1);
    let mut bytes = fs::read(&seg).unwrap();
    for b in &mut bytes[sealed[2].record.offset as usize..][..30] {
        *b ^= 0xa5;
    }
    fs::write(&seg, &bytes).unwrap();
    let (mut log, recovery) = QueueLog::open(&dir.0, 2000).unwrap();
    assert_eq!(recovery.messages, 30, "the index does not know yet");
    let mut cursor = log.cursor();
    let mut read = Vec::new();
    let mut lost = 0;
    loop {
        match log.next(&mut cursor) {
            Ok(Some((position, payload))) => {
                read.push(payload[0]);
                log.ack(position, Lifetime::Persistent).unwrap();
            }
            Ok(None) => break,
            Err(StoreError::Lost { records, .. }) => lost += records,
            Err(error) => panic!("{error}"),
        }
    }
    let expected: Vec<u8> = (0..30).filter(|i| *i != 2).collect();
    assert_eq!((read, lost), (expected, 1));
    assert_eq!(log.message_count(), 0);
    assert!(!seg.exists());
    let mut kept = seg.clone().into_os_string();
    kept.push(".damaged");
    assert_eq!(fs::read(kept).unwrap(), bytes, "its bytes are kept");
}

#[test]
fn an_index_that_does_not_match_its_segment_is_ignored() {
    let dir = TempDir::new("qlog-index-stale");
    let (mut log, _) = QueueLog::open(&dir.0, 400).unwrap();
    for i in 0..10u8 {
        log.append(&[i; 100], Lifetime::Persistent).unwrap();
    }
    drop(log);
    // Claim more records than the segment holds, for a length it does not have.
    let stale = SegmentIndex {
        valid_bytes: 12_345,
        records: 99,
        transient: vec![],
    };
    stale.write(&index_path(&dir.0, 1)).unwrap();
    let (_log, recovery) = QueueLog::open(&dir.0, 400).unwrap();
    assert_eq!(recovery.messages, 10);
}

#[test]
fn transient_records_do_not_outlive_a_reopen() {
    let dir = TempDir::new("qlog-transient");
    let (mut log, _) = QueueLog::open(&dir.0, 400).unwrap();
    // Sealed segments and the open one both hold transient records.
    for i in 0..10u8 {
        let lifetime = if i % 2 == 0 {
            Lifetime::Persistent
        } else {
            Lifetime::Transient
        };
        log.append(&[i; 100], lifetime).unwrap();
    }
    log.sync().unwrap();
    assert_eq!(log.message_count(), 10);
    drop(log);
    let (mut log, recovery) = QueueLog::open(&dir.0, 400).unwrap();
    assert_eq!(recovery.messages, 5, "the count is exact at once");
    // A transient record appended now is delivered until the next reopen.
    log.append(b"fresh", Lifetime::Transient).unwrap();
    let delivered = bodies(&drain(&mut log));
    let expected: Vec<Vec<u8>> = (0..10u8)
        .step_by(2)
        .map(|i| vec![i; 100])
        .chain([b"fresh".to_vec()])
        .collect();
    assert_eq!(delivered, expected);
    drop(log);
    let (mut log, recovery) = QueueLog::open(&dir.0, 400).unwrap();
    assert_eq!(recovery.messages, 5);
    assert_eq!(drain(&mut log).len(), 5);
}

#[test]
fn destroy_removes_everything() {
    let dir = TempDir::new("qlog-destroy");
    let (mut log, _) = QueueLog::open(&dir.0, 1 << 20).unwrap();
    log.append(b"x", Lifetime::Persistent).unwrap();
    let acked = log.append(b"y", Lifetime::Persistent).unwrap();
    log.ack(acked, Lifetime::Persistent).unwrap();
    log.destroy().unwrap();
    assert!(
        !dir.0.exists(),
        "gathered acks are not written after the log is gone"
    );
}

/// Issue 13, item 8: garbage in a sealed segment's ack file (thousands of entries) is
/// not taken for acks: nothing is deleted and every message is still counted.
#[test]
fn garbage_in_an_ack_file_deletes_nothing() {
    let dir = TempDir::new("qlog-ack-garbage");
    let (mut log, _) = QueueLog::open(&dir.0, 2000).unwrap();
    let positions = append_thirty(&mut log);
    log.ack(positions[0], Lifetime::Persistent).unwrap();
    log.sync().unwrap();
    drop(log);
    let ack = ack_path(&dir.0, 1);
    let mut bytes = fs::read(&ack).unwrap();
    // Offsets that are in range, and bytes that are no entries at all.
    for i in 0..3688u32 {
        bytes.extend_from_slice(&(16 + i % 1900).to_be_bytes());
        bytes.extend_from_slice(&i.wrapping_mul(2_654_435_761).to_be_bytes());
    }
    fs::write(&ack, &bytes).unwrap();
    let (mut log, recovery) = QueueLog::open(&dir.0, 2000).unwrap();
    assert!(segment_path(&dir.0, 1).exists());
    assert_eq!(recovery.messages, 29);
    assert_eq!(bodies(&drain(&mut log)).len(), 29);
}

/// A log written by an older Wharf (format 2 segments, bare ack offsets) is read, and new
/// records go to a new format 3 segment rather than after the old ones.
#[test]
fn a_format_2_log_is_read_and_appended_to_in_a_new_segment() {
    use crate::segment::{format_2_header, format_2_record};
    let dir = TempDir::new("qlog-format-2");
    fs::create_dir_all(&dir.0).unwrap();
    let mut bytes = format_2_header().to_vec();
    let mut offsets = Vec::new();
    for i in 0..3u8 {
        offsets.push(bytes.len() as u32);
        bytes.extend_from_slice(&format_2_record(&[i; 10], Lifetime::Persistent));
    }
    fs::write(segment_path(&dir.0, 1), &bytes).unwrap();
    fs::write(ack_path(&dir.0, 1), offsets[0].to_be_bytes()).unwrap();
    let (mut log, recovery) = QueueLog::open(&dir.0, 1 << 20).unwrap();
    assert_eq!(recovery.messages, 2);
    let appended = log.append(&[9; 10], Lifetime::Persistent).unwrap();
    assert_eq!(appended.segment, 2);
    assert_eq!(
        fs::read(segment_path(&dir.0, 1)).unwrap(),
        bytes,
        "untouched"
    );
    let read: Vec<u8> = drain(&mut log).iter().map(|(_, p)| p[0]).collect();
    assert_eq!(read, vec![1, 2, 9]);
    // Its acks are written as that format's bare offsets.
    let second = drain(&mut log)[0].0;
    log.ack(second, Lifetime::Persistent).unwrap();
    log.write_acks().unwrap();
    assert_eq!(fs::metadata(ack_path(&dir.0, 1)).unwrap().len(), 8);
    drop(log);
    let (_, recovery) = QueueLog::open(&dir.0, 1 << 20).unwrap();
    assert_eq!(recovery.messages, 2);
}

/// Issue 13, item 6: a segment that cannot be read now (here its ack file is not a file)
/// is skipped, untouched, and the rest of the log is served.
#[test]
fn a_segment_that_cannot_be_read_is_skipped_and_the_rest_served() {
    let dir = TempDir::new("qlog-unreadable");
    let (mut log, _) = QueueLog::open(&dir.0, 2000).unwrap();
    let positions = append_thirty(&mut log);
    log.sync().unwrap();
    drop(log);
    let in_first = positions.iter().filter(|p| p.segment == 1).count();
    let seg = segment_path(&dir.0, 1);
    let bytes = fs::read(&seg).unwrap();
    let _ = fs::remove_file(ack_path(&dir.0, 1));
    fs::create_dir(ack_path(&dir.0, 1)).unwrap();
    let (mut log, recovery) = QueueLog::open(&dir.0, 2000).unwrap();
    assert_eq!(recovery.unreadable_segments, 1);
    assert_eq!(recovery.messages as usize, 30 - in_first);
    let read: Vec<u8> = drain(&mut log).iter().map(|(_, p)| p[0]).collect();
    assert_eq!(read, (in_first as u8..30).collect::<Vec<u8>>());
    assert_eq!(fs::read(&seg).unwrap(), bytes, "left as it was");
}
