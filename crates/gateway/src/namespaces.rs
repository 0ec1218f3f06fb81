//! The namespace API (docs/self-service.md): a namespace's owners add, replace and remove the routes and upstreams
//! of their namespace's include file. A change is checked as the whole config would be with the file changed —
//! the namespace's guardrails and every other check — and, when it passes, written (by rename) and reloaded: the
//! include file stays the one source of truth, so Git-managed files and API changes never disagree. A dry run
//! answers the same check and the diff, with no side effect.

use std::collections::HashMap;
use std::sync::Arc;

use modelgate_config::raw::{RawFragment, RawRoute};

use crate::reload::Shared;

/// What a change touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Route,
    Upstream,
    Model,
    /// One version of a model of the namespace; named `{model}/{version}`.
    Version,
}

impl Kind {
    fn noun(self) -> &'static str {
        match self {
            Kind::Route => "route",
            Kind::Upstream => "upstream",
            Kind::Model => "model",
            Kind::Version => "model version",
        }
    }
}

/// One change to a namespace's file.
#[derive(Debug, Clone, Copy)]
pub enum Edit<'a> {
    /// Add or replace one route, upstream or model (`PUT …/routes/{name}`, `…/upstreams/{name}`, `…/models/{name}`).
    Put(Kind, &'a str, &'a [u8]),
    /// Remove one (`DELETE`).
    Delete(Kind, &'a str),
    /// Replace the whole file's content (`PUT /admin/namespaces/{ns}`, `modelgate apply`).
    Replace(&'a [u8]),
}

/// Why a namespace request is refused.
#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error("no namespace {0:?} in the config (namespaces)")]
    Unknown(String),
    #[error("the config has no include directory, so namespaces have no files (set `include`)")]
    NoIncludeDir,
    #[error("{0}")]
    BadBody(String),
    #[error("the namespace's file cannot be read: {0}")]
    File(String),
    #[error("the change was refused; the running config is unchanged")]
    Refused { errors: modelgate_config::ConfigErrors, diff: String, verdicts: serde_json::Value },
    #[error("the file was written but the reload failed: {0}")]
    Reload(modelgate_config::ConfigErrors),
    #[error("the namespace was changed on another gateway since this one read it; it catches up within a second — retry")]
    Conflict,
    #[error("the shared store (Redis) did not answer; changes are refused until it does, and the running config keeps serving")]
    Unavailable,
}

impl NamespaceError {
    /// The HTTP status and stable code.
    pub fn status_code(&self) -> (http::StatusCode, &'static str) {
        use http::StatusCode as S;
        match self {
            NamespaceError::Unknown(_) => (S::NOT_FOUND, "not_found"),
            NamespaceError::NoIncludeDir => (S::CONFLICT, "no_include_dir"),
            NamespaceError::BadBody(_) => (S::BAD_REQUEST, "invalid_request"),
            NamespaceError::File(_) => (S::CONFLICT, "namespace_file_unreadable"),
            // A route that would capture another namespace's traffic is a conflict with its owner; a change refused
            // only for its namespace's quotas is a quota refusal; anything else is an invalid config.
            NamespaceError::Refused { errors, .. } if errors.0.iter().any(|e| e.rule == Some("namespace.capture")) => {
                (S::CONFLICT, "route_conflict")
            }
            NamespaceError::Refused { errors, .. } if errors.0.iter().all(|e| e.rule == Some("namespace.quota")) => {
                (S::FORBIDDEN, "quota_exceeded")
            }
            NamespaceError::Refused { .. } => (S::UNPROCESSABLE_ENTITY, "config_invalid"),
            NamespaceError::Reload(_) => (S::CONFLICT, "reload_failed"),
            NamespaceError::Conflict => (S::CONFLICT, "namespace_conflict"),
            NamespaceError::Unavailable => (S::SERVICE_UNAVAILABLE, "shared_store_unavailable"),
        }
    }
}

