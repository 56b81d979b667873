//! The sockets one broker's listeners hold at once, handshaking or open, counted together:
//! a flood of sockets that never log in is closed as accepted once the budget is spent,
//! so it cannot take the file descriptors the store needs, whichever listener it hits.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Clones share one count: give every listener of a broker a clone of the same budget.
#[derive(Debug, Clone, Default)]
pub struct SocketBudget {
    max: Option<usize>,
    held: Arc<AtomicUsize>,
}

impl SocketBudget {
    /// At most `max` sockets at once; None: no limit.
    pub fn new(max: Option<usize>) -> Self {
        SocketBudget {
            max,
            held: Arc::default(),
        }
    }

    pub fn max(&self) -> Option<usize> {
        self.max
    }

    /// A socket's share of the budget, given back when dropped; None when it is spent.
    pub fn take(&self) -> Option<SocketPermit> {
        let taken = self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| match self.max {
                Some(max) if held >= max => None,
                _ => Some(held + 1),
            });
        taken.ok().map(|_| SocketPermit(self.held.clone()))
    }

    /// Sockets held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }
}

/// One socket's place in a [`SocketBudget`].
#[derive(Debug)]
pub struct SocketPermit(Arc<AtomicUsize>);

impl Drop for SocketPermit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_the_budget_and_permits_give_back() {
        let budget = SocketBudget::new(Some(2));
        let other_listener = budget.clone();
        let first = budget.take().unwrap();
        let _second = other_listener.take().unwrap();
        assert!(budget.take().is_none());
        assert!(other_listener.take().is_none());
        drop(first);
        assert_eq!(budget.held(), 1);
        assert!(other_listener.take().is_some());
    }

    #[test]
    fn no_limit_takes_everything() {
        let budget = SocketBudget::new(None);
        let permits: Vec<_> = (0..1000).map(|_| budget.take().unwrap()).collect();
        assert_eq!(budget.held(), 1000);
        drop(permits);
        assert_eq!(budget.held(), 0);
    }
}
