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

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

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
    /// `(end, version)`: canary `version` owns the buckets below `end` not owned by an earlier canary.
    canaries: Vec<(u32, usize)>,
}

struct Version {
    name: Box<str>,
    retired: bool,
    upstream: Arc<Upstream>,
    prefix: Box<str>,
    split: Arc<Routed>,
    pinned: Arc<Routed>,
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
    /// Compiles the config's models against the snapshot's upstreams (every name was checked at load).
    pub fn build(models: &BTreeMap<String, Arc<ManagedModel>>, upstreams: &HashMap<String, Arc<Upstream>>) -> Versions {
        let mut out = HashMap::new();
        for (name, m) in models {
            let mut versions = Vec::new();
            let (mut stable, mut canaries, mut end) = (0, Vec::new(), 0);
            for (i, v) in m.versions.iter().enumerate() {
                let Some(upstream) = upstreams.get(&v.upstream) else { continue };
                let tags_json = serde_json::to_string(&v.tags).unwrap_or_else(|_| "{}".into()).into_boxed_str();
                let routed = |pinned| Arc::new(Routed { version: v.name.as_str().into(), tags_json: tags_json.clone(), pinned });
                match v.state {
                    VersionState::Stable => stable = i,
                    VersionState::Canary => {
                        end += v.buckets;
                        canaries.push((end, i));
                    }
                    VersionState::Retired => {}
                }
                versions.push(Version {
                    name: v.name.as_str().into(),
                    retired: v.state == VersionState::Retired,
                    upstream: upstream.clone(),
                    prefix: v.prefix.as_str().into(),
                    split: routed(false),
                    pinned: routed(true),
                });
            }
            out.insert(name.clone(), Model { seed: seed(name), split_key: m.split_key.clone(), versions, stable, canaries });
        }
        Versions { models: out }
    }

    /// Route step: for a request naming a managed model, picks the version and points the request at its upstream
    /// and path. Other requests are left as the route sent them.
    pub fn route(&self, ctx: &mut Ctx, headers: &HeaderMap) -> Result<(), GatewayError> {
        if self.models.is_empty() {
            return Ok(());
        }
        let (model, version, replaced) = {
            let (Some(name), pinned) = ctx.model_target() else { return Ok(()) };
            let Some(model) = self.models.get(name) else { return Ok(()) };
            // REST paths `/v2/models/{m}[/versions/{v}]…`: that prefix is replaced; a gRPC call keeps its path.
            let replaced = match (ctx.grpc_call().is_some(), pinned) {
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
        let routed = if ctx.model_target().1.is_some() { &v.pinned } else { &v.split };
        ctx.route_to_version(routed.clone(), v.upstream.clone(), replaced, &v.prefix);
        Ok(())
    }

    fn key_bucket(&self, model: &Model, ctx: &Ctx, headers: &HeaderMap) -> u32 {
        let key = match &model.split_key {
            SplitKey::Consumer => ctx.principal().filter(|p| p.method != Method::Anonymous).map(|p| p.consumer.as_str()),
            SplitKey::Header(h) => headers.get(h).and_then(|v| v.to_str().ok()).filter(|s| !s.is_empty()),
            SplitKey::Claim(c) => ctx.principal().and_then(|p| p.claims.get(c)).and_then(|v| v.as_str()),
        };
        match key {
            Some(k) => bucket(model.seed, k),
            // No key: per request. A fresh RandomState draws new keys from the thread's random seed (no syscall).
            None => (std::collections::hash_map::RandomState::new().build_hasher().finish() % u64::from(BUCKETS)) as u32,
        }
    }
}

impl Model {
    /// The version owning `bucket`.
    fn pick(&self, bucket: u32) -> usize {
        self.canaries.iter().find(|(end, _)| bucket < *end).map_or(self.stable, |&(_, i)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(weights: &[u32]) -> Model {
        let canaries = weights
            .iter()
            .scan(0, |end, w| {
                *end += w;
                Some(*end)
            })
            .enumerate()
            .map(|(i, end)| (end, i + 1))
            .collect();
        Model { seed: seed("digits"), split_key: SplitKey::Consumer, versions: Vec::new(), stable: 0, canaries }
    }

    /// 100,000 distinct consumers: each canary's share within ±1 percentage point of its weight.
    #[test]
    fn the_split_is_within_a_point_of_the_weights() {
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
    #[test]
    fn raising_a_weight_never_moves_a_caller_back_to_stable() {
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
