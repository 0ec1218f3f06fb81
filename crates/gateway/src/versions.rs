//! The route step for managed models (`models`, docs/versions.md): which version of a model a request goes to, at
//! which upstream and path.
//!
//! A request naming a version (`/v2/models/{m}/versions/{v}/…`) goes to that version (404
//! `model_version_not_found` when it is unknown or retired; policy rules' `versions` decide who may pin). Otherwise
//! the split decides: the caller's key (consumer, a header or a claim) hashed with the model name into 10,000
//! buckets; canaries own consecutive bucket ranges from 0 in name order, the stable version the rest. The same key
//! always lands in the same bucket, on every gateway and after restarts, so a caller stays on its version without
//! a cookie, and raising a canary's weight only moves callers from stable to that canary, never back. A request
//! without a key (anonymous, header absent) gets a random bucket.
//!
//! Readiness gate: each version with a `probe` is asked every [`PROBE_EVERY`]; one that has not answered ready gets
//! no callers from the split — a caller whose bucket it owns is placed over the ready versions in proportion to
//! their widths. When no version is ready the stable one is used. The last-known readiness outlives reloads
//! ([`VersionsRegistry`]), so a reload neither sends traffic to an unready canary nor holds back a ready one.
//!
//! Shadow versions get no callers from the split; the route step draws, per admitted request the split placed, the
//! sample of each of the model's shadows and hands the copies to the proxy step ([`crate::shadow`]).

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use http::HeaderMap;
use modelgate_config::model::{ManagedModel, SplitKey};
use modelgate_config::raw::VersionState;
use modelgate_pipeline::Ctx;
use modelgate_pipeline::context::Routed;
use modelgate_pipeline::error::GatewayError;
use modelgate_pipeline::principal::Method;
use modelgate_upstream::Upstream;

/// Buckets of the split: a weight of 0.01 percentage point is one.
pub const BUCKETS: u32 = 10_000;

/// Time between two readiness probes of a version.
pub const PROBE_EVERY: Duration = Duration::from_secs(2);

/// Readiness states: not probed yet (treated as not ready), ready, not ready.
const UNKNOWN: u8 = 0;
const READY: u8 = 1;
const NOT_READY: u8 = 2;

/// What outlives a snapshot's versions: the last-known readiness of every probed version (by model, version,
/// upstream and probe path) and the shadow versions' counts (by model and version). Entries no config names any
/// more are dropped at each build.
#[derive(Default)]
pub struct VersionsRegistry {
    flags: HashMap<(String, String, String, String), Arc<AtomicU8>>,
    shadows: HashMap<(String, String), Arc<crate::shadow::Stats>>,
    /// Each version's SLO statistics, by model and version.
    stats: HashMap<(String, String), Arc<modelgate_pipeline::slo::VersionStats>>,
    /// Rollouts, by model and canary version.
    rollouts: HashMap<(String, String), Arc<crate::rollout::Rollout>>,
}

/// What [`Versions::build`] needs beyond the config.
pub struct BuildEnv<'a> {
    pub metrics: &'a Arc<modelgate_telemetry::metrics::Metrics>,
    pub audit: Option<Arc<modelgate_telemetry::audit::Audit>>,
    /// Where rollouts save their state (`None`: not saved).
    pub rollout_file: Option<std::path::PathBuf>,
    /// The Redis several gateways share rollouts through (`redis`).
    pub shared: Option<Arc<modelgate_limits::store::RedisStore>>,
    /// Start the readiness probes and rollout tasks (not when only checking a config).
    pub live: bool,
}

/// What a version's probe task needs; the task ends when the snapshot holding this is dropped.
struct Probe {
    model: String,
    version: String,
    upstream: Arc<Upstream>,
    path: String,
    ready: Arc<AtomicU8>,
    /// The runtimes its server may report (its namespace's `runtimes`), asked at `metadata`; empty: not asked.
    runtimes: Vec<String>,
    /// The OIP model metadata path of the version on its upstream (its prefix).
    metadata: String,
}

