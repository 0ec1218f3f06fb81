//! The route table, compiled once per config.
//!
//! Precedence (documented in docs/routing.md), first match wins:
//! 1. host: exact host, then wildcard hosts from the longest suffix, then routes without hosts;
//! 2. path, within a host group: exact path, then templates (matchit: static segments before parameters before
//!    catch-alls), then prefixes from the longest;
//! 3. among routes with the same host and path: routes with header conditions, then with method conditions, then
//!    the rest, each group in config order.
//!
//! A candidate whose path matched but whose method did not is remembered: if nothing matches, the answer is 405
//! with `Allow`, else 404.

/// Route tables are read on every request: a fast non-cryptographic hash (keys come from our own config).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::FixedState>;

use http::{HeaderMap, HeaderValue, Method};
use modelgate_config::ConfigError;
use modelgate_config::model::{HostMatch, PathMatch, RouteConfig};

use modelgate_pipeline::GatewayError;

/// Compiled routes.
#[derive(Default)]
pub struct Router {
    exact_hosts: HashMap<String, PathTable>,
    /// (suffix like `.example.com`, table), longest suffix first.
    wildcard_hosts: Vec<(String, PathTable)>,
    any_host: PathTable,
    /// Per route: its method and header conditions.
    conditions: Vec<Conditions>,
}

#[derive(Default)]
struct PathTable {
    exact: HashMap<String, Vec<usize>>,
    templates: matchit::Router<Vec<usize>>,
    template_paths: Vec<String>,
    prefixes: HashMap<String, Vec<usize>>,
    has_root_prefix: bool,
}

struct Conditions {
    methods: Vec<Method>,
    headers: Vec<(http::HeaderName, Option<HeaderValue>)>,
}

// === impl Router ===

impl Router {
    pub fn build(routes: &[RouteConfig]) -> Result<Router, Vec<ConfigError>> {
        let mut router = Router::default();
        let mut errors = Vec::new();
        // Specificity rank within the same host+path: header conditions first, then method conditions.
        let mut order: Vec<usize> = (0..routes.len()).collect();
        order.sort_by_key(|&i| {
            let r = &routes[i];
            (r.headers.is_empty(), r.methods.is_empty(), i)
        });
        let mut template_groups: Vec<(Option<HostKey>, String, Vec<usize>)> = Vec::new();
        for &i in &order {
            let r = &routes[i];
            let keys: Vec<Option<HostKey>> =
                if r.hosts.is_empty() { vec![None] } else { r.hosts.iter().map(|h| Some(HostKey::from(h))).collect() };
            for key in keys {
                let table = router.table_mut(key.as_ref());
                match &r.path {
                    PathMatch::Exact(p) => table.exact.entry(p.clone()).or_default().push(i),
                    PathMatch::Prefix(p) => {
                        table.has_root_prefix |= p == "/";
                        table.prefixes.entry(p.clone()).or_default().push(i)
                    }
                    PathMatch::Template(p) => match template_groups.iter_mut().find(|(k, tp, _)| *k == key && tp == p) {
                        Some((_, _, ids)) => ids.push(i),
                        None => template_groups.push((key, p.clone(), vec![i])),
                    },
                }
            }
        }
        for (key, path, ids) in template_groups {
            let first = ids[0];
            let table = router.table_mut(key.as_ref());
            if let Err(e) = table.templates.insert(path.clone(), ids) {
                let r = &routes[first];
                errors.push(
                    ConfigError::new(
                        &r.origin.file,
                        format!("{}.match.path", r.origin.path),
                        format!("template {path:?} cannot be added: {e}"),
                    )
                    .hint("two templates differ only in parameter names, or a parameter is malformed; write {name} or {*rest}"),
                );
            }
            table.template_paths.push(path);
        }
        router.wildcard_hosts.sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
        router.conditions = routes
            .iter()
            .map(|r| Conditions {
                methods: r.methods.clone(),
                headers: r.headers.iter().map(|h| (h.name.clone(), h.value.clone())).collect(),
            })
            .collect();
        if errors.is_empty() { Ok(router) } else { Err(errors) }
    }

    fn table_mut(&mut self, key: Option<&HostKey>) -> &mut PathTable {
        match key {
            None => &mut self.any_host,
            Some(HostKey::Exact(h)) => self.exact_hosts.entry(h.clone()).or_default(),
            Some(HostKey::Suffix(s)) => {
                if let Some(pos) = self.wildcard_hosts.iter().position(|(k, _)| k == s) {
                    &mut self.wildcard_hosts[pos].1
                } else {
                    self.wildcard_hosts.push((s.clone(), PathTable::default()));
                    &mut self.wildcard_hosts.last_mut().expect("just pushed").1
                }
            }
        }
    }

