//! `namespaces`: teams' include files checked against their namespace's guardrails at every load
//! (docs/self-service.md). A file `NAME.yaml` in the include directory belongs to namespace `NAME`; what it holds
//! must stay inside the namespace: its paths, its own upstreams on allowed hosts, authentication on every route,
//! limits within the ceilings, and the quotas. A platform change that makes a team's file invalid is refused like
//! any invalid config (the running config keeps serving), with the team file and the rule named.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::error::ConfigError;
use crate::model::{ManagedModel, PathMatch, RouteConfig, UpstreamConfig};
use crate::raw::RawNamespace;
use crate::units::{ByteSize, HumanDuration};

/// The namespace an include file belongs to: its file stem.
pub(crate) fn of_file(file: &Path) -> Option<&str> {
    file.file_stem().and_then(|s| s.to_str())
}

/// What the files define, and where: the namespaces' checks read it.
pub(crate) struct Defined<'a> {
    pub routes: &'a [RouteConfig],
    pub upstreams: &'a BTreeMap<String, Arc<UpstreamConfig>>,
    pub upstream_files: &'a HashMap<String, PathBuf>,
    pub model_files: &'a HashMap<String, PathBuf>,
}

/// Checks the namespaces themselves, then every include file against its namespace. The versions of a namespace's
/// models get its allowed runtimes (checked by their readiness probes).
pub(crate) fn check(
    main_file: &Path,
    namespaces: &BTreeMap<String, RawNamespace>,
    fragment_files: &[PathBuf],
    defined: &Defined<'_>,
    models: &mut BTreeMap<String, Arc<ManagedModel>>,
    errors: &mut Vec<ConfigError>,
) {
    if namespaces.is_empty() {
        return;
    }
    declared(main_file, namespaces, errors);
    for file in fragment_files {
        let Some(ns) = of_file(file).and_then(|n| namespaces.get(n).map(|ns| (n, ns))) else {
            let known: Vec<&str> = namespaces.keys().map(String::as_str).collect();
            errors.push(
                ConfigError::new(file, "", "this include file belongs to no namespace")
                    .rule("namespace.file")
                    .hint(format!("with namespaces declared, each include file is NAME.yaml for a namespace: {}", known.join(", "))),
            );
            continue;
        };
        let others: Vec<(&str, &RawNamespace)> =
            namespaces.iter().filter(|(n, _)| n.as_str() != ns.0).map(|(n, o)| (n.as_str(), o)).collect();
        fragment(file, ns, &others, defined, errors);
        fragment_models(file, ns, &others, defined, models, errors);
    }
}

