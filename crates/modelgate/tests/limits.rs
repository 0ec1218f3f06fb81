//! Traffic control end to end: `rate_limit` with the local store and with a real Redis shared by two gateways.

use std::time::Duration;

use bytes::Bytes;
use http::Method;
use modelgate_test_support::{Gateway, RedisServer, Upstream, create_key, send};

// Windows of a day: a test run does not cross a window edge (unless started within seconds of midnight UTC).
fn config(up: &str, keys: &std::path::Path, redis: Option<&str>) -> String {
    let redis_section =
        redis.map(|r| format!("redis: {{ url: \"{r}\", command_timeout: 200ms, connect_timeout: 200ms }}\n")).unwrap_or_default();
    format!(
        r#"listen: 127.0.0.1:0
admin: {{ listen: 127.0.0.1:0 }}
{redis_section}identity:
  api_keys: {{ file: "{keys}" }}
upstreams:
  u: {{ targets: ["http://{up}"] }}
routes:
  - name: local
    match: {{ path_prefix: /v2 }}
    upstream: u
    plugins:
      - auth: {{ methods: [api_key] }}
      - rate_limit: {{ limits: [ {{ limit: 3, per: 1d }}, {{ name: bytes, limit: 100, per: 1d, cost: bytes, by: [consumer, model] }} ] }}
  - name: by-ip
    match: {{ path_prefix: /ip }}
    upstream: u
    plugins:
      - rate_limit: {{ limits: [ {{ limit: 2, per: 1d, by: [client_ip] }} ] }}
"#,
        keys = keys.display()
    )
}

async fn post(gw: &Gateway, path: &str, key: &str, body: &'static [u8]) -> modelgate_test_support::Resp {
    send(Method::POST, &gw.url(path), &[("x-api-key", key)], Bytes::from_static(body)).await
}

#[tokio::test]
async fn local_limits_per_consumer_with_headers_and_byte_cost() {
    let up = Upstream::start("u").await;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.yaml");
    let (a, b) = (create_key(&keys, "team-a", &[]).await, create_key(&keys, "team-b", &[]).await);
    let gw = Gateway::start(&config(&up.addr, &keys, None)).await;

    for remaining in [2, 1, 0] {
        let r = post(&gw, "/v2/models/x/infer", &a, b"{}").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("ratelimit-policy"), Some("\"3-per-1day\";q=3;w=86400, \"bytes\";q=100;w=86400;qu=\"content-bytes\""));
        let status = r.header("ratelimit").unwrap();
        assert!(status.starts_with(&format!("\"3-per-1day\";r={remaining};t=")), "{status}");
    }
    let r = post(&gw, "/v2/models/x/infer", &a, b"{}").await;
    r.assert_error(429, "rate_limited");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=86400).contains(&retry), "{retry}");
    assert!(r.header("ratelimit").unwrap().contains(";r=0;"), "headers on the 429 too");
    // Another consumer has its own counter.
    assert_eq!(post(&gw, "/v2/models/x/infer", &b, b"{}").await.status, 200);

    // Cost in bytes, per consumer and model: 60 + 60 > 100.
    let c = create_key(&keys, "team-c", &[]).await;
    // (the key file is watched; wait for the new key)
    assert!(
        modelgate_test_support::eventually(Duration::from_secs(10), || async {
            post(&gw, "/v2/models/m/infer", &c, &[b'x'; 60]).await.status == 200
        })
        .await
    );
    let r = post(&gw, "/v2/models/m/infer", &c, &[b'x'; 60]).await;
    r.assert_error(429, "rate_limited");
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("\"bytes\""));
    assert_eq!(post(&gw, "/v2/models/other/infer", &c, &[b'x'; 60]).await.status, 200, "another model, another counter");
    // A body without Content-Length cannot dodge a byte limit.
    let chunked = http_body_util::StreamBody::new(futures_util::stream::iter([Ok::<_, std::convert::Infallible>(
        hyper::body::Frame::data(Bytes::from_static(b"xx")),
    )]));
    let req = http::Request::post(gw.url("/v2/models/z/infer")).header("x-api-key", &c).body(chunked).unwrap();
    let resp = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http().request(req).await.unwrap();
    assert_eq!(resp.status(), 411);

    // Without auth, by client IP.
    for want in [200, 200, 429] {
        assert_eq!(send(Method::GET, &gw.url("/ip/x"), &[], Bytes::new()).await.status, want);
    }
}

async fn metric_u64(gw: &Gateway, series: &str) -> u64 {
    modelgate_test_support::metric(gw, series).await as u64
}

