//! The proxy step: the request prepared for the upstream (hop-by-hop and spoofed identity headers removed,
//! `X-Forwarded-*`, `x-request-id` and `traceparent` set), sent to a target of the upstream with retries on
//! another target where allowed, and the upstream's answer handed back for the respond phase.

#![allow(clippy::disallowed_methods, reason = "measures how long the upstream took (reported, never a timer)")]

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, Uri, Version, request};
use http_body::Body as _;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use modelgate_config::model::Protocol;
use modelgate_pipeline::request_id::X_REQUEST_ID;
use modelgate_pipeline::{Body, Ctx, GatewayError};
use modelgate_telemetry::TRACEPARENT;
use modelgate_upstream::body::{BoxError, ClientBodyFailed, Inspect, Inspected, Limit, UpstreamBody, find_in_chain, find_too_large};
use modelgate_upstream::pool::SendError;
use modelgate_upstream::{Transport, Upstream};

use crate::snapshot::Route;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The client's request body as the proxy step gets it.
pub enum ClientBody {
    /// Read into [`Ctx::body`] (for plugins, or a unary gRPC message).
    Buffered,
    /// Not read: streamed upstream.
    Stream(Incoming),
    /// Partly read (`head`), the rest streamed, every chunk inspected (a gRPC stream's messages).
    Inspected { head: Bytes, inner: Incoming, inspect: Box<dyn Inspect> },
}

/// Forwards the request, retrying on another target where allowed.
pub async fn send(
    up: &Upstream,
    route: &Route,
    ctx: &Ctx,
    parts: request::Parts,
    body: ClientBody,
    target: &str,
) -> Result<Response<Body>, GatewayError> {
    let cfg = &up.config;
    let retryable_method = is_idempotent(&parts.method) || route.retry_non_idempotent;
    // A retry goes to a target not yet tried, so there are never more attempts than targets.
    let mut attempts = if retryable_method { (1 + cfg.retry_attempts).min(up.targets.len() as u32) } else { 1 };

    let (replay, mut stream) = match attempt_body(ctx, body, attempts > 1, cfg.retry_max_body).await? {
        Sendable::Replay(b) => (Some(b), None),
        Sendable::Stream(inner) => {
            attempts = 1;
            (None, Some(inner))
        }
    };

    // Origin-form URI for HTTP/1.1 targets, parsed once for all attempts.
    let origin: Uri = target.parse().map_err(|_| GatewayError::BadPath("the path cannot be forwarded"))?;
    let mut tried = 0u64;
    let mut last_err = None;
    let mut headers = Some(parts.headers);
    for attempt in 0..attempts {
        let Some(i) = up.pick(tried) else { break };
        if i < 64 {
            tried |= 1 << i;
        }
        let last_try = attempt + 1 == attempts;
        let body = match (&replay, stream.take()) {
            (Some(b), _) => UpstreamBody::Full(b.clone()),
            (None, Some(body)) => body,
            (None, None) => break,
        };
        let mut req = Request::new(body);
        *req.method_mut() = parts.method.clone();
        *req.version_mut() = parts.version;
        *req.headers_mut() = if last_try { headers.take().unwrap_or_default() } else { headers.clone().unwrap_or_default() };

        let _slot = up.acquire(i);
        let asked = std::time::Instant::now();
        let outcome = tokio::time::timeout(cfg.response_timeout, exchange(up, i, req, &origin, target)).await;
        ctx.set_upstream_us(asked.elapsed().as_micros() as u64);
        match outcome {
            Err(_) => {
                up.record_failure(i);
                return Err(GatewayError::UpstreamTimeout { upstream: up.name().to_string() });
            }
            Ok(Err(Failure::TooLarge(limit))) => return Err(GatewayError::PayloadTooLarge { limit }),
            // The client's body broke mid-stream: its fault, not the target's (no failure recorded, no retry).
            Ok(Err(Failure::ClientBody)) => return Err(GatewayError::ClientBody),
            // A later message of a gRPC stream was refused by the gateway's check, not by the target.
            Ok(Err(Failure::Refused(why))) => return Err(GatewayError::InvalidRequest(why)),
            Ok(Err(failure)) => {
                up.record_failure(i);
                tracing::debug!(upstream = %up.name(), target = %up.targets[i].authority, ?failure, "upstream request failed");
                last_err = Some(match failure {
                    Failure::Connect(_) => GatewayError::UpstreamRefused { upstream: up.name().to_string() },
                    Failure::Tls(_) => GatewayError::UpstreamTls { upstream: up.name().to_string() },
                    _ => GatewayError::UpstreamFailed { upstream: up.name().to_string() },
                });
            }
            Ok(Ok(resp)) => {
                let status = resp.status().as_u16();
                if cfg.retry_on_status.contains(&status) {
                    up.record_failure(i);
                    if !last_try && replay.is_some() && up.pick(tried).is_some() {
                        continue;
                    }
                } else {
                    up.record_success(i);
                }
                let (mut rparts, rbody) = resp.into_parts();
                strip_hop_by_hop(&mut rparts.headers);
                return Ok(Response::from_parts(rparts, rbody));
            }
        }
    }
    Err(last_err.unwrap_or_else(|| GatewayError::NoHealthyUpstream { upstream: up.name().to_string() }))
}