/// The declarations: names, paths (absolute, not overlapping another namespace's), methods, ceilings.
fn declared(main_file: &Path, namespaces: &BTreeMap<String, RawNamespace>, errors: &mut Vec<ConfigError>) {
    let mut owned: Vec<(&str, &str)> = Vec::new();
    for (name, ns) in namespaces {
        let at = format!("namespaces.{name}");
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            errors.push(ConfigError::new(main_file, &at, format!("{name:?} is not a namespace name")).hint("letters, digits, `-` and `_`"));
        }
        if ns.paths.is_empty() {
            errors.push(
                ConfigError::new(main_file, format!("{at}.paths"), "a namespace owns at least one path prefix")
                    .hint(format!("e.g. paths: [/v2/models/{name}-]")),
            );
        }
        for (i, p) in ns.paths.iter().enumerate() {
            if !p.starts_with('/') || p == "/" {
                errors.push(
                    ConfigError::new(main_file, format!("{at}.paths[{i}]"), format!("{p:?} is not a path prefix a team can own"))
                        .hint("a path starting with / and longer than /, e.g. /v2/models/team-a-"),
                );
            }
            for (other, q) in &owned {
                if p.starts_with(q) || q.starts_with(p.as_str()) {
                    errors.push(
                        ConfigError::new(main_file, format!("{at}.paths[{i}]"), format!("{p:?} overlaps {q:?} of namespace {other}"))
                            .hint("namespaces own disjoint path prefixes, so no team can capture another's traffic"),
                    );
                }
            }
        }
        owned.extend(ns.paths.iter().map(|p| (name.as_str(), p.as_str())));
        for (i, m) in ns.auth_methods.iter().enumerate() {
            if !["api_key", "jwt", "aws_iam", "mtls"].contains(&m.as_str()) {
                errors.push(
                    ConfigError::new(main_file, format!("{at}.auth_methods[{i}]"), format!("{m:?} is not an authentication method"))
                        .hint("api_key, jwt, aws_iam or mtls"),
                );
            }
        }
        if let Some(s) = ns.max_shadow_sample
            && !(0.0..=100.0).contains(&s)
        {
            errors.push(
                ConfigError::new(main_file, format!("{at}.max_shadow_sample"), format!("{s} is not a percentage"))
                    .hint("0 to 100, e.g. 10 (0 allows no shadow copies)"),
            );
        }
        if let Some(i) = ns.runtimes.iter().position(|r| r.trim().is_empty()) {
            errors.push(
                ConfigError::new(main_file, format!("{at}.runtimes[{i}]"), "an empty runtime name")
                    .hint("a platform as servers report it, e.g. onnxruntime_onnx"),
            );
        }
        if let Some(r) = &ns.max_rate
            && (r.limit == 0 || r.per.0.is_zero())
        {
            errors.push(
                ConfigError::new(main_file, format!("{at}.max_rate"), "a ceiling of 0 allows no route").hint("e.g. {limit: 100, per: 1s}"),
            );
        }
    }
}

/// One team's include file against its namespace.
fn fragment(
    file: &Path,
    (name, ns): (&str, &RawNamespace),
    others: &[(&str, &RawNamespace)],
    defined: &Defined<'_>,
    errors: &mut Vec<ConfigError>,
) {
    let Defined { routes, upstreams, upstream_files, .. } = *defined;
    let rule = |r: &str| format!("namespace {name}: {r}");
    let own_upstreams: Vec<&String> = upstream_files.iter().filter(|(_, f)| f.as_path() == file).map(|(n, _)| n).collect();
    if let Some(max) = ns.max_upstreams
        && own_upstreams.len() > max
    {
        errors.push(
            ConfigError::new(file, "upstreams", rule(&format!("{} upstreams, the quota is {max} (0 left)", own_upstreams.len())))
                .rule("namespace.quota")
                .hint("remove upstreams, or ask the platform team for a larger max_upstreams"),
        );
    }
    for up in &own_upstreams {
        let Some(u) = upstreams.get(*up) else { continue };
        for (i, t) in u.targets.iter().enumerate() {
            let host = t.authority.host().trim_start_matches('[').trim_end_matches(']');
            if !ns.upstream_hosts.is_empty() && !ns.upstream_hosts.iter().any(|h| host_allowed(h, host)) {
                errors.push(
                    ConfigError::new(
                        file,
                        format!("upstreams.{up}.targets[{i}]"),
                        rule(&format!("host {host:?} is not an allowed upstream host")),
                    )
                    .hint(format!("allowed: {}", ns.upstream_hosts.join(", ")))
                    .rule("namespace.upstream_hosts"),
                );
            }
        }
    }
    let own_routes: Vec<&RouteConfig> = routes.iter().filter(|r| r.origin.file == file).collect();
    if let Some(max) = ns.max_routes
        && own_routes.len() > max
    {
        errors.push(
            ConfigError::new(file, "routes", rule(&format!("{} routes, the quota is {max} (0 left)", own_routes.len())))
                .rule("namespace.quota")
                .hint("remove routes, or ask the platform team for a larger max_routes"),
        );
    }
    for r in own_routes {
        let at = &r.origin.path;
        let (field, path) = match &r.path {
            PathMatch::Exact(p) | PathMatch::Template(p) => ("path", p),
            PathMatch::Prefix(p) => ("path_prefix", p),
        };
        if let Some(e) = outside(file, &format!("{at}.match.{field}"), name, ns, others, path, &format!("{path:?}")) {
            errors.push(e);
        }
        if let Some(upstream) = &r.upstream
            && upstream_files.get(upstream).is_some_and(|f| f.as_path() != file)
        {
            errors.push(
                ConfigError::new(file, format!("{at}.upstream"), rule(&format!("upstream {upstream:?} is not the namespace's own")))
                    .rule("namespace.upstreams")
                    .hint("a team's routes use upstreams defined in its own file"),
            );
        }
        route_plugins(file, at, ns, r, &rule, errors);
    }
}

