//! Reading a config from disk: main file, include directory, `${ENV}` interpolation, then validation.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_norway::Value;
use sha2::{Digest, Sha256};

use crate::error::{ConfigError, ConfigErrors};
use crate::interpolate::interpolate;
use crate::model::{Config, Meta};
use crate::raw::{RawConfig, RawFragment};
use crate::validate::{Parsed, validate};

/// Where the main config comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A YAML file on disk (watched for changes).
    File(PathBuf),
    /// YAML held in memory, e.g. the embedded default of `modelgate up`; `name` is used in errors.
    Inline { name: PathBuf, text: Arc<str> },
}

/// Variables for `${NAME}` interpolation: explicit values first, then the process environment.
#[derive(Debug, Clone, Default)]
pub struct Vars {
    pub overrides: HashMap<String, String>,
    /// Include files read from here instead of the disk (`None`: as if absent) — a change checked before it is
    /// written (the namespace API's dry run).
    pub include_overlay: HashMap<PathBuf, Option<Arc<str>>>,
}

/// A loaded config together with the files it was read from (for `modelgate validate` output).
pub type Loaded = Config;

// === impl Source ===

impl Source {
    pub fn name(&self) -> &Path {
        match self {
            Source::File(p) => p,
            Source::Inline { name, .. } => name,
        }
    }
}

// === impl Vars ===

impl Vars {
    fn lookup(&self, name: &str) -> Option<String> {
        #[allow(clippy::disallowed_methods)] // config loading is where the environment is read
        self.overrides.get(name).cloned().or_else(|| std::env::var(name).ok())
    }
}

/// Loads a config from YAML text with no variables but the environment: for tests and tools (errors name the
/// file `<inline>`).
pub fn from_yaml(text: &str) -> Result<Config, ConfigErrors> {
    load(&Source::Inline { name: PathBuf::from("<inline>"), text: text.into() }, &Vars::default())
}

/// Loads, interpolates and validates a config. Returns every error found.
pub fn load(source: &Source, vars: &Vars) -> Result<Config, ConfigErrors> {
    let mut errors = Vec::new();
    let main_file = source.name().to_path_buf();
    let text: Arc<str> = match source {
        Source::File(p) => std::fs::read_to_string(p)
            .map_err(|e| ConfigError::new(p, "", format!("cannot read config file: {e}")).hint("check the path passed to --config"))?
            .into(),
        Source::Inline { text, .. } => text.clone(),
    };
    // An empty main file is never a config someone meant: it is what a watcher sees between an editor's truncate and
    // its write. Rejecting it keeps the running config; the write that follows triggers the next reload.
    if text.trim().is_empty() {
        return Err(ConfigErrors(vec![ConfigError::new(&main_file, "", "the config file is empty").hint(
            "a config needs at least `routes:` and `upstreams:`; if the file was being written, the reload runs again when the write ends",
        )]));
    }
    // The version hash covers the files' text and the value of every variable they use.
    let mut hasher = Sha256::new();
    let mut secret_files = Vec::new();
    let Some(value) = parse_file(&main_file, &text, vars, &mut hasher, &mut errors, &mut secret_files) else {
        return Err(ConfigErrors(errors));
    };
    let include = value.get("include").and_then(Value::as_str).map(String::from);
    // Teams' files (those named after a namespace) may not read the gateway's environment or files.
    let namespaces: Vec<String> = value
        .get("namespaces")
        .and_then(Value::as_mapping)
        .map(|m| m.keys().filter_map(|k| k.as_str().map(String::from)).collect())
        .unwrap_or_default();
    // A schema error in the main file is reported, and the include files are still checked.
    let raw: Option<RawConfig> = match crate::from_owned_value(value.clone(), &main_file, "") {
        Ok(raw) => Some(raw),
        Err(first) => {
            errors.extend(all_schema_errors::<RawConfig>(&value, &main_file, first));
            None
        }
    };

    let mut sources = vec![(main_file.clone(), text)];
    let mut watch_paths = vec![main_file.clone()];
    let mut fragments = Vec::new();
    if let Some(dir) = &include {
        let base = main_file.parent().unwrap_or(Path::new("."));
        let dir = base.join(dir);
        watch_paths.push(dir.clone());
        match list_yaml(&dir) {
            Ok(mut paths) => {
                for (p, text) in &vars.include_overlay {
                    match text {
                        Some(_) if p.parent() == Some(dir.as_path()) && !paths.contains(p) => paths.push(p.clone()),
                        None => paths.retain(|x| x != p),
                        _ => {}
                    }
                }
                paths.sort();
                for path in paths {
                    let read = match vars.include_overlay.get(&path) {
                        Some(Some(text)) => Ok(text.to_string()),
                        _ => std::fs::read_to_string(&path),
                    };
                    let text: Arc<str> = match read {
                        Ok(t) => t.into(),
                        Err(e) => {
                            errors.push(ConfigError::new(&path, "", format!("cannot read include file: {e}")));
                            continue;
                        }
                    };
                    hasher.update(path.to_string_lossy().as_bytes());
                    if let Some(ns) = crate::namespaces::of_file(&path).filter(|n| namespaces.iter().any(|x| x == n))
                        && text.contains("${")
                    {
                        errors.push(
                            ConfigError::new(
                                &path,
                                "",
                                format!("namespace {ns}: a team's file cannot use ${{…}} (environment variables or files)"),
                            )
                            .hint("write the values; secrets a team's routes need belong in the platform config")
                            .rule("namespace.secrets"),
                        );
                        sources.push((path, text));
                        continue;
                    }
                    let Some(value) = parse_file(&path, &text, vars, &mut hasher, &mut errors, &mut secret_files) else { continue };
                    match crate::from_owned_value::<RawFragment>(value.clone(), &path, "") {
                        Ok(f) => fragments.push((path.clone(), f)),
                        Err(first) => errors.extend(all_schema_errors::<RawFragment>(&value, &path, first)),
                    }
                    sources.push((path, text));
                }
            }
            Err(e) => errors.push(
                ConfigError::new(&main_file, "include", format!("cannot read include directory {}: {e}", dir.display()))
                    .hint("create the directory or remove `include`"),
            ),
        }
    }

    let Some(raw) = raw else { return Err(ConfigErrors(errors)) };
    let hash = hasher.finalize();
    let hash: String = hash.iter().take(6).map(|b| format!("{b:02x}")).collect();
    let meta = Meta { hash, watch_paths, sources, data_files: secret_files };
    let parsed = Parsed { main: (main_file, raw), fragments };
    match validate(parsed, meta) {
        Ok(config) if errors.is_empty() => Ok(config),
        Ok(_) => Err(ConfigErrors(errors)),
        Err(mut more) => {
            errors.append(&mut more.0);
            Err(ConfigErrors(errors))
        }
    }
}