/// The request body as the attempts send it.
enum Sendable {
    /// Sent again as is on every attempt.
    Replay(Option<Bytes>),
    /// The client's stream: sent once, so there is one attempt.
    Stream(UpstreamBody),
}

/// A body is replayable when it is empty, was buffered for a plugin, or (with `retries`) has a known length of at
/// most `max_replay` bytes, which are then read; otherwise it streams. Buffered or read bytes past the route's body
/// limit are refused here.
async fn attempt_body(ctx: &Ctx, body: ClientBody, retries: bool, max_replay: u64) -> Result<Sendable, GatewayError> {
    let limit = ctx.body_limit().map(|max| Limit { max, seen: 0 });
    let body = match body {
        ClientBody::Inspected { head, inner, inspect } => {
            return Ok(Sendable::Stream(UpstreamBody::Inspected(Box::new(Inspected { head: Some(head), inner, inspect, limit }))));
        }
        ClientBody::Buffered => None,
        ClientBody::Stream(inner) => Some(inner),
    };
    match body {
        None => {
            let buffered = ctx.body().cloned().unwrap_or_default();
            if ctx.body_limit().is_some_and(|max| buffered.len() as u64 > max) {
                return Err(GatewayError::PayloadTooLarge { limit: ctx.body_limit().unwrap_or_default() });
            }
            Ok(Sendable::Replay(Some(buffered).filter(|b| !b.is_empty())))
        }
        Some(body) if body.is_end_stream() => Ok(Sendable::Replay(None)),
        Some(body) if retries && body.size_hint().exact().is_some_and(|n| n <= max_replay) => {
            let limit = ctx.body_limit().unwrap_or(u64::MAX).min(max_replay) as usize;
            let collected = Box::pin(Limited::new(body, limit).collect()).await.map_err(|e| {
                match e.downcast_ref::<http_body_util::LengthLimitError>() {
                    Some(_) => GatewayError::PayloadTooLarge { limit: ctx.body_limit().unwrap_or(limit as u64) },
                    None => GatewayError::ClientBody,
                }
            })?;
            Ok(Sendable::Replay(Some(collected.to_bytes())))
        }
        Some(inner) => Ok(Sendable::Stream(UpstreamBody::Stream { inner, limit })),
    }
}