/// `path` (at `at`) outside the namespace's paths: inside (or above) another namespace's paths is a capture of its
/// traffic, named with its owners.
fn outside(
    file: &Path,
    at: &str,
    name: &str,
    ns: &RawNamespace,
    others: &[(&str, &RawNamespace)],
    path: &str,
    what: &str,
) -> Option<ConfigError> {
    if ns.paths.iter().any(|own| path.starts_with(own.as_str())) {
        return None;
    }
    let other = others.iter().find(|(_, o)| o.paths.iter().any(|p| path.starts_with(p.as_str()) || p.starts_with(path)));
    let hint = format!("a path starting with {}", ns.paths.join(" or "));
    Some(match other {
        Some((other, o)) => ConfigError::new(
            file,
            at,
            format!("namespace {name}: {what} would capture namespace {other}'s traffic (owners: {})", owners(o)),
        )
        .hint(hint)
        .rule("namespace.capture"),
        None => ConfigError::new(file, at, format!("namespace {name}: {what} is outside its paths")).hint(hint).rule("namespace.paths"),
    })
}

/// A namespace's models: each inside its paths (as `/v2/models/{name}/`), versions on its own upstreams, shadow
/// samples under the ceiling, within the model and version quotas; their versions get the allowed runtimes.
fn fragment_models(
    file: &Path,
    (name, ns): (&str, &RawNamespace),
    others: &[(&str, &RawNamespace)],
    defined: &Defined<'_>,
    models: &mut BTreeMap<String, Arc<ManagedModel>>,
    errors: &mut Vec<ConfigError>,
) {
    let rule = |r: &str| format!("namespace {name}: {r}");
    let own: Vec<&String> = defined.model_files.iter().filter(|(_, f)| f.as_path() == file).map(|(m, _)| m).collect();
    let quota = |what: &str, n: usize, max: Option<usize>, field: &str| {
        max.filter(|max| n > *max).map(|max| {
            ConfigError::new(file, "models", rule(&format!("{n} {what}, the quota is {max} (0 left)")))
                .rule("namespace.quota")
                .hint(format!("remove {what}, or ask the platform team for a larger {field}"))
        })
    };
    errors.extend(quota("models", own.len(), ns.max_models, "max_models"));
    let mut versions = 0;
    for m in own {
        let Some(model) = models.get_mut(m.as_str()) else { continue };
        versions += model.versions.len();
        let at = format!("models.{m}");
        errors.extend(outside(file, &at, name, ns, others, &format!("/v2/models/{m}/"), &format!("model {m:?}")));
        for v in &model.versions {
            if defined.upstream_files.get(&v.upstream).is_some_and(|f| f.as_path() != file) {
                errors.push(
                    ConfigError::new(
                        file,
                        format!("{at}.versions.{}.upstream", v.name),
                        rule(&format!("upstream {:?} is not the namespace's own", v.upstream)),
                    )
                    .rule("namespace.upstreams")
                    .hint("a team's model versions use upstreams defined in its own file"),
                );
            }
            if let (Some(max), Some(s)) = (ns.max_shadow_sample, &v.shadow)
                && f64::from(s.sample) / 100.0 > max + 1e-9
            {
                errors.push(
                    ConfigError::new(
                        file,
                        format!("{at}.versions.{}.shadow.sample", v.name),
                        rule(&format!("a shadow sample of {}% is above the ceiling", f64::from(s.sample) / 100.0)),
                    )
                    .rule("namespace.max_shadow_sample")
                    .hint(format!("at most {max}")),
                );
            }
        }
        if !ns.runtimes.is_empty() {
            for v in model.versions.iter().filter(|v| v.probe.is_none() && v.state != crate::raw::VersionState::Retired) {
                errors.push(
                    ConfigError::new(
                        file,
                        format!("{at}.versions.{}.probe", v.name),
                        rule("its runtime is verified by its readiness probe"),
                    )
                    .rule("namespace.runtimes")
                    .hint("remove probe: none (the default probe asks the OIP readiness and metadata endpoints)"),
                );
            }
            for v in &mut Arc::make_mut(model).versions {
                v.runtimes = ns.runtimes.clone();
            }
        }
    }
    errors.extend(quota("model versions", versions, ns.max_versions, "max_versions"));
}

