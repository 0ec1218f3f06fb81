//! Single sign-on for people (`admin.console`): the OIDC authorization code flow with PKCE against the configured
//! issuer, and the sessions it starts. The console (on the admin listener) and routes with `auth: {methods:
//! [oidc_session]}` (on the proxy listener) share them: one login, one cookie, one place that ends it.
//!
//! Cookies are sealed (AES-256-GCM, so they can be neither read nor altered) and name a session held here, so
//! logging out ends it at once whoever still holds the cookie. Nothing an unauthenticated caller sends is kept: a
//! login in progress lives in its own sealed, short-lived cookie; a session exists only once the IdP signed the
//! person in.

#![allow(
    clippy::disallowed_methods,
    reason = "session expiry is wall-clock time compared with the cookie's, and the discovery cache's age is reported, never a timer"
)]

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::header::HeaderValue;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::Deserialize;

use modelgate_config::model::ConsoleConfig;
use modelgate_pipeline::principal::{self, Principal};

use crate::identity::jwt::{self, Check};

/// The session cookie (path `/`: the console, the admin API it calls, and `oidc_session` routes on the same host).
pub const SESSION_COOKIE: &str = "mg_session";
/// The login-in-progress cookie: state, nonce and PKCE verifier of one authorization request.
pub const LOGIN_COOKIE: &str = "mg_login";
/// Sessions held at once; only people the IdP signed in (and the admin rules allowed) get one.
const MAX_SESSIONS: u64 = 10_000;
/// The longest `session_lifetime` allowed.
const LONGEST: Duration = Duration::from_secs(7 * 86400);
/// How long a login may take at the IdP.
const LOGIN_TTL: u64 = 600;
/// How long the IdP's discovery document is used before it is read again.
const DISCOVERY_TTL: Duration = Duration::from_secs(300);

/// Single sign-on's state beside the snapshots: sessions, the IdP's endpoints, the ID token checker, and the
/// addresses the listeners were bound to (the default redirect URIs').
#[derive(Default)]
pub struct Sso {
    pub sessions: Sessions,
    endpoints: tokio::sync::Mutex<Option<(Instant, String, Arc<Endpoints>)>>,
    checker: std::sync::Mutex<Option<Arc<jwt::Issuer>>>,
    pub admin_addr: OnceLock<std::net::SocketAddr>,
    pub proxy_addr: OnceLock<std::net::SocketAddr>,
}

/// Single sign-on in a snapshot: the state and the settings (`admin.console`).
#[derive(Clone)]
pub struct SsoAccess {
    pub sso: Arc<Sso>,
    pub config: Arc<ConsoleConfig>,
}

/// Where a login happens: the console (admin listener) or a route (proxy listener).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    Console,
    Routes,
}

/// The IdP endpoints the login uses, from its discovery document.
#[derive(Debug, Deserialize)]
struct Endpoints {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
}

/// The login in progress, sealed in [`LOGIN_COOKIE`].
#[derive(serde::Serialize, Deserialize)]
struct Login {
    state: String,
    nonce: String,
    verifier: String,
    return_to: String,
    expires: u64,
}

/// Why a login failed: shown to the person on a plain page (never the IdP's tokens or secrets).
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("the identity provider cannot be reached: {0}")]
    Idp(String),
    #[error("the identity provider did not sign you in: {0}")]
    Refused(String),
    #[error("this sign-in is stale or was started in another browser; start again")]
    Stale,
    #[error("the identity provider's ID token was not accepted ({0})")]
    BadToken(&'static str),
}

impl LoginError {
    /// The HTTP status of the page that says so.
    pub fn status(&self) -> http::StatusCode {
        match self {
            LoginError::Idp(_) => http::StatusCode::BAD_GATEWAY,
            LoginError::Stale => http::StatusCode::BAD_REQUEST,
            LoginError::Refused(_) | LoginError::BadToken(_) => http::StatusCode::UNAUTHORIZED,
        }
    }
}

/// A signed-in person.
pub struct Session {
    pub principal: Arc<Principal>,
    /// Sent back in `x-csrf-token` (or the `csrf` form field) with every state-changing call.
    pub csrf: String,
    /// Seconds since the Unix epoch.
    pub expires: u64,
}

/// The sessions of this process and the key that seals cookies without a configured secret.
pub struct Sessions {
    held: moka::sync::Cache<String, Arc<Session>>,
    /// Used when `admin.console.cookie_secret` is unset: logins then end at a restart.
    random_key: [u8; 32],
    rng: SystemRandom,
}

