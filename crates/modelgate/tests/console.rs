//! The web console end to end: the real IdP (node oidc-provider, authorization code flow with PKCE and a login
//! form), the real model server, the gateway, and Debian's headless Chromium driven by playwright-core
//! (tests/console/drive.mjs). Set `MODELGATE_UPDATE_SCREENSHOTS=1` to write the views' screenshots to docs/console/.
//!
//! Beside it, checks without a browser: the console's pages and cookies seen with plain HTTP, the login refusing a
//! callback it did not start, and an admin call with a session cookie but no CSRF token.

use std::process::Stdio;

use bytes::Bytes;
use http::Method;
use modelgate_test_support::{Gateway, Idp, ModelServer, Upstream, eventually, get, repo_root, send};

const ADMIN_GROUP: &str = "platform-admins";

fn config(idp: &str, ms: &str, app: &str, limit: u32) -> String {
    format!(
        r#"listen: 127.0.0.1:0
admin:
  listen: 127.0.0.1:0
  groups: [{ADMIN_GROUP}]
  console:
    issuer: company
    client_id: console
    client_secret: console-secret-0123456789
    scopes: [openid, email, profile, groups]
    cookie_secret: 0123456789abcdef0123456789abcdef-console
identity:
  issuers:
    company: {{ issuer: "{idp}", audiences: [urn:modelgate] }}
  api_keys: {{ file: keys.yaml }}
audit: {{ path: audit.log }}
upstreams:
  models: {{ targets: ["http://{ms}"] }}
  app: {{ targets: ["http://{app}"] }}
routes:
  # A web app for people: the same single sign-on as the console, its policy on the IdP's groups.
  - name: app
    match: {{ path_prefix: /app }}
    upstream: app
    plugins:
      - auth: {{ methods: [oidc_session] }}
      - policy: {{ allow: [{{ name: team-x, groups: [team-x] }}] }}
  - name: infer
    match: {{ path_prefix: /v2/models/digits, methods: [GET, POST] }}
    upstream: models
    plugins:
      - auth: {{ methods: [api_key] }}
      - policy:
          allow:
            - {{ name: team-a, consumers: [team-a], models: [digits] }}
            - {{ name: qa-canary, groups: [qa], models: [digits], versions: ["2"] }}
      - rate_limit: {{ limits: [{{ name: requests, limit: {limit}, per: 1s, by: [consumer] }}] }}
models:
  digits:
    versions:
      "1": {{ upstream: models, state: stable }}
      "2": {{ upstream: models, state: canary, weight: 0 }}
"#
    )
}

async fn start() -> (Idp, ModelServer, Upstream, Gateway) {
    let idp = Idp::start().await;
    let ms = ModelServer::start(&repo_root().join("examples/models")).await;
    let app = Upstream::start("app").await;
    let gw = Gateway::start_with(&config(&idp.issuer, &ms.addr, &app.addr, 100), &[("keys.yaml", "keys: []\n")], &[]).await;
    (idp, ms, app, gw)
}

