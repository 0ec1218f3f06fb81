//! Gateway configuration.
//!
//! A config is YAML on disk: one main file plus an optional include directory of fragments, each team owning a
//! file. Loading is two steps (STYLE §3): the YAML is read into the raw `serde` structs of [`raw`] (unknown fields
//! rejected, `${ENV}` interpolated), then [`validate`] turns them into the types of [`model`] that cannot hold a bad
//! state: socket addresses, durations, parsed URIs, names resolved. Every problem found on the way is a
//! [`ConfigError`] naming the file, the YAML path and a hint; all of them are reported at once.
//!
//! Plugin settings stay as YAML values here: each plugin parses its own schema in the gateway crate, so a plugin
//! is one file there. This crate runs before the first request and on every reload, never on the hot path.

#![deny(unsafe_code)]

mod error;
mod identity;
mod interpolate;
mod load;
pub mod model;
mod namespaces;
pub mod raw;
mod tls;
mod units;
mod validate;
mod versions;

pub use error::{ConfigError, ConfigErrors};
pub use load::{Loaded, Source, Vars, from_yaml, load, redacted_view};
pub use model::{Config, Rewrite};
pub use units::{ByteSize, HumanDuration, UnitError};
pub use validate::warnings;

/// The JSON Schema of the gateway config file (from the raw config types and their doc comments), for editors
/// (`# yaml-language-server: $schema=…`) and CI. Plugin settings are any object here: each plugin checks its own.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(raw::RawConfig)).expect("a schema is JSON")
}

/// Deserializes `value` into `T`, turning the first error into a [`ConfigError`] whose path is `base` joined with
/// the path inside `value`. Plugins use it to parse their own section with the same error quality as the core.
pub fn from_value<T: serde::de::DeserializeOwned>(
    value: &serde_norway::Value,
    file: &std::path::Path,
    base: &str,
) -> Result<T, ConfigError> {
    from_owned_value(value.clone(), file, base)
}

/// [`from_value`] for a value the caller no longer needs (no copy).
pub fn from_owned_value<T: serde::de::DeserializeOwned>(
    value: serde_norway::Value,
    file: &std::path::Path,
    base: &str,
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let path = match (base.is_empty(), inner.as_str()) {
            (_, ".") => base.to_string(),
            (true, _) => inner,
            (false, p) if p.starts_with('[') => format!("{base}{p}"),
            (false, p) => format!("{base}.{p}"),
        };
        let message = clean_serde_message(&e.into_inner().to_string());
        let hint = did_you_mean(&message);
        let err = ConfigError::new(file, path, message);
        match hint {
            Some(h) => err.hint(h),
            None => err,
        }
    })
}

