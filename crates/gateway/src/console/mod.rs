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

use std::sync::Arc;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue, LOCATION, SET_COOKIE};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use modelgate_auth::identity::sso::{self, Entry, LOGIN_COOKIE};
use modelgate_pipeline::Body;
use modelgate_pipeline::principal::Principal;
use modelgate_telemetry::audit::Event;

use crate::snapshot::Snapshot;

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/console.js");
const STYLE: &str = include_str!("assets/console.css");

/// Answers `/console` and everything under it (admin listener).
pub async fn handle(snap: &Arc<Snapshot>, req: Request<Incoming>, client: std::net::SocketAddr) -> Response<Body> {
    let path = req.uri().path().to_string();
    let get = req.method() == Method::GET || req.method() == Method::HEAD;
    match path.as_str() {
        "/console" => redirect("/console/", Vec::new()),
        "/console/assets/console.js" if get => asset(SCRIPT, "text/javascript; charset=utf-8"),
        "/console/assets/console.css" if get => asset(STYLE, "text/css; charset=utf-8"),
        "/console/login" if get => login(snap, Entry::Console, &req).await,
        "/console/callback" if get => callback(snap, Entry::Console, &req, client).await,
        "/console/logout" if req.method() == Method::POST => logout(snap, Entry::Console, req, client).await,
        "/console/signed-out" if get => page(StatusCode::OK, "Signed out", "Your session has ended.", Some("/console/login")),
        "/console/" if get => shell(snap, &req),
        _ if get => page(StatusCode::NOT_FOUND, "Not found", "The console lives at /console/.", None),
        _ => not_allowed(),
    }
}

/// Answers `/.modelgate/…` on the proxy listener, when single sign-on is configured: the login of routes with
/// `oidc_session` (`login?return_to=PATH`, `callback`, `logout`, `signed-out`). `Err`: the request back, when single
/// sign-on is not configured (the path is then routed like any other).
pub async fn routes_entry(
    snap: &Arc<Snapshot>,
    req: Request<Incoming>,
    client: std::net::SocketAddr,
) -> Result<Response<Body>, Request<Incoming>> {
    if snap.identity.sso.is_none() {
        return Err(req);
    }
    let get = req.method() == Method::GET || req.method() == Method::HEAD;
    Ok(match req.uri().path() {
        "/.modelgate/login" if get => login(snap, Entry::Routes, &req).await,
        "/.modelgate/callback" if get => callback(snap, Entry::Routes, &req, client).await,
        "/.modelgate/logout" if req.method() == Method::POST => logout(snap, Entry::Routes, req, client).await,
        "/.modelgate/logout" if get => sign_out_form(snap, &req),
        "/.modelgate/signed-out" if get => page(StatusCode::OK, "Signed out", "Your session has ended.", Some("/.modelgate/login")),
        "/.modelgate/assets/console.css" if get => asset(STYLE, "text/css; charset=utf-8"),
        _ if get => page(StatusCode::NOT_FOUND, "Not found", "Sign-in pages: /.modelgate/login, /.modelgate/logout.", None),
        _ => not_allowed(),
    })
}

/// The signed-in person of a request on the admin listener, if single sign-on is configured.
pub fn session_of(snap: &Snapshot, headers: &http::HeaderMap) -> Option<(String, Arc<sso::Session>)> {
    snap.identity.sso.as_ref()?.session_of(headers)
}

/// Whether `p` may use the admin API (and so the console) under the current config.
pub fn is_admin(config: &modelgate_config::Config, p: &Principal) -> bool {
    let (consumers, groups) = (&config.admin_consumers, &config.admin_groups);
    (consumers.is_empty() && groups.is_empty()) || consumers.contains(&p.consumer) || p.groups.iter().any(|g| groups.contains(g))
}

