//! Identity assertions to upstreams: a short-lived ES256 JWT in `x-modelgate-assertion`, signed with the gateway's
//! own P-256 key, which a model service verifies against the JWKS the admin listener publishes at
//! `/.well-known/jwks.json` — so it can check who called it without trusting the network (as Pomerium's
//! `X-Pomerium-Jwt-Assertion`).
//!
//! Claims: `iss`, `aud` (the route's upstream name), `sub`, `consumer`, `auth_method`, `scope`, `groups`, `iat`,
//! `exp`, `jti`. Signing costs tens of µs, so an assertion is minted once per principal and audience and reused for
//! half its lifetime (a new key, after a rotation, mints anew). Rotation: point `signing_key` at a new key and list
//! the old one under `previous_keys` for one `lifetime`; the JWKS publishes both meanwhile.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use bytes::Bytes;
use http::HeaderValue;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use modelgate_config::ConfigError;
use modelgate_config::model::AssertionConfig;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, LineEnding};
use serde::Serialize;
use sha2::{Digest, Sha256};

use modelgate_pipeline::principal::{HeldAssertion, Principal};

/// The header upstreams read; any client copy is removed with the other `x-modelgate-*` headers.
pub static HEADER: http::HeaderName = http::HeaderName::from_static("x-modelgate-assertion");

/// Every signer gets a new generation, so assertions minted by an older one are minted again.
static GENERATION: AtomicU64 = AtomicU64::new(1);

/// The loaded signing key and the published JWKS.
pub struct Signer {
    pub config: AssertionConfig,
    kid: String,
    key: EncodingKey,
    jwks: Bytes,
    generation: u64,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    consumer: &'a str,
    auth_method: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    scope: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    groups: &'a [String],
    iat: u64,
    exp: u64,
    jti: &'a str,
}

#[derive(Serialize)]
struct Jwk {
    kty: &'static str,
    crv: &'static str,
    x: String,
    y: String,
    kid: String,
    alg: &'static str,
    #[serde(rename = "use")]
    use_: &'static str,
}

// === impl Signer ===

impl Signer {
    pub fn load(config: &AssertionConfig) -> Result<Signer, ConfigError> {
        let err = |field: &str, msg: String| ConfigError::new(&config.origin.file, format!("{}.{field}", config.origin.path), msg);
        let pem = std::fs::read_to_string(&config.signing_key).map_err(|e| {
            err("signing_key", format!("cannot read {}: {e}", config.signing_key.display()))
                .hint("create one with `modelgate keys signing-key --out FILE`")
        })?;
        // The key's text is never put into an error.
        let secret = p256::SecretKey::from_pkcs8_pem(&pem).map_err(|_| {
            err("signing_key", format!("{} is not a P-256 private key in PKCS#8 PEM", config.signing_key.display()))
                .hint("create one with `modelgate keys signing-key --out FILE`")
        })?;
        let der = secret.to_pkcs8_der().map_err(|e| err("signing_key", e.to_string()))?;
        let key = EncodingKey::from_ec_der(der.as_bytes());
        let current = jwk(&secret.public_key());
        let kid = current.kid.clone();
        let mut keys = vec![current];
        for (i, path) in config.previous_keys.iter().enumerate() {
            let text = std::fs::read_to_string(path)
                .map_err(|e| err(&format!("previous_keys[{i}]"), format!("cannot read {}: {e}", path.display())))?;
            let public = p256::SecretKey::from_pkcs8_pem(&text)
                .map(|s| s.public_key())
                .or_else(|_| p256::PublicKey::from_public_key_pem(&text))
                .map_err(|_| {
                    err(&format!("previous_keys[{i}]"), format!("{} is not a P-256 key in PEM", path.display()))
                        .hint("the old signing_key file, or its public key")
                })?;
            let k = jwk(&public);
            if !keys.iter().any(|have| have.kid == k.kid) {
                keys.push(k);
            }
        }
        let jwks = Bytes::from(serde_json::to_vec(&serde_json::json!({ "keys": keys })).unwrap_or_default());
        Ok(Signer { config: config.clone(), kid, key, jwks, generation: GENERATION.fetch_add(1, Ordering::Relaxed) })
    }

