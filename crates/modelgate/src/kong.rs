//! `modelgate import kong`: a Kong declarative config (decK, `_format_version` "3.0"; 1.1 and 2.x read as Kong 3
//! migrates them) converted to a modelgate config, with a report of everything not converted (docs/migrate-from-kong.md).
//!
//! Kong's entities map to modelgate's as: services (with their upstreams and targets) → upstreams; routes → routes
//! (one per path); consumers → `identity.consumers` (ACL groups) and the key file (key-auth credentials, hashed);
//! plugins at every scope → the route's plugins, with Kong's precedence (route over service over global). What
//! modelgate cannot express the same way is left out and reported with its JSON path and the reason.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value, json};

/// One thing not converted: where in the Kong file, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Skipped {
    pub path: String,
    pub reason: String,
}

/// The result of a conversion.
pub struct Imported {
    /// The modelgate config (as a YAML-ready value).
    pub config: Value,
    /// Consumer → key-auth key values, to be stored hashed.
    pub keys: BTreeMap<String, Vec<String>>,
    pub report: Report,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    pub format_version: String,
    pub converted: BTreeMap<&'static str, usize>,
    pub not_converted: Vec<Skipped>,
    pub notes: Vec<String>,
    /// Plugins converted, by their JSON path (a global plugin applies to many routes and counts once).
    #[serde(skip)]
    plugins: std::collections::BTreeSet<String>,
}

impl Report {
    fn skip(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.not_converted.push(Skipped { path: path.into(), reason: reason.into() });
    }

    fn count(&mut self, what: &'static str) {
        *self.converted.entry(what).or_default() += 1;
    }

    fn plugin(&mut self, at: &str) {
        self.plugins.insert(at.to_string());
    }

    /// Each entry once (a global plugin is seen from every route), in first-seen order.
    fn finish(&mut self) {
        let mut seen = std::collections::HashSet::new();
        self.not_converted.retain(|s| seen.insert((s.path.clone(), s.reason.clone())));
        let mut seen = std::collections::HashSet::new();
        self.notes.retain(|n| seen.insert(n.clone()));
        if !self.plugins.is_empty() {
            self.converted.insert("plugins", self.plugins.len());
        }
    }
}

