//! What a quorum queue holds, as every replica agrees on it: its messages (by offset)
//! and how many times each came back from a consumer. Applying the same commands in the
//! same order gives every replica the same ledger; the leader's delivering queue is
//! rebuilt from it when leadership moves.
//!
//! The records themselves stay where the log (or a snapshot) keeps them: the ledger holds
//! sixteen bytes of bookkeeping a message, not its body.

use std::collections::BTreeMap;

use super::command::{offset_of, BadCommand, Command};

/// One message the queue holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Held {
    /// How many times a consumer gave it back (`x-delivery-count`).
    pub returns: u32,
    /// Its record's size.
    pub bytes: u32,
}

/// What applying a command did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Applied {
    /// `count` messages taken, the first at `first_offset`, the others after it.
    Enqueued {
        first_offset: u64,
        count: usize,
    },
    /// How many of the named messages were held (the others were gone already).
    Settled(usize),
    Returned(usize),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ledger {
    messages: BTreeMap<u64, Held>,
    /// The record bytes of the messages held.
    bytes: u64,
    /// Messages ever taken, settled and returned, for the operator's figures.
    pub enqueued_total: u64,
    pub settled_total: u64,
    pub returned_total: u64,
}

impl Ledger {
    /// Applies the command of the entry at `index`.
    pub fn apply(&mut self, index: u64, command: &Command) -> Applied {
        match command {
            Command::Enqueue(records) => {
                for (position, record) in records.iter().enumerate() {
                    let bytes = u32::try_from(record.len()).unwrap_or(u32::MAX);
                    self.messages
                        .insert(offset_of(index, position), Held { returns: 0, bytes });
                    self.bytes += u64::from(bytes);
                }
                self.enqueued_total += records.len() as u64;
                Applied::Enqueued {
                    first_offset: offset_of(index, 0),
                    count: records.len(),
                }
            }
            Command::Settle(offsets) => {
                let mut settled = 0;
                for offset in offsets {
                    if let Some(held) = self.messages.remove(offset) {
                        self.bytes -= u64::from(held.bytes);
                        settled += 1;
                    }
                }
                self.settled_total += settled as u64;
                Applied::Settled(settled)
            }
            Command::Return(offsets) => {
                let mut returned = 0;
                for offset in offsets {
                    if let Some(held) = self.messages.get_mut(offset) {
                        held.returns = held.returns.saturating_add(1);
                        returned += 1;
                    }
                }
                self.returned_total += returned as u64;
                Applied::Returned(returned)
            }
        }
    }

