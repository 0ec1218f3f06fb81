//! The OIP v2 REST endpoints.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::protocol::*;
use crate::repository::{Repository, RunError, Version};
use crate::validate;

/// Largest request body accepted.
pub const MAX_REQUEST_BYTES: usize = 64 << 20;

static X_MODEL_VERSION: http::HeaderName = http::HeaderName::from_static("x-model-version");

/// Binds `addr` and serves the repository in the background; returns the bound address.
pub async fn start(addr: SocketAddr, repo: Arc<Repository>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            let repo = repo.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let repo = repo.clone();
                    async move { Ok::<_, Infallible>(handle(&repo, req).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    Ok(local)
}

/// Routes one request.
pub async fn handle(repo: &Repository, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let get = req.method() == Method::GET;
    match (segs.as_slice(), req.method()) {
        (["v2", "health", "live"], _) if get => json(StatusCode::OK, &serde_json::json!({ "live": true })),
        (["v2", "health", "ready"], _) if get => {
            let ready = repo.ready();
            json(if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, &serde_json::json!({ "ready": ready }))
        }
        (["v2"], _) if get => json(
            StatusCode::OK,
            &ServerMetadataResponse { name: "modelgate", version: env!("CARGO_PKG_VERSION"), extensions: vec![] },
        ),
        (["v2", "models", m, rest @ ..], method) => {
            let (version, rest) = match rest {
                ["versions", v, rest @ ..] => (Some(*v), rest),
                _ => (None, rest),
            };
            let Some(found) = repo.find(m, version) else {
                return error(StatusCode::NOT_FOUND, not_found(repo, m, version));
            };
            match (rest, method) {
                ([], &Method::GET) => metadata(repo, found),
                (["ready"], &Method::GET) => json(StatusCode::OK, &serde_json::json!({ "name": found.model, "ready": true })),
                (["stats"], &Method::GET) => stats(found),
                (["infer"], &Method::POST) => infer(found.clone(), req).await,
                _ => error(StatusCode::NOT_FOUND, format!("no endpoint {} {path}", req.method())),
            }
        }
        _ => error(StatusCode::NOT_FOUND, format!("no endpoint {} {path}", req.method())),
    }
}

fn not_found(repo: &Repository, model: &str, version: Option<&str>) -> String {
    match (repo.models.get(model), version) {
        (None, _) => format!("unknown model {model:?}"),
        (Some(m), Some(v)) => match v.parse::<u64>().ok().and_then(|v| m.failed.get(&v)) {
            Some(err) => format!("model {model:?} version {v} failed to load: {err}"),
            None => format!("model {model:?} has no version {v:?}"),
        },
        (Some(_), None) => format!("model {model:?} has no loaded version"),
    }
}

fn metadata(repo: &Repository, v: &Version) -> Response<Full<Bytes>> {
    let specs = |s: &[modelgate_runtime::TensorSpec]| {
        s.iter().map(|t| TensorMetadata { name: t.name.clone(), datatype: t.datatype.as_str(), shape: t.shape.clone() }).collect()
    };
    let versions = repo.models[&v.model].versions.keys().map(|k| k.to_string()).collect();
    let body = ModelMetadataResponse {
        name: v.model.clone(),
        versions,
        platform: "onnx",
        inputs: specs(&v.metadata.inputs),
        outputs: specs(&v.metadata.outputs),
    };
    with_version(json(StatusCode::OK, &body), v)
}

async fn infer(v: Arc<Version>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let body = match Limited::new(req.into_body(), MAX_REQUEST_BYTES).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            return error(StatusCode::PAYLOAD_TOO_LARGE, format!("request body is larger than {MAX_REQUEST_BYTES} bytes"));
        }
        Err(_) => return error(StatusCode::BAD_REQUEST, "the request body could not be read".into()),
    };
    let mut request: InferRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid inference request: {e}")),
    };
    let (inputs, wanted) = match validate::inputs(&mut request, &v.metadata) {
        Ok(x) => x,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.0),
    };
    let outputs = match v.infer(inputs).await {
        Ok(o) => o,
        Err(RunError::QueueFull) => {
            let mut r = error(StatusCode::SERVICE_UNAVAILABLE, RunError::QueueFull.to_string());
            r.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
            return r;
        }
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let mut outputs: Vec<Option<modelgate_runtime::Tensor>> = outputs.into_iter().map(Some).collect();
    let outputs = wanted
        .into_iter()
        .filter_map(|i| outputs.get_mut(i).and_then(Option::take).map(|t| validate::output(&v.metadata.outputs[i], t)))
        .collect();
    let body = InferResponse { model_name: v.model.clone(), model_version: v.version.clone(), id: request.id, outputs };
    with_version(json(StatusCode::OK, &body), &v)
}

/// The statistics extension (Triton's shape, counters only for now).
fn stats(v: &Version) -> Response<Full<Bytes>> {
    use std::sync::atomic::Ordering::Relaxed;
    let s = &v.stats;
    let body = serde_json::json!({ "model_stats": [{
        "name": v.model,
        "version": v.version,
        "inference_count": s.inference_count.load(Relaxed),
        "execution_count": s.execution_count.load(Relaxed),
        "inference_stats": {
            "success": { "count": s.success.load(Relaxed) },
            "fail": { "count": s.failure.load(Relaxed) },
        },
        "batching": v.batching.map(|b| serde_json::json!({ "max_batch_size": b.max_batch_size, "max_queue_delay_us": b.max_queue_delay.as_micros() as u64 })),
    }]});
    with_version(json(StatusCode::OK, &body), v)
}

fn with_version(mut r: Response<Full<Bytes>>, v: &Version) -> Response<Full<Bytes>> {
    if let Ok(h) = HeaderValue::from_str(&v.version) {
        r.headers_mut().insert(X_MODEL_VERSION.clone(), h);
    }
    r
}

fn json<T: serde::Serialize>(status: StatusCode, body: &T) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(serde_json::to_vec(body).unwrap_or_default())));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// The protocol's error shape, `{"error": "..."}`.
fn error(status: StatusCode, message: String) -> Response<Full<Bytes>> {
    json(status, &ErrorResponse { error: message })
}