/// For serde's "unknown field `x`, expected one of `a`, `b`" (or variant), suggests the closest expected name.
fn did_you_mean(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `").or_else(|| message.strip_prefix("unknown variant `"))?;
    let (got, expected) = rest.split_once('`')?;
    let best = expected.split('`').skip(1).step_by(2).map(|cand| (edit_distance(got, cand), cand)).min()?;
    (best.0 <= 3 && best.0 < got.len()).then(|| format!("did you mean `{}`?", best.1))
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push((prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// serde_norway appends " at line X column Y" to some messages, which is meaningless for values already parsed;
/// drop it so errors read the same whatever their origin.
fn clean_serde_message(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn suggests_the_closest_field() {
        let m = "unknown field `methodz`, expected one of `hosts`, `path`, `path_prefix`, `methods`, `headers`";
        assert_eq!(super::did_you_mean(m).as_deref(), Some("did you mean `methods`?"));
        assert_eq!(super::did_you_mean("unknown field `zzzzzzzz`, expected `path`"), None);
    }

    /// Kong's precedence: route > set > upstream (service) > top-level (global); one per name, the most specific.
    #[test]
    fn plugins_come_from_defaults_upstreams_and_sets() {
        let yaml = r#"
plugins: [ { auth: { methods: [api_key] } }, { request_size: { max_body: 1MiB } } ]
plugin_sets:
  tenant: [ { headers: { response: { set: { x-tier: gold } } } } ]
identity: { api_keys: { file: keys.yaml } }
upstreams:
  u: { targets: ["http://127.0.0.1:9"], plugins: [ { request_size: { max_body: 8MiB } } ] }
routes:
  - { name: infer, match: { path_prefix: /v2 }, upstream: u, plugin_sets: [tenant], plugins: [ { policy: { allow: [ { consumers: [a] } ] } } ] }
  - { name: health, match: { path: /healthz }, upstream: u, inherit_plugins: false }
  - { name: own-auth, match: { path: /x }, upstream: u, plugins: [ { auth: { methods: [jwt] } } ] }
"#;
        let c = super::from_yaml(yaml).unwrap();
        let of = |name: &str| -> Vec<(String, String)> {
            c.routes.iter().find(|r| r.name == name).unwrap().plugins.iter().map(|p| (p.name.clone(), p.origin.path.clone())).collect()
        };
        let pairs = |v: &[(&str, &str)]| v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<Vec<_>>();
        assert_eq!(
            of("infer"),
            pairs(&[
                ("auth", "plugins[0].auth"),
                ("request_size", "upstreams.u.plugins[0].request_size"),
                ("headers", "plugin_sets.tenant[0].headers"),
                ("policy", "routes[0].plugins[0].policy"),
            ])
        );
        assert_eq!(of("health"), vec![], "inherit_plugins: false");
        assert_eq!(
            of("own-auth")[1],
            ("auth".to_string(), "routes[2].plugins[0].auth".to_string()),
            "the route's own replaces the default"
        );
        let e = super::from_yaml(&yaml.replace("plugin_sets: [tenant]", "plugin_sets: [tenantz]")).unwrap_err().to_string();
        assert!(e.contains("routes[0].plugin_sets[0]: unknown plugin set \"tenantz\"") && e.contains("known: tenant"), "{e}");
    }

    #[test]
    fn a_policy_rule_for_a_method_the_route_never_uses_is_a_warning() {
        let yaml = r#"
identity: { api_keys: { file: keys.yaml } }
upstreams: { u: { targets: ["http://127.0.0.1:9"] } }
routes:
  - name: r
    match: { path_prefix: / }
    upstream: u
    plugins:
      - auth: { methods: [api_key] }
      - policy: { allow: [ { consumers: [a] }, { methods: [jwt], groups: [g] } ] }
"#;
        let w = super::warnings(&super::from_yaml(yaml).unwrap());
        let rule = w.iter().find(|e| e.path.ends_with("policy.allow[1].methods")).expect("a warning for the jwt-only rule");
        assert!(rule.message.contains("can never match"), "{rule}");
        assert!(!w.iter().any(|e| e.path.ends_with("allow[0].methods")));
    }

    /// A typo in one route does not hide a typo in another route, an upstream or another section.
    #[test]
    fn every_schema_error_is_reported_at_once() {
        let yaml = "listen: 127.0.0.1:0\nserver: { workerz: 2 }\nupstreams:\n  u: { targetz: [\"http://127.0.0.1:9\"] }\n\
                    routes:\n  - { name: a, match: { pathprefix: / }, upstream: u }\n  - { name: b, match: { path: /b }, upstream: u, retry: true }\n";
        let errors = super::load(&super::Source::Inline { name: "c.yaml".into(), text: yaml.into() }, &super::Vars::default()).unwrap_err();
        let paths: Vec<&str> = errors.0.iter().map(|e| e.path.as_str()).collect();
        for want in ["server.workerz", "upstreams.u.targetz", "routes[0].match.pathprefix", "routes[1].retry"] {
            assert!(paths.contains(&want), "{want} missing from {paths:?}");
        }
    }
}
