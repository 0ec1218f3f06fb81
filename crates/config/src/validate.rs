//! Raw structs → validated [`Config`]: every cross-field check is a named function returning errors with paths.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::{HeaderName, HeaderValue, Method};

use crate::error::{ConfigError, ConfigErrors};
use crate::model::*;
use crate::raw::{RawConfig, RawFragment, RawRoute, RawUpstream};

/// Raw documents read for one load.
pub(crate) struct Parsed {
    pub main: (PathBuf, RawConfig),
    pub fragments: Vec<(PathBuf, RawFragment)>,
}

// Long on purpose: one pass over the whole config in YAML order, so every error is collected with its path and the
// order of checks reads like docs/config.md; split into helpers it would thread the error list through each.
pub(crate) fn validate(parsed: Parsed, mut meta: Meta) -> Result<Config, ConfigErrors> {
    let mut errors = Vec::new();
    let (main_file, raw) = parsed.main;

    let listen = socket_addr(&main_file, "listen", &raw.listen, &mut errors);
    let admin_listen = socket_addr(&main_file, "admin.listen", &raw.admin.listen, &mut errors);
    let status_listen = raw.admin.status_listen.as_ref().and_then(|s| socket_addr(&main_file, "admin.status_listen", s, &mut errors));
    if raw.server.workers == Some(0) {
        errors.push(ConfigError::new(&main_file, "server.workers", "must be at least 1").hint("omit it to use one per core"));
    }
    if raw.server.max_connections == 0 {
        errors.push(ConfigError::new(&main_file, "server.max_connections", "must be at least 1").hint("omit it for 20000"));
    }
    if raw.server.max_in_flight == 0 {
        errors.push(ConfigError::new(&main_file, "server.max_in_flight", "must be at least 1").hint("omit it for 10000"));
    }

    let base = main_file.parent().unwrap_or(Path::new(".")).to_path_buf();

    // Upstreams from every file; a name defined twice is an error naming both places.
    let mut upstreams = BTreeMap::new();
    let mut by_upstream = HashMap::new();
    let mut defined_in: HashMap<String, PathBuf> = HashMap::new();
    // Upstreams' TLS files (CA, client certificate and key), from every file: watched, so a rotation reloads.
    let mut upstream_tls_files = Vec::new();
    let upstream_sources =
        std::iter::once((&main_file, &raw.upstreams)).chain(parsed.fragments.iter().map(|(f, frag)| (f, &frag.upstreams)));
    for (file, ups) in upstream_sources {
        for (name, up) in ups {
            let path = format!("upstreams.{name}");
            if let Some(first) = defined_in.get(name) {
                errors.push(
                    ConfigError::new(file, &path, format!("upstream {name:?} is already defined in {}", first.display()))
                        .hint("upstream names are global across included files; rename one"),
                );
                continue;
            }
            defined_in.insert(name.clone(), file.clone());
            by_upstream.insert(name.clone(), plugin_specs(file, &format!("{path}.plugins"), &up.plugins, &mut errors));
            let up_base = file.parent().unwrap_or(Path::new("."));
            upstream_tls_files.extend([&up.tls.ca, &up.tls.client_cert, &up.tls.client_key].into_iter().flatten().map(|f| up_base.join(f)));
            if let Some(u) = upstream(file, up_base, &path, name, up, &mut errors) {
                upstreams.insert(name.clone(), Arc::new(u));
            }
        }
    }

    let defaults = PluginDefaults {
        global: plugin_specs(&main_file, "plugins", &raw.plugins, &mut errors),
        by_upstream,
        sets: raw
            .plugin_sets
            .iter()
            .map(|(n, entries)| (n.clone(), plugin_specs(&main_file, &format!("plugin_sets.{n}"), entries, &mut errors)))
            .collect(),
    };

    // Routes: main file first, then fragments in file-name order.
    let mut routes = Vec::new();
    let mut route_names: HashMap<String, String> = HashMap::new();
    let route_sources = std::iter::once((&main_file, &raw.routes)).chain(parsed.fragments.iter().map(|(f, frag)| (f, &frag.routes)));
    for (file, raws) in route_sources {
        for (i, r) in raws.iter().enumerate() {
            let origin = Origin { file: file.clone(), path: format!("routes[{i}]") };
            let here = format!("{}: {}", file.display(), origin.path);
            if let Some(first) = route_names.insert(r.name.clone(), here) {
                errors.push(
                    ConfigError::new(file, format!("{}.name", origin.path), format!("route name {:?} is already used at {first}", r.name))
                        .hint("route names must be unique"),
                );
            }
            if let Some(route) = route(origin, r, &upstreams, &defined_in, &defaults, &mut errors) {
                routes.push(route);
            }
        }
    }

    let model_sources = std::iter::once((&main_file, &raw.models)).chain(parsed.fragments.iter().map(|(f, frag)| (f, &frag.models)));
    let (mut models, model_files) = crate::versions::models(model_sources, &upstreams, &mut errors);
    let fragment_files: Vec<PathBuf> = parsed.fragments.iter().map(|(f, _)| f.clone()).collect();
    let defined =
        crate::namespaces::Defined { routes: &routes, upstreams: &upstreams, upstream_files: &defined_in, model_files: &model_files };
    crate::namespaces::check(&main_file, &raw.namespaces, &fragment_files, &defined, &mut models, &mut errors);
    let identity = crate::identity::identity(&main_file, &base, &raw.identity, &mut errors);
    let audit = raw.audit.as_ref().and_then(|a| crate::identity::audit(&main_file, &base, a, &mut errors));
    let redis = raw.redis.as_ref().and_then(|r| crate::identity::redis(&main_file, r, &mut errors));
    for (i, f) in raw.observability.access_log.iter().flat_map(|a| a.fields.iter().flatten()).enumerate() {
        if !crate::model::ACCESS_LOG_FIELDS.contains(&f.as_str()) {
            errors.push(
                ConfigError::new(&main_file, format!("observability.access_log.fields[{i}]"), format!("unknown field {f:?}"))
                    .hint(crate::model::ACCESS_LOG_FIELDS.join(", ")),
            );
        }
    }
    if identity.api_keys.as_ref().is_some_and(|k| k.redis_revocations) && raw.redis.is_none() {
        errors.push(
            ConfigError::new(
                &main_file,
                "identity.api_keys.redis_revocations",
                "revocations through Redis need the top-level `redis` section",
            )
            .hint("add redis: {url: ${REDIS_URL}}"),
        );
    }
    if let Some(addr) = admin_listen {
        crate::identity::admin_access(
            &main_file,
            addr,
            &raw.admin,
            identity.api_keys.is_some() || !identity.issuers.is_empty(),
            &mut errors,
        );
    }
    let console =
        raw.admin.console.as_ref().and_then(|c| crate::identity::console(&main_file, c, admin_listen, listen, &identity, &mut errors));
    meta.data_files.extend(identity.api_keys.iter().map(|k| k.file.clone()));
    meta.data_files
        .extend(identity.assertion.iter().flat_map(|a| std::iter::once(a.signing_key.clone()).chain(a.previous_keys.iter().cloned())));
    meta.data_files.extend(identity.issuers.values().filter_map(|i| match &i.keys {
        KeySource::File(p) => Some(p.clone()),
        _ => None,
    }));

    let tracing = raw.observability.tracing.as_ref().and_then(|t| tracing_config(&main_file, t, &mut errors));
    let tls = raw.tls.as_ref().and_then(|t| crate::tls::listener(&main_file, &base, t, &mut errors));
    meta.data_files.extend(tls.iter().flat_map(|t| t.certificates.iter()).flat_map(|c| [c.cert_file.clone(), c.key_file.clone()]));
    meta.data_files.extend(tls.iter().filter_map(|t| t.client_auth.as_ref()).map(|c| c.ca_file.clone()));
    meta.data_files.extend(tls.iter().filter_map(|t| t.client_auth.as_ref()).flat_map(|c| c.crl_files.iter().cloned()));
    meta.data_files.extend(upstream_tls_files);

    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    Ok(Config {
        namespaces: raw.namespaces.clone(),
        include_dir: raw.include.as_ref().map(|d| base.join(d)),
        tls,
        tracing,
        admin_consumers: raw.admin.consumers.clone(),
        admin_groups: raw.admin.groups.clone(),
        console,
        identity,
        audit,
        redis,
        consumer_labels: raw.observability.consumer_labels,
        request_metrics: raw.observability.metrics,
        access_log: raw.observability.access_log.as_ref().map(|a| crate::model::AccessLogConfig {
            path: (a.path != "stdout").then(|| base.join(&a.path)),
            queue: a.queue.max(1),
            fields: a.fields.clone(),
        }),
        listen: listen.expect("checked: no errors"),
        admin_listen: admin_listen.expect("checked: no errors"),
        status_listen,
        workers: raw.server.workers,
        shutdown_grace: raw.server.shutdown_grace.0,
        watch: raw.server.watch,
        reload_debounce: raw.server.reload_debounce.0,
        header_read_timeout: raw.server.header_read_timeout.0,
        max_connections: raw.server.max_connections,
        max_in_flight: raw.server.max_in_flight,
        upstreams,
        routes,
        models,
        meta,
    })
}

