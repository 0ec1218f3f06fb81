//! A small HTTP service standing in for a model service: `modelgate up` routes to it, and tests run it as a real
//! upstream process (`modelgate demo-upstream`). It speaks HTTP/1.1 and h2c.
//!
//! Endpoints: `GET /healthz`; `/status/{code}` answers that status; `/slow/{ms}` answers after a delay;
//! `/stream/{bytes}` streams that many bytes; `/drip/{ms}` sends the response head at once and its body after a delay; `/sink` reads the whole request body and reports its size;
//! `/echo-body` answers with the request body as received;
//! `/trailers` answers with trailers (as gRPC does); `/inference.GRPCInferenceService/ModelStreamInfer` echoes a
//! gRPC stream's messages back with `grpc-status`; `/abort` exits the process without answering; `GET /count` reports how many other requests were served;
//! `--status CODE` makes it answer everything else with that status;
//! anything else echoes the request (method, path, headers) as JSON with the upstream's name.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use tokio::net::TcpListener;

struct State {
    name: String,
    /// When set, every request except `/count` and `/healthz` is answered with this status.
    fixed_status: Option<StatusCode>,
    served: AtomicU64,
}

/// A response body made of queued frames, or a generated stream of bytes.
enum DemoBody {
    Frames(VecDeque<Frame<Bytes>>),
    Generate {
        left: u64,
    },
    /// One frame once the timer fires.
    Delayed(Pin<Box<tokio::time::Sleep>>, Option<Bytes>),
}

/// Binds `addr` and serves in the background; returns the bound address.
pub async fn start(addr: SocketAddr, name: String, fixed_status: Option<StatusCode>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let state = Arc::new(State { name, fixed_status, served: AtomicU64::new(0) });
    let serving = modelgate_listen::serve(listener, modelgate_listen::Settings::default(), std::future::pending(), move |_| {
        let state = state.clone();
        hyper::service::service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(handle(&state, req).await) }
        })
    });
    tokio::spawn(serving);
    Ok(local)
}

