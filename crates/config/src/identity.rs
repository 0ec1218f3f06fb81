//! Checks of the `identity`, `audit` and `admin.consumers` sections.

use sha2::Digest as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use http::HeaderName;

use crate::error::ConfigError;
use crate::model::{
    ApiKeysConfig, AssertionConfig, AuditConfig, AwsIamConfig, AwsPrincipalConfig, IdentityConfig, IssuerConfig, KeySource, Origin,
    RedisConfig,
};
use crate::raw::{RawAdmin, RawAudit, RawAwsIam, RawConsole, RawIdentity, RawIssuer, RawRedis};

/// Public-key algorithms a JWKS key can verify.
const PUBLIC_KEY_ALGS: &[&str] = &["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"];
const HMAC_ALGS: &[&str] = &["HS256", "HS384", "HS512"];

pub(crate) fn identity(file: &Path, base: &Path, raw: &RawIdentity, errors: &mut Vec<ConfigError>) -> IdentityConfig {
    let mut out = IdentityConfig::default();
    for (name, i) in &raw.issuers {
        if let Some(c) = issuer(file, base, name, i, errors) {
            out.issuers.insert(name.clone(), Arc::new(c));
        }
    }
    if let Some(k) = &raw.api_keys {
        let names = k.header.to_vec();
        let mut headers = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let at = if matches!(k.header, crate::raw::OneOrMany::One(_)) {
                "identity.api_keys.header".to_string()
            } else {
                format!("identity.api_keys.header[{i}]")
            };
            match HeaderName::from_bytes(name.as_bytes()) {
                Ok(h) if h == http::header::AUTHORIZATION => errors.push(
                    ConfigError::new(file, at, "Authorization is read for `Bearer mg_…` keys already")
                        .hint("name the custom header, e.g. apikey"),
                ),
                Ok(h) => headers.push(h),
                Err(_) => {
                    errors.push(ConfigError::new(file, at, format!("{name:?} is not a header name")).hint("e.g. x-api-key or apikey"))
                }
            }
        }
        if names.is_empty() {
            errors.push(ConfigError::new(file, "identity.api_keys.header", "no header").hint("e.g. [x-api-key, apikey]"));
        }
        for (i, q) in k.query.iter().enumerate() {
            let plain = !q.is_empty() && q.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !plain {
                errors.push(
                    ConfigError::new(file, format!("identity.api_keys.query[{i}]"), format!("{q:?} is not a plain query parameter name"))
                        .hint("letters, digits, `-`, `_` and `.`, e.g. apikey"),
                );
            }
        }
        if !headers.is_empty() && headers.len() == names.len() {
            out.api_keys = Some(ApiKeysConfig {
                file: base.join(&k.file),
                headers,
                query: k.query.clone(),
                origin: Origin { file: file.to_path_buf(), path: "identity.api_keys".into() },
                redis_revocations: k.redis_revocations,
            });
        }
    }
    if let Some(a) = &raw.aws_iam {
        out.aws_iam = aws_iam(file, a, errors).map(Arc::new);
    }
    if let Some(a) = &raw.assertion {
        let lifetime = a.lifetime.0.as_secs();
        if !(5..=3600).contains(&lifetime) {
            errors.push(
                ConfigError::new(file, "identity.assertion.lifetime", "must be between 5s and 1h")
                    .hint("assertions are meant to be short-lived, e.g. 60s"),
            );
        }
        if a.issuer.is_empty() {
            errors.push(
                ConfigError::new(file, "identity.assertion.issuer", "empty issuer").hint("e.g. modelgate or https://gateway.example.com"),
            );
        }
        out.assertion = Some(AssertionConfig {
            origin: Origin { file: file.to_path_buf(), path: "identity.assertion".into() },
            signing_key: base.join(&a.signing_key),
            previous_keys: a.previous_keys.iter().map(|k| base.join(k)).collect(),
            issuer: a.issuer.clone(),
            lifetime: a.lifetime.0,
        });
    }
    for (name, c) in &raw.consumers {
        let at = format!("identity.consumers.{name}");
        // Besides key consumers' names, JWT subjects (`user@example.com`) and certificate names (SPIFFE URIs).
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.@:/".contains(&b)) {
            errors.push(ConfigError::new(file, &at, format!("{name:?} is not a consumer name")).hint("letters, digits and -_.@:/"));
        }
        if !c.keys.is_empty() && raw.api_keys.is_none() {
            errors.push(
                ConfigError::new(file, format!("{at}.keys"), "declared keys need `identity.api_keys` (the headers they come in)")
                    .hint("add identity.api_keys: {file: keys.yaml, header: [x-api-key, apikey]}; the file may stay empty"),
            );
        }
        let mut key_hashes = Vec::new();
        for (i, k) in c.keys.iter().enumerate() {
            if !(20..=512).contains(&k.len()) || !k.bytes().all(|b| b.is_ascii_graphic()) {
                errors.push(
                    ConfigError::new(file, format!("{at}.keys[{i}]"), "a key is 20 to 512 printable characters without spaces")
                        .hint("generate one with `openssl rand -base64 32` and reference it as ${file:…}"),
                );
                continue;
            }
            key_hashes.push(sha2::Sha256::digest(k.as_bytes()).into());
        }
        out.consumers.insert(name.clone(), crate::model::ConsumerConfig { groups: c.groups.clone(), scopes: c.scopes.clone(), key_hashes });
    }
    out
}

