//! Drives one request through the phases, in this fixed order (the diagram in `docs/architecture.md`):
//!
//! (door) → match → authenticate → (gRPC message) → authorize → (read body) → admit → validate → route → proxy →
//! respond → log
//!
//! - **route**: [`crate::versions`] picks a managed model's version right after admit (so validate checks that
//!   version's inputs), then the route hooks run; a request sampled for a shadow version is read whole (known
//!   length, at most the shadow's `max_body`) and copied there beside the proxy step ([`crate::shadow`]).
//!
//! - **door** (here): past `server.max_in_flight` requests in flight, shed with 503 `overloaded` before any work.
//! - **match** (here): the path is normalized ([`modelgate_pipeline::path`]) and the route found ([`crate::router`]).
//! - **authenticate … route**: the route's plugins, phase by phase, in config order ([`run_phases`]). Between
//!   authenticate and authorize, an OIP gRPC call's first message is read ([`crate::grpc`]): the model it names
//!   is what authorize decides on.
//! - **proxy**: [`crate::proxy`] prepares the request and sends it upstream.
//! - **respond** (here): the upstream's answer or the gateway's error; buffered response inspection, the
//!   `x-model-version` lineage header ([`crate::observe::lineage`]), headers plugins asked for, the plugins'
//!   `response` hooks, `x-request-id`.
//! - **log** (here): metrics, live stats, access log and spans ([`crate::observe::record`]), then plugins' `log`.

#![allow(
    clippy::disallowed_methods,
    reason = "phase timings are span timestamps: std instants, mapped to wall time by the telemetry clock"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::header::{self, HeaderValue};
use http::{Request, Response, request};
use http_body::Body as _;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use modelgate_pipeline::context::Arrival;
use modelgate_pipeline::grpc::Rpc;
use modelgate_pipeline::path::normalize;
use modelgate_pipeline::peer::Peer;
use modelgate_pipeline::request_id::{X_REQUEST_ID, request_id};
use modelgate_pipeline::{Body, Ctx, Flow, GatewayError, HeaderEdits, Phase};
use modelgate_telemetry::request::TraceContext;

use crate::proxy::ClientBody;
use crate::snapshot::{Route, Snapshot};

/// Handles one client request on the snapshot current when it arrived.
/// What the proxy listener does with a request: forward it (`modelgate gateway`), or answer an external proxy's
/// check of it (`modelgate authz`: nginx `auth_request`, Traefik `forwardAuth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Proxy,
    Check,
    /// A check from Envoy's gRPC ext_authz ([`crate::authz::envoy`]): as `Check`, answered as a message.
    EnvoyCheck,
}

pub async fn handle(snap: Arc<Snapshot>, req: Request<Incoming>, peer: Peer, mode: Mode) -> Response<Body> {
    // The sign-in pages of `oidc_session` routes, when single sign-on is configured (before any route).
    let req = if req.uri().path().starts_with("/.modelgate/") {
        match crate::console::routes_entry(&snap, req, peer.addr).await {
            Ok(page) => return page,
            Err(req) => req,
        }
    } else {
        req
    };
    let (req, as_403) = match mode {
        Mode::Proxy | Mode::EnvoyCheck => (req, false),
        Mode::Check => match crate::authz::original_request(req) {
            Ok(checked) => checked,
            Err(e) => return e.into_response(&request_id(&http::HeaderMap::new()), false),
        },
    };
    let (parts, body) = req.into_parts();
    let answer = phases(&snap, (parts, ClientBody::Stream(body)), None, peer, mode).await;
    // Recorded with its real status; nginx is told in a way it passes on.
    if as_403 { crate::authz::for_nginx(answer) } else { answer }
}

/// The decision on a request given by its head, as `modelgate authz` makes it for a check without a body: every
/// phase from match to log, answered 200 with the identity headers or with the refusal. What `benches/check.rs`
/// measures: a check's cost without the HTTP exchange around it.
pub async fn decide(snap: &Snapshot, parts: request::Parts, peer: Peer) -> Response<Body> {
    phases(snap, (parts, ClientBody::Buffered), None, peer, Mode::Check).await
}

