//! Traces end to end: the gateway (OTLP/gRPC) and the model server (OTLP/HTTP) export spans to a local OTLP
//! receiver speaking the real OTLP protobuf; one request's spans form one trace, the model server's hanging under
//! the gateway's upstream call.

use std::time::Duration;

use http::Method;
use modelgate_test_support::otlp::{OtlpReceiver, ReceivedSpan};
use modelgate_test_support::{Gateway, ModelServer, create_key, eventually, repo_root, send};

/// The batch processors export every 50 ms instead of every 5 s (the SDK's standard variable).
const FAST_EXPORT: (&str, &str) = ("OTEL_BSP_SCHEDULE_DELAY", "50");

fn of_trace(spans: &[ReceivedSpan], trace_id: &str) -> Vec<ReceivedSpan> {
    spans.iter().filter(|s| s.trace_id == trace_id).cloned().collect()
}

fn named<'a>(spans: &'a [ReceivedSpan], service: &str, name: &str) -> &'a ReceivedSpan {
    spans
        .iter()
        .find(|s| s.service == service && s.name == name)
        .unwrap_or_else(|| panic!("no span {service}/{name} in {:#?}", spans.iter().map(|s| (&s.service, &s.name)).collect::<Vec<_>>()))
}

/// Waits until the receiver holds spans of `trace_id` from both services, including the gateway's server span.
async fn wait_for(rx: &OtlpReceiver, trace_id: &str, services: &[&str], server_span: &str) -> Vec<ReceivedSpan> {
    let done = eventually(Duration::from_secs(20), || async {
        let spans = of_trace(&rx.spans(), trace_id);
        services.iter().all(|svc| spans.iter().any(|s| s.service == *svc && s.kind == 2)) && spans.iter().any(|s| s.name == server_span)
    })
    .await;
    let spans = of_trace(&rx.spans(), trace_id);
    assert!(done, "spans of trace {trace_id} did not all arrive: {spans:#?}");
    spans
}

