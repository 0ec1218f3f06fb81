//! The web console at `/console/` on the admin listener: a page and a little JS over the admin API, and single
//! sign-on for people (OIDC authorization code flow with PKCE against `admin.console.issuer`).
//!
//! The console adds no privilege: its script calls the same `/admin/*` endpoints a token would, with the session
//! cookie standing for the person; every call passes `admin.consumers`/`admin.groups` and is audited as theirs.
//! State-changing calls carry the session's CSRF token (`x-csrf-token`), and any admin call a browser marks
//! cross-site is refused whatever it carries.
//!
//! Nothing an unauthenticated caller sends is kept here: a login in progress lives in a sealed, short-lived cookie;
//! a session exists only after the IdP signed the person in and the admin rules allowed them.

#![allow(clippy::disallowed_methods, reason = "the IdP discovery cache's age (a reported time, never a timer)")]

pub mod session;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue, LOCATION, SET_COOKIE};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;

use modelgate_auth::identity::jwt::{self, Check};
use modelgate_config::model::ConsoleConfig;
use modelgate_pipeline::Body;
use modelgate_pipeline::principal::{self, Principal};
use modelgate_telemetry::audit::Event;

use crate::snapshot::Snapshot;
use session::{LOGIN_COOKIE, SESSION_COOKIE, Session, Sessions};

/// How long a login may take at the IdP.
const LOGIN_TTL: u64 = 600;
/// How long the IdP's discovery document is used before it is read again.
const DISCOVERY_TTL: Duration = Duration::from_secs(300);

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/console.js");
const STYLE: &str = include_str!("assets/console.css");

/// The console's state beside the snapshots: sessions, the IdP's endpoints, the ID token checker.
#[derive(Default)]
pub struct State {
    pub sessions: Sessions,
    endpoints: tokio::sync::Mutex<Option<(Instant, String, Arc<Endpoints>)>>,
    checker: std::sync::Mutex<Option<Arc<jwt::Issuer>>>,
    /// The address the admin listener was bound to: the default redirect URI's (port 0 picks one at start).
    pub admin_addr: std::sync::OnceLock<std::net::SocketAddr>,
}