/// The route's effective plugins (defaults and sets included): authentication, rate and body ceilings.
fn route_plugins(file: &Path, at: &str, ns: &RawNamespace, r: &RouteConfig, rule: &dyn Fn(&str) -> String, errors: &mut Vec<ConfigError>) {
    let setting = |plugin: &str| r.plugins.iter().find(|p| p.name == plugin).map(|p| &p.settings);
    let methods: Vec<String> = setting("auth")
        .and_then(|s| s.get("methods"))
        .and_then(|m| m.as_sequence())
        .map(|m| m.iter().filter_map(|v| v.as_str().map(String::from)).collect())
        .unwrap_or_default();
    let authenticated: Vec<&String> = methods.iter().filter(|m| *m != "anonymous").collect();
    if authenticated.is_empty() {
        errors.push(
            ConfigError::new(file, format!("{at}.plugins"), rule("every route authenticates its callers"))
                .hint(format!(
                    "add - auth: {{ methods: [{}] }}",
                    if ns.auth_methods.is_empty() { "api_key".into() } else { ns.auth_methods.join(", ") }
                ))
                .rule("namespace.auth"),
        );
    }
    for m in &methods {
        if !ns.auth_methods.is_empty() && !ns.auth_methods.contains(m) {
            errors.push(
                ConfigError::new(file, format!("{at}.plugins"), rule(&format!("authentication method {m:?} is not allowed")))
                    .rule("namespace.auth")
                    .hint(format!("allowed: {}", ns.auth_methods.join(", "))),
            );
        }
    }
    if let Some(max) = &ns.max_rate {
        let ceiling = max.limit as f64 / max.per.0.as_secs_f64();
        let limits = setting("rate_limit").and_then(|s| s.get("limits")).and_then(|l| l.as_sequence());
        match limits {
            None => errors.push(
                ConfigError::new(file, format!("{at}.plugins"), rule("every route has a rate limit"))
                    .hint(format!(
                        "add - rate_limit: {{ limits: [ {{ limit: {}, per: {} }} ] }} (the ceiling)",
                        max.limit,
                        humantime::format_duration(max.per.0)
                    ))
                    .rule("namespace.max_rate"),
            ),
            Some(limits) => {
                for (i, l) in limits.iter().enumerate() {
                    let limit = l.get("limit").and_then(|v| v.as_u64()).unwrap_or(u64::MAX);
                    let per =
                        l.get("per").and_then(|v| v.as_str()).and_then(|p| p.parse::<HumanDuration>().ok()).map_or(Duration::ZERO, |d| d.0);
                    if per.is_zero() || limit as f64 / per.as_secs_f64() > ceiling + 1e-9 {
                        errors.push(
                            ConfigError::new(
                                file,
                                format!("{at}.plugins"),
                                rule(&format!(
                                    "rate limit {} ({limit} per {}) is above the ceiling",
                                    i + 1,
                                    humantime::format_duration(per)
                                )),
                            )
                            .hint(format!("at most {} per {}", max.limit, humantime::format_duration(max.per.0)))
                            .rule("namespace.max_rate"),
                        );
                    }
                }
            }
        }
    }
    if let Some(max) = ns.max_body {
        let body = setting("request_size").and_then(|s| s.get("max_body")).and_then(|v| match v {
            serde_norway::Value::Number(n) => n.as_u64(),
            serde_norway::Value::String(s) => ByteSize::parse(s).ok().map(|b| b.0),
            _ => None,
        });
        if body.is_none_or(|b| b > max.0) {
            errors.push(
                ConfigError::new(file, format!("{at}.plugins"), rule(&format!("the request body limit must be at most {max}")))
                    .rule("namespace.max_body")
                    .hint(format!("add - request_size: {{ max_body: {max} }}")),
            );
        }
    }
}

