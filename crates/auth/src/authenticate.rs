//! `auth`: establishes who is calling (authenticate phase) and tells the upstream (proxy phase).
//!
//! Methods are tried in the configured order; a method whose credential is absent is skipped, one whose
//! credential is refused makes the next present one be tried, and if none succeeds the first refusal answers
//! (401 with `WWW-Authenticate`). A request with no credential at all is let through as `anonymous` only where
//! `anonymous: true`. Upstreams receive `x-modelgate-consumer`, `-subject`, `-scopes`, `-auth-method`; any such
//! header sent by the client was removed before (by the gateway's proxy step), so an upstream can trust them.
//!
//! Credentials stop here: before the request goes upstream the credentials this plugin reads are removed — the
//! API-key header, a `Bearer` `Authorization`, the AWS IAM token header, the configured cookie (other cookies stay)
//! — so an upstream, or whoever reads its logs, cannot replay a caller's secret against other models
//! (`forward_credentials: true` keeps them for upstreams that need them; Kong's `hide_credentials`, inverted and on
//! by default).
//!
//! Without a `policy` plugin on the route every authenticated caller is allowed, and that decision is audited
//! here; with one, the policy audits its decision.

use std::sync::Arc;
use std::time::SystemTime;

use http::header::{self, HeaderName, HeaderValue};
use http::request;
use serde::Deserialize;

use modelgate_config::ConfigError;
use modelgate_config::model::PluginSpec;

use modelgate_config::model::RouteConfig;
use modelgate_pipeline::error::{AuthProblem, GatewayError};
use modelgate_pipeline::plugin::{Flow, Plugin, audit_event, audited, settings};
use modelgate_pipeline::principal::Principal;
use modelgate_pipeline::{Ctx, HeaderEdits};
use modelgate_telemetry::audit::Audit;
use modelgate_telemetry::metrics::Metrics;

use crate::identity::Services;
use crate::identity::apikey::{self, KeyFailure, KeyStore};
use crate::identity::assertion::{self, Signer};
use crate::identity::aws::{self, AwsFailure, AwsIam};
use crate::identity::jwt::{self, Check, Issuer, JwtFailure};
use crate::identity::revocations::Revocations;
use crate::identity::sso::cookies;

pub const NAME: &str = "auth";

/// Settings of `auth`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Methods tried in order: `api_key` (the `identity.api_keys` store), `jwt` (every issuer in
    /// `identity.issuers`), `jwt:NAME` (one issuer), `aws_iam` (`identity.aws_iam`), `mtls` (the TLS client
    /// certificate, `tls.client_auth`) or `oidc_session` (people signed in through `admin.console`'s single sign-on;
    /// a browser without a session is sent to sign in).
    pub methods: Vec<String>,
    /// Let requests that carry no credential through as the principal `anonymous` (a policy may still refuse
    /// them). A refused credential is never downgraded to anonymous. Default `false`.
    #[serde(default)]
    pub anonymous: bool,
    /// Also read a bearer token from this cookie (browser callers), e.g. `access_token`.
    #[serde(default)]
    pub cookie: Option<String>,
    /// Also send upstreams `x-modelgate-assertion`: a short-lived ES256 JWT about the caller, signed with
    /// `identity.assertion.signing_key`, with the route's upstream name as `aud`. Default `false`.
    #[serde(default)]
    pub assertion: bool,
    /// Forward the caller's credentials (API-key header, bearer token, AWS IAM token, the `cookie`) to the
    /// upstream. Default `false`: they are removed once checked, and the upstream learns the caller from the
    /// `x-modelgate-*` headers (or the signed assertion).
    #[serde(default)]
    pub forward_credentials: bool,
}

