//! How a quorum queue's entries are kept on disk and sent to the other replicas: binary,
//! since they carry message bodies (the metadata group's JSON would triple a body's
//! size). An entry is its log id (term, leader, index), its kind and its bytes: a
//! command as proposed, or a membership as JSON. Raft's other messages are small and
//! rare, and go as JSON beside the entries.

use openraft::error::RaftError;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{CommittedLeaderId, EntryPayload};
use serde::{Deserialize, Serialize};

use super::{Entry, GroupId, LogId, Proposal, QueueConfig, SnapshotMeta, Vote};
use crate::config::NodeId;

const BLANK: u8 = 0;
const NORMAL: u8 = 1;
const MEMBERSHIP: u8 = 2;

const APPEND_ENTRIES: u8 = 1;
const VOTE: u8 = 2;
const SNAPSHOT: u8 = 3;

/// Why bytes did not read as an entry or a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a quorum queue's Raft message that does not read: {0}")]
pub struct Unreadable(pub String);

pub fn encode_entry(out: &mut Vec<u8>, entry: &Entry) {
    let log_id = entry.log_id;
    out.extend_from_slice(&log_id.leader_id.term.to_le_bytes());
    out.extend_from_slice(&log_id.leader_id.node_id.to_le_bytes());
    out.extend_from_slice(&log_id.index.to_le_bytes());
    let (kind, bytes): (u8, std::borrow::Cow<'_, [u8]>) = match &entry.payload {
        EntryPayload::Blank => (BLANK, (&[][..]).into()),
        EntryPayload::Normal(proposal) => (NORMAL, proposal.0.as_slice().into()),
        EntryPayload::Membership(membership) => (
            MEMBERSHIP,
            serde_json::to_vec(membership)
                .expect("memberships serialize")
                .into(),
        ),
    };
    out.push(kind);
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(&bytes);
}

pub fn entry_bytes(entry: &Entry) -> Vec<u8> {
    let mut out = Vec::new();
    encode_entry(&mut out, entry);
    out
}

/// Reads one entry from the start of `reader`.
fn read_entry(reader: &mut Reader<'_>) -> Result<Entry, Unreadable> {
    let term = reader.u64()?;
    let node_id = reader.u64()?;
    let index = reader.u64()?;
    let kind = reader.u8()?;
    let length = reader.u32()? as usize;
    let bytes = reader.take(length)?;
    let payload = match kind {
        BLANK => EntryPayload::Blank,
        NORMAL => EntryPayload::Normal(Proposal(bytes.to_vec())),
        MEMBERSHIP => EntryPayload::Membership(
            serde_json::from_slice(bytes).map_err(|e| Unreadable(e.to_string()))?,
        ),
        other => return Err(Unreadable(format!("an entry of kind {other}"))),
    };
    Ok(Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, node_id), index),
        payload,
    })
}

/// Reads an entry as [`encode_entry`] wrote it, and nothing after it.
pub fn decode_entry(bytes: &[u8]) -> Result<Entry, Unreadable> {
    let mut reader = Reader::new(bytes);
    let entry = read_entry(&mut reader)?;
    reader.end()?;
    Ok(entry)
}

/// What a replica asks another about a group.
#[derive(Debug)]
pub enum GroupRpc {
    AppendEntries(AppendEntriesRequest<QueueConfig>),
    Vote(VoteRequest<NodeId>),
    /// A whole snapshot.
    Snapshot {
        vote: Vote,
        meta: SnapshotMeta,
        data: Vec<u8>,
    },
}

/// What it answers.
#[derive(Debug, Serialize, Deserialize)]
pub enum GroupAnswer {
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    Snapshot(Result<SnapshotResponse<NodeId>, String>),
    /// The node holds no replica of that group (not yet, or no longer).
    NoGroup,
}

#[derive(Serialize, Deserialize)]
struct AppendHeader {
    vote: Vote,
    prev_log_id: Option<LogId>,
    leader_commit: Option<LogId>,
}

#[derive(Serialize, Deserialize)]
struct SnapshotHeader {
    vote: Vote,
    meta: SnapshotMeta,
}

/// `rpc` for group `group`, as a frame carries it.
pub fn encode_rpc(group: GroupId, rpc: &GroupRpc) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&group.to_le_bytes());
    match rpc {
        GroupRpc::AppendEntries(request) => {
            out.push(APPEND_ENTRIES);
            put_json(
                &mut out,
                &AppendHeader {
                    vote: request.vote,
                    prev_log_id: request.prev_log_id,
                    leader_commit: request.leader_commit,
                },
            );
            out.extend_from_slice(&(request.entries.len() as u32).to_le_bytes());
            for entry in &request.entries {
                encode_entry(&mut out, entry);
            }
        }
        GroupRpc::Vote(request) => {
            out.push(VOTE);
            put_json(&mut out, request);
        }
        GroupRpc::Snapshot { vote, meta, data } => {
            out.push(SNAPSHOT);
            put_json(
                &mut out,
                &SnapshotHeader {
                    vote: *vote,
                    meta: meta.clone(),
                },
            );
            out.extend_from_slice(data);
        }
    }
    out
}

