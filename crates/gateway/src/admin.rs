//! The admin API, on its own listener (127.0.0.1:8081 by default): health, reload, config views.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::body::Body;
use crate::error::json_error;
use crate::reload::Shared;

pub async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let rid = HeaderValue::from_static("admin");
    let path = req.uri().path();
    let get = req.method() == Method::GET;
    let post = req.method() == Method::POST;
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

fn json(status: StatusCode, v: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(Body::full(Bytes::from(serde_json::to_vec_pretty(v).unwrap_or_default())));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}
