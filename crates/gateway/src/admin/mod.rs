//! The admin API, on its own listener (127.0.0.1:8081 by default): health, reload, config views.

#![allow(clippy::disallowed_methods, reason = "uptime for the admin views (reported, never a timer)")]

use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use modelgate_auth::identity::apikey::{self, KeyFailure};
use modelgate_auth::identity::jwt::Check;
use modelgate_pipeline::Body;
use modelgate_pipeline::error::json_error;
use modelgate_pipeline::principal::Principal;
use modelgate_telemetry::audit::Event;
use modelgate_telemetry::metrics::{ResultLabels, TargetLabels, VersionLabels};

use crate::reload::Shared;

mod audit;
mod keys;

/// Answers one admin request: the public JWKS without a credential, everything else after [`authorize`].
pub async fn handle(shared: Arc<Shared>, req: Request<Incoming>, client: std::net::SocketAddr) -> Response<Body> {
    let rid = HeaderValue::from_static("admin");
    let path = req.uri().path();
    let get = req.method() == Method::GET;
    let post = req.method() == Method::POST;
    // Public keys are public: upstreams fetch them without an admin credential.
    if path == "/.well-known/jwks.json" && get {
        return jwks(&shared, &rid);
    }
    if path == "/console" || path.starts_with("/console/") {
        return crate::console::handle(&shared.snapshot.load_full(), req, client).await;
    }
    // A browser marking a state-changing call as cross-site (or from another origin) is refused whatever it
    // carries: another site's page cannot drive this API through a signed-in person or a loopback-open listener.
    if !get && req.method() != Method::HEAD && modelgate_auth::identity::sso::cross_site(req.headers()) {
        return json_error(StatusCode::FORBIDDEN, "csrf_failed", "state-changing admin calls are not taken from another site's page", &rid);
    }
    if path.starts_with("/admin/namespaces/") {
        return namespace_endpoint(&shared, req, client).await;
    }
    let caller = match authorize(&shared, &req, client, &rid).await {
        Ok(caller) => caller,
        Err(refused) => return refused,
    };
    if path == "/admin/keys" || path.starts_with("/admin/keys/") {
        return keys::endpoint(&shared, req, caller, client, &rid).await;
    }
    if path == "/admin/audit" && get {
        return audit::endpoint(&shared, req.uri().query(), &rid).await;
    }
    endpoint(&shared, path, req.uri().query(), get, post, &rid).await
}

/// The status listener (`admin.status_listen`): liveness, readiness and metrics, read-only, without a credential.
/// Ready means a config is compiled and serving (it stops answering when the gateway drains at shutdown).
pub fn status<B>(shared: &Shared, req: &Request<B>) -> Response<Body> {
    let rid = HeaderValue::from_static("status");
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = json_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "use GET", &rid);
        r.headers_mut().insert(http::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match req.uri().path() {
        "/status/live" => json(StatusCode::OK, &serde_json::json!({ "status": "live" })),
        "/status/ready" => {
            json(StatusCode::OK, &serde_json::json!({ "status": "ready", "config_version": shared.snapshot.load().config.meta.hash }))
        }
        "/metrics" => metrics(shared),
        _ => json_error(StatusCode::NOT_FOUND, "not_found", "status endpoints: /status/live, /status/ready, /metrics", &rid),
    }
}

/// `GET /metrics` (admin and status listeners): the Prometheus text exposition, gauges refreshed first.
fn metrics(shared: &Shared) -> Response<Body> {
    refresh_metrics(shared);
    let mut r = Response::new(Body::full(Bytes::from(shared.snapshot.load().observe.families.render())));
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    r
}

/// The gateway's assertion signing keys as a JWK set.
fn jwks(shared: &Shared, rid: &HeaderValue) -> Response<Body> {
    match &shared.snapshot.load().identity.assertion {
        Some(signer) => {
            let mut r = Response::new(Body::full(signer.jwks()));
            r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/jwk-set+json"));
            r.headers_mut().insert(http::header::CACHE_CONTROL, HeaderValue::from_static("max-age=60"));
            r
        }
        None => json_error(StatusCode::NOT_FOUND, "not_found", "identity assertions are not configured (identity.assertion)", rid),
    }
}