fn shared_config(up: &str, keys: &std::path::Path, redis: &str) -> String {
    format!(
        r#"listen: 127.0.0.1:0
admin: {{ listen: 127.0.0.1:0 }}
redis: {{ url: "{redis}", command_timeout: 200ms, connect_timeout: 200ms }}
identity:
  api_keys: {{ file: "{keys}" }}
upstreams:
  u: {{ targets: ["http://{up}"] }}
routes:
  - name: shared
    match: {{ path_prefix: /shared }}
    upstream: u
    plugins:
      - auth: {{ methods: [api_key] }}
      - rate_limit: {{ store: redis, limits: [ {{ name: daily, limit: 20, per: 1d }} ] }}
  - name: open-on-error
    match: {{ path_prefix: /open }}
    upstream: u
    plugins:
      - rate_limit: {{ store: redis, limits: [ {{ limit: 1000, per: 1d, by: [route] }} ] }}
  - name: closed-on-error
    match: {{ path_prefix: /closed }}
    upstream: u
    plugins:
      - rate_limit: {{ store: redis, limits: [ {{ limit: 1000, per: 1d, by: [route], on_store_error: deny }} ] }}
"#,
        keys = keys.display()
    )
}

#[tokio::test]
async fn redis_limits_are_exact_across_two_gateways_and_survive_redis_outages() {
    let mut redis = RedisServer::start().await;
    let up = Upstream::start("u").await;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.yaml");
    let key = create_key(&keys, "team-a", &[]).await;
    let yaml = shared_config(&up.addr, &keys, &redis.url);
    let gws = std::sync::Arc::new([Gateway::start(&yaml).await, Gateway::start(&yaml).await]);

    // 60 concurrent requests, half to each gateway, limit 20 per window: exactly 20 admitted.
    let mut tasks = Vec::new();
    for i in 0..60 {
        let (gws, key) = (gws.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let r = post(&gws[i % 2], "/shared/x", &key, b"{}").await;
            (r.status.as_u16(), r.header("ratelimit").map(String::from))
        }));
    }
    let mut admitted_remaining = Vec::new();
    let mut refused = 0;
    for t in tasks {
        let (status, header) = t.await.unwrap();
        let header = header.expect("RateLimit header on every answer");
        let r: u64 = header.split(";r=").nth(1).unwrap().split(';').next().unwrap().parse().unwrap();
        match status {
            200 => admitted_remaining.push(r),
            429 => {
                assert_eq!(r, 0);
                refused += 1
            }
            other => panic!("unexpected status {other}"),
        }
    }
    admitted_remaining.sort();
    assert_eq!(admitted_remaining, (0..20).collect::<Vec<u64>>(), "exactly 20 admitted, each seeing a distinct remaining count");
    assert_eq!(refused, 40);
    let counted: u64 = {
        let mut n = 0;
        for gw in gws.iter() {
            n += metric_u64(gw, "modelgate_ratelimit_rejected_total{route=\"shared\",limit=\"daily\"}").await;
        }
        n
    };
    assert_eq!(counted, 40, "rejections are counted in /metrics");

    // Redis killed: `allow` lets traffic through, `deny` answers 503; both without waiting long.
    redis.kill().await;
    for gw in gws.iter() {
        assert_eq!(send(Method::GET, &gw.url("/open/x"), &[], Bytes::new()).await.status, 200);
        send(Method::GET, &gw.url("/closed/x"), &[], Bytes::new()).await.assert_error(503, "rate_limit_unavailable");
    }
    for gw in gws.iter() {
        let errors = metric_u64(gw, "modelgate_ratelimit_store_errors_total{route=\"open-on-error\"}").await;
        assert!(errors >= 1, "store errors are counted: {errors}");
    }
    // Redis back (empty): limits resume on both gateways.
    redis.restart().await;
    for gw in gws.iter() {
        assert!(
            modelgate_test_support::eventually(Duration::from_secs(10), || async {
                send(Method::GET, &gw.url("/closed/x"), &[], Bytes::new()).await.status == 200
            })
            .await,
            "the gateway reconnects to Redis"
        );
    }
    let mut statuses = Vec::new();
    for i in 0..22 {
        statuses.push(post(&gws[i % 2], "/shared/x", &key, b"{}").await.status.as_u16());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 20, "{statuses:?}");
    assert_eq!(&statuses[20..], &[429, 429]);
}

