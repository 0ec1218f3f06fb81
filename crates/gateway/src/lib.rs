//! The modelgate gateway: the front door of model services.
//!
//! A request's life: a listener ([`server`]) accepts it; [`proxy`] normalizes its path ([`path`]), finds its route
//! ([`router`]) in the current [`snapshot`], runs the route's [`plugins`] phase by phase (authenticate → authorize →
//! admit → validate → route), forwards it to a target of its [`upstream`] with retries and health tracking, and
//! streams the answer back through the respond and log phases. Errors become JSON responses in one place
//! ([`error`]). Config reloads ([`reload`]) build a new snapshot off the hot path and swap it atomically; the
//! [`admin`] listener exposes health, reload and config views.

#![deny(unsafe_code)]

pub mod admin;
pub mod audit;
pub mod body;
pub mod context;
pub mod error;
mod health;
pub mod identity;
pub mod limits;
pub mod live;
pub mod metrics;
pub mod observe;
pub mod oip;
pub mod path;
pub mod plugins;
pub mod pool;
pub mod proxy;
pub mod reload;
pub mod router;
pub mod server;
pub mod snapshot;
pub mod trace;
pub mod upstream;

pub use server::{Gateway, Options, StartError};
pub use snapshot::Snapshot;

/// Compiles a config the way `Gateway::start` would, without binding anything: what `modelgate validate` runs.
/// Needs a tokio runtime only if the config has active health checks (none are started: the snapshot is dropped).
pub fn check(config: modelgate_config::Config) -> Result<(), modelgate_config::ConfigErrors> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a current-thread runtime");
    let _guard = rt.enter();
    let mut registries = snapshot::Registries::default();
    registries.identity.dry_run = true;
    Snapshot::compile(config, &mut registries).map(drop)
}