fn aws_iam(file: &Path, raw: &RawAwsIam, errors: &mut Vec<ConfigError>) -> Option<AwsIamConfig> {
    let before = errors.len();
    let err = |field: &str, msg: String| ConfigError::new(file, format!("identity.aws_iam.{field}"), msg);
    let endpoint = raw.sts_endpoint.trim_end_matches('/');
    match endpoint.parse::<http::Uri>() {
        Ok(u) if u.authority().is_some() && u.path_and_query().is_none_or(|p| p.as_str().is_empty() || p.as_str() == "/") => {
            let loopback = u.host().is_some_and(|h| {
                h == "localhost" || h.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
            });
            match u.scheme_str() {
                Some("https") => {}
                Some("http") if loopback => {}
                _ => errors.push(err("sts_endpoint", format!("{endpoint:?} is not an https URL")).hint(
                    "the token travels to this endpoint: use https, e.g. https://sts.amazonaws.com (http only for a loopback test STS)",
                )),
            }
        }
        _ => errors.push(
            err("sts_endpoint", format!("{endpoint:?} is not a URL without a path"))
                .hint("e.g. https://sts.amazonaws.com or https://sts.eu-west-1.amazonaws.com"),
        ),
    }
    let header = HeaderName::from_bytes(raw.header.as_bytes());
    if header.is_err() {
        errors.push(err("header", format!("{:?} is not a header name", raw.header)).hint("e.g. x-aws-iam-token"));
    }
    if raw.cluster_id.as_deref().is_some_and(|c| c.is_empty() || http::HeaderValue::from_str(c).is_err()) {
        errors.push(
            err("cluster_id", "empty or not a valid header value".into())
                .hint("e.g. the cluster or service name the tokens are minted for"),
        );
    }
    if raw.max_presign_age.0.is_zero() || raw.max_presign_age.0.as_secs() > 7 * 24 * 3600 {
        errors.push(
            err("max_presign_age", "must be more than 0 and at most 7d".into())
                .hint("STS presigned requests live at most 15m by convention; e.g. 15m"),
        );
    }
    if raw.principals.is_empty() {
        errors.push(
            err("principals", "no principal".into())
                .hint("map the ARNs that may call, e.g. - {arn: \"arn:aws:iam::111122223333:role/ml-*\", consumer: ml}"),
        );
    }
    for (i, p) in raw.principals.iter().enumerate() {
        if !p.arn.starts_with("arn:") {
            errors.push(
                err(&format!("principals[{i}].arn"), format!("{:?} is not an ARN pattern", p.arn))
                    .hint("e.g. arn:aws:iam::111122223333:user/alice or arn:aws:sts::111122223333:assumed-role/ROLE/*"),
            );
        }
        if p.consumer.trim().is_empty() {
            errors.push(err(&format!("principals[{i}].consumer"), "empty consumer".into()));
        }
    }
    (errors.len() == before).then(|| AwsIamConfig {
        origin: Origin { file: file.to_path_buf(), path: "identity.aws_iam".into() },
        sts_endpoint: endpoint.to_string(),
        header: header.expect("checked"),
        cluster_id: raw.cluster_id.clone(),
        max_presign_age: raw.max_presign_age.0,
        principals: raw
            .principals
            .iter()
            .map(|p| AwsPrincipalConfig {
                arn: p.arn.clone(),
                consumer: p.consumer.clone(),
                groups: p.groups.clone(),
                scopes: p.scopes.clone(),
            })
            .collect(),
    })
}

