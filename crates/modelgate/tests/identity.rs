//! Identity at the edge, end to end: API keys made with the real CLI, JWTs from a real OpenID Connect provider
//! (node `oidc-provider`), per-model/version policy, identity headers to upstreams, the attack table, IdP key
//! rotation and outage, AWS IAM callers against an STS stand-in, and the hash-chained audit log (including `kill -9` with `fsync: always`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use modelgate_test_support::{
    Gateway, Idp, RedisServer, Resp, StsStandIn, Upstream, aws_iam_token, bin, create_key, eventually, get, send,
};

fn config(issuer: &str, upstream: &str, extra_issuer: &str) -> String {
    format!(
        r#"listen: 127.0.0.1:0
admin: {{ listen: 127.0.0.1:0 }}
identity:
  issuers:
    idp:
      issuer: {issuer}
      audiences: [urn:modelgate, urn:modelgate:es]
      algorithms: [RS256, ES256]
      consumer_claim: client_id
      leeway: 0s
      max_token_lifetime: 1h
      jwks_min_refetch: 0s
{extra_issuer}
  api_keys: {{ file: keys.yaml }}
audit: {{ path: audit.log, fsync: always }}
upstreams:
  u: {{ targets: ["http://{upstream}"] }}
routes:
  - name: models
    match: {{ path_prefix: /v2/models }}
    upstream: u
    plugins:
      - auth: {{ methods: [api_key, jwt] }}
      - policy:
          allow:
            - {{ name: vision-digits, groups: [vision], models: [digits] }}
            - {{ name: team-b-text-v2, consumers: [team-b], models: [text], versions: ["2"] }}
            - {{ name: vision-scope, scopes: ["vision:infer"], models: ["vision-*"] }}
  - name: open
    match: {{ path_prefix: /open }}
    upstream: u
"#
    )
}

