//! The plugin phases (STYLE §1). A request's life, in this fixed order:
//!
//! 1. **match** (core): the path is normalized and the route chosen; no plugin runs before a route is known.
//! 2. [`Plugin::authenticate`]: establish who is calling.
//! 3. [`Plugin::authorize`]: decide whether that caller may use this route/model.
//! 4. [`Plugin::admit`]: rate limits, quotas, concurrency slots.
//! 5. [`Plugin::validate`]: check the request itself (sizes, headers, tensors).
//! 6. [`Plugin::route`]: choose or override the upstream (model versions, canaries).
//! 7. [`Plugin::upstream_request`] (proxy): last changes to the request's headers for the upstream
//!    ([`crate::HeaderEdits`]).
//! 8. [`Plugin::response`] (respond): change the response headers, also for gateway-made errors.
//! 9. [`Plugin::log`]: see the finished request; must not block.
//!
//! Within a phase, plugins run in config order; there are no numeric priorities. A phase returns [`Flow`]:
//! continue, reject with a [`GatewayError`] (which skips to respond and log), or wait on a future (only plugins
//! that do I/O pay for the allocation).
//!
//! Adding a plugin: one file with its config struct, its `build` function and its handler (in the crate of its
//! concern: `auth`, `limits`, or the gateway's `plugins/`), and one line in the gateway's registry
//! (`modelgate_gateway::plugins::build`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::request;
use modelgate_config::ConfigError;
use modelgate_config::model::PluginSpec;
use modelgate_telemetry::audit::{Audit, Event, Recorded, Subject, Target, Text};

use crate::context::Ctx;
use crate::error::GatewayError;

/// What a phase decided.
pub enum Flow<'a> {
    Continue,
    Reject(GatewayError),
    Wait(Pin<Box<dyn Future<Output = Result<(), GatewayError>> + Send + 'a>>),
}

impl From<Result<(), GatewayError>> for Flow<'_> {
    fn from(r: Result<(), GatewayError>) -> Self {
        match r {
            Ok(()) => Flow::Continue,
            Err(e) => Flow::Reject(e),
        }
    }
}

impl Flow<'_> {
    /// The outcome, waiting if it must.
    pub async fn resolve(self) -> Result<(), GatewayError> {
        match self {
            Flow::Continue => Ok(()),
            Flow::Reject(e) => Err(e),
            Flow::Wait(f) => f.await,
        }
    }
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
    /// Request checks; may cap the streamed body with [`Ctx::limit_body`].
    fn validate<'a>(&'a self, _ctx: &'a mut Ctx, _req: &'a mut request::Parts) -> Flow<'a> {
        Flow::Continue
    }
    /// Chooses the upstream; may replace it with [`Ctx::set_upstream`].
    fn route<'a>(&'a self, _ctx: &'a mut Ctx, _req: &'a mut request::Parts) -> Flow<'a> {
        Flow::Continue
    }
    /// The changes to the request's headers for its upstream, recorded in `edits` (the gateway applies them after
    /// hop-by-hop removal and `X-Forwarded-*`; `modelgate authz` answers them to the proxy that asked).
    fn upstream_request(&self, _ctx: &Ctx, _req: &request::Parts, _edits: &mut crate::HeaderEdits) {}
    /// Edits the response headers sent to the client, for upstream answers and gateway errors alike.
    fn response(&self, _ctx: &Ctx, _resp: &mut http::response::Parts) {}
    /// Sees the finished request. Must not block: hand work to another task.
    fn log(&self, _ctx: &Ctx, _status: http::StatusCode) {}
    /// `Some(max bytes)` if this plugin reads the request body (then buffered for the route, up to the largest
    /// such `max`, before the admit phase; larger bodies get 413). Default: the body streams.
    fn wants_body(&self) -> Option<u64> {
        None
    }
    /// `Some(max bytes)` if this plugin reads upstream response bodies (then buffered, up to the largest such
    /// `max`; a larger one is refused with 502 `response_too_large`).
    fn wants_response_body(&self) -> Option<u64> {
        None
    }
    /// Inspects, and may rewrite, a buffered upstream response body (respond phase, before `response`).
    fn inspect_response(&self, _ctx: &Ctx, _parts: &mut http::response::Parts, _body: &mut bytes::Bytes) -> Result<(), GatewayError> {
        Ok(())
    }
}

/// Which phase to run, for the gateway's phase loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Authenticate,
    Authorize,
    Admit,
    Validate,
    Route,
}

/// An audit event about this request, filled from the context.
pub fn audit_event(ctx: &Ctx, route: &Arc<str>, kind: &'static str, decision: &'static str, reason: impl Into<Text>) -> Event {
    let (model, version) = ctx.model_target();
    Event {
        kind,
        request_id: Some(ctx.request_id().clone()),
        client: Some(ctx.client_ip().clone()),
        route: Some(Text::Shared(route.clone())),
        target: model.map(|m| Target::new(m, version)),
        who: ctx.principal().map(|p| p.clone() as Arc<dyn Subject>),
        credential: None,
        decision,
        reason: reason.into(),
    }
}

/// Records `event` (if auditing is on) and then goes on with `outcome`, waiting for the audit log where its
/// policy says so (fsync `always`, or a full queue with `block`).
pub fn audited<'a>(audit: Option<&Audit>, event: Event, outcome: Result<(), GatewayError>) -> Flow<'a> {
    let Some(audit) = audit else { return outcome.into() };
    match (audit.record(event), outcome) {
        (Recorded::Done, Ok(())) => Flow::Continue,
        (Recorded::Done, Err(e)) => Flow::Reject(e),
        (Recorded::Rejected, _) => Flow::Reject(GatewayError::AuditUnavailable),
        (Recorded::Wait(f), outcome) => Flow::Wait(Box::pin(async move {
            f.await.map_err(|_| GatewayError::AuditUnavailable)?;
            outcome
        })),
    }
}

/// Parses a plugin's settings with path-precise errors.
pub fn settings<T: serde::de::DeserializeOwned>(spec: &PluginSpec) -> Result<T, ConfigError> {
    modelgate_config::from_value(&spec.settings, &spec.origin.file, &spec.origin.path)
}

// === impl Phase ===

impl Phase {
    /// The phases after authenticate and authorize (which the gateway runs one by one, an OIP gRPC call's first
    /// message read between them): a route whose plugins asked for the body ([`Plugin::wants_body`]) has it
    /// buffered in [`Ctx::body`] by then — only for callers who passed authentication and authorization.
    pub const ADMISSION: [Phase; 3] = [Phase::Admit, Phase::Validate, Phase::Route];

    /// The phase's span name.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Authenticate => "authenticate",
            Phase::Authorize => "authorize",
            Phase::Admit => "admit",
            Phase::Validate => "validate",
            Phase::Route => "route",
        }
    }

    pub fn call<'a>(self, p: &'a dyn Plugin, ctx: &'a mut Ctx, req: &'a mut request::Parts) -> Flow<'a> {
        match self {
            Phase::Authenticate => p.authenticate(ctx, req),
            Phase::Authorize => p.authorize(ctx, req),
            Phase::Admit => p.admit(ctx, req),
            Phase::Validate => p.validate(ctx, req),
            Phase::Route => p.route(ctx, req),
        }
    }
}