/// Every schema error of a document, not only the first one serde stops at: each top-level section read on its
/// own, and each upstream and each route on its own (so a typo in one route does not hide one in another).
/// `first` is the error the whole document gave; it is returned alone if the parts show nothing more.
fn all_schema_errors<T: serde::de::DeserializeOwned>(value: &Value, file: &Path, first: ConfigError) -> Vec<ConfigError> {
    let Value::Mapping(map) = value else { return vec![first] };
    let mut errors = Vec::new();
    for (k, v) in map {
        match (k.as_str(), v) {
            (Some("routes"), Value::Sequence(routes)) => {
                for (i, r) in routes.iter().enumerate() {
                    if let Err(e) = crate::from_owned_value::<crate::raw::RawRoute>(r.clone(), file, &format!("routes[{i}]")) {
                        errors.push(e);
                    }
                }
            }
            (Some("upstreams"), Value::Mapping(ups)) => {
                for (name, u) in ups {
                    let base = format!("upstreams.{}", name.as_str().unwrap_or("?"));
                    if let Err(e) = crate::from_owned_value::<crate::raw::RawUpstream>(u.clone(), file, &base) {
                        errors.push(e);
                    }
                }
            }
            _ => {
                let mut one = serde_norway::Mapping::new();
                one.insert(k.clone(), v.clone());
                if let Err(e) = crate::from_owned_value::<T>(Value::Mapping(one), file, "") {
                    errors.push(e);
                }
            }
        }
    }
    if errors.is_empty() { vec![first] } else { errors }
}

/// Parses YAML and interpolates variables, feeding the text and the variables used into `hasher`. `${file:PATH}`
/// reads a secret file (relative to `file`), which is added to `secret_files` so that changing it reloads.
fn parse_file(
    file: &Path,
    text: &str,
    vars: &Vars,
    hasher: &mut Sha256,
    errors: &mut Vec<ConfigError>,
    secret_files: &mut Vec<PathBuf>,
) -> Option<Value> {
    hasher.update(text.as_bytes());
    let mut value: Value = match serde_norway::from_str(text) {
        Ok(Value::Null) => Value::Mapping(Default::default()),
        Ok(v) => v,
        Err(e) => {
            let at = e.location().map(|l| format!("line {}, column {}", l.line(), l.column())).unwrap_or_default();
            errors.push(ConfigError::new(file, at, format!("invalid YAML: {}", crate::clean_serde_message(&e.to_string()))));
            return None;
        }
    };
    let used = std::cell::RefCell::new(Vec::new());
    let base = file.parent().unwrap_or(Path::new("."));
    let lookup = |n: &str| {
        let v = match n.strip_prefix("file:") {
            Some(p) => {
                let path = base.join(p.trim());
                std::fs::read_to_string(&path).ok().map(|t| t.trim_end_matches(['\n', '\r']).to_string())
            }
            None => vars.lookup(n),
        };
        used.borrow_mut().push((n.to_string(), v.clone()));
        v
    };
    let mut found = Vec::new();
    interpolate(&mut value, &mut String::new(), &lookup, &mut found);
    for (name, v) in used.into_inner() {
        if let Some(p) = name.strip_prefix("file:") {
            let path = base.join(p.trim());
            if !secret_files.contains(&path) {
                secret_files.push(path);
            }
        }
        hasher.update(name.as_bytes());
        hasher.update(v.as_deref().unwrap_or("\0unset").as_bytes());
    }
    // Missing variables are reported, and loading goes on so the other errors show up in the same run.
    errors.extend(found.into_iter().map(|(path, msg, hint)| ConfigError::new(file, path, msg).hint(hint)));
    Some(value)
}