/// Checks the caller's admin credential and audits the decision (refusals, and every POST); `Err` is the answer.
async fn authorize(
    shared: &Shared,
    req: &Request<Incoming>,
    client: std::net::SocketAddr,
    rid: &HeaderValue,
) -> Result<Option<Arc<Principal>>, Response<Body>> {
    let path = req.uri().path();
    let post = req.method() == Method::POST;
    let caller = match admin_caller(shared, req).await {
        Ok(c) => c,
        Err(reason) => {
            if let Some(audit) = shared.audit() {
                let ev = Event {
                    kind: "admin",
                    client: HeaderValue::from_str(&client.ip().to_string()).ok(),
                    route: Some(path.to_string().into()),
                    decision: "deny",
                    reason: reason.into(),
                    ..Default::default()
                };
                audit.record_now(ev).await;
            }
            if reason == "not_an_admin" {
                return Err(json_error(StatusCode::FORBIDDEN, "forbidden", "this caller may not use the admin API", rid));
            }
            if reason == CSRF_FAILED {
                return Err(csrf_refusal(rid));
            }
            let mut r =
                json_error(StatusCode::UNAUTHORIZED, "unauthenticated", "the admin API needs an admin credential (API key or token)", rid);
            r.headers_mut().insert(http::header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"modelgate-admin\""));
            return Err(r);
        }
    };
    if post && let Some(audit) = shared.audit() {
        let ev = Event {
            kind: "admin",
            client: HeaderValue::from_str(&client.ip().to_string()).ok(),
            route: Some(path.to_string().into()),
            who: caller.clone().map(|p| p as Arc<dyn modelgate_telemetry::audit::Subject>),
            decision: "allow",
            reason: format!("POST {path}").into(),
            ..Default::default()
        };
        audit.record_now(ev).await;
    }
    Ok(caller)
}