async fn call(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> Resp {
    send(Method::POST, &gw.url(path), headers, Bytes::from_static(b"{}")).await
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

/// The audit records, parsed.
fn audit_lines(gw: &Gateway) -> Vec<serde_json::Value> {
    std::fs::read_to_string(gw.dir.path().join("audit.log")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

async fn verify_audit(files: &[&Path]) -> (bool, serde_json::Value) {
    let mut args = vec!["audit".to_string(), "verify".to_string()];
    args.extend(files.iter().map(|f| f.display().to_string()));
    let out = tokio::process::Command::new(bin()).args(&args).output().await.unwrap();
    (out.status.success(), serde_json::from_slice(&out.stdout).unwrap())
}

#[tokio::test]
async fn policy_matrix_identity_headers_and_attack_table() {
    let idp = Idp::start().await;
    let other_idp = Idp::start().await;
    let up = Upstream::start("u").await;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.yaml");
    let key_a = create_key(&keys, "team-a", &["--groups", "vision"]).await;
    let key_b = create_key(&keys, "team-b", &[]).await;
    let key_revoked = create_key(&keys, "team-a", &["--groups", "vision"]).await;
    let revoked_id = &key_revoked[3..15];
    let out =
        tokio::process::Command::new(bin()).args(["keys", "revoke", "--file", keys.to_str().unwrap(), revoked_id]).output().await.unwrap();
    assert!(out.status.success());
    let keys_text = std::fs::read_to_string(&keys).unwrap();
    assert!(!keys_text.contains(&key_a[16..]), "only hashes are stored");
    let gw = Gateway::start_with(&config(&idp.issuer, &up.addr, ""), &[("keys.yaml", &keys_text)], &[]).await;

    let jwt_a = idp.token("team-a", "digits:infer", "urn:modelgate").await;
    let jwt_a_es = idp.token("team-a", "vision:infer", "urn:modelgate:es").await;
    let jwt_b = idp.token("team-b", "digits:infer", "urn:modelgate").await;

    // Policy matrix: two teams, two models, two versions, two credential kinds.
    let (ka, kb) = (vec![("x-api-key", key_a.as_str())], vec![("x-api-key", key_b.as_str())]);
    let (ja, jae, jb) = (bearer(&jwt_a), bearer(&jwt_a_es), bearer(&jwt_b));
    let (ja, jae, jb) = (vec![("authorization", ja.as_str())], vec![("authorization", jae.as_str())], vec![("authorization", jb.as_str())]);
    let bearer_key_b = bearer(&key_b);
    let kb_bearer = vec![("authorization", bearer_key_b.as_str())];
    type Headers<'h> = &'h [(&'h str, &'h str)];
    let matrix: &[(&str, Headers, u16)] = &[
        ("/v2/models/digits/infer", &ka, 200),
        ("/v2/models/digits/versions/1/infer", &ka, 200),
        ("/v2/models/digits/infer", &kb, 403),
        ("/v2/models/digits/infer", &ja, 200),
        ("/v2/models/digits/versions/2/infer", &jae, 200),
        ("/v2/models/digits/infer", &jb, 403),
        ("/v2/models/text/versions/2/infer", &kb, 200),
        ("/v2/models/text/versions/2/infer", &kb_bearer, 200),
        ("/v2/models/text/versions/2/infer", &jb, 200),
        ("/v2/models/text/versions/1/infer", &kb, 403),
        ("/v2/models/text/infer", &kb, 403),
        ("/v2/models/text/versions/2/infer", &ka, 403),
        ("/v2/models/text/versions/2/infer", &ja, 403),
        ("/v2/models/vision-x/infer", &jae, 200),
        ("/v2/models/vision-x/infer", &ja, 403),
        // The policy sees the normalized path the upstream receives: no escaping a rule with `..`.
        ("/v2/models/text/versions/2/../../../digits/infer", &kb, 403),
    ];
    for (path, headers, want) in matrix {
        let r = call(&gw, path, headers).await;
        if r.status.as_u16() != *want {
            let rid = r.header("x-request-id").unwrap_or_default().to_string();
            let line = audit_lines(&gw).into_iter().find(|l| l["request_id"] == rid.as_str());
            panic!("{path} with {:?}: got {}, want {want}; audit: {line:?}", headers[0].0, r.status);
        }
        if *want == 403 {
            r.assert_error(403, "forbidden");
            let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
            assert!(!msg.contains("rule") && !msg.contains("team"), "no policy details leak: {msg}");
        }
    }

    // Identity to the upstream: set by the gateway, a client's copies stripped.
    let mut spoof = ka.clone();
    spoof.push(("x-modelgate-consumer", "admin"));
    spoof.push(("x-modelgate-scopes", "*"));
    let echo = call(&gw, "/v2/models/digits/infer", &spoof).await.json();
    assert_eq!(echo["headers"]["x-modelgate-consumer"], "team-a", "{echo}");
    assert_eq!(echo["headers"]["x-modelgate-auth-method"], "api_key");
    assert!(echo["headers"].get("x-api-key").is_none(), "the credential stops at the gateway: {echo}");
    let echo = call(&gw, "/v2/models/digits/infer", &ja).await.json();
    assert!(echo["headers"].get("authorization").is_none(), "the bearer token stops at the gateway: {echo}");
    assert_eq!(
        (echo["headers"]["x-modelgate-consumer"].as_str(), echo["headers"]["x-modelgate-subject"].as_str()),
        (Some("team-a"), Some("team-a"))
    );
    assert_eq!(echo["headers"]["x-modelgate-scopes"], "digits:infer");
    // A route without auth: spoofed identity headers never reach the upstream either.
    let echo = send(Method::GET, &gw.url("/open/x"), &[("x-modelgate-consumer", "admin")], Bytes::new()).await.json();
    assert!(echo["headers"].get("x-modelgate-consumer").is_none(), "{echo}");

    // The attack table: each refused with 401 (or 503 when keys cannot be had) and an audit line with the reason.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let truncated = {
        let t = idp.sign(serde_json::json!({})).await;
        t[..t.len() - 8].to_string()
    };
    let attacks: Vec<(&str, String, &[&str])> = vec![
        ("alg-none", idp.forge("none").await, &["token_malformed", "algorithm_not_allowed"]),
        ("hs256-with-rsa-public-key", idp.forge("hs256-pubkey").await, &["algorithm_not_allowed"]),
        ("unknown-kid", idp.forge("rogue-kid").await, &["unknown_kid"]),
        ("jku-header", idp.forge("jku").await, &["unknown_kid"]),
        ("x5u-header", idp.forge("x5u").await, &["unknown_kid"]),
        ("forged-with-known-kid", idp.forge("wrong-key-same-kid").await, &["bad_signature"]),
        ("expired", idp.sign(serde_json::json!({"iat": now - 600, "exp": now - 300})).await, &["token_expired"]),
        ("not-yet-valid", idp.sign(serde_json::json!({"nbf": now + 300})).await, &["token_not_yet_valid"]),
        ("wrong-audience", idp.sign(serde_json::json!({"aud": "urn:other-service"})).await, &["wrong_audience"]),
        ("wrong-issuer", idp.sign(serde_json::json!({"iss": "https://evil.example"})).await, &["wrong_issuer"]),
        (
            "other-issuers-key",
            other_idp.token("team-a", "digits:infer", "urn:modelgate").await,
            &["wrong_issuer", "bad_signature", "unknown_kid"],
        ),
        ("truncated-signature", truncated, &["bad_signature", "token_malformed"]),
        ("64kb-token", format!("{}.{}.{}", "e".repeat(100), "a".repeat(64 << 10), "s"), &["token_too_large"]),
        ("too-long-lifetime", idp.token("long", "digits:infer", "urn:modelgate").await, &["token_lifetime_too_long"]),
        ("garbage", "not-a-token".to_string(), &["token_malformed"]),
    ];
    for (name, token, reasons) in &attacks {
        let auth = bearer(token);
        let rid = format!("attack-{name}");
        let r = call(&gw, "/v2/models/digits/infer", &[("authorization", &auth), ("x-request-id", &rid)]).await;
        r.assert_error(401, "unauthenticated");
        assert!(r.header("www-authenticate").is_some_and(|h| h.contains("invalid_token")), "{name}");
        let line =
            audit_lines(&gw).into_iter().find(|l| l["request_id"] == rid.as_str()).unwrap_or_else(|| panic!("no audit line for {name}"));
        assert_eq!(line["decision"], "deny", "{name}: {line}");
        assert!(reasons.contains(&line["reason"].as_str().unwrap()), "{name}: reason {} not in {reasons:?}", line["reason"]);
    }
    assert_eq!(call(&gw, "/v2/models/digits/infer", &[]).await.json()["error"]["code"], "unauthenticated");
    let expired = call(&gw, "/v2/models/digits/infer", &[("authorization", &bearer(&attacks[6].1))]).await;
    assert_eq!(expired.json()["error"]["message"], "the credentials have expired");
    // API keys: revoked, unknown, wrong secret.
    for (name, key, reason) in [
        ("revoked", key_revoked.clone(), "api_key_revoked"),
        ("unknown", "mg_000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_string(), "api_key_unknown"),
        ("wrong-secret", format!("{}{}", &key_a[..16], "B".repeat(43)), "api_key_wrong_secret"),
    ] {
        let rid = format!("key-{name}");
        call(&gw, "/v2/models/digits/infer", &[("x-api-key", &key), ("x-request-id", &rid)]).await.assert_error(401, "unauthenticated");
        let line = audit_lines(&gw).into_iter().find(|l| l["request_id"] == rid.as_str()).unwrap();
        assert_eq!(line["reason"], reason, "{line}");
    }

    // The audit log: allow lines name the rule; no secret or token anywhere; the chain verifies; an edit is caught.
    let text = std::fs::read_to_string(gw.dir.path().join("audit.log")).unwrap();
    for secret in [&key_a, &key_b, &jwt_a, &jwt_b, &key_revoked] {
        assert!(!text.contains(secret.as_str()) && !text.contains(&secret[secret.len() - 20..]), "a credential leaked into the audit log");
    }
    assert!(audit_lines(&gw).iter().any(|l| l["decision"] == "allow"
        && l["reason"] == "rule:team-b-text-v2"
        && l["consumer"] == "team-b"
        && l["model"] == "text"
        && l["version"] == "2"));
    let log = gw.dir.path().join("audit.log");
    let (ok, report) = verify_audit(&[&log]).await;
    assert!(ok, "{report}");
    assert!(report["lines"].as_u64().unwrap() > 30, "{report}");
    let edited = dir.path().join("edited.log");
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    assert!(lines[5].contains("\"client\":\"127.0.0.1\""), "{}", lines[5]);
    lines[5] = lines[5].replace("\"client\":\"127.0.0.1\"", "\"client\":\"10.9.9.9\"");
    std::fs::write(&edited, lines.join("\n") + "\n").unwrap();
    let (ok, report) = verify_audit(&[&edited]).await;
    assert!(!ok && report["line"] == 7, "the record after the edited one no longer chains: {report}");
    let deleted = dir.path().join("deleted.log");
    let mut lines: Vec<&str> = text.lines().collect();
    lines.remove(10);
    std::fs::write(&deleted, lines.join("\n") + "\n").unwrap();
    let (ok, report) = verify_audit(&[&deleted]).await;
    assert!(!ok && report["line"] == 11, "{report}");
}

#[tokio::test]
async fn idp_key_rotation_outage_and_expiry() {
    let mut idp = Idp::start().await;
    let up = Upstream::start("u").await;
    let gw = Gateway::start(&config(&idp.issuer, &up.addr, "")).await;
    let path = "/v2/models/digits/infer";

    let old = idp.token("team-a", "digits:infer", "urn:modelgate").await;
    assert_eq!(call(&gw, path, &[("authorization", &bearer(&old))]).await.status, 200);
    let short = idp.token("short", "digits:infer", "urn:modelgate").await;

    // Rotation: the IdP publishes a new key and signs with it; tokens of both keys pass.
    idp.rotate().await;
    let new = idp.token("team-a", "digits:infer", "urn:modelgate").await;
    assert_ne!(new.split('.').next(), old.split('.').next(), "the new token names the new key");
    for t in [&new, &old] {
        let r = call(&gw, path, &[("authorization", &bearer(t))]).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }

    // The IdP goes away: cached keys keep working; an unknown kid fails closed.
    let rogue = idp.forge("rogue-kid").await;
    idp.stop().await;
    for t in [&new, &old] {
        assert_eq!(call(&gw, path, &[("authorization", &bearer(t))]).await.status, 200);
    }
    call(&gw, path, &[("authorization", &bearer(&rogue))]).await.assert_error(401, "unauthenticated");

    // A 2-second token stops working once it expires (leeway 0s here).
    let expired =
        eventually(Duration::from_secs(10), || async { call(&gw, path, &[("authorization", &bearer(&short))]).await.status == 401 }).await;
    assert!(expired, "a short-lived token must expire");
}

#[tokio::test]
async fn unreachable_idp_without_keys_answers_503() {
    let (_hold, dead) = modelgate_test_support::refusing_addr();
    let up = Upstream::start("u").await;
    let gw = Gateway::start(&config(&format!("http://{dead}"), &up.addr, "")).await;
    let t = format!("{}.{}.sig", "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0", "eyJpc3MiOiJ4In0");
    call(&gw, "/v2/models/digits/infer", &[("authorization", &bearer(&t))]).await.assert_error(503, "identity_unavailable");
    // API keys do not depend on the IdP.
    call(&gw, "/v2/models/digits/infer", &[("x-api-key", "mg_000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")])
        .await
        .assert_error(401, "unauthenticated");
}

#[tokio::test]
async fn revoking_a_key_takes_effect_on_the_watched_reload() {
    let up = Upstream::start("u").await;
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start_with(&config("https://idp.invalid", &up.addr, ""), &[("keys.yaml", "")], &[]).await;
    let keys = gw.dir.path().join("keys.yaml");
    let key = create_key(&keys, "team-a", &["--groups", "vision"]).await;
    let h = [("x-api-key", key.as_str())];
    assert!(
        eventually(Duration::from_secs(10), || async { call(&gw, "/v2/models/digits/infer", &h).await.status == 200 }).await,
        "a new key works after the file changes"
    );
    let id = &key[3..15];
    let out = tokio::process::Command::new(bin()).args(["keys", "revoke", "--file", keys.to_str().unwrap(), id]).output().await.unwrap();
    assert!(out.status.success());
    assert!(
        eventually(Duration::from_secs(10), || async { call(&gw, "/v2/models/digits/infer", &h).await.status == 401 }).await,
        "a revoked key stops working"
    );
    let lines = audit_lines(&gw);
    assert!(lines.iter().any(|l| l["type"] == "reload" && l["decision"] == "ok"), "reloads are audited");
    assert!(lines.iter().any(|l| l["reason"] == "api_key_revoked"));
    drop(dir);
}

#[tokio::test]
async fn kill_9_with_fsync_always_loses_no_acknowledged_line() {
    let up = Upstream::start("u").await;
    let mut gw = Gateway::start_with(&config("https://idp.invalid", &up.addr, ""), &[("keys.yaml", "")], &[]).await;
    let keys = gw.dir.path().join("keys.yaml");
    let key = create_key(&keys, "team-a", &["--groups", "vision"]).await;
    let h = [("x-api-key", key.as_str())];
    assert!(eventually(Duration::from_secs(10), || async { call(&gw, "/v2/models/digits/infer", &h).await.status == 200 }).await);
    let mut acked = Vec::new();
    for i in 0..40 {
        let rid = format!("acked-{i}");
        let r = call(&gw, "/v2/models/digits/infer", &[("x-api-key", key.as_str()), ("x-request-id", &rid)]).await;
        assert_eq!(r.status, 200);
        acked.push(rid);
    }
    gw.proc.signal("KILL");
    gw.proc.child.wait().await.unwrap();
    let lines = audit_lines(&gw);
    for rid in &acked {
        assert!(
            lines.iter().any(|l| l["request_id"] == rid.as_str() && l["decision"] == "allow"),
            "{rid} was acknowledged but has no audit line"
        );
    }
    let (ok, report) = verify_audit(&[&gw.dir.path().join("audit.log")]).await;
    assert!(ok, "{report}");
}

#[tokio::test]
async fn admin_api_needs_a_credential_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let open = dir.path().join("open.yaml");
    std::fs::write(&open, "listen: 127.0.0.1:0\nadmin: { listen: 0.0.0.0:0 }\n").unwrap();
    let out = tokio::process::Command::new(bin()).args(["validate", open.to_str().unwrap()]).output().await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("admin.listen") && text.contains("admin.consumers"), "{text}");

    let up = Upstream::start("u").await;
    let idp = Idp::start().await;
    let yaml = format!(
        "listen: 127.0.0.1:0\nadmin: {{ listen: 127.0.0.1:0, consumers: [ops], groups: [vision] }}\nidentity: {{ api_keys: {{ file: keys.yaml }}, issuers: {{ idp: {{ issuer: {}, audiences: [urn:modelgate], consumer_claim: client_id }} }} }}\naudit: {{ path: audit.log }}\nupstreams: {{ u: {{ targets: [\"http://{}\"] }} }}\nroutes: []\n",
        idp.issuer, up.addr
    );
    let gw = Gateway::start_with(&yaml, &[("keys.yaml", "")], &[]).await;
    let keys = gw.dir.path().join("keys.yaml");
    let ops = create_key(&keys, "ops", &[]).await;
    let dev = create_key(&keys, "dev", &[]).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            send(Method::GET, &gw.admin_url("/admin/health"), &[("x-api-key", ops.as_str())], Bytes::new()).await.status == 200
        })
        .await
    );
    get(&gw.admin_url("/admin/health")).await.assert_error(401, "unauthenticated");
    send(Method::GET, &gw.admin_url("/admin/config"), &[("x-api-key", "mg_000000000000_nope")], Bytes::new())
        .await
        .assert_error(401, "unauthenticated");
    send(Method::GET, &gw.admin_url("/admin/config"), &[("x-api-key", dev.as_str())], Bytes::new()).await.assert_error(403, "forbidden");
    let r = send(Method::POST, &gw.admin_url("/admin/reload"), &[("authorization", &bearer(&ops))], Bytes::new()).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // An OIDC principal in an admin group (team-a's tokens carry groups: [vision]) may; team-b's may not.
    let admin_jwt = bearer(&idp.token("team-a", "models:read", "urn:modelgate").await);
    let other_jwt = bearer(&idp.token("team-b", "models:read", "urn:modelgate").await);
    let r = send(Method::POST, &gw.admin_url("/admin/reload"), &[("authorization", &admin_jwt)], Bytes::new()).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    send(Method::GET, &gw.admin_url("/admin/health"), &[("authorization", &other_jwt)], Bytes::new()).await.assert_error(403, "forbidden");
    send(Method::GET, &gw.admin_url("/admin/health"), &[("authorization", &bearer(&idp.forge("rogue-kid").await))], Bytes::new())
        .await
        .assert_error(401, "unauthenticated");
    let lines = audit_lines(&gw);
    assert!(lines.iter().any(|l| l["type"] == "admin" && l["decision"] == "deny" && l["reason"] == "not_an_admin"));
    assert!(
        lines
            .iter()
            .any(|l| l["type"] == "admin" && l["decision"] == "allow" && l["consumer"] == "ops" && l["reason"] == "POST /admin/reload")
    );
    assert!(lines.iter().any(|l| l["type"] == "admin" && l["decision"] == "allow" && l["consumer"] == "team-a" && l["method"] == "jwt"));
}

