//! Hot reload: admin API, SIGHUP, file watch, include directory, rejected reloads, and 50 reloads under load with
//! no failed request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use modelgate_test_support::{Gateway, Upstream, client, eventually, get, refusing_addr, send, try_send};

fn config(upstream: &str, tag: &str, extra_routes: &str) -> String {
    format!(
        "listen: 127.0.0.1:0
admin: {{ listen: 127.0.0.1:0 }}
include: conf.d
server: {{ reload_debounce: 50ms }}
upstreams:
  u: {{ targets: [\"http://{upstream}\"] }}
routes:
  - name: main
    match: {{ path_prefix: /v2 }}
    upstream: u
    plugins:
      - headers: {{ response: {{ set: {{ x-tag: \"{tag}\" }} }} }}
{extra_routes}"
    )
}

async fn tag(gw: &Gateway) -> String {
    get(&gw.url("/v2/x")).await.header("x-tag").unwrap_or("").to_string()
}

#[tokio::test]
async fn admin_reload_applies_and_bad_config_keeps_the_old_one() {
    let up = Upstream::start("u").await;
    let gw = Gateway::start_with(&config(&up.addr, "one", ""), &[("conf.d/.keep", "")], &[]).await;
    assert_eq!(tag(&gw).await, "one");
    let v1 = gw.version().await;

    gw.write_config(&config(&up.addr, "two", ""));
    let r = gw.reload().await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(tag(&gw).await, "two");
    let v2 = gw.version().await;
    assert_ne!(v1, v2);

    // A route naming an unknown upstream: rejected with file, path and hint; the old config keeps serving.
    let bad = config(&up.addr, "three", "  - name: broken\n    match: { path: /b }\n    upstream: resnet-v5\n");
    gw.write_config(&bad);
    let r = gw.reload().await;
    r.assert_error(422, "config_invalid");
    let details = &r.json()["error"]["details"][0];
    assert_eq!(details["path"], "routes[1].upstream");
    assert!(details["message"].as_str().unwrap().contains("resnet-v5"));
    assert_eq!(details["hint"], "known: u");
    assert!(details["file"].as_str().unwrap().ends_with("gateway.yaml"));
    assert_eq!(tag(&gw).await, "two");
    let status = get(&gw.admin_url("/admin/config/status")).await.json();
    assert_eq!(status["version"], v2.as_str());
    assert_eq!(status["reloads_failed"], 1);
    assert_eq!(status["last_error"]["trigger"], "admin_api");
    assert_eq!(status["last_error"]["errors"][0]["path"], "routes[1].upstream");

    // YAML that does not parse is rejected the same way.
    gw.write_config("routes: [unclosed");
    gw.reload().await.assert_error(422, "config_invalid");
    assert_eq!(tag(&gw).await, "two");
}

#[tokio::test]
async fn sighup_and_file_watch_reload() {
    let up = Upstream::start("u").await;
    let gw = Gateway::start_with(&config(&up.addr, "one", ""), &[("conf.d/.keep", "")], &[]).await;

    // File watch: just writing the file is enough.
    gw.write_config(&config(&up.addr, "watched", ""));
    assert!(eventually(Duration::from_secs(10), || async { tag(&gw).await == "watched" }).await, "file change not picked up");

    // An editor truncating the file before writing it: the empty file seen in between is rejected and the old
    // config keeps serving; the write that follows is picked up.
    let failed_before = get(&gw.admin_url("/admin/config/status")).await.json()["reloads_failed"].as_u64().unwrap();
    std::fs::write(&gw.config, "").unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            get(&gw.admin_url("/admin/config/status")).await.json()["reloads_failed"].as_u64().unwrap() > failed_before
        })
        .await,
        "the empty file was not seen"
    );
    assert_eq!(tag(&gw).await, "watched");
    gw.write_config(&config(&up.addr, "rewritten", ""));
    assert!(eventually(Duration::from_secs(10), || async { tag(&gw).await == "rewritten" }).await);

    // A new team file in the include directory adds its route.
    std::fs::write(
        gw.dir.path().join("conf.d/team-a.yaml"),
        "upstreams:\n  team-a: { targets: [\"http://".to_string()
            + &up.addr
            + "\"] }\nroutes:\n  - name: team-a\n    match: { path_prefix: /team-a }\n    upstream: team-a\n",
    )
    .unwrap();
    assert!(eventually(Duration::from_secs(10), || async { get(&gw.url("/team-a/x")).await.status == 200 }).await);
    let status = get(&gw.admin_url("/admin/config/status")).await.json();
    assert!(status["files"].as_array().unwrap().iter().any(|f| f.as_str().unwrap().ends_with("conf.d/team-a.yaml")), "{status}");

    // SIGHUP.
    let before = get(&gw.admin_url("/admin/config/status")).await.json()["reloads_succeeded"].as_u64().unwrap();
    gw.proc.signal("HUP");
    assert!(
        eventually(Duration::from_secs(10), || async {
            get(&gw.admin_url("/admin/config/status")).await.json()["reloads_succeeded"].as_u64().unwrap() > before
        })
        .await
    );
}

#[tokio::test]
async fn reload_50_times_under_load_without_a_failed_request() {
    let up = Upstream::start("u").await;
    let gw = Arc::new(Gateway::start_with(&config(&up.addr, "t0", ""), &[("conf.d/.keep", "")], &[]).await);
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (gw, stop, ok) = (gw.clone(), stop.clone(), ok.clone());
        workers.push(tokio::spawn(async move {
            let c = client();
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match try_send(&c, Method::GET, &gw.url("/v2/x"), &[], Bytes::new()).await {
                    Ok(r) if r.status == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => failures.push(format!("{} {}", r.status, String::from_utf8_lossy(&r.body))),
                    Err(e) => failures.push(e.to_string()),
                }
            }
            failures
        }));
    }
    for i in 1..=50 {
        gw.write_config(&config(&up.addr, &format!("t{i}"), ""));
        let r = gw.reload().await;
        assert_eq!(r.status, 200, "reload {i}: {}", String::from_utf8_lossy(&r.body));
    }
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for w in workers {
        failures.extend(w.await.unwrap());
    }
    assert!(failures.is_empty(), "{} failed requests, first: {:?}", failures.len(), failures.first());
    assert!(ok.load(Ordering::Relaxed) >= 50, "load ran during the reloads");
    assert_eq!(tag(&gw).await, "t50");
}

#[tokio::test]
async fn unchanged_upstreams_keep_health_state_across_reloads() {
    let (_dead_guard, dead) = refusing_addr();
    let live = Upstream::start("live").await;
    let yaml = |tag: &str| {
        format!(
            "listen: 127.0.0.1:0
admin: {{ listen: 127.0.0.1:0 }}
upstreams:
  u:
    targets: [\"http://{dead}\", \"http://{}\"]
    passive_health: {{ consecutive_failures: 1, cooldown: 1h }}
routes:
  - name: r
    match: {{ path_prefix: / }}
    upstream: u
    plugins: [ {{ headers: {{ response: {{ set: {{ x-tag: {tag} }} }} }} }} ]
",
            live.addr
        )
    };
    let gw = Gateway::start(&yaml("a")).await;
    for _ in 0..3 {
        assert_eq!(get(&gw.url("/x")).await.status, 200);
    }
    let ejected = |j: serde_json::Value| j[0]["targets"][0]["ejected"].as_bool().unwrap();
    assert!(ejected(get(&gw.admin_url("/admin/upstreams")).await.json()));
    gw.write_config(&yaml("b"));
    assert_eq!(gw.reload().await.status, 200);
    assert_eq!(get(&gw.url("/x")).await.header("x-tag"), Some("b"));
    assert!(ejected(get(&gw.admin_url("/admin/upstreams")).await.json()), "the ejection survived the reload");
}

#[tokio::test]
async fn admin_config_redacts_secrets_and_env_values() {
    let up = Upstream::start("u").await;
    let yaml = format!(
        "listen: 127.0.0.1:0
admin: {{ listen: 127.0.0.1:0 }}
redis: {{ url: \"redis://:inline-pw-789@127.0.0.1:1/0\" }}
upstreams:
  u: {{ targets: [\"http://{}\"] }}
routes:
  - name: r
    match: {{ path_prefix: / }}
    upstream: u
    plugins:
      - headers: {{ request: {{ set: {{ authorization: \"Bearer literal-secret-123\", x-api-token: \"${{UPSTREAM_TOKEN}}\" }} }} }}
",
        up.addr
    );
    let gw = Gateway::start_with(&yaml, &[], &[("UPSTREAM_TOKEN", "env-secret-456")]).await;
    // The secret from the environment reaches the upstream ...
    assert_eq!(get(&gw.url("/x")).await.json()["headers"]["x-api-token"], "env-secret-456");
    // ... but never the admin view.
    let shown = get(&gw.admin_url("/admin/config")).await;
    let text = String::from_utf8_lossy(&shown.body);
    assert!(!text.contains("literal-secret-123") && !text.contains("env-secret-456") && !text.contains("inline-pw-789"), "{text}");
    assert!(text.contains("redis://<redacted>@127.0.0.1:1/0"), "{text}");
    assert!(text.contains("${UPSTREAM_TOKEN}") && text.contains("<redacted>"), "{text}");
}

/// Config history: every applied config is kept (newest first), each viewable, and one can be restored — its files
/// written back, a fragment added since moved aside — and serves again.
#[tokio::test]
async fn config_history_lists_applied_versions_and_rollback_restores_one() {
    let up = Upstream::start("u").await;
    let gw = Gateway::start_with(&config(&up.addr, "one", ""), &[("conf.d/.keep", "")], &[]).await;
    let v1 = gw.version().await;
    gw.write_config(&config(&up.addr, "two", ""));
    assert_eq!(gw.reload().await.status, 200);
    std::fs::write(gw.dir.path().join("conf.d/team.yaml"), "routes:\n  - { name: team, match: { path_prefix: /team }, upstream: u }\n")
        .unwrap();
    assert_eq!(gw.reload().await.status, 200);
    let v3 = gw.version().await;
    assert_eq!((tag(&gw).await.as_str(), get(&gw.url("/team/x")).await.status.as_u16()), ("two", 200));

    let history = get(&gw.admin_url("/admin/config/history")).await.json();
    let versions: Vec<&str> = history["history"].as_array().unwrap().iter().map(|h| h["version"].as_str().unwrap()).collect();
    assert_eq!((versions.first(), versions.last(), versions.len()), (Some(&v3.as_str()), Some(&v1.as_str()), 3), "{history}");
    assert_eq!(history["history"][2]["trigger"], "start");
    let old = get(&gw.admin_url(&format!("/admin/config/history/{v1}"))).await;
    assert_eq!(old.status, 200);
    assert!(old.json().to_string().contains("\"one\""), "{}", old.json());

    // The diff between the first and the active config: the tag changed, the fragment appeared.
    let diff = get(&gw.admin_url(&format!("/admin/config/diff?from={v1}"))).await;
    let text = String::from_utf8(diff.body.to_vec()).unwrap();
    assert_eq!(diff.status, 200);
    assert!(text.contains("-") && text.contains("\"one\"") && text.contains("+") && text.contains("\"two\""), "{text}");
    assert!(text.contains("team.yaml") && text.contains("+  \"routes\""), "{text}");
    get(&gw.admin_url("/admin/config/diff?from=nope")).await.assert_error(404, "not_found");

    let r = send(Method::POST, &gw.admin_url(&format!("/admin/config/rollback?version={v1}")), &[], Bytes::new()).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["version"], v1.as_str());
    assert_eq!(tag(&gw).await, "one");
    get(&gw.url("/team/x")).await.assert_error(404, "route_not_found");
    assert!(gw.dir.path().join("conf.d/team.yaml.rolled-back").exists(), "the newer fragment is moved aside, not deleted");
    send(Method::POST, &gw.admin_url("/admin/config/rollback?version=nope"), &[], Bytes::new()).await.assert_error(404, "not_found");
}

/// Namespaces: a team's include file inside its guardrails serves; an edit that captures another team's paths, or
/// a platform change that makes the team's file invalid, is refused naming the team's file and the rule, and the
/// running config keeps serving the team's route.
#[tokio::test]
async fn team_files_are_held_to_their_namespace_at_every_reload() {
    let up = Upstream::start("team-a").await;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.yaml");
    let key = modelgate_test_support::create_key(&keys, "alice", &[]).await;
    let main = |max_body: &str| {
        format!(
            r#"listen: 127.0.0.1:0
admin: {{ listen: 127.0.0.1:0 }}
include: teams
identity: {{ api_keys: {{ file: "{keys}" }} }}
namespaces:
  team-a: {{ paths: [/v2/models/team-a-], upstream_hosts: [127.0.0.1], auth_methods: [api_key], max_body: {max_body} }}
  team-b: {{ paths: [/v2/models/team-b-] }}
"#,
            keys = keys.display()
        )
    };
    let team = |prefix: &str| {
        format!(
            "upstreams:\n  a: {{ targets: [\"http://{}\"] }}\nroutes:\n  - name: a\n    match: {{ path_prefix: {prefix} }}\n    upstream: a\n    plugins: [ {{ auth: {{ methods: [api_key] }} }}, {{ request_size: {{ max_body: 1MiB }} }} ]\n",
            up.addr
        )
    };
    let gw = Gateway::start_with(&main("1MiB"), &[("teams/team-a.yaml", &team("/v2/models/team-a-digits"))], &[]).await;
    let call = || async { send(Method::POST, &gw.url("/v2/models/team-a-digits/infer"), &[("x-api-key", &key)], Bytes::new()).await };
    assert_eq!(call().await.status, 200);

    std::fs::write(gw.dir.path().join("teams/team-a.yaml"), team("/v2/models/team-b-digits")).unwrap();
    let r = gw.reload().await;
    r.assert_error(422, "config_invalid");
    let d = &r.json()["error"]["details"][0];
    assert!(d["file"].as_str().unwrap().ends_with("team-a.yaml") && d["path"] == "routes[0].match.path_prefix", "{d}");
    assert!(d["message"].as_str().unwrap().contains("namespace team-a"), "{d}");
    assert_eq!(call().await.status, 200, "the running config keeps serving");

    std::fs::write(gw.dir.path().join("teams/team-a.yaml"), team("/v2/models/team-a-digits")).unwrap();
    gw.write_config(&main("512KiB"));
    let r = gw.reload().await;
    r.assert_error(422, "config_invalid");
    assert!(r.json()["error"]["details"][0]["message"].as_str().unwrap().contains("at most 524288 bytes"), "{}", r.json());
    assert_eq!(call().await.status, 200);
}

/// The namespace API: an owner checks a change (dry run: no effect, the diff it would make), applies it — written to
/// the namespace's include file and live at once — and removes it; another team's owner is refused, and so is a
/// change outside the guardrails, which names the rule and leaves the file as it was. `modelgate apply` does the
/// same from a file; every change is audited with who made it.
#[tokio::test]
async fn owners_change_their_namespace_through_the_api_inside_its_guardrails() {
    let up = Upstream::start("team-a").await;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.yaml");
    let alice = modelgate_test_support::create_key(&keys, "alice", &[]).await;
    let bob = modelgate_test_support::create_key(&keys, "bob", &[]).await;
    let audit = dir.path().join("audit.log");
    let gw = Gateway::start_with(
        &format!(
            r#"listen: 127.0.0.1:0
admin: {{ listen: 127.0.0.1:0 }}
include: teams
audit: {{ path: "{audit}", fsync: always }}
identity: {{ api_keys: {{ file: "{keys}" }} }}
namespaces:
  team-a: {{ owners: {{ consumers: [alice] }}, paths: [/v2/models/team-a-], upstream_hosts: [127.0.0.1], auth_methods: [api_key], max_routes: 1 }}
  team-b: {{ owners: {{ consumers: [bob] }}, paths: [/v2/models/team-b-] }}
"#,
            keys = keys.display(),
            audit = audit.display()
        ),
        &[("teams/README", "team files go here\n")],
        &[],
    )
    .await;
    let api = |path: &str| gw.admin_url(&format!("/admin/namespaces/{path}"));
    let as_ = |key: &str| format!("Bearer {key}");
    let upstream = format!(r#"{{"targets": ["http://{}"]}}"#, up.addr);
    let route = |prefix: &str| {
        format!(r#"{{"match": {{"path_prefix": "{prefix}"}}, "upstream": "a", "plugins": [{{"auth": {{"methods": ["api_key"]}}}}]}}"#)
    };

    // Dry run: the diff, no effect.
    let r = send(Method::PUT, &api("team-a/upstreams/a?dry_run=true"), &[("authorization", &as_(&alice))], upstream.clone()).await;
    assert_eq!(r.status, 200, "{}", r.json());
    let predicted = r.json()["diff"].as_str().unwrap().to_string();
    assert!(predicted.contains("+upstreams:") && r.json()["dry_run"] == true, "{predicted}");
    assert!(!gw.dir.path().join("teams/team-a.yaml").exists(), "a dry run writes nothing");
    // Applied: the same diff, written, live.
    let r = send(Method::PUT, &api("team-a/upstreams/a"), &[("authorization", &as_(&alice))], upstream.clone()).await;
    assert_eq!((r.status.as_u16(), r.json()["diff"].as_str()), (200, Some(predicted.as_str())), "{}", r.json());
    let r = send(Method::PUT, &api("team-a/routes/a-digits"), &[("authorization", &as_(&alice))], route("/v2/models/team-a-digits")).await;
    assert_eq!(r.status, 200, "{}", r.json());
    assert!(r.json()["version"].is_string());
    let call = || async { send(Method::POST, &gw.url("/v2/models/team-a-digits/infer"), &[("x-api-key", &alice)], Bytes::new()).await };
    assert_eq!(call().await.status, 200, "live as soon as the API answered");

    // Not an owner, no credential, outside the guardrails: refused, the file unchanged.
    let before = std::fs::read_to_string(gw.dir.path().join("teams/team-a.yaml")).unwrap();
    send(Method::PUT, &api("team-a/routes/x"), &[("authorization", &as_(&bob))], route("/v2/models/team-a-x"))
        .await
        .assert_error(403, "forbidden");
    send(Method::PUT, &api("team-a/routes/x"), &[], route("/v2/models/team-a-x")).await.assert_error(401, "unauthenticated");
    let r = send(Method::PUT, &api("team-a/routes/capture"), &[("authorization", &as_(&alice))], route("/v2/models/team-b-digits")).await;
    r.assert_error(409, "route_conflict");
    let details = r.json()["error"]["details"].as_array().unwrap().clone();
    let d = details.iter().find(|d| d["rule"] == "namespace.capture").expect("the capture refusal");
    assert_eq!(d["path"], "routes[1].match.path_prefix", "{}", r.json());
    assert!(d["message"].as_str().unwrap().contains("capture namespace team-b's traffic (owners: bob)"), "{d}");
    assert!(r.json()["error"]["diff"].as_str().unwrap().contains("team-b-digits"));
    // A second route inside the guardrails: refused by the quota alone, saying what is left.
    let r = send(Method::PUT, &api("team-a/routes/second"), &[("authorization", &as_(&alice))], route("/v2/models/team-a-second")).await;
    r.assert_error(403, "quota_exceeded");
    assert!(r.json()["error"]["details"][0]["message"].as_str().unwrap().contains("the quota is 1 (0 left)"), "{}", r.json());
    let open = r#"{"match": {"path_prefix": "/v2/models/team-a-open"}, "upstream": "a"}"#;
    let r = send(Method::PUT, &api("team-a/routes/open"), &[("authorization", &as_(&alice))], open).await;
    r.assert_error(422, "config_invalid");
    let rules: Vec<String> =
        r.json()["error"]["details"].as_array().unwrap().iter().map(|d| d["rule"].as_str().unwrap_or("").to_string()).collect();
    assert!(rules.contains(&"namespace.auth".to_string()), "{}", r.json());
    assert_eq!(std::fs::read_to_string(gw.dir.path().join("teams/team-a.yaml")).unwrap(), before);
    assert_eq!(call().await.status, 200);

    // `modelgate apply` from a file (dry run), then the route removed.
    let file = dir.path().join("team-a.yaml");
    std::fs::write(&file, before.replace("team-a-digits", "team-a-digits2")).unwrap();
    let out = std::process::Command::new(modelgate_test_support::bin())
        .args(["apply", "-n", "team-a", file.to_str().unwrap(), "--dry-run", "--admin", &gw.admin_url("")])
        .env("MODELGATE_TOKEN", &alice)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("path_prefix: /v2/models/team-a-digits2"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = send(Method::DELETE, &api("team-a/routes/a-digits"), &[("authorization", &as_(&alice))], Bytes::new()).await;
    assert_eq!(r.status, 200, "{}", r.json());
    call().await.assert_error(404, "route_not_found");
    let view = get_with(&api("team-a"), &alice).await;
    assert_eq!(
        (view["routes"].as_array().map(Vec::len), view["upstreams"]["a"]["targets"][0].as_str()),
        (Some(0), Some(&*format!("http://{}", up.addr)))
    );

    // The history lists the applied changes, newest first; reverting the removal brings the route back.
    let h = get_with(&api("team-a/history"), &alice).await;
    let entries = h["history"].as_array().unwrap();
    assert_eq!(entries.len(), 3, "{h:#}");
    assert_eq!((entries[0]["change"].as_u64(), entries[0]["by"].as_str()), (Some(3), Some("alice")));
    assert!(entries[0]["diff"].as_str().unwrap().contains("-- name: a-digits"), "{h:#}");
    let r = send(Method::POST, &api("team-a/revert?change=3"), &[("authorization", &as_(&alice))], Bytes::new()).await;
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(call().await.status, 200, "the reverted removal: the route is back");
    assert_eq!(std::fs::read_to_string(gw.dir.path().join("teams/team-a.yaml")).unwrap(), before);

    let log = std::fs::read_to_string(&audit).unwrap();
    let changes: Vec<&str> = log.lines().filter(|l| l.contains(r#""type":"namespace""#)).collect();
    assert!(changes.len() >= 6 && changes.iter().all(|l| l.contains("alice") || l.contains("bob")), "{log}");
}

async fn get_with(url: &str, key: &str) -> serde_json::Value {
    send(Method::GET, url, &[("authorization", &format!("Bearer {key}"))], Bytes::new()).await.json()
}

/// Two gateways sharing a Redis: a namespace change accepted by one is live on the other within 2 s (each has its
/// own include directory); with Redis down, changes are refused with 503 and both keep serving.
#[tokio::test]
async fn a_namespace_change_on_one_gateway_is_live_on_the_other() {
    let mut redis = modelgate_test_support::RedisServer::start().await;
    let up = Upstream::start("team-a").await;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.yaml");
    let alice = modelgate_test_support::create_key(&keys, "alice", &[]).await;
    let yaml = format!(
        r#"listen: 127.0.0.1:0
admin: {{ listen: 127.0.0.1:0 }}
include: teams
redis: {{ url: "{redis}", command_timeout: 200ms, connect_timeout: 200ms }}
identity: {{ api_keys: {{ file: "{keys}" }} }}
namespaces:
  team-a: {{ owners: {{ consumers: [alice] }}, paths: [/v2/models/team-a-], auth_methods: [api_key] }}
"#,
        redis = redis.url,
        keys = keys.display()
    );
    let files = [("teams/README", "team files\n")];
    let (a, b) = (Gateway::start_with(&yaml, &files, &[]).await, Gateway::start_with(&yaml, &files, &[]).await);
    let file = |prefix: &str| {
        format!(
            "upstreams:\n  a: {{ targets: [\"http://{}\"] }}\nroutes:\n  - name: a\n    match: {{ path_prefix: {prefix} }}\n    upstream: a\n    plugins: [ {{ auth: {{ methods: [api_key] }} }} ]\n",
            up.addr
        )
    };
    let auth = format!("Bearer {alice}");
    let r =
        send(Method::PUT, &a.admin_url("/admin/namespaces/team-a"), &[("authorization", &auth)], file("/v2/models/team-a-digits")).await;
    assert_eq!(r.status, 200, "{}", r.json());
    let call = |gw: &Gateway, path: &str| {
        let (url, key) = (gw.url(path), alice.clone());
        async move { send(Method::POST, &url, &[("x-api-key", &key)], Bytes::new()).await.status.as_u16() }
    };
    let live = eventually(Duration::from_secs(2), || async { call(&b, "/v2/models/team-a-digits/infer").await == 200 }).await;
    assert!(live, "the change was not live on the other gateway within 2 s");
    assert!(b.dir.path().join("teams/team-a.yaml").exists(), "written to the other gateway's include directory too");
    // Announced by pub/sub, not found by the 5 s catch-up read: three changes in a row, each live within 1 s.
    for i in 1..=3 {
        let path = format!("/v2/models/team-a-v{i}");
        let r = send(Method::PUT, &a.admin_url("/admin/namespaces/team-a"), &[("authorization", &auth)], file(&path)).await;
        assert_eq!(r.status, 200, "{}", r.json());
        let live = eventually(Duration::from_secs(1), || async { call(&b, &format!("{path}/infer")).await == 200 }).await;
        assert!(live, "change {i} was not live on the other gateway within 1 s");
    }
    let r =
        send(Method::PUT, &a.admin_url("/admin/namespaces/team-a"), &[("authorization", &auth)], file("/v2/models/team-a-digits")).await;
    assert_eq!(r.status, 200, "{}", r.json());

    redis.kill().await;
    let r = send(Method::PUT, &a.admin_url("/admin/namespaces/team-a"), &[("authorization", &auth)], file("/v2/models/team-a-other")).await;
    r.assert_error(503, "shared_store_unavailable");
    assert_eq!((call(&a, "/v2/models/team-a-digits/infer").await, call(&b, "/v2/models/team-a-digits/infer").await), (200, 200));
}

/// Property: for any change, its dry run predicts the applied change exactly — the same verdict and the same diff —
/// and the same guardrail verdicts — and a dry run changes nothing. 80 random changes (seeded): routes, upstreams and
/// models put and deleted, inside and outside the namespace's guardrails.
#[tokio::test]
async fn a_dry_run_predicts_the_applied_change() {
    let up = Upstream::start("team-a").await;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.yaml");
    let alice = modelgate_test_support::create_key(&keys, "alice", &[]).await;
    let gw = Gateway::start_with(
        &format!(
            r#"listen: 127.0.0.1:0
admin: {{ listen: 127.0.0.1:0 }}
include: teams
identity: {{ api_keys: {{ file: "{keys}" }} }}
namespaces:
  team-a: {{ owners: {{ consumers: [alice] }}, paths: [/v2/models/team-a-], auth_methods: [api_key], max_routes: 3, max_models: 1 }}
"#,
            keys = keys.display()
        ),
        &[("teams/README", "team files\n")],
        &[],
    )
    .await;
    let auth = format!("Bearer {alice}");
    let file = gw.dir.path().join("teams/team-a.yaml");
    let mut seen = std::collections::BTreeMap::new();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for step in 0..80 {
        let name = ["r1", "r2", "r3", "r4", "u1", "u2", "team-a-m1", "team-a-m2", "team-b-m3"][next(9) as usize];
        let (kind, body) = if name.contains("-m") {
            let upstream = ["u1", "u2"][next(2) as usize];
            ("models", format!(r#"{{"versions": {{"1": {{"upstream": "{upstream}", "state": "stable", "probe": "none"}}}}}}"#))
        } else if name.starts_with('r') {
            let prefix = ["/v2/models/team-a-x", "/v2/models/team-a-y", "/v2/models/team-b-z"][next(3) as usize];
            let upstream = ["u1", "u2"][next(2) as usize];
            let auth = if next(5) == 0 { "[]" } else { r#"[{"auth": {"methods": ["api_key"]}}]"# };
            ("routes", format!(r#"{{"match": {{"path_prefix": "{prefix}"}}, "upstream": "{upstream}", "plugins": {auth}}}"#))
        } else {
            ("upstreams", format!(r#"{{"targets": ["http://{}"]}}"#, up.addr))
        };
        let method = if next(4) == 0 { Method::DELETE } else { Method::PUT };
        let url = |dry: bool| gw.admin_url(&format!("/admin/namespaces/team-a/{kind}/{name}{}", if dry { "?dry_run=true" } else { "" }));
        let before = std::fs::read_to_string(&file).unwrap_or_default();
        let dry = send(method.clone(), &url(true), &[("authorization", &auth)], body.clone()).await;
        assert_eq!(std::fs::read_to_string(&file).unwrap_or_default(), before, "step {step}: a dry run changed the file");
        let applied = send(method.clone(), &url(false), &[("authorization", &auth)], body.clone()).await;
        let (d, a) = (dry.json(), applied.json());
        assert_eq!(dry.status, applied.status, "step {step} {method} {kind}/{name}: {d} vs {a}");
        let diff = |v: &serde_json::Value| v["diff"].as_str().or(v["error"]["diff"].as_str()).map(String::from);
        assert_eq!(diff(&d), diff(&a), "step {step}: the dry run's diff is not the applied one");
        let verdicts = |v: &serde_json::Value| v.get("verdicts").or(v["error"].get("verdicts")).cloned();
        assert_eq!(verdicts(&d), verdicts(&a), "step {step}: the dry run's verdicts are not the applied change's");
        if applied.status != 200 {
            assert_eq!(std::fs::read_to_string(&file).unwrap_or_default(), before, "step {step}: a refused change wrote the file");
        }
        *seen.entry(applied.status.as_u16()).or_insert(0) += 1;
    }
    // Both kinds of outcome were exercised: applied changes, and refusals by a guardrail or a missing object.
    let refused: u32 = seen.iter().filter(|(s, _)| **s != 200).map(|(_, n)| *n).sum();
    assert!(seen.get(&200).is_some_and(|n| *n >= 10) && refused >= 5, "{seen:?}");
}

/// A Kubernetes ConfigMap volume updated in place: the kubelet writes the new files into a fresh timestamped
/// directory and swaps the `..data` symlink (the config file is a link through it and never changes itself). The
/// gateway reloads on the swap.
#[tokio::test]
async fn a_configmap_volume_updated_in_place_is_reloaded() {
    let up = Upstream::start("u").await;
    let dir = tempfile::tempdir().unwrap();
    let cm = dir.path();
    let publish = |generation: &str, yaml: &str| {
        let data = cm.join(format!("..2026_12_01_00_00_0{generation}.000000001"));
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("gateway.yaml"), yaml).unwrap();
        // As the kubelet's atomic writer: a new link beside the old, renamed over it.
        let tmp = cm.join("..data_tmp");
        std::os::unix::fs::symlink(data.file_name().unwrap(), &tmp).unwrap();
        std::fs::rename(&tmp, cm.join("..data")).unwrap();
    };
    let plain = |tag: &str| config(&up.addr, tag, "").replace("include: conf.d\n", "");
    publish("1", &plain("first"));
    std::os::unix::fs::symlink("..data/gateway.yaml", cm.join("gateway.yaml")).unwrap();
    let config_path = cm.join("gateway.yaml");
    let proc = modelgate_test_support::Proc::spawn(&["gateway", "--config", config_path.to_str().unwrap(), "--workers", "1"], &[]).await;
    let addr = proc.ready["gateway"].as_str().unwrap().to_string();
    let tag_at = || {
        let url = format!("http://{addr}/v2/x");
        async move { get(&url).await.header("x-tag").unwrap_or("").to_string() }
    };
    assert_eq!(tag_at().await, "first");
    publish("2", &plain("second"));
    assert!(eventually(Duration::from_secs(10), || async { tag_at().await == "second" }).await, "the ..data swap was not picked up");
}