fn owners(ns: &RawNamespace) -> String {
    let claims = ns.owners.claims.iter().flat_map(|(c, values)| values.iter().map(move |v| format!("{c}={v}")));
    let all: Vec<String> = ns.owners.consumers.iter().chain(&ns.owners.groups).cloned().chain(claims).collect();
    if all.is_empty() { "none declared".into() } else { all.join(", ") }
}

/// `pattern` is a host name or address, or `*.example.com` (any depth below it).
fn host_allowed(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => host.len() > suffix.len() && host.ends_with(suffix) && host.as_bytes()[host.len() - suffix.len() - 1] == b'.',
        None => pattern.eq_ignore_ascii_case(host),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns() {
        assert!(host_allowed("*.team-a.svc", "digits.team-a.svc"));
        assert!(host_allowed("*.team-a.svc", "a.b.team-a.svc"));
        assert!(!host_allowed("*.team-a.svc", "team-a.svc"));
        assert!(!host_allowed("*.team-a.svc", "evilteam-a.svc"));
        assert!(host_allowed("127.0.0.1", "127.0.0.1"));
        assert!(!host_allowed("127.0.0.1", "127.0.0.2"));
    }
}

#[cfg(test)]
mod load_tests {
    use crate::load::{Source, Vars, load};

    const MAIN: &str = r#"include: teams
identity: { api_keys: { file: keys.yaml } }
plugin_sets:
  team-defaults: [ { request_size: { max_body: 512KiB } } ]
upstreams:
  platform: { targets: ["http://10.0.0.1:8000"] }
routes:
  - { name: health, match: { path: /healthz }, upstream: platform }
namespaces:
  team-a:
    paths: [/v2/models/team-a-]
    upstream_hosts: ["*.team-a.svc", 127.0.0.1]
    auth_methods: [api_key, jwt]
    max_rate: { limit: 100, per: 1s }
    max_body: 1MiB
    max_routes: 2
    max_upstreams: 1
  team-b:
    paths: [/v2/models/team-b-]
"#;

    const GOOD: &str = r#"upstreams:
  a-digits: { targets: ["http://digits.team-a.svc:8000"] }
routes:
  - name: a-digits
    match: { path_prefix: /v2/models/team-a-digits }
    upstream: a-digits
    plugin_sets: [team-defaults]
    plugins:
      - auth: { methods: [api_key] }
      - rate_limit: { limits: [ { limit: 50, per: 1s } ] }
"#;