#[tokio::test]
async fn aws_iam_callers_via_an_sts_stand_in() {
    let sts = StsStandIn::start().await;
    let up = Upstream::start("u").await;
    let yaml = format!(
        r#"listen: 127.0.0.1:0
admin: {{ listen: 127.0.0.1:0 }}
identity:
  aws_iam:
    sts_endpoint: {endpoint}
    cluster_id: modelgate-test
    max_presign_age: 15m
    principals:
      - {{ arn: "arn:aws:sts::111122223333:assumed-role/ml-team-a/*", consumer: team-a, groups: [vision] }}
      - {{ arn: "arn:aws:iam::111122223333:user/*", consumer: humans }}
audit: {{ path: audit.log, fsync: always }}
upstreams:
  u: {{ targets: ["http://{up}"] }}
routes:
  - name: models
    match: {{ path_prefix: /v2/models }}
    upstream: u
    plugins:
      - auth: {{ methods: [aws_iam] }}
      - policy:
          allow:
            - {{ name: vision-digits, groups: [vision], models: [digits] }}
            - {{ name: alice-text, claims: {{ arn: "arn:aws:iam::*:user/alice" }}, models: [text] }}
"#,
        endpoint = sts.endpoint,
        up = up.addr
    );
    let gw = Gateway::start_with(&yaml, &[], &[]).await;
    let now = std::time::SystemTime::now();
    let token = |key: &str, cluster: Option<&str>, at: std::time::SystemTime, expires: u64| {
        aws_iam_token(&sts.endpoint, key, StsStandIn::secret(key), cluster, at, expires)
    };
    let team_a = token("ASIATESTTEAMA0000001", Some("modelgate-test"), now, 900);
    let alice = token("AKIATESTALICE0000001", Some("modelgate-test"), now, 900);

    // A role session reaches what its mapped groups allow, with its identity passed upstream.
    let r = call(&gw, "/v2/models/digits/infer", &[("x-aws-iam-token", &team_a)]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let echo = r.json();
    assert_eq!(echo["headers"]["x-modelgate-consumer"], "team-a", "{echo}");
    assert_eq!(echo["headers"]["x-modelgate-subject"], "arn:aws:sts::111122223333:assumed-role/ml-team-a/session-1");
    assert_eq!(echo["headers"]["x-modelgate-auth-method"], "aws_iam");
    assert_eq!(call(&gw, "/v2/models/text/infer", &[("x-aws-iam-token", &team_a)]).await.status, 403);
    // A user, by a claim rule on the ARN; `Authorization: Bearer k8s-aws-v1.…` works too.
    let alice_bearer = bearer(&alice);
    assert_eq!(call(&gw, "/v2/models/text/infer", &[("authorization", &alice_bearer)]).await.status, 200);
    assert_eq!(call(&gw, "/v2/models/digits/infer", &[("authorization", &alice_bearer)]).await.status, 403);

    // STS was asked once per token: later requests come from the cache until the presign expires.
    let before = sts.calls().await;
    assert_eq!(before, 2, "one STS call per distinct token");
    for _ in 0..5 {
        assert_eq!(call(&gw, "/v2/models/digits/infer", &[("x-aws-iam-token", &team_a)]).await.status, 200);
    }
    assert_eq!(sts.calls().await, before);

    // Refusals: each a 401 with its audit reason. Those found by looking at the token never reach STS.
    let hour_ago = now - Duration::from_secs(3600);
    let tampered = {
        let mut url =
            String::from_utf8(base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &team_a[11..]).unwrap()).unwrap();
        url = url.replace("X-Amz-Expires=900", "X-Amz-Expires=899");
        format!("k8s-aws-v1.{}", base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, url))
    };
    let assume_role = {
        let url = format!("{}/?Action=AssumeRole&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fadmin", sts.endpoint);
        format!("k8s-aws-v1.{}", base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, url))
    };
    let elsewhere = aws_iam_token(
        "http://127.0.0.1:9",
        "ASIATESTTEAMA0000001",
        StsStandIn::secret("ASIATESTTEAMA0000001"),
        Some("modelgate-test"),
        now,
        900,
    );
    let cases: Vec<(&str, String, &str, bool)> = vec![
        ("unknown ARN", token("AKIATESTMALLORY00001", Some("modelgate-test"), now, 900), "aws_unknown_principal", true),
        (
            "unknown access key",
            aws_iam_token(&sts.endpoint, "AKIANOSUCHKEY0000001", "x", Some("modelgate-test"), now, 900),
            "aws_sts_rejected",
            true,
        ),
        (
            "wrong secret",
            aws_iam_token(&sts.endpoint, "ASIATESTTEAMA0000001", "guess", Some("modelgate-test"), now, 900),
            "aws_sts_rejected",
            true,
        ),
        ("tampered after signing", tampered, "aws_sts_rejected", true),
        ("minted for another cluster", token("ASIATESTTEAMA0000001", Some("other-cluster"), now, 900), "aws_sts_rejected", true),
        ("cluster id not signed", token("ASIATESTTEAMA0000001", None, now, 900), "aws_cluster_id_not_signed", false),
        ("expired", token("ASIATESTTEAMA0000001", Some("modelgate-test"), hour_ago, 60), "aws_presign_too_long", false),
        ("presigned for a day", token("ASIATESTTEAMA0000001", Some("modelgate-test"), now, 86400), "aws_presign_too_long", false),
        ("another endpoint", elsewhere, "aws_wrong_sts_endpoint", false),
        ("another STS action", assume_role, "aws_not_get_caller_identity", false),
        ("not base64", "k8s-aws-v1.%%%".into(), "aws_token_malformed", false),
    ];
    for (what, token, reason, reaches_sts) in cases {
        let calls = sts.calls().await;
        let r = call(&gw, "/v2/models/digits/infer", &[("x-aws-iam-token", &token)]).await;
        r.assert_error(401, "unauthenticated");
        let rid = r.header("x-request-id").unwrap().to_string();
        let line =
            audit_lines(&gw).into_iter().find(|l| l["request_id"] == rid.as_str()).unwrap_or_else(|| panic!("{what}: no audit line"));
        assert_eq!((line["decision"].as_str(), line["reason"].as_str()), (Some("deny"), Some(reason)), "{what}: {line}");
        assert_eq!(sts.calls().await > calls, reaches_sts, "{what}: reaches STS");
        let text = std::fs::read_to_string(gw.dir.path().join("audit.log")).unwrap();
        assert!(!text.contains("X-Amz-Signature") && !text.contains("k8s-aws-v1"), "{what}: no token in the audit log");
    }

    // STS failing: a new token gets 503 (fail closed, retryable); a cached one keeps working.
    sts.fail().await;
    let fresh = token("AKIATESTALICE0000001", Some("modelgate-test"), now - Duration::from_secs(1), 900);
    let r = call(&gw, "/v2/models/text/infer", &[("x-aws-iam-token", &fresh)]).await;
    r.assert_error(503, "identity_unavailable");
    assert!(r.header("retry-after").is_some());
    assert_eq!(call(&gw, "/v2/models/digits/infer", &[("x-aws-iam-token", &team_a)]).await.status, 200);
    let (ok, report) = verify_audit(&[&gw.dir.path().join("audit.log")]).await;
    assert!(ok, "{report}");
}

