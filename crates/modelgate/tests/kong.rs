//! `modelgate import kong`: a realistic decK file (examples/kong/kong.yaml) imported, its report, and the same
//! requests against the imported config giving Kong's outcomes (401, 403, 413, 429 with headers).

use bytes::Bytes;
use http::Method;
use modelgate_test_support::{Gateway, Upstream, bin, repo_root, send};

fn import(file: &std::path::Path, out: &std::path::Path, upstream: &str, strict: bool) -> (Option<i32>, String) {
    let mut cmd = std::process::Command::new(bin());
    cmd.args(["import", "kong"]).arg(file).arg("--output").arg(out).env("DECK_UPSTREAM", upstream);
    if strict {
        cmd.arg("--strict");
    }
    let o = cmd.output().unwrap();
    (o.status.code(), String::from_utf8_lossy(&o.stderr).into_owned())
}

#[tokio::test]
async fn an_imported_kong_config_answers_as_kong_did() {
    let up = Upstream::start("digits").await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("imported");
    let kong = repo_root().join("examples/kong/kong.yaml");
    let (code, stderr) = import(&kong, &out, &up.addr, false);
    assert_eq!(code, Some(0), "{stderr}");

    // The report: every entity, field and plugin not converted, with its JSON path.
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("import-report.json")).unwrap()).unwrap();
    let skipped: Vec<&str> = report["not_converted"].as_array().unwrap().iter().map(|s| s["path"].as_str().unwrap()).collect();
    for path in [
        "$.plugins[1]",                     // cors
        "$.services[0].routes[1].paths[0]", // a regex path
        "$.services[1].routes[0].preserve_host",
        "$.consumers[1].jwt_secrets[0]",
        "$.consumers[2].keyauth_credentials[0]", // too short to import
    ] {
        assert!(skipped.contains(&path), "{path} not reported: {report:#}");
    }
    assert_eq!(skipped.len(), 5, "{report:#}");
    assert_eq!(
        report["converted"],
        serde_json::json!({ "services": 2, "routes": 2, "upstreams": 1, "consumers": 3, "keyauth_credentials": 2, "plugins": 5 })
    );
    // --strict fails on them.
    let (code, _) = import(&kong, &dir.path().join("strict"), &up.addr, true);
    assert_eq!(code, Some(1));

    // Credentials hashed, never written in clear; no secret anywhere.
    let written: String =
        ["gateway.yaml", "keys.yaml", "import-report.json"].iter().map(|f| std::fs::read_to_string(out.join(f)).unwrap()).collect();
    for secret in ["alice-key-0123456789abcdef", "bob-key-0123456789abcdef0", "bob-hs-secret-0123456789"] {
        assert!(!written.contains(secret), "{secret} was written");
    }
    let check = std::process::Command::new(bin()).arg("validate").arg(out.join("gateway.yaml")).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));

    // The imported config, served.
    let yaml = std::fs::read_to_string(out.join("gateway.yaml"))
        .unwrap()
        .replace("listen: 0.0.0.0:8080", "listen: 127.0.0.1:0")
        .replace("listen: 127.0.0.1:8081", "listen: 127.0.0.1:0");
    let keys = std::fs::read_to_string(out.join("keys.yaml")).unwrap();
    let gw = Gateway::start_with(&yaml, &[("keys.yaml", &keys)], &[]).await;
    let url = gw.url("/v2/models/digits/infer");
    let call = |key: Option<&'static str>, body: Bytes| {
        let url = url.clone();
        async move {
            let headers: Vec<(&str, &str)> = key.map(|k| ("apikey", k)).into_iter().collect();
            send(Method::POST, &url, &headers, body).await
        }
    };
    let small = Bytes::from_static(b"{\"inputs\": []}");
    call(None, small.clone()).await.assert_error(401, "unauthenticated");
    call(Some("bob-key-0123456789abcdef0"), small.clone()).await.assert_error(403, "forbidden");
    call(Some("alice-key-0123456789abcdef"), Bytes::from(vec![b' '; 2048])).await.assert_error(413, "payload_too_large");
    let ok = call(Some("alice-key-0123456789abcdef"), small.clone()).await;
    assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.body));
    // hide_credentials: the key does not reach the upstream.
    assert!(ok.json()["headers"].get("apikey").is_none(), "{}", ok.json());
    // second: 3 — within the second the fourth call is refused with the limit's headers.
    let mut limited = None;
    for _ in 0..6 {
        let r = call(Some("alice-key-0123456789abcdef"), small.clone()).await;
        if r.status == 429 {
            limited = Some(r);
            break;
        }
    }
    let r = limited.expect("no 429 within 6 calls at 3 per second");
    r.assert_error(429, "rate_limited");
    assert!(r.headers.contains_key("retry-after") && r.headers.contains_key("ratelimit-policy"), "{:?}", r.headers);

    // strip_path (Kong's default) and the service path: /text/hello reaches the upstream as /api/hello, on the
    // route's host and header only.
    let text = |host: &'static str, team: &'static str| {
        let url = gw.url("/text/hello?x=1");
        async move { send(Method::GET, &url, &[("host", host), ("x-team", team)], Bytes::new()).await }
    };
    let r = text("api.example.com", "nlp").await;
    assert_eq!((r.status.as_u16(), r.json()["path"].as_str()), (200, Some("/api/hello?x=1")), "{}", String::from_utf8_lossy(&r.body));
    text("other.example.com", "nlp").await.assert_error(404, "route_not_found");
    text("api.example.com", "vision").await.assert_error(404, "route_not_found");
}

/// Hundreds of services and routes import, and the result loads.
#[test]
fn a_large_kong_file_imports() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("_format_version: \"3.0\"\nservices:\n");
    for i in 0..400 {
        text.push_str(&format!(
            "  - name: svc-{i}\n    url: http://10.0.{}.{}:8000\n    routes:\n      - {{ name: r-{i}, paths: [/m{i}, /n{i}], strip_path: false, methods: [POST] }}\n    plugins:\n      - {{ name: rate-limiting, config: {{ minute: {} }} }}\n",
            i / 250,
            i % 250,
            100 + i
        ));
    }
    let file = dir.path().join("kong.yaml");
    std::fs::write(&file, text).unwrap();
    let out = dir.path().join("out");
    let (code, stderr) = import(&file, &out, "unused:1", true);
    assert_eq!(code, Some(0), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("import-report.json")).unwrap()).unwrap();
    assert_eq!((report["converted"]["services"].as_u64(), report["converted"]["routes"].as_u64()), (Some(400), Some(800)));
}