#[tokio::test]
async fn one_trace_spans_gateway_phases_and_the_model_servers_queue_and_inference() {
    let rx = OtlpReceiver::start().await;
    let ms = ModelServer::start_with(
        &repo_root().join("examples/models"),
        &["--otlp-endpoint", &rx.http, "--otlp-protocol", "http", "--trace-sample-ratio", "1"],
        &[FAST_EXPORT],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.yaml");
    let key = create_key(&keys, "team-a", &[]).await;
    let yaml = format!(
        r#"listen: 127.0.0.1:0
admin: {{ listen: 127.0.0.1:0 }}
observability:
  tracing: {{ endpoint: "{otlp}", protocol: grpc, sample_ratio: 1.0, service_name: edge, headers: {{ x-collector-key: edge-key }} }}
identity: {{ api_keys: {{ file: "{keys}" }} }}
upstreams:
  models: {{ targets: ["http://{ms}"] }}
routes:
  - name: infer
    match: {{ path: "/v2/models/{{model}}/infer", methods: [POST] }}
    upstream: models
    plugins: [ {{ auth: {{ methods: [api_key] }} }}, {{ rate_limit: {{ limits: [{{ limit: 1000, per: 1m }}] }} }}, {{ tensor_validation: {{}} }} ]
models:
  digits:
    versions: {{ "1": {{ upstream: models, state: stable, tags: {{ git: 1a2b3c }} }} }}
"#,
        otlp = rx.grpc,
        keys = keys.display(),
        ms = ms.addr
    );
    let gw = Gateway::start_with(&yaml, &[], &[FAST_EXPORT]).await;
    let body = std::fs::read(repo_root().join("examples/digits/request.json")).unwrap();
    let url = gw.url("/v2/models/digits/infer");

    // A caller's unsampled trace stays unsampled: nothing exported for it, on either side.
    let unsampled = "0af7651916cd43dd8448eb211c80319c";
    let tp = format!("00-{unsampled}-b7ad6b7169203331-00");
    assert_eq!(send(Method::POST, &url, &[("x-api-key", &key), ("traceparent", &tp)], body.clone()).await.status, 200);

    // A caller's sampled trace is continued.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let tp = format!("00-{trace}-{caller_span}-01");
    let r = send(Method::POST, &url, &[("x-api-key", &key), ("traceparent", &tp)], body.clone()).await;
    assert_eq!((r.status.as_u16(), r.header("x-model-version")), (200, Some("1")));
    let spans = wait_for(&rx, trace, &["edge", "modelgate-serve"], "POST infer").await;

    let server = named(&spans, "edge", "POST infer");
    assert_eq!(
        (server.kind, server.parent_span_id.as_str(), server.via),
        (2, caller_span, "grpc"),
        "the gateway's server span continues the caller's span"
    );
    assert_eq!(server.attr("http.route"), Some("infer"));
    assert_eq!(server.attr("http.response.status_code"), Some("200"));
    assert_eq!(
        (server.attr("modelgate.model"), server.attr("modelgate.model_version"), server.attr("modelgate.consumer")),
        (Some("digits"), Some("1"), Some("team-a"))
    );
    assert_eq!(server.attr("modelgate.model_tags"), Some(r#"{"git":"1a2b3c"}"#), "the managed version's tags");
    for phase in ["authenticate", "authorize", "read body", "admit", "validate", "route"] {
        let s = named(&spans, "edge", phase);
        assert_eq!((s.kind, s.parent_span_id.as_str()), (1, server.span_id.as_str()), "{phase} is a child of the server span");
        assert!(s.start_ns >= server.start_ns && s.end_ns <= server.end_ns, "{phase} lies within the request");
    }
    let upstream = named(&spans, "edge", "upstream");
    assert_eq!((upstream.kind, upstream.parent_span_id.as_str()), (3, server.span_id.as_str()));
    let admit = named(&spans, "edge", "admit");
    assert!(upstream.start_ns >= admit.end_ns, "the upstream call follows admission");

    // The model server's spans hang under the gateway's upstream call, and arrived over OTLP/HTTP.
    let infer = named(&spans, "modelgate-serve", "infer digits");
    assert_eq!((infer.kind, infer.parent_span_id.as_str(), infer.via), (2, upstream.span_id.as_str(), "http"));
    assert_eq!(infer.attr("modelgate.model_version"), Some("1"));
    // Both processes map their monotonic clocks to wall time; allow 1 ms for that.
    let slack = 1_000_000;
    assert!(
        infer.start_ns + slack >= upstream.start_ns && infer.end_ns <= upstream.end_ns + slack,
        "the inference lies within the upstream call: {upstream:?} {infer:?}"
    );
    let queue = named(&spans, "modelgate-serve", "queue");
    let inference = named(&spans, "modelgate-serve", "inference");
    for s in [queue, inference] {
        assert_eq!(s.parent_span_id, infer.span_id);
    }
    assert!(queue.end_ns <= inference.start_ns, "queue wait ends before the inference starts");
    assert_eq!(inference.attr("modelgate.batch_size"), Some("1"));
    assert!(spans.iter().all(|s| s.trace_id == trace), "one trace id throughout");
    assert!(
        spans.iter().filter(|s| s.service == "edge").all(|s| s.collector_key.as_deref() == Some("edge-key")),
        "the gateway's exports carry its configured headers"
    );

    // The unsampled request finished before the sampled one began; its spans would have been exported first.
    assert!(of_trace(&rx.spans(), unsampled).is_empty(), "an unsampled trace exported spans");

    // A new trace (no traceparent) starts at the gateway, sampled at ratio 1; a rejected request's span says why.
    send(Method::POST, &url, &[], body.clone()).await.assert_error(401, "unauthenticated");
    let roots = eventually(Duration::from_secs(20), || async {
        rx.spans().iter().any(|s| s.service == "edge" && s.kind == 2 && s.parent_span_id.is_empty())
    })
    .await;
    assert!(roots, "no root span for the new trace");
    let all = rx.spans();
    let root = all.iter().find(|s| s.service == "edge" && s.kind == 2 && s.parent_span_id.is_empty()).unwrap();
    assert_eq!((root.status, root.attr("http.response.status_code")), (2, Some("401")), "error status on the rejected request");
    let spans = of_trace(&all, &root.trace_id);
    let authn = named(&spans, "edge", "authenticate");
    assert_eq!(authn.status, 2, "the phase that rejected is marked");
    assert!(spans.iter().all(|s| s.name != "upstream" && s.name != "admit"), "phases after the rejection did not run");
}

/// A reload that changes `observability.tracing` moves span export to the new collector; requests keep working.
#[tokio::test]
async fn a_reload_moves_span_export_to_another_collector() {
    let (first, second) = (OtlpReceiver::start().await, OtlpReceiver::start().await);
    let up = modelgate_test_support::Upstream::start("u").await;
    let config = |endpoint: &str, protocol: &str| {
        format!(
            "listen: 127.0.0.1:0\nadmin: {{ listen: 127.0.0.1:0 }}\nobservability: {{ tracing: {{ endpoint: \"{endpoint}\", protocol: {protocol}, sample_ratio: 1.0 }} }}\nupstreams:\n  u: {{ targets: [\"http://{}\"] }}\nroutes:\n  - {{ name: all, match: {{ path_prefix: / }}, upstream: u }}\n",
            up.addr
        )
    };
    let gw = Gateway::start_with(&config(&first.grpc, "grpc"), &[], &[FAST_EXPORT]).await;
    let call = |trace: &str| {
        let tp = format!("00-{trace}-00f067aa0ba902b7-01");
        let url = gw.url("/hello");
        async move { send(Method::GET, &url, &[("traceparent", &tp)], Vec::new()).await.status }
    };
    let (t1, t2) = ("11111111111111111111111111111111", "22222222222222222222222222222222");
    assert_eq!(call(t1).await, 200);
    assert!(eventually(Duration::from_secs(20), || async { first.spans().iter().any(|s| s.trace_id == t1 && s.kind == 2) }).await);

    gw.write_config(&config(&second.http, "http"));
    assert_eq!(gw.reload().await.status, 200);
    assert_eq!(call(t2).await, 200);
    assert!(
        eventually(Duration::from_secs(20), || async { second.spans().iter().any(|s| s.trace_id == t2 && s.kind == 2 && s.via == "http") })
            .await,
        "the new collector gets the spans"
    );
    assert!(first.spans().iter().all(|s| s.trace_id != t2), "the old collector does not");
}

/// gRPC ModelInfer carries `traceparent` in its metadata: a sampled call's model-server spans (here exported over
/// OTLP/gRPC, with headers from OTEL_EXPORTER_OTLP_HEADERS) hang under the caller's span; an unsampled one exports
/// nothing.
#[tokio::test]
async fn grpc_model_infer_continues_the_callers_trace() {
    use modelgate_serve::grpc::pb::grpc_inference_service_client::GrpcInferenceServiceClient;
    use modelgate_serve::grpc::pb::{ModelInferRequest, model_infer_request::InferInputTensor};

    let rx = OtlpReceiver::start().await;
    let ms = ModelServer::start_with(
        &repo_root().join("examples/models"),
        &["--otlp-endpoint", &rx.grpc, "--otlp-protocol", "grpc", "--trace-sample-ratio", "0"],
        &[FAST_EXPORT, ("OTEL_EXPORTER_OTLP_HEADERS", "x-collector-key=serve%20key")],
    )
    .await;
    let mut client = GrpcInferenceServiceClient::connect(format!("http://{}", ms.grpc)).await.unwrap();
    let infer = |traceparent: String| {
        let input = InferInputTensor { name: "input".into(), datatype: "FP32".into(), shape: vec![1, 1, 8, 8], ..Default::default() };
        let raw = vec![0u8; 64 * 4];
        let mut req = tonic::Request::new(ModelInferRequest {
            model_name: "digits".into(),
            inputs: vec![input],
            raw_input_contents: vec![raw],
            ..Default::default()
        });
        req.metadata_mut().insert("traceparent", traceparent.parse().unwrap());
        req
    };

    let unsampled = "5ce0e9a56015fec5aadfa328ae398115";
    client.model_infer(infer(format!("00-{unsampled}-ab42124a3c573678-00"))).await.unwrap();
    // The sample ratio is 0: only the caller's sampled flag can make this trace exported.
    let (trace, caller) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    let resp = client.model_infer(infer(format!("00-{trace}-{caller}-01"))).await.unwrap().into_inner();
    assert_eq!(resp.model_version, "1");

    let arrived = eventually(Duration::from_secs(20), || async { of_trace(&rx.spans(), trace).len() >= 3 }).await;
    let spans = of_trace(&rx.spans(), trace);
    assert!(arrived, "server, queue and inference spans: {spans:#?}");
    let server = named(&spans, "modelgate-serve", "infer digits");
    assert_eq!((server.kind, server.parent_span_id.as_str(), server.via), (2, caller, "grpc"));
    assert_eq!((server.attr("modelgate.model_version"), server.attr("http.response.status_code")), (Some("1"), Some("200")));
    let (queue, inference) = (named(&spans, "modelgate-serve", "queue"), named(&spans, "modelgate-serve", "inference"));
    assert_eq!((queue.parent_span_id.as_str(), inference.parent_span_id.as_str()), (server.span_id.as_str(), server.span_id.as_str()));
    assert!(queue.end_ns <= inference.start_ns && inference.end_ns <= server.end_ns);
    // Collector credentials come from the standard OTEL_EXPORTER_OTLP_HEADERS (URL-decoded), not the command line.
    assert!(spans.iter().all(|s| s.collector_key.as_deref() == Some("serve key")), "{spans:#?}");
    // The unsampled call ended before the sampled one began; its spans would have been in an earlier export.
    assert!(of_trace(&rx.spans(), unsampled).is_empty(), "an unsampled trace exported spans");
}

/// The gateway's server span lasts until the response body has been sent, not just its head: an upstream that
/// sends its head at once and its body 300 ms later gives an upstream span (to the head) that ends early and a
/// server span of at least 300 ms.
#[tokio::test]
async fn the_server_span_covers_the_response_body() {
    let rx = OtlpReceiver::start().await;
    let up = modelgate_test_support::Upstream::start("u").await;
    let yaml = format!(
        "listen: 127.0.0.1:0\nadmin: {{ listen: 127.0.0.1:0 }}\nobservability: {{ tracing: {{ endpoint: \"{}\", sample_ratio: 1.0 }} }}\nupstreams:\n  u: {{ targets: [\"http://{}\"] }}\nroutes:\n  - {{ name: all, match: {{ path_prefix: / }}, upstream: u }}\n",
        rx.grpc, up.addr
    );
    let gw = Gateway::start_with(&yaml, &[], &[FAST_EXPORT]).await;
    let trace = "33333333333333333333333333333333";
    let r = send(Method::GET, &gw.url("/drip/300"), &[("traceparent", &format!("00-{trace}-00f067aa0ba902b7-01"))], Vec::new()).await;
    assert_eq!((r.status.as_u16(), &r.body[..]), (200, &b"dripped"[..]));
    let arrived = eventually(Duration::from_secs(20), || async { of_trace(&rx.spans(), trace).iter().any(|s| s.kind == 2) }).await;
    let spans = of_trace(&rx.spans(), trace);
    assert!(arrived, "{spans:#?}");
    let server = spans.iter().find(|s| s.kind == 2).unwrap();
    let upstream = named(&spans, &server.service, "upstream");
    assert!(server.end_ns - server.start_ns >= 300_000_000, "the server span ends with the body: {server:?}");
    assert!(upstream.end_ns < server.end_ns, "the upstream span ends at the response head: {upstream:?}");
}