/// Runs `modelgate keys signing-key` and returns the key id it printed.
async fn signing_key(out: &Path) -> String {
    let o = tokio::process::Command::new(bin()).args(["keys", "signing-key", "--out", out.to_str().unwrap()]).output().await.unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

/// Verifies an assertion with the gateway's published JWKS, as a model service would; the claims, or the error.
async fn verify_assertion(gw: &Gateway, token: &str, audience: &str) -> Result<(String, serde_json::Value), String> {
    let r = get(&gw.admin_url("/.well-known/jwks.json")).await;
    assert_eq!(r.status, 200);
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(&r.body).unwrap();
    let kid = jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
    let jwk = jwks.find(&kid).ok_or_else(|| format!("kid {kid} is not published"))?;
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_audience(&[audience]);
    v.set_issuer(&["modelgate"]);
    let data = jsonwebtoken::decode::<serde_json::Value>(token, &jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(), &v)
        .map_err(|e| e.to_string())?;
    Ok((kid, data.claims))
}

#[tokio::test]
async fn signed_assertions_to_upstreams_and_signing_key_rotation() {
    let up = Upstream::start("u").await;
    let secrets = tempfile::tempdir().unwrap();
    let (k1, k2) = (secrets.path().join("k1.pem"), secrets.path().join("k2.pem"));
    let kid1 = signing_key(&k1).await;
    let keys = secrets.path().join("keys.yaml");
    let key = create_key(&keys, "team-a", &["--groups", "vision", "--scopes", "digits:infer"]).await;
    let yaml = |signing: &Path, previous: &[&Path]| {
        let previous: Vec<String> = previous.iter().map(|p| format!("\"{}\"", p.display())).collect();
        format!(
            r#"listen: 127.0.0.1:0
admin: {{ listen: 127.0.0.1:0 }}
server: {{ watch: false }}
identity:
  api_keys: {{ file: "{keys}" }}
  assertion: {{ signing_key: "{signing}", previous_keys: [{previous}], lifetime: 60s }}
upstreams:
  models: {{ targets: ["http://{up}"] }}
routes:
  - {{ name: asserted, match: {{ path_prefix: /v2 }}, upstream: models, plugins: [ {{ auth: {{ methods: [api_key], assertion: true }} }} ] }}
  - {{ name: plain, match: {{ path_prefix: /p }}, upstream: models, plugins: [ {{ auth: {{ methods: [api_key] }} }} ] }}
"#,
            keys = keys.display(),
            signing = signing.display(),
            previous = previous.join(", "),
            up = up.addr
        )
    };
    let gw = Gateway::start_with(&yaml(&k1, &[]), &[], &[]).await;
    let assertion = |echo: serde_json::Value| echo["headers"]["x-modelgate-assertion"].as_str().map(String::from);

    // The upstream gets an assertion it can verify with the published keys; a client's own copy is replaced.
    let echo = call(&gw, "/v2/models/digits/infer", &[("x-api-key", &key), ("x-modelgate-assertion", "forged")]).await.json();
    let t1 = assertion(echo).expect("assertion header");
    let (kid, claims) = verify_assertion(&gw, &t1, "models").await.unwrap();
    assert_eq!(kid, kid1);
    assert_eq!(
        (claims["sub"].as_str(), claims["consumer"].as_str(), claims["auth_method"].as_str()),
        (Some("team-a"), Some("team-a"), Some("api_key"))
    );
    assert_eq!((claims["scope"].as_str(), claims["groups"][0].as_str()), (Some("digits:infer"), Some("vision")));
    assert_eq!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(), 60);
    assert!(verify_assertion(&gw, &t1, "other-service").await.is_err(), "the audience is the route's upstream");
    // A route without `assertion: true` sends none.
    assert_eq!(assertion(call(&gw, "/p/x", &[("x-api-key", &key)]).await.json()), None);
    // The JWKS is public; the rest of the admin API is not affected by it.
    assert_eq!(get(&gw.admin_url("/.well-known/jwks.json")).await.header("content-type"), Some("application/jwk-set+json"));

    // Rotation: a new key signs from the reload on; the old one stays published, so t1 still verifies.
    let kid2 = signing_key(&k2).await;
    assert_ne!(kid1, kid2);
    gw.write_config(&yaml(&k2, &[&k1]));
    assert_eq!(gw.reload().await.status, 200);
    let t2 = assertion(call(&gw, "/v2/models/digits/infer", &[("x-api-key", &key)]).await.json()).unwrap();
    assert_eq!(verify_assertion(&gw, &t2, "models").await.unwrap().0, kid2);
    assert_eq!(verify_assertion(&gw, &t1, "models").await.unwrap().0, kid1, "old assertions verify during the overlap");
    // After the overlap the old key is withdrawn, and assertions signed with it no longer verify.
    gw.write_config(&yaml(&k2, &[]));
    assert_eq!(gw.reload().await.status, 200);
    assert!(verify_assertion(&gw, &t1, "models").await.unwrap_err().contains("not published"));
    // A broken key file is refused by the reload, naming the field, and the running key keeps signing.
    std::fs::write(secrets.path().join("k3.pem"), "not a key").unwrap();
    gw.write_config(&yaml(&secrets.path().join("k3.pem"), &[]));
    let r = gw.reload().await;
    assert_eq!(r.status, 422);
    assert!(String::from_utf8_lossy(&r.body).contains("identity.assertion.signing_key"), "{}", String::from_utf8_lossy(&r.body));
    let t3 = assertion(call(&gw, "/v2/models/digits/infer", &[("x-api-key", &key)]).await.json()).unwrap();
    assert_eq!(verify_assertion(&gw, &t3, "models").await.unwrap().0, kid2);
}