    /// Finds the route for a request. `host` is lowercase without port; `path` is normalized.
    pub fn find(&self, host: &str, path: &str, method: &Method, headers: &HeaderMap) -> Result<usize, GatewayError> {
        let mut allowed: Vec<Method> = Vec::new();
        let mut path_matched = false;
        let tables = self
            .exact_hosts
            .get(host)
            .into_iter()
            .chain(self.wildcard_hosts.iter().filter(|(s, _)| host.ends_with(s.as_str()) && host.len() > s.len()).map(|(_, t)| t))
            .chain(std::iter::once(&self.any_host));
        for table in tables {
            let mut check = |ids: &[usize]| -> Option<usize> {
                for &i in ids {
                    let c = &self.conditions[i];
                    if !c.headers.iter().all(|(n, v)| match (headers.get(n), v) {
                        (Some(_), None) => true,
                        (Some(got), Some(want)) => got == want,
                        (None, _) => false,
                    }) {
                        continue;
                    }
                    path_matched = true;
                    if c.methods.is_empty() || c.methods.contains(method) || (method == Method::HEAD && c.methods.contains(&Method::GET)) {
                        return Some(i);
                    }
                    allowed.extend(c.methods.iter().cloned());
                }
                None
            };
            if let Some(ids) = table.exact.get(path)
                && let Some(i) = check(ids)
            {
                return Ok(i);
            }
            if !table.template_paths.is_empty()
                && let Ok(m) = table.templates.at(path)
                && let Some(i) = check(m.value)
            {
                return Ok(i);
            }
            if !table.prefixes.is_empty() {
                let mut end = path.len();
                loop {
                    let candidate = &path[..end];
                    if let Some(ids) = table.prefixes.get(candidate.trim_end_matches('/')).filter(|_| !candidate.is_empty())
                        && let Some(i) = check(ids)
                    {
                        return Ok(i);
                    }
                    match path[..end].rfind('/') {
                        Some(0) | None => break,
                        Some(pos) => end = pos,
                    }
                }
                if table.has_root_prefix
                    && let Some(i) = check(&table.prefixes["/"])
                {
                    return Ok(i);
                }
            }
        }
        if path_matched && !allowed.is_empty() {
            allowed.sort_by(|a, b| a.as_str().cmp(b.as_str()));
            allowed.dedup();
            let list = allowed.iter().map(Method::as_str).collect::<Vec<_>>().join(", ");
            let allow = HeaderValue::from_str(&list).unwrap_or(HeaderValue::from_static(""));
            return Err(GatewayError::MethodNotAllowed { allow });
        }
        Err(GatewayError::NoRoute)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostKey {
    Exact(String),
    Suffix(String),
}

impl From<&HostMatch> for HostKey {
    fn from(h: &HostMatch) -> Self {
        match h {
            HostMatch::Exact(s) => HostKey::Exact(s.clone()),
            HostMatch::Suffix(s) => HostKey::Suffix(s.clone()),
        }
    }
}

/// A route's match in words: `POST /v2/models/digits/… on api.example.com with x-team: a`.
pub fn describe_match(r: &modelgate_config::model::RouteConfig) -> String {
    use modelgate_config::model::PathMatch;
    let methods: Vec<&str> = r.methods.iter().map(http::Method::as_str).collect();
    let mut out = if methods.is_empty() { "any method".to_string() } else { methods.join("|") };
    match &r.path {
        PathMatch::Exact(p) => out.push_str(&format!(" {p}")),
        PathMatch::Template(p) => out.push_str(&format!(" {p} (template)")),
        PathMatch::Prefix(p) => out.push_str(&format!(" {}/…", p.trim_end_matches('/'))),
    }
    if !r.hosts.is_empty() {
        let hosts: Vec<String> = r.hosts.iter().map(ToString::to_string).collect();
        out.push_str(&format!(" on {}", hosts.join(", ")));
    }
    if !r.headers.is_empty() {
        out.push_str(&format!(" with {} header condition(s)", r.headers.len()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A router over `routes` (YAML list items), all served by one upstream.
    fn router(routes: &str) -> (Router, Vec<String>) {
        let yaml = format!("upstreams:\n  u: {{ targets: [\"http://127.0.0.1:1\"] }}\nroutes:\n{routes}");
        let config = modelgate_config::from_yaml(&yaml).unwrap();
        let names = config.routes.iter().map(|r| r.name.clone()).collect();
        (Router::build(&config.routes).unwrap(), names)
    }

    fn find<'a>(
        r: &'a (Router, Vec<String>),
        host: &str,
        path: &str,
        method: Method,
        headers: &[(&'static str, &'static str)],
    ) -> Result<&'a str, &'static str> {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, HeaderValue::from_static(v));
        }
        match r.0.find(host, path, &method, &h) {
            Ok(i) => Ok(r.1[i].as_str()),
            Err(e) => Err(e.code()),
        }
    }

    #[test]
    fn exact_paths_beat_templates_beat_the_longest_prefix() {
        let r = router(
            "  - { name: all, match: { path_prefix: / }, upstream: u }
  - { name: models, match: { path_prefix: /v2/models }, upstream: u }
  - { name: template, match: { path: \"/v2/models/{model}/infer\" }, upstream: u }
  - { name: exact, match: { path: /v2/models/digits/infer }, upstream: u }
",
        );
        assert_eq!(find(&r, "", "/v2/models/digits/infer", Method::POST, &[]), Ok("exact"));
        assert_eq!(find(&r, "", "/v2/models/other/infer", Method::POST, &[]), Ok("template"));
        assert_eq!(find(&r, "", "/v2/models/other", Method::GET, &[]), Ok("models"));
        assert_eq!(find(&r, "", "/v2/modelsx", Method::GET, &[]), Ok("all"), "prefixes match on segment boundaries");
        assert_eq!(find(&r, "", "/", Method::GET, &[]), Ok("all"));
    }

    #[test]
    fn exact_hosts_beat_wildcards_beat_routes_without_hosts() {
        let r = router(
            "  - { name: any, match: { path_prefix: / }, upstream: u }
  - { name: wild, match: { hosts: [\"*.example.com\"], path_prefix: / }, upstream: u }
  - { name: deeper, match: { hosts: [\"*.eu.example.com\"], path_prefix: / }, upstream: u }
  - { name: exact, match: { hosts: [api.example.com], path_prefix: / }, upstream: u }
",
        );
        assert_eq!(find(&r, "api.example.com", "/x", Method::GET, &[]), Ok("exact"));
        assert_eq!(find(&r, "web.example.com", "/x", Method::GET, &[]), Ok("wild"));
        assert_eq!(find(&r, "a.eu.example.com", "/x", Method::GET, &[]), Ok("deeper"), "the longest wildcard suffix wins");
        assert_eq!(find(&r, "example.org", "/x", Method::GET, &[]), Ok("any"));
        // A host's own routes are tried first, then the routes without hosts.
        let r = router(
            "  - { name: any, match: { path_prefix: / }, upstream: u }
  - { name: exact, match: { hosts: [api.example.com], path: /only }, upstream: u }
",
        );
        assert_eq!(find(&r, "api.example.com", "/other", Method::GET, &[]), Ok("any"));
    }

    #[test]
    fn header_conditions_beat_method_conditions_beat_the_rest_then_config_order() {
        let r = router(
            "  - { name: plain, match: { path_prefix: /p }, upstream: u }
  - { name: plain-later, match: { path_prefix: /p }, upstream: u }
  - { name: post, match: { path_prefix: /p, methods: [POST] }, upstream: u }
  - { name: canary, match: { path_prefix: /p, headers: { x-canary: \"*\" } }, upstream: u }
",
        );
        assert_eq!(find(&r, "", "/p", Method::POST, &[("x-canary", "1")]), Ok("canary"));
        assert_eq!(find(&r, "", "/p", Method::POST, &[]), Ok("post"));
        assert_eq!(find(&r, "", "/p", Method::GET, &[]), Ok("plain"), "config order among equals");
    }

    #[test]
    fn a_path_served_for_other_methods_is_405_else_404() {
        let r = router("  - { name: infer, match: { path: /infer, methods: [POST] }, upstream: u }\n");
        assert_eq!(find(&r, "", "/infer", Method::DELETE, &[]), Err("method_not_allowed"));
        assert_eq!(find(&r, "", "/nowhere", Method::POST, &[]), Err("route_not_found"));
        let r = router("  - { name: get, match: { path: /m, methods: [GET] }, upstream: u }\n");
        assert_eq!(find(&r, "", "/m", Method::HEAD, &[]), Ok("get"), "HEAD is served by GET routes");
    }
}
