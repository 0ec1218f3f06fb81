//! JWT issuers: signature and claim checks with `jsonwebtoken`, signing keys from OIDC discovery, a JWKS URL or
//! a file, cached.
//!
//! Keys: the whole set is swapped atomically (`ArcSwap`), so several keys are live at once and an IdP's key
//! rotation (new key published before it signs) never rejects a valid token. A token with an unknown `kid`
//! triggers one refetch (single-flight: concurrent requests wait on the same fetch; rate-limited by
//! `jwks_min_refetch`). Keys older than `jwks_cache` are refreshed in the background while the old ones keep
//! serving; when the IdP cannot be reached the last good keys stay in use. A `jku`/`x5u`/`jwk` header in a token is
//! never followed: keys come only from the configured source.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use modelgate_config::ConfigError;
use modelgate_config::model::{IssuerConfig, KeySource};
use serde::Deserialize;
use tokio::time::Instant;

use modelgate_pipeline::principal::{Method, Principal};

/// Longest token accepted, in bytes; longer ones are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 16 << 10;

/// Why a token was refused: a stable code for the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtFailure {
    TooLarge,
    Malformed,
    AlgorithmNotAllowed,
    UnknownKid,
    BadSignature,
    Expired,
    NotYetValid,
    IssuedInFuture,
    LifetimeTooLong,
    WrongIssuer,
    WrongAudience,
    MissingClaim,
    /// No keys have ever been obtained from the IdP.
    KeysUnavailable,
}

/// An issuer and its key cache.
pub struct Issuer {
    pub config: Arc<IssuerConfig>,
    /// One per key family (RSA, EC, Ed, HMAC): `jsonwebtoken` wants every algorithm of a validation to suit the key.
    validations: Vec<Validation>,
    keys: ArcSwap<KeySet>,
    /// Serializes fetches; holds when the last one was tried.
    fetch: tokio::sync::Mutex<Option<Instant>>,
    background: AtomicBool,
    /// Tokens already verified, so a client reusing its token pays for the signature once.
    verified: VerifiedCache,
}

/// Verified tokens by their full text (never a hash that could be made to collide), each with its principal,
/// time bounds and the key-set generation that verified it: a new key set (rotation, a key withdrawn) makes every
/// entry verify again. Bounded: 8 shards of at most 1024 tokens of up to 4 KiB; a full shard drops its expired
/// entries, then everything.
struct VerifiedCache {
    shards: [std::sync::Mutex<std::collections::HashMap<Box<str>, Verified, foldhash::fast::RandomState>>; 8],
}

struct Verified {
    principal: Arc<Principal>,
    exp: u64,
    nbf: u64,
    generation: u64,
}

const CACHE_SHARD_ENTRIES: usize = 1024;
const CACHE_MAX_TOKEN: usize = 4096;

#[derive(Default)]
struct KeySet {
    /// Bumped on every new set, so cached verifications by older sets are redone.
    generation: u64,
    keys: Vec<Key>,
    /// When the set was fetched; `None` if never (or a static set).
    fetched: Option<Instant>,
    /// A static set (file or shared secret) is never fetched.
    fixed: bool,
}

struct Key {
    kid: Option<String>,
    alg: Option<Algorithm>,
    key: DecodingKey,
}

/// The verified outcome before it becomes a [`Principal`].
pub enum Check {
    Ok(Arc<Principal>),
    Fail(JwtFailure),
    /// The token names a key we do not have: fetch, then check again.
    NeedKeys,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct IssOnly {
    #[serde(default)]
    iss: Option<String>,
}

// === impl JwtFailure ===

impl JwtFailure {
    /// Every failure, for docs checks.
    pub const ALL: [JwtFailure; 13] = [
        JwtFailure::TooLarge,
        JwtFailure::Malformed,
        JwtFailure::AlgorithmNotAllowed,
        JwtFailure::UnknownKid,
        JwtFailure::BadSignature,
        JwtFailure::Expired,
        JwtFailure::NotYetValid,
        JwtFailure::IssuedInFuture,
        JwtFailure::LifetimeTooLong,
        JwtFailure::WrongIssuer,
        JwtFailure::WrongAudience,
        JwtFailure::MissingClaim,
        JwtFailure::KeysUnavailable,
    ];