/// The admin endpoints, for an authorized caller.
async fn endpoint(shared: &Arc<Shared>, path: &str, query: Option<&str>, get: bool, post: bool, rid: &HeaderValue) -> Response<Body> {
    match path {
        "/admin/health" if get => json(
            StatusCode::OK,
            &serde_json::json!({
                "status": "ok",
                "config_version": shared.snapshot.load().config.meta.hash,
            }),
        ),
        "/admin/reload" if post => match shared.reload("admin_api").await {
            Ok(version) => json(StatusCode::OK, &serde_json::json!({ "status": "reloaded", "version": version })),
            Err(errors) => json(
                StatusCode::UNPROCESSABLE_ENTITY,
                &serde_json::json!({ "error": {
                    "code": "config_invalid",
                    "message": format!("the new config was rejected; the previous config keeps serving:\n{errors}"),
                    "details": errors,
                    "request_id": "admin",
                }}),
            ),
        },
        "/metrics" if get => metrics(shared),
        "/admin/routes" if get => {
            let snap = shared.snapshot.load();
            let started = snap.observe.started.unwrap_or_else(std::time::Instant::now);
            let routes: Vec<_> = snap
                .routes
                .iter()
                .zip(&snap.observe.routes)
                .map(|(r, s)| {
                    let plugins: Vec<_> = r
                        .plugins
                        .iter()
                        .zip(&r.plugins_from)
                        .map(|(p, from)| serde_json::json!({ "name": p.name(), "from": from }))
                        .collect();
                    serde_json::json!({
                        "name": r.name,
                        "match": r.described_match,
                        "policy": r.described_policy,
                        "upstream": r.upstream.as_ref().map(|u| u.name()),
                        "plugins": plugins,
                        "live": s.view(started),
                    })
                })
                .collect();
            json(StatusCode::OK, &serde_json::json!({ "routes": routes }))
        }
        "/admin/models" if get => {
            let snap = shared.snapshot.load();
            let started = snap.observe.started.unwrap_or_else(std::time::Instant::now);
            let models: Vec<_> = snap
                .observe
                .live
                .models(started)
                .into_iter()
                .map(|(m, v, view)| serde_json::json!({ "model": m, "model_version": v, "live": view }))
                .collect();
            json(StatusCode::OK, &serde_json::json!({ "models": models, "managed": snap.versions.view() }))
        }
        p if p.starts_with("/admin/models/") && p.contains("/rollout") => {
            let rest = &p["/admin/models/".len()..];
            let (model, action) = match rest.split_once("/rollout") {
                Some((m, "")) => (m, None),
                Some((m, a)) if a.starts_with('/') => (m, Some(&a[1..])),
                _ => return json_error(StatusCode::NOT_FOUND, "not_found", "no such admin endpoint", rid),
            };
            let snap = shared.snapshot.load_full();
            let binding = match snap.versions.rollout(model) {
                Ok(b) => b,
                Err(false) => {
                    return json_error(StatusCode::NOT_FOUND, "not_found", "no such managed model; GET /admin/models lists them", rid);
                }
                Err(true) => {
                    return json_error(
                        StatusCode::NOT_FOUND,
                        "no_rollout",
                        "this model has no rollout in its config (models.<m>.rollout)",
                        rid,
                    );
                }
            };
            match (action, get, post) {
                (None, true, _) => json(StatusCode::OK, &binding.view()),
                (Some(a), _, true) => match crate::rollout::Action::parse(a) {
                    Some(action) => match binding.act(action, "admin_api") {
                        Ok(view) => {
                            // Shared through Redis: the other gateways follow within a second.
                            binding.publish().await;
                            json(StatusCode::OK, &view)
                        }
                        Err(e) => json_error(StatusCode::CONFLICT, "rollout_conflict", &e.to_string(), rid),
                    },
                    None => {
                        json_error(StatusCode::NOT_FOUND, "not_found", "rollout actions: promote, pause, resume, rollback, restart", rid)
                    }
                },
                (None, _, _) => {
                    let mut r = json_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "use GET", rid);
                    r.headers_mut().insert(http::header::ALLOW, HeaderValue::from_static("GET"));
                    r
                }
                (Some(_), _, _) => {
                    let mut r = json_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "use POST", rid);
                    r.headers_mut().insert(http::header::ALLOW, HeaderValue::from_static("POST"));
                    r
                }
            }
        }
        p if get && p.starts_with("/admin/models/") && p.ends_with("/shadow") => {
            let model = &p["/admin/models/".len()..p.len() - "/shadow".len()];
            match shared.snapshot.load().versions.shadow_view(model) {
                Some(v) => json(StatusCode::OK, &v),
                None => json_error(StatusCode::NOT_FOUND, "not_found", "no such managed model; GET /admin/models lists them", rid),
            }
        }
        "/admin/config" if get => json(StatusCode::OK, &modelgate_config::redacted_view(&shared.snapshot.load().config.meta.sources)),
        "/admin/config/status" if get => json(StatusCode::OK, &serde_json::to_value(shared.status()).unwrap_or_default()),
        "/admin/config/history" if get => {
            let list: Vec<_> = shared
                .history()
                .into_iter()
                .map(|a| {
                    let files: Vec<_> = a.sources.iter().map(|(p, _)| p.display().to_string()).collect();
                    serde_json::json!({ "version": a.version, "at": a.at, "trigger": a.trigger, "files": files })
                })
                .collect();
            json(StatusCode::OK, &serde_json::json!({ "history": list }))
        }
        p if get && p.starts_with("/admin/config/history/") => {
            let version = &p["/admin/config/history/".len()..];
            match shared.history().into_iter().find(|a| a.version == version) {
                Some(a) => json(StatusCode::OK, &modelgate_config::redacted_view(&a.sources)),
                None => json_error(StatusCode::NOT_FOUND, "not_found", "no such config version; GET /admin/config/history lists them", rid),
            }
        }
        "/admin/config/diff" if get => {
            let param = |name: &str| query.and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')));
            let history = shared.history();
            let find = |v: Option<&str>| match v {
                Some(v) => history.iter().find(|a| a.version == v),
                None => history.first(),
            };
            match (find(param("from")), find(param("to"))) {
                (Some(from), Some(to)) if param("from").is_some() => {
                    let mut r = Response::new(Body::full(Bytes::from(config_diff(from, to))));
                    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/x-diff; charset=utf-8"));
                    r
                }
                _ => json_error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "give ?from=VERSION (and optionally &to=VERSION, default the active one) from GET /admin/config/history",
                    rid,
                ),
            }
        }
        "/admin/config/rollback" if post => {
            let version = query.and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("version="))).unwrap_or("");
            match shared.rollback(version).await {
                Ok(v) => json(StatusCode::OK, &serde_json::json!({ "status": "rolled_back", "version": v })),
                Err(e @ crate::reload::RollbackError::Unknown(_)) => json_error(StatusCode::NOT_FOUND, "not_found", &e.to_string(), rid),
                Err(crate::reload::RollbackError::Rejected(errors)) => json(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &serde_json::json!({ "error": {
                        "code": "config_invalid",
                        "message": format!("the restored files were rejected; the previous config keeps serving:\n{errors}"),
                        "details": errors,
                        "request_id": "admin",
                    }}),
                ),
                Err(e) => json_error(StatusCode::CONFLICT, "rollback_failed", &e.to_string(), rid),
            }
        }
        "/admin/upstreams" if get => {
            let snap = shared.snapshot.load();
            let mut names: Vec<_> = snap.upstreams.keys().collect();
            names.sort();
            let list: Vec<_> = names.into_iter().map(|n| snap.upstreams[n].status()).collect();
            json(StatusCode::OK, &serde_json::Value::Array(list))
        }
        "/admin/health"
        | "/admin/config"
        | "/admin/config/status"
        | "/admin/config/history"
        | "/admin/config/diff"
        | "/admin/upstreams"
        | "/admin/routes"
        | "/admin/models"
        | "/metrics" => {
            let mut r = json_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "use GET", rid);
            r.headers_mut().insert(http::header::ALLOW, HeaderValue::from_static("GET"));
            r
        }
        "/admin/reload" | "/admin/config/rollback" => {
            let mut r = json_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "use POST", rid);
            r.headers_mut().insert(http::header::ALLOW, HeaderValue::from_static("POST"));
            r
        }
        _ => json_error(StatusCode::NOT_FOUND, "not_found", "no such admin endpoint", rid),
    }
}