#[tokio::test]
async fn concurrency_caps_refuse_at_once_and_free_the_slot_when_the_client_leaves() {
    let up = Upstream::start("u").await;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.yaml");
    let (a, b) = (create_key(&keys, "team-a", &[]).await, create_key(&keys, "team-b", &[]).await);
    let yaml = format!(
        r#"listen: 127.0.0.1:0
admin: {{ listen: 127.0.0.1:0 }}
identity: {{ api_keys: {{ file: "{keys}" }} }}
upstreams:
  u: {{ targets: ["http://{up}"], timeouts: {{ response: 120s }} }}
routes:
  - name: slow
    match: {{ path_prefix: /slow }}
    upstream: u
    plugins:
      - auth: {{ methods: [api_key] }}
      - concurrency: {{ limits: [ {{ name: one-per-consumer, max: 1 }} ] }}
"#,
        keys = keys.display(),
        up = up.addr
    );
    let gw = Gateway::start(&yaml).await;
    // team-a holds its one slot with a request the upstream answers only after a minute.
    let url = gw.url("/slow/60000");
    let key_a = a.clone();
    let holder = tokio::spawn(async move { send(Method::GET, &url, &[("x-api-key", &key_a)], Bytes::new()).await });
    // Synchronise on the gateway's own view: the holder's request is in flight to the upstream.
    let in_flight = modelgate_test_support::eventually(Duration::from_secs(20), || async {
        modelgate_test_support::get(&gw.admin_url("/admin/upstreams")).await.json()[0]["targets"][0]["in_flight"] == 1
    })
    .await;
    assert!(in_flight, "the holding request never reached the upstream (finished early: {})", holder.is_finished());
    let r = send(Method::GET, &gw.url("/slow/0"), &[("x-api-key", &a)], Bytes::new()).await;
    r.assert_error(429, "concurrency_limited");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(send(Method::GET, &gw.url("/slow/0"), &[("x-api-key", &b)], Bytes::new()).await.status, 200, "team-b has its own slot");
    // The client gives up: its connection closes, the gateway drops the request and gives the slot back.
    holder.abort();
    // Probes that arrive before the gateway has seen the disconnect are refused too; they are counted.
    let refused_probes = std::sync::atomic::AtomicU64::new(0);
    let freed = modelgate_test_support::eventually(Duration::from_secs(10), || async {
        let status = send(Method::GET, &gw.url("/slow/0"), &[("x-api-key", &a)], Bytes::new()).await.status;
        if status == 429 {
            refused_probes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        status == 200
    })
    .await;
    assert!(freed, "the slot is released when the client disconnects");
    let refused = 1 + refused_probes.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        metric_u64(&gw, "modelgate_concurrency_rejected_total{route=\"slow\",limit=\"one-per-consumer\"}").await,
        refused,
        "every refusal counted once"
    );
}

/// An OIP v2 request for the digits model with `batch` rows of zeros, in the given shape and datatype.
fn infer_body(name: &str, datatype: &str, shape: &[i64], values: usize) -> String {
    serde_json::json!({ "inputs": [{ "name": name, "datatype": datatype, "shape": shape, "data": vec![0.0; values] }] }).to_string()
}