    pub fn code(self) -> &'static str {
        match self {
            JwtFailure::TooLarge => "token_too_large",
            JwtFailure::Malformed => "token_malformed",
            JwtFailure::AlgorithmNotAllowed => "algorithm_not_allowed",
            JwtFailure::UnknownKid => "unknown_kid",
            JwtFailure::BadSignature => "bad_signature",
            JwtFailure::Expired => "token_expired",
            JwtFailure::NotYetValid => "token_not_yet_valid",
            JwtFailure::IssuedInFuture => "token_issued_in_future",
            JwtFailure::LifetimeTooLong => "token_lifetime_too_long",
            JwtFailure::WrongIssuer => "wrong_issuer",
            JwtFailure::WrongAudience => "wrong_audience",
            JwtFailure::MissingClaim => "missing_claim",
            JwtFailure::KeysUnavailable => "keys_unavailable",
        }
    }
}

/// The `iss` a token claims, read without verification, only to choose which issuer verifies it.
pub fn claimed_issuer(token: &str) -> Option<String> {
    jsonwebtoken::dangerous::insecure_decode::<IssOnly>(token).ok()?.claims.iss
}

// === impl Issuer ===

impl Issuer {
    /// Builds an issuer; a static key set (file, shared secret) is read now, a fetched one starts fetching.
    pub fn new(config: Arc<IssuerConfig>) -> Result<Issuer, ConfigError> {
        let algorithms: Vec<Algorithm> = config.algorithms.iter().filter_map(|a| Algorithm::from_str(a).ok()).collect();
        let mut validations: Vec<Validation> = Vec::new();
        for alg in algorithms {
            if let Some(v) = validations.iter_mut().find(|v| v.algorithms[0].family() == alg.family()) {
                v.algorithms.push(alg);
                continue;
            }
            let mut v = Validation::new(alg);
            v.leeway = config.leeway.as_secs();
            v.validate_exp = true;
            v.validate_nbf = true;
            v.set_audience(&config.audiences);
            v.set_issuer(&[&config.issuer]);
            v.set_required_spec_claims(&["exp", "iss", "aud"]);
            validations.push(v);
        }
        let keys = match &config.keys {
            KeySource::None => {
                let secret = config.hs_secret.as_deref().unwrap_or_default();
                KeySet {
                    generation: 0,
                    keys: vec![Key { kid: None, alg: None, key: DecodingKey::from_secret(secret.as_bytes()) }],
                    fetched: None,
                    fixed: true,
                }
            }
            KeySource::File(path) => {
                let text = std::fs::read(path).map_err(|e| ConfigError::new(path, "", format!("cannot read the JWKS file: {e}")))?;
                let raw: RawJwks =
                    serde_json::from_slice(&text).map_err(|e| ConfigError::new(path, "", format!("not a JWKS document: {e}")))?;
                let keys = convert(&raw, &config.name);
                if keys.is_empty() {
                    return Err(ConfigError::new(path, "keys", "no usable signing key").hint("a JWKS with RSA, EC or OKP public keys"));
                }
                KeySet { generation: 0, keys, fetched: None, fixed: true }
            }
            KeySource::Discovery(_) | KeySource::Uri(_) => KeySet::default(),
        };
        let issuer = Issuer {
            config,
            validations,
            keys: ArcSwap::from_pointee(keys),
            fetch: tokio::sync::Mutex::new(None),
            background: AtomicBool::new(false),
            verified: VerifiedCache::new(),
        };
        Ok(issuer)
    }

    /// Starts the first fetch in the background (from a runtime), so the first request rarely waits.
    pub fn prefetch(self: &Arc<Self>) {
        if !self.keys.load().fixed && self.keys.load().fetched.is_none() {
            self.spawn_refresh();
        }
    }