fn tracing_config(file: &Path, t: &crate::raw::RawTracing, errors: &mut Vec<ConfigError>) -> Option<crate::model::TracingConfig> {
    let before = errors.len();
    let grpc = match t.protocol.as_str() {
        "grpc" => true,
        "http" => false,
        other => {
            errors.push(
                ConfigError::new(file, "observability.tracing.protocol", format!("unknown protocol {other:?}"))
                    .hint("use grpc (collector port 4317) or http (port 4318)"),
            );
            true
        }
    };
    let url_ok = t.endpoint.parse::<http::Uri>().is_ok_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some());
    if !url_ok {
        errors.push(
            ConfigError::new(file, "observability.tracing.endpoint", format!("{:?} is not an http:// or https:// URL", t.endpoint))
                .hint("e.g. http://otel-collector:4317"),
        );
    }
    if !(0.0..=1.0).contains(&t.sample_ratio) {
        errors.push(
            ConfigError::new(file, "observability.tracing.sample_ratio", format!("{} is not between 0 and 1", t.sample_ratio))
                .hint("0.01 samples one new trace in a hundred"),
        );
    }
    for (k, v) in &t.headers {
        if http::HeaderName::from_bytes(k.as_bytes()).is_err() || http::HeaderValue::from_str(v).is_err() {
            errors.push(ConfigError::new(file, format!("observability.tracing.headers.{k}"), "not a valid header name and value"));
        }
    }
    (errors.len() == before).then(|| crate::model::TracingConfig {
        endpoint: t.endpoint.clone(),
        grpc,
        sample_ratio: t.sample_ratio,
        service_name: t.service_name.clone(),
        headers: t.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        timeout: t.timeout.0,
        queue: t.queue,
    })
}