/// Changes are made one at a time (check, write, reload), so two owners' changes never interleave.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// With a shared store: the version (from Redis) each namespace's local file is at.
static APPLIED: std::sync::Mutex<std::collections::BTreeMap<String, u64>> = std::sync::Mutex::new(std::collections::BTreeMap::new());

fn applied(ns: &str) -> u64 {
    APPLIED.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(ns).copied().unwrap_or(0)
}

fn set_applied(ns: &str, seq: u64) {
    APPLIED.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(ns.to_string(), seq);
}

/// A namespace's document in the shared store.
#[derive(serde::Deserialize)]
struct Document {
    seq: u64,
    text: String,
}

/// Whether the caller owns namespace `ns` (as a consumer, by a group, or by a claim's value), or is an admin.
pub fn may_change(config: &modelgate_config::Config, ns: &str, caller: &modelgate_pipeline::principal::Principal) -> bool {
    let groups = &caller.groups;
    let admin = config.admin_consumers.contains(&caller.consumer) || groups.iter().any(|g| config.admin_groups.contains(g));
    admin || config.namespaces.get(ns).is_some_and(|o| owns(&o.owners, caller))
}

fn owns(o: &modelgate_config::raw::RawOwners, caller: &modelgate_pipeline::principal::Principal) -> bool {
    let has = |claim: &serde_json::Value, values: &[String]| match claim {
        serde_json::Value::String(s) => values.contains(s),
        serde_json::Value::Array(a) => a.iter().any(|v| v.as_str().is_some_and(|s| values.iter().any(|w| w == s))),
        _ => false,
    };
    o.consumers.contains(&caller.consumer)
        || caller.groups.iter().any(|g| o.groups.contains(g))
        || o.claims.iter().any(|(name, values)| caller.claims.get(name).is_some_and(|c| has(c, values)))
}

/// `GET /admin/namespaces/{ns}`: the namespace's owners and its file's routes and upstreams.
pub fn view(shared: &Shared, ns: &str) -> Result<serde_json::Value, NamespaceError> {
    let snap = shared.snapshot.load();
    let owners = &snap.config.namespaces.get(ns).ok_or_else(|| NamespaceError::Unknown(ns.into()))?.owners;
    let file = file_of(&snap.config, ns)?;
    let (_, fragment) = read(&file)?;
    Ok(serde_json::json!({
        "namespace": ns,
        "owners": owners,
        "file": file.display().to_string(),
        "upstreams": fragment.upstreams,
        "routes": fragment.routes,
        "models": fragment.models,
    }))
}

/// Applied changes kept per namespace (`{include}/.history/{ns}.jsonl`; older ones are dropped).
const HISTORY: usize = 50;

