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
use modelgate_pipeline::{Body, Ctx, HeaderEdits};

use crate::proxy::IDENTITY_PREFIX as IDENTITY;
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
/// The changes are those the gateway's own forwarding makes that matter to the upstream: client-sent
/// `x-modelgate-*` removed, then each plugin's [`HeaderEdits`] (identity headers, credentials removed, a session
/// cookie cut out). What the gateway sets for its own hop (`X-Forwarded-*`, `traceparent`) is the calling proxy's.
pub fn allowed(route: &Route, ctx: &Ctx, parts: request::Parts, as_message: bool) -> Response<Body> {
    let mut edits = HeaderEdits::default();
    for p in &route.plugins {
        p.upstream_request(ctx, &parts, &mut edits);
    }
    let sent = &parts.headers;
    // Room for the identity headers and what the answer adds (request id, rate-limit headers): no growing.
    let mut changes = Changes { set: HeaderMap::with_capacity(12), remove: Vec::new() };
    // A client's `x-modelgate-*` goes, unless the gateway sets it; a removal counts for a header the client sent.
    for name in sent.keys().filter(|n| n.as_str().starts_with(IDENTITY) && !edits.is_set(n)) {
        changes.remove.push(name.clone());
    }
    for name in edits.removed().iter().filter(|n| sent.contains_key(*n) && !n.as_str().starts_with(IDENTITY)) {
        changes.remove.push(name.clone());
    }
    for (name, value) in edits.into_sets() {
        changes.set.insert(name, value);
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

#[cfg(test)]
mod tests {
    use modelgate_config::{Source, Vars};
    use modelgate_pipeline::peer::Peer;

    use crate::snapshot::{Registries, Snapshot};

    /// An allowed check's answer names exactly what the gateway's forwarding would change: its identity headers
    /// (over spoofed ones), a plugin's headers whether the client sent them or not, and the names it drops.
    #[tokio::test]
    async fn an_allowed_check_answers_what_forwarding_would_change() {
        let dir = tempfile::tempdir().unwrap();
        let (key, _) = modelgate_auth::identity::apikey::create_in(&dir.path().join("keys.yaml"), "team-a", vec![], vec![], None).unwrap();
        let yaml = "listen: 127.0.0.1:0\nadmin: { listen: 127.0.0.1:0 }\nserver: { watch: false }\n\
            identity: { api_keys: { file: keys.yaml } }\nroutes:\n  - name: checked\n    match: { path_prefix: /v2/ }\n    plugins:\n\
            \x20     - auth: { methods: [api_key] }\n\
            \x20     - headers: { request: { remove: [x-debug], set: { x-tenant: a, accept: application/json } } }\n";
        std::fs::write(dir.path().join("authz.yaml"), yaml).unwrap();
        let config = modelgate_config::load(&Source::File(dir.path().join("authz.yaml")), &Vars::default()).unwrap();
        let snap = Snapshot::compile(config, &mut Registries { checks_only: true, ..Registries::default() }).unwrap();
        let request = |headers: &[(&str, &str)]| {
            let (mut parts, ()) = http::Request::get("/v2/models/digits").body(()).unwrap().into_parts();
            for (n, v) in headers {
                parts.headers.append(http::HeaderName::from_bytes(n.as_bytes()).unwrap(), v.parse().unwrap());
            }
            parts
        };
        let sent = request(&[
            ("host", "models.example"),
            ("x-api-key", &key),
            ("x-modelgate-consumer", "admin"),
            ("x-modelgate-groups", "root"),
            ("x-debug", "1"),
            ("accept", "text/plain"),
            ("accept", "*/*"),
            ("user-agent", "curl"),
        ]);
        let answer = crate::driver::decide(&snap, sent, Peer::new("127.0.0.1:1".parse().unwrap())).await;
        assert_eq!(answer.status(), 200);
        let h = answer.headers();
        let all = |n: &str| h.get_all(n).iter().map(|v| v.to_str().unwrap()).collect::<Vec<_>>();
        assert_eq!(all("x-modelgate-consumer"), ["team-a"], "the gateway's, not the client's");
        assert_eq!(all("x-modelgate-auth-method"), ["api_key"]);
        assert_eq!(all("x-tenant"), ["a"], "set by a plugin, not sent");
        assert_eq!(all("accept"), ["application/json"], "two values sent, one set");
        let mut removed: Vec<_> = all("x-envoy-auth-headers-to-remove")[0].split(", ").collect();
        removed.sort_unstable();
        assert_eq!(removed, ["x-api-key", "x-debug", "x-modelgate-groups"]);
        for unchanged in ["host", "user-agent", "x-api-key", "x-debug", "x-modelgate-groups"] {
            assert!(h.get(unchanged).is_none(), "{unchanged} is not an answer header");
        }

        // Only what was sent is named for removal; what the plugins set is answered as set.
        let answer =
            crate::driver::decide(&snap, request(&[("x-api-key", &key), ("x-tenant", "b")]), Peer::new("127.0.0.1:1".parse().unwrap()))
                .await;
        let h = answer.headers();
        assert_eq!(h.get("x-envoy-auth-headers-to-remove").map(|v| v.to_str().unwrap()), Some("x-api-key"));
        assert_eq!((h["x-tenant"].to_str().unwrap(), h["accept"].to_str().unwrap()), ("a", "application/json"));
    }
}
