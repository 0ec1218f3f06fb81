//! Sharding of the limit counters: 16 locked maps instead of one, swept of stale keys when a shard grows large.

/// A shard this large is swept of keys whose window has passed (or that nobody holds) before a new key goes in.
pub const SHARD_SWEEP: usize = 1 << 16;

/// The shard of `key` among `n`: a cheap string hash (the map inside compares the full key).
pub fn shard_of(key: &str, n: usize) -> usize {
    key.bytes().fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32)) as usize % n
}