fn socket_addr(file: &Path, path: &str, value: &str, errors: &mut Vec<ConfigError>) -> Option<SocketAddr> {
    let v = value.trim();
    let parsed = v.parse::<SocketAddr>().ok().or_else(|| {
        // `localhost:8080` is common; resolve only that name so loading never does DNS.
        v.strip_prefix("localhost:").and_then(|p| p.parse::<u16>().ok()).map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
    });
    if parsed.is_none() {
        errors.push(
            ConfigError::new(file, path, format!("invalid listen address {value:?}"))
                .hint("write IP:PORT, e.g. 0.0.0.0:8080 or 127.0.0.1:0"),
        );
    }
    parsed
}

fn upstream(file: &Path, base: &Path, path: &str, name: &str, raw: &RawUpstream, errors: &mut Vec<ConfigError>) -> Option<UpstreamConfig> {
    let before = errors.len();
    if raw.targets.is_empty() {
        errors.push(ConfigError::new(file, format!("{path}.targets"), "no targets").hint("add at least one URL like http://10.0.0.5:8000"));
    }
    let mut targets = Vec::new();
    for (i, t) in raw.targets.iter().enumerate() {
        match target(t) {
            Ok(t) => targets.push(t),
            Err(e) => errors.push(
                ConfigError::new(file, format!("{path}.targets[{i}]"), e.to_string()).hint("write http://HOST:PORT or https://HOST:PORT"),
            ),
        }
    }
    let tls = crate::tls::upstream(file, base, path, &raw.tls, errors);
    for (i, s) in raw.retries.on_status.iter().enumerate() {
        if !(500..=599).contains(s) {
            errors.push(
                ConfigError::new(file, format!("{path}.retries.on_status[{i}]"), format!("{s} is not a 5xx status"))
                    .hint("only 5xx statuses are retried"),
            );
        }
    }
    let active = raw.health.as_ref().and_then(|h| {
        let hp = format!("{path}.health");
        if h.healthy_threshold == 0 || h.unhealthy_threshold == 0 {
            errors.push(ConfigError::new(file, &hp, "thresholds must be at least 1"));
        }
        if h.interval.0.is_zero() {
            errors.push(ConfigError::new(file, format!("{hp}.interval"), "must be more than 0"));
        }
        match h.path.parse::<http::uri::PathAndQuery>() {
            Ok(p) if h.path.starts_with('/') => Some(ActiveHealth {
                path: p,
                interval: h.interval.0,
                timeout: h.timeout.0,
                healthy_threshold: h.healthy_threshold,
                unhealthy_threshold: h.unhealthy_threshold,
            }),
            _ => {
                errors.push(
                    ConfigError::new(file, format!("{hp}.path"), format!("invalid path {:?}", h.path))
                        .hint("write an absolute path like /v2/health/ready"),
                );
                None
            }
        }
    });
    let passive = (raw.passive_health.consecutive_failures > 0).then_some(PassiveHealth {
        consecutive_failures: raw.passive_health.consecutive_failures,
        cooldown: raw.passive_health.cooldown.0,
    });
    (errors.len() == before).then(|| UpstreamConfig {
        name: name.to_string(),
        targets,
        balance: raw.balance,
        protocol: raw.protocol,
        connect_timeout: raw.timeouts.connect.0,
        response_timeout: raw.timeouts.response.0,
        idle_timeout: raw.timeouts.idle.0,
        retry_attempts: raw.retries.attempts,
        retry_on_status: raw.retries.on_status.clone(),
        retry_max_body: raw.retries.max_body.0,
        passive,
        active,
        tls,
    })
}

