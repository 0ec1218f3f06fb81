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