impl Default for Sessions {
    fn default() -> Sessions {
        let rng = SystemRandom::new();
        let mut random_key = [0u8; 32];
        rng.fill(&mut random_key).expect("the system's random source");
        Sessions { held: moka::sync::Cache::builder().max_capacity(MAX_SESSIONS).time_to_live(LONGEST).build(), random_key, rng }
    }
}

impl Sessions {
    /// `n` random bytes, base64url.
    pub fn random(&self, n: usize) -> String {
        let mut b = vec![0u8; n];
        self.rng.fill(&mut b).expect("the system's random source");
        URL_SAFE_NO_PAD.encode(b)
    }

    fn key(&self, secret: Option<&str>) -> LessSafeKey {
        let bytes: [u8; 32] = match secret {
            Some(s) => {
                let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
                ctx.update(b"modelgate console cookies v1\0");
                ctx.update(s.as_bytes());
                ctx.finish().as_ref().try_into().expect("32 bytes")
            }
            None => self.random_key,
        };
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &bytes).expect("a 32-byte key"))
    }

    /// `plain` sealed for the cookie `name` (the name is authenticated too: one cookie cannot stand for another).
    pub fn seal(&self, secret: Option<&str>, name: &str, plain: &[u8]) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).expect("the system's random source");
        let mut data = plain.to_vec();
        self.key(secret)
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(name.as_bytes()), &mut data)
            .expect("sealing fits in memory");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// What [`Sessions::seal`] sealed, if `sealed` is intact and was sealed for `name` with this key.
    pub fn open(&self, secret: Option<&str>, name: &str, sealed: &str) -> Option<Vec<u8>> {
        if sealed.len() > 4096 {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(sealed).ok()?;
        if raw.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return None;
        }
        let (nonce, data) = raw.split_at(NONCE_LEN);
        let mut data = data.to_vec();
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let plain = self.key(secret).open_in_place(nonce, Aad::from(name.as_bytes()), &mut data).ok()?;
        Some(plain.to_vec())
    }

    /// Starts a session; the id goes in the sealed cookie.
    pub fn start(&self, principal: Arc<Principal>, lifetime: Duration) -> (String, Arc<Session>) {
        let id = self.random(32);
        let session = Arc::new(Session { principal, csrf: self.random(32), expires: now() + lifetime.as_secs() });
        self.held.insert(id.clone(), session.clone());
        (id, session)
    }

    /// The live session of this id.
    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        let s = self.held.get(id)?;
        if s.expires <= now() {
            self.held.invalidate(id);
            return None;
        }
        Some(s)
    }

    /// Ends a session (logout): its cookie opens nothing from now on.
    pub fn end(&self, id: &str) {
        self.held.invalidate(id);
    }

    /// Sessions held (for tests and the status view).
    pub fn count(&self) -> u64 {
        self.held.run_pending_tasks();
        self.held.entry_count()
    }
}

// === impl Entry ===

impl Entry {
    /// Where this entry's login, callback and logout live.
    pub fn base(self) -> &'static str {
        match self {
            Entry::Console => "/console/",
            Entry::Routes => "/.modelgate/",
        }
    }

    /// Paths a login from here may return to.
    pub fn may_return_to(self, r: &str) -> bool {
        let inside = match self {
            Entry::Console => r.starts_with("/console/"),
            Entry::Routes => r.starts_with('/') && !r.starts_with("/.modelgate/"),
        };
        inside && !r.contains("//") && !r.contains('\\') && r.len() <= 2048 && !r.bytes().any(|b| b.is_ascii_control())
    }
}

// === impl SsoAccess ===

impl SsoAccess {
    /// The signed-in person of a request: an intact session cookie naming a live session. `(session id, session)`.
    pub fn session_of(&self, headers: &http::HeaderMap) -> Option<(String, Arc<Session>)> {
        let sealed = cookie(headers, SESSION_COOKIE)?;
        let id = String::from_utf8(self.sso.sessions.open(self.config.cookie_secret.as_deref(), SESSION_COOKIE, sealed)?).ok()?;
        let s = self.sso.sessions.get(&id)?;
        Some((id, s))
    }

    /// The redirect URI of an entry: configured, or `http://{bound address}{base}callback`.
    pub fn redirect_uri(&self, entry: Entry) -> String {
        let (configured, bound, fallback) = match entry {
            Entry::Console => (&self.config.redirect_uri, self.sso.admin_addr.get(), "127.0.0.1:8081"),
            Entry::Routes => (&self.config.routes_redirect_uri, self.sso.proxy_addr.get(), "127.0.0.1:8080"),
        };
        match (configured, bound) {
            (Some(u), _) => u.clone(),
            (None, Some(addr)) => format!("http://{addr}{}callback", entry.base()),
            (None, None) => format!("http://{fallback}{}callback", entry.base()),
        }
    }

