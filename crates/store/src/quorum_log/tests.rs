use super::*;
use crate::data_dir::tests::TempDir;

fn payload(i: u64) -> Vec<u8> {
    format!("entry {i}").into_bytes()
}

fn indexes(log: &mut QuorumLog) -> Vec<u64> {
    log.entries(..)
        .unwrap()
        .into_iter()
        .map(|(i, _)| i)
        .collect()
}

fn segment_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(SEGMENT_SUFFIX))
        .collect();
    names.sort();
    names
}

/// A log whose segments roll every few records and keeps only a few recent entries in
/// memory, so that reads go to the files.
fn small(dir: &Path) -> QuorumLog {
    QuorumLog::open_with(dir, 100, 32).unwrap()
}

#[test]
fn entries_vote_and_marks_come_back_after_a_restart() {
    let dir = TempDir::new("quorum-log");
    let mut log = small(&dir.0);
    assert!(log.is_empty());
    log.append((1..=50).map(|i| (i, payload(i)))).unwrap();
    log.append((51..=60).map(|i| (i, payload(i)))).unwrap();
    log.save_vote(b"vote 3".to_vec()).unwrap();
    log.save_committed(b"commit 4".to_vec()).unwrap();
    drop(log);
    let mut log = small(&dir.0);
    assert!(!log.is_empty());
    assert_eq!(indexes(&mut log), (1..=60).collect::<Vec<_>>());
    for i in [1, 2, 37, 50, 51, 60] {
        assert_eq!(&*log.entry(i).unwrap().unwrap(), payload(i).as_slice());
    }
    assert_eq!(log.entry(61).unwrap(), None);
    assert_eq!(log.entry(0).unwrap(), None);
    let (last, bytes) = log.last().unwrap().unwrap();
    assert_eq!((last, &*bytes), (60, payload(60).as_slice()));
    assert_eq!(log.vote(), Some(b"vote 3".as_slice()));
    assert_eq!(log.committed(), Some(b"commit 4".as_slice()));
    assert_eq!(log.purged(), None);
}

#[test]
fn segments_roll_over_past_their_size_and_read_across_the_boundaries() {
    let dir = TempDir::new("quorum-log");
    let mut log = small(&dir.0);
    for i in 1..=40 {
        log.append([(i, payload(i))]).unwrap();
    }
    let files = segment_files(&dir.0);
    assert!(files.len() > 5, "{files:?}");
    assert_eq!(files[0], segment_name(1));
    let read: Vec<(u64, Vec<u8>)> = log
        .entries(5..=35)
        .unwrap()
        .into_iter()
        .map(|(i, p)| (i, p.to_vec()))
        .collect();
    assert_eq!(read, (5..=35).map(|i| (i, payload(i))).collect::<Vec<_>>());
    assert_eq!(log.entries(38..100).unwrap().len(), 3);
    assert!(log.entries(41..).unwrap().is_empty());
    assert!(log.entries(..1).unwrap().is_empty());
}

#[test]
fn a_truncated_tail_is_gone_across_segments_and_new_entries_follow_the_cut() {
    let dir = TempDir::new("quorum-log");
    let mut log = small(&dir.0);
    for i in 1..=30 {
        log.append([(i, payload(i))]).unwrap();
    }
    log.truncate_from(12).unwrap();
    assert_eq!(indexes(&mut log), (1..=11).collect::<Vec<_>>());
    log.append([(12, b"overruled".to_vec())]).unwrap();
    log.append([(13, payload(13))]).unwrap();
    drop(log);
    let mut log = small(&dir.0);
    assert_eq!(indexes(&mut log), (1..=13).collect::<Vec<_>>());
    assert_eq!(&*log.entry(12).unwrap().unwrap(), b"overruled");
    log.truncate_from(1).unwrap();
    assert_eq!(log.last_index(), None);
    log.append([(1, payload(1))]).unwrap();
    drop(log);
    assert_eq!(indexes(&mut small(&dir.0)), [1]);
}

#[test]
fn an_append_out_of_order_is_refused() {
    let dir = TempDir::new("quorum-log");
    let mut log = small(&dir.0);
    log.append([(1, payload(1))]).unwrap();
    assert!(log.append([(3, payload(3))]).is_err());
    assert!(log.append([(2, payload(2)), (4, payload(4))]).is_err());
    assert_eq!(indexes(&mut log), [1]);
}