pub fn decode_rpc(bytes: &[u8]) -> Result<(GroupId, GroupRpc), Unreadable> {
    let mut reader = Reader::new(bytes);
    let group = reader.u64()?;
    let rpc = match reader.u8()? {
        APPEND_ENTRIES => {
            let header: AppendHeader = reader.json()?;
            let count = reader.u32()? as usize;
            // Each entry takes at least its 29 header bytes: a count beyond what follows is
            // damage, refused before allocating for it.
            if count > reader.left() / 29 {
                return Err(Unreadable(format!("{count} entries announced")));
            }
            let mut entries = Vec::with_capacity(count);
            for _ in 0..count {
                entries.push(read_entry(&mut reader)?);
            }
            reader.end()?;
            GroupRpc::AppendEntries(AppendEntriesRequest {
                vote: header.vote,
                prev_log_id: header.prev_log_id,
                entries,
                leader_commit: header.leader_commit,
            })
        }
        VOTE => {
            let request = reader.json()?;
            reader.end()?;
            GroupRpc::Vote(request)
        }
        SNAPSHOT => {
            let header: SnapshotHeader = reader.json()?;
            let data = reader.rest().to_vec();
            GroupRpc::Snapshot {
                vote: header.vote,
                meta: header.meta,
                data,
            }
        }
        other => return Err(Unreadable(format!("a request of kind {other}"))),
    };
    Ok((group, rpc))
}

pub fn encode_answer(answer: &GroupAnswer) -> Vec<u8> {
    serde_json::to_vec(answer).expect("answers serialize")
}

pub fn decode_answer(bytes: &[u8]) -> Result<GroupAnswer, Unreadable> {
    serde_json::from_slice(bytes).map_err(|e| Unreadable(e.to_string()))
}

fn put_json(out: &mut Vec<u8>, value: &impl Serialize) {
    let json = serde_json::to_vec(value).expect("Raft messages serialize");
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&json);
}

/// A reader of the entries' binary (the core's, whose refusals say what was cut short).
struct Reader<'a>(wharf_core::quorum::Reader<'a>);

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader(wharf_core::quorum::Reader::new(bytes))
    }

    fn left(&self) -> usize {
        self.0.left()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Unreadable> {
        self.0.take(n).map_err(unreadable)
    }

    fn rest(&mut self) -> &'a [u8] {
        self.0.rest()
    }

    fn end(&self) -> Result<(), Unreadable> {
        self.0.end().map_err(unreadable)
    }

    fn u8(&mut self) -> Result<u8, Unreadable> {
        self.0.u8().map_err(unreadable)
    }

    fn u32(&mut self) -> Result<u32, Unreadable> {
        self.0.u32().map_err(unreadable)
    }

    fn u64(&mut self) -> Result<u64, Unreadable> {
        self.0.u64().map_err(unreadable)
    }

    fn json<T: for<'de> Deserialize<'de>>(&mut self) -> Result<T, Unreadable> {
        let length = self.u32()? as usize;
        serde_json::from_slice(self.take(length)?).map_err(|e| Unreadable(e.to_string()))
    }
}

fn unreadable(error: wharf_core::quorum::BadCommand) -> Unreadable {
    Unreadable(error.0)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use openraft::Membership;

    use super::*;
    use crate::raft::Member;

    fn entries() -> Vec<Entry> {
        let log_id = |term, index| LogId::new(CommittedLeaderId::new(term, 7), index);
        let nodes: BTreeMap<NodeId, Member> = [(
            7,
            Member {
                address: "127.0.0.1:1".into(),
            },
        )]
        .into();
        vec![
            Entry {
                log_id: log_id(1, 1),
                payload: EntryPayload::Membership(Membership::new(
                    vec![BTreeSet::from([7])],
                    nodes,
                )),
            },
            Entry {
                log_id: log_id(1, 2),
                payload: EntryPayload::Blank,
            },
            Entry {
                log_id: log_id(2, 3),
                payload: EntryPayload::Normal(Proposal(vec![1, 2, 3, 0, 255])),
            },
        ]
    }

    #[test]
    fn entries_read_back_as_written() {
        for entry in entries() {
            let bytes = entry_bytes(&entry);
            assert_eq!(decode_entry(&bytes).unwrap(), entry);
            for cut in 0..bytes.len() {
                assert!(decode_entry(&bytes[..cut]).is_err());
            }
        }
    }

    #[test]
    fn rpcs_read_back_as_written_and_damage_is_refused() {
        let vote = Vote::new_committed(3, 7);
        let request = AppendEntriesRequest {
            vote,
            prev_log_id: Some(LogId::new(CommittedLeaderId::new(1, 7), 0)),
            entries: entries(),
            leader_commit: None,
        };
        let bytes = encode_rpc(42, &GroupRpc::AppendEntries(request.clone()));
        match decode_rpc(&bytes).unwrap() {
            (42, GroupRpc::AppendEntries(read)) => {
                assert_eq!(read.vote, request.vote);
                assert_eq!(read.prev_log_id, request.prev_log_id);
                assert_eq!(read.leader_commit, request.leader_commit);
                assert_eq!(read.entries, request.entries);
            }
            other => panic!("read back as {other:?}"),
        }
        for cut in [0, 8, 9, 13, bytes.len() - 1] {
            assert!(decode_rpc(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut huge_count = encode_rpc(
            1,
            &GroupRpc::AppendEntries(AppendEntriesRequest {
                entries: Vec::new(),
                ..request
            }),
        );
        let at = huge_count.len() - 4;
        huge_count[at..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_rpc(&huge_count).is_err());
        let vote_request = VoteRequest::new(vote, None);
        let bytes = encode_rpc(5, &GroupRpc::Vote(vote_request.clone()));
        assert!(matches!(decode_rpc(&bytes), Ok((5, GroupRpc::Vote(v))) if v == vote_request));
        assert!(decode_rpc(&[0, 0, 0, 0, 0, 0, 0, 0, 99]).is_err());
    }
}
