//! `/admin/keys`: the API key store (`identity.api_keys.file`) over HTTP, as `modelgate keys` does it on the file:
//! list (never secrets), create (the key shown once), rotate, revoke. Each change reloads the gateway at once and,
//! with `redis_revocations`, publishes a revocation to every gateway.

use std::sync::Arc;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;

use modelgate_auth::identity::apikey::{self, StoredKey};
use modelgate_config::HumanDuration;
use modelgate_pipeline::Body;
use modelgate_pipeline::error::json_error;

use super::json;
use crate::reload::Shared;

/// The body of `POST /admin/keys`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    consumer: String,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    scopes: Vec<String>,
    /// A lifetime such as `30d`; absent: never expires.
    #[serde(default)]
    expires: Option<String>,
}

/// Answers `/admin/keys[/{id}/revoke|rotate]` for an authorized caller.
pub(super) async fn endpoint(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    caller: Option<Arc<modelgate_pipeline::principal::Principal>>,
    client: std::net::SocketAddr,
    rid: &HeaderValue,
) -> Response<Body> {
    let snap = shared.snapshot.load_full();
    let Some(store) = snap.config.identity.api_keys.as_ref() else {
        return json_error(StatusCode::NOT_FOUND, "not_found", "no API key store is configured (identity.api_keys)", rid);
    };
    let file = store.file.clone();
    let path = req.uri().path().to_string();
    let parts: Vec<&str> = path.trim_start_matches("/admin/keys").split('/').filter(|p| !p.is_empty()).collect();
    let method = req.method().clone();
    let outcome = match (&method, parts.as_slice()) {
        (&Method::GET, []) => match apikey::list_in(&file) {
            Ok(keys) => return json(StatusCode::OK, &serde_json::json!({ "file": file.display().to_string(), "keys": keys })),
            Err(_) => return json(StatusCode::OK, &serde_json::json!({ "file": file.display().to_string(), "keys": [] })),
        },
        (&Method::POST, []) => {
            let body = match http_body_util::BodyExt::collect(http_body_util::Limited::new(req.into_body(), 16 * 1024)).await {
                Ok(b) => b.to_bytes(),
                Err(_) => return json_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "a key request is at most 16 KiB", rid),
            };
            create(&file, &body).map(|(key, k)| (StatusCode::CREATED, created(&key, &k, None)))
        }
        (&Method::POST, [id, "revoke"]) => apikey::revoke_in(&file, id)
            .map_err(|e| (StatusCode::NOT_FOUND, "not_found", e.to_string()))
            .map(|k| (StatusCode::OK, serde_json::json!({ "id": k.id, "consumer": k.consumer, "revoked": true }))),
        (&Method::POST, [id, "rotate"]) => rotate(&file, id).map(|(key, k, old)| (StatusCode::OK, created(&key, &k, Some(&old)))),
        (_, [] | [_, "revoke" | "rotate"]) => {
            let mut r = json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "GET or POST /admin/keys; POST …/{id}/revoke or …/{id}/rotate",
                rid,
            );
            r.headers_mut().insert(http::header::ALLOW, HeaderValue::from_static(if parts.is_empty() { "GET, POST" } else { "POST" }));
            return r;
        }
        _ => {
            return json_error(
                StatusCode::NOT_FOUND,
                "not_found",
                "key endpoints: /admin/keys, /admin/keys/{id}/revoke, /admin/keys/{id}/rotate",
                rid,
            );
        }
    };
    let (status, mut body) = match outcome {
        Ok(v) => v,
        Err((status, code, message)) => return json_error(status, code, &message, rid),
    };
    // Revoked ids reach every gateway through Redis at once; the file reload covers this one either way.
    let revoked = body["revoked"].as_bool().unwrap_or(false).then(|| body["id"].as_str().unwrap_or_default().to_string());
    let revoked = revoked.or_else(|| body["replaces"].as_str().map(str::to_string));
    if let (Some(id), Some(redis)) = (revoked, snap.config.redis.as_ref().filter(|_| store.redis_revocations))
        && let Err(e) = modelgate_auth::identity::revocations::publish(&redis.url, &redis.key_prefix, &id).await
    {
        tracing::warn!(error = %e, "cannot publish a key revocation through Redis; the key file still revokes it");
        body["warning"] = "the revocation was not published through Redis; other gateways refuse the key at their next reload".into();
    }
    if let Some(audit) = shared.audit() {
        let what = match (body["replaces"].as_str(), body["revoked"].as_bool()) {
            (Some(old), _) => format!("key_rotated:{old}->{}", body["id"].as_str().unwrap_or_default()),
            (None, Some(true)) => format!("key_revoked:{}", body["id"].as_str().unwrap_or_default()),
            _ => format!("key_created:{}", body["id"].as_str().unwrap_or_default()),
        };
        let ev = modelgate_telemetry::audit::Event {
            kind: "admin",
            client: HeaderValue::from_str(&client.ip().to_string()).ok(),
            route: Some(path.clone().into()),
            who: caller.map(|p| p as Arc<dyn modelgate_telemetry::audit::Subject>),
            decision: "ok",
            reason: format!("{what} consumer={}", body["consumer"].as_str().unwrap_or_default()).into(),
            ..Default::default()
        };
        audit.record_now(ev).await;
    }
    if let Err(errors) = shared.reload("admin_api").await {
        body["warning"] =
            format!("the key file changed, but the reload was rejected (the previous config keeps serving):\n{errors}").into();
    }
    json(status, &body)
}

