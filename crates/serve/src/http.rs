//! The OIP v2 REST endpoints.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use tokio::net::TcpListener;

use crate::protocol::*;
use crate::repository::{Repository, RunError, Version};
use crate::validate;

/// Protocol extensions this server implements (`GET /v2`, gRPC ServerMetadata).
pub const EXTENSIONS: &[&str] = &["binary_tensor_data", "model_repository", "statistics"];

/// Largest request body accepted.
pub const MAX_REQUEST_BYTES: usize = 64 << 20;

static X_MODEL_VERSION: http::HeaderName = http::HeaderName::from_static("x-model-version");

/// Binds `addr` and serves the repository in the background with `settings` (TLS, if set); returns the bound
/// address.
pub async fn start(addr: SocketAddr, repo: Arc<Repository>, settings: modelgate_listen::Settings) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let serving = modelgate_listen::serve(listener, settings, std::future::pending(), move |_| {
        let repo = repo.clone();
        hyper::service::service_fn(move |req| {
            let repo = repo.clone();
            async move { Ok::<_, Infallible>(handle(&repo, req).await) }
        })
    });
    tokio::spawn(serving);
    Ok(local)
}

/// Routes one request.
pub async fn handle(repo: &Arc<Repository>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let get = req.method() == Method::GET;
    match (segs.as_slice(), req.method()) {
        (["v2", "health", "live"], _) if get => json(StatusCode::OK, &serde_json::json!({ "live": true })),
        (["v2", "health", "ready"], _) if get => {
            let ready = repo.ready();
            json(if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, &serde_json::json!({ "ready": ready }))
        }
        (["metrics"], _) if get => {
            let mut r = Response::new(Full::new(Bytes::from(repo.metrics.render())));
            r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"));
            r
        }
        (["v2", "repository", "index"], &Method::POST) => json(StatusCode::OK, &repo.index()),
        (["v2", "repository", "models", m, "load"], &Method::POST) => {
            let (repo, name) = (repo.clone(), m.to_string());
            match tokio::task::spawn_blocking(move || repo.load_model(&name)).await {
                Ok(Ok(model)) if model.error.is_none() && model.failed.is_empty() && !model.versions.is_empty() => {
                    json(StatusCode::OK, &serde_json::json!({}))
                }
                Ok(Ok(model)) => {
                    let reason = model
                        .error
                        .clone()
                        .or_else(|| model.failed.values().next().cloned())
                        .unwrap_or_else(|| "no version to serve".into());
                    error(StatusCode::BAD_REQUEST, format!("model {:?} failed to load: {reason}", model.name))
                }
                Ok(Err(e)) => error(StatusCode::NOT_FOUND, e.to_string()),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("load failed: {e}")),
            }
        }
        (["v2", "repository", "models", m, "unload"], &Method::POST) => match repo.unload(m) {
            true => json(StatusCode::OK, &serde_json::json!({})),
            false => error(StatusCode::NOT_FOUND, format!("model {m:?} is not loaded")),
        },
        (["predictions", m], &Method::POST) => predictions(repo, m, None, req).await,
        (["predictions", m, v], &Method::POST) => predictions(repo, m, Some(v), req).await,
        (["v2"], _) if get => json(
            StatusCode::OK,
            &ServerMetadataResponse { name: "modelgate", version: env!("CARGO_PKG_VERSION"), extensions: EXTENSIONS.to_vec() },
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
                ([], &Method::GET) => metadata(repo, &found),
                (["ready"], &Method::GET) => json(StatusCode::OK, &serde_json::json!({ "name": found.model, "ready": true })),
                (["stats"], &Method::GET) => stats(&found),
                (["infer"], &Method::POST) => infer(found, req, repo.tracer.get()).await,
                _ => error(StatusCode::NOT_FOUND, format!("no endpoint {} {path}", req.method())),
            }
        }
        _ => error(StatusCode::NOT_FOUND, format!("no endpoint {} {path}", req.method())),
    }
}