/// Checks the admin credential when `admin.consumers` or `admin.groups` is set: `Ok(None)` when none is asked,
/// `Ok(Some(principal))` for an API key or JWT of an admin consumer or group, `Err(reason)` otherwise.
async fn admin_caller(shared: &Shared, req: &Request<Incoming>) -> Result<Option<Arc<Principal>>, &'static str> {
    let snap = shared.snapshot.load_full();
    let (consumers, groups) = (&snap.config.admin_consumers, &snap.config.admin_groups);
    if consumers.is_empty() && groups.is_empty() {
        return Ok(None);
    }
    let p = credential(&snap, req.method(), req.headers()).await?.ok_or("missing_credentials")?;
    if !crate::console::is_admin(&snap.config, &p) {
        return Err("not_an_admin");
    }
    Ok(Some(p))
}

/// The audit reason (and error code) of a console call without its session's CSRF token.
const CSRF_FAILED: &str = "csrf_failed";

fn csrf_refusal(rid: &HeaderValue) -> Response<Body> {
    json_error(
        StatusCode::FORBIDDEN,
        CSRF_FAILED,
        "a state-changing call with the console's session cookie needs its CSRF token in x-csrf-token",
        rid,
    )
}

/// The caller an API key or a JWT (by the config's identity) says it is, with its declared groups, or the person
/// of a console session cookie (whose state-changing calls must carry the session's CSRF token); `Ok(None)`
/// without a credential, `Err(reason)` for one refused.
async fn credential(
    snap: &crate::snapshot::Snapshot,
    method: &Method,
    h: &http::HeaderMap,
) -> Result<Option<Arc<Principal>>, &'static str> {
    let bearer = h
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    let key = snap
        .identity
        .key_headers
        .iter()
        .find_map(|n| h.get(n))
        .and_then(|v| v.to_str().ok())
        .or(bearer.filter(|b| apikey::looks_like_key(b)));
    let now = std::time::SystemTime::now();
    let p = match (key, bearer) {
        (Some(key), _) => {
            let Some(store) = &snap.identity.keys else { return Err("no_key_store") };
            let p = store.check(key.trim(), now).map_err(|(f, _)| f.code())?.clone();
            if snap.identity.revocations.as_ref().is_some_and(|r| r.is_revoked(&p.credential)) {
                return Err(KeyFailure::Revoked.code());
            }
            p
        }
        (None, Some(token)) => {
            let issuers: Vec<_> = snap.identity.issuers.values().cloned().collect();
            let Some(issuer) = modelgate_auth::authenticate::pick(&issuers, token) else {
                return Err(if issuers.is_empty() { "no_issuer" } else { "wrong_issuer" });
            };
            match issuer.check(token, now) {
                Check::Ok(p) => p,
                Check::Fail(f) => return Err(f.code()),
                Check::NeedKeys => issuer.check_fetching(token).await.map_err(|f| f.code())?,
            }
        }
        (None, None) => {
            let Some((_, session)) = crate::console::session_of(snap, h) else { return Ok(None) };
            let safe = *method == Method::GET || *method == Method::HEAD;
            let token = h.get("x-csrf-token").and_then(|v| v.to_str().ok()).unwrap_or_default();
            if !safe && !modelgate_auth::identity::sso::same(token, &session.csrf) {
                return Err(CSRF_FAILED);
            }
            return Ok(Some(session.principal.clone()));
        }
    };
    Ok(Some(snap.identity.declared.apply(p)))
}