/// What a valid config may still get wrong without an error: each a [`ConfigError`] to print as a warning
/// (`modelgate validate`, `/admin/config/status`).
pub fn warnings(config: &Config) -> Vec<ConfigError> {
    let mut out = Vec::new();
    if let Some(k) = &config.identity.api_keys
        && !k.file.exists()
        && config.identity.consumers.values().all(|c| c.key_hashes.is_empty())
    {
        out.push(
            ConfigError::new(
                &k.origin.file,
                "identity.api_keys.file",
                format!("{} does not exist: every API key will be refused", k.file.display()),
            )
            .hint(format!("create it with `modelgate keys create --file {} --consumer NAME`", k.file.display())),
        );
    }
    for r in &config.routes {
        policy_rules_that_never_match(r, &mut out);
        let has_auth = r.plugins.iter().any(|p| p.name == "auth");
        for p in r.plugins.iter().filter(|p| p.name == "rate_limit" || p.name == "concurrency") {
            let per_caller = |l: &serde_norway::Value| {
                l.get("by")
                    .and_then(|b| b.as_sequence())
                    .is_some_and(|b| b.iter().filter_map(|k| k.as_str()).any(|k| k == "client_ip" || k.starts_with("header:")))
            };
            let limits = p.settings.get("limits").and_then(|l| l.as_sequence());
            if !has_auth && !limits.is_some_and(|l| l.iter().all(per_caller)) {
                out.push(
                    ConfigError::new(
                        &p.origin.file,
                        &p.origin.path,
                        "this route has no `auth`: every caller counts as consumer `-`, so all share one limit",
                    )
                    .hint("add `auth` before it, or count per client with `by: [client_ip]`"),
                );
            }
        }
    }
    out
}