    /// Starts a login: the IdP authorization URL (fresh state, nonce, PKCE challenge) and the sealed login cookie.
    pub async fn begin(&self, entry: Entry, return_to: Option<String>) -> Result<(String, HeaderValue), LoginError> {
        let c = &self.config;
        let endpoints = self.sso.endpoints(c).await?;
        let sessions = &self.sso.sessions;
        let return_to = return_to.filter(|r| entry.may_return_to(r)).unwrap_or_else(|| match entry {
            Entry::Console => "/console/".into(),
            Entry::Routes => "/".into(),
        });
        let login = Login {
            state: sessions.random(16),
            nonce: sessions.random(16),
            verifier: sessions.random(32),
            return_to,
            expires: now() + LOGIN_TTL,
        };
        let challenge = URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, login.verifier.as_bytes()));
        let params = form_urlencoded::Serializer::new(String::new())
            .append_pair("response_type", "code")
            .append_pair("client_id", &c.client_id)
            .append_pair("redirect_uri", &self.redirect_uri(entry))
            .append_pair("scope", &c.scopes.join(" "))
            .append_pair("state", &login.state)
            .append_pair("nonce", &login.nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256")
            .finish();
        let sep = if endpoints.authorization_endpoint.contains('?') { '&' } else { '?' };
        let sealed = sessions.seal(c.cookie_secret.as_deref(), LOGIN_COOKIE, &serde_json::to_vec(&login).unwrap_or_default());
        let cookie = self.set_cookie(LOGIN_COOKIE, &sealed, entry.base(), LOGIN_TTL);
        Ok((format!("{}{sep}{params}", endpoints.authorization_endpoint), cookie))
    }

    /// Ends a login at the callback: checks the state against the login cookie, redeems the code with the PKCE
    /// verifier, checks the ID token (signature, issuer, audience = the client, expiry) and its nonce. The person as
    /// sessions name them (method `oidc_session`, their consumer claim, groups and claims) and where to return.
    pub async fn finish(&self, entry: Entry, query: Option<&str>, headers: &http::HeaderMap) -> Result<(Principal, String), LoginError> {
        let c = &self.config;
        if let Some(error) = param(query, "error") {
            let detail = param(query, "error_description").map(|d| format!(": {d}")).unwrap_or_default();
            return Err(LoginError::Refused(format!("{error}{detail}")));
        }
        let login = self.login_cookie(headers).ok_or(LoginError::Stale)?;
        let (code, state) = (param(query, "code").ok_or(LoginError::Stale)?, param(query, "state").ok_or(LoginError::Stale)?);
        if !same(&state, &login.state) {
            return Err(LoginError::Stale);
        }
        let endpoints = self.sso.endpoints(c).await?;
        let redirect = self.redirect_uri(entry);
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", redirect.as_str()),
            ("code_verifier", login.verifier.as_str()),
        ];
        let basic;
        let mut headers = Vec::new();
        match &c.client_secret {
            Some(secret) => {
                let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
                basic = format!("Basic {}", STANDARD.encode(format!("{}:{}", enc(&c.client_id), enc(secret))));
                headers.push(("authorization", basic.as_str()));
            }
            None => form.push(("client_id", c.client_id.as_str())),
        }
        let (status, body) = modelgate_upstream::fetch::post_form(&endpoints.token_endpoint, &headers, &form)
            .await
            .map_err(|e| LoginError::Idp(e.without_query()))?;
        #[derive(Deserialize)]
        struct Tokens {
            id_token: Option<String>,
            error: Option<String>,
        }
        let tokens: Tokens = serde_json::from_slice(&body).map_err(|_| LoginError::Idp(format!("the token endpoint answered {status}")))?;
        let Some(id_token) = tokens.id_token.filter(|_| status.is_success()) else {
            return Err(LoginError::Refused(tokens.error.unwrap_or_else(|| format!("the token endpoint answered {status}"))));
        };
        let checker = self.sso.checker(c).map_err(|_| LoginError::BadToken("issuer_config"))?;
        let p = match checker.check(&id_token, SystemTime::now()) {
            Check::Ok(p) => p,
            Check::Fail(f) => return Err(LoginError::BadToken(f.code())),
            Check::NeedKeys => checker.check_fetching(&id_token).await.map_err(|f| LoginError::BadToken(f.code()))?,
        };
        if !p.claims.get("nonce").and_then(|n| n.as_str()).is_some_and(|n| same(n, &login.nonce)) {
            return Err(LoginError::BadToken("nonce_mismatch"));
        }
        let mut person = Principal::new(
            principal::Method::Session,
            c.id_token.name.clone(),
            p.subject.clone(),
            p.consumer.clone(),
            p.scopes.clone(),
            p.groups.clone(),
        );
        person.claims = p.claims.clone();
        Ok((person, login.return_to))
    }

    /// Starts a session for `person`: the `Set-Cookie` of its sealed id.
    pub fn start(&self, person: Arc<Principal>) -> HeaderValue {
        let (id, _) = self.sso.sessions.start(person, self.config.session_lifetime);
        let sealed = self.sso.sessions.seal(self.config.cookie_secret.as_deref(), SESSION_COOKIE, id.as_bytes());
        self.set_cookie(SESSION_COOKIE, &sealed, "/", self.config.session_lifetime.as_secs())
    }

    /// Ends a session; the `Set-Cookie` that clears the cookie.
    pub fn end(&self, id: &str) -> HeaderValue {
        self.sso.sessions.end(id);
        self.clear(SESSION_COOKIE, "/")
    }

    /// The `Set-Cookie` that clears a cookie.
    pub fn clear(&self, name: &str, path: &str) -> HeaderValue {
        self.set_cookie(name, "", path, 0)
    }

    fn set_cookie(&self, name: &str, value: &str, path: &str, max_age: u64) -> HeaderValue {
        let secure = if self.config.secure_cookies { "; Secure" } else { "" };
        HeaderValue::from_str(&format!("{name}={value}; Path={path}; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"))
            .expect("cookie values are base64url")
    }

    fn login_cookie(&self, headers: &http::HeaderMap) -> Option<Login> {
        let sealed = cookie(headers, LOGIN_COOKIE)?;
        let login: Login =
            serde_json::from_slice(&self.sso.sessions.open(self.config.cookie_secret.as_deref(), LOGIN_COOKIE, sealed)?).ok()?;
        (login.expires > now()).then_some(login)
    }
}