// Long on purpose: every field of one issuer in the order of docs/identity.md, each with its own YAML path and hint.
fn issuer(file: &Path, base: &Path, name: &str, raw: &RawIssuer, errors: &mut Vec<ConfigError>) -> Option<IssuerConfig> {
    let path = format!("identity.issuers.{name}");
    let before = errors.len();
    let err = |field: &str, msg: String| ConfigError::new(file, format!("{path}.{field}"), msg);
    if !is_http_url(&raw.issuer) {
        errors.push(
            err("issuer", format!("{:?} is not an http(s) URL", raw.issuer))
                .hint("the issuer identifier as the IdP's tokens carry it in `iss`, e.g. https://idp.example.com"),
        );
    }
    if raw.audiences.is_empty() {
        errors.push(
            err("audiences", "no audience".into())
                .hint("list the audience your IdP puts in tokens for this gateway; a token for another service must not work here"),
        );
    }
    if raw.algorithms.is_empty() {
        errors.push(err("algorithms", "no algorithm".into()).hint("e.g. [RS256]"));
    }
    let mut hmac = 0;
    for (i, a) in raw.algorithms.iter().enumerate() {
        if a.eq_ignore_ascii_case("none") {
            errors.push(err(&format!("algorithms[{i}]"), "`none` means unsigned tokens and is never accepted".into()).hint("remove it"));
        } else if HMAC_ALGS.contains(&a.as_str()) {
            hmac += 1;
        } else if !PUBLIC_KEY_ALGS.contains(&a.as_str()) {
            errors.push(err(&format!("algorithms[{i}]"), format!("unknown algorithm {a:?}")).hint(format!(
                "one of {}, {}",
                PUBLIC_KEY_ALGS.join(", "),
                HMAC_ALGS.join(", ")
            )));
        }
    }
    if hmac > 0 && hmac < raw.algorithms.len() {
        errors.push(
            err("algorithms", "HS* and public-key algorithms are mixed".into())
                .hint("an issuer uses either a shared secret or public keys; an HS token verified with a public key is a known forgery"),
        );
    }
    if hmac > 0 && raw.hs_secret.as_deref().is_none_or(str::is_empty) {
        errors.push(err("hs_secret", "HS* algorithms need a shared secret".into()).hint("set hs_secret: ${ENV_NAME}"));
    }
    if hmac == 0 && raw.hs_secret.is_some() {
        errors.push(
            err("hs_secret", "a shared secret is set but no HS* algorithm is allowed".into())
                .hint("remove hs_secret, or use only HS256/384/512"),
        );
    }
    if raw.hs_secret.as_ref().is_some_and(|s| s.len() < 32) {
        errors.push(err("hs_secret", "the shared secret is shorter than 32 bytes".into()).hint("use at least 32 random bytes"));
    }
    let keys = match (&raw.jwks_uri, &raw.jwks_file) {
        _ if hmac > 0 => {
            if raw.jwks_uri.is_some() || raw.jwks_file.is_some() {
                errors
                    .push(err("algorithms", "HS* tokens are checked with hs_secret, not a JWKS".into()).hint("remove jwks_uri/jwks_file"));
            }
            KeySource::None
        }
        (Some(_), Some(_)) => {
            errors.push(err("jwks_file", "jwks_uri and jwks_file are both set".into()).hint("keep one"));
            KeySource::None
        }
        (Some(u), None) => {
            if !is_http_url(u) {
                errors.push(err("jwks_uri", format!("{u:?} is not an http(s) URL")));
            }
            KeySource::Uri(u.clone())
        }
        (None, Some(f)) => KeySource::File(base.join(f)),
        (None, None) => KeySource::Discovery(format!("{}/.well-known/openid-configuration", raw.issuer.trim_end_matches('/'))),
    };
    if raw.jwks_cache.0.is_zero() {
        errors.push(err("jwks_cache", "must be more than 0".into()));
    }
    (errors.len() == before).then(|| IssuerConfig {
        name: name.to_string(),
        origin: Origin { file: file.to_path_buf(), path },
        issuer: raw.issuer.clone(),
        keys,
        audiences: raw.audiences.clone(),
        algorithms: raw.algorithms.clone(),
        hs_secret: raw.hs_secret.clone(),
        leeway: raw.leeway.0,
        max_token_lifetime: raw.max_token_lifetime.map(|d| d.0),
        jwks_cache: raw.jwks_cache.0,
        jwks_min_refetch: raw.jwks_min_refetch.0,
        scope_claim: raw.scope_claim.clone(),
        groups_claim: raw.groups_claim.clone(),
        consumer_claim: raw.consumer_claim.clone(),
    })
}