/// One change to namespace `ns`'s file by `who`. With `dry_run`, only the check and the diff. Returns the outcome:
/// `changed`, `diff`, and (applied) the config `version` now serving and the change's number in the history.
pub async fn change(shared: &Arc<Shared>, ns: &str, edit: Edit<'_>, dry_run: bool, who: &str) -> Result<serde_json::Value, NamespaceError> {
    let _one = ONE_AT_A_TIME.lock().await;
    let (file, store, guardrails) = {
        let snap = shared.snapshot.load();
        let guardrails = snap.config.namespaces.get(ns).ok_or_else(|| NamespaceError::Unknown(ns.into()))?.clone();
        (file_of(&snap.config, ns)?, snap.shared_store.clone(), guardrails)
    };
    let (old_text, mut fragment) = read(&file)?;
    match edit {
        Edit::Put(kind, name, body) => apply(&mut fragment, kind, name, Some(body))?,
        Edit::Delete(kind, name) => apply(&mut fragment, kind, name, None)?,
        // An empty body (a revert to before the first change) empties the namespace.
        Edit::Replace(body) if body.iter().all(u8::is_ascii_whitespace) => {
            fragment = RawFragment::default();
        }
        Edit::Replace(body) => {
            fragment = serde_norway::from_slice(body)
                .map_err(|e| NamespaceError::BadBody(format!("the body is not a namespace file (upstreams, routes, models): {e}")))?;
        }
    }
    let new_text = if fragment.routes.is_empty() && fragment.upstreams.is_empty() && fragment.models.is_empty() {
        String::new()
    } else {
        let mut value = serde_norway::to_value(&fragment).map_err(|e| NamespaceError::BadBody(e.to_string()))?;
        prune(&mut value);
        serde_norway::to_string(&value).map_err(|e| NamespaceError::BadBody(e.to_string()))?
    };
    let diff = similar::TextDiff::from_lines(old_text.as_str(), new_text.as_str())
        .unified_diff()
        .header(&format!("a/{ns}.yaml"), &format!("b/{ns}.yaml"))
        .to_string();
    let changed = old_text != new_text;
    let overlay_text = (!new_text.is_empty()).then(|| Arc::<str>::from(new_text.as_str()));
    if let Err(errors) = shared.check_with(HashMap::from([(file.clone(), overlay_text)])).await {
        let verdicts = verdicts(&guardrails, &fragment, &errors.0);
        return Err(NamespaceError::Refused { errors, diff, verdicts });
    }
    let verdicts = verdicts(&guardrails, &fragment, &[]);
    let mut out = serde_json::json!({ "namespace": ns, "dry_run": dry_run, "changed": changed, "diff": diff, "verdicts": verdicts });
    if dry_run || !changed {
        return Ok(out);
    }
    // Shared by several gateways: published first (only if no other gateway changed the namespace meanwhile), so a
    // change is either on every gateway or on none.
    if let Some(store) = &store {
        match store.publish_document(&format!("ns:{ns}:seq"), &format!("ns:{ns}:doc"), CHANNEL, applied(ns), &new_text).await {
            Ok(Some(seq)) => set_applied(ns, seq),
            Ok(None) => return Err(NamespaceError::Conflict),
            Err(()) => return Err(NamespaceError::Unavailable),
        }
    }
    write(&file, &new_text).map_err(|e| NamespaceError::File(e.to_string()))?;
    let version = shared.reload("namespace_api").await.map_err(NamespaceError::Reload)?;
    let entry = serde_json::json!({
        "at": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        "by": who,
        "version": version,
        "diff": diff,
        "before": old_text,
        "after": new_text,
    });
    out["change"] = record(&file, entry).into();
    out["version"] = version.into();
    Ok(out)
}