    /// Checks a token with the keys at hand. No I/O.
    pub fn check(self: &Arc<Self>, token: &str, now: SystemTime) -> Check {
        if token.len() > MAX_TOKEN_BYTES {
            return Check::Fail(JwtFailure::TooLarge);
        }
        let now_s = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let set = self.keys.load();
        if let Some(p) = self.verified.get(token, now_s, self.config.leeway.as_secs(), set.generation) {
            return Check::Ok(p);
        }
        let Ok(header) = jsonwebtoken::decode_header(token) else { return Check::Fail(JwtFailure::Malformed) };
        let Some(validation) = self.validations.iter().find(|v| v.algorithms.contains(&header.alg)) else {
            return Check::Fail(JwtFailure::AlgorithmNotAllowed);
        };
        if !set.fixed && set.fetched.is_some_and(|t| t.elapsed() > self.config.jwks_cache) {
            self.spawn_refresh();
        }
        let candidates = set.keys.iter().filter(|k| match (&header.kid, &k.kid) {
            (Some(want), Some(have)) => want == have,
            (Some(_), None) => set.fixed,
            (None, _) => true,
        });
        let mut tried = false;
        let mut last = JwtFailure::BadSignature;
        for k in candidates.filter(|k| k.alg.is_none_or(|a| a == header.alg) && k.key.family() == header.alg.family()) {
            tried = true;
            match jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, &k.key, validation) {
                Ok(data) => {
                    let (exp, nbf) = (claim_u64(&data.claims, "exp"), claim_u64(&data.claims, "nbf"));
                    let checked = self.claims_ok(data.claims, now);
                    if let (Check::Ok(p), Some(exp)) = (&checked, exp) {
                        self.verified.insert(token, p.clone(), exp, nbf.unwrap_or(0), set.generation, now_s);
                    }
                    return checked;
                }
                Err(e) => {
                    last = failure(e.kind());
                    if last != JwtFailure::BadSignature && last != JwtFailure::AlgorithmNotAllowed {
                        // The signature was good and a claim was not: no other key will change that.
                        return Check::Fail(last);
                    }
                }
            }
        }
        if tried {
            return Check::Fail(last);
        }
        if set.fixed {
            return Check::Fail(JwtFailure::UnknownKid);
        }
        Check::NeedKeys
    }

    /// [`Self::check`], fetching keys once if the token names one we do not have.
    pub async fn check_fetching(self: &Arc<Self>, token: &str) -> Result<Arc<Principal>, JwtFailure> {
        let asked = Instant::now();
        match self.check(token, SystemTime::now()) {
            Check::Ok(p) => return Ok(p),
            Check::Fail(f) => return Err(f),
            Check::NeedKeys => {}
        }
        self.refresh(asked, true).await;
        match self.check(token, SystemTime::now()) {
            Check::Ok(p) => Ok(p),
            Check::Fail(f) => Err(f),
            Check::NeedKeys if self.keys.load().fetched.is_none() => Err(JwtFailure::KeysUnavailable),
            Check::NeedKeys => Err(JwtFailure::UnknownKid),
        }
    }

    fn claims_ok(&self, claims: serde_json::Map<String, serde_json::Value>, now: SystemTime) -> Check {
        let now = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let leeway = self.config.leeway.as_secs();
        let iat = claims.get("iat").and_then(|v| v.as_u64());
        let exp = claims.get("exp").and_then(|v| v.as_u64());
        if iat.is_some_and(|iat| iat > now + leeway) {
            return Check::Fail(JwtFailure::IssuedInFuture);
        }
        if let Some(max) = self.config.max_token_lifetime {
            match (iat, exp) {
                (Some(iat), Some(exp)) if exp.saturating_sub(iat) <= max.as_secs() => {}
                (None, _) => return Check::Fail(JwtFailure::MissingClaim),
                _ => return Check::Fail(JwtFailure::LifetimeTooLong),
            }
        }
        // An empty `sub`/consumer is no identity: every such token would share one consumer's limits and rules.
        let str_claim = |name: &str| claims.get(name).and_then(|v| v.as_str()).filter(|s| !s.is_empty()).map(String::from);
        let Some(subject) = str_claim("sub").or_else(|| str_claim("client_id")) else { return Check::Fail(JwtFailure::MissingClaim) };
        let consumer = str_claim(&self.config.consumer_claim).unwrap_or_else(|| subject.clone());
        let scopes = match claims.get(&self.config.scope_claim).or_else(|| claims.get("scp")) {
            Some(serde_json::Value::String(s)) => s.split_ascii_whitespace().map(String::from).collect(),
            Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v.as_str().map(String::from)).collect(),
            _ => Vec::new(),
        };
        let groups = match claims.get(&self.config.groups_claim) {
            Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v.as_str().map(String::from)).collect(),
            Some(serde_json::Value::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        };
        let mut p = Principal::new(Method::Jwt, self.config.name.clone(), subject, consumer, scopes, groups);
        p.claims = claims;
        Check::Ok(Arc::new(p))
    }

    /// One background refresh at a time.
    fn spawn_refresh(self: &Arc<Self>) {
        if self.background.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    me.refresh(Instant::now(), false).await;
                    me.background.store(false, Ordering::Release);
                });
            }
            Err(_) => self.background.store(false, Ordering::Release),
        }
    }

    /// Fetches the key set unless another fetch finished after `asked`, or (for unknown-kid fetches) one was
    /// tried less than `jwks_min_refetch` ago.
    async fn refresh(&self, asked: Instant, rate_limited: bool) {
        let mut last = self.fetch.lock().await;
        if let Some(t) = *last
            && (t >= asked || (rate_limited && t.elapsed() < self.config.jwks_min_refetch))
        {
            return;
        }
        *last = Some(Instant::now());
        match self.fetch_keys().await {
            Ok(keys) if !keys.is_empty() => {
                tracing::info!(issuer = %self.config.name, keys = keys.len(), "fetched signing keys");
                let generation = self.keys.load().generation + 1;
                self.keys.store(Arc::new(KeySet { generation, keys, fetched: Some(Instant::now()), fixed: false }));
            }
            Ok(_) => tracing::warn!(issuer = %self.config.name, "the JWKS has no usable signing key; keeping the previous keys"),
            Err(e) => tracing::warn!(issuer = %self.config.name, error = %e, "cannot fetch signing keys; keeping the previous keys"),
        }
    }

    async fn fetch_keys(&self) -> Result<Vec<Key>, KeyFetchError> {
        let jwks_uri = match &self.config.keys {
            KeySource::Uri(u) => u.clone(),
            KeySource::Discovery(url) => {
                let d: Discovery = modelgate_upstream::fetch::get_json(url).await?;
                if d.issuer != self.config.issuer {
                    return Err(KeyFetchError::WrongIssuer { found: d.issuer, expected: self.config.issuer.clone() });
                }
                d.jwks_uri
            }
            KeySource::File(_) | KeySource::None => return Ok(Vec::new()),
        };
        let raw: RawJwks = modelgate_upstream::fetch::get_json(&jwks_uri).await?;
        Ok(convert(&raw, &self.config.name))
    }

    /// Number of keys held (for status views and tests).
    pub fn key_count(&self) -> usize {
        self.keys.load().keys.len()
    }
}

