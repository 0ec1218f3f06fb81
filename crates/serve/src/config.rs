//! Per-model settings: an optional `DIR/<model>/config.yaml`. Unknown fields are errors, reported with the file
//! and YAML path; a model whose config is invalid is not served (the others are).

use std::path::Path;
use std::time::Duration;

use modelgate_config::{ConfigError, HumanDuration};
use serde::Deserialize;

/// `config.yaml` of a model.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Most rows per execution when batching; `0` turns dynamic batching off. Default `32`. Batching applies only
    /// to models whose inputs and outputs all have a dynamic first dimension.
    #[serde(default = "default_batch")]
    pub max_batch_size: usize,
    /// How long the first request of a batch may wait for more. Default `0s`: batch only what is already queued.
    #[serde(default = "zero")]
    pub max_queue_delay: HumanDuration,
    /// Requests queued per version before new ones are refused with 503. Default `256`.
    #[serde(default = "default_queue")]
    pub max_queue_size: usize,
    /// Which versions to serve: `{latest: N}` (default `{latest: 1}`), `{specific: [1, 3]}` or `all`.
    #[serde(default)]
    pub version_policy: VersionPolicy,
    /// The runtime: `onnxruntime` or `tract` (pure Rust). Default: onnxruntime when the model server found its
    /// library at start (`modelgate doctor` shows where it looked), else tract. Pinning `onnxruntime` without the
    /// library fails the model's load with the reason.
    #[serde(default)]
    pub backend: Option<BackendKind>,
    /// Threads one model instance may use inside an execution: onnxruntime's intra-op threads; for tract, above 1,
    /// a pool of that many threads per instance that splits large matrix products. Default: the cores this process
    /// may use (CPU affinity and cgroup quota respected), divided among `instances`.
    #[serde(default)]
    pub threads: Option<usize>,
    /// Model instances per version, each with its own copy of the model on its own thread (Triton's
    /// `instance_group.count`): batches formed from the version's queue go to whichever instance is free. Default `1`.
    #[serde(default = "one")]
    pub instances: usize,
    /// Declarations of model inputs, by the model's tensor name: serve one under another name, or pin dynamic
    /// dimensions (requests with other sizes are refused before the queue). Unlisted inputs are served as the model
    /// declares them.
    #[serde(default)]
    pub inputs: Vec<TensorOverride>,
    /// The same for outputs.
    #[serde(default)]
    pub outputs: Vec<TensorOverride>,
}

/// One input or output declaration in `config.yaml`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TensorOverride {
    /// The tensor's name in the ONNX model.
    pub name: String,
    /// The name clients use instead (metadata, requests, responses).
    #[serde(default)]
    pub alias: Option<String>,
    /// The shape, `-1` for a dynamic dimension: the model's rank; fixed model dimensions must be repeated,
    /// dynamic ones may be pinned.
    #[serde(default)]
    pub shape: Option<Vec<i64>>,
    /// The OIP v2 datatype, checked against the model's (a typo or a wrong assumption fails loading).
    #[serde(default)]
    pub datatype: Option<String>,
}

fn one() -> usize {
    1
}

/// Which runtime runs a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    Tract,
    Onnxruntime,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Tract => "tract",
            BackendKind::Onnxruntime => "onnxruntime",
        }
    }

    /// The OIP model metadata's `platform`, named as Triton names its backends' (`onnxruntime_onnx`).
    pub fn platform(self) -> &'static str {
        match self {
            BackendKind::Tract => "tract_onnx",
            BackendKind::Onnxruntime => "onnxruntime_onnx",
        }
    }
}

/// What the model server has to work with, decided once at start.
#[derive(Debug, Clone, Copy)]
pub struct Host {
    /// Cores this process may use (`std::thread::available_parallelism`: affinity and cgroup quota aware).
    pub cores: usize,
    /// Whether onnxruntime's library was found and loaded.
    pub onnxruntime: bool,
}

impl Host {
    /// This machine, with `onnxruntime` as discovery found it.
    pub fn detect(onnxruntime: bool) -> Host {
        Host { cores: std::thread::available_parallelism().map_or(1, |n| n.get()), onnxruntime }
    }
}

/// How one model version is run: its config with every default decided for this host, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub backend: BackendKind,
    /// Why this backend: pinned in config.yaml, or the default and what decided it.
    pub backend_reason: &'static str,
    /// Threads per instance inside one execution.
    pub threads: usize,
    pub threads_reason: &'static str,
    pub instances: usize,
}

/// Which version directories are served.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawPolicy")]
pub enum VersionPolicy {
    Latest(usize),
    Specific(Vec<u64>),
    All,
}