/// Every guardrail of the namespace with its verdict on the changed file (`pass` or `fail`, the rule that decided,
/// and what it checked or why it failed), then `config` for every other check. Quotas state what is left.
fn verdicts(
    ns: &modelgate_config::raw::RawNamespace,
    fragment: &RawFragment,
    errors: &[modelgate_config::ConfigError],
) -> serde_json::Value {
    let versions: usize = fragment.models.values().map(|m| m.versions.len()).sum();
    let quota = |what: &str, n: usize, max: Option<usize>| match max {
        Some(max) => format!("{what}: {n} of {max} ({} left)", max.saturating_sub(n)),
        None => format!("{what}: {n} (no quota)"),
    };
    let quotas = [
        quota("routes", fragment.routes.len(), ns.max_routes),
        quota("upstreams", fragment.upstreams.len(), ns.max_upstreams),
        quota("models", fragment.models.len(), ns.max_models),
        quota("versions", versions, ns.max_versions),
    ]
    .join("; ");
    let list = |v: &[String]| v.join(", ");
    let mut rules: Vec<(&str, String)> = vec![
        ("namespace.paths", format!("routes and models inside {}", list(&ns.paths))),
        ("namespace.capture", "no route or model inside another namespace's paths".into()),
        ("namespace.upstreams", "routes and versions use the namespace's own upstreams".into()),
        ("namespace.secrets", "no ${…} (the gateway's environment and files)".into()),
        (
            "namespace.auth",
            if ns.auth_methods.is_empty() {
                "every route authenticates".into()
            } else {
                format!("every route authenticates, with {}", list(&ns.auth_methods))
            },
        ),
    ];
    if !ns.upstream_hosts.is_empty() {
        rules.push(("namespace.upstream_hosts", format!("upstream targets on {}", list(&ns.upstream_hosts))));
    }
    if let Some(r) = &ns.max_rate {
        rules.push((
            "namespace.max_rate",
            format!("every route rate-limited to at most {} per {}", r.limit, humantime::format_duration(r.per.0)),
        ));
    }
    if let Some(b) = ns.max_body {
        rules.push(("namespace.max_body", format!("request bodies at most {b}")));
    }
    if let Some(s) = ns.max_shadow_sample {
        rules.push(("namespace.max_shadow_sample", format!("shadow samples at most {s}%")));
    }
    rules.push(("namespace.quota", quotas));
    if !ns.runtimes.is_empty() {
        rules.push(("namespace.runtimes", format!("checked by each version's readiness probe: platform one of {}", list(&ns.runtimes))));
    }
    let listed: Vec<&str> = rules.iter().map(|(r, _)| *r).collect();
    let verdict = |rule: &str, checked: String, decides: &dyn Fn(Option<&str>) -> bool| {
        let failed: Vec<String> = errors.iter().filter(|e| decides(e.rule)).map(|e| e.to_string()).collect();
        let verdict = if failed.is_empty() { "pass" } else { "fail" };
        serde_json::json!({ "rule": rule, "verdict": verdict, "checked": checked, "errors": failed })
    };
    let mut out: Vec<serde_json::Value> = rules.iter().map(|(r, checked)| verdict(r, checked.clone(), &|e| e == Some(*r))).collect();
    let other = |e: Option<&str>| e.is_none_or(|r| !listed.contains(&r));
    out.push(verdict("config", "every other check of the whole config with this file".into(), &other));
    out.into()
}

/// The Redis channel announcing namespace changes.
const CHANNEL: &str = "ns:changes";

/// Time between two reads of the documents when no change was announced: the catch-up for a missed message.
const CATCH_UP: std::time::Duration = std::time::Duration::from_secs(5);

/// With a shared store (`redis`) and namespaces: at each change announced on the channel (and every [`CATCH_UP`],
/// and when the subscription is made again), each namespace's document is read and a newer one than the local
/// file's is written there and reloaded — a change accepted by any gateway is live on all within milliseconds,
/// and a gateway that missed messages or was down catches up from the version numbers.
pub async fn follow(shared: Arc<Shared>) {
    let wake = Arc::new(tokio::sync::Notify::new());
    let mut watching: Option<(Arc<modelgate_limits::store::RedisStore>, tokio::task::JoinHandle<()>)> = None;
    loop {
        let (store, names, dir) = {
            let snap = shared.snapshot.load();
            (snap.shared_store.clone(), snap.config.namespaces.keys().cloned().collect::<Vec<_>>(), snap.config.include_dir.clone())
        };
        // Subscribed to the store the running config names (a reload may change it).
        let same = matches!((&watching, &store), (Some((w, _)), Some(s)) if Arc::ptr_eq(w, s));
        if !same {
            if let Some((_, task)) = watching.take() {
                task.abort();
            }
            if let Some(s) = store.clone().filter(|_| !names.is_empty()) {
                let (s2, wake2) = (s.clone(), wake.clone());
                watching = Some((s, tokio::spawn(async move { s2.follow_channel(CHANNEL, &wake2).await })));
            }
        }
        if let (Some(store), Some(dir)) = (store, dir.filter(|_| !names.is_empty())) {
            catch_up(&shared, &store, &names, &dir).await;
        }
        let _ = tokio::time::timeout(CATCH_UP, wake.notified()).await;
    }
}