#[tokio::test]
async fn secrets_rotate_live_without_a_failed_request() {
    let up = Upstream::start("u").await;
    let secrets = tempfile::tempdir().unwrap();
    let signing = secrets.path().join("assertion.pem");
    let kid1 = signing_key(&signing).await;
    let keys = secrets.path().join("keys.yaml");
    let key = create_key(&keys, "team-a", &[]).await;
    let token_file = secrets.path().join("upstream-token");
    std::fs::write(&token_file, "token-1\n").unwrap();
    let yaml = format!(
        r#"listen: 127.0.0.1:0
admin: {{ listen: 127.0.0.1:0 }}
identity:
  api_keys: {{ file: "{keys}" }}
  assertion: {{ signing_key: "{signing}" }}
upstreams:
  models: {{ targets: ["http://{up}"] }}
routes:
  - name: infer
    match: {{ path_prefix: /v2 }}
    upstream: models
    plugins:
      - auth: {{ methods: [api_key], assertion: true }}
      - headers: {{ request: {{ set: {{ x-upstream-token: "${{file:{token}}}" }} }} }}
"#,
        keys = keys.display(),
        signing = signing.display(),
        token = token_file.display(),
        up = up.addr
    );
    let gw = std::sync::Arc::new(Gateway::start_with(&yaml, &[], &[]).await);
    let echo = |gw: std::sync::Arc<Gateway>, key: String| async move { call(&gw, "/v2/models/digits/infer", &[("x-api-key", &key)]).await };
    let first = echo(gw.clone(), key.clone()).await.json();
    assert_eq!(first["headers"]["x-upstream-token"], "token-1", "{first}");

    // Load throughout: 4 clients, each request must succeed.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (gw, key, stop) = (gw.clone(), key.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = echo(gw.clone(), key.clone()).await;
                if r.status == 200 { ok += 1 } else { failed.push(r.status.as_u16()) }
            }
            (ok, failed)
        }));
    }
    // The upstream credential file changes (a rotated Kubernetes Secret): the new value is sent after the watch.
    std::fs::write(&token_file, "token-2\n").unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            echo(gw.clone(), key.clone()).await.json()["headers"]["x-upstream-token"] == "token-2"
        })
        .await
    );
    // The signing key file is replaced: assertions switch to the new key.
    let fresh = secrets.path().join("new.pem");
    let kid2 = signing_key(&fresh).await;
    std::fs::rename(&fresh, &signing).unwrap();
    let kid_now = || async {
        let t = echo(gw.clone(), key.clone()).await.json()["headers"]["x-modelgate-assertion"].as_str().unwrap().to_string();
        jsonwebtoken::decode_header(&t).unwrap().kid.unwrap()
    };
    assert!(eventually(Duration::from_secs(10), || async { kid_now().await == kid2 }).await, "still signing with {kid1}");
    // A second key for the consumer (rotation of the caller's credential) works at once after the watch.
    let key2 = create_key(&keys, "team-a", &[]).await;
    assert!(eventually(Duration::from_secs(10), || async { echo(gw.clone(), key2.clone()).await.status == 200 }).await);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for c in clients {
        let (ok, failed) = c.await.unwrap();
        assert!(failed.is_empty(), "failed requests during rotation: {failed:?}");
        total += ok;
    }
    assert!(total > 0);
    // A secret file that disappears is a rejected reload: the old value keeps being sent.
    std::fs::remove_file(&token_file).unwrap();
    let r = gw.reload().await;
    assert_eq!(r.status, 422);
    let body = String::from_utf8_lossy(&r.body).to_string();
    assert!(body.contains("cannot read the secret file") && !body.contains("token-2"), "{body}");
    assert_eq!(echo(gw.clone(), key.clone()).await.json()["headers"]["x-upstream-token"], "token-2");
}