fn not_found(repo: &Repository, model: &str, version: Option<&str>) -> String {
    match (repo.model(model), version) {
        (None, _) => format!("unknown model {model:?}"),
        (Some(m), _) if m.error.is_some() => format!("model {model:?} is not served: {}", m.error.as_deref().unwrap_or_default()),
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
    let versions = repo.model(&v.model).map(|m| m.versions.keys().map(|k| k.to_string()).collect()).unwrap_or_default();
    let body = ModelMetadataResponse {
        name: v.model.clone(),
        versions,
        platform: v.plan.backend.platform(),
        inputs: specs(&v.metadata.inputs),
        outputs: specs(&v.metadata.outputs),
    };
    with_version(json(StatusCode::OK, &body), v)
}

/// `POST …/infer`. A request refused before it reaches the model (4xx: malformed, queue full) counts as a failure,
/// as Triton counts it; failed executions are counted where they run.
async fn infer(v: Arc<Version>, req: Request<Incoming>, tracer: Option<&modelgate_telemetry::Exporter>) -> Response<Full<Bytes>> {
    let trace = tracer.and_then(|t| crate::spans::Trace::begin(t, req.headers()));
    let mut timing = None;
    let resp = infer_checked(&v, req, &mut timing).await;
    if resp.status().is_client_error() {
        v.metrics.failure.inc();
    }
    if let (Some(trace), Some(tracer)) = (trace, tracer) {
        trace.finish(tracer, &v, resp.status().as_u16(), timing);
    }
    resp
}

async fn infer_checked(v: &Arc<Version>, req: Request<Incoming>, timing: &mut Option<crate::repository::Timing>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    // Binary tensor data extension: the JSON part's length in a header, raw tensors after it.
    let json_len = match headers.get(HEADER_CONTENT_LENGTH).map(|v| v.to_str().ok().and_then(|s| s.parse::<usize>().ok())) {
        None => body.len(),
        Some(Some(n)) if n <= body.len() => n,
        Some(_) => {
            return error(StatusCode::BAD_REQUEST, format!("{HEADER_CONTENT_LENGTH} must be a length within the {}-byte body", body.len()));
        }
    };
    let (json_part, binary) = body.split_at(json_len);
    let mut request: InferRequest = match serde_json::from_slice(json_part) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid inference request: {e}")),
    };
    let (inputs, wanted) = match validate::inputs(&mut request, &v.metadata, binary) {
        Ok(x) => x,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.0),
    };
    let binary_default =
        request.parameters.as_ref().and_then(|p| p.get("binary_data_output")).and_then(ParameterValue::as_bool).unwrap_or(false);
    let binary_for = |name: &str| {
        request
            .outputs
            .as_ref()
            .and_then(|outs| outs.iter().find(|o| o.name == name))
            .and_then(|o| o.parameters.as_ref())
            .and_then(|p| p.get("binary_data"))
            .and_then(ParameterValue::as_bool)
            .unwrap_or(binary_default)
    };
    // The request parameter `timeout` (µs, as Triton's) counts queue time: a request still queued when it expires
    // is dropped from the queue (its reply channel closes), one already running finishes unseen.
    let timeout = request.parameters.as_ref().and_then(|p| p.get("timeout")).and_then(ParameterValue::as_u64);
    let run = v.infer_timed(inputs);
    let result = match timeout {
        Some(us) => match tokio::time::timeout(std::time::Duration::from_micros(us), run).await {
            Ok(r) => r,
            Err(_) => return error(StatusCode::GATEWAY_TIMEOUT, format!("the request's timeout of {us} µs expired (queue time included)")),
        },
        None => run.await,
    };
    let outputs = match result {
        Ok((o, t)) => {
            *timing = Some(t);
            o
        }
        Err(e) => return run_error(e),
    };
    let mut outputs: Vec<Option<modelgate_runtime::Tensor>> = outputs.into_iter().map(Some).collect();
    let mut blobs = Vec::new();
    let mut tensors = Vec::with_capacity(wanted.len());
    for i in wanted {
        let Some(t) = outputs.get_mut(i).and_then(Option::take) else { continue };
        let spec = &v.metadata.outputs[i];
        let (out, raw) = validate::output(spec, t, binary_for(&spec.name));
        tensors.push(out);
        blobs.extend(raw);
    }
    let body = InferResponse { model_name: v.model.clone(), model_version: v.version.clone(), id: request.id, outputs: tensors };
    if blobs.is_empty() {
        return with_version(json(StatusCode::OK, &body), v);
    }
    let mut bytes = serde_json::to_vec(&body).unwrap_or_default();
    let json_len = bytes.len();
    for b in blobs {
        bytes.extend(b);
    }
    let mut r = Response::new(Full::new(Bytes::from(bytes)));
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    r.headers_mut().insert(HEADER_CONTENT_LENGTH, HeaderValue::from(json_len));
    with_version(r, v)
}