type Refusal = (StatusCode, &'static str, String);

fn create(file: &std::path::Path, body: &Bytes) -> Result<(String, StoredKey), Refusal> {
    let bad = |m: String| (StatusCode::BAD_REQUEST, "invalid_request", m);
    let req: NewKey =
        serde_json::from_slice(body).map_err(|e| bad(format!("the body must be {{consumer, groups?, scopes?, expires?}}: {e}")))?;
    for (what, list) in [("groups", &req.groups), ("scopes", &req.scopes)] {
        if list.len() > 64 || list.iter().any(|s| s.is_empty() || s.len() > 128 || s.chars().any(|c| c.is_control() || c.is_whitespace())) {
            return Err(bad(format!("{what}: at most 64 names of 1 to 128 characters without spaces")));
        }
    }
    let lifetime = match req.expires.as_deref().filter(|e| !e.is_empty()) {
        Some(e) => Some(
            humantime::parse_duration(e)
                .map(HumanDuration)
                .map_err(|err| bad(format!("expires: {err}; give a lifetime such as 30d or 12h")))?,
        ),
        None => None,
    };
    apikey::create_in(file, &req.consumer, req.scopes, req.groups, lifetime).map_err(|e| bad(e.to_string()))
}

/// A new key for the consumer, scopes, groups and lifetime of key `id`, which is revoked.
fn rotate(file: &std::path::Path, id: &str) -> Result<(String, StoredKey, String), Refusal> {
    let not_found = || (StatusCode::NOT_FOUND, "not_found", format!("no key with id {id:?}"));
    let old = apikey::list_in(file).ok().and_then(|keys| keys.into_iter().find(|k| k.id == id)).ok_or_else(not_found)?;
    if old.revoked {
        return Err((StatusCode::CONFLICT, "key_revoked", format!("key {id} is revoked; create a new one instead")));
    }
    let lifetime = old.expires.as_deref().and_then(|e| {
        let (created, expires) = (humantime::parse_rfc3339(&old.created).ok()?, humantime::parse_rfc3339(e).ok()?);
        expires.duration_since(created).ok().map(HumanDuration)
    });
    let fail = |e: anyhow::Error| (StatusCode::INTERNAL_SERVER_ERROR, "key_store_failed", e.to_string());
    let (key, new) = apikey::create_in(file, &old.consumer, old.scopes.clone(), old.groups.clone(), lifetime).map_err(fail)?;
    apikey::revoke_in(file, id).map_err(fail)?;
    Ok((key, new, old.id))
}

fn created(key: &str, k: &StoredKey, replaces: Option<&str>) -> serde_json::Value {
    let mut v = serde_json::json!({
        "id": k.id, "key": key, "consumer": k.consumer, "groups": k.groups, "scopes": k.scopes,
        "created": k.created, "expires": k.expires,
        "note": "the key is shown only now; only its hash is stored",
    });
    if let Some(old) = replaces {
        v["replaces"] = old.into();
    }
    v
}