/// The console page, for a signed-in admin (or anyone, where the admin API asks no credential).
fn shell(snap: &Snapshot, req: &Request<Incoming>) -> Response<Body> {
    let open = snap.config.admin_consumers.is_empty() && snap.config.admin_groups.is_empty();
    let (who, csrf) = match session_of(snap, req.headers()) {
        Some((_, s)) if is_admin(&snap.config, &s.principal) => (s.principal.consumer.clone(), s.csrf.clone()),
        Some((_, s)) => {
            let text = format!("You are signed in as {}, who is not in admin.consumers or admin.groups.", s.principal.consumer);
            return page(StatusCode::FORBIDDEN, "Not an administrator", &text, None);
        }
        None if snap.identity.sso.is_some() => return redirect("/console/login", Vec::new()),
        None if open => (String::new(), String::new()),
        None => {
            return page(
                StatusCode::UNAUTHORIZED,
                "Sign-in is not set up",
                "The admin API asks for a credential and no single sign-on is configured: set admin.console (docs/console.md).",
                None,
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

/// `GET /.modelgate/logout`: a page with the sign-out button (the form carries the session's CSRF token, which the
/// applications behind the routes never see).
fn sign_out_form(snap: &Snapshot, req: &Request<Incoming>) -> Response<Body> {
    let Some((_, s)) = session_of(snap, req.headers()) else {
        return page(StatusCode::OK, "Not signed in", "There is no session to end.", Some("/.modelgate/login"));
    };
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Sign out · modelgate</title><link rel=\"stylesheet\" href=\"assets/console.css\"></head><body><main class=\"notice\"><h1>Sign out</h1><p>Signed in as <strong>{who}</strong>.</p><form method=\"post\" action=\"/.modelgate/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><button type=\"submit\">Sign out</button></form></main></body></html>",
        who = escape(&s.principal.consumer),
        csrf = escape(&s.csrf),
    );
    with_page_headers(Response::new(Body::full(Bytes::from(body))), "text/html; charset=utf-8")
}

fn not_configured() -> Response<Body> {
    page(StatusCode::NOT_FOUND, "Sign-in is not set up", "Set admin.console to sign in through your IdP.", None)
}

/// `GET …/login`: sends the browser to the IdP with a fresh state, nonce and PKCE challenge.
async fn login(snap: &Snapshot, entry: Entry, req: &Request<Incoming>) -> Response<Body> {
    let Some(access) = &snap.identity.sso else { return not_configured() };
    match access.begin(entry, sso::param(req.uri().query(), "return_to")).await {
        Ok((location, cookie)) => redirect(&location, vec![cookie]),
        Err(e) => page(e.status(), "Sign-in failed", &e.to_string(), None),
    }
}

/// `GET …/callback`: the person the IdP signed in; for the console, also the admin rules. Starts the session.
async fn callback(snap: &Snapshot, entry: Entry, req: &Request<Incoming>, client: std::net::SocketAddr) -> Response<Body> {
    let Some(access) = &snap.identity.sso else { return not_configured() };
    let clear_login = access.clear(LOGIN_COOKIE, entry.base());
    let retry = format!("{}login", entry.base());
    let (person, return_to) = match access.finish(entry, req.uri().query(), req.headers()).await {
        Ok(done) => done,
        Err(e) => {
            let mut r = page(e.status(), "Sign-in failed", &e.to_string(), Some(&retry));
            r.headers_mut().append(SET_COOKIE, clear_login);
            return r;
        }
    };
    // The groups `identity.consumers` declares for this person join the IdP's.
    let p = snap.identity.declared.apply(Arc::new(person));
    let allowed = entry == Entry::Routes || is_admin(&snap.config, &p);
    let reason = match (entry, allowed) {
        (Entry::Console, true) => "console_login",
        (Entry::Routes, _) => "sso_login",
        (Entry::Console, false) => "not_an_admin",
    };
    audit(snap, client, entry, &p, if allowed { "allow" } else { "deny" }, reason).await;
    if !allowed {
        let text = format!("You signed in as {}, who is not in admin.consumers or admin.groups. Ask an administrator.", p.consumer);
        let mut r = page(StatusCode::FORBIDDEN, "Not an administrator", &text, None);
        r.headers_mut().append(SET_COOKIE, clear_login);
        return r;
    }
    let mut r = redirect(&return_to, vec![access.start(p), clear_login]);
    *r.status_mut() = StatusCode::SEE_OTHER;
    r
}

/// `POST …/logout`: ends the session here (its cookie opens nothing afterwards) and clears the cookie.
async fn logout(snap: &Snapshot, entry: Entry, req: Request<Incoming>, client: std::net::SocketAddr) -> Response<Body> {
    let Some(access) = &snap.identity.sso else { return not_configured() };
    let signed_out = format!("{}signed-out", entry.base());
    let Some((id, s)) = access.session_of(req.headers()) else {
        return redirect(&signed_out, vec![access.clear(sso::SESSION_COOKIE, "/")]);
    };
    let header = req.headers().get("x-csrf-token").and_then(|v| v.to_str().ok()).map(str::to_string);
    let cross = sso::cross_site(req.headers());
    let body = http_body_util::BodyExt::collect(http_body_util::Limited::new(req.into_body(), 4096)).await.map(|b| b.to_bytes());
    let field = body.ok().and_then(|b| form_urlencoded::parse(&b).find_map(|(k, v)| (k == "csrf").then(|| v.into_owned())));
    let token = header.or(field).unwrap_or_default();
    if cross || !sso::same(&token, &s.csrf) {
        return page(StatusCode::FORBIDDEN, "Refused", "This sign-out did not come from a signed-in page (CSRF check).", None);
    }
    let cleared = access.end(&id);
    audit(snap, client, entry, &s.principal, "allow", if entry == Entry::Console { "console_logout" } else { "sso_logout" }).await;
    let mut r = redirect(&signed_out, vec![cleared]);
    *r.status_mut() = StatusCode::SEE_OTHER;
    r
}

async fn audit(
    snap: &Snapshot,
    client: std::net::SocketAddr,
    entry: Entry,
    p: &Arc<Principal>,
    decision: &'static str,
    reason: &'static str,
) {
    let Some(audit) = &snap.identity.audit else { return };
    let ev = Event {
        kind: if entry == Entry::Console { "admin" } else { "authn" },
        client: HeaderValue::from_str(&client.ip().to_string()).ok(),
        route: Some(format!("{}callback", entry.base()).into()),
        who: Some(p.clone() as Arc<dyn modelgate_telemetry::audit::Subject>),
        decision,
        reason: reason.into(),
        ..Default::default()
    };
    audit.record_now(ev).await;
}

fn not_allowed() -> Response<Body> {
    let mut r = page(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed", "Use GET.", None);
    r.headers_mut().insert(http::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    r
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
fn page(status: StatusCode, title: &str, text: &str, sign_in: Option<&str>) -> Response<Body> {
    let link = sign_in.map(|href| format!("<p><a href=\"{}\">Sign in</a></p>", escape(href))).unwrap_or_default();
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t} · modelgate</title><link rel=\"stylesheet\" href=\"assets/console.css\"></head><body><main class=\"notice\"><h1>{t}</h1><p>{x}</p>{link}</main></body></html>",
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
    fn text_in_pages_is_escaped() {
        assert_eq!(escape("<script>\"x\"&'y'"), "&lt;script&gt;&quot;x&quot;&amp;&#39;y&#39;");
    }
}