pub struct Auth {
    route: Arc<str>,
    /// Where refusals are counted (`modelgate_auth_denied_total`).
    metrics: Arc<Metrics>,
    methods: Vec<AuthMethod>,
    anonymous: bool,
    cookie: Option<String>,
    key_headers: Vec<HeaderName>,
    /// Query parameters that may carry an API key (`identity.api_keys.query`); empty unless `api_key` is a method.
    key_query: Vec<String>,
    /// Groups of consumers declared in config, added to non-key principals.
    declared: Arc<crate::identity::DeclaredGroups>,
    audit: Option<Arc<Audit>>,
    /// No policy plugin follows: this plugin records the allow decision.
    audit_allow: bool,
    challenge: HeaderValue,
    anon: Arc<Principal>,
    /// With `assertion: true`: the signer and the audience (the route's upstream).
    assertion: Option<(Arc<Signer>, String)>,
    /// Headers holding credentials this route's methods read, removed before the upstream (unless
    /// `forward_credentials`); `Authorization` is removed only with the `Bearer` scheme, and the cookie is cut out of
    /// `Cookie` by name.
    strip: Vec<HeaderName>,
    /// Cookies (`name=` prefixes) holding credentials: the bearer `cookie` and the session cookie.
    strip_cookies: Vec<String>,
    /// Browsers without a credential are sent to sign in (`oidc_session` without `anonymous`).
    sign_in: bool,
    strip_bearer: bool,
    /// Remove `key_query` parameters from the forwarded target.
    strip_query: bool,
}

enum AuthMethod {
    /// The key store, and the revocations received through Redis if enabled.
    ApiKey(Arc<KeyStore>, Option<Arc<Revocations>>),
    /// Issuers of this method, chosen by the token's `iss`.
    Jwt(Vec<Arc<Issuer>>),
    AwsIam(Arc<AwsIam>),
    /// The connection's verified TLS client certificate (`tls.client_auth`).
    Mtls,
    /// A person's single sign-on session (`admin.console`), from the session cookie.
    Session(crate::identity::sso::SsoAccess),
}

/// A refusal: the client-facing problem and the audit reason.
struct Refusal {
    problem: AuthProblem,
    reason: &'static str,
    credential: Option<String>,
}