/// A policy rule restricted to authentication methods the route's `auth` never uses can never allow anything.
fn policy_rules_that_never_match(r: &RouteConfig, out: &mut Vec<ConfigError>) {
    let strs = |v: Option<&serde_norway::Value>| -> Vec<String> {
        v.and_then(|v| v.as_sequence()).map(|s| s.iter().filter_map(|x| x.as_str().map(String::from)).collect()).unwrap_or_default()
    };
    let Some(auth) = r.plugins.iter().find(|p| p.name == "auth") else { return };
    let mut used: Vec<String> =
        strs(auth.settings.get("methods")).into_iter().map(|m| m.split(':').next().unwrap_or_default().to_string()).collect();
    if auth.settings.get("anonymous").and_then(|a| a.as_bool()) == Some(true) {
        used.push("anonymous".into());
    }
    for p in r.plugins.iter().filter(|p| p.name == "policy") {
        let rules = p.settings.get("allow").and_then(|a| a.as_sequence()).cloned().unwrap_or_default();
        for (i, rule) in rules.iter().enumerate() {
            let wanted = strs(rule.get("methods"));
            if !wanted.is_empty() && !wanted.iter().any(|m| used.contains(m)) {
                out.push(
                    ConfigError::new(
                        &p.origin.file,
                        format!("{}.allow[{i}].methods", p.origin.path),
                        format!("this rule can never match: the route authenticates with {} only", used.join(", ")),
                    )
                    .hint("add the method to the route's `auth`, or remove it from the rule"),
                );
            }
        }
    }
}

/// Why an upstream target URL is refused.
#[derive(Debug, thiserror::Error)]
enum BadTarget {
    #[error("invalid target URL {0:?}: {1}")]
    Url(String, http::uri::InvalidUri),
    #[error("unsupported scheme {1:?} in {0:?}: targets are http:// or https://")]
    Scheme(String, String),
    #[error("target {0:?} has no scheme")]
    NoScheme(String),
    #[error("target {0:?} has a path; targets are base URLs, the request path is forwarded as matched")]
    Path(String),
    #[error("target {0:?} has no host")]
    NoHost(String),
}

fn target(t: &str) -> Result<Target, BadTarget> {
    let uri: http::Uri = t.parse().map_err(|e| BadTarget::Url(t.into(), e))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        Some(other) => return Err(BadTarget::Scheme(t.into(), other.into())),
        None => return Err(BadTarget::NoScheme(t.into())),
    };
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(BadTarget::Path(t.into()));
    }
    let authority = uri.authority().cloned().ok_or_else(|| BadTarget::NoHost(t.into()))?;
    if authority.port_u16().is_none() {
        // Pin the port so connection pools and health state key on one spelling.
        let port = if tls { 443 } else { 80 };
        let with_port: http::uri::Authority = format!("{}:{port}", authority.host()).parse().map_err(|e| BadTarget::Url(t.into(), e))?;
        return Ok(Target { authority: with_port, tls });
    }
    Ok(Target { authority, tls })
}

