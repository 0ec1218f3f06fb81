//! A request's hold on a shared in-flight counter (STYLE §8): given back when dropped, so every early return and
//! every client that goes away returns it. The response body carries the slots a request took until it has been
//! sent ([`crate::body::Body::Held`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// One request's hold on an in-flight counter.
#[derive(Debug)]
pub struct Slot(Arc<AtomicU64>);

impl Slot {
    /// Holds `counter`, which the caller has just incremented for this request; dropping the slot decrements it.
    pub fn taken(counter: Arc<AtomicU64>) -> Slot {
        Slot(counter)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropping_a_slot_gives_it_back() {
        let counter = Arc::new(AtomicU64::new(0));
        counter.fetch_add(2, Ordering::AcqRel);
        let (a, b) = (Slot::taken(counter.clone()), Slot::taken(counter.clone()));
        drop(a);
        assert_eq!(counter.load(Ordering::Acquire), 1);
        drop(b);
        assert_eq!(counter.load(Ordering::Acquire), 0);
    }
}