/// Builds `auth` for `route` from the snapshot's identity `services`, counting refusals in `metrics`; `has_policy`:
/// a `policy` plugin follows on the route (it audits the allow decisions then).
pub fn build(
    spec: &PluginSpec,
    services: &Services,
    route: &RouteConfig,
    has_policy: bool,
    metrics: &Arc<Metrics>,
) -> Result<Box<dyn Plugin>, ConfigError> {
    let c: AuthConfig = settings(spec)?;
    let err = |path: String, msg: String| ConfigError::new(&spec.origin.file, format!("{}.{path}", spec.origin.path), msg);
    if c.methods.is_empty() {
        return Err(err("methods".into(), "no method".into()).hint("e.g. methods: [api_key, jwt]"));
    }
    let mut methods = Vec::new();
    for (i, m) in c.methods.iter().enumerate() {
        let at = format!("methods[{i}]");
        match m.split_once(':') {
            None if m == "api_key" => match &services.keys {
                Some(k) => methods.push(AuthMethod::ApiKey(k.clone(), services.revocations.clone())),
                None => {
                    return Err(
                        err(at, "api_key needs a key store".into()).hint("add identity.api_keys: {file: keys.yaml} to the main config")
                    );
                }
            },
            None if m == "jwt" => {
                if services.issuers.is_empty() {
                    return Err(err(at, "jwt needs an issuer".into()).hint("add one under identity.issuers"));
                }
                let mut all: Vec<_> = services.issuers.iter().collect();
                all.sort_by(|a, b| a.0.cmp(b.0));
                methods.push(AuthMethod::Jwt(all.into_iter().map(|(_, i)| i.clone()).collect()));
            }
            Some(("jwt", name)) => match services.issuers.get(name) {
                Some(i) => methods.push(AuthMethod::Jwt(vec![i.clone()])),
                None => {
                    let mut known: Vec<_> = services.issuers.keys().map(String::as_str).collect();
                    known.sort();
                    return Err(err(at, format!("no issuer named {name:?}")).hint(format!(
                        "issuers defined in identity.issuers: {}",
                        if known.is_empty() { "none".into() } else { known.join(", ") }
                    )));
                }
            },
            None if m == "aws_iam" => match &services.aws {
                Some(a) => methods.push(AuthMethod::AwsIam(a.clone())),
                None => {
                    return Err(err(at, "aws_iam needs identity.aws_iam".into())
                        .hint("add identity.aws_iam: {principals: [{arn: ..., consumer: ...}]} to the main config"));
                }
            },
            None if m == "mtls" => methods.push(AuthMethod::Mtls),
            None if m == "oidc_session" => match &services.sso {
                Some(sso) => methods.push(AuthMethod::Session(sso.clone())),
                None => {
                    return Err(err(at, "oidc_session needs single sign-on settings".into())
                        .hint("add admin.console: {issuer: NAME, client_id: ..., client_secret: ${...}} (docs/console.md)"));
                }
            },
            _ => {
                return Err(err(at, format!("unknown method {m:?}")).hint("one of api_key, jwt, jwt:NAME, aws_iam, mtls, oidc_session"));
            }
        }
    }
    let assertion = match (c.assertion, &services.assertion) {
        (false, _) => None,
        // The assertion's audience: the upstream it is for (the route, for one `modelgate authz` checks only).
        (true, Some(s)) => Some((s.clone(), route.upstream.clone().unwrap_or_else(|| route.name.clone()))),
        (true, None) => {
            return Err(err("assertion".into(), "assertions need the gateway's signing key".into())
                .hint("add identity.assertion: {signing_key: assertion.pem}; create the key with `modelgate keys signing-key --out assertion.pem`"));
        }
    };
    let mut strip = Vec::new();
    if !c.forward_credentials {
        for m in &methods {
            match m {
                AuthMethod::ApiKey(..) => strip.extend(services.key_headers.iter().cloned()),
                AuthMethod::AwsIam(iam) => strip.push(iam.config.header.clone()),
                AuthMethod::Jwt(_) | AuthMethod::Mtls | AuthMethod::Session(_) => {}
            }
        }
        strip.dedup();
    }
    let has_session = methods.iter().any(|m| matches!(m, AuthMethod::Session(_)));
    let mut strip_cookies: Vec<String> = c.cookie.iter().map(|n| format!("{n}=")).collect();
    if has_session {
        strip_cookies.push(format!("{}=", crate::identity::sso::SESSION_COOKIE));
    }
    if c.forward_credentials {
        strip_cookies.clear();
    }
    let sign_in = has_session && !c.anonymous;
    let key_query = if methods.iter().any(|m| matches!(m, AuthMethod::ApiKey(..))) { services.key_query.clone() } else { Vec::new() };
    Ok(Box::new(Auth {
        route: route.name.as_str().into(),
        metrics: metrics.clone(),
        methods,
        anonymous: c.anonymous,
        cookie: c.cookie.map(|n| format!("{n}=")),
        key_headers: services.key_headers.clone(),
        key_query,
        declared: services.declared.clone(),
        audit: services.audit.clone(),
        audit_allow: !has_policy,
        challenge: HeaderValue::from_static("Bearer realm=\"modelgate\""),
        anon: Arc::new(Principal::anonymous()),
        assertion,
        strip,
        strip_cookies,
        sign_in,
        strip_bearer: !c.forward_credentials,
        strip_query: !c.forward_credentials,
    }))
}

// === impl Auth ===

