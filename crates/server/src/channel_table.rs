//! The open channels of one connection, found by number for every frame. Clients number
//! their channels from 1 up, so a vector indexed by the number finds one with a bounds
//! check instead of a hash. Any number may be used, as in RabbitMQ (channel_max bounds how
//! many are open, not their numbers): those above [`DENSE_NUMBERS`] go to an ordered map,
//! so one high number costs one entry, not a vector reaching up to it.

use std::collections::BTreeMap;

/// Numbers below this are kept in the vector: the default channel_max's range, 16 bytes a
/// slot at most (32 KiB when a client opens channel 2047).
pub const DENSE_NUMBERS: u16 = 2048;

#[derive(Debug)]
pub struct ChannelTable<T> {
    slots: Vec<Option<T>>,
    high: BTreeMap<u16, T>,
    occupied: usize,
}

impl<T> Default for ChannelTable<T> {
    fn default() -> Self {
        ChannelTable {
            slots: Vec::new(),
            high: BTreeMap::new(),
            occupied: 0,
        }
    }
}

impl<T> ChannelTable<T> {
    pub fn get_mut(&mut self, number: u16) -> Option<&mut T> {
        if number < DENSE_NUMBERS {
            self.slots.get_mut(usize::from(number))?.as_mut()
        } else {
            self.high.get_mut(&number)
        }
    }

    /// Puts `value` at `number`, returning what was there.
    pub fn insert(&mut self, number: u16, value: T) -> Option<T> {
        let previous = if number < DENSE_NUMBERS {
            let at = usize::from(number);
            if at >= self.slots.len() {
                self.slots.resize_with(at + 1, || None);
            }
            self.slots[at].replace(value)
        } else {
            self.high.insert(number, value)
        };
        if previous.is_none() {
            self.occupied += 1;
        }
        previous
    }

    /// How many numbers hold something.
    pub fn len(&self) -> usize {
        self.occupied
    }

    pub fn remove(&mut self, number: u16) -> Option<T> {
        let removed = if number < DENSE_NUMBERS {
            let removed = self.slots.get_mut(usize::from(number))?.take();
            // A table that held a high number gives the room back once it is closed.
            while matches!(self.slots.last(), Some(None)) {
                self.slots.pop();
            }
            removed
        } else {
            self.high.remove(&number)
        };
        if removed.is_some() {
            self.occupied -= 1;
        }
        removed
    }

    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().flatten().chain(self.high.values())
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.slots
            .iter_mut()
            .flatten()
            .chain(self.high.values_mut())
    }

    /// Empties the table, yielding what it held.
    pub fn drain(&mut self) -> impl Iterator<Item = T> {
        self.occupied = 0;
        let high = std::mem::take(&mut self.high).into_values();
        std::mem::take(&mut self.slots)
            .into_iter()
            .flatten()
            .chain(high)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_find_their_values_and_removal_shrinks() {
        let mut table = ChannelTable::default();
        assert_eq!(table.insert(1, "one"), None);
        assert_eq!(table.insert(2047, "high"), None);
        assert_eq!(table.insert(1, "again"), Some("one"));
        assert_eq!(table.get_mut(1), Some(&mut "again"));
        assert_eq!(table.get_mut(2), None);
        assert_eq!(table.get_mut(65535), None);
        assert_eq!(table.values().count(), 2);
        assert_eq!(table.len(), 2);
        assert_eq!(table.remove(2047), Some("high"));
        assert_eq!(table.len(), 1);
        assert_eq!(table.slots.len(), 2, "trailing empty slots are dropped");
        assert_eq!(table.remove(3), None);
        assert_eq!(table.drain().collect::<Vec<_>>(), vec!["again"]);
        assert_eq!(table.values().count(), 0);
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn numbers_above_the_vector_take_one_entry_each() {
        let mut table = ChannelTable::default();
        assert_eq!(table.insert(65535, "top"), None);
        assert_eq!(table.insert(DENSE_NUMBERS, "first high"), None);
        assert_eq!(table.insert(3, "low"), None);
        assert_eq!(table.slots.len(), 4, "high numbers do not grow the vector");
        assert_eq!(table.insert(65535, "top again"), Some("top"));
        assert_eq!(table.len(), 3);
        assert_eq!(table.get_mut(65535), Some(&mut "top again"));
        assert_eq!(table.get_mut(DENSE_NUMBERS + 1), None);
        for value in table.values_mut() {
            *value = "seen";
        }
        assert_eq!(table.values().filter(|v| **v == "seen").count(), 3);
        assert_eq!(table.remove(DENSE_NUMBERS), Some("seen"));
        assert_eq!(table.remove(DENSE_NUMBERS), None);
        assert_eq!(table.len(), 2);
        assert_eq!(table.drain().count(), 2);
        assert_eq!(table.len(), 0);
        assert_eq!(table.get_mut(65535), None);
    }
}
