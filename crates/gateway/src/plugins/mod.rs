//! The plugin phases (STYLE §1). A request's life, in this fixed order:
//!
//! 1. **match** (core): the path is normalized and the route chosen; no plugin runs before a route is known.
//! 2. [`Plugin::authenticate`]: establish who is calling.
//! 3. [`Plugin::authorize`]: decide whether that caller may use this route/model.
//! 4. [`Plugin::admit`]: rate limits, quotas, concurrency slots.
//! 5. [`Plugin::validate`]: check the request itself (sizes, headers, tensors).
//! 6. [`Plugin::route`]: choose or override the upstream (model versions, canaries).
//! 7. [`Plugin::upstream_request`] (proxy): last changes to the request sent upstream.
//! 8. [`Plugin::response`] (respond): change the response headers, also for gateway-made errors.
//! 9. [`Plugin::log`]: see the finished request; must not block.
//!
//! Within a phase, plugins run in config order; there are no numeric priorities. A phase returns [`Flow`]:
//! continue, reject with a [`GatewayError`] (which skips to respond and log), or wait on a future (only plugins
//! that do I/O pay for the allocation).
//!
//! Adding a plugin: one file in this directory with its config struct and handler, and one line in [`build`].

use std::future::Future;
use std::pin::Pin;

use http::request;
use modelgate_config::ConfigError;
use modelgate_config::model::PluginSpec;

use crate::context::Ctx;
use crate::error::GatewayError;

pub mod headers;
pub mod request_size;

/// What a phase decided.
pub enum Flow<'a> {
    Continue,
    Reject(GatewayError),
    Wait(Pin<Box<dyn Future<Output = Result<(), GatewayError>> + Send + 'a>>),
}

/// A plugin instance, compiled from its config once per config load. Every method has a no-op default.
pub trait Plugin: Send + Sync + 'static {
    /// The name it is configured by.
    fn name(&self) -> &'static str;

    /// Runs first: establish the caller's identity into `ctx`.
    fn authenticate<'a>(&'a self, _ctx: &'a mut Ctx, _req: &'a mut request::Parts) -> Flow<'a> {
        Flow::Continue
    }
    /// Decides whether the authenticated caller may proceed.
    fn authorize<'a>(&'a self, _ctx: &'a mut Ctx, _req: &'a mut request::Parts) -> Flow<'a> {
        Flow::Continue
    }
    /// Admission control: limits and quotas.
    fn admit<'a>(&'a self, _ctx: &'a mut Ctx, _req: &'a mut request::Parts) -> Flow<'a> {
        Flow::Continue
    }
    /// Request checks; may set `ctx.body_limit` to have the streamed body counted.
    fn validate<'a>(&'a self, _ctx: &'a mut Ctx, _req: &'a mut request::Parts) -> Flow<'a> {
        Flow::Continue
    }
    /// Chooses the upstream; may replace `ctx.upstream`.
    fn route<'a>(&'a self, _ctx: &'a mut Ctx, _req: &'a mut request::Parts) -> Flow<'a> {
        Flow::Continue
    }
    /// Edits the request about to be sent upstream (after hop-by-hop removal and `X-Forwarded-*`).
    fn upstream_request(&self, _ctx: &Ctx, _req: &mut request::Parts) {}
    /// Edits the response headers sent to the client, for upstream answers and gateway errors alike.
    fn response(&self, _ctx: &Ctx, _resp: &mut http::response::Parts) {}
    /// Sees the finished request. Must not block: hand work to another task.
    fn log(&self, _ctx: &Ctx, _status: http::StatusCode) {}
}

/// Which phase to run, for [`crate::proxy`]'s phase loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Authenticate,
    Authorize,
    Admit,
    Validate,
    Route,
}

/// Builds a plugin from its config. The registry: one line per plugin.
pub fn build(spec: &PluginSpec) -> Result<Box<dyn Plugin>, ConfigError> {
    match spec.name.as_str() {
        request_size::NAME => request_size::build(spec),
        headers::NAME => headers::build(spec),
        other => Err(ConfigError::new(&spec.origin.file, &spec.origin.path, format!("unknown plugin {other:?}"))
            .hint(format!("known plugins: {}, {}", request_size::NAME, headers::NAME))),
    }
}

/// Parses a plugin's settings with path-precise errors.
pub(crate) fn settings<T: serde::de::DeserializeOwned>(spec: &PluginSpec) -> Result<T, ConfigError> {
    modelgate_config::from_value(&spec.settings, &spec.origin.file, &spec.origin.path)
}

// === impl Phase ===

impl Phase {
    pub const BEFORE_PROXY: [Phase; 5] = [Phase::Authenticate, Phase::Authorize, Phase::Admit, Phase::Validate, Phase::Route];

    pub(crate) fn call<'a>(self, p: &'a dyn Plugin, ctx: &'a mut Ctx, req: &'a mut request::Parts) -> Flow<'a> {
        match self {
            Phase::Authenticate => p.authenticate(ctx, req),
            Phase::Authorize => p.authorize(ctx, req),
            Phase::Admit => p.admit(ctx, req),
            Phase::Validate => p.validate(ctx, req),
            Phase::Route => p.route(ctx, req),
        }
    }
}