/// The policy as written: `all`, `{latest: N}` or `{specific: [...]}`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawPolicy {
    Name(String),
    Latest { latest: usize },
    Specific { specific: Vec<u64> },
}

/// A version policy that cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("unknown version policy {0:?}: write all, {{latest: N}} or {{specific: [1, 3]}}")]
    Unknown(String),
    #[error("latest must be at least 1")]
    LatestZero,
}

/// An `inputs`/`outputs` override in config.yaml that does not fit the model file.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct OverrideError(pub String);

impl TryFrom<RawPolicy> for VersionPolicy {
    type Error = PolicyError;
    fn try_from(raw: RawPolicy) -> Result<Self, PolicyError> {
        match raw {
            RawPolicy::Name(n) if n == "all" => Ok(VersionPolicy::All),
            RawPolicy::Name(n) => Err(PolicyError::Unknown(n)),
            RawPolicy::Latest { latest: 0 } => Err(PolicyError::LatestZero),
            RawPolicy::Latest { latest } => Ok(VersionPolicy::Latest(latest)),
            RawPolicy::Specific { specific } => Ok(VersionPolicy::Specific(specific)),
        }
    }
}

fn default_batch() -> usize {
    32
}
fn zero() -> HumanDuration {
    HumanDuration(Duration::ZERO)
}
fn default_queue() -> usize {
    256
}

impl Default for VersionPolicy {
    fn default() -> Self {
        VersionPolicy::Latest(1)
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            max_batch_size: default_batch(),
            max_queue_delay: zero(),
            max_queue_size: default_queue(),
            version_policy: VersionPolicy::default(),
            backend: None,
            threads: None,
            instances: 1,
            inputs: Vec::new(),
            outputs: Vec::new(),
        }
    }
}

// === impl ModelConfig ===