#[tokio::test]
async fn revocation_through_redis_reaches_every_gateway_without_a_reload() {
    let mut redis = RedisServer::start().await;
    let up = Upstream::start("u").await;
    let secrets = tempfile::tempdir().unwrap();
    let keys = secrets.path().join("keys.yaml");
    let (a, b, c) =
        (create_key(&keys, "team-a", &[]).await, create_key(&keys, "team-b", &[]).await, create_key(&keys, "team-c", &[]).await);
    // Revoked in Redis only (not in the file) before any gateway starts: they must read the set when they connect.
    assert_eq!(redis.cli(&["SADD", "modelgate:revoked-api-keys", &c[3..15]]).await, "1");
    // File watching off: only Redis can tell these gateways about a revocation.
    let yaml = format!(
        r#"listen: 127.0.0.1:0
admin: {{ listen: 127.0.0.1:0 }}
server: {{ watch: false }}
redis: {{ url: "{redis}" }}
identity:
  api_keys: {{ file: "{keys}", redis_revocations: true }}
upstreams:
  u: {{ targets: ["http://{up}"] }}
routes:
  - {{ name: r, match: {{ path_prefix: / }}, upstream: u, plugins: [ {{ auth: {{ methods: [api_key] }} }} ] }}
"#,
        redis = redis.url,
        keys = keys.display(),
        up = up.addr
    );
    let gateways = [Gateway::start(&yaml).await, Gateway::start(&yaml).await];
    let status = |gw: &Gateway, key: &str| {
        let (url, key) = (gw.url("/v2/models/m/infer"), key.to_string());
        async move { send(Method::POST, &url, &[("x-api-key", &key)], Bytes::new()).await.status.as_u16() }
    };
    for gw in &gateways {
        assert!(eventually(Duration::from_secs(10), || async { status(gw, &c).await == 401 }).await, "revoked before start");
        assert_eq!(status(gw, &a).await, 200);
    }
    // The CLI revokes in the file and publishes; both gateways refuse the key with no reload.
    let out = tokio::process::Command::new(bin())
        .args(["keys", "revoke", "--file", keys.to_str().unwrap(), &a[3..15], "--redis", &redis.url])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for gw in &gateways {
        assert!(eventually(Duration::from_secs(10), || async { status(gw, &a).await == 401 }).await, "revocation not received");
        assert_eq!(status(gw, &b).await, 200, "other keys unaffected");
        assert_eq!(gw.version().await, gateways[0].version().await, "no reload happened");
    }
    // Redis goes away: revocations already received stay in force, valid keys keep working.
    redis.kill().await;
    for gw in &gateways {
        assert_eq!((status(gw, &a).await, status(gw, &c).await, status(gw, &b).await), (401, 401, 200));
    }
}

/// A reload that moves `admin.listen` to loopback and drops the admin credential is refused while the socket is
/// still bound beyond loopback (the address changes only on restart): the admin API never opens up.
#[tokio::test]
async fn a_reload_cannot_open_the_admin_api_it_cannot_move() {
    let up = Upstream::start("u").await;
    let closed = |listen: &str, consumers: &str| {
        format!(
            "listen: 127.0.0.1:0\nadmin: {{ listen: \"{listen}\"{consumers} }}\nidentity: {{ api_keys: {{ file: keys.yaml }} }}\nupstreams: {{ u: {{ targets: [\"http://{}\"] }} }}\nroutes: []\n",
            up.addr
        )
    };
    let gw = Gateway::start_with(&closed("0.0.0.0:0", ", consumers: [ops]"), &[("keys.yaml", "")], &[]).await;
    let ops = create_key(&gw.dir.path().join("keys.yaml"), "ops", &[]).await;
    let with_key = [("x-api-key", ops.as_str())];
    assert!(
        eventually(Duration::from_secs(10), || async {
            send(Method::GET, &gw.admin_url("/admin/health"), &with_key, Bytes::new()).await.status == 200
        })
        .await
    );
    gw.write_config(&closed("127.0.0.1:0", ""));
    let r = send(Method::POST, &gw.admin_url("/admin/reload"), &with_key, Bytes::new()).await;
    assert_eq!(r.status, 422, "{}", String::from_utf8_lossy(&r.body));
    assert!(String::from_utf8_lossy(&r.body).contains("stays bound to 0.0.0.0"), "{}", String::from_utf8_lossy(&r.body));
    get(&gw.admin_url("/admin/health")).await.assert_error(401, "unauthenticated");
}

/// Random AWS IAM tokens cannot make the gateway amplify traffic to STS: a refused token is remembered (one STS
/// call however often it is sent), concurrent requests with one new token share one call, calls in flight are
/// capped (past the cap: 503 at once), and STS throttling (400 `Throttling`) is a 503, never a 401 for the caller.
#[tokio::test]
async fn aws_iam_tokens_cannot_amplify_traffic_to_sts() {
    let sts = StsStandIn::start().await;
    let up = Upstream::start("u").await;
    let yaml = format!(
        r#"listen: 127.0.0.1:0
admin: {{ listen: 127.0.0.1:0 }}
identity:
  aws_iam:
    sts_endpoint: {endpoint}
    max_presign_age: 15m
    principals: [ {{ arn: "arn:aws:sts::111122223333:assumed-role/ml-team-a/*", consumer: team-a }} ]
upstreams: {{ u: {{ targets: ["http://{up}"] }} }}
routes:
  - {{ name: models, match: {{ path_prefix: /v2/models }}, upstream: u, plugins: [ {{ auth: {{ methods: [aws_iam] }} }} ] }}
"#,
        endpoint = sts.endpoint,
        up = up.addr
    );
    let gw = Arc::new(Gateway::start_with(&yaml, &[], &[]).await);
    let now = std::time::SystemTime::now();
    let forged = |n: u64| aws_iam_token(&sts.endpoint, "ASIATESTTEAMA0000001", "not-the-secret", None, now - Duration::from_secs(n), 900);

    // One forged token sent 20 times: STS is asked once.
    let bad = forged(1);
    for _ in 0..20 {
        assert_eq!(call(&gw, "/v2/models/digits/infer", &[("x-aws-iam-token", &bad)]).await.status, 401);
    }
    assert_eq!(sts.calls().await, 1, "a refusal is remembered until the token expires");

    // 16 concurrent requests with one new token: one call.
    sts.switch("slow").await;
    let shared = forged(2);
    let calls = (0..16).map(|_| {
        let (gw, t) = (gw.clone(), shared.clone());
        tokio::spawn(async move { call(&gw, "/v2/models/digits/infer", &[("x-aws-iam-token", &t)]).await.status.as_u16() })
    });
    for c in calls.collect::<Vec<_>>() {
        assert_eq!(c.await.unwrap(), 401);
    }
    assert_eq!(sts.calls().await, 2, "concurrent requests with one token share one STS call");

    // 100 different forged tokens at once: calls in flight are capped; those past the cap get 503 at once.
    let many = (0..100u64).map(|i| {
        let (gw, t) = (gw.clone(), forged(10 + i));
        tokio::spawn(async move { call(&gw, "/v2/models/digits/infer", &[("x-aws-iam-token", &t)]).await.status.as_u16() })
    });
    let mut statuses = Vec::new();
    for c in many.collect::<Vec<_>>() {
        statuses.push(c.await.unwrap());
    }
    assert!(statuses.iter().all(|s| *s == 401 || *s == 503), "{statuses:?}");
    assert!(statuses.contains(&503), "past the cap: 503");
    assert!(sts.calls().await <= 2 + 32, "at most 32 STS calls in flight: {}", sts.calls().await);

    // STS throttling: a legitimate new token gets 503 with the reason, not 401.
    sts.switch("throttle").await;
    let good = aws_iam_token(&sts.endpoint, "ASIATESTTEAMA0000001", StsStandIn::secret("ASIATESTTEAMA0000001"), None, now, 900);
    call(&gw, "/v2/models/digits/infer", &[("x-aws-iam-token", &good)]).await.assert_error(503, "identity_unavailable");
}