    /// The JWKS document: the current key first, then the previous ones.
    pub fn jwks(&self) -> Bytes {
        self.jwks.clone()
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The assertion for `principal` towards `audience`: the one it holds if fresh, else a new one.
    pub fn assertion(&self, principal: &Principal, audience: &str, now: u64) -> Option<HeaderValue> {
        let mut held = principal.assertions.lock().ok()?;
        if let Some(m) = held.iter().find(|m| &*m.audience == audience && m.generation == self.generation && now < m.refresh_at) {
            return Some(m.value.clone());
        }
        let lifetime = self.config.lifetime.as_secs();
        let mut jti = [0u8; 16];
        getrandom::fill(&mut jti).ok()?;
        let scope = principal.scopes.join(" ");
        let claims = Claims {
            iss: &self.config.issuer,
            aud: audience,
            sub: &principal.subject,
            consumer: &principal.consumer,
            auth_method: principal.method.as_str(),
            scope: &scope,
            groups: &principal.groups,
            iat: now,
            exp: now + lifetime,
            jti: &hex::encode(jti),
        };
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        let token =
            jsonwebtoken::encode(&header, &claims, &self.key).map_err(|e| tracing::error!(error = %e, "cannot sign an assertion")).ok()?;
        let value = HeaderValue::from_str(&token).ok()?;
        held.retain(|m| &*m.audience != audience && m.generation == self.generation && now < m.refresh_at);
        held.push(HeldAssertion {
            audience: audience.into(),
            generation: self.generation,
            refresh_at: now + lifetime / 2,
            value: value.clone(),
        });
        Some(value)
    }
}

/// The public JWK of a key, with its RFC 7638 thumbprint as `kid`.
fn jwk(public: &p256::PublicKey) -> Jwk {
    let point = public.to_encoded_point(false);
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let (x, y) = (b64(point.x().map(|x| x.as_slice()).unwrap_or_default()), b64(point.y().map(|y| y.as_slice()).unwrap_or_default()));
    let thumbprint = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    let kid = b64(&Sha256::digest(thumbprint.as_bytes()));
    Jwk { kty: "EC", crv: "P-256", x, y, kid, alg: "ES256", use_: "sig" }
}

/// Writes a new P-256 signing key (PKCS#8 PEM, mode 0600) to `out`, which must not exist; returns its `kid`.
pub fn generate(out: &Path) -> anyhow::Result<String> {
    use std::io::Write;
    let secret = loop {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        if let Ok(s) = p256::SecretKey::from_slice(&bytes) {
            break s;
        }
    };
    let pem = secret.to_pkcs8_pem(LineEnding::LF).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(out).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", out.display()))?;
    file.write_all(pem.as_bytes())?;
    file.sync_all()?;
    Ok(jwk(&secret.public_key()).kid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use modelgate_config::model::Origin;
    use modelgate_pipeline::principal::Method;
    use std::time::Duration;

    fn config(dir: &Path, key: &str, previous: &[&str]) -> AssertionConfig {
        AssertionConfig {
            origin: Origin { file: dir.join("c.yaml"), path: "identity.assertion".into() },
            signing_key: dir.join(key),
            previous_keys: previous.iter().map(|p| dir.join(p)).collect(),
            issuer: "modelgate".into(),
            lifetime: Duration::from_secs(60),
        }
    }

    #[test]
    fn signs_verifiable_assertions_reused_for_half_their_lifetime() {
        let dir = tempfile::tempdir().unwrap();
        let kid = generate(&dir.path().join("k.pem")).unwrap();
        assert!(generate(&dir.path().join("k.pem")).is_err(), "never overwrites a key");
        let signer = Signer::load(&config(dir.path(), "k.pem", &[])).unwrap();
        assert_eq!(signer.kid(), kid);
        let p = Principal::new(Method::ApiKey, "id".into(), "team-a".into(), "team-a".into(), vec!["a:b".into()], vec!["vision".into()]);
        let t = signer.assertion(&p, "models", 1000).unwrap();
        assert_eq!(signer.assertion(&p, "models", 1029).unwrap(), t, "reused within half the lifetime");
        assert_ne!(signer.assertion(&p, "models", 1030).unwrap(), t, "minted anew after");
        assert_ne!(signer.assertion(&p, "other", 1030).unwrap(), signer.assertion(&p, "models", 1030).unwrap());

        // Verifies with the published JWK (not the private key).
        let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(&signer.jwks()).unwrap();
        let key = jsonwebtoken::DecodingKey::from_jwk(&jwks.keys[0]).unwrap();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let t = signer.assertion(&p, "models", now).unwrap();
        let mut v = jsonwebtoken::Validation::new(Algorithm::ES256);
        v.set_audience(&["models"]);
        v.set_issuer(&["modelgate"]);
        let data = jsonwebtoken::decode::<serde_json::Value>(t.to_str().unwrap(), &key, &v).unwrap();
        assert_eq!(data.header.kid.as_deref(), Some(kid.as_str()));
        assert_eq!(
            (data.claims["sub"].as_str(), data.claims["scope"].as_str(), data.claims["auth_method"].as_str()),
            (Some("team-a"), Some("a:b"), Some("api_key"))
        );
        assert_eq!(data.claims["exp"].as_u64().unwrap() - data.claims["iat"].as_u64().unwrap(), 60);

        // Rotation: the new signer publishes the old key after its own, and mints again.
        generate(&dir.path().join("k2.pem")).unwrap();
        let rotated = Signer::load(&config(dir.path(), "k2.pem", &["k.pem"])).unwrap();
        let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(&rotated.jwks()).unwrap();
        let kids: Vec<_> = jwks.keys.iter().map(|k| k.common.key_id.clone().unwrap()).collect();
        assert_eq!(kids, [rotated.kid().to_string(), kid]);
        assert_ne!(rotated.assertion(&p, "models", now).unwrap(), t);

        // Bad key files: the error names the field and never shows the file's text.
        std::fs::write(dir.path().join("bad.pem"), "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n").unwrap();
        let e = Signer::load(&config(dir.path(), "bad.pem", &[])).err().unwrap().to_string();
        assert!(e.contains("identity.assertion.signing_key") && !e.contains("c2VjcmV0"), "{e}");
    }
}