#[test]
fn a_purge_hides_entries_and_deletes_whole_segments_behind_it() {
    let dir = TempDir::new("quorum-log");
    let mut log = small(&dir.0);
    for i in 1..=40 {
        log.append([(i, payload(i))]).unwrap();
    }
    let before = segment_files(&dir.0).len();
    log.purge_through(25, b"id 25".to_vec()).unwrap();
    assert!(segment_files(&dir.0).len() < before);
    assert_eq!(indexes(&mut log), (26..=40).collect::<Vec<_>>());
    assert_eq!(log.first_index(), Some(26));
    assert_eq!(log.entry(25).unwrap(), None);
    drop(log);
    let mut log = small(&dir.0);
    assert_eq!(indexes(&mut log), (26..=40).collect::<Vec<_>>());
    assert_eq!(log.purged(), Some(b"id 25".as_slice()));
}

#[test]
fn after_a_purge_past_the_end_the_log_starts_again_after_the_purge() {
    let dir = TempDir::new("quorum-log");
    let mut log = small(&dir.0);
    log.append((1..=5).map(|i| (i, payload(i)))).unwrap();
    log.purge_through(100, b"snapshot at 100".to_vec()).unwrap();
    assert!(segment_files(&dir.0).is_empty());
    assert_eq!(log.last_index(), None);
    assert!(log.append([(50, payload(50))]).is_err());
    log.append([(101, payload(101)), (102, payload(102))])
        .unwrap();
    drop(log);
    let mut log = small(&dir.0);
    assert_eq!(indexes(&mut log), [101, 102]);
}

#[test]
fn a_torn_last_record_is_dropped() {
    let dir = TempDir::new("quorum-log");
    let mut log = small(&dir.0);
    log.append((1..=3).map(|i| (i, payload(i)))).unwrap();
    drop(log);
    let path = dir.0.join(segment_name(1));
    let length = std::fs::metadata(&path).unwrap().len();
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(length - 3).unwrap();
    let mut log = small(&dir.0);
    assert_eq!(indexes(&mut log), [1, 2]);
    log.append([(3, payload(3))]).unwrap();
    drop(log);
    assert_eq!(indexes(&mut small(&dir.0)), [1, 2, 3]);
}

#[test]
fn damage_in_an_older_segment_refuses_the_open() {
    let dir = TempDir::new("quorum-log");
    let mut log = small(&dir.0);
    for i in 1..=30 {
        log.append([(i, payload(i))]).unwrap();
    }
    drop(log);
    let path = dir.0.join(segment_name(1));
    let mut bytes = std::fs::read(&path).unwrap();
    // The last record of the first segment: a torn tail would be forgiven in the last
    // segment only.
    let at = bytes.len() - 2;
    bytes[at] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        QuorumLog::open_with(&dir.0, 100, 32),
        Err(StoreError::Corrupt { .. })
    ));
}

#[test]
fn damage_with_whole_records_after_it_refuses_the_open() {
    let dir = TempDir::new("quorum-log");
    let mut log = QuorumLog::open(&dir.0).unwrap();
    log.append((1..=3).map(|i| (i, payload(i)))).unwrap();
    drop(log);
    let path = dir.0.join(segment_name(1));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[HEADER_BYTES + 2] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        QuorumLog::open(&dir.0),
        Err(StoreError::Corrupt { offset: 0, .. })
    ));
}

#[test]
fn a_gap_between_segments_refuses_the_open() {
    let dir = TempDir::new("quorum-log");
    let mut log = small(&dir.0);
    for i in 1..=30 {
        log.append([(i, payload(i))]).unwrap();
    }
    drop(log);
    let files = segment_files(&dir.0);
    std::fs::remove_file(dir.0.join(&files[1])).unwrap();
    assert!(matches!(
        QuorumLog::open_with(&dir.0, 100, 32),
        Err(StoreError::Corrupt { .. })
    ));
}

#[test]
fn destroy_removes_the_directory() {
    let dir = TempDir::new("quorum-log");
    let queue_dir = dir.0.join("q");
    let mut log = small(&queue_dir);
    log.append((1..=3).map(|i| (i, payload(i)))).unwrap();
    log.destroy().unwrap();
    assert!(!queue_dir.exists());
}
