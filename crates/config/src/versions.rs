//! `models`: model versions bound to upstreams, checked (docs/versions.md).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::error::ConfigError;
use crate::model::{ManagedModel, ManagedVersion, ShadowConfig, SplitKey, UpstreamConfig};
use crate::raw::{RawModel, RawShadow, VersionState};

/// The split's resolution: a weight is a number of these buckets out of [`BUCKETS`] (0.01 percentage point each).
pub const BUCKETS: u32 = 10_000;

pub(crate) fn models(
    file: &Path,
    raw: &BTreeMap<String, RawModel>,
    upstreams: &BTreeMap<String, Arc<UpstreamConfig>>,
    errors: &mut Vec<ConfigError>,
) -> BTreeMap<String, Arc<ManagedModel>> {
    let mut out = BTreeMap::new();
    for (name, m) in raw {
        if let Some(model) = model(file, name, m, upstreams, errors) {
            out.insert(name.clone(), Arc::new(model));
        }
    }
    out
}

fn model(
    file: &Path,
    name: &str,
    raw: &RawModel,
    upstreams: &BTreeMap<String, Arc<UpstreamConfig>>,
    errors: &mut Vec<ConfigError>,
) -> Option<ManagedModel> {
    let before = errors.len();
    let at = format!("models.{name}");
    if !plain_name(name) {
        errors.push(ConfigError::new(file, &at, format!("{name:?} is not a model name")).hint("letters, digits, `-`, `_` and `.`"));
    }
    let split_key = match raw.split_key.split_once(':') {
        None if raw.split_key == "consumer" => Some(SplitKey::Consumer),
        Some(("header", h)) => http::HeaderName::from_bytes(h.as_bytes()).ok().map(SplitKey::Header),
        Some(("claim", c)) if !c.is_empty() => Some(SplitKey::Claim(c.to_string())),
        _ => None,
    };
    if split_key.is_none() {
        errors.push(
            ConfigError::new(file, format!("{at}.split_key"), format!("{:?} is not a split key", raw.split_key))
                .hint("consumer, header:NAME (e.g. header:x-user-id) or claim:NAME (e.g. claim:sub)"),
        );
    }
    let mut versions = Vec::new();
    let mut total = 0u32;
    for (v, rv) in &raw.versions {
        let vat = format!("{at}.versions.{v}");
        if !plain_name(v) {
            errors.push(ConfigError::new(file, &vat, format!("{v:?} is not a version name")).hint("letters, digits, `-`, `_` and `.`"));
        }
        if !upstreams.contains_key(&rv.upstream) {
            let known: Vec<&str> = upstreams.keys().map(String::as_str).collect();
            errors.push(
                ConfigError::new(file, format!("{vat}.upstream"), format!("no upstream named {:?}", rv.upstream))
                    .hint(format!("known: {}", if known.is_empty() { "none".into() } else { known.join(", ") })),
            );
        }
        let buckets = match (rv.state, rv.weight) {
            (VersionState::Canary, Some(w)) => percent(file, &format!("{vat}.weight"), w, errors),
            (VersionState::Canary, None) => {
                errors.push(
                    ConfigError::new(file, format!("{vat}.weight"), "a canary needs a weight")
                        .hint("the percent of callers it gets, e.g. weight: 5 (0 sends it none)"),
                );
                0
            }
            (state, Some(_)) => {
                errors.push(
                    ConfigError::new(file, format!("{vat}.weight"), format!("a {} version takes no weight", state_name(state)))
                        .hint("only canaries have a weight; the stable version gets the rest"),
                );
                0
            }
            (_, None) => 0,
        };
        total += buckets;
        let template = rv.path.as_deref().unwrap_or("/v2/models/{model}/versions/{version}");
        let prefix = template.replace("{model}", name).replace("{version}", v);
        let prefix = prefix.trim_end_matches('/').to_string();
        if !template.starts_with('/') || prefix.contains(['?', '#', '{', '}']) {
            errors.push(
                ConfigError::new(file, format!("{vat}.path"), format!("{template:?} is not a path prefix"))
                    .hint("a path starting with /, with {model} and {version} where the names go"),
            );
        }
        let probe = match rv.probe.as_deref() {
            Some("none") => None,
            Some(p) if p.starts_with('/') && !p.contains(['#', '{', '}']) => Some(p.to_string()),
            Some(p) => {
                errors.push(
                    ConfigError::new(file, format!("{vat}.probe"), format!("{p:?} is not a probe path"))
                        .hint("a path starting with /, or none to send traffic without asking"),
                );
                None
            }
            None => Some(format!("{prefix}/ready")),
        };
        let shadow = match (rv.state, &rv.shadow) {
            (VersionState::Shadow, Some(s)) => Some(shadow(file, &format!("{vat}.shadow"), s, errors)),
            (VersionState::Shadow, None) => {
                errors.push(
                    ConfigError::new(file, format!("{vat}.shadow"), "a shadow version needs `shadow`")
                        .hint("the percent of requests copied to it, e.g. shadow: { sample: 10 }"),
                );
                None
            }
            (state, Some(_)) => {
                errors.push(
                    ConfigError::new(file, format!("{vat}.shadow"), format!("a {} version takes no `shadow`", state_name(state)))
                        .hint("only versions with state: shadow get copies"),
                );
                None
            }
            (_, None) => None,
        };
        versions.push(ManagedVersion {
            name: v.clone(),
            upstream: rv.upstream.clone(),
            prefix,
            state: rv.state,
            buckets,
            probe,
            tags: rv.tags.clone(),
            shadow,
        });
    }
    let stable = versions.iter().filter(|v| v.state == VersionState::Stable).count();
    if stable != 1 {
        errors.push(
            ConfigError::new(file, format!("{at}.versions"), format!("{stable} versions are stable; a model has exactly one"))
                .hint("mark the version that gets the traffic no canary takes with state: stable"),
        );
    }
    if total > BUCKETS {
        errors.push(
            ConfigError::new(file, format!("{at}.versions"), format!("the canaries' weights sum to {}%", f64::from(total) / 100.0))
                .hint("canary weights sum to at most 100; the stable version gets the rest"),
        );
    }
    (errors.len() == before).then(|| ManagedModel { name: name.to_string(), versions, split_key: split_key.expect("checked") })
}