// Long on purpose: one route's every field in the order of docs/config.md (match, methods, hosts, headers, plugins),
// each check pushing its own error with its YAML path; the pieces share the route's origin and error list.
fn route(
    origin: Origin,
    raw: &RawRoute,
    upstreams: &BTreeMap<String, Arc<UpstreamConfig>>,
    defined: &HashMap<String, PathBuf>,
    defaults: &PluginDefaults,
    errors: &mut Vec<ConfigError>,
) -> Option<RouteConfig> {
    let before = errors.len();
    let file = origin.file.clone();
    let p = origin.path.clone();
    let err = |errors: &mut Vec<ConfigError>, sub: &str, msg: String, hint: &str| {
        let mut e = ConfigError::new(&file, format!("{p}.{sub}"), msg);
        if !hint.is_empty() {
            e = e.hint(hint);
        }
        errors.push(e);
    };
    if raw.name.is_empty() {
        err(errors, "name", "route name is empty".into(), "");
    }
    if let Some(upstream) = &raw.upstream
        && !upstreams.contains_key(upstream)
        && !defined.contains_key(upstream)
    {
        let known: Vec<&str> = defined.keys().map(String::as_str).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
        let hint = if known.is_empty() { "define it under `upstreams`".to_string() } else { format!("known: {}", known.join(", ")) };
        errors.push(ConfigError::new(&file, format!("{p}.upstream"), format!("unknown upstream {upstream:?}")).hint(hint));
    }

    let m = &raw.matcher;
    let path = match (&m.path, &m.path_prefix) {
        (Some(_), Some(_)) => {
            err(
                errors,
                "match",
                "both `path` and `path_prefix` are set".into(),
                "use one: `path` for exact paths and templates, `path_prefix` for subtrees",
            );
            None
        }
        (None, None) => {
            err(errors, "match", "no `path` or `path_prefix`".into(), "add `path_prefix: /` to match every path");
            None
        }
        (Some(path), None) => match check_path(path) {
            Ok(()) if path.contains('{') => Some(PathMatch::Template(path.clone())),
            Ok(()) => Some(PathMatch::Exact(path.clone())),
            Err(e) => {
                err(errors, "match.path", e.to_string(), "");
                None
            }
        },
        (None, Some(prefix)) => match check_path(prefix) {
            Ok(()) if prefix.contains('{') => {
                err(errors, "match.path_prefix", "templates are not allowed in a prefix".into(), "use `path` with `{*rest}` instead");
                None
            }
            Ok(()) => {
                let trimmed = prefix.trim_end_matches('/');
                Some(PathMatch::Prefix(if trimmed.is_empty() { "/".into() } else { trimmed.to_string() }))
            }
            Err(e) => {
                err(errors, "match.path_prefix", e.to_string(), "");
                None
            }
        },
    };

    let mut hosts = Vec::new();
    for (i, h) in m.hosts.iter().enumerate() {
        let lower = h.to_ascii_lowercase();
        let valid = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if let Some(suffix) = lower.strip_prefix("*.") {
            if valid(suffix) {
                hosts.push(HostMatch::Suffix(format!(".{suffix}")));
                continue;
            }
        } else if valid(&lower) {
            hosts.push(HostMatch::Exact(lower));
            continue;
        }
        err(
            errors,
            &format!("match.hosts[{i}]"),
            format!("invalid host {h:?}"),
            "write a name like api.example.com or *.example.com (no port)",
        );
    }

    let mut methods = Vec::new();
    for (i, name) in m.methods.iter().enumerate() {
        match Method::from_bytes(name.to_ascii_uppercase().as_bytes()) {
            Ok(method) => methods.push(method),
            Err(_) => err(errors, &format!("match.methods[{i}]"), format!("invalid method {name:?}"), "e.g. GET, POST"),
        }
    }
    let mut headers = Vec::new();
    for (name, value) in &m.headers {
        let Ok(hn) = HeaderName::from_bytes(name.as_bytes()) else {
            err(errors, &format!("match.headers.{name}"), format!("invalid header name {name:?}"), "");
            continue;
        };
        let value = if value == "*" {
            None
        } else {
            match HeaderValue::from_str(value) {
                Ok(v) => Some(v),
                Err(_) => {
                    err(errors, &format!("match.headers.{name}"), "invalid header value".into(), "");
                    continue;
                }
            }
        };
        headers.push(HeaderMatch { name: hn, value });
    }

    let own = plugin_specs(&file, &format!("{p}.plugins"), &raw.plugins, errors);
    let mut levels = Vec::new();
    if raw.inherit_plugins {
        levels.push(defaults.global.clone());
        levels.push(raw.upstream.as_ref().and_then(|u| defaults.by_upstream.get(u)).cloned().unwrap_or_default());
    }
    for (i, name) in raw.plugin_sets.iter().enumerate() {
        match defaults.sets.get(name) {
            Some(set) => levels.push(set.clone()),
            None => {
                let known: Vec<&str> = defaults.sets.keys().map(String::as_str).collect();
                let hint = if known.is_empty() {
                    "define it under the top-level `plugin_sets`".to_string()
                } else {
                    format!("known: {}", known.join(", "))
                };
                err(errors, &format!("plugin_sets[{i}]"), format!("unknown plugin set {name:?}"), &hint);
            }
        }
    }
    levels.push(own);
    let plugins = effective_plugins(levels);
    let strip = match (&raw.matcher.path_prefix, raw.strip_prefix) {
        (_, false) => 0,
        (Some(prefix), true) => prefix.trim_end_matches('/').len(),
        (None, true) => {
            err(errors, "strip_prefix", "strip_prefix needs `match.path_prefix`".into(), "remove it, or match with path_prefix");
            0
        }
    };
    let prefix = match &raw.upstream_path {
        Some(u) if !u.starts_with('/') || u.contains(['?', '#']) => {
            err(errors, "upstream_path", format!("{u:?} is not a path"), "a path starting with /, e.g. /api");
            String::new()
        }
        Some(u) => u.trim_end_matches('/').to_string(),
        None => String::new(),
    };
    let rewrite = (strip > 0 || !prefix.is_empty()).then_some(Rewrite { strip, prefix });

    (errors.len() == before).then(|| RouteConfig {
        name: raw.name.clone(),
        origin,
        hosts,
        path: path.expect("checked: no errors"),
        methods,
        headers,
        upstream: raw.upstream.clone(),
        retry_non_idempotent: raw.retry_non_idempotent,
        grpc_max_message: raw.grpc_max_message.0,
        plugins,
        rewrite,
    })
}

