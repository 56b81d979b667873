//! The open channels of one connection, found by number for every frame. Clients number
//! their channels from 1 up, so a vector indexed by the number finds one with a bounds
//! check instead of a hash; numbers are bounded by the negotiated channel_max.

#[derive(Debug)]
pub struct ChannelTable<T> {
    slots: Vec<Option<T>>,
    occupied: usize,
}

impl<T> Default for ChannelTable<T> {
    fn default() -> Self {
        ChannelTable {
            slots: Vec::new(),
            occupied: 0,
        }
    }
}

impl<T> ChannelTable<T> {
    pub fn get_mut(&mut self, number: u16) -> Option<&mut T> {
        self.slots.get_mut(usize::from(number))?.as_mut()
    }

    /// Puts `value` at `number`, returning what was there.
    pub fn insert(&mut self, number: u16, value: T) -> Option<T> {
        let at = usize::from(number);
        if at >= self.slots.len() {
            self.slots.resize_with(at + 1, || None);
        }
        let previous = self.slots[at].replace(value);
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
        let removed = self.slots.get_mut(usize::from(number))?.take();
        if removed.is_some() {
            self.occupied -= 1;
        }
        // A table that held a high number gives the room back once it is closed.
        while matches!(self.slots.last(), Some(None)) {
            self.slots.pop();
        }
        removed
    }

    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().flatten()
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.slots.iter_mut().flatten()
    }

    /// Empties the table, yielding what it held.
    pub fn drain(&mut self) -> impl Iterator<Item = T> {
        self.occupied = 0;
        std::mem::take(&mut self.slots).into_iter().flatten()
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
}