/// Log in, see the overview after known traffic, create and revoke a key (a model call succeeds, then fails), search
/// the audit log for the calls, read a config diff, sign out (the cookie is dead at the server); a person outside the
/// admin groups is refused after logging in; CSRF and cookie flags checked.
#[tokio::test]
#[allow(clippy::disallowed_methods, reason = "the test's own settings: the Chromium path and whether to write screenshots")]
async fn a_person_signs_in_and_runs_the_gateway_from_the_console() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(std::path::Path::new(&chromium).exists(), "no Chromium at {chromium}: ./scripts/test installs Debian's chromium");
    let console_dir = repo_root().join("tests/console");
    assert!(console_dir.join("node_modules/playwright-core").exists(), "run ./scripts/test (it installs tests/console's npm packages)");
    let (idp, ms, app, gw) = start().await;

    // Known traffic: three answered calls with a key of team-a, two without a key (401).
    let keys = gw.dir.path().join("keys.yaml");
    let ops = modelgate_test_support::create_key(&keys, "ops", &["--groups", ADMIN_GROUP]).await;
    let key = modelgate_test_support::create_key(&keys, "team-a", &[]).await;
    let reload_url = gw.admin_url("/admin/reload");
    let reload = || async { send(Method::POST, &reload_url, &[("x-api-key", ops.as_str())], Bytes::new()).await };
    // The key file is watched: the operator's key works once the gateway has read it.
    assert!(eventually(std::time::Duration::from_secs(10), || async { reload().await.status == 200 }).await);
    let request = repo_root().join("examples/digits/request.json");
    let body = Bytes::from(std::fs::read(&request).unwrap());
    for _ in 0..3 {
        let r = send(Method::POST, &gw.url("/v2/models/digits/infer"), &[("x-api-key", key.as_str())], body.clone()).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    for _ in 0..2 {
        send(Method::POST, &gw.url("/v2/models/digits/infer"), &[], body.clone()).await.assert_error(401, "unauthenticated");
    }
    // A second config version, for the history and its diff.
    gw.write_config(&config(&idp.issuer, &ms.addr, &app.addr, 120));
    assert_eq!(reload().await.status, 200);

    let shots =
        if std::env::var("MODELGATE_UPDATE_SCREENSHOTS").is_ok() { repo_root().join("docs/console") } else { gw.dir.path().join("shots") };
    let out = tokio::process::Command::new("node")
        .arg("drive.mjs")
        .current_dir(&console_dir)
        .env("ADMIN", format!("http://{}", gw.admin))
        .env("GATEWAY", format!("http://{}", gw.addr))
        .env("REQUEST", &request)
        .env("EXPECT_REQUESTS", "5")
        .env("SHOTS", &shots)
        .env("APP", format!("http://{}/app/hello?x=1", gw.addr))
        .env("CHROMIUM", &chromium)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: serde_json::Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no summary from drive.mjs:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(summary["ok"], true, "{summary:#}\n{}", String::from_utf8_lossy(&out.stderr));

    // Cookie flags: HttpOnly, SameSite=Lax, path /, not Secure on loopback (Secure elsewhere: config test below).
    assert_eq!(summary["cookie"], serde_json::json!({ "httpOnly": true, "sameSite": "Lax", "secure": false, "path": "/" }));
    assert_eq!(summary["cookie_leaks_id"], true, "the cookie is a sealed blob, not a readable id");
    assert_eq!(summary["overview_requests"], 5);
    assert_eq!(summary["overview_versions"], 1, "the served version appears with its traffic");
    assert_eq!(
        summary["policy"],
        serde_json::json!(["team-a: consumer team-a may call digits", "qa-canary: members of group qa may call digits versions 2"])
    );
    let versions = summary["model_versions"].as_array().unwrap();
    assert!(versions[0].as_str().unwrap().starts_with("1stable100.0 %"), "{versions:?}");
    assert!(versions[1].as_str().unwrap().starts_with("2canary0.0 %"), "{versions:?}");
    assert_eq!(summary["call_with_new_key"], 200);
    assert_eq!(summary["call_after_revoke"], 401);
    assert_eq!(summary["key_shown_after_revoke"], 0, "the key is shown once");
    assert!(summary["audit_allowed"].as_u64().unwrap() >= 4, "the three calls and the new key's: {summary}");
    assert_eq!(summary["chain"], "intact");
    assert!(summary["audit_revoked"].as_array().unwrap().iter().any(|r| r.as_str().unwrap().contains("revoked")), "{summary}");
    let diff = summary["diff"].as_str().unwrap();
    assert!(diff.contains("-") && diff.contains("limit") && diff.contains("120"), "{diff}");
    assert_eq!(summary["keyboard"], serde_json::json!(["Skip to content", "Overview", "Routes", "routes"]), "{summary}");
    assert_eq!(summary["post_without_token"], 403);
    assert_eq!(summary["post_with_token"], 200);
    assert_eq!(summary["cross_site_post"], 403);
    assert_eq!(summary["after_logout_url"], "/console/signed-out", "{summary}");
    assert_eq!(summary["replayed_cookie"], 401, "a logged-out session's cookie opens nothing");
    assert_eq!(summary["outsider_title"], "Not an administrator");
    assert_eq!(summary["outsider_cookie"], false);
    assert_eq!(summary["outsider_api"], 401);

    // The same single sign-on in front of a web app (`oidc_session`): bob was sent to sign in and back, the app saw
    // who he is and not his session cookie; alice, outside the app's policy, is refused after signing in.
    let seen = &summary["app_seen"];
    assert_eq!(seen["path"], "/app/hello?x=1", "{summary}");
    assert_eq!(seen["headers"]["x-modelgate-consumer"], "bob@example.com", "{seen}");
    assert_eq!(seen["headers"]["x-modelgate-auth-method"], "oidc_session", "{seen}");
    assert!(!seen["headers"].to_string().contains("mg_session"), "the session cookie is not forwarded: {seen}");
    assert_eq!(summary["app_alice_status"], 403);
    assert_eq!(summary["app_script_without_session"], 401, "scripts get 401, only page loads are redirected");
    assert_eq!(summary["app_after_logout"], "/.modelgate/login", "{summary}");

    // The audit log names the people: alice's login, key creation and revocation; bob's refused login.
    let audit = std::fs::read_to_string(gw.dir.path().join("audit.log")).unwrap();
    let lines: Vec<serde_json::Value> = audit.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let has = |consumer: &str, decision: &str, reason: &str| {
        lines
            .iter()
            .any(|l| l["consumer"] == consumer && l["decision"] == decision && l["reason"].as_str().unwrap_or_default().contains(reason))
    };
    assert!(has("alice@example.com", "allow", "console_login"));
    assert!(has("alice@example.com", "ok", "key_created:"));
    assert!(has("alice@example.com", "ok", "key_revoked:"));
    assert!(has("alice@example.com", "allow", "console_logout"));
    assert!(has("bob@example.com", "deny", "not_an_admin"));
    assert!(has("bob@example.com", "allow", "sso_login"));
    assert!(has("alice@example.com", "deny", "no_rule_matched"));
    assert!(lines.iter().any(|l| l["method"] == "oidc_session"), "the session is its own method in the audit log");
}