/// `/admin/namespaces/{ns}[/routes|upstreams|models/{name}]`: for the namespace's owners (and admins), with their own
/// credential whatever `admin.consumers` says; every change (dry runs too) audited with who, what and the diff.
async fn namespace_endpoint(shared: &Arc<Shared>, req: Request<Incoming>, client: std::net::SocketAddr) -> Response<Body> {
    use crate::namespaces::{Edit, Kind, NamespaceError};
    let rid = modelgate_pipeline::request_id::request_id(req.headers());
    let path = req.uri().path().to_string();
    let dry_run = req.uri().query().is_some_and(|q| q.split('&').any(|kv| kv == "dry_run=true" || kv == "dry_run=1"));
    let parts: Vec<&str> = path["/admin/namespaces/".len()..].split('/').collect();
    let history = matches!(parts.as_slice(), [_, "history"]);
    let revert = matches!(parts.as_slice(), [_, "revert"]);
    let (ns, target) = match parts.as_slice() {
        [ns] | [ns, "history" | "revert"] => (*ns, None),
        [ns, "routes", name] => (*ns, Some((Kind::Route, (*name).to_string()))),
        [ns, "upstreams", name] => (*ns, Some((Kind::Upstream, (*name).to_string()))),
        [ns, "models", name] => (*ns, Some((Kind::Model, (*name).to_string()))),
        [ns, "models", model, "versions", version] => (*ns, Some((Kind::Version, format!("{model}/{version}")))),
        _ => {
            return json_error(
                StatusCode::NOT_FOUND,
                "not_found",
                "namespace endpoints: /admin/namespaces/{ns}[/history|/revert|/routes/{name}|/upstreams/{name}|/models/{name}[/versions/{version}]]",
                &rid,
            );
        }
    };
    let snap = shared.snapshot.load_full();
    let caller = match credential(&snap, req.method(), req.headers()).await {
        Ok(Some(p)) => p,
        Err(CSRF_FAILED) => return csrf_refusal(&rid),
        Ok(None) | Err(_) => {
            let mut r = json_error(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "the namespace API needs an owner's credential (API key or token)",
                &rid,
            );
            r.headers_mut().insert(http::header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"modelgate-namespaces\""));
            return r;
        }
    };
    let event = |decision: &'static str, reason: String| Event {
        kind: "namespace",
        request_id: Some(rid.clone()),
        client: HeaderValue::from_str(&client.ip().to_string()).ok(),
        route: Some(path.clone().into()),
        who: Some(caller.clone() as Arc<dyn modelgate_telemetry::audit::Subject>),
        decision,
        reason: reason.into(),
        ..Default::default()
    };
    if !crate::namespaces::may_change(&snap.config, ns, &caller) {
        if let Some(audit) = shared.audit() {
            audit.record_now(event("deny", "not_an_owner".into())).await;
        }
        return json_error(StatusCode::FORBIDDEN, "forbidden", &format!("{} is not an owner of namespace {ns:?}", caller.consumer), &rid);
    }
    drop(snap);
    let method = req.method().clone();
    let who = caller.consumer.clone();
    let outcome = match (&method, target.as_ref().map(|(k, n)| (*k, n.as_str()))) {
        (&Method::GET, None) if history => crate::namespaces::history(shared, ns),
        (&Method::POST, None) if revert => {
            let number =
                req.uri().query().and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("change="))).and_then(|n| n.parse().ok());
            match number {
                Some(n) => crate::namespaces::revert(shared, ns, n, dry_run, &who).await,
                None => Err(NamespaceError::BadBody("give ?change=N from GET /admin/namespaces/{ns}/history".into())),
            }
        }
        (&Method::GET, None) if !revert => crate::namespaces::view(shared, ns),
        (&Method::PUT, _) if !history && !revert => {
            let body = match http_body_util::BodyExt::collect(http_body_util::Limited::new(req.into_body(), 1 << 20)).await {
                Ok(b) => b.to_bytes(),
                Err(_) => {
                    return json_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "a namespace change is at most 1 MiB", &rid);
                }
            };
            let edit = match target.as_ref().map(|(k, n)| (*k, n.as_str())) {
                Some((kind, name)) => Edit::Put(kind, name, &body),
                None => Edit::Replace(&body),
            };
            crate::namespaces::change(shared, ns, edit, dry_run, &who).await
        }
        (&Method::DELETE, Some((kind, name))) => crate::namespaces::change(shared, ns, Edit::Delete(kind, name), dry_run, &who).await,
        _ => {
            let mut r = json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "GET or PUT a namespace; PUT or DELETE its routes and upstreams",
                &rid,
            );
            r.headers_mut()
                .insert(http::header::ALLOW, HeaderValue::from_static(if target.is_some() { "PUT, DELETE" } else { "GET, PUT" }));
            return r;
        }
    };
    if method != Method::GET
        && let Some(audit) = shared.audit()
    {
        let (decision, what) = match &outcome {
            Ok(v) => ("ok", format!("{}changed: {}", if dry_run { "dry run, " } else { "" }, v["diff"].as_str().unwrap_or_default())),
            Err(NamespaceError::Refused { diff, errors, .. }) => ("failed", format!("refused ({} errors): {diff}", errors.0.len())),
            Err(e) => ("failed", e.to_string()),
        };
        audit.record_now(event(decision, format!("{method} {path}: {what}"))).await;
    }
    match outcome {
        Ok(v) => json(StatusCode::OK, &v),
        Err(e) => {
            let (status, code) = e.status_code();
            let mut body =
                serde_json::json!({ "error": { "code": code, "message": e.to_string(), "request_id": rid.to_str().unwrap_or_default() } });
            match &e {
                NamespaceError::Refused { errors, diff, verdicts } => {
                    body["error"]["details"] = serde_json::to_value(&errors.0).unwrap_or_default();
                    body["error"]["diff"] = diff.clone().into();
                    body["error"]["verdicts"] = verdicts.clone();
                }
                NamespaceError::Reload(errors) => body["error"]["details"] = serde_json::to_value(&errors.0).unwrap_or_default(),
                _ => {}
            }
            json(status, &body)
        }
    }
}