/// The managed models of one snapshot.
#[derive(Default)]
pub struct Versions {
    models: HashMap<String, Model>,
}

struct Model {
    /// Seeds the bucket hash, so each model splits callers independently of the others.
    seed: u64,
    split_key: SplitKey,
    versions: Vec<Version>,
    stable: usize,
    /// The canaries (indexes into `versions`) in name order: each owns the next `width` buckets from 0, the stable
    /// version the rest.
    canaries: Vec<usize>,
    /// The model's rollout, moving one canary's width.
    rollout: Option<Arc<crate::rollout::Binding>>,
    /// The shadow versions (indexes into `versions`).
    shadows: Vec<usize>,
}

struct Version {
    name: Box<str>,
    retired: bool,
    /// Buckets owned by this canary (a rollout's canary shares its rollout's; 0 for the others: the stable
    /// version's is the rest, [`Model::width`]).
    width: Arc<AtomicU32>,
    /// `None`: not gated (`probe: none`).
    ready: Option<Arc<AtomicU8>>,
    /// Held so its task keeps probing while this snapshot lives.
    probe: Option<Arc<Probe>>,
    upstream: Arc<Upstream>,
    prefix: Box<str>,
    split: Arc<Routed>,
    pinned: Arc<Routed>,
    /// `state: shadow`: its copies.
    shadow: Option<Arc<crate::shadow::Shadow>>,
    /// Its namespace allows only some runtimes: it serves only once its probe verified its server's (ready).
    restricted: bool,
    /// The default path (`/v2/models/{m}/versions/{v}`): the upstream knows the version by this name, so a gRPC
    /// call the split sends here gets it as its message's model version.
    named_upstream: bool,
}

/// The bucket (0..10,000) of `key` for the model whose seed is `seed`: XXH3-64, a fixed published function.
pub fn bucket(seed: u64, key: &str) -> u32 {
    (xxhash_rust::xxh3::xxh3_64_with_seed(key.as_bytes(), seed) % u64::from(BUCKETS)) as u32
}

/// The hash seed of a model's split.
pub fn seed(model: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(model.as_bytes())
}

// === impl Versions ===

