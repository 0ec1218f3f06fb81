//! Model versions at the gateway (`models`): the deterministic split by caller, stickiness when the canary's weight
//! rises, pinning by path, retired and unknown versions, the path rewrite to each version's upstream, and the
//! version and tags in the answer and the access log — through a real gateway process in front of the real model
//! server (stable) and a demo upstream (canary).

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use modelgate_test_support::{Gateway, ModelServer, Upstream, create_key, eventually, get, repo_root, send};

fn config(model_server: &str, canary: &str, weight: &str, log: &str) -> String {
    format!(
        r#"listen: 127.0.0.1:0
admin: {{ listen: 127.0.0.1:0 }}
observability: {{ access_log: {{ path: "{log}" }} }}
upstreams:
  models: {{ targets: ["http://{model_server}"] }}
  canary: {{ targets: ["http://{canary}"] }}
routes:
  - name: v2
    match: {{ path_prefix: /v2 }}
    upstream: models
models:
  digits:
    split_key: header:x-user
    versions:
      "1": {{ upstream: models, state: stable, tags: {{ git: 1a2b3c }} }}
      "2": {{ upstream: canary, state: canary, weight: {weight}, tags: {{ git: 4d5e6f, dataset: mnist-2026 }} }}
      "0": {{ upstream: models, state: retired }}
"#
    )
}

/// The bundled example inference request (one digits image).
fn digits_request() -> Bytes {
    Bytes::from(std::fs::read(repo_root().join("examples/digits/request.json")).unwrap())
}

/// Which version each user's inference went to: (`x-model-version`, the canary's echo of the forwarded path).
async fn versions_of(gw: &Gateway, users: &[String], body: &Bytes) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for u in users {
        let r =
            send(Method::POST, &gw.url("/v2/models/digits/infer"), &[("x-user", u), ("content-type", "application/json")], body.clone())
                .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let version = r.header("x-model-version").unwrap_or("").to_string();
        if version == "2" {
            assert_eq!(r.json()["path"], "/v2/models/digits/versions/2/infer", "the canary gets its own path");
        } else {
            assert!(r.json()["outputs"].is_array(), "the real model answered: {}", r.json());
        }
        out.insert(u.clone(), version);
    }
    out
}