/// Why an issuer's signing keys could not be fetched.
#[derive(Debug, thiserror::Error)]
enum KeyFetchError {
    #[error(transparent)]
    Fetch(#[from] modelgate_upstream::fetch::FetchError),
    #[error("the discovery document names issuer {found:?}, not {expected:?}")]
    WrongIssuer { found: String, expected: String },
}

fn claim_u64(claims: &serde_json::Map<String, serde_json::Value>, name: &str) -> Option<u64> {
    claims.get(name).and_then(|v| v.as_u64())
}

// === impl VerifiedCache ===

impl VerifiedCache {
    fn new() -> VerifiedCache {
        VerifiedCache { shards: std::array::from_fn(|_| std::sync::Mutex::new(Default::default())) }
    }

    fn shard(&self, token: &str) -> &std::sync::Mutex<std::collections::HashMap<Box<str>, Verified, foldhash::fast::RandomState>> {
        // The signature's last bytes are as good as random; the full token is still compared in the map.
        let b = token.as_bytes();
        &self.shards[b.last().copied().unwrap_or(0) as usize % self.shards.len()]
    }

    fn get(&self, token: &str, now: u64, leeway: u64, generation: u64) -> Option<Arc<Principal>> {
        if token.len() > CACHE_MAX_TOKEN {
            return None;
        }
        let shard = self.shard(token).lock().ok()?;
        let v = shard.get(token)?;
        (v.generation == generation && now < v.exp.saturating_add(leeway) && v.nbf <= now.saturating_add(leeway))
            .then(|| v.principal.clone())
    }