impl Versions {
    /// Compiles the config's models against the snapshot's upstreams (every name was checked at load); with
    /// `probe`, starts a readiness task per gated version (none when only checking a config).
    pub fn build(
        models: &BTreeMap<String, Arc<ManagedModel>>,
        upstreams: &HashMap<String, Arc<Upstream>>,
        registry: &mut VersionsRegistry,
        env: BuildEnv<'_>,
    ) -> Versions {
        let (metrics, probe) = (env.metrics, env.live);
        let mut out = HashMap::new();
        let mut kept = std::collections::HashSet::new();
        let mut kept_shadows = std::collections::HashSet::new();
        let mut kept_rollouts = std::collections::HashSet::new();
        for (name, m) in models {
            let mut versions = Vec::new();
            let (mut stable, mut canaries, mut shadows) = (0, Vec::new(), Vec::new());
            for (i, v) in m.versions.iter().enumerate() {
                let Some(upstream) = upstreams.get(&v.upstream) else { continue };
                let (ready, task) = match &v.probe {
                    Some(path) if v.state != VersionState::Retired => {
                        let key = (name.clone(), v.name.clone(), v.upstream.clone(), path.clone());
                        let flag = registry.flags.entry(key.clone()).or_insert_with(|| Arc::new(AtomicU8::new(UNKNOWN))).clone();
                        kept.insert(key);
                        let p = Arc::new(Probe {
                            model: name.clone(),
                            version: v.name.clone(),
                            upstream: upstream.clone(),
                            path: path.clone(),
                            ready: flag.clone(),
                            runtimes: v.runtimes.clone(),
                            metadata: v.prefix.clone(),
                        });
                        if probe {
                            tokio::spawn(probe_while_held(Arc::downgrade(&p)));
                        }
                        (Some(flag), Some(p))
                    }
                    _ => (None, None),
                };
                let tags_json = serde_json::to_string(&v.tags).unwrap_or_else(|_| "{}".into()).into_boxed_str();
                let stats = registry.stats.entry((name.clone(), v.name.clone())).or_default().clone();
                let routed = |pinned| {
                    Arc::new(Routed {
                        version: v.name.as_str().into(),
                        tags_json: tags_json.clone(),
                        pinned,
                        stats: stats.clone(),
                        prefix: v.prefix.as_str().into(),
                    })
                };
                match v.state {
                    VersionState::Stable => stable = i,
                    VersionState::Canary => canaries.push(i),
                    VersionState::Shadow => shadows.push(versions.len()),
                    VersionState::Retired => {}
                }
                let shadow = v.shadow.clone().filter(|_| v.state == VersionState::Shadow).map(|cfg| {
                    let key = (name.clone(), v.name.clone());
                    let stats = registry.shadows.entry(key.clone()).or_default().clone();
                    kept_shadows.insert(key);
                    Arc::new(crate::shadow::Shadow::new(name, &v.name, cfg, upstream.clone(), &v.prefix, stats, metrics.clone()))
                });
                versions.push(Version {
                    name: v.name.as_str().into(),
                    retired: v.state == VersionState::Retired,
                    width: Arc::new(AtomicU32::new(if v.state == VersionState::Canary { v.buckets } else { 0 })),
                    ready,
                    probe: task,
                    upstream: upstream.clone(),
                    prefix: v.prefix.as_str().into(),
                    split: routed(false),
                    pinned: routed(true),
                    shadow,
                    named_upstream: v.prefix == format!("/v2/models/{name}/versions/{}", v.name),
                    restricted: !v.runtimes.is_empty(),
                });
            }
            let rollout = m.rollout.as_ref().and_then(|cfg| {
                let canary = versions.iter().position(|v| *v.name == cfg.version)?;
                let key = (name.clone(), cfg.version.clone());
                kept_rollouts.insert(key.clone());
                let file = env.rollout_file.clone();
                let r = registry
                    .rollouts
                    .entry(key)
                    .or_insert_with(|| Arc::new(crate::rollout::Rollout::load(name, &cfg.version, cfg.steps[0], file)))
                    .clone();
                versions[canary].width = r.weight();
                let shadow = cfg.shadow.as_ref().and_then(|(s, _)| registry.shadows.get(&(name.clone(), s.clone())).cloned());
                let b = Arc::new(crate::rollout::Binding::new(
                    r,
                    cfg.clone(),
                    versions[canary].split.stats.clone(),
                    versions[stable].split.stats.clone(),
                    &versions[stable].name,
                    shadow,
                    serde_json::from_str(&versions[canary].split.tags_json).unwrap_or_default(),
                    env.audit.clone(),
                    env.shared.clone(),
                ));
                if probe {
                    tokio::spawn(crate::rollout::Binding::drive(Arc::downgrade(&b)));
                }
                Some(b)
            });
            out.insert(
                name.clone(),
                Model { seed: seed(name), split_key: m.split_key.clone(), versions, stable, canaries, shadows, rollout },
            );
        }
        let kept_stats: std::collections::HashSet<(String, String)> =
            models.values().flat_map(|m| m.versions.iter().map(|v| (m.name.clone(), v.name.clone()))).collect();
        registry.stats.retain(|k, _| kept_stats.contains(k));
        registry.rollouts.retain(|k, _| kept_rollouts.contains(k));
        registry.flags.retain(|k, _| kept.contains(k));
        registry.shadows.retain(|k, _| kept_shadows.contains(k));
        Versions { models: out }
    }

    /// No model is managed (the route step does nothing).
    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    /// Whether `model` is managed here (its `x-model-version` request header pins a version).
    pub fn manages(&self, model: &str) -> bool {
        self.models.contains_key(model)
    }