/// Resolves decK's `${{ env "DECK_NAME" }}` references from `env`; an unset variable is an error naming it.
pub fn resolve_env(text: &str, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${{") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find("}}").ok_or_else(|| anyhow::anyhow!("an unclosed ${{{{ … }}}} template"))? + start;
        let inner = rest[start + 3..end].trim();
        let name = inner
            .strip_prefix("env")
            .map(str::trim)
            .and_then(|n| n.strip_prefix('"').and_then(|n| n.strip_suffix('"')))
            .ok_or_else(|| anyhow::anyhow!("template ${{{{ {inner} }}}} is not supported: only ${{{{ env \"DECK_NAME\" }}}}"))?;
        anyhow::ensure!(name.starts_with("DECK_"), "${{{{ env \"{name}\" }}}}: decK reads only variables named DECK_*");
        let value = env(name).ok_or_else(|| anyhow::anyhow!("${{{{ env \"{name}\" }}}}: {name} is not set; set it or edit the file"))?;
        out.push_str(&value);
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Converts a Kong declarative config (already parsed).
pub fn convert(kong: &Value) -> anyhow::Result<Imported> {
    let mut report = Report::default();
    let version = match &kong["_format_version"] {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => anyhow::bail!("not a Kong declarative config: `_format_version` is missing"),
    };
    let legacy = match version.as_str() {
        "3.0" => false,
        "1.1" | "2.1" | "2.0" => {
            report.notes.push(format!(
                "format {version} read as Kong 3.0 migrates it: a path with regex characters is a regex (Kong 3 writes it with a `~` prefix)"
            ));
            true
        }
        other => anyhow::bail!("unsupported `_format_version` {other:?}: 3.0, 2.1 and 1.1 are read"),
    };
    report.format_version = version;
    report.notes.push("Kong path prefixes match any string prefix (/digits matches /digitsX); modelgate's match whole segments".into());
    for key in kong.as_object().into_iter().flatten().map(|(k, _)| k) {
        if !["_format_version", "_transform", "_info", "_workspace", "services", "routes", "upstreams", "consumers", "plugins"]
            .contains(&key.as_str())
        {
            report.skip(format!("$.{key}"), format!("{key} entities are not converted"));
        }
    }

    let kong_upstreams: BTreeMap<String, (usize, &Value)> =
        list(&kong["upstreams"]).iter().enumerate().filter_map(|(i, u)| u["name"].as_str().map(|n| (n.to_string(), (i, u)))).collect();
    let globals = plugins_of(&kong["plugins"], "$.plugins", &mut report);
    let mut upstreams = Map::new();
    let mut routes = Vec::new();
    let mut needs_redis: Option<Value> = None;
    let mut key_headers: Vec<String> = Vec::new();

    // Routes at the top level name their service; collect them with the nested ones.
    let mut service_routes: BTreeMap<String, Vec<(String, &Value)>> = BTreeMap::new();
    for (i, r) in list(&kong["routes"]).iter().enumerate() {
        match r["service"].as_str().or(r["service"]["name"].as_str()) {
            Some(s) => service_routes.entry(s.to_string()).or_default().push((format!("$.routes[{i}]"), r)),
            None => report.skip(format!("$.routes[{i}]"), "a route without a service has nowhere to go"),
        }
    }
    for (si, s) in list(&kong["services"]).iter().enumerate() {
        let at = format!("$.services[{si}]");
        let Some(name) = s["name"].as_str() else {
            report.skip(&at, "a service without a name");
            continue;
        };
        let Some((upstream, service_path)) = service_upstream(s, &at, &kong_upstreams, &mut report) else { continue };
        upstreams.insert(name.to_string(), upstream);
        report.count("services");
        let service_plugins = plugins_of(&s["plugins"], &format!("{at}.plugins"), &mut report);
        let nested = list(&s["routes"]).iter().enumerate().map(|(ri, r)| (format!("{at}.routes[{ri}]"), r));
        let named = service_routes.remove(name).unwrap_or_default();
        for (rat, r) in nested.chain(named) {
            let route_plugins = plugins_of(&r["plugins"], &format!("{rat}.plugins"), &mut report);
            // Kong's precedence: the route's plugin, else the service's, else the global one (by plugin name).
            let mut effective: BTreeMap<String, (String, &Value)> = BTreeMap::new();
            for (n, p) in globals.iter().chain(&service_plugins).chain(&route_plugins) {
                effective.insert(n.0.clone(), (p.clone(), n.1));
            }
            let plugins = route_plugins_of(&effective, &mut report, &mut needs_redis, &mut key_headers);
            for route in convert_route(r, &rat, (name, service_path.as_deref()), legacy, &plugins, &mut report) {
                routes.push(route);
            }
        }
    }
    for (s, rs) in service_routes {
        for (rat, _) in rs {
            report.skip(rat, format!("its service {s:?} is not in the file"));
        }
    }

    // Consumers: groups from ACLs, key-auth keys for the key file.
    let mut consumers = Map::new();
    let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (ci, c) in list(&kong["consumers"]).iter().enumerate() {
        let at = format!("$.consumers[{ci}]");
        let Some(name) = c["username"].as_str().or(c["custom_id"].as_str()) else {
            report.skip(&at, "a consumer without username or custom_id");
            continue;
        };
        report.count("consumers");
        let groups: Vec<Value> = list(&c["acls"]).iter().filter_map(|a| a["group"].as_str().map(|g| json!(g))).collect();
        if !groups.is_empty() {
            consumers.insert(name.to_string(), json!({ "groups": groups }));
        }
        for (ki, k) in list(&c["keyauth_credentials"]).iter().enumerate() {
            match k["key"].as_str() {
                Some(key) if (modelgate_auth::identity::apikey::MIN_IMPORTED..=512).contains(&key.len()) => {
                    keys.entry(name.to_string()).or_default().push(key.to_string());
                    report.count("keyauth_credentials");
                }
                Some(_) => report.skip(
                    format!("{at}.keyauth_credentials[{ki}]"),
                    format!(
                        "a key shorter than {} characters is too weak to import; issue a new one (modelgate keys create)",
                        modelgate_auth::identity::apikey::MIN_IMPORTED
                    ),
                ),
                None => report.skip(format!("{at}.keyauth_credentials[{ki}]"), "no key value (Kong generates one); issue a new one"),
            }
        }
        for (ji, _) in list(&c["jwt_secrets"]).iter().enumerate() {
            report.skip(
                format!("{at}.jwt_secrets[{ji}]"),
                "Kong's jwt credentials (a secret or RSA key per consumer, matched on `iss`, no audience check) are not converted: modelgate checks every token's audience, so declare the issuer under identity.issuers with its audiences and JWKS (or hs_secret: ${ENV} for HS256)",
            );
        }
        for (pi, p) in list(&c["plugins"]).iter().enumerate() {
            report.skip(
                format!("{at}.plugins[{pi}]"),
                format!("consumer-scoped plugin {:?}: use a rate_limit tier (consumers/groups) by hand", p["name"].as_str().unwrap_or("?")),
            );
        }
    }

    let mut config = Map::new();
    config.insert("listen".into(), json!("0.0.0.0:8080"));
    config.insert("admin".into(), json!({ "listen": "127.0.0.1:8081" }));
    let mut identity = Map::new();
    if !keys.is_empty() || !key_headers.is_empty() {
        let mut headers = key_headers.clone();
        if headers.is_empty() {
            headers.push("apikey".into());
        }
        identity.insert("api_keys".into(), json!({ "file": "keys.yaml", "header": headers }));
    }
    if !consumers.is_empty() {
        identity.insert("consumers".into(), Value::Object(consumers));
    }
    if !identity.is_empty() {
        config.insert("identity".into(), Value::Object(identity));
    }
    if let Some(redis) = needs_redis {
        config.insert("redis".into(), redis);
    }
    config.insert("upstreams".into(), Value::Object(upstreams));
    config.insert("routes".into(), Value::Array(routes));
    report.finish();
    Ok(Imported { config: Value::Object(config), keys, report })
}

fn list(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// A scope's plugins by name (disabled ones reported and left out), with their JSON path.
fn plugins_of<'a>(v: &'a Value, at: &str, report: &mut Report) -> Vec<((String, &'a Value), String)> {
    let mut out = Vec::new();
    for (i, p) in list(v).iter().enumerate() {
        let here = format!("{at}[{i}]");
        let Some(name) = p["name"].as_str() else {
            report.skip(here, "a plugin without a name");
            continue;
        };
        if p["enabled"] == json!(false) {
            report.notes.push(format!("{here}: plugin {name} is disabled in Kong; left out"));
            continue;
        }
        if !p["consumer"].is_null() {
            report.skip(here, format!("plugin {name} scoped to a consumer: use a rate_limit tier (consumers/groups) by hand"));
            continue;
        }
        out.push(((name.to_string(), p), here));
    }
    out
}

/// A service's upstream: its `url` (or protocol/host/port), or the Kong upstream its host names; and the service's
/// path other than `/`, which its routes put before the forwarded path (`upstream_path`).
fn service_upstream(
    s: &Value,
    at: &str,
    kong_upstreams: &BTreeMap<String, (usize, &Value)>,
    report: &mut Report,
) -> Option<(Value, Option<String>)> {
    let (protocol, host, port, path) = match s["url"].as_str() {
        Some(url) => {
            let Ok(uri) = url.parse::<http::Uri>() else {
                report.skip(format!("{at}.url"), format!("{url:?} is not a URL"));
                return None;
            };
            let protocol = uri.scheme_str().unwrap_or("http").to_string();
            let default = if protocol == "https" { 443 } else { 80 };
            (protocol, uri.host().unwrap_or_default().to_string(), uri.port_u16().unwrap_or(default), uri.path().to_string())
        }
        None => {
            let protocol = s["protocol"].as_str().unwrap_or("http").to_string();
            let default = if protocol == "https" { 443 } else { 80 };
            let port = s["port"].as_u64().map_or(default, |p| p as u16);
            (protocol, s["host"].as_str().unwrap_or_default().to_string(), port, s["path"].as_str().unwrap_or("/").to_string())
        }
    };
    if !["http", "https"].contains(&protocol.as_str()) {
        report.skip(format!("{at}.protocol"), format!("protocol {protocol:?}: only http and https services are converted"));
        return None;
    }
    let mut upstream = Map::new();
    let service_path = (!path.is_empty() && path != "/").then_some(path);
    let mut targets = Vec::new();
    if let Some((ui, u)) = kong_upstreams.get(&host) {
        let uat = format!("$.upstreams[{ui}]");
        let weights: Vec<u64> = list(&u["targets"]).iter().map(|t| t["weight"].as_u64().unwrap_or(100)).collect();
        for (ti, t) in list(&u["targets"]).iter().enumerate() {
            match (t["target"].as_str(), weights[ti]) {
                (_, 0) => report.notes.push(format!("{uat}.targets[{ti}]: weight 0 (disabled in Kong); left out")),
                (Some(target), _) => {
                    let target = if target.contains(':') { target.to_string() } else { format!("{target}:{port}") };
                    targets.push(json!(format!("{protocol}://{target}")));
                }
                (None, _) => report.skip(format!("{uat}.targets[{ti}]"), "a target without an address"),
            }
        }
        if weights.iter().filter(|w| **w > 0).collect::<std::collections::BTreeSet<_>>().len() > 1 {
            report.skip(format!("{uat}.targets"), "unequal target weights: modelgate balances targets equally");
        }
        match u["algorithm"].as_str() {
            Some("least-connections") => {
                upstream.insert("balance".into(), json!("least_outstanding"));
            }
            Some("round-robin") | None => {}
            Some(other) => {
                report.skip(format!("{uat}.algorithm"), format!("algorithm {other:?}: modelgate balances round robin or least outstanding"))
            }
        }
        health_checks(&u["healthchecks"], &format!("{uat}.healthchecks"), &mut upstream, report);
        report.count("upstreams");
    } else {
        targets.push(json!(format!("{protocol}://{host}:{port}")));
    }
    if targets.is_empty() {
        report.skip(at, "no usable target");
        return None;
    }
    upstream.insert("targets".into(), Value::Array(targets));
    let ms = |v: &Value| v.as_u64().map(|ms| format!("{ms}ms"));
    let mut timeouts = Map::new();
    if let Some(c) = ms(&s["connect_timeout"]) {
        timeouts.insert("connect".into(), json!(c));
    }
    if let Some(r) = ms(&s["read_timeout"]) {
        timeouts.insert("response".into(), json!(r));
    }
    if !timeouts.is_empty() {
        upstream.insert("timeouts".into(), Value::Object(timeouts));
    }
    if let Some(r) = s["retries"].as_u64() {
        upstream.insert("retries".into(), json!({ "attempts": r.min(10) }));
    }
    Some((Value::Object(upstream), service_path))
}

fn health_checks(h: &Value, at: &str, upstream: &mut Map<String, Value>, report: &mut Report) {
    let active = &h["active"];
    let interval = active["healthy"]["interval"].as_u64().filter(|i| *i > 0);
    if let (Some(path), Some(interval)) = (active["http_path"].as_str(), interval) {
        upstream.insert("health".into(), json!({ "path": path, "interval": format!("{interval}s") }));
    } else if active.is_object() && interval.is_some() {
        upstream.insert("health".into(), json!({ "path": "/", "interval": format!("{}s", interval.unwrap_or(5)) }));
    }
    let failures = h["passive"]["unhealthy"]["http_failures"].as_u64().filter(|f| *f > 0);
    if let Some(f) = failures {
        upstream.insert("passive_health".into(), json!({ "consecutive_failures": f }));
    }
    if active["type"].as_str().is_some_and(|t| t != "http" && t != "https") {
        report.skip(format!("{at}.active.type"), "only HTTP health checks are converted");
    }
}

/// The modelgate plugins of a route from its effective Kong plugins.
fn route_plugins_of(
    effective: &BTreeMap<String, (String, &Value)>,
    report: &mut Report,
    redis: &mut Option<Value>,
    key_headers: &mut Vec<String>,
) -> Vec<Value> {
    let mut out = Vec::new();
    let mut methods = Vec::new();
    let mut auth = Map::new();
    for (name, (at, p)) in effective {
        let config = &p["config"];
        match name.as_str() {
            "key-auth" => {
                methods.push(json!("api_key"));
                for k in list(&config["key_names"]).iter().filter_map(Value::as_str) {
                    if !key_headers.iter().any(|h| h == k) {
                        key_headers.push(k.to_string());
                    }
                }
                if config["key_names"].is_null() && !key_headers.iter().any(|h| h == "apikey") {
                    key_headers.push("apikey".into());
                }
                if config["hide_credentials"] != json!(true) {
                    auth.insert("forward_credentials".into(), json!(true));
                }
                if config["key_in_query"] == json!(true) || config["key_in_body"] == json!(true) {
                    report.notes.push(format!("{at}: keys in the query string or body are not read; clients send the header"));
                }
                if config["anonymous"].as_str().is_some_and(|a| !a.is_empty()) {
                    auth.insert("anonymous".into(), json!(true));
                }
                report.plugin(at);
            }
            "jwt" => report.skip(
                at.clone(),
                "jwt: Kong verifies per-consumer secrets matched on `iss`; declare the IdP under identity.issuers (JWKS) and add jwt to the route's auth methods",
            ),
            "acl" => {
                let allow: Vec<Value> = list(&config["allow"]).iter().chain(list(&config["whitelist"])).cloned().collect();
                let deny = list(&config["deny"]).iter().chain(list(&config["blacklist"])).count();
                if deny > 0 {
                    report.skip(format!("{at}.config.deny"), "deny groups: modelgate's policy allows by rule and denies the rest; list the allowed groups instead");
                }
                if !allow.is_empty() {
                    out.push(json!({ "policy": { "allow": [ { "name": "acl", "groups": allow } ] } }));
                    report.plugin(at);
                }
            }
            "rate-limiting" => {
                if let Some(limit) = rate_limit(config, at, report, redis) {
                    out.push(limit);
                    report.plugin(at);
                }
            }
            "request-size-limiting" => {
                let size = config["allowed_payload_size"].as_u64().unwrap_or(128);
                let unit = match config["size_unit"].as_str().unwrap_or("megabytes") {
                    "bytes" => 1,
                    "kilobytes" => 1024,
                    _ => 1024 * 1024,
                };
                out.push(json!({ "request_size": { "max_body": size * unit } }));
                report.plugin(at);
            }
            "prometheus" => {
                report.notes.push(format!("{at}: prometheus: built in (GET /metrics on the admin listener, or admin.status_listen)"));
                report.plugin(at);
            }
            "cors" => report.skip(at.clone(), "cors: not converted (modelgate serves API clients; answer preflights at your edge or add headers with the headers plugin)"),
            other => report.skip(at.clone(), format!("plugin {other:?} has no modelgate equivalent converted")),
        }
    }
    if !methods.is_empty() {
        auth.insert("methods".into(), Value::Array(methods));
        out.insert(0, json!({ "auth": auth }));
    }
    out
}

fn rate_limit(config: &Value, at: &str, report: &mut Report, redis: &mut Option<Value>) -> Option<Value> {
    let by = match config["limit_by"].as_str().unwrap_or("consumer") {
        "consumer" | "credential" => json!(["consumer"]),
        "ip" => json!(["client_ip"]),
        "header" => json!([format!("header:{}", config["header_name"].as_str().unwrap_or("x-consumer"))]),
        "service" | "path" => json!(["route"]),
        other => {
            report.skip(format!("{at}.config.limit_by"), format!("limit_by {other:?} is not converted"));
            return None;
        }
    };
    let mut limits = Vec::new();
    for (unit, per) in [("second", "1s"), ("minute", "1m"), ("hour", "1h"), ("day", "1d")] {
        if let Some(n) = config[unit].as_u64() {
            limits.push(json!({ "limit": n, "per": per, "by": by }));
        }
    }
    for unit in ["month", "year"] {
        if !config[unit].is_null() {
            report.skip(format!("{at}.config.{unit}"), format!("a per-{unit} window: modelgate's longest window is a day"));
        }
    }
    if limits.is_empty() {
        report.skip(at, "rate-limiting without a second, minute, hour or day limit");
        return None;
    }
    let mut plugin = Map::new();
    plugin.insert("limits".into(), Value::Array(limits));
    match config["policy"].as_str().unwrap_or("local") {
        "local" => {}
        "redis" => {
            // Kong 3.x writes `redis: {host, port, …}`; older configs `redis_host`, `redis_port`, ….
            let get = |k: &str| {
                config["redis"][k].clone().as_str().map(String::from).or_else(|| config[format!("redis_{k}")].as_str().map(String::from))
            };
            let port = config["redis"]["port"].as_u64().or(config["redis_port"].as_u64()).unwrap_or(6379);
            let db = config["redis"]["database"].as_u64().or(config["redis_database"].as_u64()).unwrap_or(0);
            let host = get("host").unwrap_or_else(|| "127.0.0.1".into());
            let tls = config["redis"]["ssl"] == json!(true) || config["redis_ssl"] == json!(true);
            let auth = if get("password").is_some() {
                report.notes.push(format!("{at}: the Redis password is not written: the config reads it from ${{REDIS_PASSWORD}}"));
                format!("{}:${{REDIS_PASSWORD}}@", get("username").unwrap_or_default())
            } else {
                String::new()
            };
            let url = format!("{}://{auth}{host}:{port}/{db}", if tls { "rediss" } else { "redis" });
            if redis.as_ref().is_some_and(|r| r["url"] != json!(url)) {
                report.skip(format!("{at}.config.redis"), "several Redis servers: modelgate shares one (the first is used)");
            } else {
                *redis = Some(json!({ "url": url }));
            }
            plugin.insert("store".into(), json!("redis"));
        }
        other => {
            report.skip(format!("{at}.config.policy"), format!("policy {other:?}: counted locally (use policy redis for a shared count)"))
        }
    }
    if config["hide_client_headers"] == json!(true) {
        plugin.insert("headers".into(), json!(false));
    }
    report.notes.push(format!("{at}: rate limit headers are the IETF RateLimit and RateLimit-Policy, not X-RateLimit-*"));
    Some(json!({ "rate_limit": plugin }))
}

/// One modelgate route per Kong path (a route without paths matches every path: `/`).
fn convert_route(
    r: &Value,
    at: &str,
    (upstream, service_path): (&str, Option<&str>),
    legacy: bool,
    plugins: &[Value],
    report: &mut Report,
) -> Vec<Value> {
    let base = r["name"].as_str().map(String::from).unwrap_or_else(|| format!("{upstream}-route"));
    let mut matcher = Map::new();
    let methods: Vec<Value> = list(&r["methods"]).to_vec();
    if !methods.is_empty() {
        matcher.insert("methods".into(), Value::Array(methods));
    }
    let hosts: Vec<Value> = list(&r["hosts"]).to_vec();
    if !hosts.is_empty() {
        matcher.insert("hosts".into(), Value::Array(hosts));
    }
    let mut headers = Map::new();
    for (h, values) in r["headers"].as_object().into_iter().flatten() {
        match list(values) {
            [one] => {
                headers.insert(h.clone(), one.clone());
            }
            _ => report.skip(format!("{at}.headers.{h}"), "several accepted values: modelgate matches one value per header"),
        }
    }
    if !headers.is_empty() {
        matcher.insert("headers".into(), Value::Object(headers));
    }
    if r["preserve_host"] == json!(true) {
        report.skip(format!("{at}.preserve_host"), "preserve_host: the upstream receives its own host name");
    }
    for p in ["protocols", "snis", "sources", "destinations"] {
        let http_only = p == "protocols" && list(&r[p]).iter().all(|v| v == "http" || v == "https");
        if !r[p].is_null() && !http_only {
            report.skip(format!("{at}.{p}"), format!("{p} are not converted"));
        }
    }
    let mut paths: Vec<(usize, String)> =
        list(&r["paths"]).iter().enumerate().filter_map(|(i, p)| p.as_str().map(|p| (i, p.to_string()))).collect();
    if paths.is_empty() {
        paths.push((0, "/".into()));
    }
    let mut out = Vec::new();
    for (i, p) in paths {
        let regex = p.starts_with('~') || (legacy && p.contains(['^', '$', '(', '[', '*', '+', '?', '\\']));
        if regex {
            report.skip(
                format!("{at}.paths[{i}]"),
                format!("regex path {p:?}: write it as a template (/v2/models/{{model}}/infer) or a prefix"),
            );
            continue;
        }
        // Kong's default strip_path is true: the matched prefix is cut, the service path put before the rest.
        let strip = r["strip_path"] != json!(false) && p != "/";
        let mut m = matcher.clone();
        let prefix = if p == "/" { p.clone() } else { p.trim_end_matches('/').to_string() };
        m.insert("path_prefix".into(), json!(prefix));
        let name = if out.is_empty() { base.clone() } else { format!("{base}-{}", out.len() + 1) };
        let mut route = json!({ "name": name, "match": m, "upstream": upstream });
        if strip {
            route["strip_prefix"] = json!(true);
        }
        if let Some(path) = service_path {
            route["upstream_path"] = json!(path);
        }
        if !plugins.is_empty() {
            route["plugins"] = Value::Array(plugins.to_vec());
        }
        out.push(route);
        report.count("routes");
    }
    out
}

/// `modelgate import kong FILE --output DIR`: writes `DIR/gateway.yaml`, `DIR/keys.yaml` (hashes) and
/// `DIR/import-report.json`; checks the config loads. Returns the report.
pub fn import(file: &Path, output: &Path) -> anyhow::Result<Report> {
    use anyhow::Context as _;
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    #[allow(clippy::disallowed_methods)] // decK's ${{ env "DECK_…" }} templating reads the importing user's environment
    let text = resolve_env(&text, &|name| std::env::var(name).ok())?;
    let kong: Value = serde_norway::from_str(&text).with_context(|| format!("{} is not YAML or JSON", file.display()))?;
    let imported = convert(&kong)?;
    std::fs::create_dir_all(output).with_context(|| format!("cannot create {}", output.display()))?;
    let keys_file = output.join("keys.yaml");
    let _ = std::fs::remove_file(&keys_file);
    let consumers: Vec<(&str, &[String])> = imported.keys.iter().map(|(c, k)| (c.as_str(), k.as_slice())).collect();
    if !consumers.is_empty() {
        modelgate_auth::identity::apikey::import_consumers_in(&keys_file, &consumers)?;
    }
    if imported.config["identity"]["api_keys"].is_object() && !keys_file.exists() {
        std::fs::write(&keys_file, "keys: []\n")?;
    }
    let yaml = serde_norway::to_string(&imported.config)?;
    let header = format!(
        "# Imported from {} by `modelgate import kong` (format {}); what was not converted is in import-report.json.\n",
        file.display(),
        imported.report.format_version
    );
    let config_file = output.join("gateway.yaml");
    std::fs::write(&config_file, header + &yaml)?;
    std::fs::write(output.join("import-report.json"), serde_json::to_string_pretty(&imported.report)? + "\n")?;
    modelgate_config::load(&modelgate_config::Source::File(config_file.clone()), &modelgate_config::Vars::default())
        .map_err(|e| anyhow::anyhow!("the imported config does not load (an importer bug; please report it):\n{e}"))?;
    Ok(imported.report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deck_env_templates_resolve_or_are_refused() {
        let env = |n: &str| (n == "DECK_HOST").then(|| "10.0.0.5".to_string());
        assert_eq!(resolve_env(r#"url: http://${{ env "DECK_HOST" }}:8000"#, &env).unwrap(), "url: http://10.0.0.5:8000");
        assert!(resolve_env(r#"${{ env "DECK_MISSING" }}"#, &env).unwrap_err().to_string().contains("DECK_MISSING is not set"));
        assert!(resolve_env(r#"${{ env "HOME" }}"#, &env).unwrap_err().to_string().contains("only variables named DECK_"));
    }

    #[test]
    fn legacy_formats_acl_deny_and_weights_are_reported() {
        let kong: Value = serde_norway::from_str(
            r#"_format_version: "1.1"
services:
  - name: s
    host: pool
    routes: [ { name: r, paths: [/v2/models, "/v2/models/(?<m>[a-z]+)/infer"], strip_path: false } ]
    plugins: [ { name: acl, config: { whitelist: [a], blacklist: [b] } } ]
upstreams:
  - name: pool
    targets: [ { target: "10.0.0.1:8000", weight: 100 }, { target: "10.0.0.2:8000", weight: 50 }, { target: "10.0.0.3", weight: 0 } ]
"#,
        )
        .unwrap();
        let out = convert(&kong).unwrap();
        let skipped: Vec<&str> = out.report.not_converted.iter().map(|s| s.path.as_str()).collect();
        assert!(skipped.contains(&"$.services[0].routes[0].paths[1]"), "a 1.1 regex path without `~`: {skipped:?}");
        assert!(skipped.contains(&"$.services[0].plugins[0].config.deny"), "{skipped:?}");
        assert!(skipped.contains(&"$.upstreams[0].targets"), "unequal weights: {skipped:?}");
        assert_eq!(out.config["upstreams"]["s"]["targets"], json!(["http://10.0.0.1:8000", "http://10.0.0.2:8000"]));
        assert_eq!(out.config["routes"][0]["plugins"][0]["policy"]["allow"][0]["groups"], json!(["a"]));
        assert!(out.report.notes.iter().any(|n| n.contains("format 1.1")), "{:?}", out.report.notes);
        assert!(convert(&json!({ "services": [] })).is_err(), "a file without _format_version");
    }

    #[test]
    fn sizes_and_windows() {
        let kong: Value = serde_norway::from_str(
            r#"_format_version: "3.0"
services:
  - name: s
    url: http://10.0.0.5:8000
    routes: [ { name: r, paths: [/v2], strip_path: false } ]
    plugins:
      - { name: request-size-limiting, config: { allowed_payload_size: 2 } }
      - { name: rate-limiting, config: { second: 5, hour: 1000, month: 9, policy: redis, redis: { host: redis.svc, port: 6380, password: s3cret } } }
"#,
        )
        .unwrap();
        let out = convert(&kong).unwrap();
        let text = serde_json::to_string(&out.config).unwrap();
        assert!(text.contains(r#""max_body":2097152"#), "{text}");
        assert!(text.contains(r#"{"by":["consumer"],"limit":5,"per":"1s"}"#) && text.contains(r#""per":"1h""#), "{text}");
        assert_eq!(out.config["redis"]["url"], "redis://:${REDIS_PASSWORD}@redis.svc:6380/0");
        assert!(!text.contains("s3cret"), "a secret was written: {text}");
        assert!(out.report.not_converted.iter().any(|s| s.path.ends_with(".config.month")), "{:?}", out.report.not_converted);
    }
}
