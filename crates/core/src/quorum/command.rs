//! What a quorum queue's log entries say, and their encoding: binary and self-checking
//! enough that an entry that does not read is refused rather than misapplied.
//!
//! A message's offset, which acknowledgements and returns name, is where its record sits
//! in the log: the entry's index times [`MESSAGES_PER_ENTRY_MAX`] plus its position in
//! the entry. Offsets grow with the log, so ordering by offset is publishing order.

/// Messages one entry may carry: a publisher's burst is written as one entry.
pub const MESSAGES_PER_ENTRY_MAX: usize = 4096;
const POSITION_BITS: u32 = 12;

/// The offset of the message at `position` of the entry at `index`.
pub fn offset_of(index: u64, position: usize) -> u64 {
    debug_assert!(position < MESSAGES_PER_ENTRY_MAX);
    (index << POSITION_BITS) | position as u64
}

/// The entry index and position an offset names.
pub fn position_of(offset: u64) -> (u64, usize) {
    (
        offset >> POSITION_BITS,
        (offset & ((1 << POSITION_BITS) - 1)) as usize,
    )
}

/// One decision of the queue's leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Messages published, in order, as records (`Message::encode_record`, with the
    /// expiry the leader fixed): each becomes one of the queue's messages.
    Enqueue(Vec<bytes::Bytes>),
    /// Messages gone for good: acknowledged, rejected, expired, dropped, dead-lettered.
    Settle(Vec<u64>),
    /// Messages a consumer gave back (a requeue, a cancelled or closed consumer): ready
    /// again, one more delivery counted.
    Return(Vec<u64>),
}

const ENQUEUE: u8 = 1;
const SETTLE: u8 = 2;
const RETURN: u8 = 3;

/// Why an entry did not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadCommand(pub String);

impl std::fmt::Display for BadCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a quorum queue command that does not read: {}", self.0)
    }
}

impl std::error::Error for BadCommand {}

impl Command {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Command::Enqueue(records) => {
                out.push(ENQUEUE);
                out.extend_from_slice(&(records.len() as u32).to_le_bytes());
                for record in records {
                    out.extend_from_slice(&(record.len() as u32).to_le_bytes());
                    out.extend_from_slice(record);
                }
            }
            Command::Settle(offsets) | Command::Return(offsets) => {
                out.push(if matches!(self, Command::Settle(_)) {
                    SETTLE
                } else {
                    RETURN
                });
                out.reserve(4 + offsets.len() * 8);
                out.extend_from_slice(&(offsets.len() as u32).to_le_bytes());
                for offset in offsets {
                    out.extend_from_slice(&offset.to_le_bytes());
                }
            }
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Command, BadCommand> {
        Command::decode_shared(&bytes::Bytes::copy_from_slice(bytes))
    }

    /// [`Command::decode`] of an entry in shared bytes: its records are slices of it.
    pub fn decode_shared(shared: &bytes::Bytes) -> Result<Command, BadCommand> {
        let bytes: &[u8] = shared;
        let mut reader = Reader::new(bytes);
        let kind = reader.u8()?;
        let count = reader.u32()? as usize;
        let command = match kind {
            ENQUEUE => {
                if count > MESSAGES_PER_ENTRY_MAX {
                    return Err(BadCommand(format!("{count} messages in one entry")));
                }
                let mut records = Vec::with_capacity(count);
                for _ in 0..count {
                    let length = reader.u32()? as usize;
                    let start = reader.at;
                    reader.take(length)?;
                    records.push(shared.slice(start..start + length));
                }
                Command::Enqueue(records)
            }
            SETTLE | RETURN => {
                // Checked against what is left before allocating for it.
                if count > reader.left() / 8 {
                    return Err(BadCommand(format!("{count} offsets announced")));
                }
                let offsets = (0..count)
                    .map(|_| reader.u64())
                    .collect::<Result<Vec<u64>, BadCommand>>()?;
                if kind == SETTLE {
                    Command::Settle(offsets)
                } else {
                    Command::Return(offsets)
                }
            }
            other => return Err(BadCommand(format!("unknown kind {other}"))),
        };
        reader.end()?;
        Ok(command)
    }
}

/// Reads the little-endian binary of a quorum queue's entries and messages, each step
/// refused (not panicking) when the bytes are cut short.
pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, at: 0 }
    }

    /// Bytes not read yet.
    pub fn left(&self) -> usize {
        self.bytes.len() - self.at
    }

    /// What is left, all of it.
    pub fn rest(&mut self) -> &'a [u8] {
        let rest = &self.bytes[self.at..];
        self.at = self.bytes.len();
        rest
    }

    /// Refuses bytes left after what was read.
    pub fn end(&self) -> Result<(), BadCommand> {
        match self.left() {
            0 => Ok(()),
            n => Err(BadCommand(format!("{n} bytes after the end"))),
        }
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], BadCommand> {
        if n > self.left() {
            return Err(BadCommand(format!(
                "cut short: {n} bytes wanted, {} left",
                self.left()
            )));
        }
        let taken = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(taken)
    }

    pub fn u8(&mut self) -> Result<u8, BadCommand> {
        Ok(self.take(1)?[0])
    }

    pub fn u32(&mut self) -> Result<u32, BadCommand> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    pub fn u64(&mut self) -> Result<u64, BadCommand> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_read_back_as_written() {
        for command in [
            Command::Enqueue(vec![
                bytes::Bytes::from_static(b"one"),
                bytes::Bytes::new(),
                bytes::Bytes::from(vec![7; 1000]),
            ]),
            Command::Enqueue(Vec::new()),
            Command::Settle(vec![1, u64::MAX, 4096]),
            Command::Return(vec![]),
            Command::Return(vec![offset_of(9, 3)]),
        ] {
            assert_eq!(Command::decode(&command.encode()), Ok(command));
        }
    }

    #[test]
    fn offsets_name_the_entry_and_the_position() {
        assert_eq!(position_of(offset_of(12345, 4095)), (12345, 4095));
        assert!(offset_of(2, 0) > offset_of(1, MESSAGES_PER_ENTRY_MAX - 1));
    }

    #[test]
    fn entries_that_do_not_read_are_refused_without_allocating_for_them() {
        let whole = Command::Enqueue(vec![bytes::Bytes::from_static(b"abc")]).encode();
        for cut in 0..whole.len() {
            assert!(Command::decode(&whole[..cut]).is_err(), "cut at {cut}");
        }
        let mut trailing = whole.clone();
        trailing.push(0);
        assert!(Command::decode(&trailing).is_err());
        assert!(Command::decode(&[9, 0, 0, 0, 0]).is_err());
        // A count of offsets far beyond the payload.
        assert!(Command::decode(&[SETTLE, 0xff, 0xff, 0xff, 0xff, 1, 2]).is_err());
        // More messages than an entry may carry.
        let mut many = vec![ENQUEUE];
        many.extend_from_slice(&(MESSAGES_PER_ENTRY_MAX as u32 + 1).to_le_bytes());
        assert!(Command::decode(&many).is_err());
        // A record longer than what follows.
        assert!(Command::decode(&[ENQUEUE, 1, 0, 0, 0, 200, 0, 0, 0, 1]).is_err());
    }
}