    /// Route step: for a request naming a managed model, picks the version and points the request at its upstream
    /// and path. Other requests are left as the route sent them. Runs after admit and before validate, so that
    /// validation checks the chosen version's inputs.
    pub fn route(&self, ctx: &mut Ctx, headers: &HeaderMap) -> Result<(), GatewayError> {
        if self.models.is_empty() {
            return Ok(());
        }
        // OIP v2 REST paths and gRPC calls; TorchServe's `/predictions/{m}` form is left to the route.
        if ctx.grpc_call().is_none() && !ctx.path().starts_with("/v2/models/") {
            return Ok(());
        }
        let (model, version, replaced) = {
            let (Some(name), pinned) = ctx.model_target() else { return Ok(()) };
            let Some(model) = self.models.get(name) else { return Ok(()) };
            // REST paths `/v2/models/{m}[/versions/{v}]…`: that prefix is replaced; a gRPC call keeps its path. A
            // version pinned by header is not in the path.
            let in_path = pinned.filter(|v| {
                let model_end = "/v2/models/".len() + name.len();
                ctx.path().get(model_end..).is_some_and(|rest| rest.strip_prefix("/versions/").is_some_and(|r| r.starts_with(*v)))
            });
            let replaced = match (ctx.grpc_call().is_some(), in_path) {
                (true, _) => 0,
                (false, None) => "/v2/models/".len() + name.len(),
                (false, Some(v)) => "/v2/models/".len() + name.len() + "/versions/".len() + v.len(),
            };
            let version = match pinned {
                Some(v) => match model.versions.iter().position(|x| &*x.name == v) {
                    Some(i) if !model.versions[i].retired => Ok(i),
                    Some(_) => Err((name, v, "it is retired")),
                    None => Err((name, v, "no such version is configured")),
                },
                None => Ok(model.pick(self.key_bucket(model, ctx, headers))),
            };
            let version = version.map_err(|(m, v, why)| GatewayError::UnknownVersion { model: m.into(), version: v.into(), why })?;
            (model, version, replaced)
        };
        let v = &model.versions[version];
        if v.restricted && v.ready.as_ref().is_none_or(|r| r.load(Ordering::Relaxed) != READY) {
            let name = ctx.model_target().0.unwrap_or_default().to_string();
            return Err(GatewayError::VersionNotAllowed { model: name, version: v.name.to_string() });
        }
        let pinned = ctx.model_target().1.is_some();
        let routed = if pinned { &v.pinned } else { &v.split };
        ctx.route_to_version(routed.clone(), v.upstream.clone(), replaced, &v.prefix);
        // A unary gRPC call the split placed: its message names no version, so the upstream would answer with its
        // default one. It gets the chosen version's name (appended as field 2; the rest kept byte for byte).
        if !pinned
            && v.named_upstream
            && ctx.grpc_call().is_some()
            && let Some(framed) = ctx.body().and_then(|b| modelgate_pipeline::grpc::with_version(b, &v.name))
        {
            ctx.replace_body(framed);
        }
        Ok(())
    }

    /// For an admitted request the split placed (after every phase passed), the copies to make for its model's
    /// shadow versions: each shadow's sample drawn, its bounds taken. Only OIP v2 REST inference is copied.
    pub fn copies(&self, ctx: &Ctx) -> Option<crate::shadow::Copies> {
        let routed = ctx.routed().filter(|r| !r.pinned)?;
        if ctx.grpc_call().is_some() || *ctx.method() != http::Method::POST {
            return None;
        }
        let model = self.models.get(ctx.model_target().0?)?;
        if model.shadows.is_empty() {
            return None;
        }
        let suffix = ctx.forward_target().get(routed.prefix.len()..)?;
        if !suffix.starts_with("/infer") || suffix.len() > 6 && !suffix[6..].starts_with('?') {
            return None;
        }
        let mut tickets = Vec::new();
        for &i in &model.shadows {
            let s = &model.versions[i];
            let Some(shadow) = &s.shadow else { continue };
            if shadow.sample() == 0 || per_request_bucket() >= shadow.sample() {
                continue;
            }
            if let Some(t) = shadow.ticket(ctx.bytes_in(), s.is_ready()) {
                tickets.push(t);
            }
        }
        crate::shadow::Copies::new(tickets, suffix)
    }