    fn insert(&self, token: &str, principal: Arc<Principal>, exp: u64, nbf: u64, generation: u64, now: u64) {
        if token.len() > CACHE_MAX_TOKEN {
            return;
        }
        let Ok(mut shard) = self.shard(token).lock() else { return };
        if shard.len() >= CACHE_SHARD_ENTRIES {
            shard.retain(|_, v| v.exp > now);
            if shard.len() >= CACHE_SHARD_ENTRIES {
                shard.clear();
            }
        }
        shard.insert(token.into(), Verified { principal, exp, nbf, generation });
    }
}

/// The usable signing keys of a JWKS; others (encryption keys, unknown types) are skipped with a log line.
fn convert(raw: &RawJwks, issuer: &str) -> Vec<Key> {
    let mut out = Vec::new();
    for v in &raw.keys {
        let jwk: Jwk = match serde_json::from_value(v.clone()) {
            Ok(j) => j,
            Err(e) => {
                tracing::debug!(issuer, error = %e, "skipping a JWKS entry of an unsupported type");
                continue;
            }
        };
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        if matches!(jwk.algorithm, jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_)) {
            // A symmetric key in a JWKS would let anyone holding it mint tokens; shared secrets go in hs_secret.
            continue;
        }
        let alg = jwk.common.key_algorithm.and_then(|a| Algorithm::from_str(&format!("{a:?}")).ok());
        match DecodingKey::from_jwk(&jwk) {
            Ok(key) => out.push(Key { kid: jwk.common.key_id.clone(), alg, key }),
            Err(e) => tracing::debug!(issuer, error = %e, "skipping an unusable JWKS key"),
        }
    }
    out
}