/// Takes one request through every phase, from match to log. `body` is the client's stream, or, for an Envoy check
/// ([`crate::authz::envoy`]), [`ClientBody::Buffered`] with the body the check handed over whole in `given`.
pub(crate) async fn phases(
    snap: &Snapshot,
    (parts, body): (request::Parts, ClientBody),
    given: Option<bytes::Bytes>,
    peer: Peer,
    mode: Mode,
) -> Response<Body> {
    let trace = TraceContext::from_request(&parts.headers, snap.observe.tracer.as_deref(), modelgate_telemetry::random128);
    let bytes_in = match (&body, &given) {
        (ClientBody::Stream(b), _) => b.size_hint().exact(),
        (_, Some(g)) => Some(g.len() as u64),
        _ => Some(0),
    };
    let mut ctx = Ctx::new(Arrival {
        request_id: request_id(&parts.headers),
        client_addr: peer.addr,
        client_ip: peer.ip,
        tls: peer.tls,
        // gRPC is HTTP/2 only: HTTP/1.1 requests skip the header lookup.
        grpc: parts.version == http::Version::HTTP_2 && modelgate_pipeline::grpc::is_grpc(&parts.headers),
        client_cert: peer.client_cert,
        method: parts.method.clone(),
        bytes_in,
        timings: (trace.sampled() && snap.observe.tracer.is_some()).then(Default::default),
        trace,
    });
    if let Some(given) = given.filter(|g| !g.is_empty()) {
        let json_len = modelgate_pipeline::oip::header_length(&parts.headers);
        ctx.set_body(given, json_len);
    }
    let mut error = None;
    let resp = match run(snap, &mut ctx, parts, body, mode).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(request_id = ?ctx.request_id(), code = e.code(), "request rejected");
            error = Some(e.code());
            e.into_response(ctx.request_id(), ctx.is_grpc())
        }
    };
    let (mut parts, body) = resp.into_parts();
    let route = ctx.route().map(|i| &snap.routes[i]);

    // respond
    ctx.move_response_headers(&mut parts.headers);
    let lineage = crate::observe::lineage(&ctx, &mut parts);
    for p in route.map_or(&[][..], |r| &r.plugins) {
        p.response(&ctx, &mut parts);
    }
    parts.headers.insert(X_REQUEST_ID.clone(), ctx.request_id().clone());

    // log
    let server_span = crate::observe::record(&snap.observe, route.map(|r| r.name.as_str()), &ctx, &parts, error, &lineage);
    for p in route.map_or(&[][..], |r| &r.plugins) {
        p.log(&ctx, parts.status);
    }

    let held = ctx.take_held();
    let body = if held.is_empty() { body } else { Body::Held(Box::new(body), held) };
    match server_span {
        Some(span) => Response::from_parts(parts, Body::Traced(Box::new(body), span)),
        None => Response::from_parts(parts, body),
    }
}

