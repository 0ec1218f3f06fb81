//! Gateway configuration.
//!
//! A config is YAML on disk: one main file plus an optional include directory of fragments, each team owning a
//! file. Loading is two steps (STYLE §3): the YAML is read into the raw `serde` structs of [`raw`] (unknown fields
//! rejected, `${ENV}` interpolated), then [`validate`] turns them into the types of [`model`] that cannot hold a bad
//! state: socket addresses, durations, parsed URIs, names resolved. Every problem found on the way is a
//! [`ConfigError`] naming the file, the YAML path and a hint; all of them are reported at once.
//!
//! Plugin settings stay as YAML values here: each plugin parses its own schema in the gateway crate, so a plugin
//! is one file there. This crate runs before the first request and on every reload, never on the hot path.

#![deny(unsafe_code)]

mod error;
mod interpolate;
mod load;
pub mod model;
pub mod raw;
mod units;
mod validate;

pub use error::{ConfigError, ConfigErrors};
pub use load::{Loaded, Source, Vars, load};
pub use model::Config;
pub use units::ByteSize;

/// Deserializes `value` into `T`, turning the first error into a [`ConfigError`] whose path is `base` joined with
/// the path inside `value`. Plugins use it to parse their own section with the same error quality as the core.
pub fn from_value<T: serde::de::DeserializeOwned>(
    value: &serde_norway::Value,
    file: &std::path::Path,
    base: &str,
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value.clone()).map_err(|e| {
        let inner = e.path().to_string();
        let path = match (base.is_empty(), inner.as_str()) {
            (_, ".") => base.to_string(),
            (true, _) => inner,
            (false, p) if p.starts_with('[') => format!("{base}{p}"),
            (false, p) => format!("{base}.{p}"),
        };
        ConfigError::new(file, path, clean_serde_message(&e.into_inner().to_string()))
    })
}

/// serde_norway appends " at line X column Y" to some messages, which is meaningless for values already parsed;
/// drop it so errors read the same whatever their origin.
fn clean_serde_message(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}