#[tokio::test]
async fn tensors_are_checked_at_the_edge_and_batches_cost_what_they_hold() {
    let ms = modelgate_test_support::ModelServer::start(&modelgate_test_support::repo_root().join("examples/models")).await;
    let yaml = format!(
        r#"listen: 127.0.0.1:0
admin: {{ listen: 127.0.0.1:0 }}
upstreams:
  models: {{ targets: ["http://{ms}"] }}
routes:
  - name: infer
    match: {{ path: "/v2/models/{{model}}/infer", methods: [POST] }}
    upstream: models
    plugins:
      - rate_limit: {{ limits: [ {{ name: rows, limit: 5, per: 1d, by: ["header:x-tenant"], cost: batch_items }} ] }}
      - tensor_validation: {{}}
"#,
        ms = ms.addr
    );
    let gw = Gateway::start(&yaml).await;
    let url = gw.url("/v2/models/digits/infer");
    let served = || async {
        let text = String::from_utf8(modelgate_test_support::get(&ms.url("/metrics")).await.body.to_vec()).unwrap();
        text.lines()
            .filter(|l| l.starts_with("modelgate_inference_requests_total"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64)
            .sum::<u64>()
    };

    // Learned from the model server's metadata: input "input", FP32, [-1, 1, 8, 8].
    let r = send(Method::POST, &url, &[("content-type", "application/json")], infer_body("input", "FP32", &[1, 1, 8, 8], 64)).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let before = served().await;
    let bad: &[(&str, String, &str)] = &[
        ("wrong shape", infer_body("input", "FP32", &[1, 1, 8, 7], 56), "has shape [1, 1, 8, 7], the model expects [-1, 1, 8, 8]"),
        ("wrong datatype", infer_body("input", "FP64", &[1, 1, 8, 8], 64), "has datatype FP64, the model expects FP32"),
        ("unknown name", infer_body("image", "FP32", &[1, 1, 8, 8], 64), "unknown input \"image\"; the model takes: input"),
        ("missing input", r#"{"inputs": []}"#.to_string(), "input \"input\" is missing"),
        ("data vs shape", infer_body("input", "FP32", &[1, 1, 8, 8], 63), "holds 64 elements but data has 63"),
        ("not JSON", "{\"inputs\": [".to_string(), "not valid JSON"),
    ];
    for (what, body, message) in bad {
        // (each case its own tenant, so the row limit below never refuses these first)
        let r = send(Method::POST, &url, &[("content-type", "application/json"), ("x-tenant", what)], body.clone()).await;
        r.assert_error(400, "invalid_tensor");
        let got = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(got.contains(message), "{what}: {got}");
    }
    // Binary extension: the byte size must match the shape.
    let header = r#"{"inputs":[{"name":"input","datatype":"FP32","shape":[1,1,8,8],"parameters":{"binary_data_size":255}}]}"#;
    let mut body = header.as_bytes().to_vec();
    body.extend_from_slice(&[0u8; 255]);
    let len = header.len().to_string();
    let r =
        send(Method::POST, &url, &[("content-type", "application/octet-stream"), ("inference-header-content-length", &len)], body).await;
    r.assert_error(400, "invalid_tensor");
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("needs 256 bytes but binary_data_size is 255"));
    assert_eq!(served().await, before, "no malformed request reached the model server");
    // (the counter does count malformed requests that reach the model server)
    let direct = send(Method::POST, &ms.url("/v2/models/digits/infer"), &[], infer_body("input", "FP32", &[1, 1, 8, 8], 63)).await;
    assert_eq!(direct.status, 400);
    assert_eq!(served().await, before + 1);

    // Batch items as the cost (tenant t1 has 5 rows a day): 4 rows fit, then 2 more do not, then 1 does.
    let t1 = [("x-tenant", "t1")];
    assert_eq!(send(Method::POST, &url, &t1, infer_body("input", "FP32", &[4, 1, 8, 8], 256)).await.status, 200);
    let r = send(Method::POST, &url, &t1, infer_body("input", "FP32", &[2, 1, 8, 8], 128)).await;
    r.assert_error(429, "rate_limited");
    assert!(r.header("ratelimit-policy").unwrap().contains("qu=\"batch-items\""));
    assert_eq!(send(Method::POST, &url, &t1, infer_body("input", "FP32", &[1, 1, 8, 8], 64)).await.status, 200);
}

/// One reading of the body for the gateway and the upstream: on a route that counts rows (without
/// `tensor_validation` to refuse bad bodies first), a body the gateway cannot read — a duplicate key, not JSON —
/// is refused instead of being charged 1, and a compressed body (which the upstream would decompress and the
/// gateway could not count) gets 415. Bodies the gateway can read are charged what they hold.
#[tokio::test]
async fn bodies_the_gateway_cannot_count_are_refused_not_charged_one() {
    let up = Upstream::start("u").await;
    let yaml = format!(
        r#"listen: 127.0.0.1:0
admin: {{ listen: 127.0.0.1:0 }}
upstreams: {{ u: {{ targets: ["http://{up}"] }} }}
routes:
  - name: infer
    match: {{ path_prefix: /v2/models }}
    upstream: u
    plugins:
      - rate_limit: {{ limits: [ {{ name: rows, limit: 4, per: 1d, by: ["header:x-tenant"], cost: batch_items }} ] }}
"#,
        up = up.addr
    );
    let gw = Gateway::start(&yaml).await;
    let url = gw.url("/v2/models/digits/infer");
    let t = [("x-tenant", "t"), ("content-type", "application/json")];
    // Duplicate "inputs": a first-wins server would run the 1000-row tensor the last-wins reading never counted.
    let dup = r#"{"inputs":[{"name":"input","datatype":"FP32","shape":[1000,1],"data":[]}],"inputs":[{"name":"input","datatype":"FP32","shape":[1,1],"data":[0]}]}"#;
    let r = send(Method::POST, &url, &t, dup).await;
    r.assert_error(400, "invalid_tensor");
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("duplicate field `inputs`"), "{}", r.json());
    send(Method::POST, &url, &t, "not json").await.assert_error(400, "invalid_tensor");
    let gz = [("x-tenant", "t"), ("content-encoding", "gzip")];
    send(Method::POST, &url, &gz, Bytes::from_static(b"\x1f\x8b\x08\x00")).await.assert_error(415, "unsupported_encoding");
    assert_eq!(up.count().await, 0, "none of them reached the upstream");
    // A GET without a body costs 1; a readable body what it holds.
    assert_eq!(send(Method::GET, &gw.url("/v2/models/digits"), &t, Bytes::new()).await.status, 200);
    let rows = |n: usize| {
        serde_json::json!({ "inputs": [{ "name": "input", "datatype": "FP32", "shape": [n, 1], "data": vec![0; n] }] }).to_string()
    };
    assert_eq!(send(Method::POST, &url, &t, rows(3)).await.status, 200);
    send(Method::POST, &url, &t, rows(1)).await.assert_error(429, "rate_limited");
}