fn failure(kind: &jsonwebtoken::errors::ErrorKind) -> JwtFailure {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::InvalidSignature => JwtFailure::BadSignature,
        K::ExpiredSignature => JwtFailure::Expired,
        K::ImmatureSignature => JwtFailure::NotYetValid,
        K::InvalidIssuer => JwtFailure::WrongIssuer,
        K::InvalidAudience => JwtFailure::WrongAudience,
        K::MissingRequiredClaim(_) | K::InvalidClaimFormat(_) => JwtFailure::MissingClaim,
        K::InvalidAlgorithm | K::MissingAlgorithm | K::InvalidAlgorithmName => JwtFailure::AlgorithmNotAllowed,
        _ => JwtFailure::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use std::time::Duration;

    const SECRET: &str = "0123456789abcdef0123456789abcdef-test";

    fn issuer(max_lifetime: Option<Duration>) -> Arc<Issuer> {
        Arc::new(
            Issuer::new(Arc::new(IssuerConfig {
                name: "test".into(),
                origin: modelgate_config::model::Origin { file: "t.yaml".into(), path: "identity.issuers.test".into() },
                issuer: "https://idp.test".into(),
                keys: KeySource::None,
                audiences: vec!["modelgate".into()],
                algorithms: vec!["HS256".into()],
                hs_secret: Some(SECRET.into()),
                leeway: Duration::from_secs(5),
                max_token_lifetime: max_lifetime,
                jwks_cache: Duration::from_secs(600),
                jwks_min_refetch: Duration::from_secs(10),
                scope_claim: "scope".into(),
                groups_claim: "groups".into(),
                consumer_claim: "client_id".into(),
            }))
            .unwrap(),
        )
    }

    fn token(claims: serde_json::Value) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
    }

    fn now() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
    }

    fn fail(i: &Arc<Issuer>, t: &str) -> JwtFailure {
        match i.check(t, SystemTime::now()) {
            Check::Fail(f) => f,
            Check::Ok(_) => panic!("accepted"),
            Check::NeedKeys => panic!("needs keys"),
        }
    }

    #[test]
    fn claims_are_checked() {
        let i = issuer(Some(Duration::from_secs(3600)));
        let n = now();
        let good = serde_json::json!({"iss": "https://idp.test", "aud": "modelgate", "sub": "svc", "client_id": "team-a", "scope": "a b", "groups": ["g"], "iat": n, "exp": n + 60});
        match i.check(&token(good.clone()), SystemTime::now()) {
            Check::Ok(p) => {
                assert_eq!((p.subject.as_str(), p.consumer.as_str()), ("svc", "team-a"));
                assert_eq!(p.scopes, ["a", "b"]);
                assert_eq!(p.groups, ["g"]);
            }
            _ => panic!("a good token was refused"),
        }
        let with = |k: &str, v: serde_json::Value| {
            let mut c = good.clone();
            c[k] = v;
            token(c)
        };
        assert_eq!(fail(&i, &with("exp", (n - 60).into())), JwtFailure::Expired);
        assert_eq!(fail(&i, &with("nbf", (n + 60).into())), JwtFailure::NotYetValid);
        assert_eq!(fail(&i, &with("iat", (n + 60).into())), JwtFailure::IssuedInFuture);
        assert_eq!(fail(&i, &with("aud", "other".into())), JwtFailure::WrongAudience);
        assert_eq!(fail(&i, &with("iss", "https://evil.test".into())), JwtFailure::WrongIssuer);
        assert_eq!(fail(&i, &with("exp", (n + 7200).into())), JwtFailure::LifetimeTooLong);
        let mut no_iat = good.clone();
        no_iat.as_object_mut().unwrap().remove("iat");
        assert_eq!(fail(&i, &token(no_iat)), JwtFailure::MissingClaim, "a lifetime limit needs iat");
        // Found by fuzz/fuzz_targets/jwt_check.rs: an empty `sub`/`client_id` was accepted with an empty consumer.
        let mut empty = good.clone();
        empty.as_object_mut().unwrap().remove("sub");
        empty["client_id"] = "".into();
        assert_eq!(fail(&i, &token(empty.clone())), JwtFailure::MissingClaim, "an empty consumer is no identity");
        empty["sub"] = "".into();
        assert_eq!(fail(&i, &token(empty)), JwtFailure::MissingClaim, "nor an empty subject");
        let t = token(good.clone());
        assert_eq!(fail(&i, &t[..t.len() - 3]), JwtFailure::BadSignature);
        assert_eq!(fail(&i, "not.a.jwt"), JwtFailure::Malformed);
        assert_eq!(fail(&i, &"a".repeat(MAX_TOKEN_BYTES + 1)), JwtFailure::TooLarge);
        // alg: none
        let none = format!("{}.{}.", b64(r#"{"alg":"none","typ":"JWT"}"#), b64(&good.to_string()));
        assert!(matches!(fail(&i, &none), JwtFailure::Malformed | JwtFailure::AlgorithmNotAllowed));
    }

    #[test]
    fn verified_tokens_are_reused_only_within_their_bounds() {
        let i = issuer(None);
        let n = now();
        let t = token(serde_json::json!({"iss": "https://idp.test", "aud": "modelgate", "sub": "svc", "iat": n, "exp": n + 60}));
        let first = match i.check(&t, SystemTime::now()) {
            Check::Ok(p) => p,
            _ => panic!("refused"),
        };
        match i.check(&t, SystemTime::now()) {
            Check::Ok(p) => assert!(Arc::ptr_eq(&first, &p), "the second check is a cache hit"),
            _ => panic!("refused"),
        }
        assert!(i.verified.get(&t, n + 64, 5, 0).is_some(), "within leeway");
        assert!(i.verified.get(&t, n + 65, 5, 0).is_none(), "expired");
        assert!(i.verified.get(&t, n, 5, 1).is_none(), "verified by an older key set");
        let mut other = t.clone();
        other.push('x');
        assert!(i.verified.get(&other, n, 5, 0).is_none());
    }

    fn b64(s: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }
}