/// Reads every namespace's document and follows the newer ones.
async fn catch_up(shared: &Arc<Shared>, store: &modelgate_limits::store::RedisStore, names: &[String], dir: &std::path::Path) {
    let keys: Vec<String> = names.iter().map(|ns| format!("ns:{ns}:doc")).collect();
    let Ok(docs) = store.get_values(&keys).await else { return };
    for (ns, doc) in names.iter().zip(docs) {
        let Some(doc) = doc.and_then(|d| serde_json::from_str::<Document>(&d).ok()) else { continue };
        if doc.seq <= applied(ns) {
            continue;
        }
        let _one = ONE_AT_A_TIME.lock().await;
        if doc.seq <= applied(ns) {
            continue;
        }
        let file = dir.join(format!("{ns}.yaml"));
        let local = std::fs::read_to_string(&file).unwrap_or_default();
        if local == doc.text {
            set_applied(ns, doc.seq);
            continue;
        }
        if let Err(e) = write(&file, &doc.text) {
            tracing::warn!(namespace = %ns, error = %e, "cannot write the namespace's file from the shared store");
            continue;
        }
        set_applied(ns, doc.seq);
        tracing::info!(namespace = %ns, seq = doc.seq, "namespace changed on another gateway: followed");
        let _ = shared.reload("namespace_sync").await;
    }
}

/// `GET /admin/namespaces/{ns}/history`: the applied changes, newest first (number, when, who, config version,
/// diff).
pub fn history(shared: &Shared, ns: &str) -> Result<serde_json::Value, NamespaceError> {
    let snap = shared.snapshot.load();
    if !snap.config.namespaces.contains_key(ns) {
        return Err(NamespaceError::Unknown(ns.into()));
    }
    let file = file_of(&snap.config, ns)?;
    let mut entries = read_history(&file);
    entries.reverse();
    for e in &mut entries {
        if let Some(m) = e.as_object_mut() {
            m.remove("before");
            m.remove("after");
        }
    }
    Ok(serde_json::json!({ "namespace": ns, "history": entries }))
}

/// `POST /admin/namespaces/{ns}/revert?change=N`: the namespace's file as it was before change N, applied as a
/// change of its own (checked, audited, recorded).
pub async fn revert(shared: &Arc<Shared>, ns: &str, number: u64, dry_run: bool, who: &str) -> Result<serde_json::Value, NamespaceError> {
    let file = {
        let snap = shared.snapshot.load();
        if !snap.config.namespaces.contains_key(ns) {
            return Err(NamespaceError::Unknown(ns.into()));
        }
        file_of(&snap.config, ns)?
    };
    let entry = read_history(&file)
        .into_iter()
        .find(|e| e["change"].as_u64() == Some(number))
        .ok_or_else(|| NamespaceError::BadBody(format!("no change {number} in the namespace's history (GET …/history lists them)")))?;
    let before = entry["before"].as_str().unwrap_or_default().to_string();
    change(shared, ns, Edit::Replace(before.as_bytes()), dry_run, who).await
}

fn history_file(file: &std::path::Path) -> std::path::PathBuf {
    let name = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    file.parent().unwrap_or(std::path::Path::new(".")).join(".history").join(format!("{name}.jsonl"))
}

fn read_history(file: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(history_file(file)).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// Appends an applied change (numbered after the last one) and keeps the newest [`HISTORY`]; its number.
fn record(file: &std::path::Path, mut entry: serde_json::Value) -> u64 {
    let mut entries = read_history(file);
    let number = entries.last().and_then(|e| e["change"].as_u64()).unwrap_or(0) + 1;
    entry["change"] = number.into();
    entries.push(entry);
    let keep = entries.len().saturating_sub(HISTORY);
    let text: String = entries[keep..].iter().map(|e| format!("{e}\n")).collect();
    let path = history_file(file);
    let saved = path.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|()| {
        let tmp = path.with_extension("jsonl.tmp");
        std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &path))
    });
    if let Err(e) = saved {
        tracing::warn!(file = %path.display(), error = %e, "namespace history not saved");
    }
    number
}

