//! An OTLP trace receiver for tests: the real OTLP protobuf over gRPC (`TraceService/Export`, served by the
//! generated tonic service) and over HTTP (`POST /v1/traces`), both on port 0. It keeps every span it is sent.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message as _;

const COLLECTOR_KEY: &str = "x-collector-key";

/// One received span, flattened.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// The resource's `service.name`.
    pub service: String,
    /// `grpc` or `http`: how it arrived.
    pub via: &'static str,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    /// OTLP `SpanKind` (1 internal, 2 server, 3 client).
    pub kind: i32,
    pub start_ns: u64,
    pub end_ns: u64,
    /// String, int and bool attributes rendered as strings.
    pub attributes: Vec<(String, String)>,
    /// OTLP status code (0 unset, 2 error).
    pub status: i32,
    /// The `x-collector-key` header (gRPC metadata) of the export that carried it: what a collector
    /// authenticates.
    pub collector_key: Option<String>,
}

impl ReceivedSpan {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// A running receiver.
pub struct OtlpReceiver {
    /// `http://127.0.0.1:PORT` of the gRPC endpoint.
    pub grpc: String,
    /// `http://127.0.0.1:PORT` of the HTTP endpoint.
    pub http: String,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

#[derive(Clone)]
struct Sink(Arc<Mutex<Vec<ReceivedSpan>>>, &'static str);

impl Sink {
    fn take(&self, req: ExportTraceServiceRequest, collector_key: Option<String>) {
        let mut out = self.0.lock().expect("spans");
        for rs in req.resource_spans {
            let attrs = rs.resource.map(|r| flatten(&r.attributes)).unwrap_or_default();
            let service = attrs.iter().find(|(k, _)| k == "service.name").map(|(_, v)| v.clone()).unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    out.push(ReceivedSpan {
                        service: service.clone(),
                        via: self.1,
                        trace_id: hex::encode(&s.trace_id),
                        span_id: hex::encode(&s.span_id),
                        parent_span_id: hex::encode(&s.parent_span_id),
                        name: s.name,
                        kind: s.kind,
                        start_ns: s.start_time_unix_nano,
                        end_ns: s.end_time_unix_nano,
                        attributes: flatten(&s.attributes),
                        status: s.status.map_or(0, |st| st.code),
                        collector_key: collector_key.clone(),
                    });
                }
            }
        }
    }
}

fn flatten(kvs: &[opentelemetry_proto::tonic::common::v1::KeyValue]) -> Vec<(String, String)> {
    kvs.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => s.clone(),
                Some(Value::IntValue(i)) => i.to_string(),
                Some(Value::BoolValue(b)) => b.to_string(),
                Some(Value::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let key = req.metadata().get(COLLECTOR_KEY).and_then(|v| v.to_str().ok()).map(String::from);
        self.take(req.into_inner(), key);
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

impl OtlpReceiver {
    pub async fn start() -> OtlpReceiver {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let grpc_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let http_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let grpc = format!("http://{}", grpc_listener.local_addr().expect("addr"));
        let http = format!("http://{}", http_listener.local_addr().expect("addr"));
        let service = TraceServiceServer::new(Sink(spans.clone(), "grpc"));
        let grpc_task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = grpc_listener.accept().await else { continue };
                let svc = hyper_util::service::TowerToHyperService::new(service.clone());
                tokio::spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .http2_only()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        let sink = Sink(spans.clone(), "http");
        let http_task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = http_listener.accept().await else { continue };
                let sink = sink.clone();
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let sink = sink.clone();
                    async move {
                        let key = req.headers().get(COLLECTOR_KEY).and_then(|v| v.to_str().ok()).map(String::from);
                        let ok = req.uri().path() == "/v1/traces"
                            && req.headers().get("content-type").is_some_and(|v| v == "application/x-protobuf");
                        let body = req.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                        let status = match ExportTraceServiceRequest::decode(body) {
                            Ok(r) if ok => {
                                sink.take(r, key);
                                StatusCode::OK
                            }
                            _ => StatusCode::BAD_REQUEST,
                        };
                        let mut resp =
                            Response::new(Full::new(Bytes::from(ExportTraceServiceResponse { partial_success: None }.encode_to_vec())));
                        *resp.status_mut() = status;
                        resp.headers_mut().insert("content-type", http::HeaderValue::from_static("application/x-protobuf"));
                        Ok::<_, Infallible>(resp)
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        OtlpReceiver { grpc, http, spans, tasks: vec![grpc_task, http_task] }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().expect("spans").clone()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