async fn run(
    snap: &Snapshot,
    ctx: &mut Ctx,
    mut parts: request::Parts,
    body: ClientBody,
    mode: Mode,
) -> Result<Response<Body>, GatewayError> {
    // admit at the door: past `server.max_in_flight`, shed before any work (held until the response head)
    let _admitted = Admitted::take(&snap.in_flight, snap.config.max_in_flight)?;

    // match
    let path = normalize(parts.uri.path()).map_err(GatewayError::BadPath)?;
    let mut target = String::with_capacity(path.len() + parts.uri.query().map_or(0, |q| q.len() + 1));
    target.push_str(&path);
    let path_len = target.len();
    if let Some(q) = parts.uri.query() {
        target.push('?');
        target.push_str(q);
    }
    let (route_idx, original_host) = {
        let (host, original) = host_of(&parts);
        (snap.router.find(&host, &target[..path_len], &parts.method, &parts.headers)?, original)
    };
    drop(path);
    let route = &snap.routes[route_idx];
    ctx.matched(target, path_len, route_idx, route.upstream.clone());
    if let Some(r) = &route.rewrite {
        ctx.rewrite_path(r.strip, &r.prefix);
    }
    // A managed model's version pinned by header: seen by policy (its rules' `versions`) and the route step.
    if !snap.versions.is_empty()
        && let Some(v) = parts.headers.get(&crate::observe::X_MODEL_VERSION).and_then(|v| v.to_str().ok())
        && !ctx.is_grpc()
        && ctx.path().starts_with("/v2/models/")
        && ctx.model_target().0.is_some_and(|m| snap.versions.manages(m))
        && ctx.model_target().1.is_none()
    {
        ctx.pin_version(v);
    }

    // authenticate → (an OIP gRPC call's first message) → authorize → (read the body, if a plugin asked) → admit →
    // validate → route
    run_phases(&[Phase::Authenticate], route, ctx, &mut parts).await?;
    let grpc_rpc = if ctx.is_grpc() { Rpc::of_path(ctx.path()) } else { None };
    let body = match (grpc_rpc, body) {
        (Some(rpc), ClientBody::Stream(body)) => {
            let read_from = std::time::Instant::now();
            let body = crate::grpc::read_call(rpc, ctx, body, route.grpc_max_message).await?;
            if let Some(t) = ctx.timings_mut() {
                t.phases.push(("read grpc message", read_from, std::time::Instant::now(), None));
            }
            body
        }
        // An Envoy check of a gRPC call, with the call's bytes.
        (Some(rpc), body) => {
            crate::grpc::given_call(rpc, ctx, route.grpc_max_message)?;
            body
        }
        (None, body) => body,
    };
    run_phases(&[Phase::Authorize], route, ctx, &mut parts).await?;
    // A check without the request's body (nginx and Traefik send none): nothing to read or validate.
    let bodiless = mode != Mode::Proxy && body_is_empty(&parts, &body, ctx);
    let body = match (route.buffer_body, body) {
        (Some(_), body) if bodiless => body,
        // A body handed over whole by the check (Envoy's `with_request_body`), under the same limit.
        (Some(max), ClientBody::Buffered) if ctx.body().is_some_and(|b| b.len() as u64 > max) => {
            return Err(GatewayError::PayloadTooLarge { limit: max });
        }
        (Some(max), ClientBody::Stream(body)) => {
            // One reading of the body for the plugins and the upstream: a compressed body would be checked as
            // opaque bytes here and decompressed there.
            if let Some(enc) = parts.headers.get(http::header::CONTENT_ENCODING)
                && !enc.as_bytes().eq_ignore_ascii_case(b"identity")
            {
                return Err(GatewayError::UnsupportedEncoding { encoding: String::from_utf8_lossy(enc.as_bytes()).into_owned() });
            }
            let read_from = std::time::Instant::now();
            if body.size_hint().lower() > max {
                return Err(GatewayError::PayloadTooLarge { limit: max });
            }
            ctx.set_body(read_whole(body, max).await?, modelgate_pipeline::oip::header_length(&parts.headers));
            if let Some(t) = ctx.timings_mut() {
                t.phases.push(("read body", read_from, std::time::Instant::now(), None));
            }
            ClientBody::Buffered
        }
        (_, body) => body,
    };
    run_phases(&[Phase::Admit], route, ctx, &mut parts).await?;
    // route, for managed models: the version (split or pinned), its upstream and path — before validate, which
    // checks the chosen version's inputs
    snap.versions.route(ctx, &parts.headers)?;
    let phases: &[Phase] = if bodiless { &[Phase::Route] } else { &[Phase::Validate, Phase::Route] };
    run_phases(phases, route, ctx, &mut parts).await?;
    if mode != Mode::Proxy {
        return Ok(crate::authz::allowed(route, ctx, parts, mode == Mode::EnvoyCheck));
    }
    // An admitted request sampled for a shadow version: its body's bytes are copied there.
    let copies = snap.versions.copies(ctx);
    let body = match (&copies, body) {
        (Some(_), ClientBody::Stream(body)) => {
            let body = read_whole(body, ctx.body_limit().unwrap_or(u64::MAX)).await?;
            ctx.set_body(body, modelgate_pipeline::oip::header_length(&parts.headers));
            ClientBody::Buffered
        }
        (_, body) => body,
    };

    // proxy
    let upstream = ctx.upstream().cloned().expect("set at match (a forwarding gateway refuses routes without an upstream at load)");
    crate::proxy::prepare_request(&mut parts, ctx, original_host, upstream.config.protocol);
    {
        let mut edits = HeaderEdits::default();
        for p in &route.plugins {
            p.upstream_request(ctx, &parts, &mut edits);
        }
        edits.apply(&mut parts.headers);
    }
    let copies = copies.map(|c| {
        let body = ctx.body().cloned().unwrap_or_default();
        c.launch(&parts.method, &parts.headers, body, ctx.request_id().to_str().unwrap_or_default())
    });
    let sent = std::time::Instant::now();
    let resp = crate::proxy::send(&upstream, route, ctx, parts, body, ctx.forward_target()).await;
    if let Some(t) = ctx.timings_mut() {
        t.upstream = Some((sent, std::time::Instant::now()));
    }
    let resp = resp?;
    let resp = match route.buffer_response {
        Some(max) => inspect_response(route, ctx, resp, max).await?,
        None => resp,
    };
    // The client's answer streams on; its chunks are kept for the copies' comparison.
    Ok(match copies {
        Some(pending) => pending.tee(resp),
        None => resp,
    })
}

/// The request carries no body: a `Content-Length: 0`, or neither a length nor chunked transfer; for a check that
/// hands the body over whole, none was handed over.
fn body_is_empty(parts: &request::Parts, body: &ClientBody, ctx: &Ctx) -> bool {
    match body {
        ClientBody::Stream(b) => {
            b.size_hint().exact() == Some(0) || (b.is_end_stream() && !parts.headers.contains_key(header::TRANSFER_ENCODING))
        }
        ClientBody::Buffered => ctx.body().is_none_or(|b| b.is_empty()),
        ClientBody::Inspected { .. } => false,
    }
}