/// What the console works with for one request: its state, the running snapshot, the audit writer.
pub struct Env<'a> {
    pub state: &'a State,
    pub snap: Arc<Snapshot>,
    pub audit: Option<Arc<modelgate_telemetry::audit::Audit>>,
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
enum LoginError {
    #[error("the identity provider cannot be reached: {0}")]
    Idp(String),
    #[error("the identity provider did not sign you in: {0}")]
    Refused(String),
    #[error("this sign-in is stale or was started in another browser; start again")]
    Stale,
    #[error("the identity provider's ID token was not accepted ({0})")]
    BadToken(&'static str),
}

/// Answers `/console` and everything under it.
pub async fn handle(env: &Env<'_>, req: Request<Incoming>, client: std::net::SocketAddr) -> Response<Body> {
    let path = req.uri().path().to_string();
    let get = req.method() == Method::GET || req.method() == Method::HEAD;
    match path.as_str() {
        "/console" => redirect("/console/", Vec::new()),
        "/console/assets/console.js" if get => asset(SCRIPT, "text/javascript; charset=utf-8"),
        "/console/assets/console.css" if get => asset(STYLE, "text/css; charset=utf-8"),
        "/console/login" if get => match login(env, &req).await {
            Ok(r) => r,
            Err(e) => page(StatusCode::BAD_GATEWAY, "Sign-in failed", &e.to_string(), true),
        },
        "/console/callback" if get => callback(env, &req, client).await,
        "/console/logout" if req.method() == Method::POST => logout(env, req, client).await,
        "/console/signed-out" if get => page(StatusCode::OK, "Signed out", "Your console session has ended.", true),
        "/console/" if get => shell(env, &req),
        _ if get => page(StatusCode::NOT_FOUND, "Not found", "The console lives at /console/.", false),
        _ => {
            let mut r = page(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed", "Use GET.", false);
            r.headers_mut().insert(http::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            r
        }
    }
}

/// The signed-in person of a request: an intact session cookie naming a live session, while the console is
/// configured. `(session id, session)`.
pub fn session_of(env: &Env<'_>, headers: &http::HeaderMap) -> Option<(String, Arc<Session>)> {
    let snap = env.snap.clone();
    let console = snap.config.console.as_ref()?;
    let sealed = session::cookie(headers, SESSION_COOKIE)?;
    let id = String::from_utf8(env.state.sessions.open(console.cookie_secret.as_deref(), SESSION_COOKIE, sealed)?).ok()?;
    let s = env.state.sessions.get(&id)?;
    Some((id, s))
}

/// A browser says this request comes from another site (`Sec-Fetch-Site`), or its `Origin` is not this
/// listener's: no state-changing admin call is taken from it, whatever credential it carries.
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

/// Whether `p` may use the admin API (and so the console) under the current config.
pub fn is_admin(config: &modelgate_config::Config, p: &Principal) -> bool {
    let (consumers, groups) = (&config.admin_consumers, &config.admin_groups);
    (consumers.is_empty() && groups.is_empty()) || consumers.contains(&p.consumer) || p.groups.iter().any(|g| groups.contains(g))
}

/// The console page, for a signed-in admin (or anyone, where the admin API asks no credential).
fn shell(env: &Env<'_>, req: &Request<Incoming>) -> Response<Body> {
    let snap = env.snap.clone();
    let open = snap.config.admin_consumers.is_empty() && snap.config.admin_groups.is_empty();
    let (who, csrf) = match session_of(env, req.headers()) {
        Some((_, s)) if is_admin(&snap.config, &s.principal) => (s.principal.consumer.clone(), s.csrf.clone()),
        Some(_) => {
            return page(
                StatusCode::FORBIDDEN,
                "Not an administrator",
                "You are signed in, but not in admin.consumers or admin.groups.",
                false,
            );
        }
        None if snap.config.console.is_some() => return redirect("/console/login", Vec::new()),
        None if open => (String::new(), String::new()),
        None => {
            return page(
                StatusCode::UNAUTHORIZED,
                "Sign-in is not set up",
                "The admin API asks for a credential and no single sign-on is configured: set admin.console (docs/console.md).",
                false,
            );
        }
    };
    let signed_in = if who.is_empty() {
        "<span>local, no sign-in (the admin API asks no credential here)</span>".to_string()
    } else {
        format!(
            "<span>Signed in as <strong>{}</strong></span> <form method=\"post\" action=\"/console/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\">Sign out</button></form>",
            escape(&who),
            escape(&csrf)
        )
    };
    let body = INDEX.replace("{{csrf}}", &escape(&csrf)).replace("{{signed_in}}", &signed_in);
    with_page_headers(Response::new(Body::full(Bytes::from(body))), "text/html; charset=utf-8")
}

/// `GET /console/login`: sends the browser to the IdP with a fresh state, nonce and PKCE challenge.
async fn login(env: &Env<'_>, req: &Request<Incoming>) -> Result<Response<Body>, LoginError> {
    let snap = env.snap.clone();
    let Some(c) = &snap.config.console else {
        return Ok(page(StatusCode::NOT_FOUND, "Sign-in is not set up", "Set admin.console to sign in through your IdP.", false));
    };
    let endpoints = endpoints(env, c).await?;
    let sessions = &env.state.sessions;
    let return_to = query(req.uri().query(), "return_to").filter(|r| safe_return(r)).unwrap_or_else(|| "/console/".into());
    let login = Login {
        state: sessions.random(16),
        nonce: sessions.random(16),
        verifier: sessions.random(32),
        return_to,
        expires: session::now() + LOGIN_TTL,
    };
    let challenge = URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, login.verifier.as_bytes()));
    let scope = c.scopes.join(" ");
    let params = form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", &c.client_id)
        .append_pair("redirect_uri", &redirect_uri(env, c))
        .append_pair("scope", &scope)
        .append_pair("state", &login.state)
        .append_pair("nonce", &login.nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .finish();
    let sep = if endpoints.authorization_endpoint.contains('?') { '&' } else { '?' };
    let sealed = sessions.seal(c.cookie_secret.as_deref(), LOGIN_COOKIE, &serde_json::to_vec(&login).unwrap_or_default());
    let cookie = set_cookie(LOGIN_COOKIE, &sealed, "/console/", Some(LOGIN_TTL), c.secure_cookies);
    Ok(redirect(&format!("{}{sep}{params}", endpoints.authorization_endpoint), vec![cookie]))
}

/// `GET /console/callback`: checks the state, redeems the code with the PKCE verifier, checks the ID token and
/// its nonce, applies the admin rules and starts a session.
async fn callback(env: &Env<'_>, req: &Request<Incoming>, client: std::net::SocketAddr) -> Response<Body> {
    let snap = env.snap.clone();
    let Some(c) = &snap.config.console else {
        return page(StatusCode::NOT_FOUND, "Sign-in is not set up", "Set admin.console to sign in through your IdP.", false);
    };
    let clear_login = set_cookie(LOGIN_COOKIE, "", "/console/", Some(0), c.secure_cookies);
    let principal = match signed_in(env, c, req).await {
        Ok(p) => snap.identity.declared.apply(p),
        Err(e) => {
            let status = match e {
                LoginError::Idp(_) => StatusCode::BAD_GATEWAY,
                LoginError::Stale => StatusCode::BAD_REQUEST,
                LoginError::Refused(_) | LoginError::BadToken(_) => StatusCode::UNAUTHORIZED,
            };
            let mut r = page(status, "Sign-in failed", &e.to_string(), true);
            r.headers_mut().append(SET_COOKIE, clear_login);
            return r;
        }
    };
    // The person as the console's sessions name them: their claims, groups and consumer, the method `oidc_session`.
    let mut p = Principal::new(
        principal::Method::Session,
        c.id_token.name.clone(),
        principal.subject.clone(),
        principal.consumer.clone(),
        principal.scopes.clone(),
        principal.groups.clone(),
    );
    p.claims = principal.claims.clone();
    let p = Arc::new(p);
    let admin = is_admin(&snap.config, &p);
    if let Some(audit) = env.audit.clone() {
        let ev = Event {
            kind: "admin",
            client: HeaderValue::from_str(&client.ip().to_string()).ok(),
            route: Some("/console/callback".into()),
            who: Some(p.clone() as Arc<dyn modelgate_telemetry::audit::Subject>),
            decision: if admin { "allow" } else { "deny" },
            reason: if admin { "console_login" } else { "not_an_admin" }.into(),
            ..Default::default()
        };
        audit.record_now(ev).await;
    }
    if !admin {
        let mut r = page(
            StatusCode::FORBIDDEN,
            "Not an administrator",
            &format!("You signed in as {}, who is not in admin.consumers or admin.groups. Ask an administrator.", p.consumer),
            false,
        );
        r.headers_mut().append(SET_COOKIE, clear_login);
        return r;
    }
    let return_to = login_cookie(env, c, req.headers()).map_or_else(|| "/console/".to_string(), |l| l.return_to);
    let (id, _) = env.state.sessions.start(p, c.session_lifetime);
    let sealed = env.state.sessions.seal(c.cookie_secret.as_deref(), SESSION_COOKIE, id.as_bytes());
    let session = set_cookie(SESSION_COOKIE, &sealed, "/", Some(c.session_lifetime.as_secs()), c.secure_cookies);
    let mut r = redirect(&return_to, vec![session, clear_login]);
    *r.status_mut() = StatusCode::SEE_OTHER;
    r
}

/// The person the IdP signed in, from the callback's code.
async fn signed_in(env: &Env<'_>, c: &ConsoleConfig, req: &Request<Incoming>) -> Result<Arc<Principal>, LoginError> {
    let q = req.uri().query();
    if let Some(error) = query(q, "error") {
        let detail = query(q, "error_description").map(|d| format!(": {d}")).unwrap_or_default();
        return Err(LoginError::Refused(format!("{error}{detail}")));
    }
    let login = login_cookie(env, c, req.headers()).ok_or(LoginError::Stale)?;
    let (code, state) = (query(q, "code").ok_or(LoginError::Stale)?, query(q, "state").ok_or(LoginError::Stale)?);
    if !session::same(&state, &login.state) {
        return Err(LoginError::Stale);
    }
    let endpoints = endpoints(env, c).await?;
    let redirect = redirect_uri(env, c);
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
    let checker = checker(env, c).map_err(|_| LoginError::BadToken("issuer_config"))?;
    let p = match checker.check(&id_token, std::time::SystemTime::now()) {
        Check::Ok(p) => p,
        Check::Fail(f) => return Err(LoginError::BadToken(f.code())),
        Check::NeedKeys => checker.check_fetching(&id_token).await.map_err(|f| LoginError::BadToken(f.code()))?,
    };
    if !p.claims.get("nonce").and_then(|n| n.as_str()).is_some_and(|n| session::same(n, &login.nonce)) {
        return Err(LoginError::BadToken("nonce_mismatch"));
    }
    Ok(p)
}

/// `POST /console/logout`: ends the session here (its cookie opens nothing afterwards) and clears the cookie.
async fn logout(env: &Env<'_>, req: Request<Incoming>, client: std::net::SocketAddr) -> Response<Body> {
    let secure = env.snap.clone().config.console.as_ref().is_some_and(|c| c.secure_cookies);
    let Some((id, s)) = session_of(env, req.headers()) else {
        return redirect("/console/signed-out", vec![set_cookie(SESSION_COOKIE, "", "/", Some(0), secure)]);
    };
    let header = req.headers().get("x-csrf-token").and_then(|v| v.to_str().ok()).map(str::to_string);
    let cross = cross_site(req.headers());
    let body = http_body_util::BodyExt::collect(http_body_util::Limited::new(req.into_body(), 4096)).await.map(|b| b.to_bytes());
    let field = body.ok().and_then(|b| form_urlencoded::parse(&b).find_map(|(k, v)| (k == "csrf").then(|| v.into_owned())));
    let token = header.or(field).unwrap_or_default();
    if cross || !session::same(&token, &s.csrf) {
        return page(StatusCode::FORBIDDEN, "Refused", "This sign-out did not come from the console page (CSRF check).", false);
    }
    env.state.sessions.end(&id);
    if let Some(audit) = env.audit.clone() {
        let ev = Event {
            kind: "admin",
            client: HeaderValue::from_str(&client.ip().to_string()).ok(),
            route: Some("/console/logout".into()),
            who: Some(s.principal.clone() as Arc<dyn modelgate_telemetry::audit::Subject>),
            decision: "allow",
            reason: "console_logout".into(),
            ..Default::default()
        };
        audit.record_now(ev).await;
    }
    let mut r = redirect("/console/signed-out", vec![set_cookie(SESSION_COOKIE, "", "/", Some(0), secure)]);
    *r.status_mut() = StatusCode::SEE_OTHER;
    r
}

fn login_cookie(env: &Env<'_>, c: &ConsoleConfig, headers: &http::HeaderMap) -> Option<Login> {
    let sealed = session::cookie(headers, LOGIN_COOKIE)?;
    let login: Login = serde_json::from_slice(&env.state.sessions.open(c.cookie_secret.as_deref(), LOGIN_COOKIE, sealed)?).ok()?;
    (login.expires > session::now()).then_some(login)
}

/// The IdP's endpoints, from its discovery document (read again after [`DISCOVERY_TTL`]).
async fn endpoints(env: &Env<'_>, c: &ConsoleConfig) -> Result<Arc<Endpoints>, LoginError> {
    let mut held = env.state.endpoints.lock().await;
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

/// The ID token checker for the console's config (made again when the config changes; keeps its keys otherwise).
fn checker(env: &Env<'_>, c: &ConsoleConfig) -> Result<Arc<jwt::Issuer>, modelgate_config::ConfigError> {
    let mut held = env.state.checker.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(i) = held.as_ref()
        && i.config == c.id_token
    {
        return Ok(i.clone());
    }
    let i = Arc::new(jwt::Issuer::new(c.id_token.clone())?);
    *held = Some(i.clone());
    Ok(i)
}

/// `admin.console.redirect_uri`, or this listener's `/console/callback` on the address it was bound to.
fn redirect_uri(env: &Env<'_>, c: &ConsoleConfig) -> String {
    match (&c.redirect_uri, env.state.admin_addr.get()) {
        (Some(u), _) => u.clone(),
        (None, Some(addr)) => format!("http://{addr}/console/callback"),
        (None, None) => "http://127.0.0.1:8081/console/callback".into(),
    }
}

/// A relative console path to return to after login (never another site).
fn safe_return(r: &str) -> bool {
    r.starts_with("/console/") && !r.contains("//") && !r.contains('\\') && r.len() <= 512 && !r.bytes().any(|b| b.is_ascii_control())
}

fn query(q: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(q?.as_bytes()).find_map(|(k, v)| (k == name).then(|| v.into_owned()))
}

fn set_cookie(name: &str, value: &str, path: &str, max_age: Option<u64>, secure: bool) -> HeaderValue {
    let mut c = format!("{name}={value}; Path={path}; HttpOnly; SameSite=Lax");
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        c.push_str("; Secure");
    }
    HeaderValue::from_str(&c).expect("cookie values are base64url")
}

fn redirect(location: &str, cookies: Vec<HeaderValue>) -> Response<Body> {
    let mut r = with_page_headers(Response::new(Body::empty()), "text/plain; charset=utf-8");
    *r.status_mut() = StatusCode::FOUND;
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(LOCATION, v);
    }
    for c in cookies {
        r.headers_mut().append(SET_COOKIE, c);
    }
    r
}

fn asset(text: &'static str, kind: &'static str) -> Response<Body> {
    with_page_headers(Response::new(Body::full(Bytes::from_static(text.as_bytes()))), kind)
}

/// A small page with a title and a sentence (errors and notices), optionally with a sign-in link.
fn page(status: StatusCode, title: &str, text: &str, sign_in: bool) -> Response<Body> {
    let link = if sign_in { "<p><a href=\"/console/login\">Sign in</a></p>" } else { "" };
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t} · modelgate</title><link rel=\"stylesheet\" href=\"/console/assets/console.css\"></head><body><main class=\"notice\"><h1>{t}</h1><p>{x}</p>{link}</main></body></html>",
        t = escape(title),
        x = escape(text),
    );
    let mut r = with_page_headers(Response::new(Body::full(Bytes::from(body))), "text/html; charset=utf-8");
    *r.status_mut() = status;
    r
}

/// No caching, no framing, no referrer beyond this origin (the callback's URL holds a code), scripts and styles from
/// here only.
fn with_page_headers(mut r: Response<Body>, kind: &'static str) -> Response<Body> {
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    r
}

/// HTML-escapes text put into a page.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_console_paths_are_returned_to() {
        assert!(safe_return("/console/"));
        assert!(safe_return("/console/#keys"));
        for bad in ["https://evil.example/", "//evil.example/console/", "/console//evil", "/admin/reload", "/console/\\evil", "/console/\n"]
        {
            assert!(!safe_return(bad), "{bad:?}");
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
    fn text_in_pages_is_escaped() {
        assert_eq!(escape("<script>\"x\"&'y'"), "&lt;script&gt;&quot;x&quot;&amp;&#39;y&#39;");
    }
}