    /// `GET /admin/models/{m}/rollout`: the model's rollout (`Err(false)`: the model is not managed; `Err(true)`: it
    /// has no rollout).
    pub fn rollout(&self, model: &str) -> Result<&crate::rollout::Binding, bool> {
        self.models.get(model).ok_or(false)?.rollout.as_deref().ok_or(true)
    }

    /// `GET /admin/models/{m}/shadow`: the model's shadow versions (`None`: the model is not managed).
    pub fn shadow_view(&self, model: &str) -> Option<serde_json::Value> {
        let m = self.models.get(model)?;
        let shadows: Vec<_> = m.shadows.iter().filter_map(|&i| m.versions[i].shadow.as_ref()).map(|s| s.view()).collect();
        Some(serde_json::json!({ "model": model, "shadows": shadows }))
    }

    /// The managed models for `GET /admin/models`: each version's state, weight, upstream, path, probe, readiness
    /// (`unknown` before the first probe, `ready`, `not_ready`, `not_gated`) and tags.
    pub fn view(&self) -> serde_json::Value {
        let mut names: Vec<&String> = self.models.keys().collect();
        names.sort();
        let models: Vec<_> = names
            .into_iter()
            .map(|n| {
                let m = &self.models[n];
                let versions: Vec<_> = m
                    .versions
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        let state = m.state(i);
                        let readiness = match v.ready.as_ref().map(|r| r.load(Ordering::Relaxed)) {
                            None => "not_gated",
                            Some(READY) => "ready",
                            Some(NOT_READY) => "not_ready",
                            Some(_) => "unknown",
                        };
                        serde_json::json!({
                            "version": &*v.name,
                            "state": state,
                            "weight": f64::from(m.width(i)) / 100.0,
                            "upstream": v.upstream.name(),
                            "path": &*v.prefix,
                            "probe": v.probe.as_ref().map(|p| p.path.as_str()),
                            "readiness": readiness,
                            "tags": serde_json::from_str::<serde_json::Value>(&v.split.tags_json).unwrap_or_default(),
                        })
                    })
                    .collect();
                serde_json::json!({ "model": n, "versions": versions })
            })
            .collect();
        serde_json::Value::Array(models)
    }

    /// Sets the managed versions' gauges (at scrape): weight, readiness, and state and tags as an info series.
    pub fn export(&self, m: &modelgate_telemetry::metrics::Metrics) {
        use modelgate_telemetry::metrics::ModelVersionLabels;
        m.model_version_weight.clear();
        m.model_version_ready.clear();
        m.model_version_info.clear();
        m.rollout_status.clear();
        m.rollout_step.clear();
        m.rollout_breaches.clear();
        for (name, model) in &self.models {
            for (i, v) in model.versions.iter().enumerate() {
                let labels = ModelVersionLabels { model: name.clone(), version: v.name.to_string() };
                m.model_version_weight.get_or_create(&labels).set(f64::from(model.width(i)) / 100.0);
                m.model_version_ready.get_or_create(&labels).set(i64::from(v.is_ready()));
                let state = model.state(i);
                let mut info =
                    vec![("model".to_string(), name.clone()), ("version".into(), v.name.to_string()), ("state".into(), state.into())];
                if let Ok(serde_json::Value::Object(tags)) = serde_json::from_str::<serde_json::Value>(&v.split.tags_json) {
                    for (k, val) in tags {
                        let key: String = k.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
                        info.push((format!("tag_{key}"), val.as_str().unwrap_or_default().to_string()));
                    }
                }
                m.model_version_info.get_or_create(&info).set(1);
            }
            if let Some(r) = &model.rollout {
                r.export(m);
            }
        }
    }

    fn key_bucket(&self, model: &Model, ctx: &Ctx, headers: &HeaderMap) -> u32 {
        let key = match &model.split_key {
            SplitKey::Consumer => ctx.principal().filter(|p| p.method != Method::Anonymous).map(|p| p.consumer.as_str()),
            SplitKey::Header(h) => headers.get(h).and_then(|v| v.to_str().ok()).filter(|s| !s.is_empty()),
            SplitKey::Claim(c) => ctx.principal().and_then(|p| p.claims.get(c)).and_then(|v| v.as_str()),
        };
        match key {
            Some(k) => bucket(model.seed, k),
            None => per_request_bucket(),
        }
    }
}