/// Moving from Kong: key values callers already use are imported (`keys import`, from standard input), and clients
/// keep sending them in Kong's `apikey` header, or in the `apikey` query parameter where `query` allows it; the key
/// is checked, stripped before the upstream, kept out of the access log, and refused once revoked.
#[tokio::test]
async fn kong_keys_are_imported_and_accepted_in_the_apikey_header() {
    use tokio::io::AsyncWriteExt;
    let up = modelgate_test_support::Upstream::start("u").await;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.yaml");
    let kong_key = "Yx8Jm2kWq9Lz4Rt7Vb3Nc6Hd1Gf5Sa0P";
    let mut import = tokio::process::Command::new(modelgate_test_support::bin())
        .args(["keys", "import", "--file", keys.to_str().unwrap(), "--consumer", "legacy-app"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    import.stdin.take().unwrap().write_all(format!("{kong_key}\n").as_bytes()).await.unwrap();
    let out = import.wait_with_output().await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let log = dir.path().join("access.log");
    let gw = Gateway::start(&format!(
        "listen: 127.0.0.1:0\nadmin: {{ listen: 127.0.0.1:0 }}\nidentity: {{ api_keys: {{ file: \"{}\", header: [x-api-key, apikey], query: [apikey] }} }}\n\
         observability: {{ access_log: {{ path: \"{}\" }} }}\n\
         upstreams: {{ u: {{ targets: [\"http://{}\"] }} }}\n\
         routes: [ {{ name: r, match: {{ path_prefix: / }}, upstream: u, plugins: [ {{ auth: {{ methods: [api_key] }} }}, {{ policy: {{ allow: [ {{ consumers: [legacy-app] }} ] }} }} ] }} ]\n",
        keys.display(),
        log.display(),
        up.addr
    ))
    .await;
    let r = send(Method::GET, &gw.url("/x"), &[("apikey", kong_key)], Bytes::new()).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.json()["headers"].get("apikey").is_none(), "the credential stops at the gateway: {}", r.json());
    // In the query: read, removed before the upstream (other parameters stay), never written to the access log.
    let r = send(Method::GET, &gw.url(&format!("/q?a=1&apikey={kong_key}&b=2")), &[], Bytes::new()).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["path"], "/q?a=1&b=2");
    assert!(
        eventually(std::time::Duration::from_secs(10), || async { std::fs::read_to_string(&log).is_ok_and(|l| l.contains("\"/q\"")) })
            .await,
        "access log line"
    );
    assert!(!std::fs::read_to_string(&log).unwrap().contains(kong_key), "the key reached the access log");
    send(Method::GET, &gw.url("/x"), &[("apikey", "Yx8Jm2kWq9Lz4Rt7Vb3Nc6Hd1Gf5SaXX")], Bytes::new())
        .await
        .assert_error(401, "unauthenticated");
    let id = {
        let list = std::process::Command::new(modelgate_test_support::bin())
            .args(["keys", "list", "--output", "json", "--file", keys.to_str().unwrap()])
            .output()
            .unwrap();
        let line: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
        assert_eq!(line["imported"], true);
        line["id"].as_str().unwrap().to_string()
    };
    let revoke = std::process::Command::new(modelgate_test_support::bin())
        .args(["keys", "revoke", "--file", keys.to_str().unwrap(), &id])
        .output()
        .unwrap();
    assert!(revoke.status.success());
    let refused = eventually(std::time::Duration::from_secs(10), || async {
        send(Method::GET, &gw.url("/x"), &[("apikey", kong_key)], Bytes::new()).await.status == 401
    })
    .await;
    assert!(refused, "the revoked imported key was still accepted");
}

/// Consumers declared in config: their keys come from secret references (`${file:…}`), kept only as hashes; their
/// groups reach policy rules, for declared keys and for the consumer's keys from the key file alike.
#[tokio::test]
async fn consumers_declared_in_config_authenticate_with_referenced_keys() {
    let up = modelgate_test_support::Upstream::start("u").await;
    let secret = "k3y-0f-team-a-from-a-mounted-secret-0123";
    let yaml = format!(
        "listen: 127.0.0.1:0\nadmin: {{ listen: 127.0.0.1:0 }}\n\
         identity:\n  api_keys: {{ file: keys.yaml }}\n  consumers:\n    team-a: {{ groups: [vision], keys: [\"${{file:team-a.key}}\"] }}\n\
         upstreams: {{ u: {{ targets: [\"http://{}\"] }} }}\n\
         routes: [ {{ name: r, match: {{ path_prefix: / }}, upstream: u, plugins: [ {{ auth: {{ methods: [api_key] }} }}, {{ policy: {{ allow: [ {{ groups: [vision] }} ] }} }} ] }} ]\n",
        up.addr
    );
    let gw = Gateway::start_with(&yaml, &[("team-a.key", &format!("{secret}\n"))], &[]).await;
    let r = send(Method::GET, &gw.url("/x"), &[("x-api-key", secret)], Bytes::new()).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["headers"]["x-modelgate-consumer"], "team-a");
    send(Method::GET, &gw.url("/x"), &[("x-api-key", "k3y-0f-team-a-from-a-mounted-secret-9999")], Bytes::new())
        .await
        .assert_error(401, "unauthenticated");
    let config = String::from_utf8(get(&gw.admin_url("/admin/config")).await.body.to_vec()).unwrap();
    assert!(!config.contains(secret), "the key never appears in the config views");
}

/// A gateway trusting `idp`'s tokens (consumer: the client id) with an include directory and namespace `team-a`
/// declared as `namespace` (YAML after `team-a:`).
async fn team_gateway(idp: &Idp, namespace: &str) -> Gateway {
    let yaml = format!(
        "listen: 127.0.0.1:0\nadmin: {{ listen: 127.0.0.1:0 }}\ninclude: teams\nidentity:\n  issuers:\n    idp: {{ issuer: \"{}\", audiences: [urn:modelgate], consumer_claim: client_id, max_token_lifetime: 1h }}\nnamespaces:\n  team-a: {namespace}\n",
        idp.issuer
    );
    Gateway::start_with(&yaml, &[("teams/README", "team files\n")], &[]).await
}

/// The namespace API with tokens from a real OpenID Connect provider: the namespace's owner (a token's consumer)
/// adds a route for its model and calls it with the same kind of token; another team's token is refused.
#[tokio::test]
async fn a_team_token_adds_a_route_to_its_namespace_and_calls_it() {
    let idp = Idp::start().await;
    let up = Upstream::start("team-a").await;
    let gw = team_gateway(
        &idp,
        "{ owners: { consumers: [team-a] }, paths: [/v2/models/team-a-], upstream_hosts: [127.0.0.1], auth_methods: [jwt] }",
    )
    .await;
    let (jwt_a, jwt_b) =
        (idp.token("team-a", "digits:infer", "urn:modelgate").await, idp.token("team-b", "digits:infer", "urn:modelgate").await);
    let file = format!(
        "upstreams:\n  a: {{ targets: [\"http://{}\"] }}\nroutes:\n  - name: a\n    match: {{ path_prefix: /v2/models/team-a-digits }}\n    upstream: a\n    plugins: [ {{ auth: {{ methods: [jwt] }} }} ]\n",
        up.addr
    );
    let url = gw.admin_url("/admin/namespaces/team-a");
    send(Method::PUT, &url, &[("authorization", &bearer(&jwt_b))], file.clone()).await.assert_error(403, "forbidden");
    let r = send(Method::PUT, &url, &[("authorization", &bearer(&jwt_a))], file).await;
    assert_eq!(r.status, 200, "{}", r.json());
    let r = call(&gw, "/v2/models/team-a-digits/infer", &[("authorization", &bearer(&jwt_a))]).await;
    assert_eq!(r.status, 200);
    call(&gw, "/v2/models/team-a-digits/infer", &[]).await.assert_error(401, "unauthenticated");
}

