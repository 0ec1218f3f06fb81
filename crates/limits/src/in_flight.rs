//! In-flight counters for the `concurrency` plugin, sharded by key.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use modelgate_pipeline::slot::Slot;

use crate::shard::{SHARD_SWEEP, shard_of};

/// In-flight counters for the `concurrency` plugin: key → requests in flight. A slot is taken with
/// [`InFlight::try_acquire`] and given back when its [`Slot`] drops — when the response body has been sent, or
/// when the client goes away, whichever comes first.
#[derive(Default)]
pub struct InFlight {
    shards: [Mutex<Counters>; 16],
}

type Counters = HashMap<Box<str>, Arc<AtomicU64>, foldhash::fast::RandomState>;

impl InFlight {
    /// Takes a slot under `key` if fewer than `max` are taken; else `Err(in flight)`.
    pub fn try_acquire(&self, key: &str, max: u64) -> Result<Slot, u64> {
        let counter = {
            let mut shard = self.shards[shard_of(key, self.shards.len())].lock().unwrap_or_else(|e| e.into_inner());
            if shard.len() >= SHARD_SWEEP {
                shard.retain(|_, c| Arc::strong_count(c) > 1 || c.load(Ordering::Acquire) > 0);
            }
            match shard.get(key) {
                Some(c) => c.clone(),
                None => shard.entry(key.into()).or_default().clone(),
            }
        };
        let mut current = counter.load(Ordering::Acquire);
        loop {
            if current >= max {
                return Err(current);
            }
            match counter.compare_exchange_weak(current, current + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(Slot::taken(counter)),
                Err(now) => current = now,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_slots_are_given_back_on_drop() {
        let f = InFlight::default();
        let a = f.try_acquire("k", 2).unwrap();
        let b = f.try_acquire("k", 2).unwrap();
        assert_eq!(f.try_acquire("k", 2).err(), Some(2));
        assert!(f.try_acquire("other", 2).is_ok());
        drop(a);
        let _c = f.try_acquire("k", 2).unwrap();
        drop(b);
    }
}
