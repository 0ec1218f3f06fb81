//! The command line: `validate` output and exit codes, start-up failures, `up`, graceful shutdown.

use std::time::Duration;

use http::Method;
use modelgate_test_support::{Gateway, Proc, Upstream, bin, eventually, get, repo_root, send};

fn validate(dir: &std::path::Path, yaml: &str, files: &[(&str, &str)]) -> (i32, String) {
    let path = dir.join("gateway.yaml");
    std::fs::write(&path, yaml).unwrap();
    for (rel, content) in files {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    let out = std::process::Command::new(bin()).arg("validate").arg(&path).env_remove("MISSING_SECRET").output().unwrap();
    (out.status.code().unwrap(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

#[test]
fn validate_accepts_a_good_config() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = validate(
        dir.path(),
        "upstreams:\n  resnet-v4: { targets: [\"http://10.0.0.5:8000\"] }\nroutes:\n  - name: r\n    match: { path_prefix: / }\n    upstream: resnet-v4\n",
        &[],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("ok: ") && out.contains("1 routes, 1 upstreams"), "{out}");
}

#[test]
fn validate_reports_every_error_with_file_path_and_hint() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = r#"include: conf.d
upstreams:
  resnet-v3: { targets: ["http://10.0.0.3:8000"] }
  resnet-v4: { targets: ["http://10.0.0.4:8000"], timeouts: { connect: 2 parsecs } }
routes:
  - name: a
    match: { path_prefix: / }
    upstream: resnet-v3
  - name: a
    match: { path: /x }
    upstream: resnet-v3
  - name: c
    match: { path: "/v2/models/{m}/infer" }
    upstream: resnet-v5
    plugins:
      - request_size: { max_body: 8 parsecs }
      - rate_limiter: {}
  - name: d
    match: { path: /p, path_prefix: /p }
    upstream: resnet-v3
    plugins:
      - headers: { request: { set: { authorization: "${MISSING_SECRET}" } } }
"#;
    let (code, out) = validate(
        dir.path(),
        yaml,
        &[("conf.d/team.yaml", "routes:\n  - name: t\n    match: { path_prefix: /t, methodz: [GET] }\n    upstream: resnet-v3\n")],
    );
    assert_eq!(code, 1, "{out}");
    let main = dir.path().join("gateway.yaml").display().to_string();
    let team = dir.path().join("conf.d/team.yaml").display().to_string();
    for expected in [
        format!("{main}: routes[3].plugins[0].headers.request.set.authorization: environment variable \"MISSING_SECRET\" is not set"),
        format!(
            "{team}: routes[0].match.methodz: unknown field `methodz`, expected one of `hosts`, `path`, `path_prefix`, `methods`, `headers` (hint: did you mean `methods`?)"
        ),
    ] {
        assert!(out.contains(&expected), "missing {expected:?} in:\n{out}");
    }
    // A file that fails to parse stops at that file; fix it and the next layer of errors appears.
    let yaml = yaml.replace("${MISSING_SECRET}", "Bearer x");
    let (code, out) = validate(dir.path(), &yaml, &[("conf.d/team.yaml", "routes: []\n")]);
    assert_eq!(code, 1);
    let expected = format!("{main}: upstreams.resnet-v4.timeouts.connect: invalid duration");
    assert!(out.contains(&expected), "missing {expected:?} in:\n{out}");
    let yaml = yaml.replace("2 parsecs", "2s");
    let (code, out) = validate(dir.path(), &yaml, &[]);
    assert_eq!(code, 1);
    for expected in [
        format!("{main}: routes[1].name: route name \"a\" is already used at {main}: routes[0] (hint: route names must be unique)"),
        format!("{main}: routes[2].upstream: unknown upstream \"resnet-v5\" (hint: known: resnet-v3, resnet-v4)"),
        format!("{main}: routes[3].match: both `path` and `path_prefix` are set"),
    ] {
        assert!(out.contains(&expected), "missing {expected:?} in:\n{out}");
    }
    // Plugin settings are checked once the core config is valid.
    let yaml = yaml
        .replace("upstream: resnet-v5", "upstream: resnet-v4")
        .replace("path: /p, path_prefix: /p", "path: /p")
        .replace("  - name: a\n    match: { path: /x }", "  - name: b\n    match: { path: /x }");
    let (code, out) = validate(dir.path(), &yaml, &[]);
    assert_eq!(code, 1);
    for expected in [
        format!("{main}: routes[2].plugins[0].request_size.max_body: unknown size unit \"parsecs\""),
        format!(
            "{main}: routes[2].plugins[1].rate_limiter: unknown plugin \"rate_limiter\" (hint: known plugins: auth, policy, rate_limit, concurrency, request_size, tensor_validation, json_schema, guard, headers)"
        ),
    ] {
        assert!(out.contains(&expected), "missing {expected:?} in:\n{out}");
    }
    assert!(!out.contains("Bearer x"), "secrets never appear in errors");
}

#[test]
fn validate_explains_identity_mistakes() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = r#"identity:
  issuers:
    okta: { issuer: https://idp.example, audiences: [], algorithms: [none, HS256], hs_secret: short-secret-value }
  aws_iam:
    sts_endpoint: http://sts.amazonaws.com
    principals: [ { arn: "111122223333:user/alice", consumer: "" } ]
upstreams:
  u: { targets: ["http://127.0.0.1:9"] }
routes:
  - { name: r, match: { path_prefix: / }, upstream: u }
"#;
    let (code, out) = validate(dir.path(), yaml, &[]);
    assert_eq!(code, 1, "{out}");
    let main = dir.path().join("gateway.yaml").display().to_string();
    for expected in [
        format!("{main}: identity.issuers.okta.audiences: no audience"),
        format!("{main}: identity.issuers.okta.algorithms[0]: `none` means unsigned tokens and is never accepted (hint: remove it)"),
        format!("{main}: identity.issuers.okta.hs_secret: the shared secret is shorter than 32 bytes"),
        format!("{main}: identity.aws_iam.sts_endpoint: \"http://sts.amazonaws.com\" is not an https URL"),
        format!("{main}: identity.aws_iam.principals[0].arn: \"111122223333:user/alice\" is not an ARN pattern"),
        format!("{main}: identity.aws_iam.principals[0].consumer: empty consumer"),
    ] {
        assert!(out.contains(&expected), "missing {expected:?} in:\n{out}");
    }
    assert!(!out.contains("short-secret-value"), "secrets never appear in errors");
    // A route asking for a method that is not configured names the fix.
    let yaml = "upstreams:\n  u: { targets: [\"http://127.0.0.1:9\"] }\nroutes:\n  - { name: r, match: { path_prefix: / }, upstream: u, plugins: [ { auth: { methods: [aws_iam, saml] } } ] }\n";
    let (code, out) = validate(dir.path(), yaml, &[]);
    assert_eq!(code, 1);
    let expected = format!("{main}: routes[0].plugins[0].auth.methods[0]: aws_iam needs identity.aws_iam (hint: add identity.aws_iam:");
    assert!(out.contains(&expected), "missing {expected:?} in:\n{out}");
}

#[tokio::test]
async fn gateway_refuses_to_start_on_a_bad_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, "listen: nowhere\n").unwrap();
    let out = tokio::process::Command::new(bin()).args(["gateway", "--config", path.to_str().unwrap()]).output().await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("listen: invalid listen address \"nowhere\" (hint: write IP:PORT"), "{err}");
}