impl Auth {
    fn bearer<'r>(&self, req: &'r request::Parts) -> Option<&'r str> {
        if let Some(v) = req.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
            let (scheme, rest) = v.split_once(' ')?;
            return scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim());
        }
        let prefix = self.cookie.as_deref()?;
        cookies(&req.headers).find_map(|c| c.strip_prefix(prefix))
    }

    /// Removes the credentials this plugin reads (see the module notes).
    fn strip_credentials(&self, headers: &http::HeaderMap, edits: &mut HeaderEdits) {
        for h in &self.strip {
            edits.remove(h);
        }
        if !self.strip_bearer {
            return;
        }
        let bearer = |v: &HeaderValue| v.as_bytes().get(..7).is_some_and(|s| s.eq_ignore_ascii_case(b"bearer "));
        if headers.get(header::AUTHORIZATION).is_some_and(bearer) {
            edits.remove(&header::AUTHORIZATION);
        }
        let credential = |c: &str| self.strip_cookies.iter().any(|p| c.starts_with(p.as_str()));
        if self.strip_cookies.is_empty() || !cookies(headers).any(credential) {
            return;
        }
        // Rebuild `Cookie` without the credential cookies; the others go on.
        let kept: Vec<String> = cookies(headers).filter(|c| !c.is_empty() && !credential(c)).map(String::from).collect();
        match HeaderValue::from_str(&kept.join("; ")) {
            Ok(v) if !kept.is_empty() => edits.set(header::COOKIE, v),
            _ => edits.remove(&header::COOKIE),
        }
    }

    fn refuse<'a>(&'a self, ctx: &'a mut Ctx, r: Refusal) -> Flow<'a> {
        let err = GatewayError::Unauthenticated { why: r.problem, challenge: self.challenge_for(r.problem) };
        self.metrics.count_denied(&self.route, "authn", r.reason);
        let mut ev = audit_event(ctx, &self.route, "authn", "deny", r.reason);
        ev.credential = r.credential;
        audited(self.audit.as_deref(), ev, Err(err))
    }

    /// A browser without a session on an `oidc_session` route: 302 to the sign-in, which returns here; audited.
    fn send_to_sign_in<'a>(&'a self, ctx: &'a mut Ctx, req: &request::Parts) -> Flow<'a> {
        let here = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let back: String = form_urlencoded::byte_serialize(here.as_bytes()).collect();
        let location = HeaderValue::from_str(&format!("/.modelgate/login?return_to={back}"))
            .unwrap_or_else(|_| HeaderValue::from_static("/.modelgate/login"));
        self.metrics.count_denied(&self.route, "authn", "sign_in_required");
        let ev = audit_event(ctx, &self.route, "authn", "deny", "sign_in_required");
        audited(self.audit.as_deref(), ev, Err(GatewayError::SignInRequired { location }))
    }

    /// The identity provider (keys, STS) could not answer: 503, audited.
    fn unavailable<'a>(&'a self, ctx: &'a mut Ctx, reason: &'static str) -> Flow<'a> {
        self.metrics.count_denied(&self.route, "authn", reason);
        let ev = audit_event(ctx, &self.route, "authn", "deny", reason);
        audited(self.audit.as_deref(), ev, Err(GatewayError::IdentityUnavailable))
    }

    fn challenge_for(&self, p: AuthProblem) -> HeaderValue {
        match p {
            AuthProblem::Missing => self.challenge.clone(),
            AuthProblem::Invalid => HeaderValue::from_static("Bearer realm=\"modelgate\", error=\"invalid_token\""),
            AuthProblem::Expired => {
                HeaderValue::from_static("Bearer realm=\"modelgate\", error=\"invalid_token\", error_description=\"expired\"")
            }
        }
    }

    fn accept<'a>(&'a self, ctx: &'a mut Ctx, p: Arc<Principal>) -> Flow<'a> {
        ctx.set_principal(self.declared.apply(p));
        if self.audit_allow && self.audit.is_some() {
            let ev = audit_event(ctx, &self.route, "authz", "allow", "authenticated");
            return audited(self.audit.as_deref(), ev, Ok(()));
        }
        Flow::Continue
    }
}

/// The percent-decoded value of the first parameter of `query` named in `names` (an API key sent in the URL).
fn query_value<'q>(query: &'q str, names: &[String]) -> Option<std::borrow::Cow<'q, str>> {
    query.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        names.iter().any(|n| n == name).then(|| percent_encoding::percent_decode_str(value).decode_utf8().ok()).flatten()
    })
}