fn is_http_url(s: &str) -> bool {
    s.parse::<http::Uri>().is_ok_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some())
}

pub(crate) fn audit(file: &Path, base: &Path, raw: &RawAudit, errors: &mut Vec<ConfigError>) -> Option<AuditConfig> {
    let before = errors.len();
    if raw.path.trim().is_empty() {
        errors.push(ConfigError::new(file, "audit.path", "empty path").hint("e.g. audit/audit.log"));
    }
    if raw.queue == 0 {
        errors.push(ConfigError::new(file, "audit.queue", "must be at least 1"));
    }
    if raw.checkpoint_every == 0 {
        errors.push(ConfigError::new(file, "audit.checkpoint_every", "must be at least 1"));
    }
    if raw.max_file_size.0 < 4096 {
        errors.push(ConfigError::new(file, "audit.max_file_size", "must be at least 4KiB"));
    }
    (errors.len() == before).then(|| AuditConfig {
        path: base.join(&raw.path),
        fsync: raw.fsync,
        fsync_interval: raw.fsync_interval.0,
        max_file_size: raw.max_file_size.0,
        checkpoint_every: raw.checkpoint_every,
        queue: raw.queue,
        when_full: raw.when_full,
    })
}

/// The admin API beyond loopback must ask for a credential.
pub(crate) fn admin_access(file: &Path, addr: SocketAddr, admin: &RawAdmin, have_credentials: bool, errors: &mut Vec<ConfigError>) {
    let open = admin.consumers.is_empty() && admin.groups.is_empty();
    if open && !addr.ip().is_loopback() {
        errors.push(
            ConfigError::new(
                file,
                "admin.listen",
                format!("the admin API on {addr} would be reachable beyond this machine without a credential"),
            )
            .hint("bind it to 127.0.0.1, or list admin.consumers / admin.groups who may use it (by API key or JWT)"),
        );
    }
    if !open && !have_credentials {
        errors.push(
            ConfigError::new(
                file,
                if admin.consumers.is_empty() { "admin.groups" } else { "admin.consumers" },
                "admin callers are checked with API keys or JWTs, and neither identity.api_keys nor identity.issuers is set",
            )
            .hint("add identity.api_keys: {file: keys.yaml} or an issuer under identity.issuers"),
        );
    }
}

