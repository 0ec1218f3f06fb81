//! JWT checking (crates/auth/src/identity/jwt.rs) as a caller controls it: any bytes as a token never panic and are
//! never accepted; any JSON as the claims of a token signed with the issuer's own secret (so the claims reading runs:
//! `exp`/`nbf`/`aud`/`iss`, consumer, scopes, groups) never panic, and an accepted token names a consumer.
#![no_main]

use std::sync::{Arc, LazyLock};
use std::time::{Duration, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use libfuzzer_sys::fuzz_target;
use modelgate_auth::identity::jwt::{Check, Issuer};
use modelgate_config::{Source, Vars, load};

const SECRET: &str = "fuzz-secret-0123456789abcdef-0123456789";

static ISSUER: LazyLock<Arc<Issuer>> = LazyLock::new(|| {
    let yaml = r#"
listen: 127.0.0.1:0
admin: { listen: 127.0.0.1:0 }
identity:
  issuers:
    fuzz:
      issuer: https://idp.fuzz
      audiences: [modelgate]
      algorithms: [HS256]
      hs_secret: ${FUZZ_SECRET}
      consumer_claim: client_id
upstreams: { u: { targets: ["http://127.0.0.1:9"] } }
routes: [ { name: r, match: { path_prefix: / }, upstream: u } ]
"#;
    let vars = Vars { overrides: [("FUZZ_SECRET".to_string(), SECRET.to_string())].into() };
    let config = load(&Source::Inline { name: "fuzz.yaml".into(), text: yaml.into() }, &vars).expect("a valid config");
    Arc::new(Issuer::new(config.identity.issuers["fuzz"].clone()).expect("an issuer"))
});

fuzz_target!(|data: &[u8]| {
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    if let Ok(token) = std::str::from_utf8(data) {
        assert!(!matches!(ISSUER.check(token, now), Check::Ok(_)), "a token nobody signed was accepted: {token:?}");
    }
    if let Ok(claims) = serde_json::from_slice::<serde_json::Value>(data) {
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET.as_bytes()));
        if let Ok(token) = token
            && let Check::Ok(p) = ISSUER.check(&token, now)
        {
            assert!(!p.consumer.is_empty(), "accepted without a consumer: {claims}");
        }
    }
});
