//! The modelgate gateway: the front door of model services. It puts the other crates together.
//!
//! A request's life: a listener ([`server`]) accepts it; [`driver`] normalizes its path, finds its route
//! ([`router`]) in the current [`snapshot`], runs the route's plugins phase by phase (authenticate → authorize →
//! admit → validate → route; the registry is [`plugins`]), hands it to [`proxy`] to forward to a target of its
//! upstream with retries, and runs respond and log ([`observe`]: metrics, access log, spans). Config reloads
//! ([`reload`]) build a new snapshot off the hot path and swap it atomically; the [`admin`] listener exposes
//! health, reload, metrics and config views.
//!
//! Below it: `pipeline` (the phases' vocabulary), `auth` and `limits` (plugins), `upstream` (targets, pool,
//! health), `telemetry` and `config`. `docs/architecture.md` maps every step to its file.

#![deny(unsafe_code)]

pub mod admin;
pub mod authz;
pub mod console;
pub mod driver;
pub mod grpc;
pub mod namespaces;
pub mod observe;
pub mod own_calls;
pub mod plugins;
pub mod proxy;
pub mod reload;
pub mod rollout;
pub mod router;
pub mod server;
pub mod shadow;
pub mod snapshot;
pub mod versions;

pub use server::{Gateway, Options, StartError};
pub use snapshot::Snapshot;

/// Compiles a config the way `Gateway::start` would (for `modelgate authz` with `checks_only`), without binding
/// anything: what `modelgate validate` runs. Needs a tokio runtime only if the config has active health checks (none
/// are started: the snapshot is dropped).
pub fn check(config: modelgate_config::Config, checks_only: bool) -> Result<(), modelgate_config::ConfigErrors> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a current-thread runtime");
    let _guard = rt.enter();
    let mut registries = snapshot::Registries { checks_only, ..snapshot::Registries::default() };
    registries.identity.dry_run = true;
    Snapshot::compile(config, &mut registries).map(drop)
}