impl ModelConfig {
    /// Reads `dir/config.yaml` if present.
    pub fn load(dir: &Path) -> Result<ModelConfig, ConfigError> {
        let file = dir.join("config.yaml");
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ModelConfig::default()),
            Err(e) => return Err(ConfigError::new(&file, "", format!("cannot read: {e}"))),
        };
        let value: serde_norway::Value =
            serde_norway::from_str(&text).map_err(|e| ConfigError::new(&file, "", format!("invalid YAML: {e}")))?;
        let value = if value.is_null() { serde_norway::Value::Mapping(Default::default()) } else { value };
        let config: ModelConfig = modelgate_config::from_owned_value(value, &file, "")?;
        if config.threads == Some(0) {
            return Err(ConfigError::new(&file, "threads", "must be at least 1").hint("omit it for the runtime's default"));
        }
        if config.instances == 0 {
            return Err(ConfigError::new(&file, "instances", "must be at least 1"));
        }
        if config.max_queue_size == 0 {
            return Err(ConfigError::new(&file, "max_queue_size", "must be at least 1"));
        }
        Ok(config)
    }

    /// The model's metadata as served: `inputs`/`outputs` declarations applied, each checked against the model.
    pub fn apply_overrides(&self, mut meta: modelgate_runtime::ModelMetadata) -> Result<modelgate_runtime::ModelMetadata, OverrideError> {
        for (kind, overrides, specs) in [("inputs", &self.inputs, &mut meta.inputs), ("outputs", &self.outputs, &mut meta.outputs)] {
            for (i, o) in overrides.iter().enumerate() {
                let at = format!("config.yaml {kind}[{i}]");
                let Some(spec) = specs.iter_mut().find(|s| s.name == o.name) else {
                    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
                    return Err(OverrideError(format!(
                        "{at}: the model has no {} named {:?}; it has {names:?}",
                        &kind[..kind.len() - 1],
                        o.name
                    )));
                };
                if let Some(dt) = &o.datatype
                    && dt != spec.datatype.as_str()
                {
                    return Err(OverrideError(format!("{at}: {:?} is {} in the model, not {dt}", o.name, spec.datatype.as_str())));
                }
                if let Some(shape) = &o.shape {
                    if shape.len() != spec.shape.len() {
                        return Err(OverrideError(format!(
                            "{at}: {:?} has {} dimensions in the model ({:?}), not {}",
                            o.name,
                            spec.shape.len(),
                            spec.shape,
                            shape.len()
                        )));
                    }
                    for (d, (&want, &model)) in shape.iter().zip(&spec.shape).enumerate() {
                        if want < -1 || want == 0 || (model >= 0 && want != model) {
                            return Err(OverrideError(format!(
                                "{at}: dimension {d} of {:?} is {model} in the model (-1: dynamic); {want} does not fit",
                                o.name
                            )));
                        }
                    }
                    spec.shape = shape.clone();
                }
                if let Some(alias) = &o.alias {
                    spec.name = alias.clone();
                }
            }
            let mut seen = std::collections::HashSet::new();
            if let Some(dup) = specs.iter().find(|s| !seen.insert(s.name.as_str())) {
                return Err(OverrideError(format!("config.yaml {kind}: two tensors are served as {:?}", dup.name)));
            }
        }
        Ok(meta)
    }

    /// Decides the runtime and the threads for `host` (the defaults rule, documented in docs/models.md):
    /// - backend: as pinned, else onnxruntime where its library was found, else tract;
    /// - threads per instance: as set, else the cores divided among the instances (at least 1), so one instance
    ///   of a batching model uses the whole machine and N instances do not oversubscribe it.
    pub fn plan(&self, host: &Host) -> Plan {
        let (backend, backend_reason) = match self.backend {
            Some(b) => (b, "pinned in config.yaml"),
            None if host.onnxruntime => (BackendKind::Onnxruntime, "default: onnxruntime's library was found"),
            None => (BackendKind::Tract, "default: onnxruntime's library was not found"),
        };
        let (threads, threads_reason) = match self.threads {
            Some(n) => (n, "set in config.yaml"),
            None => ((host.cores / self.instances).max(1), "default: cores / instances"),
        };
        Plan { backend, backend_reason, threads, threads_reason, instances: self.instances }
    }

    /// Picks the versions to serve from those found (sorted ascending).
    pub fn select(&self, found: &[u64]) -> Vec<u64> {
        match &self.version_policy {
            VersionPolicy::All => found.to_vec(),
            VersionPolicy::Latest(n) => found.iter().rev().take(*n).rev().copied().collect(),
            VersionPolicy::Specific(list) => found.iter().filter(|v| list.contains(v)).copied().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<ModelConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.yaml"), yaml).unwrap();
        ModelConfig::load(dir.path())
    }

    #[test]
    fn policies_and_errors() {
        assert_eq!(parse("").unwrap().select(&[1, 2, 3]), vec![3]);
        assert_eq!(parse("version_policy: all").unwrap().select(&[1, 2, 3]), vec![1, 2, 3]);
        assert_eq!(parse("version_policy: {latest: 2}").unwrap().select(&[1, 2, 3]), vec![2, 3]);
        assert_eq!(parse("version_policy: {specific: [1, 3, 9]}").unwrap().select(&[1, 2, 3]), vec![1, 3]);
        let c = parse("max_batch_size: 8\nmax_queue_delay: 2ms\nmax_queue_size: 10").unwrap();
        assert_eq!((c.max_batch_size, c.max_queue_delay.0, c.max_queue_size), (8, Duration::from_millis(2), 10));
        let e = parse("max_batch_sise: 8").unwrap_err();
        assert_eq!(e.path, "max_batch_sise");
        assert_eq!(e.hint.as_deref(), Some("did you mean `max_batch_size`?"));
        assert!(parse("max_queue_delay: soon").unwrap_err().message.contains("invalid duration"));
        assert!(parse("version_policy: newest").unwrap_err().message.contains("unknown version policy"));
        assert_eq!(parse("threads: 0").unwrap_err().path, "threads");
        assert_eq!(parse("backend: onnxruntime\nthreads: 2").unwrap().threads, Some(2));
        assert_eq!(parse("backend: torch").unwrap_err().path, "backend");
    }

    #[test]
    fn defaults_use_the_machine_and_the_fast_runtime() {
        let with_ort = Host { cores: 8, onnxruntime: true };
        let without = Host { cores: 8, onnxruntime: false };
        let p = parse("").unwrap().plan(&with_ort);
        assert_eq!((p.backend, p.threads, p.instances), (BackendKind::Onnxruntime, 8, 1));
        assert_eq!(p.backend_reason, "default: onnxruntime's library was found");
        let p = parse("").unwrap().plan(&without);
        assert_eq!((p.backend, p.threads), (BackendKind::Tract, 8));
        assert_eq!(p.backend_reason, "default: onnxruntime's library was not found");
        // Instances share the cores; never below one thread each.
        assert_eq!(parse("instances: 3").unwrap().plan(&with_ort).threads, 2);
        assert_eq!(parse("instances: 4").unwrap().plan(&Host { cores: 2, onnxruntime: true }).threads, 1);
        // What config.yaml pins wins, with or without the library.
        let p = parse("backend: onnxruntime\nthreads: 3").unwrap().plan(&without);
        assert_eq!(
            (p.backend, p.backend_reason, p.threads, p.threads_reason),
            (BackendKind::Onnxruntime, "pinned in config.yaml", 3, "set in config.yaml")
        );
        assert_eq!(parse("backend: tract").unwrap().plan(&with_ort).backend, BackendKind::Tract);
        assert!(Host::detect(false).cores >= 1);
    }
}