#[tokio::test]
async fn callers_are_split_by_weight_stay_put_and_pin_by_path() {
    let ms = ModelServer::start(&repo_root().join("examples/models")).await;
    let canary = Upstream::start("canary").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let log_s = log.display().to_string();
    let gw = Gateway::start(&config(&ms.addr, &canary.addr, "30", &log_s)).await;
    let body = digits_request();
    // The canary gets callers once its first readiness probe answered.
    let canary_ready = eventually(Duration::from_secs(10), || async {
        let users: Vec<String> = (0..20).map(|i| format!("user-{i}")).collect();
        versions_of(&gw, &users, &body).await.values().any(|v| v == "2")
    })
    .await;
    assert!(canary_ready, "the canary never got a caller");

    // 300 distinct callers at 30 %: the share is the weight's, within what 300 callers allow.
    let users: Vec<String> = (0..300).map(|i| format!("user-{i}")).collect();
    let first = versions_of(&gw, &users, &body).await;
    let on_canary = first.values().filter(|v| *v == "2").count();
    assert!((60..=120).contains(&on_canary), "{on_canary} of 300 on the 30 % canary");
    assert!(first.values().all(|v| v == "1" || v == "2"), "{first:?}");
    // The same caller again: the same version, no cookie.
    assert_eq!(versions_of(&gw, &users[..50], &body).await, users[..50].iter().map(|u| (u.clone(), first[u].clone())).collect());

    // Raising the weight moves callers from stable to the canary, never back.
    gw.write_config(&config(&ms.addr, &canary.addr, "60", &log_s));
    assert_eq!(gw.reload().await.status, 200);
    let second = versions_of(&gw, &users, &body).await;
    for u in &users {
        assert!(first[u] != "2" || second[u] == "2", "{u} left the canary when its weight rose");
    }
    assert!(second.values().filter(|v| *v == "2").count() > on_canary);

    // Pinned by path: that version, whatever the split says; retired and unknown versions are 404.
    let pinned = send(Method::POST, &gw.url("/v2/models/digits/versions/1/infer"), &[("x-user", "user-0")], body.clone()).await;
    assert_eq!((pinned.status.as_u16(), pinned.header("x-model-version")), (200, Some("1")));
    let r = send(Method::POST, &gw.url("/v2/models/digits/versions/2/infer?trace=1"), &[], body.clone()).await;
    assert_eq!(r.json()["path"], "/v2/models/digits/versions/2/infer?trace=1", "the query goes on");
    send(Method::POST, &gw.url("/v2/models/digits/versions/0/infer"), &[], body.clone()).await.assert_error(404, "model_version_not_found");
    let r = send(Method::POST, &gw.url("/v2/models/digits/versions/9/infer"), &[], body.clone()).await;
    r.assert_error(404, "model_version_not_found");
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("no such version"), "{}", r.json());
    // Without a key (no x-user) each request is split on its own; models not in `models` go where the route says.
    let r = send(Method::POST, &gw.url("/v2/models/digits/infer"), &[], body.clone()).await;
    assert_eq!(r.status, 200);
    let r = send(Method::GET, &gw.url("/v2/health/ready"), &[], Bytes::new()).await;
    assert_eq!(r.status, 200, "other paths keep the route's upstream");
    let r = send(Method::GET, &gw.url("/v2/models/other/ready"), &[], Bytes::new()).await;
    assert_eq!(r.status, 404, "a model not in `models` goes to the route's upstream, which does not serve it");

    // The access log carries the chosen version and its tags.
    let canary_user = users.iter().find(|u| second[*u] == "2").unwrap().clone();
    send(Method::POST, &gw.url("/v2/models/digits/infer"), &[("x-user", &canary_user)], body.clone()).await;
    let tagged = eventually(Duration::from_secs(10), || async {
        std::fs::read_to_string(&log).unwrap_or_default().lines().any(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["model_version"] == "2" && v["model_tags"]["git"] == "4d5e6f" && v["model_tags"]["dataset"] == "mnist-2026"
        })
    })
    .await;
    assert!(tagged, "no access-log line with the canary's version and tags");
    // Metrics: each version's share, readiness, and state and tags as an info series (Grafana's per-version panels).
    let metrics = String::from_utf8(get(&gw.admin_url("/metrics")).await.body.to_vec()).unwrap();
    for series in [
        r#"modelgate_model_version_weight{model="digits",version="2"} 60.0"#,
        r#"modelgate_model_version_weight{model="digits",version="1"} 40.0"#,
        r#"modelgate_model_version_ready{model="digits",version="2"} 1"#,
        r#"modelgate_model_version_info{model="digits",version="2",state="canary",tag_dataset="mnist-2026",tag_git="4d5e6f"} 1"#,
    ] {
        assert!(metrics.lines().any(|l| l == series), "{series} not in:\n{metrics}");
    }

    // A weight on the stable version is refused with its path; the running split stays.
    gw.write_config(&config(&ms.addr, &canary.addr, "60", &log_s).replace("state: stable,", "state: stable, weight: 5,"));
    let r = gw.reload().await;
    r.assert_error(422, "config_invalid");
    assert_eq!(r.json()["error"]["details"][0]["path"], "models.digits.versions.1.weight");
    assert_eq!(versions_of(&gw, &users[..20], &body).await, users[..20].iter().map(|u| (u.clone(), second[u].clone())).collect());
}

/// The readiness gate: a canary whose upstream does not serve its version (the model server has no version 2:
/// its `/ready` is 404) gets no caller even at weight 100; pointed at an upstream that is ready, it gets them.
#[tokio::test]
async fn a_canary_that_is_not_ready_gets_no_callers() {
    let ms = ModelServer::start(&repo_root().join("examples/models")).await;
    let canary = Upstream::start("canary").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log").display().to_string();
    let yaml = |canary_upstream: &str| {
        config(&ms.addr, &canary.addr, "100", &log)
            .replace("\"2\": { upstream: canary,", &format!("\"2\": {{ upstream: {canary_upstream},"))
    };
    let gw = Gateway::start(&yaml("models")).await;
    let body = digits_request();
    let users: Vec<String> = (0..40).map(|i| format!("user-{i}")).collect();
    // Once the probe has answered (the admin view says `not_ready`), the canary still has nobody.
    let probed = eventually(Duration::from_secs(10), || async {
        let view = get(&gw.admin_url("/admin/models")).await.json();
        view["managed"][0]["versions"].as_array().unwrap().iter().any(|v| v["version"] == "2" && v["readiness"] == "not_ready")
    })
    .await;
    assert!(probed, "{}", get(&gw.admin_url("/admin/models")).await.json());
    assert!(versions_of(&gw, &users, &body).await.values().all(|v| v == "1"), "an unready canary got callers");
    let view = get(&gw.admin_url("/admin/models")).await.json();
    let v1 = view["managed"][0]["versions"].as_array().unwrap().iter().find(|v| v["version"] == "1").unwrap().clone();
    assert_eq!(
        (v1["state"].as_str(), v1["readiness"].as_str(), v1["tags"]["git"].as_str()),
        (Some("stable"), Some("ready"), Some("1a2b3c"))
    );
    gw.write_config(&yaml("canary"));
    assert_eq!(gw.reload().await.status, 200);
    let all_on_canary =
        eventually(Duration::from_secs(10), || async { versions_of(&gw, &users, &body).await.values().all(|v| v == "2") }).await;
    assert!(all_on_canary, "the ready canary at weight 100 did not get every caller");
}