/// A percentage in steps of 0.01 as a number of the 10,000 buckets.
fn percent(file: &Path, at: &str, w: f64, errors: &mut Vec<ConfigError>) -> u32 {
    if (0.0..=100.0).contains(&w) && (w * 100.0 - (w * 100.0).round()).abs() < 1e-6 {
        return (w * 100.0).round() as u32;
    }
    errors.push(
        ConfigError::new(file, at, format!("{w} is not a percentage in steps of 0.01")).hint("a number from 0 to 100, e.g. 5 or 12.5"),
    );
    0
}

fn shadow(file: &Path, at: &str, raw: &RawShadow, errors: &mut Vec<ConfigError>) -> ShadowConfig {
    let sample = percent(file, &format!("{at}.sample"), raw.sample, errors);
    if raw.max_in_flight == 0 {
        errors.push(
            ConfigError::new(file, format!("{at}.max_in_flight"), "0 copies in flight would copy nothing")
                .hint("at least 1 (default 16); sample: 0 turns copying off"),
        );
    }
    let c = &raw.compare;
    for (name, v) in [("atol", c.atol), ("rtol", c.rtol)] {
        if !(v.is_finite() && v >= 0.0) {
            errors.push(
                ConfigError::new(file, format!("{at}.compare.{name}"), format!("{v} is not a tolerance"))
                    .hint("a number ≥ 0, e.g. 1e-5 (0 asks for equality)"),
            );
        }
    }
    if c.top_k == 0 {
        errors.push(ConfigError::new(file, format!("{at}.compare.top_k"), "top_k is 0").hint("1 compares the argmax of each row"));
    }
    ShadowConfig {
        sample,
        max_in_flight: raw.max_in_flight,
        max_body: raw.max_body.0,
        timeout: raw.timeout.map(|t| t.0),
        atol: c.atol,
        rtol: c.rtol,
        top_k: c.top_k,
    }
}