/// A team owning its namespace by a claim of its IdP tokens (`department`) registers its own model with the namespace
/// API: upstream, route and model, each checked (a dry run lists every guardrail's verdict and what the quotas leave),
/// then calls it through the real model server; the model quota refuses a second model (403, stating what is left);
/// a version whose server does not report an allowed runtime gets no traffic (503), even as the only version.
#[tokio::test]
async fn a_team_owning_by_claim_registers_its_model_within_quotas_and_runtimes() {
    let idp = Idp::start().await;
    let ms = modelgate_test_support::ModelServer::start(&modelgate_test_support::repo_root().join("examples/models")).await;
    let echo = Upstream::start("not-a-model-server").await;
    let namespace = "
    owners: { claims: { department: [ml-vision] } }
    paths: [/v2/models/team-a-]
    upstream_hosts: [127.0.0.1]
    auth_methods: [jwt]
    max_models: 1
    max_versions: 2
    runtimes: [onnxruntime_onnx, tract_onnx]";
    let gw = team_gateway(&idp, namespace).await;
    let (jwt_a, jwt_b) =
        (idp.token("team-a", "digits:infer", "urn:modelgate").await, idp.token("team-b", "digits:infer", "urn:modelgate").await);
    let (auth_a, auth_b) = (bearer(&jwt_a), bearer(&jwt_b));
    let api = |path: &str| gw.admin_url(&format!("/admin/namespaces/team-a/{path}"));
    let put = |path: String, auth: &str, body: String| {
        let auth = auth.to_string();
        async move { send(Method::PUT, &path, &[("authorization", &auth)], body).await }
    };
    let upstreams = format!("targets: [\"http://{}\"]", ms.addr);
    put(api("upstreams/models"), &auth_b, upstreams.clone()).await.assert_error(403, "forbidden");
    assert_eq!(put(api("upstreams/models"), &auth_a, upstreams).await.status, 200);
    assert_eq!(put(api("upstreams/echo"), &auth_a, format!("targets: [\"http://{}\"]", echo.addr)).await.status, 200);
    let route = "match: { path_prefix: /v2/models/team-a-digits }\nupstream: models\nplugins: [ { auth: { methods: [jwt] } } ]\n";
    assert_eq!(put(api("routes/digits"), &auth_a, route.into()).await.status, 200);
    let model =
        |upstream: &str| format!("versions: {{ \"1\": {{ upstream: {upstream}, state: stable, path: /v2/models/digits/versions/1 }} }}");

    // The dry run: every guardrail passes, the quota states what would be left, nothing changes.
    let dry = put(api("models/team-a-digits?dry_run=true"), &auth_a, model("models")).await;
    assert_eq!(dry.status, 200, "{}", dry.json());
    let verdicts = dry.json()["verdicts"].as_array().unwrap().clone();
    assert!(verdicts.iter().all(|v| v["verdict"] == "pass"), "{verdicts:#?}");
    let quota = verdicts.iter().find(|v| v["rule"] == "namespace.quota").unwrap();
    assert!(quota["checked"].as_str().unwrap().contains("models: 1 of 1 (0 left); versions: 1 of 2 (1 left)"), "{quota}");
    assert!(verdicts.iter().any(|v| v["rule"] == "namespace.runtimes"), "{verdicts:#?}");
    let body = Bytes::from(std::fs::read(modelgate_test_support::repo_root().join("examples/digits/request.json")).unwrap());
    let infer_url = gw.url("/v2/models/team-a-digits/infer");
    let infer = || {
        let (url, auth, body) = (infer_url.clone(), auth_a.clone(), body.clone());
        async move { send(Method::POST, &url, &[("authorization", &auth)], body).await }
    };
    assert_ne!(infer().await.headers.get("x-model-version").map(|v| v.as_bytes()), Some(&b"1"[..]), "the dry run changed nothing");

    assert_eq!(put(api("models/team-a-digits"), &auth_a, model("models")).await.status, 200);
    let served = eventually(Duration::from_secs(10), || async {
        let r = infer().await;
        r.status == 200 && r.headers.get("x-model-version").is_some_and(|v| v == "1")
    })
    .await;
    assert!(served, "the team's model never answered: {:?}", infer().await);

    // Quota: a second model is refused with what is left.
    let r = put(api("models/team-a-other"), &auth_a, model("models")).await;
    r.assert_error(403, "quota_exceeded");
    let err = &r.json()["error"];
    assert!(err["message"].is_string() && err["details"].to_string().contains("2 models, the quota is 1 (0 left)"), "{err}");
    let failed: Vec<&serde_json::Value> = err["verdicts"].as_array().unwrap().iter().filter(|v| v["verdict"] == "fail").collect();
    assert_eq!((failed.len(), failed[0]["rule"].as_str()), (1, Some("namespace.quota")), "{failed:#?}");

    // Versions one by one, within the version quota; a canary at weight 0 is configured and gets no callers.
    let canary = "{ upstream: models, state: canary, weight: 0, path: /v2/models/digits/versions/1 }";
    assert_eq!(put(api("models/team-a-digits/versions/2"), &auth_a, canary.into()).await.status, 200);
    let r = put(api("models/team-a-digits/versions/3"), &auth_a, canary.into()).await;
    r.assert_error(403, "quota_exceeded");
    assert!(r.json()["error"]["details"].to_string().contains("3 model versions, the quota is 2"), "{}", r.json());
    let r = send(Method::DELETE, &api("models/team-a-digits/versions/2"), &[("authorization", &auth_a)], Bytes::new()).await;
    assert_eq!(r.status, 200, "{}", r.json());

    // The same model on a server that reports no allowed runtime: not ready, so not served — even as the only version.
    assert_eq!(put(api("models/team-a-digits"), &auth_a, model("echo")).await.status, 200);
    let refused = eventually(Duration::from_secs(10), || async { infer().await.status == 503 }).await;
    assert!(refused, "a version without an allowed runtime was served");
    infer().await.assert_error(503, "model_version_unavailable");
}

/// The status listener (`admin.status_listen`, as Kong's `status_listen`): probes and metrics without a credential,
/// on their own port, while the admin API still asks for one; it serves nothing else and changes nothing.
#[tokio::test]
async fn the_status_listener_answers_probes_and_scrapes_without_opening_the_admin_api() {
    let up = Upstream::start("u").await;
    let yaml = format!(
        "listen: 127.0.0.1:0\nadmin: {{ listen: 127.0.0.1:0, consumers: [ops], status_listen: 127.0.0.1:0 }}\nidentity: {{ api_keys: {{ file: keys.yaml }} }}\nupstreams: {{ u: {{ targets: [\"http://{}\"] }} }}\nroutes: [ {{ name: r, match: {{ path_prefix: / }}, upstream: u }} ]\n",
        up.addr
    );
    let gw = Gateway::start_with(&yaml, &[("keys.yaml", "")], &[]).await;
    let status = gw.proc.ready["status"].as_str().expect("the ready line names the status listener").to_string();
    let at = |path: &str| format!("http://{status}{path}");
    assert_eq!(get(&gw.url("/x")).await.status, 200);
    assert_eq!(get(&at("/status/live")).await.json()["status"], "live");
    let ready = get(&at("/status/ready")).await;
    assert_eq!((ready.status.as_u16(), ready.json()["config_version"].clone()), (200, gw.proc.ready["config_version"].clone()));
    let metrics = String::from_utf8(get(&at("/metrics")).await.body.to_vec()).unwrap();
    assert!(metrics.contains("modelgate_requests_total{"), "{metrics}");
    get(&gw.admin_url("/metrics")).await.assert_error(401, "unauthenticated");
    get(&at("/admin/config")).await.assert_error(404, "not_found");
    send(Method::POST, &at("/status/ready"), &[], Bytes::new()).await.assert_error(405, "method_not_allowed");
}