/// A browser loading a page (not a script's or SDK's call): GET or HEAD asking for HTML.
fn browser_navigation(req: &request::Parts) -> bool {
    (req.method == http::Method::GET || req.method == http::Method::HEAD)
        && req.headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/html"))
}

fn key_refusal(f: KeyFailure, id: Option<&str>) -> Refusal {
    let problem = if f == KeyFailure::Expired { AuthProblem::Expired } else { AuthProblem::Invalid };
    Refusal { problem, reason: f.code(), credential: id.map(String::from) }
}

fn aws_refusal(f: AwsFailure) -> Refusal {
    let problem = if f == AwsFailure::Expired { AuthProblem::Expired } else { AuthProblem::Invalid };
    Refusal { problem, reason: f.code(), credential: None }
}

fn jwt_refusal(f: JwtFailure, issuer: Option<&str>) -> Refusal {
    let problem = if f == JwtFailure::Expired { AuthProblem::Expired } else { AuthProblem::Invalid };
    Refusal { problem, reason: f.code(), credential: issuer.map(String::from) }
}

/// The issuer among `issuers` that a token claims to come from.
pub fn pick<'i>(issuers: &'i [Arc<Issuer>], token: &str) -> Option<&'i Arc<Issuer>> {
    if let [only] = issuers {
        return Some(only);
    }
    let iss = jwt::claimed_issuer(token)?;
    issuers.iter().find(|i| i.config.issuer == iss)
}