/// TorchServe-style `POST /predictions/{model}[/{version}]`: the body is a (nested) JSON array that becomes the
/// model's first input, its shape taken from the nesting (a missing dynamic batch dimension is added); the answer
/// is the first output as a nested array.
async fn predictions(repo: &Repository, model: &str, version: Option<&str>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let Some(v) = repo.find(model, version) else {
        return error(StatusCode::NOT_FOUND, not_found(repo, model, version));
    };
    let body = match read_body(req.into_body()).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let shaped: ShapedData = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("the body must be a JSON array for the model's first input: {e}")),
    };
    let [spec] = v.metadata.inputs.as_slice() else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("model {model:?} takes {} inputs; use POST /v2/models/{model}/infer", v.metadata.inputs.len()),
        );
    };
    let added_batch = shaped.shape.len() + 1 == spec.shape.len() && spec.shape.first() == Some(&-1);
    let mut shape: Vec<i64> = shaped.shape.iter().map(|&d| d as i64).collect();
    if added_batch {
        shape.insert(0, 1);
    }
    let mut request = InferRequest {
        id: None,
        parameters: None,
        inputs: vec![InputTensor {
            name: spec.name.clone(),
            shape,
            datatype: spec.datatype.as_str().into(),
            parameters: None,
            data: Some(FlatData(shaped.data)),
        }],
        outputs: None,
    };
    let (inputs, _) = match validate::inputs(&mut request, &v.metadata, &[]) {
        Ok(x) => x,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.0),
    };
    let first = match v.infer(inputs).await {
        Ok(mut o) if !o.is_empty() => o.swap_remove(0),
        Ok(_) => return error(StatusCode::INTERNAL_SERVER_ERROR, "the model returned no output".into()),
        Err(e) => return run_error(e),
    };
    let (out, _) = validate::output(&v.metadata.outputs[0], first, false);
    let flat = serde_json::to_value(&out.data).unwrap_or_default();
    let dims = if added_batch && out.shape.first() == Some(&1) { &out.shape[1..] } else { &out.shape[..] };
    let serde_json::Value::Array(values) = flat else { return error(StatusCode::INTERNAL_SERVER_ERROR, "output is not an array".into()) };
    with_version(json(StatusCode::OK, &nest(values, dims)), &v)
}

/// Rebuilds a nested JSON array of `shape` from row-major values.
fn nest(values: Vec<serde_json::Value>, shape: &[usize]) -> serde_json::Value {
    match shape {
        [] | [_] => serde_json::Value::Array(values),
        [_, rest @ ..] => {
            let chunk: usize = rest.iter().product::<usize>().max(1);
            let mut it = values.into_iter();
            let rows = (0..shape[0]).map(|_| nest(it.by_ref().take(chunk).collect(), rest)).collect();
            serde_json::Value::Array(rows)
        }
    }
}

/// The statistics extension (Triton's shape, counters only for now).
fn stats(v: &Version) -> Response<Full<Bytes>> {
    use std::sync::atomic::Ordering::Relaxed;
    let m = &v.metrics;
    let st = &m.stats;
    let success = m.success.get();
    let executed = |ns: u64| serde_json::json!({ "count": success, "ns": ns });
    let batch_stats: Vec<_> = st
        .batches
        .lock()
        .map(|b| {
            b.iter()
                .map(|(size, (count, ns))| serde_json::json!({ "batch_size": size, "compute_infer": { "count": count, "ns": ns } }))
                .collect()
        })
        .unwrap_or_default();
    let body = serde_json::json!({ "model_stats": [{
        "name": v.model,
        "version": v.version,
        "last_inference": st.last_inference_ms.load(Relaxed),
        "inference_count": m.inferences.get(),
        "execution_count": m.executions.get(),
        "inference_stats": {
            "success": executed(st.success_ns.load(Relaxed)),
            "fail": { "count": m.failure.get(), "ns": 0 },
            "queue": executed(st.queue_ns.load(Relaxed)),
            "compute_infer": executed(st.compute_ns.load(Relaxed)),
        },
        "batch_stats": batch_stats,
        "instances": v.plan.instances,
        "backend": v.plan.backend.as_str(),
        "threads": v.plan.threads,
        "batching": v.batching.map(|b| serde_json::json!({ "max_batch_size": b.max_batch_size, "max_queue_delay_us": b.max_queue_delay.as_micros() as u64 })),
    }]});
    with_version(json(StatusCode::OK, &body), v)
}

/// Reads a request body up to [`MAX_REQUEST_BYTES`]; the error is the response to send.
async fn read_body(body: Incoming) -> Result<Bytes, Response<Full<Bytes>>> {
    match Limited::new(body, MAX_REQUEST_BYTES).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            Err(error(StatusCode::PAYLOAD_TOO_LARGE, format!("request body is larger than {MAX_REQUEST_BYTES} bytes")))
        }
        Err(_) => Err(error(StatusCode::BAD_REQUEST, "the request body could not be read".into())),
    }
}

/// The response for an inference that could not run: a full queue is 503 with `Retry-After`.
fn run_error(e: RunError) -> Response<Full<Bytes>> {
    match e {
        RunError::Unsupported(m) => error(StatusCode::BAD_REQUEST, m),
        RunError::QueueFull => {
            let mut r = error(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
            r.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
        e => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
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