// Long on purpose: the demo upstream's behaviours, one match arm each, so a test's path reads as what it gets.
async fn handle(state: &State, req: Request<Incoming>) -> Response<DemoBody> {
    let path = req.uri().path().to_string();
    if path == "/count" {
        return json(StatusCode::OK, serde_json::json!({ "requests": state.served.load(Ordering::Relaxed) }));
    }
    state.served.fetch_add(1, Ordering::Relaxed);
    if let Some(status) = state.fixed_status.filter(|_| path != "/healthz") {
        return json(status, serde_json::json!({ "status": status.as_u16(), "upstream": state.name }));
    }
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    match (parts.next().unwrap_or(""), parts.next()) {
        // A crash mid-request: the process exits without answering, so the connection is reset.
        ("abort", None) => std::process::exit(3),
        ("healthz", None) => json(StatusCode::OK, serde_json::json!({ "status": "ok", "upstream": state.name })),
        ("status", Some(code)) => {
            // `/status/CODE/anything`: the rest of the path is ignored (a version's path prefix can point here).
            let code = code.split('/').next().unwrap_or_default();
            let status = code.parse().ok().and_then(|c| StatusCode::from_u16(c).ok()).unwrap_or(StatusCode::BAD_REQUEST);
            json(status, serde_json::json!({ "status": status.as_u16(), "upstream": state.name }))
        }
        ("slow", Some(ms)) => {
            // `/slow/MS/anything`: the rest of the path is ignored (a version's path prefix can point here).
            let ms = ms.split('/').next().unwrap_or_default();
            #[allow(clippy::disallowed_methods, reason = "the demo upstream answers late on purpose (/slow/MS)")]
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
            json(StatusCode::OK, serde_json::json!({ "slept_ms": ms, "upstream": state.name }))
        }
        ("drip", Some(ms)) => {
            #[allow(clippy::disallowed_methods, reason = "the demo upstream sends its body late on purpose (/drip/MS)")]
            let delay = tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0)));
            Response::new(DemoBody::Delayed(Box::pin(delay), Some(Bytes::from_static(b"dripped"))))
        }
        ("stream", Some(n)) => {
            let left = n.parse().unwrap_or(0);
            Response::new(DemoBody::Generate { left })
        }
        ("sink", None) => {
            let mut body = req.into_body();
            let mut received = 0u64;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => received += f.data_ref().map_or(0, |d| d.len() as u64),
                    Err(_) => return json(StatusCode::BAD_REQUEST, serde_json::json!({ "error": "body read failed" })),
                }
            }
            json(StatusCode::OK, serde_json::json!({ "received": received, "upstream": state.name }))
        }
        ("echo-body", None) => {
            let content_type = req.headers().get("content-type").cloned();
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => return json(StatusCode::BAD_REQUEST, serde_json::json!({ "error": "body read failed" })),
            };
            let mut r = Response::new(DemoBody::Frames(VecDeque::from([Frame::data(body)])));
            if let Some(ct) = content_type {
                r.headers_mut().insert("content-type", ct);
            }
            r
        }
        // A gRPC stream's stand-in: the request body echoed back as the response messages, then `grpc-status: 0`
        // (or 13 INTERNAL when the body broke, e.g. the gateway ended it).
        ("inference.GRPCInferenceService", Some("ModelStreamInfer")) => {
            let mut trailers = hyper::HeaderMap::new();
            let frames = match req.into_body().collect().await {
                Ok(b) => {
                    trailers.insert("grpc-status", "0".parse().expect("static"));
                    VecDeque::from([Frame::data(b.to_bytes()), Frame::trailers(trailers)])
                }
                Err(_) => {
                    trailers.insert("grpc-status", "13".parse().expect("static"));
                    VecDeque::from([Frame::trailers(trailers)])
                }
            };
            let mut r = Response::new(DemoBody::Frames(frames));
            r.headers_mut().insert("content-type", "application/grpc".parse().expect("static"));
            r
        }
        ("trailers", None) => {
            let mut trailers = hyper::HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().expect("static"));
            trailers.insert("x-upstream", state.name.parse().unwrap_or_else(|_| "demo".parse().expect("static")));
            let frames = VecDeque::from([Frame::data(Bytes::from_static(b"payload")), Frame::trailers(trailers)]);
            Response::new(DemoBody::Frames(frames))
        }
        _ => {
            let headers: serde_json::Map<String, serde_json::Value> = req
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), serde_json::Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned())))
                .collect();
            json(
                StatusCode::OK,
                serde_json::json!({
                    "upstream": state.name,
                    "method": req.method().as_str(),
                    "path": req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/"),
                    "version": format!("{:?}", req.version()),
                    "headers": headers,
                }),
            )
        }
    }
}

fn json(status: StatusCode, v: serde_json::Value) -> Response<DemoBody> {
    let mut r = Response::new(DemoBody::Frames(VecDeque::from([Frame::data(Bytes::from(v.to_string()))])));
    *r.status_mut() = status;
    r.headers_mut().insert("content-type", "application/json".parse().expect("static"));
    r
}

impl Body for DemoBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        static CHUNK: [u8; 64 * 1024] = [b'x'; 64 * 1024];
        match self.get_mut() {
            DemoBody::Frames(q) => Poll::Ready(q.pop_front().map(Ok)),
            DemoBody::Generate { left } if *left == 0 => Poll::Ready(None),
            DemoBody::Generate { left } => {
                let n = (*left).min(CHUNK.len() as u64) as usize;
                *left -= n as u64;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&CHUNK[..n])))))
            }
            DemoBody::Delayed(timer, frame) => match timer.as_mut().poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(()) => Poll::Ready(frame.take().map(|b| Ok(Frame::data(b)))),
            },
        }
    }
}