    /// `(file name, YAML path, message)` of each error loading MAIN (with `main`'s edits) and the team files.
    fn errors(main: &str, teams: &[(&str, &str)]) -> Vec<(String, String, String)> {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("teams")).unwrap();
        std::fs::write(d.join("keys.yaml"), "keys: []\n").unwrap();
        for (name, text) in teams {
            std::fs::write(d.join("teams").join(name), text).unwrap();
        }
        std::fs::write(d.join("main.yaml"), main).unwrap();
        match load(&Source::File(d.join("main.yaml")), &Vars::default()) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.into_iter().map(|e| (e.file.file_name().unwrap().to_string_lossy().into_owned(), e.path, e.message)).collect(),
        }
    }

    #[test]
    fn a_team_file_inside_its_namespace_loads() {
        assert_eq!(errors(MAIN, &[("team-a.yaml", GOOD)]), []);
    }

    #[test]
    fn each_guardrail_names_the_file_the_path_and_the_rule() {
        let bad = r#"upstreams:
  a-one: { targets: ["http://digits.team-a.svc:8000"] }
  a-two: { targets: ["http://evil.example.com:8000"] }
routes:
  - name: capture
    match: { path_prefix: /v2/models/team-b-digits }
    upstream: a-one
    plugins:
      - auth: { methods: [api_key] }
      - rate_limit: { limits: [ { limit: 50, per: 1s } ] }
      - request_size: { max_body: 1KiB }
  - name: open
    match: { path: /v2/models/team-a-x/infer }
    upstream: platform
    plugins:
      - auth: { methods: [anonymous] }
      - rate_limit: { limits: [ { limit: 1000, per: 1s } ] }
      - request_size: { max_body: 2MiB }
  - name: third
    match: { path: /v2/models/team-a-y/infer }
    upstream: a-one
    plugins: [ { auth: { methods: [aws_iam] } } ]
"#;
        let e = errors(MAIN, &[("team-a.yaml", bad)]);
        let got: Vec<(&str, &str)> = e.iter().map(|(_, p, m)| (p.as_str(), m.as_str())).collect();
        assert!(e.iter().all(|(f, _, m)| f == "team-a.yaml" && m.starts_with("namespace team-a: ")), "{e:#?}");
        let has = |path: &str, words: &str| got.iter().any(|(p, m)| *p == path && m.contains(words));
        assert!(has("upstreams", "2 upstreams, the quota is 1"), "{got:#?}");
        assert!(has("upstreams.a-two.targets[0]", "\"evil.example.com\" is not an allowed upstream host"), "{got:#?}");
        assert!(has("routes", "3 routes, the quota is 2"), "{got:#?}");
        assert!(has("routes[0].match.path_prefix", "would capture namespace team-b's traffic (owners: none declared)"), "{got:#?}");
        assert!(has("routes[1].upstream", "not the namespace's own"), "{got:#?}");
        assert!(has("routes[1].plugins", "every route authenticates its callers"), "{got:#?}");
        assert!(has("routes[1].plugins", "rate limit 1 (1000 per 1s) is above the ceiling"), "{got:#?}");
        assert!(has("routes[1].plugins", "the request body limit must be at most 1048576 bytes"), "{got:#?}");
        assert!(has("routes[2].plugins", "\"aws_iam\" is not allowed"), "{got:#?}");
        assert!(has("routes[2].plugins", "every route has a rate limit"), "{got:#?}");
    }

    #[test]
    fn namespaces_own_disjoint_paths_and_every_team_file_belongs_to_one() {
        let overlapping = MAIN.replace("paths: [/v2/models/team-b-]", "paths: [/v2/models/team-]");
        let e = errors(&overlapping, &[]);
        assert!(e.iter().any(|(_, p, m)| p == "namespaces.team-b.paths[0]" && m.contains("overlaps")), "{e:#?}");
        let e = errors(MAIN, &[("team-a.yaml", GOOD), ("stray.yaml", "routes: []\n")]);
        assert_eq!((e.len(), e[0].0.as_str(), e[0].2.as_str()), (1, "stray.yaml", "this include file belongs to no namespace"), "{e:#?}");
        // Without namespaces, include files load as before.
        assert_eq!(errors("include: teams\n", &[("stray.yaml", "routes: []\n")]), []);
    }

    #[test]
    fn a_team_file_cannot_read_the_gateways_environment_or_files() {
        let reading = GOOD.replace("digits.team-a.svc", "${file:/etc/hostname}");
        let e = errors(MAIN, &[("team-a.yaml", &reading)]);
        assert!(e.iter().any(|(f, _, m)| f == "team-a.yaml" && m.contains("cannot use ${…}")), "{e:#?}");
    }

    const MODELS: &str = r#"upstreams:
  a-digits: { targets: ["http://digits.team-a.svc:8000"] }
models:
  team-a-digits:
    versions:
      "1": { upstream: a-digits, state: stable, path: /v2/models/digits/versions/1 }
      "2": { upstream: a-digits, state: shadow, shadow: { sample: 5 } }
