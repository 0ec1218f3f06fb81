//! The Grafana dashboards and Prometheus alert rules in `deploy/` against a real Prometheus (apt `prometheus`,
//! installed by `scripts/test`) scraping a gateway and the model server after known traffic: every PromQL
//! expression of every panel and every rule's measure must run and return data; promtool must accept the rules.

use std::time::Duration;

use bytes::Bytes;
use http::Method;
use modelgate_test_support::{Gateway, ModelServer, create_key, eventually, repo_root, send};

/// `application/x-www-form-urlencoded` encoding of one value.
fn form(v: &str) -> String {
    v.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

async fn query(prom: &str, q: &str) -> serde_json::Value {
    let r = send(
        Method::POST,
        &format!("{prom}/api/v1/query"),
        &[("content-type", "application/x-www-form-urlencoded")],
        format!("query={}", form(q)),
    )
    .await;
    assert_eq!(r.status, 200, "{q}: {}", String::from_utf8_lossy(&r.body));
    r.json()
}

/// Every PromQL expression of the dashboards, and the measure (left of the comparison) of every alert rule.
fn expressions() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for file in ["deploy/grafana/modelgate-gateway.json", "deploy/grafana/modelgate-models.json"] {
        let d: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(repo_root().join(file)).unwrap()).unwrap();
        for p in d["panels"].as_array().unwrap() {
            for t in p["targets"].as_array().unwrap() {
                out.push((format!("{file}: {}", p["title"]), t["expr"].as_str().unwrap().to_string()));
            }
        }
    }
    let rules = std::fs::read_to_string(repo_root().join("deploy/prometheus/alerts.yml")).unwrap();
    for line in rules.lines().map(str::trim).filter_map(|l| l.strip_prefix("expr: ")) {
        let cut = [" > ", " < "].iter().filter_map(|op| line.rfind(op)).max().expect("a comparison");
        out.push(("deploy/prometheus/alerts.yml".into(), line[..cut].to_string()));
    }
    out
}

#[tokio::test]
async fn dashboards_and_alert_rules_query_real_data() {
    let promtool = tokio::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(repo_root().join("deploy/prometheus/alerts.yml"))
        .output()
        .await
        .expect("promtool (apt prometheus)");
    assert!(promtool.status.success(), "{}{}", String::from_utf8_lossy(&promtool.stdout), String::from_utf8_lossy(&promtool.stderr));

    let ms = ModelServer::start(&repo_root().join("examples/models")).await;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.yaml");
    let key = create_key(&keys, "team-a", &[]).await;
    let yaml = format!(
        r#"listen: 127.0.0.1:0
admin: {{ listen: 127.0.0.1:0 }}
identity: {{ api_keys: {{ file: "{keys}" }} }}
upstreams:
  models: {{ targets: ["http://{ms}"] }}
routes:
  - name: infer
    match: {{ path: "/v2/models/{{model}}/infer", methods: [POST] }}
    upstream: models
    plugins:
      - auth: {{ methods: [api_key] }}
      - rate_limit: {{ limits: [ {{ name: per-second, limit: 1000, per: 1s }} ] }}
      - concurrency: {{ limits: [ {{ name: slots, max: 64 }} ] }}
models:
  digits:
    versions:
      "1": {{ upstream: models, state: stable }}
      canary: {{ upstream: models, state: canary, path: "/v2/models/{{model}}/versions/1" }}
      shadow: {{ upstream: models, state: shadow, path: "/v2/models/{{model}}/versions/1", shadow: {{ sample: 100 }} }}
    rollout: {{ version: canary, steps: [50, 100], interval: 1s, min_samples: 100000 }}
"#,
        keys = keys.display(),
        ms = ms.addr
    );
    let gw = Gateway::start(&yaml).await;

    // A free port for Prometheus (it cannot report a port it picked itself).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cfg = dir.path().join("prometheus.yml");
    let admin = gw.admin_url("").trim_start_matches("http://").trim_end_matches('/').to_string();
    std::fs::write(
        &cfg,
        format!(
            "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\nrule_files: [\"{rules}\"]\nscrape_configs:\n  - {{ job_name: gateway, static_configs: [ {{ targets: [\"{admin}\"] }} ] }}\n  - {{ job_name: models, static_configs: [ {{ targets: [\"{ms}\"] }} ] }}\n",
            rules = repo_root().join("deploy/prometheus/alerts.yml").display(),
            ms = ms.addr
        ),
    )
    .unwrap();
    let _prometheus = tokio::process::Command::new("prometheus")
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("prometheus (apt prometheus)");
    let prom = format!("http://127.0.0.1:{port}");
    let ready = eventually(Duration::from_secs(30), || async {
        modelgate_test_support::try_send(&modelgate_test_support::client(), Method::GET, &format!("{prom}/-/ready"), &[], Bytes::new())
            .await
            .is_ok_and(|r| r.status == 200)
    })
    .await;
    assert!(ready, "prometheus did not become ready");

    // Known traffic, spread over a few scrapes so rates have two points: successes, a refused key, a reload.
    let body = std::fs::read(repo_root().join("examples/digits/request.json")).unwrap();
    let url = gw.url("/v2/models/digits/infer");
    let scraped = eventually(Duration::from_secs(60), || async {
        for _ in 0..5 {
            assert_eq!(send(Method::POST, &url, &[("x-api-key", &key)], body.clone()).await.status, 200);
        }
        send(Method::POST, &url, &[("x-api-key", "mg_000000000000_nope")], body.clone()).await;
        let enough = |q: &'static str| {
            let prom = prom.clone();
            async move { query(&prom, q).await["data"]["result"].as_array().is_some_and(|r| !r.is_empty()) }
        };
        enough("count_over_time(modelgate_requests_total[1m]) > 3").await
            && enough("count_over_time(modelgate_inference_requests_total[1m]) > 3").await
    })
    .await;
    assert!(scraped, "prometheus did not scrape the gateway and the model server");
    assert_eq!(gw.reload().await.status, 200);

    for (source, expr) in expressions() {
        let ok = eventually(Duration::from_secs(15), || async {
            let r = query(&prom, &expr).await;
            r["status"] == "success" && r["data"]["result"].as_array().is_some_and(|a| !a.is_empty())
        })
        .await;
        assert!(ok, "{source}: `{expr}` returned no data: {}", query(&prom, &expr).await);
    }
}