/// Reads a client's whole request body, refusing it past `max` bytes (413) or when the client breaks it off.
pub(crate) async fn read_whole(body: Incoming, max: u64) -> Result<bytes::Bytes, GatewayError> {
    let collected = Box::pin(Limited::new(body, usize::try_from(max).unwrap_or(usize::MAX)).collect()).await.map_err(|e| {
        match e.downcast_ref::<http_body_util::LengthLimitError>() {
            Some(_) => GatewayError::PayloadTooLarge { limit: max },
            None => GatewayError::ClientBody,
        }
    })?;
    Ok(collected.to_bytes())
}

/// Buffers an upstream response (up to `max`) for the plugins that inspect it.
async fn inspect_response(route: &Route, ctx: &Ctx, resp: Response<Body>, max: u64) -> Result<Response<Body>, GatewayError> {
    let (mut parts, body) = resp.into_parts();
    let upstream = || ctx.upstream().map(|u| u.name().to_string()).unwrap_or_default();
    if body.size_hint().lower() > max {
        return Err(GatewayError::ResponseTooLarge { limit: max });
    }
    let mut bytes = match Box::pin(Limited::new(body, max as usize).collect()).await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            return Err(GatewayError::ResponseTooLarge { limit: max });
        }
        Err(_) => return Err(GatewayError::UpstreamFailed { upstream: upstream() }),
    };
    for p in &route.plugins {
        p.inspect_response(ctx, &mut parts, &mut bytes)?;
    }
    Ok(Response::from_parts(parts, Body::full(bytes)))
}

async fn run_phases(phases: &[Phase], route: &Route, ctx: &mut Ctx, parts: &mut request::Parts) -> Result<(), GatewayError> {
    for phase in phases {
        // A route without plugins has no phases worth a span.
        let from = (ctx.timings().is_some() && !route.plugins.is_empty()).then(std::time::Instant::now);
        let mut outcome = Ok(());
        for p in &route.plugins {
            outcome = match phase.call(p.as_ref(), ctx, parts) {
                Flow::Continue => Ok(()),
                Flow::Reject(e) => Err(e),
                Flow::Wait(f) => f.await,
            };
            if outcome.is_err() {
                break;
            }
        }
        if let (Some(t), Some(from)) = (ctx.timings_mut(), from) {
            t.phases.push((phase.name(), from, std::time::Instant::now(), outcome.as_ref().err().map(GatewayError::code)));
        }
        outcome?;
    }
    Ok(())
}

/// Host used for routing (lowercase, no port) and the original header value for `X-Forwarded-Host`.
fn host_of(parts: &request::Parts) -> (std::borrow::Cow<'_, str>, Option<HeaderValue>) {
    let raw = parts.headers.get(header::HOST).and_then(|h| h.to_str().ok()).or_else(|| parts.uri.authority().map(|a| a.as_str()));
    let Some(raw) = raw else { return (std::borrow::Cow::Borrowed(""), None) };
    let original = match parts.headers.get(header::HOST) {
        Some(h) => Some(h.clone()),
        None => HeaderValue::from_str(raw).ok(),
    };
    // `[v6]:port` keeps its brackets; `name:port` loses the port (byte scans: this runs on every request).
    let end = if raw.starts_with('[') { raw.bytes().position(|b| b == b']').map(|i| i + 1) } else { raw.bytes().position(|b| b == b':') };
    let name = &raw[..end.unwrap_or(raw.len())];
    let lower = if name.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(name.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(name)
    };
    (lower, original)
}

/// A request's place among those in flight on the proxy listener; given back when dropped.
struct Admitted<'a>(&'a AtomicUsize);

impl<'a> Admitted<'a> {
    /// One uncontended-in-the-common-case atomic add; past `max`, given back at once and refused.
    fn take(in_flight: &'a AtomicUsize, max: usize) -> Result<Admitted<'a>, GatewayError> {
        if in_flight.fetch_add(1, Ordering::AcqRel) >= max {
            in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(GatewayError::Overloaded);
        }
        Ok(Admitted(in_flight))
    }
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_routing_host_is_lowercase_without_its_port() {
        let host = |h: &str| {
            let (mut parts, ()) = Request::get("/").body(()).unwrap().into_parts();
            parts.headers.insert(header::HOST, HeaderValue::from_str(h).unwrap());
            let (routed, original) = host_of(&parts);
            (routed.into_owned(), original.unwrap().to_str().unwrap().to_string())
        };
        assert_eq!(host("Models.Example:8080"), ("models.example".into(), "Models.Example:8080".into()));
        assert_eq!(host("models.example"), ("models.example".into(), "models.example".into()));
        assert_eq!(host("[::1]:8080").0, "[::1]");
        assert_eq!(host("[::1]").0, "[::1]");
        let (parts, ()) = Request::get("http://Other.Example:9/x").body(()).unwrap().into_parts();
        assert_eq!(host_of(&parts).0, "other.example", "the URI's authority when there is no Host");
    }
}