fn list_yaml(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    paths.sort();
    Ok(paths)
}

/// Keys whose values are treated as secrets when the config is shown.
const SECRET_WORDS: &[&str] = &["secret", "password", "token", "api_key", "apikey", "authorization", "credential", "private"];

/// The config files as written (before interpolation), with secret-looking values redacted; for the admin API.
pub fn redacted_view(sources: &[(PathBuf, Arc<str>)]) -> serde_json::Value {
    let mut files = serde_json::Map::new();
    for (path, text) in sources {
        let shown = match serde_norway::from_str::<Value>(text) {
            Ok(v) => to_redacted_json(&v),
            Err(_) => serde_json::Value::Null,
        };
        files.insert(path.display().to_string(), shown);
    }
    serde_json::Value::Object(files)
}

fn to_redacted_json(value: &Value) -> serde_json::Value {
    fn walk(v: &mut serde_json::Value, secret: bool, parent: &str) {
        match v {
            serde_json::Value::String(s) if secret && !is_reference(s) => *s = "<redacted>".into(),
            // A password in a URL (`redis://:pw@host`) is redacted wherever it appears.
            serde_json::Value::String(s) => {
                if let Some((scheme, rest)) = s.split_once("://")
                    && let Some((userinfo, host)) = rest.split_once('@')
                    && !userinfo.contains('/')
                    && !is_reference(userinfo.trim_start_matches(':'))
                {
                    *s = format!("{scheme}://<redacted>@{host}");
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(|i| walk(i, secret, parent)),
            serde_json::Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    let k = k.to_ascii_lowercase();
                    // Trace export headers are mostly vendor credentials, whatever their names.
                    let export_headers = parent == "tracing" && k == "headers";
                    walk(v, secret || export_headers || SECRET_WORDS.iter().any(|w| k.contains(w)), &k);
                }
            }
            _ => {}
        }
    }
    // `${NAME}` alone names a variable; showing the name reveals nothing.
    fn is_reference(s: &str) -> bool {
        s.starts_with("${") && s.ends_with('}') && s.matches("${").count() == 1
    }
    let mut json = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
    walk(&mut json, false, "");
    json
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_files_of_upstreams_in_fragments_are_watched() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("teams")).unwrap();
        // Not a real certificate: the CA file is watched whatever it holds, and reading it fails (listed too).
        std::fs::write(d.join("teams/ca.pem"), "").unwrap();
        std::fs::write(
            d.join("teams/a.yaml"),
            "upstreams:\n  a: { targets: [\"https://a.internal\"], tls: { ca: ca.pem } }\nroutes:\n  - { name: a, match: { path_prefix: /a }, upstream: a }\n",
        )
        .unwrap();
        std::fs::write(d.join("main.yaml"), "include: teams\n").unwrap();
        let errors = load(&Source::File(d.join("main.yaml")), &Vars::default()).unwrap_err();
        assert!(errors.to_string().contains("upstreams.a.tls.ca"), "{errors}");
        // With a readable CA the fragment's file is among those watched.
        std::fs::write(d.join("teams/ca.pem"), rcgen_free_ca()).unwrap();
        let config = load(&Source::File(d.join("main.yaml")), &Vars::default()).unwrap();
        assert!(config.meta.data_files.contains(&d.join("teams").join("ca.pem")), "{:?}", config.meta.data_files);
    }

    #[test]
    fn an_empty_main_file_is_rejected_with_a_hint() {
        for text in ["", "  \n\n"] {
            let errors = from_yaml(text).unwrap_err();
            assert_eq!(errors.0.len(), 1);
            assert_eq!(errors.0[0].message, "the config file is empty");
            assert!(errors.0[0].hint.as_deref().unwrap().contains("routes:"));
        }
    }

    /// A self-signed CA certificate, PEM (a fixed test vector: no certificate generator in this crate).
    fn rcgen_free_ca() -> &'static str {
        include_str!("../tests/data/ca.pem")
    }

    #[test]
    fn redacts_secret_looking_values() {
        let v: Value = serde_norway::from_str(
            "routes:\n- plugins:\n  - headers: {request: {add: {Authorization: 'Bearer abc', x-team: ml}}}\n  - auth: {api_key: '${KEY}', client_secret: hunter2}\nobservability: {tracing: {endpoint: 'http://c:4317', headers: {x-honeycomb-team: hc123}}}\n",
        )
        .unwrap();
        let s = to_redacted_json(&v).to_string();
        assert!(!s.contains("Bearer abc") && !s.contains("hunter2") && !s.contains("hc123"), "{s}");
        assert!(s.contains("${KEY}") && s.contains("\"ml\""), "{s}");
    }
}