/// A random bucket: a fresh RandomState draws new keys from the thread's random seed (no syscall).
fn per_request_bucket() -> u32 {
    (std::collections::hash_map::RandomState::new().build_hasher().finish() % u64::from(BUCKETS)) as u32
}

/// One readiness probe through the upstream's own transport (its TLS settings, client certificate and protocol):
/// `GET {probe}` over HTTP/1.1 (200 is ready), or the OIP `ModelReady` RPC for the model and version on an HTTP/2
/// (gRPC) upstream; then, when the version's namespace allows only some runtimes, the model metadata's `platform`
/// must be one of them. `None` when no answer came.
async fn ask(p: &Probe) -> Option<bool> {
    use modelgate_pipeline::grpc;
    use modelgate_upstream::Transport;
    let up = &p.upstream;
    let i = up.pick(0)?;
    let ready = match &up.transport {
        Transport::Http1(_) => get(p, i, &p.path).await?.0 == http::StatusCode::OK,
        Transport::Http2(client) => {
            // A failed call (NOT_FOUND for a version the server lacks) is an answer: not ready.
            let answer =
                crate::own_calls::grpc_unary(up, client, i, grpc::MODEL_READY, grpc::ready_request(&p.model, &p.version), 64 << 10).await;
            answer.and_then(|body| grpc::ready_answer(&body)).unwrap_or(false)
        }
    };
    if !ready || p.runtimes.is_empty() {
        return Some(ready);
    }
    let platform = match &up.transport {
        Transport::Http1(_) => {
            let (status, body) = get(p, i, &p.metadata).await?;
            let meta: Option<serde_json::Value> = (status == http::StatusCode::OK).then(|| serde_json::from_slice(&body).ok()).flatten();
            meta.and_then(|m| m.get("platform").and_then(|v| v.as_str()).map(String::from))
        }
        Transport::Http2(client) => {
            let request = grpc::metadata_request(&p.model, Some(&p.version));
            let answer = crate::own_calls::grpc_unary(up, client, i, grpc::MODEL_METADATA, request, 1 << 20).await;
            answer.and_then(|body| grpc::metadata_platform(&body))
        }
    };
    let allowed = platform.as_ref().is_some_and(|pl| p.runtimes.contains(pl));
    if !allowed && p.ready.load(Ordering::Relaxed) != NOT_READY {
        tracing::warn!(model = %p.model, version = %p.version, platform = ?platform, allowed = ?p.runtimes,
            "model version runs on a runtime its namespace does not allow: not ready");
    }
    Some(allowed)
}

/// `GET path` on target `i` of the probe's HTTP/1.1 upstream: the status and the body (read to the end, at most
/// 1 MiB, so the connection goes back to the pool).
async fn get(p: &Probe, i: usize, path: &str) -> Option<(http::StatusCode, bytes::Bytes)> {
    use http_body_util::BodyExt;
    use modelgate_upstream::Transport;
    use modelgate_upstream::body::UpstreamBody;
    let Transport::Http1(pool) = &p.upstream.transport else { return None };
    let target = &p.upstream.targets[i];
    let req = http::Request::get(path).header(http::header::HOST, target.authority.as_str()).body(UpstreamBody::Full(None)).ok()?;
    let resp = pool.send(i, &target.authority, req).await.ok()?;
    let status = resp.status();
    let body = http_body_util::Limited::new(resp.into_body(), 1 << 20).collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    Some((status, body))
}