fn plain_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn state_name(s: VersionState) -> &'static str {
    match s {
        VersionState::Stable => "stable",
        VersionState::Canary => "canary",
        VersionState::Shadow => "shadow",
        VersionState::Retired => "retired",
    }
}

#[cfg(test)]
mod tests {
    fn errors(models: &str) -> Vec<(String, String)> {
        let yaml = format!("upstreams:\n  a: {{ targets: [\"http://127.0.0.1:1\"] }}\nmodels:\n{models}");
        match crate::from_yaml(&yaml) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.into_iter().map(|e| (e.path, e.message)).collect(),
        }
    }

    #[test]
    fn versions_are_checked_with_paths() {
        assert_eq!(
            errors(
                "  digits:\n    versions:\n      v1: { upstream: a, state: stable }\n      v2: { upstream: a, state: canary, weight: 12.5 }\n"
            ),
            []
        );
        let e = errors(
            "  digits:\n    split_key: cookie\n    versions:\n      v1: { upstream: b, state: stable, weight: 3 }\n      v2: { upstream: a, state: canary, weight: 0.001 }\n      v3: { upstream: a, state: canary }\n",
        );
        let paths: Vec<&str> = e.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "models.digits.split_key",
                "models.digits.versions.v1.upstream",
                "models.digits.versions.v1.weight",
                "models.digits.versions.v2.weight",
                "models.digits.versions.v3.weight"
            ],
            "{e:?}"
        );
        let e = errors(
            "  d:\n    versions:\n      v1: { upstream: a, state: canary, weight: 60 }\n      v2: { upstream: a, state: canary, weight: 50 }\n",
        );
        assert!(e.iter().any(|(_, m)| m.contains("0 versions are stable")), "{e:?}");
        assert!(e.iter().any(|(_, m)| m.contains("sum to 110%")), "{e:?}");
        let e = errors("  d:\n    versions:\n      v1: { upstream: a, state: stable, path: \"models/{model}\" }\n");
        assert_eq!(e[0].0, "models.d.versions.v1.path");
    }

    #[test]
    fn shadows_are_checked() {
        let ok = errors(
            "  d:\n    versions:\n      v1: { upstream: a, state: stable }\n      v2: { upstream: a, state: shadow, shadow: { sample: 12.5, max_body: 1MiB, timeout: 2s, compare: { atol: 0, top_k: 3 } } }\n",
        );
        assert_eq!(ok, []);
        let e = errors(
            "  d:\n    versions:\n      v1: { upstream: a, state: stable, shadow: { sample: 5 } }\n      v2: { upstream: a, state: shadow }\n      v3: { upstream: a, state: shadow, shadow: { sample: 101, max_in_flight: 0, compare: { rtol: -1, top_k: 0 } } }\n",
        );
        let paths: Vec<&str> = e.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "models.d.versions.v1.shadow",
                "models.d.versions.v2.shadow",
                "models.d.versions.v3.shadow.sample",
                "models.d.versions.v3.shadow.max_in_flight",
                "models.d.versions.v3.shadow.compare.rtol",
                "models.d.versions.v3.shadow.compare.top_k"
            ],
            "{e:?}"
        );
        let e = errors(
            "  d:\n    versions:\n      v1: { upstream: a, state: stable }\n      v2: { upstream: a, state: shadow, shadow: { sampel: 5 } }\n",
        );
        assert!(!e.is_empty(), "unknown fields are refused");
    }

    #[test]
    fn paths_get_the_names() {
        let yaml = "upstreams:\n  a: { targets: [\"http://127.0.0.1:1\"] }\nmodels:\n  digits:\n    split_key: header:x-user\n    versions:\n      v1: { upstream: a, state: stable }\n      v2: { upstream: a, state: canary, weight: 5, path: \"/predictions/{model}/{version}/\", tags: { git: abc123 } }\n";
        let c = crate::from_yaml(yaml).unwrap();
        let m = &c.models["digits"];
        assert_eq!(m.versions[0].prefix, "/v2/models/digits/versions/v1");
        assert_eq!((m.versions[1].prefix.as_str(), m.versions[1].buckets), ("/predictions/digits/v2", 500));
        assert_eq!(m.split_key, crate::model::SplitKey::Header(http::HeaderName::from_static("x-user")));
    }
}