    /// How many messages the queue holds (ready and delivered).
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// The record bytes of the messages held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn get(&self, offset: u64) -> Option<Held> {
        self.messages.get(&offset).copied()
    }

    /// The messages held, oldest first.
    pub fn messages(&self) -> impl Iterator<Item = (u64, Held)> + '_ {
        self.messages.iter().map(|(offset, held)| (*offset, *held))
    }

    /// The messages from `offset` on, oldest first.
    pub fn messages_from(&self, offset: u64) -> impl Iterator<Item = (u64, Held)> + '_ {
        self.messages
            .range(offset..)
            .map(|(offset, held)| (*offset, *held))
    }

    /// The oldest message's offset.
    pub fn first_offset(&self) -> Option<u64> {
        self.messages.keys().next().copied()
    }

    /// The ledger as a snapshot carries it: the counters, then each message's offset,
    /// returns and size.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.messages.len() * 16);
        for counter in [
            self.messages.len() as u64,
            self.enqueued_total,
            self.settled_total,
            self.returned_total,
        ] {
            out.extend_from_slice(&counter.to_le_bytes());
        }
        for (offset, held) in &self.messages {
            out.extend_from_slice(&offset.to_le_bytes());
            out.extend_from_slice(&held.returns.to_le_bytes());
            out.extend_from_slice(&held.bytes.to_le_bytes());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Ledger, BadCommand> {
        let word = |at: usize| -> Result<u64, BadCommand> {
            bytes
                .get(at..at + 8)
                .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
                .ok_or_else(|| BadCommand("a ledger cut short".to_string()))
        };
        let count = word(0)?;
        let mut ledger = Ledger {
            enqueued_total: word(8)?,
            settled_total: word(16)?,
            returned_total: word(24)?,
            ..Ledger::default()
        };
        let body = &bytes[32..];
        if body.len() as u64 != count.saturating_mul(16) {
            return Err(BadCommand(format!(
                "a ledger of {count} messages in {} bytes",
                body.len()
            )));
        }
        let mut previous = None;
        for chunk in body.chunks_exact(16) {
            let offset = u64::from_le_bytes(chunk[0..8].try_into().expect("8 bytes"));
            if previous.is_some_and(|p| p >= offset) {
                return Err(BadCommand("a ledger out of order".to_string()));
            }
            previous = Some(offset);
            let held = Held {
                returns: u32::from_le_bytes(chunk[8..12].try_into().expect("4 bytes")),
                bytes: u32::from_le_bytes(chunk[12..16].try_into().expect("4 bytes")),
            };
            ledger.bytes += u64::from(held.bytes);
            ledger.messages.insert(offset, held);
        }
        Ok(ledger)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(n: usize) -> Vec<bytes::Bytes> {
        (0..n)
            .map(|i| bytes::Bytes::from(vec![0u8; 10 + i]))
            .collect()
    }

    #[test]
    fn enqueued_messages_are_held_until_settled_and_returns_are_counted() {
        let mut ledger = Ledger::default();
        assert_eq!(
            ledger.apply(5, &Command::Enqueue(records(3))),
            Applied::Enqueued {
                first_offset: offset_of(5, 0),
                count: 3
            }
        );
        ledger.apply(6, &Command::Enqueue(records(1)));
        assert_eq!(ledger.len(), 4);
        assert_eq!(ledger.bytes(), 10 + 11 + 12 + 10);
        let second = offset_of(5, 1);
        assert_eq!(
            ledger.apply(7, &Command::Return(vec![second, second, 999])),
            Applied::Returned(2)
        );
        assert_eq!(ledger.get(second).unwrap().returns, 2);
        assert_eq!(
            ledger.apply(8, &Command::Settle(vec![offset_of(5, 0), second, 12345])),
            Applied::Settled(2)
        );
        // A second settle of the same message changes nothing.
        assert_eq!(
            ledger.apply(9, &Command::Settle(vec![second])),
            Applied::Settled(0)
        );
        let left: Vec<u64> = ledger.messages().map(|(o, _)| o).collect();
        assert_eq!(left, [offset_of(5, 2), offset_of(6, 0)]);
        assert_eq!(ledger.bytes(), 12 + 10);
        assert_eq!(ledger.first_offset(), Some(offset_of(5, 2)));
        assert_eq!(
            (
                ledger.enqueued_total,
                ledger.settled_total,
                ledger.returned_total
            ),
            (4, 2, 2)
        );
    }

    #[test]
    fn a_ledger_reads_back_from_its_encoding() {
        let mut ledger = Ledger::default();
        ledger.apply(1, &Command::Enqueue(records(5)));
        ledger.apply(2, &Command::Return(vec![offset_of(1, 3)]));
        ledger.apply(3, &Command::Settle(vec![offset_of(1, 0)]));
        let bytes = ledger.encode();
        assert_eq!(Ledger::decode(&bytes), Ok(ledger.clone()));
        assert_eq!(
            Ledger::decode(&Ledger::default().encode()),
            Ok(Ledger::default())
        );
        for cut in [0, 8, 31, bytes.len() - 1] {
            assert!(Ledger::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut swapped = bytes.clone();
        let (first, second) = (32..48, 48..64);
        let a = swapped[first.clone()].to_vec();
        let b = swapped[second.clone()].to_vec();
        swapped[first].copy_from_slice(&b);
        swapped[second].copy_from_slice(&a);
        assert!(Ledger::decode(&swapped).is_err());
    }
}