// === impl Sso ===

impl Sso {
    /// The IdP's endpoints, from its discovery document (read again after [`DISCOVERY_TTL`]).
    async fn endpoints(&self, c: &ConsoleConfig) -> Result<Arc<Endpoints>, LoginError> {
        let mut held = self.endpoints.lock().await;
        if let Some((at, issuer, e)) = held.as_ref()
            && *issuer == c.id_token.issuer
            && at.elapsed() < DISCOVERY_TTL
        {
            return Ok(e.clone());
        }
        let url = format!("{}/.well-known/openid-configuration", c.id_token.issuer.trim_end_matches('/'));
        let e: Endpoints = modelgate_upstream::fetch::get_json(&url).await.map_err(|e| LoginError::Idp(e.without_query()))?;
        if e.issuer != c.id_token.issuer {
            return Err(LoginError::Idp(format!("its discovery document names issuer {:?}, not {:?}", e.issuer, c.id_token.issuer)));
        }
        let e = Arc::new(e);
        *held = Some((Instant::now(), c.id_token.issuer.clone(), e.clone()));
        Ok(e)
    }

    /// The ID token checker for the config (made again when it changes; keeps its keys otherwise).
    fn checker(&self, c: &ConsoleConfig) -> Result<Arc<jwt::Issuer>, modelgate_config::ConfigError> {
        let mut held = self.checker.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = held.as_ref()
            && i.config == c.id_token
        {
            return Ok(i.clone());
        }
        let i = Arc::new(jwt::Issuer::new(c.id_token.clone())?);
        *held = Some(i.clone());
        Ok(i)
    }
}