#[tokio::test]
async fn up_classifies_a_digit_with_the_readme_request() {
    let up = Proc::spawn(&["up", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"], &[]).await;
    let gw = up.ready["gateway"].as_str().unwrap();
    let key = up.ready["dev_key"].as_str().expect("up makes a dev key");
    let body = std::fs::read(repo_root().join("examples/digits/request.json")).unwrap();
    let url = format!("http://{gw}/v2/models/digits/infer");
    // Secure by default: no key, no inference.
    let r = send(Method::POST, &url, &[("content-type", "application/json")], body.clone()).await;
    r.assert_error(401, "unauthenticated");
    assert!(r.header("www-authenticate").is_some_and(|h| h.starts_with("Bearer")));
    let r = send(Method::POST, &url, &[("content-type", "application/json"), ("x-api-key", key)], body).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-served-by"), Some("modelgate"));
    assert_eq!(r.header("x-model-version"), Some("1"));
    assert!(r.header("ratelimit-policy").is_some_and(|p| p.contains("\"requests\";q=50;w=1")), "the example shows a rate limit");
    let bad =
        send(Method::POST, &url, &[("x-api-key", key)], r#"{"inputs":[{"name":"input","datatype":"FP32","shape":[1,64],"data":[0]}]}"#)
            .await;
    bad.assert_error(400, "invalid_tensor");
    let j = r.json();
    assert_eq!(j["id"], "digit-2");
    let logits: Vec<f64> = j["outputs"][0]["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let class = (0..10).max_by(|&a, &b| logits[a].total_cmp(&logits[b])).unwrap();
    assert_eq!(class, 2, "the example request is a handwritten 2: {logits:?}");
    let admin = up.ready["admin"].as_str().unwrap();
    assert_eq!(get(&format!("http://{admin}/admin/health")).await.json()["status"], "ok");
    // Health stays open for probes.
    assert_eq!(get(&format!("http://{gw}/v2/health/ready")).await.status, 200);
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits() {
    let up = Upstream::start("u").await;
    let mut gw = Gateway::start(&format!(
        "listen: 127.0.0.1:0\nadmin: {{ listen: 127.0.0.1:0 }}\nserver: {{ shutdown_grace: 10s }}\nupstreams:\n  u: {{ targets: [\"http://{}\"] }}\nroutes:\n  - name: r\n    match: {{ path_prefix: / }}\n    upstream: u\n",
        up.addr
    ))
    .await;
    let url = gw.url("/slow/1500");
    let slow = tokio::spawn(async move { get(&url).await });
    assert!(eventually(Duration::from_secs(5), || async { up.count().await == 1 }).await, "slow request in flight");
    gw.proc.signal("TERM");
    // New connections are refused once the listener closes ...
    let addr = gw.addr.clone();
    assert!(eventually(Duration::from_secs(5), || async { tokio::net::TcpStream::connect(&addr).await.is_err() }).await);
    // ... while the request in flight completes normally.
    let r = slow.await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["slept_ms"], "1500");
    let status = tokio::time::timeout(Duration::from_secs(10), gw.proc.child.wait()).await.expect("exits after draining").unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn ready_file_holds_the_same_line_as_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready.json");
    let p = Proc::spawn(&["up", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--ready-file", ready.to_str().unwrap()], &[])
        .await;
    let from_file: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&ready).unwrap()).unwrap();
    assert_eq!(from_file, p.ready);
    for key in ["gateway", "admin"] {
        let addr: std::net::SocketAddr = from_file[key].as_str().unwrap().parse().unwrap();
        assert_ne!(addr.port(), 0, "{key} reports the bound port, not 0");
    }
}

#[test]
fn version_names_the_commit_and_the_features() {
    let out = std::process::Command::new(bin()).arg("--version").output().unwrap();
    assert!(out.status.success());
    let line = String::from_utf8(out.stdout).unwrap();
    let rest = line.trim().strip_prefix(concat!("modelgate ", env!("CARGO_PKG_VERSION"), " (commit ")).unwrap_or_else(|| panic!("{line}"));
    let (commit, runtimes) = rest.split_once("; runtimes: ").unwrap_or_else(|| panic!("{line}"));
    // Built from this checkout: the commit is read from .git, not left `unknown`.
    assert!(commit.len() == 12 && commit.bytes().all(|b| b.is_ascii_hexdigit()), "{line}");
    // Every build carries both runtimes; onnxruntime's library is looked for at run time.
    assert_eq!(runtimes, "onnxruntime (found at run time), tract)", "{line}");
}

/// `up --model-repository DIR`: the dev key may call every model DIR serves (not only the bundled digits), and the
/// run's state directory (dev key file, audit log) is removed on exit; with `--state-dir` it is kept.
#[tokio::test]
async fn up_serves_the_users_models_and_cleans_up_its_state() {
    let repo = tempfile::tempdir().unwrap();
    let model_dir = repo.path().join("my-classifier/1");
    std::fs::create_dir_all(&model_dir).unwrap();
    for f in std::fs::read_dir(repo_root().join("examples/models/digits/1")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), model_dir.join(f.file_name())).unwrap();
    }
    for f in ["config.yaml", "config.json"] {
        let src = repo_root().join("examples/models/digits").join(f);
        if src.exists() {
            std::fs::copy(src, repo.path().join("my-classifier").join(f)).unwrap();
        }
    }
    let args = ["up", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--model-repository", repo.path().to_str().unwrap()];
    let mut up = Proc::spawn(&args, &[]).await;
    let gw = up.ready["gateway"].as_str().unwrap().to_string();
    let key = up.ready["dev_key"].as_str().unwrap().to_string();
    let state = std::path::PathBuf::from(up.ready["keys_file"].as_str().unwrap()).parent().unwrap().to_path_buf();
    let body = std::fs::read(repo_root().join("examples/digits/request.json")).unwrap();
    let r = send(Method::POST, &format!("http://{gw}/v2/models/my-classifier/infer"), &[("x-api-key", &key)], body).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(state.join("audit.log").exists());
    up.signal("TERM");
    let status = tokio::time::timeout(Duration::from_secs(20), up.child.wait()).await.expect("exits").unwrap();
    assert!(status.success(), "{status}");
    assert!(!state.exists(), "the state directory {} was left behind", state.display());

    let keep = tempfile::tempdir().unwrap();
    let args = ["up", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--state-dir", keep.path().to_str().unwrap()];
    let mut up = Proc::spawn(&args, &[]).await;
    up.signal("TERM");
    tokio::time::timeout(Duration::from_secs(20), up.child.wait()).await.expect("exits").unwrap();
    assert!(keep.path().join("keys.yaml").exists() && keep.path().join("audit.log").exists(), "--state-dir is kept");
}

/// A missing file is said to be missing, with a non-zero exit: not an empty key list, not a "broken" audit chain.
#[test]
fn missing_files_are_reported_as_missing() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.yaml");
    let out = std::process::Command::new(bin()).args(["keys", "list", "--file", keys.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no key file at"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!keys.exists(), "listing creates nothing");
    let log = dir.path().join("audit.log");
    let out = std::process::Command::new(bin()).args(["audit", "verify", log.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["status"], "not_found", "{line}");
}

/// `validate` warns about what is valid but silently wrong: a missing key file (every key refused), a rate limit
/// on a route without `auth` (every caller in one bucket); Kong plugin names get "did you mean"; a bare number
/// as a duration says how to write it.
#[test]
fn validate_warns_about_silent_mistakes_and_speaks_kong() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gw.yaml");
    let write_and_validate = |yaml: &str| {
        std::fs::write(&config, yaml).unwrap();
        let out = std::process::Command::new(bin()).args(["validate", config.to_str().unwrap()]).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let base = "listen: 127.0.0.1:0\nidentity: { api_keys: { file: missing-keys.yaml } }\nupstreams: { u: { targets: [\"http://127.0.0.1:9\"] } }\n";
    let (code, out) = write_and_validate(&format!(
        "{base}routes:\n  - {{ name: open, match: {{ path_prefix: / }}, upstream: u, plugins: [ {{ rate_limit: {{ limits: [ {{ limit: 10, per: 1s }} ] }} }} ] }}\n"
    ));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("warning: ") && out.contains("missing-keys.yaml does not exist"), "{out}");
    assert!(out.contains("routes[0].plugins[0].rate_limit") && out.contains("all share one limit"), "{out}");
    let (code, out) = write_and_validate(&format!(
        "{base}routes:\n  - {{ name: k, match: {{ path_prefix: / }}, upstream: u, plugins: [ {{ key-auth: {{}} }} ] }}\n"
    ));
    assert_eq!(code, Some(1));
    assert!(out.contains("did you mean `auth`?"), "{out}");
    let (code, out) = write_and_validate(
        &format!("{base}upstreams: {{ u: {{ targets: [\"http://127.0.0.1:9\"], timeouts: {{ connect: 3000 }} }} }}\nroutes: []\n")
            .replacen("upstreams: { u: { targets: [\"http://127.0.0.1:9\"] } }\n", "", 1),
    );
    assert_eq!(code, Some(1));
    assert!(out.contains("upstreams.u.timeouts.connect") && out.contains("write 3000ms or 3000s"), "{out}");
}

#[test]
fn validate_speaks_json_for_ci() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gw.yaml");
    std::fs::write(&config, "listen: nowhere\nupstreams: { u: { targets: [\"http://127.0.0.1:9\"] } }\nroutes:\n  - { name: a, match: { pathprefix: / }, upstream: u }\n").unwrap();
    let out = std::process::Command::new(bin()).args(["validate", "--output", "json", config.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["ok"], false);
    let paths: Vec<&str> = doc["errors"].as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert!(paths.contains(&"routes[0].match.pathprefix"), "{doc}");
    assert!(doc["errors"][0]["message"].is_string() && doc["warnings"].is_array(), "{doc}");
}

/// Less repetition: top-level default plugins apply to every route (an API key everywhere), a route opts out with
/// `inherit_plugins: false`; `/admin/routes` and `modelgate explain` show each plugin in effect and where it came from.
#[tokio::test]
async fn default_plugins_apply_everywhere_and_explain_shows_where_they_come_from() {
    let up = Upstream::start("u").await;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.yaml");
    let key = modelgate_test_support::create_key(&keys, "team-a", &[]).await;
    let yaml = format!(
        "listen: 127.0.0.1:0\nadmin: {{ listen: 127.0.0.1:0 }}\nidentity: {{ api_keys: {{ file: \"{}\" }} }}\n\
         plugins: [ {{ auth: {{ methods: [api_key] }} }} ]\n\
         plugin_sets: {{ gold: [ {{ headers: {{ response: {{ set: {{ x-tier: gold }} }} }} }} ] }}\n\
         upstreams: {{ u: {{ targets: [\"http://{}\"] }} }}\n\
         routes:\n  - {{ name: infer, match: {{ path_prefix: /v2 }}, upstream: u, plugin_sets: [gold] }}\n  - {{ name: health, match: {{ path: /healthz }}, upstream: u, inherit_plugins: false }}\n",
        keys.display(),
        up.addr
    );
    let gw = Gateway::start(&yaml).await;
    send(Method::GET, &gw.url("/v2/models"), &[], bytes::Bytes::new()).await.assert_error(401, "unauthenticated");
    let r = send(Method::GET, &gw.url("/v2/models"), &[("x-api-key", &key)], bytes::Bytes::new()).await;
    assert_eq!((r.status.as_u16(), r.header("x-tier")), (200, Some("gold")));
    assert_eq!(get(&gw.url("/healthz")).await.status, 200, "the opted-out route stays open");
    let routes = get(&gw.admin_url("/admin/routes")).await.json();
    let infer = &routes["routes"][0]["plugins"];
    assert_eq!(infer[0]["name"], "auth");
    assert!(infer[0]["from"].as_str().unwrap().ends_with(": plugins[0].auth"), "{infer}");
    assert!(infer[1]["from"].as_str().unwrap().ends_with(": plugin_sets.gold[0].headers"), "{infer}");
    let config = dir.path().join("gw.yaml");
    std::fs::write(&config, &yaml).unwrap();
    let out = std::process::Command::new(bin()).args(["explain", "--config", config.to_str().unwrap(), "infer"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains("path prefix /v2") && text.contains("plugins in effect (2)") && text.contains("plugin_sets.gold[0].headers"),
        "{text}"
    );
    let out = std::process::Command::new(bin())
        .args(["explain", "--config", config.to_str().unwrap(), "infer", "--output", "json"])
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((doc["route"].as_str(), doc["match"]["path"].as_str()), (Some("infer"), Some("path prefix /v2")), "{doc}");
    assert_eq!(doc["plugins"][0]["name"], "auth", "{doc}");
    assert!(doc["plugins"][1]["from"].as_str().unwrap().ends_with(": plugin_sets.gold[0].headers"), "{doc}");
}

/// The IdP examples (Okta, Auth0, Keycloak, Entra ID) are valid configs as shipped, given their variables.
#[test]
fn idp_examples_validate() {
    let dir = repo_root().join("examples/idp");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let out = std::process::Command::new(bin())
            .arg("validate")
            .arg(&path)
            .envs([
                ("OKTA_DOMAIN", "dev-123456.okta.com"),
                ("AUTH0_DOMAIN", "example.eu.auth0.com"),
                ("AUTH0_AUDIENCE", "https://models.example.com"),
                ("KEYCLOAK_URL", "https://sso.example.com"),
                ("KEYCLOAK_REALM", "ml"),
                ("ENTRA_TENANT_ID", "00000000-0000-0000-0000-000000000000"),
                ("ENTRA_CLIENT_ID", "11111111-1111-1111-1111-111111111111"),
                ("MODEL_SERVER", "127.0.0.1:8000"),
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.starts_with("ok: "), "{}: {text}", path.display());
        seen += 1;
    }
    assert_eq!(seen, 4, "okta, auth0, keycloak, entra-id");
}

#[test]
fn completions_and_man_page_come_from_the_cli_definition() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin()).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let bash = run(&["completions", "bash"]);
    assert!(bash.contains("_modelgate()") && bash.contains("validate") && bash.contains("--model-repository"), "{bash}");
    assert!(run(&["completions", "zsh"]).contains("#compdef modelgate"));
    let man = run(&["man"]);
    assert!(man.starts_with(".ie") && man.contains(".TH modelgate 1") && man.contains("gateway"), "{man}");
}

/// `modelgate probe` (the image's HEALTHCHECK): 0 for a 2xx answer, 1 for another status or no answer; the URL
/// from its argument or `MODELGATE_HEALTH_URL`.
#[tokio::test]
async fn probe_exits_by_the_answer() {
    let up = Upstream::failing("u", 503).await;
    let ok = Upstream::start("ok").await;
    let (_socket, refusing) = modelgate_test_support::refusing_addr();
    let run = |url: Option<String>, env: Option<String>| {
        let mut cmd = std::process::Command::new(bin());
        cmd.arg("probe").args(url).env_remove("MODELGATE_HEALTH_URL");
        if let Some(e) = env {
            cmd.env("MODELGATE_HEALTH_URL", e);
        }
        cmd.output().unwrap().status.code()
    };
    assert_eq!(run(Some(format!("http://{}/healthz", ok.addr)), None), Some(0));
    assert_eq!(run(None, Some(format!("http://{}/anything", ok.addr))), Some(0));
    assert_eq!(run(Some(format!("http://{}/x", up.addr)), None), Some(1));
    assert_eq!(run(Some(format!("http://{refusing}/x")), None), Some(1));
}

/// `keys list`: a table for people, `--output json` one object per line for scripts; neither shows a secret.
#[test]
fn keys_list_prints_a_table_or_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.yaml");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin()).args(args).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let file = keys.to_str().unwrap();
    let key = run(&["keys", "create", "--file", file, "--consumer", "alice"]);
    run(&["keys", "create", "--file", file, "--consumer", "bob"]);
    let table = run(&["keys", "list", "--file", file]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("ID ") && lines[0].ends_with("STATUS") && lines.len() == 3, "{table}");
    assert!(lines[1].contains("alice") && lines[1].ends_with("active") && lines[2].contains("bob"), "{table}");
    let json = run(&["keys", "list", "--file", file, "--output", "json"]);
    let objects: Vec<serde_json::Value> = json.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(objects.iter().map(|o| o["consumer"].as_str().unwrap()).collect::<Vec<_>>(), ["alice", "bob"]);
    assert!(!table.contains(key.trim()) && !json.contains(key.trim()), "a key was listed");
}