"#;

    #[test]
    fn a_team_model_stays_inside_its_namespace_and_its_quotas() {
        let main = MAIN.replace("max_upstreams: 1", "max_upstreams: 1\n    max_models: 1\n    max_versions: 2\n    max_shadow_sample: 10");
        assert_eq!(errors(&main, &[("team-a.yaml", MODELS)]), []);
        let e = errors(&main.replace("max_versions: 2", "max_versions: 1"), &[("team-a.yaml", MODELS)]);
        assert!(e.iter().any(|(_, p, m)| p == "models" && m.contains("2 model versions, the quota is 1")), "{e:#?}");
        let e = errors(&main, &[("team-a.yaml", &MODELS.replace("sample: 5", "sample: 50"))]);
        assert!(e.iter().any(|(_, p, m)| p == "models.team-a-digits.versions.2.shadow.sample" && m.contains("50% is above")), "{e:#?}");
        // Another team's model name is a capture of its traffic; a name outside every namespace is outside the paths;
        // the platform's upstream is not the team's.
        let e = errors(&main, &[("team-a.yaml", &MODELS.replace("team-a-digits:", "team-b-digits:"))]);
        assert!(e.iter().any(|(_, p, m)| p == "models.team-b-digits" && m.contains("would capture namespace team-b's traffic")), "{e:#?}");
        let e = errors(&main, &[("team-a.yaml", &MODELS.replace("team-a-digits:", "digits:"))]);
        assert!(e.iter().any(|(_, p, m)| p == "models.digits" && m.contains("\"digits\" is outside its paths")), "{e:#?}");
        let e =
            errors(&main, &[("team-a.yaml", &MODELS.replace("upstream: a-digits, state: stable", "upstream: platform, state: stable"))]);
        assert!(
            e.iter().any(|(_, p, m)| p == "models.team-a-digits.versions.1.upstream" && m.contains("not the namespace's own")),
            "{e:#?}"
        );
        let two = format!("{MODELS}  team-a-other:\n    versions: {{ \"1\": {{ upstream: a-digits, state: stable }} }}\n");
        let e = errors(&main, &[("team-a.yaml", &two)]);
        assert!(e.iter().any(|(_, p, m)| p == "models" && m.contains("2 models, the quota is 1")), "{e:#?}");
        // A model already defined in the main file.
        let dup = main.replace(
            "namespaces:",
            "models:\n  team-a-digits: { versions: { \"1\": { upstream: platform, state: stable } } }\nnamespaces:",
        );
        let e = errors(&dup, &[("team-a.yaml", MODELS)]);
        assert!(e.iter().any(|(f, _, m)| f == "team-a.yaml" && m.contains("already defined in")), "{e:#?}");
    }

    #[test]
    fn allowed_runtimes_reach_the_versions_and_need_their_probe() {
        let main = MAIN.replace("max_upstreams: 1", "max_upstreams: 1\n    runtimes: [onnxruntime_onnx]");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("teams")).unwrap();
        std::fs::write(d.join("keys.yaml"), "keys: []\n").unwrap();
        std::fs::write(d.join("teams/team-a.yaml"), MODELS).unwrap();
        std::fs::write(d.join("main.yaml"), &main).unwrap();
        let config = load(&Source::File(d.join("main.yaml")), &Vars::default()).unwrap();
        let versions = &config.models["team-a-digits"].versions;
        assert!(versions.iter().all(|v| v.runtimes == ["onnxruntime_onnx"]), "{versions:#?}");
        let unprobed = MODELS.replace("path: /v2/models/digits/versions/1", "probe: none");
        let e = errors(&main, &[("team-a.yaml", &unprobed)]);
        assert!(
            e.iter().any(|(_, p, m)| p == "models.team-a-digits.versions.1.probe" && m.contains("verified by its readiness probe")),
            "{e:#?}"
        );
    }

    /// A platform change that makes a team's file invalid is refused, naming the team's file.
    #[test]
    fn a_platform_change_that_breaks_a_team_file_is_reported() {
        let tighter = MAIN.replace("max_body: 1MiB", "max_body: 256KiB");
        let e = errors(&tighter, &[("team-a.yaml", GOOD)]);
        assert!(e.iter().any(|(f, p, m)| f == "team-a.yaml" && p == "routes[0].plugins" && m.contains("at most 262144 bytes")), "{e:#?}");
    }
}