/// Why one exchange with a target failed.
#[derive(Debug)]
enum Failure {
    Connect(#[allow(dead_code)] BoxError),
    Tls(#[allow(dead_code)] BoxError),
    TooLarge(u64),
    ClientBody,
    Refused(String),
    Other(#[allow(dead_code)] BoxError),
}

/// One request/response exchange with target `i`.
async fn exchange(up: &Upstream, i: usize, mut req: Request<UpstreamBody>, origin: &Uri, target: &str) -> Result<Response<Body>, Failure> {
    match &up.transport {
        Transport::Http1(pool) => {
            *req.uri_mut() = origin.clone();
            match pool.send(i, &up.targets[i].authority, req).await {
                Ok(resp) => Ok(resp.map(Body::Pooled)),
                Err(SendError::Connect(e)) => Err(Failure::Connect(Box::new(e))),
                Err(SendError::Tls(e)) => Err(Failure::Tls(Box::new(e))),
                Err(SendError::Request(e)) => Err(body_failure(&e).unwrap_or_else(|| Failure::Other(Box::new(e)))),
            }
        }
        Transport::Http2(client) => {
            *req.uri_mut() = up.uri(i, target).map_err(|e| Failure::Other(Box::new(e)))?;
            match client.request(req).await {
                Ok(resp) => Ok(resp.map(Body::Upstream)),
                Err(e) if e.is_connect() => Err(Failure::Connect(Box::new(e))),
                Err(e) => Err(body_failure(&e).unwrap_or_else(|| Failure::Other(Box::new(e)))),
            }
        }
    }
}

/// A failure that came from the request body rather than the upstream: over its limit, broken by the client, or a
/// gRPC stream message the gateway refused.
fn body_failure(e: &(dyn std::error::Error + 'static)) -> Option<Failure> {
    find_too_large(e)
        .map(Failure::TooLarge)
        .or_else(|| find_in_chain::<ClientBodyFailed>(e).map(|_| Failure::ClientBody))
        .or_else(|| find_in_chain::<modelgate_pipeline::grpc::StreamRefused>(e).map(|r| Failure::Refused(r.to_string())))
}

fn is_idempotent(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE)
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1), keeping `te: trailers` which gRPC needs end to end.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
    static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
    // `connection` first (it names more to remove) and `te` last (kept when it is `trailers`); the rest between.
    let hop = [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
        &header::PROXY_AUTHORIZATION,
        &header::PROXY_AUTHENTICATE,
        &header::TRAILER,
        &PROXY_CONNECTION,
        &header::TE,
    ];
    // One pass over the (few) names first: most messages carry none of these, and a scan is far cheaper than a
    // hashed lookup per name (measured ~2.5k instructions per request before).
    if !h.keys().any(|k| hop.contains(&k)) {
        return;
    }
    if let Some(conn) = h.remove(header::CONNECTION)
        && let Ok(list) = conn.to_str()
    {
        for name in list.split(',') {
            if let Ok(n) = HeaderName::from_bytes(name.trim().as_bytes())
                && n != header::TE
            {
                h.remove(n);
            }
        }
    }
    for n in &hop[1..hop.len() - 1] {
        if h.contains_key(*n) {
            h.remove(*n);
        }
    }
    if h.get(header::TE).is_some_and(|v| v != "trailers") {
        h.remove(header::TE);
    }
}

/// What the names of the headers only the gateway sets (identity for upstreams) start with.
pub(crate) const IDENTITY_PREFIX: &str = "x-modelgate-";

/// Removes every `x-modelgate-*` header a client sent: only the gateway sets those (identity to upstreams), so an
/// upstream can trust them.
pub(crate) fn strip_identity(h: &mut HeaderMap) {
    if !h.keys().any(|k| k.as_str().starts_with(IDENTITY_PREFIX)) {
        return;
    }
    let spoofed: Vec<HeaderName> = h.keys().filter(|k| k.as_str().starts_with(IDENTITY_PREFIX)).cloned().collect();
    for n in spoofed {
        h.remove(n);
    }
}

pub fn prepare_request(parts: &mut request::Parts, ctx: &Ctx, original_host: Option<HeaderValue>, protocol: Protocol) {
    let h = &mut parts.headers;
    strip_hop_by_hop(h);
    strip_identity(h);
    if let Some(host) = original_host {
        if !h.contains_key(header::HOST) && protocol == Protocol::Http1 {
            h.insert(header::HOST, host.clone());
        }
        h.insert(X_FORWARDED_HOST.clone(), host);
    }
    let xff = match h.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) => HeaderValue::from_str(&format!("{prev}, {}", ctx.client_addr().ip())).ok(),
        None => Some(ctx.client_ip().clone()),
    };
    if let Some(v) = xff {
        h.insert(X_FORWARDED_FOR.clone(), v);
    }
    h.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(if ctx.client_tls() { "https" } else { "http" }));
    h.insert(X_REQUEST_ID.clone(), ctx.request_id().clone());
    h.insert(TRACEPARENT.clone(), ctx.trace().header());
    parts.version = match protocol {
        Protocol::Http1 => Version::HTTP_11,
        Protocol::Http2 => {
            parts.headers.remove(header::HOST);
            Version::HTTP_2
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_removed() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret-hop"));
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        h.insert("x-modelgate-consumer", HeaderValue::from_static("admin"));
        h.append("x-modelgate-consumer", HeaderValue::from_static("root"));
        h.insert("x-modelgate-scopes", HeaderValue::from_static("*"));
        strip_identity(&mut h);
        assert!(!h.keys().any(|k| k.as_str().starts_with("x-modelgate-")));
        assert!(h.get("x-secret-hop").is_none() && h.get("keep-alive").is_none() && h.get(header::CONNECTION).is_none());
        assert_eq!(h.get(header::TE).unwrap(), "trailers");
        assert!(h.get("x-kept").is_some());
    }
}
