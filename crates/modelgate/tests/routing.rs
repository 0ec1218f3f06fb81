//! Routing precedence and path safety, through the real binary and a real upstream process.

use http::Method;
use modelgate_test_support::{Gateway, Upstream, send};

/// One route in YAML; each route tags its responses with `x-route`.
fn route(name: &str, matcher: &str) -> String {
    format!(
        "  - name: {name}\n    match: {matcher}\n    upstream: u\n    plugins:\n      - headers: {{ response: {{ set: {{ x-route: {name} }} }} }}\n"
    )
}

fn config(upstream: &str, routes: &[(&str, &str)]) -> String {
    let mut y = format!(
        "listen: 127.0.0.1:0\nadmin: {{ listen: 127.0.0.1:0 }}\nupstreams:\n  u: {{ targets: [\"http://{upstream}\"] }}\nroutes:\n"
    );
    for (n, m) in routes {
        y.push_str(&route(n, m));
    }
    y
}

#[tokio::test]
async fn precedence_table() {
    let up = Upstream::start("u").await;
    let gw = Gateway::start(&config(
        &up.addr,
        &[
            ("catch-all", "{ path_prefix: / }"),
            ("v2-prefix", "{ path_prefix: /v2 }"),
            ("models-prefix", "{ path_prefix: /v2/models/ }"),
            ("model-template", "{ path: \"/v2/models/{model}/infer\" }"),
            ("model-exact", "{ path: /v2/models/special/infer }"),
            ("canary-header", "{ path: \"/v2/models/{model}/infer\", headers: { x-canary: \"1\" } }"),
            ("post-only", "{ path: /v2/post-only, methods: [POST] }"),
            ("files", "{ path: \"/files/{*rest}\" }"),
            ("host-exact", "{ hosts: [api.example.com], path_prefix: /v2 }"),
            ("host-wild", "{ hosts: [\"*.example.com\"], path_prefix: /v2 }"),
            ("host-wild-eu", "{ hosts: [\"*.eu.example.com\"], path_prefix: /v2 }"),
        ],
    ))
    .await;

    /// (host, method, path, extra header, expected route)
    type Case<'a> = (&'a str, Method, &'a str, Option<(&'a str, &'a str)>, &'a str);
    let table: &[Case] = &[
        ("localhost", Method::GET, "/", None, "catch-all"),
        ("localhost", Method::GET, "/v2", None, "v2-prefix"),
        ("localhost", Method::GET, "/v2/health/ready", None, "v2-prefix"),
        ("localhost", Method::GET, "/v2x", None, "catch-all"),
        ("localhost", Method::GET, "/v2/models", None, "models-prefix"),
        ("localhost", Method::GET, "/v2/models/resnet", None, "models-prefix"),
        ("localhost", Method::POST, "/v2/models/resnet/infer", None, "model-template"),
        ("localhost", Method::POST, "/v2/models/resnet/infer/extra", None, "models-prefix"),
        ("localhost", Method::POST, "/v2/models/special/infer", None, "model-exact"),
        ("localhost", Method::POST, "/v2/models/resnet/infer", Some(("x-canary", "1")), "canary-header"),
        ("localhost", Method::POST, "/v2/models/resnet/infer", Some(("x-canary", "2")), "model-template"),
        ("localhost", Method::POST, "/v2/models/special/infer", Some(("x-canary", "1")), "model-exact"),
        ("localhost", Method::POST, "/v2/post-only", None, "post-only"),
        ("localhost", Method::GET, "/v2/post-only", None, "v2-prefix"),
        ("localhost", Method::GET, "/files/a/b/c.txt", None, "files"),
        ("api.example.com", Method::GET, "/v2/x", None, "host-exact"),
        ("API.Example.COM:8080", Method::GET, "/v2/x", None, "host-exact"),
        ("api.example.com", Method::GET, "/other", None, "catch-all"),
        ("a.example.com", Method::GET, "/v2/x", None, "host-wild"),
        ("a.b.example.com", Method::GET, "/v2/x", None, "host-wild"),
        ("x.eu.example.com", Method::GET, "/v2/x", None, "host-wild-eu"),
        ("example.com", Method::GET, "/v2/x", None, "v2-prefix"),
    ];
    for (host, method, path, extra, want) in table {
        let mut headers = vec![("host", *host)];
        headers.extend(extra.iter().copied());
        let r = send(method.clone(), &gw.url(path), &headers, "").await;
        assert_eq!(r.status, 200, "{method} {host}{path}: {}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.header("x-route"), Some(*want), "{method} {host}{path} {extra:?}");
        assert_eq!(r.json()["path"], *path, "the upstream sees the matched path");
    }
}