/// `admin.console`: its issuer must be one of `identity.issuers`; the redirect URI https unless on loopback.
pub(crate) fn console(
    file: &Path,
    raw: &RawConsole,
    admin_listen: Option<SocketAddr>,
    listen: Option<SocketAddr>,
    identity: &IdentityConfig,
    errors: &mut Vec<ConfigError>,
) -> Option<crate::model::ConsoleConfig> {
    let before = errors.len();
    let err = |field: &str, msg: String| ConfigError::new(file, format!("admin.console.{field}"), msg);
    let issuer = identity.issuers.get(&raw.issuer);
    if issuer.is_none() {
        let known: Vec<&str> = identity.issuers.keys().map(String::as_str).collect();
        errors.push(err("issuer", format!("no issuer {:?} under identity.issuers", raw.issuer)).hint(if known.is_empty() {
            "add the company IdP under identity.issuers (issuer URL and audiences) and name it here".to_string()
        } else {
            format!("one of: {}", known.join(", "))
        }));
    }
    if raw.client_id.trim().is_empty() {
        errors.push(err("client_id", "must not be empty".into()).hint("the client id the IdP gave the console's app registration"));
    }
    let console_loopback = redirect(file, "redirect_uri", raw.redirect_uri.as_deref(), admin_listen, "/console/callback", errors);
    let routes_loopback = redirect(file, "routes_redirect_uri", raw.routes_redirect_uri.as_deref(), listen, "/.modelgate/callback", errors);
    if let Some(secret) = &raw.cookie_secret
        && secret.len() < 32
    {
        errors.push(
            err("cookie_secret", format!("is {} characters; at least 32 are needed", secret.len()))
                .hint("e.g. cookie_secret: ${CONSOLE_COOKIE_SECRET} with `openssl rand -hex 32` in that variable"),
        );
    }
    if raw.session_lifetime.0 < std::time::Duration::from_secs(60) || raw.session_lifetime.0 > std::time::Duration::from_secs(7 * 86400) {
        errors.push(err("session_lifetime", "must be between 1m and 7d".into()).hint("e.g. 8h (a working day)"));
    }
    if raw.consumer_claim.is_empty() {
        errors.push(err("consumer_claim", "must not be empty".into()).hint("email, preferred_username or sub"));
    }
    let issuer = issuer?;
    if errors.len() != before {
        return None;
    }
    let mut id_token = IssuerConfig::clone(issuer);
    id_token.name = format!("console:{}", raw.issuer);
    id_token.audiences = vec![raw.client_id.clone()];
    id_token.max_token_lifetime = None;
    id_token.consumer_claim = raw.consumer_claim.clone();
    let mut scopes = vec!["openid".to_string()];
    scopes.extend(raw.scopes.iter().filter(|s| s.as_str() != "openid").cloned());
    Some(crate::model::ConsoleConfig {
        id_token: Arc::new(id_token),
        client_id: raw.client_id.clone(),
        client_secret: raw.client_secret.clone().filter(|s| !s.is_empty()),
        redirect_uri: raw.redirect_uri.clone(),
        routes_redirect_uri: raw.routes_redirect_uri.clone(),
        scopes,
        session_lifetime: raw.session_lifetime.0,
        cookie_secret: raw.cookie_secret.clone(),
        secure_cookies: !(console_loopback && routes_loopback),
    })
}

/// Checks a login redirect URI (`admin.console.{field}`, or its default on `listen` ending in `path`): an http(s)
/// URL ending in `path`, https unless on loopback. Whether its host is loopback.
fn redirect(file: &Path, field: &str, uri: Option<&str>, listen: Option<SocketAddr>, path: &str, errors: &mut Vec<ConfigError>) -> bool {
    let uri =
        uri.map_or_else(|| format!("http://{}{path}", listen.map_or("127.0.0.1:8081".to_string(), |a| a.to_string())), str::to_string);
    let err = |msg: String| ConfigError::new(file, format!("admin.console.{field}"), msg);
    match uri.parse::<http::Uri>() {
        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.path() == path => {
            let host = u.host().unwrap_or("").trim_start_matches('[').trim_end_matches(']');
            let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if !loopback && u.scheme_str() != Some("https") {
                errors.push(err(format!("{uri} is plain http beyond loopback: session cookies would cross the network in clear")).hint(
                    format!(
                        "serve this listener behind TLS and give the https address people reach, e.g. https://modelgate.example.com{path}"
                    ),
                ));
            }
            loopback
        }
        _ => {
            errors.push(
                err(format!("{uri:?} is not an http(s) URL ending in {path}"))
                    .hint(format!("e.g. https://modelgate.example.com{path} (register the same URL at the IdP)")),
            );
            true
        }
    }
}

pub(crate) fn redis(file: &Path, raw: &RawRedis, errors: &mut Vec<ConfigError>) -> Option<RedisConfig> {
    let before = errors.len();
    let scheme = raw.url.split_once("://").map(|(s, _)| s);
    if !matches!(scheme, Some("redis" | "rediss" | "unix" | "redis+unix")) {
        // The URL may hold a password: it is not repeated.
        errors.push(
            ConfigError::new(file, "redis.url", "not a redis://, rediss:// or unix:// URL")
                .hint("e.g. redis://127.0.0.1:6379, rediss://:${REDIS_PASSWORD}@redis.internal:6380/0 or unix:///run/redis.sock"),
        );
    }
    if raw.connect_timeout.0.is_zero() || raw.command_timeout.0.is_zero() {
        errors
            .push(ConfigError::new(file, "redis", "timeouts must be more than 0").hint("e.g. connect_timeout: 1s, command_timeout: 250ms"));
    }
    (errors.len() == before).then(|| RedisConfig {
        url: raw.url.clone(),
        key_prefix: raw.key_prefix.clone(),
        connect_timeout: raw.connect_timeout.0,
        command_timeout: raw.command_timeout.0,
    })
}
