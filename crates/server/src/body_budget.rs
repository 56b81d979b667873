//! How many bytes of large message bodies the broker receives at once. A body is held
//! in memory while its frames arrive; twenty clients each sending 100 MiB at the same
//! moment would otherwise all be read in full before the memory alarm (a sample of the
//! resident memory, once a second) could stop them. A connection whose next body is large
//! reserves room for it here first, and while there is none it reads nothing more (as
//! under an alarm): bodies wait in the clients' sockets, not in the broker's memory.
//!
//! Small bodies (below [`LARGE_BODY_BYTES`]) take no reservation: they are the common case,
//! and the connections' read buffers already bound them.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A body at least this large reserves room before it is read.
pub const LARGE_BODY_BYTES: u64 = 1024 * 1024;
/// Reservations are counted in units of this many bytes.
const UNIT_BYTES: u64 = 64 * 1024;
/// The budget is never smaller than this, whatever the memory high watermark.
const BUDGET_MIN_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Debug)]
pub struct BodyBudget {
    units: Arc<Semaphore>,
    total_units: u32,
}

/// Room reserved for one body: given back when dropped (the message was routed, or the
/// publish abandoned).
pub type Reservation = OwnedSemaphorePermit;

impl BodyBudget {
    /// A budget for a broker whose memory high watermark is `watermark_bytes`: a quarter
    /// of it, so that bodies being received can never on their own take the broker
    /// past the watermark.
    pub fn for_watermark(watermark_bytes: u64) -> BodyBudget {
        let bytes = (watermark_bytes / 4).max(BUDGET_MIN_BYTES);
        let total_units = u32::try_from(bytes / UNIT_BYTES).unwrap_or(u32::MAX >> 4);
        BodyBudget {
            units: Arc::new(Semaphore::new(total_units as usize)),
            total_units,
        }
    }

    /// Units for a body of `bytes`: at most the whole budget, so that a body larger than
    /// the budget is still received (alone).
    fn units_for(&self, bytes: u64) -> u32 {
        u32::try_from(bytes.div_ceil(UNIT_BYTES))
            .unwrap_or(u32::MAX)
            .min(self.total_units)
    }

    /// Room for a body of `bytes`, if there is some now.
    pub fn try_reserve(&self, bytes: u64) -> Option<Reservation> {
        self.units
            .clone()
            .try_acquire_many_owned(self.units_for(bytes))
            .ok()
    }

    /// Room for a body of `bytes`, once there is some.
    pub async fn reserve(&self, bytes: u64) -> Reservation {
        self.units
            .clone()
            .acquire_many_owned(self.units_for(bytes))
            .await
            .expect("the budget's semaphore is never closed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_share_the_budget_and_a_huge_one_takes_all_of_it() {
        let budget = BodyBudget::for_watermark(256 << 20); // 64 MiB of bodies
        let first = budget.try_reserve(40 << 20).expect("room");
        assert!(budget.try_reserve(40 << 20).is_none(), "only 24 MiB left");
        let small = budget.try_reserve(20 << 20).expect("room for 20 MiB");
        drop((first, small));
        let huge = budget
            .try_reserve(1 << 30)
            .expect("a body over the budget goes alone");
        assert!(budget.try_reserve(LARGE_BODY_BYTES).is_none());
        drop(huge);
        assert!(budget.try_reserve(LARGE_BODY_BYTES).is_some());
    }

    #[test]
    fn a_small_watermark_still_leaves_room() {
        let budget = BodyBudget::for_watermark(1 << 20);
        assert!(budget.try_reserve(BUDGET_MIN_BYTES).is_some());
    }
}
