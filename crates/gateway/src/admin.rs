//! The admin API, on its own listener (127.0.0.1:8081 by default): health, reload, config views.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::audit::Event;
use crate::body::Body;
use crate::error::json_error;
use crate::reload::Shared;

pub async fn handle(shared: Arc<Shared>, req: Request<Incoming>, client: std::net::SocketAddr) -> Response<Body> {
    let rid = HeaderValue::from_static("admin");
    let path = req.uri().path();
    let get = req.method() == Method::GET;
    let post = req.method() == Method::POST;
    // Public keys are public: upstreams fetch them without an admin credential.
    if path == "/.well-known/jwks.json" && get {
        return match &shared.snapshot.load().identity.assertion {
            Some(signer) => {
                let mut r = Response::new(Body::full(signer.jwks()));
                r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/jwk-set+json"));
                r.headers_mut().insert(http::header::CACHE_CONTROL, HeaderValue::from_static("max-age=60"));
                r
            }
            None => json_error(StatusCode::NOT_FOUND, "not_found", "identity assertions are not configured (identity.assertion)", &rid),
        };
    }
    let caller = match admin_caller(&shared, &req) {
        Ok(c) => c,
        Err(reason) => {
            if let Some(audit) = shared.audit() {
                let ev = Event { kind: "admin", client: Some(client.ip().to_string()), route: Some(path.to_string()), decision: "deny", reason: reason.into(), ..Default::default() };
                audit.record_now(ev).await;
            }
            let mut r = json_error(StatusCode::UNAUTHORIZED, "unauthenticated", "the admin API needs an admin API key", &rid);
            r.headers_mut().insert(http::header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"modelgate-admin\""));
            return r;
        }
    };
    if post && let Some(audit) = shared.audit() {
        let ev = Event {
            kind: "admin",
            client: Some(client.ip().to_string()),
            route: Some(path.to_string()),
            method: caller.as_ref().map(|_| "api_key"),
            credential: caller.as_ref().map(|(id, _)| id.clone()),
            consumer: caller.as_ref().map(|(_, c)| c.clone()),
            decision: "allow",
            reason: format!("POST {path}"),
            ..Default::default()
        };
        audit.record_now(ev).await;
    }
    match path {
        "/admin/health" if get => json(StatusCode::OK, &serde_json::json!({
            "status": "ok",
            "config_version": shared.snapshot.load().config.meta.hash,
        })),
        "/admin/reload" if post => match shared.reload("admin_api").await {
            Ok(version) => json(StatusCode::OK, &serde_json::json!({ "status": "reloaded", "version": version })),
            Err(errors) => json(StatusCode::UNPROCESSABLE_ENTITY, &serde_json::json!({ "error": {
                "code": "config_invalid",
                "message": format!("the new config was rejected; the previous config keeps serving:\n{errors}"),
                "details": errors,
                "request_id": "admin",
            }})),
        },
        "/admin/config" if get => json(StatusCode::OK, &modelgate_config::redacted_view(&shared.snapshot.load().config.meta.sources)),
        "/admin/config/status" if get => json(StatusCode::OK, &serde_json::to_value(shared.status()).unwrap_or_default()),
        "/admin/upstreams" if get => {
            let snap = shared.snapshot.load();
            let mut names: Vec<_> = snap.upstreams.keys().collect();
            names.sort();
            let list: Vec<_> = names.into_iter().map(|n| snap.upstreams[n].status()).collect();
            json(StatusCode::OK, &serde_json::Value::Array(list))
        }
        "/admin/health" | "/admin/config" | "/admin/config/status" | "/admin/upstreams" => {
            let mut r = json_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "use GET", &rid);
            r.headers_mut().insert(http::header::ALLOW, HeaderValue::from_static("GET"));
            r
        }
        "/admin/reload" => {
            let mut r = json_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "use POST", &rid);
            r.headers_mut().insert(http::header::ALLOW, HeaderValue::from_static("POST"));
            r
        }
        _ => json_error(StatusCode::NOT_FOUND, "not_found", "no such admin endpoint", &rid),
    }
}

/// Checks the admin credential when `admin.consumers` is set: `Ok(None)` when none is asked, `Ok(Some((key id,
/// consumer)))` for a good key, `Err(reason)` otherwise.
fn admin_caller(shared: &Shared, req: &Request<Incoming>) -> Result<Option<(String, String)>, &'static str> {
    let snap = shared.snapshot.load();
    let allowed = &snap.config.admin_consumers;
    if allowed.is_empty() {
        return Ok(None);
    }
    let Some(store) = &snap.identity.keys else { return Err("no_key_store") };
    let h = req.headers();
    let key = snap.identity.key_header.as_ref().and_then(|n| h.get(n)).and_then(|v| v.to_str().ok()).or_else(|| {
        h.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
    });
    let Some(key) = key else { return Err("missing_credentials") };
    let p = store.check(key.trim(), std::time::SystemTime::now()).map_err(|(f, _)| f.code())?;
    if !allowed.iter().any(|c| *c == p.consumer) {
        return Err("not_an_admin_consumer");
    }
    Ok(Some((p.credential.clone(), p.consumer.clone())))
}

fn json(status: StatusCode, v: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(Body::full(Bytes::from(serde_json::to_vec_pretty(v).unwrap_or_default())));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}