/// Pinning is a policy decision: a rule without `versions` allows the split only; a rule listing a version allows
/// pinning it, by path or by the `x-model-version` request header.
#[tokio::test]
async fn pinning_needs_a_policy_rule_that_lists_the_version() {
    let ms = ModelServer::start(&repo_root().join("examples/models")).await;
    let canary = Upstream::start("canary").await;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.yaml");
    let (app, qa) = (create_key(&keys, "app", &[]).await, create_key(&keys, "qa", &[]).await);
    let gw = Gateway::start(&format!(
        r#"listen: 127.0.0.1:0
admin: {{ listen: 127.0.0.1:0 }}
identity: {{ api_keys: {{ file: "{keys}" }} }}
upstreams:
  models: {{ targets: ["http://{ms}"] }}
  canary: {{ targets: ["http://{canary}"] }}
routes:
  - name: v2
    match: {{ path_prefix: /v2 }}
    upstream: models
    plugins:
      - auth: {{ methods: [api_key] }}
      - policy:
          allow:
            - {{ consumers: [app, qa], models: [digits] }}
            - {{ consumers: [qa], models: [digits], versions: ["2"] }}
models:
  digits:
    versions:
      "1": {{ upstream: models, state: stable }}
      "2": {{ upstream: canary, state: canary, weight: 0 }}
"#,
        keys = keys.display(),
        ms = ms.addr,
        canary = canary.addr
    ))
    .await;
    let body = digits_request();
    let call = |path: &'static str, key: String, pin: Option<&'static str>| {
        let (url, body) = (gw.url(path), body.clone());
        async move {
            let mut headers = vec![("x-api-key", key.as_str())];
            headers.extend(pin.map(|v| ("x-model-version", v)));
            send(Method::POST, &url, &headers, body).await
        }
    };
    let r = call("/v2/models/digits/infer", app.clone(), None).await;
    assert_eq!((r.status.as_u16(), r.header("x-model-version")), (200, Some("1")), "the split: weight 0 leaves everyone on 1");
    call("/v2/models/digits/infer", app.clone(), Some("2")).await.assert_error(403, "forbidden");
    call("/v2/models/digits/versions/2/infer", app.clone(), None).await.assert_error(403, "forbidden");
    call("/v2/models/digits/versions/1/infer", qa.clone(), None).await.assert_error(403, "forbidden");
    for r in
        [call("/v2/models/digits/infer", qa.clone(), Some("2")).await, call("/v2/models/digits/versions/2/infer", qa.clone(), None).await]
    {
        assert_eq!((r.status.as_u16(), r.header("x-model-version")), (200, Some("2")), "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["path"], "/v2/models/digits/versions/2/infer");
    }
}

/// Readiness over gRPC: on an HTTP/2 upstream the probe is the OIP `ModelReady` RPC for the model and version, sent
/// through the upstream's own client (the model server's gRPC listener serves version 1, not version 2).
#[tokio::test]
async fn grpc_upstreams_are_probed_with_model_ready() {
    let ms = ModelServer::start(&repo_root().join("examples/models")).await;
    let gw = Gateway::start(&format!(
        r#"listen: 127.0.0.1:0
admin: {{ listen: 127.0.0.1:0 }}
upstreams:
  grpc: {{ targets: ["http://{grpc}"], protocol: http2 }}
routes:
  - {{ name: grpc, match: {{ path_prefix: /inference.GRPCInferenceService }}, upstream: grpc }}
models:
  digits:
    versions:
      "1": {{ upstream: grpc, state: stable }}
      "2": {{ upstream: grpc, state: canary, weight: 10 }}
"#,
        grpc = ms.grpc
    ))
    .await;
    let readiness = || async {
        let view = get(&gw.admin_url("/admin/models")).await.json();
        let of =
            |v: &str| view["managed"][0]["versions"].as_array().unwrap().iter().find(|x| x["version"] == v).unwrap()["readiness"].clone();
        (of("1"), of("2"))
    };
    let probed = eventually(Duration::from_secs(10), || async { readiness().await == ("ready".into(), "not_ready".into()) }).await;
    assert!(probed, "{:?}", readiness().await);
}

/// A model repository with the bundled digits model as version 1 and copies whose last layer's bias is changed by
/// `perturb` as versions 2, 3, ….
fn perturbed_repository(dir: &std::path::Path, perturb: &[&dyn Fn(usize, f32) -> f32]) {
    use prost::Message;
    let model = dir.join("digits");
    std::fs::create_dir_all(model.join("1")).unwrap();
    std::fs::write(model.join("config.yaml"), "version_policy: all\nmax_queue_delay: 0ms\n").unwrap();
    let original = std::fs::read(repo_root().join("examples/models/digits/1/model.onnx")).unwrap();
    std::fs::write(model.join("1/model.onnx"), &original).unwrap();
    for (i, f) in perturb.iter().enumerate() {
        let mut m = tract_onnx::pb::ModelProto::decode(&original[..]).unwrap();
        let graph = m.graph.as_mut().unwrap();
        let bias = graph.initializer.iter_mut().find(|t| t.dims == [10]).expect("the last layer's bias [10]");
        if bias.raw_data.is_empty() {
            for (k, v) in bias.float_data.iter_mut().enumerate() {
                *v = f(k, *v);
            }
        } else {
            let values: Vec<f32> = bias.raw_data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
            bias.raw_data = values.iter().enumerate().flat_map(|(k, v)| f(k, *v).to_le_bytes()).collect();
        }
        let dir = model.join((i + 2).to_string());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("model.onnx"), m.encode_to_vec()).unwrap();
    }
}

