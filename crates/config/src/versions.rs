//! `models`: model versions bound to upstreams, checked (docs/versions.md).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::ConfigError;
use crate::model::{ManagedModel, ManagedVersion, RolloutConfig, ShadowConfig, SplitKey, UpstreamConfig};
use crate::raw::{RawModel, RawRollout, RawShadow, VersionState};

/// The split's resolution: a weight is a number of these buckets out of [`BUCKETS`] (0.01 percentage point each).
pub const BUCKETS: u32 = 10_000;

/// The models of every file (the main file's, then the include files'), each checked against the upstreams; a name
/// defined twice is an error naming both files. Also returns the file each model is defined in.
pub(crate) fn models<'a>(
    sources: impl Iterator<Item = (&'a PathBuf, &'a BTreeMap<String, RawModel>)>,
    upstreams: &BTreeMap<String, Arc<UpstreamConfig>>,
    errors: &mut Vec<ConfigError>,
) -> (BTreeMap<String, Arc<ManagedModel>>, HashMap<String, PathBuf>) {
    let mut out = BTreeMap::new();
    let mut files: HashMap<String, PathBuf> = HashMap::new();
    for (file, raw) in sources {
        for (name, m) in raw {
            if let Some(first) = files.get(name) {
                errors.push(
                    ConfigError::new(file, format!("models.{name}"), format!("model {name:?} is already defined in {}", first.display()))
                        .hint("model names are global across included files; rename one"),
                );
                continue;
            }
            files.insert(name.clone(), file.clone());
            if let Some(model) = model(file, name, m, upstreams, errors) {
                out.insert(name.clone(), Arc::new(model));
            }
        }
    }
    (out, files)
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
            (VersionState::Canary, None) if raw.rollout.as_ref().is_some_and(|r| &r.version == v) => 0,
            (VersionState::Canary, Some(_)) if raw.rollout.as_ref().is_some_and(|r| &r.version == v) => {
                errors.push(
                    ConfigError::new(file, format!("{vat}.weight"), "the rollout sets this canary's weight")
                        .hint(format!("remove weight; models.{name}.rollout.steps give it")),
                );
                0
            }
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
            runtimes: Vec::new(),
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
    let rollout = raw.rollout.as_ref().and_then(|r| rollout(file, &format!("{at}.rollout"), r, &versions, total, errors));
    (errors.len() == before).then(|| ManagedModel { name: name.to_string(), versions, split_key: split_key.expect("checked"), rollout })
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

fn rollout(
    file: &Path,
    at: &str,
    raw: &RawRollout,
    versions: &[ManagedVersion],
    others: u32,
    errors: &mut Vec<ConfigError>,
) -> Option<RolloutConfig> {
    let before = errors.len();
    let names = || versions.iter().map(|v| v.name.as_str()).collect::<Vec<_>>().join(", ");
    match versions.iter().find(|v| v.name == raw.version) {
        Some(v) if v.state == VersionState::Canary => {}
        Some(v) => errors.push(
            ConfigError::new(file, format!("{at}.version"), format!("version {:?} is {}, not a canary", raw.version, state_name(v.state)))
                .hint("a rollout moves a canary's weight; set its state: canary"),
        ),
        None => errors.push(
            ConfigError::new(file, format!("{at}.version"), format!("no version {:?}", raw.version)).hint(format!("versions: {}", names())),
        ),
    }
    let steps: Vec<u32> = raw.steps.iter().enumerate().map(|(i, w)| percent(file, &format!("{at}.steps[{i}]"), *w, errors)).collect();
    if steps.is_empty() || steps.windows(2).any(|w| w[0] >= w[1]) {
        errors.push(
            ConfigError::new(file, format!("{at}.steps"), "the steps must be increasing weights").hint("e.g. steps: [5, 25, 50, 100]"),
        );
    }
    if steps.last().is_some_and(|s| s + others > BUCKETS) {
        errors.push(
            ConfigError::new(file, format!("{at}.steps"), "the last step and the other canaries' weights sum past 100%")
                .hint("lower the last step or the other canaries' weights"),
        );
    }
    let mut gates = Vec::new();
    for (i, g) in raw.gates.iter().enumerate() {
        match raw.steps.iter().position(|s| (s - g).abs() < 1e-9) {
            Some(k) => gates.push(k),
            None => errors.push(
                ConfigError::new(file, format!("{at}.gates[{i}]"), format!("{g} is not one of the steps"))
                    .hint("a gate names a step's weight"),
            ),
        }
    }
    if raw.interval.0 < std::time::Duration::from_millis(100) {
        errors.push(ConfigError::new(file, format!("{at}.interval"), "the interval is under 100ms").hint("e.g. 30s or 1m"));
    }
    if raw.breaches == 0 {
        errors.push(ConfigError::new(file, format!("{at}.breaches"), "0 breaches would roll back at once").hint("at least 1 (default 2)"));
    }
    let slo = &raw.slo;
    if !(slo.max_error_rate_increase.is_finite() && (0.0..=100.0).contains(&slo.max_error_rate_increase)) {
        errors.push(
            ConfigError::new(
                file,
                format!("{at}.slo.max_error_rate_increase"),
                format!("{} is not percentage points", slo.max_error_rate_increase),
            )
            .hint("0 to 100, e.g. 1 (the canary may fail 1 % more of its requests than stable)"),
        );
    }
    if !(slo.max_p99_ratio.is_finite() && slo.max_p99_ratio >= 1.0) {
        errors.push(
            ConfigError::new(file, format!("{at}.slo.max_p99_ratio"), format!("{} is below 1", slo.max_p99_ratio))
                .hint("1 or more, e.g. 1.5 (the canary's p99 at most 1.5 × stable's)"),
        );
    }
    let shadow = match (&slo.shadow, slo.min_shadow_agreement) {
        (None, None) => None,
        (Some(s), Some(pct)) => {
            if !versions.iter().any(|v| &v.name == s && v.state == VersionState::Shadow) {
                errors.push(
                    ConfigError::new(file, format!("{at}.slo.shadow"), format!("{s:?} is not a shadow version of this model"))
                        .hint(format!("versions: {}", names())),
                );
            }
            if !(0.0..=100.0).contains(&pct) {
                errors.push(
                    ConfigError::new(file, format!("{at}.slo.min_shadow_agreement"), format!("{pct} is not a percentage"))
                        .hint("0 to 100, e.g. 99"),
                );
            }
            Some((s.clone(), pct))
        }
        (Some(_), None) => {
            errors.push(
                ConfigError::new(file, format!("{at}.slo.min_shadow_agreement"), "`shadow` without `min_shadow_agreement`")
                    .hint("e.g. min_shadow_agreement: 99"),
            );
            None
        }
        (None, Some(_)) => {
            errors.push(
                ConfigError::new(file, format!("{at}.slo.shadow"), "`min_shadow_agreement` without `shadow`")
                    .hint("name the shadow version whose agreement counts"),
            );
            None
        }
    };
    (errors.len() == before).then(|| RolloutConfig {
        version: raw.version.clone(),
        steps,
        interval: raw.interval.0,
        min_samples: raw.min_samples,
        breaches: raw.breaches,
        gates,
        max_error_rate_increase: slo.max_error_rate_increase,
        max_p99_ratio: slo.max_p99_ratio,
        shadow,
    })
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