/// Plugin entries (`- name: {settings}`) read from `path` in `file`.
fn plugin_specs(
    file: &Path,
    path: &str,
    entries: &[BTreeMap<String, serde_norway::Value>],
    errors: &mut Vec<ConfigError>,
) -> Vec<PluginSpec> {
    let mut plugins = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let mut it = entry.iter();
        match (it.next(), it.next()) {
            (Some((name, settings)), None) => plugins.push(PluginSpec {
                name: name.clone(),
                settings: settings.clone(),
                origin: Origin { file: file.to_path_buf(), path: format!("{path}[{i}].{name}") },
            }),
            _ => errors.push(
                ConfigError::new(file, format!("{path}[{i}]"), "each plugin entry must be a map with exactly one key")
                    .hint("write `- request_size: {max_body: 8MiB}`"),
            ),
        }
    }
    plugins
}

/// Plugins defined above routes: the top-level defaults, each upstream's, and the named sets.
pub(crate) struct PluginDefaults {
    pub global: Vec<PluginSpec>,
    pub by_upstream: HashMap<String, Vec<PluginSpec>>,
    pub sets: BTreeMap<String, Vec<PluginSpec>>,
}

/// A route's plugins in effect: the top-level defaults, its upstream's, its sets (in order), then its own; a plugin
/// named at a more specific level replaces every one of that name from the levels above (Kong's precedence).
fn effective_plugins(levels: Vec<Vec<PluginSpec>>) -> Vec<PluginSpec> {
    let mut out = Vec::new();
    for (i, level) in levels.iter().enumerate() {
        for spec in level {
            if !levels[i + 1..].iter().flatten().any(|later| later.name == spec.name) {
                out.push(spec.clone());
            }
        }
    }
    out
}

/// Why a route path could never match (requests are matched in normal form).
#[derive(Debug, thiserror::Error)]
enum BadPath {
    #[error("path {0:?} must start with /")]
    NoSlash(String),
    #[error("path {0:?} contains //; requests are matched after collapsing //, so it could never match")]
    DoubleSlash(String),
    #[error("path {0:?} has a . or .. segment; requests are matched after resolving them")]
    DotSegment(String),
    #[error("path {0:?} must be written decoded, without query or fragment")]
    Encoded(String),
}

/// Route paths must already be in the normal form requests are matched in, or the route could never match.
fn check_path(path: &str) -> Result<(), BadPath> {
    if !path.starts_with('/') {
        return Err(BadPath::NoSlash(path.into()));
    }
    if path.contains("//") {
        return Err(BadPath::DoubleSlash(path.into()));
    }
    if path.split('/').any(|s| s == "." || s == "..") {
        return Err(BadPath::DotSegment(path.into()));
    }
    if path.contains('%') || path.contains('?') || path.contains('#') {
        return Err(BadPath::Encoded(path.into()));
    }
    Ok(())
}