fn json(status: StatusCode, v: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(Body::full(Bytes::from(serde_json::to_vec_pretty(v).unwrap_or_default())));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// Sets the gauges read at scrape time (upstream health, config version, audit queue) from the running state.
/// A unified diff between two applied configs, file by file, over their redacted views (secrets never shown;
/// comments and formatting are not compared).
fn config_diff(from: &crate::reload::Applied, to: &crate::reload::Applied) -> String {
    let (a, b) = (modelgate_config::redacted_view(&from.sources), modelgate_config::redacted_view(&to.sources));
    let empty = serde_json::Map::new();
    let (a, b) = (a.as_object().unwrap_or(&empty), b.as_object().unwrap_or(&empty));
    let mut files: Vec<&String> = a.keys().chain(b.keys()).collect();
    files.sort();
    files.dedup();
    let pretty = |v: Option<&serde_json::Value>| v.map(|v| serde_json::to_string_pretty(v).unwrap_or_default() + "\n").unwrap_or_default();
    let mut out = String::new();
    for f in files {
        let (old, new) = (pretty(a.get(f)), pretty(b.get(f)));
        if old != new {
            let diff = similar::TextDiff::from_lines(&old, &new);
            let header = (format!("{f} ({})", from.version), format!("{f} ({})", to.version));
            out.push_str(&diff.unified_diff().context_radius(3).header(&header.0, &header.1).to_string());
        }
    }
    out
}

fn refresh_metrics(shared: &Shared) {
    let snap = shared.snapshot.load();
    let m = &*snap.observe.families;
    m.upstream_healthy.clear();
    m.upstream_in_flight.clear();
    for up in snap.upstreams.values() {
        for (i, t) in up.targets.iter().enumerate() {
            let labels = TargetLabels { upstream: up.name().to_string(), target: t.base.clone() };
            m.upstream_healthy.get_or_create(&labels).set(i64::from(up.is_healthy(i)));
            m.upstream_in_flight.get_or_create(&labels).set(up.in_flight(i) as i64);
        }
    }
    snap.versions.export(m);
    let status = shared.status();
    m.config_info.clear();
    m.config_info.get_or_create(&VersionLabels { version: status.version.clone() }).set(1);
    for (result, total) in [("success", status.reloads_succeeded), ("failure", status.reloads_failed)] {
        let c = m.config_reloads.get_or_create(&ResultLabels { result });
        c.inc_by(total.saturating_sub(c.get()));
    }
    m.audit_queue.set(shared.audit().map_or(0, |a| a.queue_depth() as i64));
    let errors = shared.audit().map_or(0, |a| a.write_errors());
    m.audit_write_errors.inc_by(errors.saturating_sub(m.audit_write_errors.get()));
}