/// Drops nulls and empty lists and maps (the defaults), so the written file reads like one written by hand.
fn prune(v: &mut serde_norway::Value) {
    use serde_norway::Value;
    let empty = |v: &Value| match v {
        Value::Null => true,
        Value::Sequence(s) => s.is_empty(),
        Value::Mapping(m) => m.is_empty(),
        _ => false,
    };
    match v {
        Value::Mapping(m) => {
            for (_, x) in m.iter_mut() {
                prune(x);
            }
            m.retain(|_, x| !empty(x));
        }
        Value::Sequence(s) => s.iter_mut().for_each(prune),
        _ => {}
    }
}

fn file_of(config: &modelgate_config::Config, ns: &str) -> Result<std::path::PathBuf, NamespaceError> {
    Ok(config.include_dir.as_ref().ok_or(NamespaceError::NoIncludeDir)?.join(format!("{ns}.yaml")))
}

/// The file's text and content (empty when it does not exist yet).
fn read(file: &std::path::Path) -> Result<(String, RawFragment), NamespaceError> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(NamespaceError::File(e.to_string())),
    };
    if text.trim().is_empty() {
        return Ok((text, RawFragment::default()));
    }
    let fragment = serde_norway::from_str(&text).map_err(|e| NamespaceError::File(format!("{}: {e}", file.display())))?;
    Ok((text, fragment))
}

/// Replaces, adds or (without a body) removes the named object. A route's body may leave out `name` (the path names
/// it) but may not name another.
fn apply(fragment: &mut RawFragment, kind: Kind, name: &str, body: Option<&[u8]>) -> Result<(), NamespaceError> {
    let parse_err = |e: serde_norway::Error| NamespaceError::BadBody(format!("the body is not a {}: {e}", kind.noun()));
    let missing = || NamespaceError::BadBody(format!("no {} {name:?} in the namespace", kind.noun()));
    match (kind, body) {
        (Kind::Upstream, Some(b)) => {
            fragment.upstreams.insert(name.to_string(), serde_norway::from_slice(b).map_err(parse_err)?);
        }
        (Kind::Upstream, None) => {
            fragment.upstreams.remove(name).ok_or_else(missing)?;
        }
        (Kind::Model, Some(b)) => {
            fragment.models.insert(name.to_string(), serde_norway::from_slice(b).map_err(parse_err)?);
        }
        (Kind::Model, None) => {
            fragment.models.remove(name).ok_or_else(missing)?;
        }
        (Kind::Version, body) => {
            let (model, version) = name.split_once('/').ok_or_else(missing)?;
            let model = fragment.models.get_mut(model).ok_or_else(|| {
                NamespaceError::BadBody(format!("no model {model:?} in the namespace (PUT …/models/{model} creates it with its versions)"))
            })?;
            match body {
                Some(b) => {
                    model.versions.insert(version.to_string(), serde_norway::from_slice(b).map_err(parse_err)?);
                }
                None => {
                    model.versions.remove(version).ok_or_else(missing)?;
                }
            }
        }
        (Kind::Route, Some(b)) => {
            let mut value: serde_norway::Value = serde_norway::from_slice(b).map_err(parse_err)?;
            if let Some(map) = value.as_mapping_mut() {
                match map.get("name").and_then(|n| n.as_str()) {
                    Some(n) if n != name => return Err(NamespaceError::BadBody(format!("the body names route {n:?}, the path {name:?}"))),
                    Some(_) => {}
                    None => {
                        map.insert("name".into(), name.into());
                    }
                }
            }
            let route: RawRoute = serde_norway::from_value(value).map_err(parse_err)?;
            match fragment.routes.iter_mut().find(|r| r.name == name) {
                Some(r) => *r = route,
                None => fragment.routes.push(route),
            }
        }
        (Kind::Route, None) => {
            let before = fragment.routes.len();
            fragment.routes.retain(|r| r.name != name);
            if fragment.routes.len() == before {
                return Err(missing());
            }
        }
    }
    Ok(())
}

/// Writes by rename, so the file watcher never reads it half written; an empty namespace has no file.
fn write(file: &std::path::Path, text: &str) -> std::io::Result<()> {
    if text.is_empty() {
        return match std::fs::remove_file(file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    let tmp = file.with_extension("yaml.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, file)
}