impl Plugin for Auth {
    fn name(&self) -> &'static str {
        NAME
    }

    fn authenticate<'a>(&'a self, ctx: &'a mut Ctx, req: &'a mut request::Parts) -> Flow<'a> {
        let now = SystemTime::now();
        let header_key = self.key_headers.iter().find_map(|h| req.headers.get(h)).and_then(|v| v.to_str().ok());
        let query_key = match (header_key, req.uri.query()) {
            (None, Some(q)) if !self.key_query.is_empty() => query_value(q, &self.key_query),
            _ => None,
        };
        if query_key.is_some() && self.strip_query {
            ctx.remove_query_params(&self.key_query);
        }
        let header_key = header_key.or(query_key.as_deref());
        let bearer = self.bearer(req);
        let mut first: Option<Refusal> = None;
        for m in &self.methods {
            match m {
                AuthMethod::Session(sso) => {
                    let Some((_, session)) = sso.session_of(&req.headers) else { continue };
                    // A cookie rides along with any request the browser sends: a state-changing one must come from
                    // this site's own pages.
                    let safe = req.method == http::Method::GET || req.method == http::Method::HEAD || req.method == http::Method::OPTIONS;
                    if !safe && crate::identity::sso::cross_site(&req.headers) {
                        first.get_or_insert(Refusal { problem: AuthProblem::Invalid, reason: "cross_site_request", credential: None });
                        continue;
                    }
                    return self.accept(ctx, session.principal.clone());
                }
                AuthMethod::Mtls => {
                    let Some(cert) = ctx.client_cert() else { continue };
                    match cert.principal() {
                        Some(p) => return self.accept(ctx, p.clone()),
                        None => {
                            first.get_or_insert(Refusal {
                                problem: AuthProblem::Invalid,
                                reason: "client_cert_without_name",
                                credential: None,
                            });
                        }
                    }
                }
                AuthMethod::ApiKey(store, revoked) => {
                    let key = header_key.or(bearer.filter(|b| apikey::looks_like_key(b)));
                    let Some(key) = key else { continue };
                    match store.check(key, now) {
                        Ok(p) if revoked.as_ref().is_some_and(|r| r.is_revoked(&p.credential)) => {
                            first.get_or_insert_with(|| key_refusal(KeyFailure::Revoked, Some(&p.credential)));
                        }
                        Ok(p) => return self.accept(ctx, p.clone()),
                        Err((f, p)) => {
                            first.get_or_insert_with(|| key_refusal(f, p.map(|p| p.credential.as_str())));
                        }
                    }
                }
                AuthMethod::AwsIam(iam) => {
                    let from_header = req.headers.get(&iam.config.header).and_then(|v| v.to_str().ok());
                    let Some(token) = from_header.or(bearer.filter(|b| b.starts_with(aws::TOKEN_PREFIX))) else { continue };
                    match iam.check(token, now) {
                        Ok(Ok(p)) => return self.accept(ctx, p),
                        Err(f) => {
                            first.get_or_insert_with(|| aws_refusal(f));
                        }
                        Ok(Err(pending)) if first.is_none() => {
                            // Not seen before: ask STS (once per token, then cached until the presign expires).
                            let iam = iam.clone();
                            return Flow::Wait(Box::pin(async move {
                                let flow = match iam.resolve(pending).await {
                                    Ok(p) => self.accept(ctx, p),
                                    Err(AwsFailure::Unavailable) => self.unavailable(ctx, AwsFailure::Unavailable.code()),
                                    Err(f) => self.refuse(ctx, aws_refusal(f)),
                                };
                                flow.resolve().await
                            }));
                        }
                        Ok(Err(_)) => {}
                    }
                }
                AuthMethod::Jwt(issuers) => {
                    let Some(token) = bearer.filter(|b| !apikey::looks_like_key(b) && !b.starts_with(aws::TOKEN_PREFIX)) else { continue };
                    let Some(issuer) = pick(issuers, token) else {
                        first.get_or_insert_with(|| jwt_refusal(JwtFailure::WrongIssuer, None));
                        continue;
                    };
                    match issuer.check(token, now) {
                        Check::Ok(p) => return self.accept(ctx, p),
                        Check::Fail(f) => {
                            first.get_or_insert_with(|| jwt_refusal(f, Some(&issuer.config.name)));
                        }
                        Check::NeedKeys if first.is_none() => {
                            // The token names a key we lack: fetch (single-flight, rate-limited), then decide.
                            let token = token.to_string();
                            let issuer = issuer.clone();
                            return Flow::Wait(Box::pin(async move {
                                let outcome = issuer.check_fetching(&token).await;
                                let flow = match outcome {
                                    Ok(p) => self.accept(ctx, p),
                                    Err(JwtFailure::KeysUnavailable) => self.unavailable(ctx, JwtFailure::KeysUnavailable.code()),
                                    Err(f) => self.refuse(ctx, jwt_refusal(f, Some(&issuer.config.name))),
                                };
                                flow.resolve().await
                            }));
                        }
                        Check::NeedKeys => {}
                    }
                }
            }
        }
        match first {
            Some(r) => self.refuse(ctx, r),
            None if self.anonymous => self.accept(ctx, self.anon.clone()),
            None if self.sign_in && browser_navigation(req) => self.send_to_sign_in(ctx, req),
            None => self.refuse(ctx, Refusal { problem: AuthProblem::Missing, reason: "missing_credentials", credential: None }),
        }
    }

    fn upstream_request(&self, ctx: &Ctx, req: &request::Parts, edits: &mut HeaderEdits) {
        self.strip_credentials(&req.headers, edits);
        let Some(p) = ctx.principal() else { return };
        for (name, value) in p.upstream_headers() {
            edits.set(name.clone(), value.clone());
        }
        if let Some((signer, audience)) = &self.assertion {
            let now = SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            if let Some(v) = signer.assertion(p, audience, now) {
                edits.set(assertion::HEADER.clone(), v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use http::Method;
    use modelgate_pipeline::Phase;
    use modelgate_pipeline::testing::{config, ctx, forward, parts, run};

    use super::*;
    use crate::identity::Registry;

    /// The `auth` plugin with `settings` over a key store holding one key of consumer `team-a`; returns it and the key.
    fn plugin(dir: &std::path::Path, settings: &str) -> (Box<dyn Plugin>, String) {
        plugin_with(dir, settings, "")
    }

    /// [`plugin`] with more `identity.api_keys` settings (`, query: [apikey]`).
    fn plugin_with(dir: &std::path::Path, settings: &str, api_keys: &str) -> (Box<dyn Plugin>, String) {
        let keys = dir.join("keys.yaml");
        let (key, _) = apikey::create_in(&keys, "team-a", vec!["infer:digits".into()], vec!["ml".into()], None).unwrap();
        let c =
            config(&format!("[{{auth: {settings}}}]"), &format!("identity:\n  api_keys: {{ file: \"{}\"{api_keys} }}\n", keys.display()));
        let services = Registry::default().build(&c.identity, None, None).unwrap();
        (build(&c.routes[0].plugins[0], &services, &c.routes[0], false, &Default::default()).unwrap(), key)
    }

    async fn authenticate(p: &dyn Plugin, headers: &[(&str, &str)]) -> Result<String, String> {
        let mut c = ctx(Method::POST, "/v2/models/digits/infer");
        let mut req = parts(Method::POST, "/v2/models/digits/infer", headers);
        run(p, Phase::Authenticate, &mut c, &mut req).await.map_err(|e| format!("{}: {e}", e.code()))?;
        let who = c.principal().expect("a principal");
        Ok(format!("{} via {} scopes {:?}", who.consumer, who.method.as_str(), who.scopes))
    }

    #[tokio::test]
    async fn an_api_key_in_its_header_or_as_a_bearer_token_names_the_consumer() {
        let dir = tempfile::tempdir().unwrap();
        let (p, key) = plugin(dir.path(), "{methods: [api_key]}");
        let expected = Ok("team-a via api_key scopes [\"infer:digits\"]".to_string());
        assert_eq!(authenticate(&*p, &[("x-api-key", &key)]).await, expected);
        assert_eq!(authenticate(&*p, &[("authorization", &format!("Bearer {key}"))]).await, expected);
        let wrong = format!("{}x", &key[..key.len() - 1]);
        assert_eq!(authenticate(&*p, &[("x-api-key", &wrong)]).await, Err("unauthenticated: the credentials were not accepted".into()));
        let missing = authenticate(&*p, &[]).await.unwrap_err();
        assert!(missing.starts_with("unauthenticated: credentials are required"), "{missing}");
    }

    /// The credentials stop at the gateway: what the methods read is removed before the upstream, other headers and
    /// cookies go on; `forward_credentials: true` keeps them.
    #[tokio::test]
    async fn credentials_are_removed_before_the_upstream_unless_forwarded() {
        let dir = tempfile::tempdir().unwrap();
        let (p, key) = plugin(dir.path(), "{methods: [api_key], cookie: access_token}");
        let bearer = format!("Bearer {key}");
        let cookie = format!("theme=dark; access_token={key}; lang=en");
        let sent = [("x-api-key", key.as_str()), ("authorization", bearer.as_str()), ("cookie", cookie.as_str()), ("x-other", "1")];
        let mut c = ctx(Method::POST, "/v2/models/digits/infer");
        let mut req = parts(Method::POST, "/v2/models/digits/infer", &sent);
        run(&*p, Phase::Authenticate, &mut c, &mut req).await.unwrap();
        forward(&*p, &c, &mut req);
        assert!(req.headers.get("x-api-key").is_none() && req.headers.get("authorization").is_none(), "{:?}", req.headers);
        assert_eq!(req.headers["cookie"], "theme=dark; lang=en");
        assert_eq!(req.headers["x-other"], "1");
        assert_eq!(req.headers["x-modelgate-consumer"], "team-a");
        // Only the credential cookie: the header goes.
        let mut req = parts(Method::POST, "/v2/models/digits/infer", &[("cookie", &format!("access_token={key}"))]);
        forward(&*p, &c, &mut req);
        assert!(req.headers.get("cookie").is_none());
        // Basic auth is not ours to remove.
        let mut req = parts(Method::POST, "/v2/models/digits/infer", &[("authorization", "Basic dXNlcjpwdw==")]);
        forward(&*p, &c, &mut req);
        assert_eq!(req.headers["authorization"], "Basic dXNlcjpwdw==");

        let (p, key) = plugin(dir.path(), "{methods: [api_key], forward_credentials: true}");
        let mut c = ctx(Method::POST, "/v2/models/digits/infer");
        let mut req = parts(Method::POST, "/v2/models/digits/infer", &[("x-api-key", &key), ("authorization", "Bearer t")]);
        run(&*p, Phase::Authenticate, &mut c, &mut req).await.unwrap();
        forward(&*p, &c, &mut req);
        assert_eq!(
            (req.headers["x-api-key"].to_str().unwrap(), req.headers["authorization"].to_str().unwrap()),
            (key.as_str(), "Bearer t")
        );
    }

    /// Keys in the query only where `identity.api_keys.query` names the parameter; the parameter is removed from
    /// the forwarded target (others stay) unless credentials are forwarded.
    #[tokio::test]
    async fn a_key_in_a_named_query_parameter_is_read_and_not_forwarded() {
        let dir = tempfile::tempdir().unwrap();
        let (p, key) = plugin(dir.path(), "{methods: [api_key]}");
        let target = format!("/v2/models/digits/infer?apikey={key}");
        let mut c = ctx(Method::POST, &target);
        let mut req = parts(Method::POST, &target, &[]);
        assert!(run(&*p, Phase::Authenticate, &mut c, &mut req).await.is_err(), "off by default");

        let (p, key) = plugin_with(dir.path(), "{methods: [api_key]}", ", query: [apikey]");
        let target = format!("/v2/models/digits/infer?a=1&apikey={key}&b=2");
        let mut c = ctx(Method::POST, &target);
        let mut req = parts(Method::POST, &target, &[]);
        run(&*p, Phase::Authenticate, &mut c, &mut req).await.unwrap();
        assert_eq!(c.principal().unwrap().consumer, "team-a");
        assert_eq!(c.target(), "/v2/models/digits/infer?a=1&b=2");
        // A refused key in the query is refused like one in a header.
        let target = "/v2/models/digits/infer?apikey=mg_nope_nope";
        let (mut c, mut req) = (ctx(Method::POST, target), parts(Method::POST, target, &[]));
        let e = run(&*p, Phase::Authenticate, &mut c, &mut req).await.unwrap_err();
        assert_eq!(e.code(), "unauthenticated");

        let (p, key) = plugin_with(dir.path(), "{methods: [api_key], forward_credentials: true}", ", query: [apikey]");
        let target = format!("/v2/models/digits/infer?apikey={key}");
        let (mut c, mut req) = (ctx(Method::POST, &target), parts(Method::POST, &target, &[]));
        run(&*p, Phase::Authenticate, &mut c, &mut req).await.unwrap();
        assert_eq!(c.target(), target);
    }

    #[tokio::test]
    async fn anonymous_lets_only_callers_without_credentials_through() {
        let dir = tempfile::tempdir().unwrap();
        let (p, key) = plugin(dir.path(), "{methods: [api_key], anonymous: true}");
        assert_eq!(authenticate(&*p, &[]).await, Ok("anonymous via anonymous scopes []".into()));
        assert!(authenticate(&*p, &[("x-api-key", "mg_nope_nope")]).await.is_err(), "a refused credential is never downgraded");
        assert!(authenticate(&*p, &[("x-api-key", &key)]).await.unwrap().starts_with("team-a"));
    }

    #[tokio::test]
    async fn a_method_without_its_identity_service_is_a_config_error() {
        let c = config("[{auth: {methods: [jwt]}}]", "");
        let services = Registry::default().build(&c.identity, None, None).unwrap();
        let e = build(&c.routes[0].plugins[0], &services, &c.routes[0], false, &Default::default()).err().expect("refused");
        assert!(e.to_string().contains("jwt needs an issuer"), "{e}");
        let e =
            build(&config("[{auth: {methods: [magic]}}]", "").routes[0].plugins[0], &services, &c.routes[0], false, &Default::default())
                .err()
                .expect("refused");
        assert!(e.to_string().contains("unknown method \"magic\""), "{e}");
    }
}
