//! Admission control (the admit phase): how much each caller may send, and how much may be in flight at once.
//!
//! - [`rate_limit`]: the `rate_limit` plugin — fixed windows, several limits per route, costs in requests, bytes,
//!   batch items or tensor elements, counted in the [`store`] (in-process, or Redis shared by every gateway).
//! - [`concurrency`]: the `concurrency` plugin — caps on requests in flight per key ([`in_flight`]), held as RAII
//!   slots until the response has been sent.
//! - [`key`]: what a limit is counted per (`by: [consumer, model, …]`); [`shard`]: the counters' sharding.
//!
//! Depends on `pipeline` and below; the gateway registers the two plugins.

#![deny(unsafe_code)]

pub mod concurrency;
pub mod in_flight;
pub mod key;
pub mod rate_limit;
pub mod shard;
pub mod store;