#[tokio::test]
async fn not_found_and_method_not_allowed_are_json() {
    let up = Upstream::start("u").await;
    let gw = Gateway::start(&config(
        &up.addr,
        &[("submit", "{ path: /submit, methods: [POST, PUT] }"), ("read", "{ path: /read, methods: [GET] }")],
    ))
    .await;
    let r = send(Method::GET, &gw.url("/submit"), &[], "").await;
    r.assert_error(405, "method_not_allowed");
    assert_eq!(r.header("allow"), Some("POST, PUT"));
    assert_eq!(send(Method::HEAD, &gw.url("/read"), &[], "").await.status, 200, "HEAD is served by GET routes");
    send(Method::GET, &gw.url("/nowhere"), &[], "").await.assert_error(404, "route_not_found");
    let r = send(Method::GET, &gw.url("/nowhere"), &[("x-request-id", "trace-me-1")], "").await;
    assert_eq!(r.json()["error"]["request_id"], "trace-me-1");
    assert_eq!(r.header("x-request-id"), Some("trace-me-1"));
    assert_eq!(up.count().await, 1, "only the HEAD reached the upstream");
}

#[tokio::test]
async fn path_bypass_attempts_are_rejected_or_routed_by_normalized_path() {
    let up = Upstream::start("u").await;
    let gw = Gateway::start(&config(&up.addr, &[("public", "{ path_prefix: /v2/models/public }")])).await;

    // Each of these tries to reach /v2/models/secret through the public route: normalized first, they match nothing.
    for path in [
        "/v2/models/public/../secret/infer",
        "/v2/models/public/%2e%2e/secret/infer",
        "/v2/models/public/%2E%2E/secret/infer",
        "/v2/models/public/./../secret",
        "/v2/models/public/x/../../secret",
    ] {
        send(Method::GET, &gw.url(path), &[], "").await.assert_error(404, "route_not_found");
    }
    // Encoded slashes and escapes above the root are refused outright.
    for path in [
        "/v2/models/public%2F..%2Fsecret",
        "/v2/models/public/..%2Fsecret",
        "/v2/models/public/a%5c..%5csecret",
        "/v2/models/public/..;/secret/infer",
        "/v2/models/public/..;x=1/secret/infer",
        "/v2/models/public\\..\\secret",
        "/../../etc/passwd",
        "/v2/models/public/%zz",
    ] {
        send(Method::GET, &gw.url(path), &[], "").await.assert_error(400, "invalid_path");
    }
    assert_eq!(up.count().await, 0, "no bypass attempt reached the upstream");

    // Legitimate spellings are routed, and the upstream receives exactly the normalized path that matched.
    for (sent, seen) in [
        ("/v2/models/secret/../public/x", "/v2/models/public/x"),
        ("//v2//models/public/./a", "/v2/models/public/a"),
        ("/v2/models/%70ublic/a", "/v2/models/public/a"),
        ("/v2/models/public/a?x=%2F..&y=1", "/v2/models/public/a?x=%2F..&y=1"),
    ] {
        let r = send(Method::GET, &gw.url(sent), &[], "").await;
        assert_eq!(r.status, 200, "{sent}");
        assert_eq!(r.json()["path"], seen, "{sent}");
    }
}

/// `strip_prefix` (Kong's `strip_path`) and `upstream_path` (Kong's service path): what the upstream receives, the
/// query kept, the matched prefix cut on its own boundary only.
#[tokio::test]
async fn routes_rewrite_the_forwarded_path() {
    let up = Upstream::start("u").await;
    let yaml = format!(
        "listen: 127.0.0.1:0\nadmin: {{ listen: 127.0.0.1:0 }}\nupstreams:\n  u: {{ targets: [\"http://{}\"] }}\nroutes:\n\
         \x20 - {{ name: strip, match: {{ path_prefix: /text/ }}, upstream: u, strip_prefix: true }}\n\
         \x20 - {{ name: mount, match: {{ path_prefix: /api }}, upstream: u, strip_prefix: true, upstream_path: /v1/ }}\n\
         \x20 - {{ name: prefix-only, match: {{ path_prefix: /legacy }}, upstream: u, upstream_path: /old }}\n",
        up.addr
    );
    let gw = Gateway::start(&yaml).await;
    for (sent, seen) in [
        ("/text/generate", "/generate"),
        ("/text", "/"),
        ("/text?x=1", "/?x=1"),
        ("/text/a/b?x=1&y=2", "/a/b?x=1&y=2"),
        ("/api/models/x", "/v1/models/x"),
        ("/api", "/v1/"),
        ("/legacy/x?q=1", "/old/legacy/x?q=1"),
    ] {
        let r = send(Method::GET, &gw.url(sent), &[], "").await;
        assert_eq!(r.status, 200, "{sent}");
        assert_eq!(r.json()["path"], seen, "{sent}");
    }
    // `/textbook` is not under `/text`: no route.
    send(Method::GET, &gw.url("/textbook"), &[], "").await.assert_error(404, "route_not_found");
    // Refused in config: strip_prefix without a prefix, an upstream_path that is not a path.
    let bad =
        yaml.replace("path_prefix: /legacy", "path: /legacy").replace("upstream_path: /old", "upstream_path: old, strip_prefix: true");
    gw.write_config(&bad);
    let r = gw.reload().await;
    let body = String::from_utf8_lossy(&r.body).to_string();
    assert!(
        r.status == 422 && body.contains("strip_prefix needs `match.path_prefix`") && body.contains("\\\"old\\\" is not a path"),
        "{body}"
    );
}