/// Without a browser: the console sends people to the IdP with PKCE and a sealed login cookie; a callback it did not
/// start is refused; pages carry their security headers; the admin API refuses a session cookie it did not seal.
#[tokio::test]
async fn the_login_flow_holds_nothing_for_strangers() {
    let (idp, _ms, _app, gw) = start().await;
    let r = get(&gw.admin_url("/console/")).await;
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("/console/login"));
    let r = get(&gw.admin_url("/console/login?return_to=https://evil.example/")).await;
    assert_eq!(r.status, 302);
    let location = r.header("location").unwrap();
    assert!(location.starts_with(&format!("{}/auth?", idp.issuer)), "{location}");
    for part in
        ["code_challenge_method=S256", "code_challenge=", "state=", "nonce=", "client_id=console", "scope=openid+email+profile+groups"]
    {
        assert!(location.contains(part), "{part} in {location}");
    }
    let redirect = format!("redirect_uri=http%3A%2F%2F{}%2Fconsole%2Fcallback", gw.admin.replace(':', "%3A"));
    assert!(location.contains(&redirect), "the bound admin address: {location}");
    let cookie = r.header("set-cookie").unwrap();
    assert!(cookie.starts_with("mg_login=") && cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"), "{cookie}");
    assert!(cookie.contains("Path=/console/") && cookie.contains("Max-Age=600"), "{cookie}");
    assert!(!cookie.contains("Secure"), "loopback");

    // A callback without the login cookie (a forged or replayed link) is refused before the IdP is asked anything.
    let r = get(&gw.admin_url("/console/callback?code=abc&state=xyz")).await;
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains("stale"), "{}", String::from_utf8_lossy(&r.body));
    // An IdP error is shown escaped.
    let r = get(&gw.admin_url("/console/callback?error=access_denied&error_description=%3Cscript%3Ex%3C%2Fscript%3E")).await;
    assert_eq!(r.status, 401);
    let page = String::from_utf8_lossy(&r.body);
    assert!(page.contains("&lt;script&gt;") && !page.contains("<script>x"), "{page}");
    assert!(r.header("content-security-policy").unwrap().contains("frame-ancestors 'none'"));
    assert_eq!(r.header("referrer-policy"), Some("same-origin"));
    assert_eq!(r.header("cache-control"), Some("no-store"));

    // Cookies not sealed by this gateway are no credential; the API stays 401.
    for forged in ["mg_session=abc", "mg_session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"] {
        let r = send(Method::GET, &gw.admin_url("/admin/health"), &[("cookie", forged)], Bytes::new()).await;
        assert_eq!(r.status, 401, "{forged}");
    }
    // The assets are served from the binary, with the same headers.
    let js = get(&gw.admin_url("/console/assets/console.js")).await;
    assert_eq!(js.status, 200);
    assert_eq!(js.header("content-type"), Some("text/javascript; charset=utf-8"));
    assert_eq!(js.header("x-content-type-options"), Some("nosniff"));
}
