//! Observability end to end: request metrics tied to the model version that answered (parsed from the Prometheus
//! text format after known traffic) and the JSON access log, in front of the real model server.

use std::time::Duration;

use bytes::Bytes;
use http::Method;
use modelgate_test_support::{Gateway, ModelServer, create_key, eventually, get, repo_root, send};

/// Samples of the Prometheus text format: (series with labels, value).
fn samples(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.rsplit_once(' ').map(|(s, v)| (s.to_string(), v.parse::<f64>().unwrap())))
        .collect()
}

fn value(samples: &[(String, f64)], series: &str) -> f64 {
    samples.iter().find(|(s, _)| s == series).map_or(0.0, |(_, v)| *v)
}

#[tokio::test]
async fn metrics_and_access_log_tie_each_request_to_its_model_version() {
    let ms = ModelServer::start(&repo_root().join("examples/models")).await;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.yaml");
    let (a, b) = (create_key(&keys, "team-a", &[]).await, create_key(&keys, "team-b", &[]).await);
    let log = dir.path().join("access.log");
    let yaml = format!(
        r#"listen: 127.0.0.1:0
admin: {{ listen: 127.0.0.1:0 }}
observability: {{ consumer_labels: 1, access_log: {{ path: "{log}" }} }}
identity: {{ api_keys: {{ file: "{keys}" }} }}
upstreams:
  models: {{ targets: ["http://{ms}"] }}
routes:
  - name: infer
    match: {{ path: "/v2/models/{{model}}/infer", methods: [POST] }}
    upstream: models
    plugins: [ {{ auth: {{ methods: [api_key] }} }}, {{ tensor_validation: {{}} }} ]
"#,
        log = log.display(),
        keys = keys.display(),
        ms = ms.addr
    );
    let gw = Gateway::start(&yaml).await;
    let body = std::fs::read(repo_root().join("examples/digits/request.json")).unwrap();
    let url = gw.url("/v2/models/digits/infer");
    for _ in 0..3 {
        let r = send(Method::POST, &url, &[("x-api-key", &a)], body.clone()).await;
        assert_eq!((r.status.as_u16(), r.header("x-model-version")), (200, Some("1")));
    }
    assert_eq!(send(Method::POST, &url, &[("x-api-key", &b)], body.clone()).await.status, 200);
    send(Method::POST, &url, &[("x-api-key", &a)], Bytes::from_static(b"{\"inputs\": []}")).await.assert_error(400, "invalid_tensor");
    send(Method::GET, &gw.url("/nowhere"), &[], Bytes::new()).await.assert_error(404, "route_not_found");
    send(Method::POST, &url, &[], body.clone()).await.assert_error(401, "unauthenticated");
    // A made-up model name reaches the model server (404) but not a metric label: paths are the caller's to choose.
    assert_eq!(send(Method::POST, &gw.url("/v2/models/made-up-1234/infer"), &[("x-api-key", &a)], body.clone()).await.status, 404);
    assert_eq!(gw.reload().await.status, 200);

    let text = String::from_utf8(get(&gw.admin_url("/metrics")).await.body.to_vec()).unwrap();
    let s = samples(&text);
    let series = |consumer: &str, code: &str| {
        format!(r#"modelgate_requests_total{{route="infer",model="digits",model_version="1",consumer="{consumer}",code="{code}"}}"#)
    };
    assert_eq!(value(&s, &series("team-a", "2xx")), 3.0, "{text}");
    assert_eq!(value(&s, &series("other", "2xx")), 1.0, "consumer labels are bounded: team-b is `other`");
    assert_eq!(
        value(&s, r#"modelgate_requests_total{route="infer",model="digits",model_version="-",consumer="team-a",code="4xx"}"#),
        1.0,
        "{text}"
    );
    assert_eq!(value(&s, r#"modelgate_requests_total{route="-",model="-",model_version="-",consumer="-",code="4xx"}"#), 1.0);
    assert!(!text.contains("made-up-1234"), "no label from a made-up model name");
    assert_eq!(
        value(&s, r#"modelgate_requests_total{route="infer",model="other",model_version="-",consumer="team-a",code="4xx"}"#),
        1.0,
        "a model no upstream answered for counts under `other`: {text}"
    );
    assert_eq!(value(&s, r#"modelgate_request_duration_seconds_count{route="infer",model="digits",model_version="1"}"#), 4.0);
    assert_eq!(value(&s, r#"modelgate_upstream_duration_seconds_count{upstream="models",model_version="1"}"#), 4.0);
    assert!(value(&s, r#"modelgate_upstream_duration_seconds_sum{upstream="models",model_version="1"}"#) > 0.0);
    // Admission, upstream health, config and body sizes.
    assert_eq!(value(&s, r#"modelgate_auth_denied_total{route="infer",phase="authn",reason="missing_credentials"}"#), 1.0, "{text}");
    assert_eq!(value(&s, &format!(r#"modelgate_upstream_healthy{{upstream="models",target="http://{}"}}"#, ms.addr)), 1.0, "{text}");
    assert_eq!(value(&s, r#"modelgate_config_reloads_total{result="success"}"#), 1.0);
    let version = gw.version().await;
    assert_eq!(value(&s, &format!(r#"modelgate_config_info{{version="{version}"}}"#)), 1.0);
    assert!(value(&s, r#"modelgate_body_bytes_total{route="infer",direction="in"}"#) >= 4.0 * body.len() as f64);
    assert!(value(&s, r#"modelgate_body_bytes_total{route="infer",direction="out"}"#) > 0.0);
    assert_eq!(value(&s, "modelgate_audit_queue_depth"), 0.0);

    // Admin views: live rate, error rate and p99 per route and per model version, from the gateway's own counters.
    let routes = get(&gw.admin_url("/admin/routes")).await.json();
    let infer = routes["routes"].as_array().unwrap().iter().find(|r| r["name"] == "infer").unwrap().clone();
    assert_eq!(infer["upstream"], "models");
    assert_eq!(infer["live"]["requests_total"], 7, "{infer}");
    assert_eq!(infer["live"]["errors_total"], 0);
    assert!(infer["live"]["requests_per_second"].as_f64().unwrap() > 0.0 && infer["live"]["p99_ms"].as_f64().unwrap() > 0.0);
    let models = get(&gw.admin_url("/admin/models")).await.json();
    let v1 = models["models"].as_array().unwrap().iter().find(|m| m["model"] == "digits" && m["model_version"] == "1").unwrap().clone();
    assert_eq!(v1["live"]["requests_total"], 4, "{models}");

    // The access log: one JSON line per request, with the fields documented in docs/observability.md.
    let lines = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect::<Vec<_>>()
    };
    assert!(eventually(Duration::from_secs(10), || async { lines().len() == 8 }).await, "{:?}", lines());
    let all = lines();
    for l in &all {
        for field in ["time", "request_id", "client", "method", "path", "route", "model", "model_version", "status", "duration_ms"] {
            assert!(l.get(field).is_some(), "{field} missing in {l}");
        }
        let text = l.to_string();
        assert!(!text.contains(&a[16..]) && !text.contains(&b[16..]), "no key in the access log");
    }
    let ok = all.iter().filter(|l| l["status"] == 200).collect::<Vec<_>>();
    assert_eq!(ok.len(), 4);
    assert!(ok.iter().all(|l| l["model_version"] == "1" && l["upstream"] == "models" && l["upstream_ms"].as_f64().unwrap() > 0.0));
    assert!(all.iter().any(|l| l["status"] == 400 && l["error"] == "invalid_tensor" && l["consumer"] == "team-a"));
    assert!(all.iter().any(|l| l["status"] == 404 && l["error"] == "route_not_found"));
}

#[tokio::test]
async fn trace_context_is_continued_to_the_upstream_and_logged() {
    let up = modelgate_test_support::Upstream::start("u").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let yaml = format!(
        "listen: 127.0.0.1:0\nadmin: {{ listen: 127.0.0.1:0 }}\nobservability: {{ access_log: {{ path: \"{}\" }} }}\nupstreams: {{ u: {{ targets: [\"http://{}\"] }} }}\nroutes: [ {{ name: r, match: {{ path_prefix: / }}, upstream: u }} ]\n",
        log.display(),
        up.addr
    );
    let gw = Gateway::start(&yaml).await;
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let echo = send(Method::GET, &gw.url("/x"), &[("traceparent", parent), ("tracestate", "vendor=1")], Bytes::new()).await.json();
    let sent = echo["headers"]["traceparent"].as_str().unwrap().to_string();
    assert!(sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && sent.ends_with("-01"), "{sent}");
    assert_ne!(&sent[36..52], "00f067aa0ba902b7", "the gateway's hop is the upstream's parent");
    assert_eq!(echo["headers"]["tracestate"], "vendor=1");
    // No or a malformed traceparent: a new trace starts.
    let fresh = send(Method::GET, &gw.url("/y"), &[("traceparent", "00-zz-00f067aa0ba902b7-01")], Bytes::new()).await.json();
    let fresh = fresh["headers"]["traceparent"].as_str().unwrap().to_string();
    assert_eq!(fresh.len(), 55);
    assert!(!fresh.contains("4bf92f3577b34da6a3ce929d0e0e4736"));
    let lines = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(eventually(Duration::from_secs(10), || async { lines().lines().count() == 2 }).await);
    let first: serde_json::Value = serde_json::from_str(lines().lines().next().unwrap()).unwrap();
    assert_eq!(first["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
}

#[tokio::test]
async fn access_log_fields_can_be_chosen() {
    let up = modelgate_test_support::Upstream::start("u").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let yaml = |fields: &str| {
        format!(
            "listen: 127.0.0.1:0\nadmin: {{ listen: 127.0.0.1:0 }}\nobservability: {{ access_log: {{ path: \"{}\", fields: [{fields}] }} }}\nupstreams: {{ u: {{ targets: [\"http://{}\"] }} }}\nroutes: [ {{ name: r, match: {{ path_prefix: / }}, upstream: u }} ]\n",
            log.display(),
            up.addr
        )
    };
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, yaml("request_id, stauts")).unwrap();
    let out = tokio::process::Command::new(modelgate_test_support::bin()).arg("validate").arg(&bad).output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("observability.access_log.fields[1]: unknown field \"stauts\""), "{text}");
    let gw = Gateway::start(&yaml("request_id, status")).await;
    assert_eq!(send(Method::GET, &gw.url("/x"), &[("x-request-id", "pick-1")], Bytes::new()).await.status, 200);
    let lines = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(eventually(Duration::from_secs(10), || async { !lines().is_empty() }).await);
    let line: serde_json::Value = serde_json::from_str(lines().lines().next().unwrap()).unwrap();
    assert_eq!(line, serde_json::json!({ "request_id": "pick-1", "status": 200 }));
}
