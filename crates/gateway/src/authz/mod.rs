//! `modelgate authz`: the gateway's phases as a decision service for the proxies teams already run. nginx
//! (`auth_request`) and Traefik (`forwardAuth`) send a check request carrying the original request's headers and
//! its method and URI in headers; the check goes through the route's authenticate → authorize → admit → (validate,
//! when a body is sent) → route phases exactly as a gateway request would, and is answered 200 with the identity
//! headers the upstream should get, or with the gateway's own refusal (401/403/429 JSON, `WWW-Authenticate`,
//! `Retry-After`, `RateLimit-*`). Nothing is forwarded from here.
//!
//! Envoy's ext_authz filter checks over gRPC (`envoy.service.auth.v3.Authorization/Check`, [`envoy`]) or over HTTP
//! (its HTTP service sends the original method and path as the check's own, which this module takes as they are).

pub mod envoy;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, Uri, request};
use hyper::body::Incoming;

use modelgate_pipeline::error::GatewayError;
use modelgate_pipeline::{Body, Ctx};

use crate::snapshot::Route;

/// nginx: `proxy_set_header X-Original-URI $request_uri;` and `X-Original-Method $request_method`.
static ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
static ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
/// Traefik's `forwardAuth` (also what many nginx setups send).
static FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
static FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
static FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// nginx's `auth_request` takes only 2xx, 401 and 403 from a check: `X-Modelgate-Deny-Status: 403` asks for every
/// other refusal as 403 with its real status in `X-Modelgate-Status` (for an `error_page` to map back).
static DENY_STATUS: HeaderName = HeaderName::from_static("x-modelgate-deny-status");
static STATUS: HeaderName = HeaderName::from_static("x-modelgate-status");

/// The request being checked: the check's method, URI and host replaced by the original's, from nginx's
/// `X-Original-*` or Traefik's `X-Forwarded-*` headers (the check's own when neither is sent, as Envoy's HTTP
/// ext_authz service sends the original method and path). The headers naming them are removed.
pub fn original_request(req: Request<Incoming>) -> Result<(Request<Incoming>, bool), GatewayError> {
    let (mut parts, body) = req.into_parts();
    let as_403 = parts.headers.remove(&DENY_STATUS).is_some_and(|v| v.as_bytes() == b"403");
    // Both names are removed; nginx's wins when both are sent.
    let take = |parts: &mut request::Parts, a: &HeaderName, b: &HeaderName| {
        let (first, second) = (parts.headers.remove(a), parts.headers.remove(b));
        first.or(second)
    };
    if let Some(m) = take(&mut parts, &ORIGINAL_METHOD, &FORWARDED_METHOD) {
        parts.method = Method::from_bytes(m.as_bytes())
            .map_err(|_| GatewayError::BadPath("the original method (X-Original-Method, X-Forwarded-Method) is not a method"))?;
    }
    if let Some(u) = take(&mut parts, &ORIGINAL_URI, &FORWARDED_URI) {
        let uri: Uri = u
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| GatewayError::BadPath("the original URI (X-Original-URI, X-Forwarded-Uri) is not a URI"))?;
        if uri.path_and_query().is_none() || uri.scheme().is_some() {
            return Err(GatewayError::BadPath("the original URI must be a path with its query, as nginx's $request_uri is"));
        }
        parts.uri = uri;
    }
    if let Some(host) = parts.headers.remove(&FORWARDED_HOST) {
        parts.headers.insert(header::HOST, host);
    }
    Ok((Request::from_parts(parts, body), as_403))
}

/// A refusal nginx would not pass on (not 401 or 403) as 403, its status in `X-Modelgate-Status`.
pub fn for_nginx(mut resp: Response<Body>) -> Response<Body> {
    let status = resp.status();
    if !status.is_success() && status != http::StatusCode::UNAUTHORIZED && status != http::StatusCode::FORBIDDEN {
        resp.headers_mut().insert(STATUS.clone(), HeaderValue::from(status.as_u16()));
        *resp.status_mut() = http::StatusCode::FORBIDDEN;
    }
    resp
}

/// What an allowed check asks the calling proxy to change on the request before it goes upstream: the headers the
/// gateway would have sent that carry who the caller is (`x-modelgate-consumer`, `-subject`, `-scopes`,
/// `-auth-method`, `-assertion`, the model version chosen, …) with any other request header the gateway would have
/// changed (a `Cookie` with the session cookie cut out), and the headers it would not have forwarded (credentials,
/// client-sent `x-modelgate-*` it does not set itself).
#[derive(Debug, Clone, Default)]
pub struct Changes {
    pub set: HeaderMap,
    pub remove: Vec<HeaderName>,
}

/// The answer to an allowed check: 200, no body, and the [`Changes`] — as headers for the proxy to copy (HTTP
/// checks: the identity headers themselves, and the names to remove in `x-envoy-auth-headers-to-remove`, which
/// Envoy's HTTP service acts on), or as a response extension that [`envoy`] makes a message's fields of.
///
/// The changes are those the gateway's own forwarding would make that matter to the upstream: client-sent
/// `x-modelgate-*` removed, then each plugin's `upstream_request` (identity headers, credentials removed, a session
/// cookie cut out). What the gateway sets for its own hop (`X-Forwarded-*`, `traceparent`) is the calling proxy's.
pub fn allowed(route: &Route, ctx: &Ctx, mut parts: request::Parts, as_message: bool) -> Response<Body> {
    let original = parts.headers.clone();
    crate::proxy::strip_identity(&mut parts.headers);
    for p in &route.plugins {
        p.upstream_request(ctx, &mut parts);
    }
    let mut changes = Changes::default();
    for name in original.keys() {
        let kept = parts.headers.contains_key(name);
        if kept && name.as_str().starts_with("x-modelgate-") {
            continue;
        }
        if !kept {
            changes.remove.push(name.clone());
        } else if !original.get_all(name).iter().eq(parts.headers.get_all(name).iter()) {
            for value in parts.headers.get_all(name) {
                changes.set.append(name.clone(), value.clone());
            }
        }
    }
    for (name, value) in &parts.headers {
        if name.as_str().starts_with("x-modelgate-") {
            changes.set.append(name.clone(), value.clone());
        }
    }
    let mut resp = Response::new(Body::empty());
    if as_message {
        resp.extensions_mut().insert(changes);
        return resp;
    }
    *resp.headers_mut() = changes.set;
    if !changes.remove.is_empty() {
        let mut removed = String::new();
        for name in &changes.remove {
            if !removed.is_empty() {
                removed.push_str(", ");
            }
            removed.push_str(name.as_str());
        }
        if let Ok(v) = HeaderValue::from_str(&removed) {
            resp.headers_mut().insert(HEADERS_TO_REMOVE.clone(), v);
        }
    }
    resp
}

/// Envoy's HTTP ext_authz service: the request headers to remove before the request goes upstream.
pub static HEADERS_TO_REMOVE: HeaderName = HeaderName::from_static("x-envoy-auth-headers-to-remove");