/// A browser says this request comes from another site (`Sec-Fetch-Site`), or its `Origin` is not the host it was
/// sent to: no state-changing call is taken from it on a cookie's strength.
pub fn cross_site(headers: &http::HeaderMap) -> bool {
    // Browsers that send Fetch Metadata say it directly (their `Origin` may be `null` under a no-referrer policy).
    if let Some(site) = headers.get("sec-fetch-site") {
        return site.as_bytes() == b"cross-site" || site.as_bytes() == b"same-site";
    }
    match (headers.get(http::header::ORIGIN).and_then(|v| v.to_str().ok()), headers.get(http::header::HOST).and_then(|v| v.to_str().ok())) {
        (Some(origin), Some(host)) => origin.split_once("://").is_none_or(|(_, authority)| !authority.eq_ignore_ascii_case(host)),
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// The first value of query parameter `name`, percent-decoded.
pub fn param(q: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(q?.as_bytes()).find_map(|(k, v)| (k == name).then(|| v.into_owned()))
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    cookies(headers).filter_map(|kv| kv.split_once('=')).find_map(|(k, v)| (k == name).then_some(v))
}

/// Every `name=value` piece of the request's `Cookie` headers, trimmed.
pub(crate) fn cookies(headers: &http::HeaderMap) -> impl Iterator<Item = &str> {
    headers.get_all(http::header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).map(str::trim)
}

/// Constant-time equality of two tokens.
pub fn same(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq as _;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_cookies_open_only_intact_under_their_name_and_key() {
        let s = Sessions::default();
        let sealed = s.seal(Some("a-secret-of-at-least-thirty-two-chars"), SESSION_COOKIE, b"id-1");
        assert!(!sealed.contains("id-1"), "encrypted, not only signed");
        assert_eq!(s.open(Some("a-secret-of-at-least-thirty-two-chars"), SESSION_COOKIE, &sealed).as_deref(), Some(&b"id-1"[..]));
        assert_eq!(s.open(Some("another-secret-of-at-least-thirty-two"), SESSION_COOKIE, &sealed), None, "other key");
        assert_eq!(s.open(Some("a-secret-of-at-least-thirty-two-chars"), LOGIN_COOKIE, &sealed), None, "other cookie");
        let mut bytes = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert_eq!(s.open(Some("a-secret-of-at-least-thirty-two-chars"), SESSION_COOKIE, &URL_SAFE_NO_PAD.encode(bytes)), None, "altered");
        assert_eq!(s.open(None, SESSION_COOKIE, "not base64 !"), None);
        // Without a secret the process's random key seals; another process (another key) cannot open it.
        let other = Sessions::default();
        let local = s.seal(None, SESSION_COOKIE, b"x");
        assert!(s.open(None, SESSION_COOKIE, &local).is_some());
        assert!(other.open(None, SESSION_COOKIE, &local).is_none());
    }

    #[test]
    fn logins_return_only_inside_their_entry() {
        assert!(Entry::Console.may_return_to("/console/"));
        assert!(Entry::Console.may_return_to("/console/#keys"));
        assert!(Entry::Routes.may_return_to("/app/report?week=48"));
        for bad in ["https://evil.example/", "//evil.example/console/", "/console//evil", "/admin/reload", "/console/\\evil", "/console/\n"]
        {
            assert!(!Entry::Console.may_return_to(bad), "{bad:?}");
        }
        for bad in ["https://evil.example/", "//evil.example/", "/\\evil.example", "/.modelgate/login", "relative"] {
            assert!(!Entry::Routes.may_return_to(bad), "{bad:?}");
        }
    }

    #[test]
    fn cross_site_requests_are_recognised() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut h = http::HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            h
        };
        assert!(!cross_site(&h(&[("host", "127.0.0.1:8081")])), "curl and SDKs send no Origin");
        assert!(!cross_site(&h(&[("host", "127.0.0.1:8081"), ("origin", "http://127.0.0.1:8081"), ("sec-fetch-site", "same-origin")])));
        assert!(cross_site(&h(&[("host", "127.0.0.1:8081"), ("origin", "http://evil.example")])));
        assert!(cross_site(&h(&[("host", "127.0.0.1:8081"), ("origin", "null")])));
        assert!(cross_site(&h(&[("host", "127.0.0.1:8081"), ("sec-fetch-site", "cross-site")])));
        assert!(cross_site(&h(&[("host", "127.0.0.1:8081"), ("sec-fetch-site", "same-site"), ("origin", "http://127.0.0.1:8081")])));
        assert!(!cross_site(&h(&[("host", "127.0.0.1:8081"), ("sec-fetch-site", "same-origin"), ("origin", "null")])));
    }

    #[test]
    fn a_session_ends_at_logout_and_cookies_are_found_among_others() {
        let s = Sessions::default();
        let (id, session) = s.start(Arc::new(Principal::anonymous()), Duration::from_secs(60));
        assert!(s.get(&id).is_some());
        assert_eq!(session.csrf.len(), 43);
        s.end(&id);
        assert!(s.get(&id).is_none());
        let mut h = http::HeaderMap::new();
        h.append(http::header::COOKIE, "a=1; mg_session=abc".parse().unwrap());
        h.append(http::header::COOKIE, "mg_login=def".parse().unwrap());
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, LOGIN_COOKIE), Some("def"));
        assert_eq!(cookie(&h, "mg"), None);
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }
}