impl Model {
    /// The buckets version `i` owns now.
    fn width(&self, i: usize) -> u32 {
        if i == self.stable {
            BUCKETS.saturating_sub(self.canaries.iter().map(|&c| self.versions[c].width.load(Ordering::Relaxed)).sum())
        } else {
            self.versions[i].width.load(Ordering::Relaxed)
        }
    }

    /// The state of version `i` as config names it.
    fn state(&self, i: usize) -> &'static str {
        if i == self.stable {
            "stable"
        } else if self.versions[i].retired {
            "retired"
        } else if self.versions[i].shadow.is_some() {
            "shadow"
        } else {
            "canary"
        }
    }

    /// The version for `bucket`: its owner when ready; else the bucket placed over the ready versions' widths
    /// (stable last); the stable version when none is ready.
    fn pick(&self, bucket: u32) -> usize {
        let (mut owner, mut start, mut end) = (self.stable, 0, BUCKETS);
        for &i in &self.canaries {
            let w = self.versions[i].width.load(Ordering::Relaxed);
            if bucket < start + w {
                (owner, end) = (i, start + w);
                break;
            }
            start += w;
        }
        if self.versions[owner].is_ready() {
            return owner;
        }
        let order = || self.canaries.iter().copied().chain(std::iter::once(self.stable));
        let ready_width: u64 = order().filter(|&i| self.versions[i].is_ready()).map(|i| u64::from(self.width(i))).sum();
        if ready_width == 0 {
            return self.stable;
        }
        // The bucket's place within its owner's range, spread over the ready versions' widths.
        let mut at = u64::from(bucket - start) * ready_width / u64::from((end - start).max(1));
        for i in order().filter(|&i| self.versions[i].is_ready()) {
            let w = u64::from(self.width(i));
            if at < w {
                return i;
            }
            at -= w;
        }
        self.stable
    }
}

impl Version {
    fn is_ready(&self) -> bool {
        self.ready.as_ref().is_none_or(|r| r.load(Ordering::Relaxed) == READY)
    }
}