/// An OIP v2 request for one golden case, and the argmax of the logits PyTorch computed for it.
fn golden_cases() -> Vec<(Bytes, usize)> {
    let golden: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repo_root().join("examples/digits/golden.json")).unwrap()).unwrap();
    golden["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let body =
                serde_json::json!({ "inputs": [{ "name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": c["input"] }] });
            let logits: Vec<f64> = c["logits"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            let argmax = (0..logits.len()).max_by(|a, b| logits[*a].total_cmp(&logits[*b])).unwrap();
            (Bytes::from(body.to_string()), argmax)
        })
        .collect()
}

/// Shadow versions get a copy of every sampled, admitted request; their answers are compared with the client's
/// output tensor by output tensor: the same model matches, a copy with every logit shifted by 1 differs past the
/// tolerances with the same argmax, and a copy whose class-0 bias is raised by 1000 disagrees on exactly the cases
/// whose class is not 0. The client always gets version 1's answer; rejected requests are not copied.
#[tokio::test]
async fn shadow_answers_are_compared_per_output_tensor() {
    let dir = tempfile::tempdir().unwrap();
    perturbed_repository(dir.path(), &[&|_, b| b, &|_, b| b + 1.0, &|k, b| if k == 0 { b + 1000.0 } else { b }]);
    let ms = ModelServer::start(dir.path()).await;
    let keys = dir.path().join("keys.yaml");
    let key = create_key(&keys, "app", &[]).await;
    let shadow = |v: &str| format!("\"{v}\": {{ upstream: models, state: shadow, shadow: {{ sample: 100, max_in_flight: 1000 }} }}");
    let gw = Gateway::start(&format!(
        r#"listen: 127.0.0.1:0
admin: {{ listen: 127.0.0.1:0 }}
identity: {{ api_keys: {{ file: "{keys}" }} }}
upstreams:
  models: {{ targets: ["http://{ms}"] }}
routes:
  - name: v2
    match: {{ path_prefix: /v2 }}
    upstream: models
    plugins: [{{ auth: {{ methods: [api_key] }} }}]
models:
  digits:
    versions:
      "1": {{ upstream: models, state: stable }}
      {}
      {}
      {}
"#,
        shadow("2"),
        shadow("3"),
        shadow("4"),
        keys = keys.display(),
        ms = ms.addr
    ))
    .await;
    let counts = |view: &serde_json::Value, v: &str| {
        let s = view["shadows"].as_array().unwrap().iter().find(|s| s["version"] == v).unwrap().clone();
        let r = &s["results"];
        let total: u64 = r.as_object().unwrap().values().map(|n| n.as_u64().unwrap()).sum();
        (r["match"].as_u64().unwrap(), r["top_k_agree"].as_u64().unwrap(), r["mismatch"].as_u64().unwrap(), total, s)
    };
    // The shadows are copied once their readiness probes answered.
    let ready = eventually(Duration::from_secs(15), || async {
        let view = get(&gw.admin_url("/admin/models")).await.json();
        view["managed"][0]["versions"].as_array().unwrap().iter().all(|v| v["readiness"] == "ready")
    })
    .await;
    assert!(ready, "{}", get(&gw.admin_url("/admin/models")).await.json());

    // Refused requests are never copied.
    let r = send(Method::POST, &gw.url("/v2/models/digits/infer"), &[], golden_cases()[0].0.clone()).await;
    r.assert_error(401, "unauthenticated");

    let cases: Vec<(Bytes, usize)> = golden_cases().into_iter().take(40).collect();
    let auth = format!("Bearer {key}");
    for (body, argmax) in &cases {
        let r = send(Method::POST, &gw.url("/v2/models/digits/infer"), &[("authorization", &auth)], body.clone()).await;
        assert_eq!((r.status.as_u16(), r.header("x-model-version")), (200, Some("1")), "{}", String::from_utf8_lossy(&r.body));
        let logits: Vec<f64> = r.json()["outputs"][0]["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let got = (0..10).max_by(|a, b| logits[*a].total_cmp(&logits[*b])).unwrap();
        assert_eq!(got, *argmax, "the client gets version 1's answer");
    }
    let n = cases.len() as u64;
    let done = eventually(Duration::from_secs(15), || async {
        let view = get(&gw.admin_url("/admin/models/digits/shadow")).await.json();
        ["2", "3", "4"].iter().all(|v| counts(&view, v).3 == n)
    })
    .await;
    let view = get(&gw.admin_url("/admin/models/digits/shadow")).await.json();
    assert!(done, "not every copy was compared: {view}");
    assert_eq!(counts(&view, "2").0, n, "the same model matches: {view}");
    assert_eq!(counts(&view, "3").1, n, "shifted logits keep the argmax: {view}");
    let not_zero = cases.iter().filter(|(_, a)| *a != 0).count() as u64;
    assert!(not_zero > 0 && not_zero < n, "the cases have class 0 and others");
    let (_, agree, mismatch, _, v4) = counts(&view, "4");
    assert_eq!((mismatch, agree), (not_zero, n - not_zero), "known argmax disagreements: {v4}");
    let diff = v4["recent"].as_array().unwrap().iter().find(|d| d["result"] == "mismatch").expect("a sampled diff").clone();
    assert_eq!(diff["tensors"][0]["name"], "logits");
    assert_eq!((diff["tensors"][0]["rows"].as_u64(), diff["tensors"][0]["top_k_rows_agree"].as_u64()), (Some(1), Some(0)));
    assert!(diff["max_abs"].as_f64().unwrap() > 900.0, "{diff}");
    assert_eq!(v4["dropped"]["busy"], 0);

    let metrics = String::from_utf8(get(&gw.admin_url("/metrics")).await.body.to_vec()).unwrap();
    for series in [
        format!(r#"modelgate_shadow_compare_total{{model="digits",version="2",result="match"}} {n}"#),
        format!(r#"modelgate_shadow_compare_total{{model="digits",version="4",result="mismatch"}} {not_zero}"#),
        r#"modelgate_model_version_info{model="digits",version="3",state="shadow"} 1"#.to_string(),
    ] {
        assert!(metrics.lines().any(|l| l == series), "{series} not in:\n{metrics}");
    }
    assert!(metrics.contains(r#"modelgate_shadow_max_abs_diff_count{model="digits",version="4"}"#));
    get(&gw.admin_url("/admin/models/nope/shadow")).await.assert_error(404, "not_found");
}

/// A shadow that stalls for 5 s or fails never delays or changes the client's answer: every client request is
/// answered while the stalled copies are still in flight, copies past `max_in_flight` are dropped and counted, and
/// a failing shadow counts `shadow_error`.
#[tokio::test]
async fn a_slow_or_failing_shadow_leaves_the_client_alone() {
    let ms = ModelServer::start(&repo_root().join("examples/models")).await;
    let slow = Upstream::start("slow").await;
    let failing = Upstream::failing("failing", 500).await;
    let gw = Gateway::start(&format!(
        r#"listen: 127.0.0.1:0
admin: {{ listen: 127.0.0.1:0 }}
upstreams:
  models: {{ targets: ["http://{ms}"] }}
  slow: {{ targets: ["http://{slow}"], timeouts: {{ response: 30s }} }}
  failing: {{ targets: ["http://{failing}"] }}
routes:
  - name: v2
    match: {{ path_prefix: /v2 }}
    upstream: models
models:
  digits:
    versions:
      "1": {{ upstream: models, state: stable }}
      "slow": {{ upstream: slow, state: shadow, path: /slow/5000, probe: none, shadow: {{ sample: 100, max_in_flight: 4 }} }}
      "broken": {{ upstream: failing, state: shadow, probe: none, shadow: {{ sample: 100 }} }}
"#,
        ms = ms.addr,
        slow = slow.addr,
        failing = failing.addr
    ))
    .await;
    let body = digits_request();
    let started = tokio::time::Instant::now();
    for _ in 0..20 {
        let r = send(Method::POST, &gw.url("/v2/models/digits/infer"), &[], body.clone()).await;
        assert_eq!(r.status, 200);
        assert!(r.json()["outputs"].is_array());
    }
    // 20 answers came while the first copies to the slow shadow (5 s each) were still out.
    let view = get(&gw.admin_url("/admin/models/digits/shadow")).await.json();
    let slow_view = view["shadows"].as_array().unwrap().iter().find(|s| s["version"] == "slow").unwrap().clone();
    assert!(started.elapsed() < Duration::from_secs(5), "the clients waited for the shadow: {:?}", started.elapsed());
    assert_eq!(slow_view["in_flight"], 4, "{slow_view}");
    assert_eq!(slow_view["dropped"]["busy"], 16, "{slow_view}");
    let failed = eventually(Duration::from_secs(10), || async {
        let view = get(&gw.admin_url("/admin/models/digits/shadow")).await.json();
        view["shadows"].as_array().unwrap().iter().any(|s| s["version"] == "broken" && s["results"]["shadow_error"] == 20)
    })
    .await;
    assert!(failed, "{}", get(&gw.admin_url("/admin/models/digits/shadow")).await.json());
    // The stalled copies end, are compared (the demo upstream's answer is not an inference answer) and free their
    // places.
    let freed = eventually(Duration::from_secs(15), || async {
        let view = get(&gw.admin_url("/admin/models/digits/shadow")).await.json();
        view["shadows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["version"] == "slow" && s["in_flight"] == 0 && s["results"]["shadow_error"] == 4)
    })
    .await;
    assert!(freed, "{}", get(&gw.admin_url("/admin/models/digits/shadow")).await.json());
    assert_eq!(slow.count().await, 4);
}

fn rollout_config(ms: &str, canary: &str, canary_path: &str, audit: &str) -> String {
    format!(
        r#"listen: 127.0.0.1:0
admin: {{ listen: 127.0.0.1:0 }}
audit: {{ path: "{audit}", fsync: never }}
upstreams:
  models: {{ targets: ["http://{ms}"] }}
  canary: {{ targets: ["http://{canary}"] }}
routes:
  - name: v2
    match: {{ path_prefix: /v2 }}
    upstream: models
models:
  digits:
    split_key: header:x-user
    versions:
      "1": {{ upstream: models, state: stable }}
      "2": {{ upstream: canary, state: canary, path: "{canary_path}", probe: /healthz, tags: {{ git: 4d5e6f }} }}
    rollout:
      version: "2"
      steps: [10, 50, 100]
      gates: [100]
      interval: 400ms
      min_samples: 15
      breaches: 1
      slo: {{ max_error_rate_increase: 5, max_p99_ratio: 4 }}
"#
    )
}

/// Sends inference requests from ever new callers until `stop` is set (the traffic the rollout judges).
fn traffic(gw: &Gateway, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> tokio::task::JoinHandle<()> {
    let url = gw.url("/v2/models/digits/infer");
    let body = digits_request();
    tokio::spawn(async move {
        let mut i = 0u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let batch: Vec<_> = (0..8)
                .map(|k| {
                    let user = format!("user-{}", i * 8 + k);
                    let (url, body) = (url.clone(), body.clone());
                    tokio::spawn(async move { send(Method::POST, &url, &[("x-user", &user)], body).await })
                })
                .collect();
            for b in batch {
                b.await.unwrap();
            }
            i += 1;
        }
    })
}

async fn rollout_view(gw: &Gateway) -> serde_json::Value {
    get(&gw.admin_url("/admin/models/digits/rollout")).await.json()
}

async fn wait_for_status(gw: &Gateway, status: &str) -> serde_json::Value {
    let reached = eventually(Duration::from_secs(30), || async { rollout_view(gw).await["status"] == status }).await;
    let view = rollout_view(gw).await;
    assert!(reached, "the rollout never reached {status}: {view:#}");
    view
}

/// A progressive rollout inside the gateway: with no traffic it holds; with a healthy canary it moves through its
/// steps, waits at its gate for a promote, and completes; a canary made to fail, or to slow down, is rolled back to
/// weight 0 at the first breaching evaluation — also while a gate waits. Every transition is in the audit log with
/// its numbers, the state survives reloads, and `modelgate rollout` drives it.
#[tokio::test]
async fn rollouts_advance_on_a_healthy_canary_and_roll_back_a_bad_one() {
    let ms = ModelServer::start(&repo_root().join("examples/models")).await;
    let canary = Upstream::start("canary").await;
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.log");
    let audit_s = audit.display().to_string();
    let gw = Gateway::start(&rollout_config(&ms.addr, &canary.addr, "/status/200", &audit_s)).await;

    // No traffic: evaluations hold at the first step, never promote.
    let held = eventually(Duration::from_secs(10), || async { rollout_view(&gw).await["last_evaluation"]["decision"] == "hold" }).await;
    let view = rollout_view(&gw).await;
    assert!(held, "{view:#}");
    assert_eq!((view["status"].as_str(), view["step"].as_u64(), view["weight"].as_f64()), (Some("progressing"), Some(0), Some(10.0)));
    assert!(view["last_evaluation"]["reason"].as_str().unwrap().contains("too few samples"), "{view:#}");

    // A healthy canary: 10 % → 50 %, then the gate before 100 % waits for a promote.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = traffic(&gw, stop.clone());
    let view = wait_for_status(&gw, "waiting_for_promotion").await;
    assert_eq!((view["step"].as_u64(), view["weight"].as_f64()), (Some(1), Some(50.0)), "{view:#}");
    let admin = format!("http://{}", gw.admin);
    let out = std::process::Command::new(modelgate_test_support::bin())
        .args(["rollout", "promote", "digits", "--admin", &admin])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let promoted: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((promoted["step"].as_u64(), promoted["weight"].as_f64()), (Some(2), Some(100.0)), "{promoted:#}");
    let view = wait_for_status(&gw, "completed").await;
    let to: Vec<&str> = view["transitions"].as_array().unwrap().iter().map(|t| t["to"].as_str().unwrap()).collect();
    assert_eq!(to, ["progressing", "waiting_for_promotion", "progressing", "completed"], "{view:#}");
    assert_eq!(view["transitions"][3]["by"], "rollout");
    assert_eq!(view["transitions"][2]["by"], "admin:admin_api");

    // The canary starts failing (a reload points it at a path that answers 500; the state survives the reload):
    // restarted, it is rolled back at the first evaluation with enough samples.
    gw.write_config(&rollout_config(&ms.addr, &canary.addr, "/status/500", &audit_s));
    assert_eq!(gw.reload().await.status, 200);
    assert_eq!(rollout_view(&gw).await["status"], "completed", "a reload keeps the rollout's state");
    assert_eq!(send(Method::POST, &gw.admin_url("/admin/models/digits/rollout/restart"), &[], Bytes::new()).await.status, 200);
    let view = wait_for_status(&gw, "rolled_back").await;
    assert_eq!(view["weight"].as_f64(), Some(0.0));
    let last = view["transitions"].as_array().unwrap().last().unwrap().clone();
    assert!(last["reason"].as_str().unwrap().contains("error rate"), "{last:#}");
    assert!(last["numbers"]["canary"]["errors"].as_u64().unwrap() >= 15, "{last:#}");
    // Weight 0: every caller is on the stable version now.
    let body = digits_request();
    for i in 0..30 {
        let r = send(Method::POST, &gw.url("/v2/models/digits/infer"), &[("x-user", &format!("after-{i}"))], body.clone()).await;
        assert_eq!((r.status.as_u16(), r.header("x-model-version")), (200, Some("1")));
    }

    // A slow canary (p99 past 4 × stable's) is rolled back too, and so is one that breaches while its gate waits.
    gw.write_config(&rollout_config(&ms.addr, &canary.addr, "/slow/400", &audit_s));
    assert_eq!(gw.reload().await.status, 200);
    assert_eq!(send(Method::POST, &gw.admin_url("/admin/models/digits/rollout/restart"), &[], Bytes::new()).await.status, 200);
    let view = wait_for_status(&gw, "rolled_back").await;
    let last = view["transitions"].as_array().unwrap().last().unwrap().clone();
    assert!(last["reason"].as_str().unwrap().contains("p99"), "{last:#}");
    gw.write_config(&rollout_config(&ms.addr, &canary.addr, "/status/200", &audit_s));
    assert_eq!(gw.reload().await.status, 200);
    // The slow requests still out would land in the next window: the restart waits for them to end.
    let drained = eventually(Duration::from_secs(10), || async {
        let ups = get(&gw.admin_url("/admin/upstreams")).await.json();
        ups.as_array().unwrap().iter().filter(|u| u["name"] == "canary").all(|u| u["targets"][0]["in_flight"] == 0)
    })
    .await;
    assert!(drained);
    assert_eq!(send(Method::POST, &gw.admin_url("/admin/models/digits/rollout/restart"), &[], Bytes::new()).await.status, 200);
    wait_for_status(&gw, "waiting_for_promotion").await;
    gw.write_config(&rollout_config(&ms.addr, &canary.addr, "/status/503", &audit_s));
    assert_eq!(gw.reload().await.status, 200);
    let view = wait_for_status(&gw, "rolled_back").await;
    let last = view["transitions"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["from"], "waiting_for_promotion", "{last:#}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.await.unwrap();

    // Refused actions say why; the metrics and the audit log carry the transitions.
    let r = send(Method::POST, &gw.admin_url("/admin/models/digits/rollout/resume"), &[], Bytes::new()).await;
    r.assert_error(409, "rollout_conflict");
    let metrics = String::from_utf8(get(&gw.admin_url("/metrics")).await.body.to_vec()).unwrap();
    assert!(metrics.lines().any(|l| l == r#"modelgate_rollout_status{model="digits",version="2",status="rolled_back"} 1"#), "{metrics}");
    assert!(metrics.lines().any(|l| l == r#"modelgate_model_version_weight{model="digits",version="2"} 0.0"#), "{metrics}");
    let audited = eventually(Duration::from_secs(5), || async {
        std::fs::read_to_string(&audit).unwrap_or_default().lines().filter(|l| l.contains(r#""type":"rollout""#)).count() >= 10
    })
    .await;
    let log = std::fs::read_to_string(&audit).unwrap();
    assert!(audited, "{log}");
    let rollback = log.lines().find(|l| l.contains(r#""type":"rollout""#) && l.contains("error rate")).expect("the rollback's audit line");
    assert!(rollback.contains("4d5e6f"), "the version's tags are in its audit lines: {rollback}");
    // The state is saved beside the config: a new gateway process on the same directory starts rolled back.
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(gw.config.parent().unwrap().join(".modelgate-rollouts.json")).unwrap()).unwrap();
    assert_eq!(saved["digits/2"]["status"], "rolled_back", "{saved:#}");
}

/// Tensor validation checks a managed model's request against the version the route step chose, learned from that
/// version's own upstream and path: a request the stable version's model would refuse goes through to a canary
/// whose upstream publishes no metadata, and is refused when pinned to the stable version.
#[tokio::test]
async fn validation_checks_the_chosen_version() {
    let ms = ModelServer::start(&repo_root().join("examples/models")).await;
    let canary = Upstream::start("canary").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log").display().to_string();
    let yaml = config(&ms.addr, &canary.addr, "100", &log)
        .replace("    upstream: models\nmodels:", "    upstream: models\n    plugins: [ { tensor_validation: {} } ]\nmodels:");
    let gw = Gateway::start(&yaml).await;
    let bad = Bytes::from(r#"{"inputs":[{"name":"pixels","shape":[1,64],"datatype":"FP32","data":[0]}]}"#);
    let on_canary = eventually(Duration::from_secs(10), || async {
        let r = send(Method::POST, &gw.url("/v2/models/digits/infer"), &[("x-user", "u")], bad.clone()).await;
        r.status == 200 && r.header("x-model-version") == Some("2")
    })
    .await;
    assert!(on_canary, "the canary (no metadata) did not get the request the stable version's schema refuses");
    let r = send(Method::POST, &gw.url("/v2/models/digits/versions/1/infer"), &[], bad.clone()).await;
    r.assert_error(400, "invalid_tensor");
}

/// Two gateways sharing a Redis share the rollout: one decides (holds the lease), the other follows within a
/// second — its weights move with the decision-maker's — and an operator's action on either is followed by both.
#[tokio::test]
async fn gateways_sharing_redis_follow_one_decision_maker() {
    let redis = modelgate_test_support::RedisServer::start().await;
    let ms = ModelServer::start(&repo_root().join("examples/models")).await;
    let canary = Upstream::start("canary").await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = |path: &str, n: usize| {
        rollout_config(&ms.addr, &canary.addr, path, &dir.path().join(format!("audit-{n}.log")).display().to_string())
            + &format!("redis: {{ url: \"{}\" }}\n", redis.url)
    };
    let (a, b) = (Gateway::start(&yaml("/status/200", 0)).await, Gateway::start(&yaml("/status/200", 1)).await);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loads = [traffic(&a, stop.clone()), traffic(&b, stop.clone())];

    let (va, vb) = (wait_for_status(&a, "waiting_for_promotion").await, wait_for_status(&b, "waiting_for_promotion").await);
    assert_eq!((va["step"].as_u64(), vb["step"].as_u64(), vb["weight"].as_f64()), (Some(1), Some(1), Some(50.0)));
    assert_eq!((va["shared"].as_bool(), vb["shared"].as_bool()), (Some(true), Some(true)));
    assert!(va["decides"] != vb["decides"], "exactly one decides: {va:#} {vb:#}");
    let (leader, follower) = if va["decides"] == true { (&a, &b) } else { (&b, &a) };
    let leader_id = rollout_view(leader).await["gateway"].as_str().unwrap().to_string();
    let automatic: Vec<_> =
        rollout_view(follower).await["transitions"].as_array().unwrap().iter().filter(|t| t["by"] == "rollout").cloned().collect();
    assert!(!automatic.is_empty() && automatic.iter().all(|t| t["gateway"] == leader_id.as_str()), "{automatic:#?}");

    // An operator's promote on the follower: both move to 100 %, then the decision-maker completes it.
    assert_eq!(send(Method::POST, &follower.admin_url("/admin/models/digits/rollout/promote"), &[], Bytes::new()).await.status, 200);
    wait_for_status(leader, "completed").await;
    wait_for_status(follower, "completed").await;

    // The canary fails on both; a restart on the follower: the decision-maker rolls it back, the follower follows.
    for (n, gw) in [(0, &a), (1, &b)] {
        gw.write_config(&yaml("/status/500", n));
        assert_eq!(gw.reload().await.status, 200);
    }
    assert_eq!(send(Method::POST, &follower.admin_url("/admin/models/digits/rollout/restart"), &[], Bytes::new()).await.status, 200);
    let (vl, vf) = (wait_for_status(leader, "rolled_back").await, wait_for_status(follower, "rolled_back").await);
    assert_eq!((vl["weight"].as_f64(), vf["weight"].as_f64()), (Some(0.0), Some(0.0)));
    assert_eq!(vf["transitions"].as_array().unwrap().last().unwrap()["gateway"], leader_id.as_str());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for l in loads {
        l.await.unwrap();
    }
}