/// Probes a version every [`PROBE_EVERY`] while its snapshot holds the [`Probe`]; logs each change.
async fn probe_while_held(probe: Weak<Probe>) {
    loop {
        let Some(p) = probe.upgrade() else { return };
        let ready = tokio::time::timeout(PROBE_EVERY, ask(&p)).await.ok().flatten().unwrap_or(false);
        let state = if ready { READY } else { NOT_READY };
        if p.ready.swap(state, Ordering::Relaxed) != state {
            tracing::info!(model = %p.model, version = %p.version, ready, "model version readiness changed");
        }
        drop(p);
        #[allow(clippy::disallowed_methods)] // the probe's period, not a wait for a condition
        tokio::time::sleep(PROBE_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(weights: &[u32]) -> Model {
        let canaries = (1..=weights.len()).collect();
        let versions = std::iter::once(0).chain(weights.iter().copied()).map(|w| version(w, None)).collect();
        Model { seed: seed("digits"), split_key: SplitKey::Consumer, versions, stable: 0, canaries, shadows: Vec::new(), rollout: None }
    }

    fn version(width: u32, ready: Option<bool>) -> Version {
        let upstream = Upstream::new(
            modelgate_config::from_yaml("upstreams:\n  u: { targets: [\"http://127.0.0.1:9\"] }\n").unwrap().upstreams["u"].clone(),
        );
        let routed =
            Arc::new(Routed { version: "v".into(), tags_json: "{}".into(), pinned: false, stats: Default::default(), prefix: "/".into() });
        Version {
            name: "v".into(),
            retired: false,
            width: Arc::new(AtomicU32::new(width)),
            ready: ready.map(|r| Arc::new(AtomicU8::new(if r { READY } else { NOT_READY }))),
            probe: None,
            upstream,
            prefix: "/".into(),
            split: routed.clone(),
            pinned: routed,
            shadow: None,
            named_upstream: true,
            restricted: false,
        }
    }

    /// A canary that is not ready gets nobody; its callers go to the ready versions in proportion, and come back
    /// when it is ready. Nothing ready: the stable version.
    #[tokio::test]
    async fn unready_versions_get_no_callers_and_the_split_renormalises() {
        let mut m = model(&[2_000, 3_000]);
        m.versions[1].ready = Some(Arc::new(AtomicU8::new(NOT_READY)));
        let mut counts = [0u32; 3];
        for b in 0..BUCKETS {
            counts[m.pick(b)] += 1;
        }
        assert_eq!(counts[1], 0);
        // The unready canary's 2,000 buckets are spread over stable (5,000 wide) and canary 2 (3,000 wide).
        assert!((counts[0] as i64 - 6_250).abs() <= 2 && (counts[2] as i64 - 3_750).abs() <= 2, "{counts:?}");
        m.versions[1].ready.as_ref().unwrap().store(READY, Ordering::Relaxed);
        assert_eq!((m.pick(0), m.pick(1_999), m.pick(2_000), m.pick(9_999)), (1, 1, 2, 0));
        for v in &mut m.versions {
            v.ready = Some(Arc::new(AtomicU8::new(UNKNOWN)));
        }
        assert!((0..BUCKETS).all(|b| m.pick(b) == 0), "nothing ready: stable");
    }

    /// 100,000 distinct consumers: each canary's share within ±1 percentage point of its weight.
    #[tokio::test]
    async fn the_split_is_within_a_point_of_the_weights() {
        let m = model(&[500, 2_000]);
        let mut counts = [0u32; 3];
        for i in 0..100_000 {
            counts[m.pick(bucket(m.seed, &format!("consumer-{i}")))] += 1;
        }
        let share = |n: u32| f64::from(n) / 1_000.0;
        assert!((share(counts[1]) - 5.0).abs() <= 1.0, "{counts:?}");
        assert!((share(counts[2]) - 20.0).abs() <= 1.0, "{counts:?}");
        assert!((share(counts[0]) - 75.0).abs() <= 1.0, "{counts:?}");
    }

    /// Raising the canary's weight step by step never moves a consumer from the canary back to stable, and a
    /// consumer's version is the same on every evaluation.
    #[tokio::test]
    async fn raising_a_weight_never_moves_a_caller_back_to_stable() {
        let consumers: Vec<String> = (0..20_000).map(|i| format!("user-{i}@example.com")).collect();
        let mut on_canary = vec![false; consumers.len()];
        for w in [0, 100, 500, 2_500, 5_000, 10_000] {
            let m = model(&[w]);
            for (i, c) in consumers.iter().enumerate() {
                let canary = m.pick(bucket(m.seed, c)) == 1;
                assert!(canary || !on_canary[i], "{c} went back to stable at weight {w}");
                assert_eq!(canary, m.pick(bucket(m.seed, c)) == 1, "deterministic");
                on_canary[i] = canary;
            }
        }
        assert!(on_canary.iter().all(|c| *c), "100 % is everyone");
    }

    #[test]
    fn buckets_are_stable_across_builds_and_differ_by_model() {
        // A fixed published hash: these values must never change, or callers would move on upgrade.
        assert_eq!(
            [bucket(seed("digits"), "team-a"), bucket(seed("digits"), "user-1"), bucket(seed("minilm"), "team-a")],
            [1730, 4905, 4795]
        );
        let same = (0..1000).filter(|i| bucket(seed("digits"), &i.to_string()) == bucket(seed("minilm"), &i.to_string())).count();
        assert!(same < 10, "models split independently: {same}");
    }
}
