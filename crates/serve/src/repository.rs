//! The model repository: `DIR/<model>/<version>/model.onnx` with an optional `DIR/<model>/config.yaml`, like
//! Triton's. The versions its policy selects (default: the latest) are loaded,
//! warmed up with one zero-filled request, and served by its own instance thread fed through a bounded queue
//! (STYLE §7), which forms dynamic batches (compatible queued requests concatenated along the first dimension,
//! outputs split back per request). A version that fails to load is reported with its error; the others keep serving.

#![allow(clippy::disallowed_methods, reason = "instance threads run off the tokio runtime: queue and compute times are std instants")]

use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use modelgate_runtime::{Backend, DataType, ModelMetadata, RuntimeError, Tensor, TensorData, TractBackend};
use tokio::sync::oneshot;

use crate::config::{BackendKind, Host, ModelConfig, Plan};
use crate::metrics::{Metrics, VersionMetrics};

/// Dynamic batching: on for models whose inputs and outputs all have a dynamic first dimension.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    /// Most rows (first-dimension entries) in one execution.
    pub max_batch_size: usize,
    /// How long the first request of a batch may wait for others. Zero: batch only what is already queued, so a
    /// lone request never waits (Triton's default).
    pub max_queue_delay: Duration,
}

/// Every model found in the repository.
pub struct Repository {
    pub dir: PathBuf,
    /// Serving `dir` itself as this one model (KServe's layout: the storage initializer's `/mnt/models` is the
    /// model's directory), instead of one model per subdirectory.
    single: Option<String>,
    /// Cores and runtimes, decided at start; every model's defaults come from it.
    pub host: Host,
    /// Loaded models; replaced whole by the repository extension's load/unload (read-locked per request).
    models: RwLock<BTreeMap<String, Arc<Model>>>,
    pub metrics: Metrics,
    /// Span export, when the server was started with an OTLP endpoint.
    pub tracer: std::sync::OnceLock<modelgate_telemetry::Exporter>,
}

/// One row of `POST /v2/repository/index`.
#[derive(Debug, serde::Serialize)]
pub struct IndexEntry {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `READY` or `UNAVAILABLE`.
    pub state: &'static str,
    pub reason: String,
}

/// A model and its versions.
pub struct Model {
    pub name: String,
    /// Loaded versions by number; the highest is the default.
    pub versions: BTreeMap<u64, Arc<Version>>,
    /// Versions that failed to load, with the reason.
    pub failed: BTreeMap<u64, String>,
    /// Why the whole model is not served (an invalid `config.yaml`).
    pub error: Option<String>,
}

/// One loaded, warmed-up model version.
pub struct Version {
    pub model: String,
    pub version: String,
    pub metadata: ModelMetadata,
    pub batching: Option<Batching>,
    /// The runtime, threads and instances it runs with, and why.
    pub plan: Plan,

    pub metrics: VersionMetrics,
    queue: SyncSender<Job>,
}

struct Job {
    inputs: Vec<Tensor>,
    enqueued: Instant,
    reply: oneshot::Sender<Result<(Vec<Tensor>, Timing), RuntimeError>>,
}

/// Where one inference's time went (for its spans).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub enqueued: Instant,
    /// Its batch was formed and began (queue wait ends).
    pub started: Instant,
    /// The backend was called (after concatenating the batch).
    pub compute: Instant,
    /// The backend returned.
    pub done: Instant,
    /// Rows in the execution it was part of.
    pub batch_size: usize,
}

/// Why an inference could not be run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("the model's queue is full; retry shortly")]
    QueueFull,
    #[error("the model instance stopped")]
    Stopped,
    /// The request is valid OIP v2 but this backend cannot take it (a 400).
    #[error("{0}")]
    Unsupported(String),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

// === impl Repository ===

/// Why `POST /v2/repository/models/{m}/load` found nothing to load.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("invalid model name {0:?}")]
    BadName(String),
    #[error("no model directory {0:?} in the repository")]
    NoDirectory(String),
    #[error("cannot read model {name:?}: {source}")]
    Read { name: String, source: std::io::Error },
}

impl Repository {
    /// Scans `dir` and loads every model in it, each with the defaults [`ModelConfig::plan`] decides for `host`.
    pub fn load(dir: &Path, host: Host) -> std::io::Result<Repository> {
        Self::load_as(dir, None, host)
    }

    /// [`Repository::load`], or with `single` the directory itself as that one model (its numbered version
    /// directories, or a `model.onnx` directly inside as version 1).
    pub fn load_as(dir: &Path, single: Option<&str>, host: Host) -> std::io::Result<Repository> {
        let repo = Repository {
            dir: dir.to_path_buf(),
            single: single.map(String::from),
            host,
            models: RwLock::new(BTreeMap::new()),
            metrics: Metrics::default(),
            tracer: Default::default(),
        };
        for name in repo.model_names()? {
            let model = repo.read_model(&name)?;
            if !model.versions.is_empty() || !model.failed.is_empty() || model.error.is_some() {
                repo.models.write().expect("models lock").insert(name, Arc::new(model));
            }
        }
        Ok(repo)
    }

    /// Loads (or reloads) one model from its directory and serves it; the versions it replaces finish their queued
    /// requests and stop. Blocking: call from a blocking thread.
    pub fn load_model(&self, name: &str) -> Result<Arc<Model>, LoadError> {
        if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
            return Err(LoadError::BadName(name.into()));
        }
        if self.single.as_deref().is_some_and(|s| s != name) || !self.model_dir(name).is_dir() {
            return Err(LoadError::NoDirectory(name.into()));
        }
        let model = Arc::new(self.read_model(name).map_err(|source| LoadError::Read { name: name.into(), source })?);
        self.models.write().expect("models lock").insert(name.to_string(), model.clone());
        Ok(model)
    }

    /// Stops serving a model; `false` if it was not loaded.
    pub fn unload(&self, name: &str) -> bool {
        self.models.write().expect("models lock").remove(name).is_some()
    }

    /// Every model directory and loaded model, with its state.
    pub fn index(&self) -> Vec<IndexEntry> {
        let models = self.models.read().expect("models lock");
        let mut names: std::collections::BTreeSet<String> = models.keys().cloned().collect();
        if let Ok(found) = self.model_names() {
            names.extend(found);
        }
        let mut out = Vec::new();
        for name in names {
            let Some(m) = models.get(&name) else {
                out.push(IndexEntry { name, version: None, state: "UNAVAILABLE", reason: "unloaded".into() });
                continue;
            };
            if let Some(e) = &m.error {
                out.push(IndexEntry { name: name.clone(), version: None, state: "UNAVAILABLE", reason: e.clone() });
            }
            for v in m.versions.keys() {
                out.push(IndexEntry { name: name.clone(), version: Some(v.to_string()), state: "READY", reason: String::new() });
            }
            for (v, e) in &m.failed {
                out.push(IndexEntry { name: name.clone(), version: Some(v.to_string()), state: "UNAVAILABLE", reason: e.clone() });
            }
        }
        out
    }

    pub fn model(&self, name: &str) -> Option<Arc<Model>> {
        self.models.read().expect("models lock").get(name).cloned()
    }

    /// The version asked for, or the model's default (highest) version.
    pub fn find(&self, model: &str, version: Option<&str>) -> Option<Arc<Version>> {
        let models = self.models.read().expect("models lock");
        let m = models.get(model)?;
        match version {
            Some(v) => m.versions.get(&v.parse::<u64>().ok()?).cloned(),
            None => m.versions.values().next_back().cloned(),
        }
    }

    /// Ready when every model found loaded all its selected versions.
    pub fn ready(&self) -> bool {
        self.models.read().expect("models lock").values().all(|m| m.error.is_none() && m.failed.is_empty() && !m.versions.is_empty())
    }

    /// Reads one model directory: its config and the versions the policy selects, each loaded and warmed up.
    fn read_model(&self, name: &str) -> std::io::Result<Model> {
        let entry = self.model_dir(name);
        let metrics = &self.metrics;
        let mut model = Model { name: name.to_string(), versions: BTreeMap::new(), failed: BTreeMap::new(), error: None };
        let config = match ModelConfig::load(&entry) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(model = %name, error = %e, "model config is invalid; the model is not served");
                model.error = Some(e.to_string());
                return Ok(model);
            }
        };
        let mut found: BTreeMap<u64, PathBuf> = sorted_dirs(&entry)?
            .into_iter()
            .filter_map(|d| d.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse::<u64>().ok()).map(|v| (v, d)))
            .collect();
        // No version directories but a model file: it is version 1 (KServe's and TorchServe's flat layout).
        if found.is_empty() && entry.join("model.onnx").is_file() {
            found.insert(1, entry.clone());
        }
        let numbers: Vec<u64> = found.keys().copied().collect();
        let plan = config.plan(&self.host);
        tracing::info!(
            model = %name, backend = plan.backend.as_str(), why = plan.backend_reason, threads = plan.threads, instances = plan.instances,
            "model plan"
        );
        for v in config.select(&numbers) {
            let file = found[&v].join("model.onnx");
            match Version::load(name, v, &file, &config, &plan, metrics) {
                Ok(version) => {
                    tracing::info!(model = %name, version = v, "model version loaded");
                    model.versions.insert(v, Arc::new(version));
                }
                Err(e) => {
                    tracing::error!(model = %name, version = v, error = %e, "model version failed to load");
                    model.failed.insert(v, e.to_string());
                }
            }
        }
        Ok(model)
    }
}

impl Repository {
    /// The models' names: the single one, or the repository's subdirectories.
    fn model_names(&self) -> std::io::Result<Vec<String>> {
        if let Some(s) = &self.single {
            return Ok(vec![s.clone()]);
        }
        Ok(sorted_dirs(&self.dir)?.iter().filter_map(|d| d.file_name().and_then(|n| n.to_str()).map(String::from)).collect())
    }

    fn model_dir(&self, name: &str) -> PathBuf {
        if self.single.is_some() { self.dir.clone() } else { self.dir.join(name) }
    }
}

fn sorted_dirs(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect();
    dirs.sort();
    Ok(dirs)
}

// === impl Version ===

impl Version {
    // Long on purpose: loading one version in order (backend, overrides, instance threads, readiness); each step's
    // failure names the file, and the steps share the version's state.
    fn load(model: &str, version: u64, file: &Path, config: &ModelConfig, plan: &Plan, metrics: &Metrics) -> Result<Version, RuntimeError> {
        let load = || -> Result<Box<dyn Backend>, RuntimeError> {
            let mut backend: Box<dyn Backend> = match plan.backend {
                BackendKind::Tract => Box::new(TractBackend::load_with_threads(file, Some(plan.threads))?),
                BackendKind::Onnxruntime => Box::new(modelgate_runtime::OrtBackend::load_with_threads(file, Some(plan.threads))?),
            };
            // Warm up: the first run allocates and plans; readiness means a request will not pay for that.
            let inputs = warmup_inputs(backend.metadata());
            backend.run(inputs)?;
            Ok(backend)
        };
        let mut backends = (0..config.instances).map(|_| load()).collect::<Result<Vec<_>, _>>()?;
        let backend = backends.pop().expect("at least one instance");
        // What clients see: the model's inputs and outputs with config.yaml's declarations applied (backends keep
        // their own names; tensors are passed by position).
        let metadata = config
            .apply_overrides(backend.metadata().clone())
            .map_err(|e| RuntimeError::Load { path: file.display().to_string(), message: e.to_string() })?;
        let batches = |specs: &[modelgate_runtime::TensorSpec]| specs.iter().all(|t| t.shape.first() == Some(&-1));
        let batching = (config.max_batch_size > 0 && batches(&metadata.inputs) && batches(&metadata.outputs))
            .then_some(Batching { max_batch_size: config.max_batch_size, max_queue_delay: config.max_queue_delay.0 });
        let metrics = metrics.version(model, &version.to_string());
        let (queue, rx) = sync_channel::<Job>(config.max_queue_size);
        let thread_name = format!("model-{model}-{version}");
        let spawn_err = |e: std::io::Error| RuntimeError::Load {
            path: file.display().to_string(),
            message: format!("cannot start instance thread: {e}"),
        };
        let dispatch = if backends.is_empty() {
            // One instance forms and runs its batches on one thread.
            Dispatch::Inline(Executor { backend, metrics: metrics.clone() })
        } else {
            // Several: the queue's thread forms batches and hands each to a free instance (a rendezvous channel, so
            // batches go on growing while every instance is busy).
            let (tx, batches) = sync_channel::<Vec<Job>>(0);
            let batches = Arc::new(std::sync::Mutex::new(batches));
            backends.push(backend);
            // Each instance thread says it has started, so that a version reported ready has all its instances
            // running (and named) before the first request.
            let (started_tx, started) = sync_channel::<()>(backends.len());
            let count = backends.len();
            for (k, backend) in backends.into_iter().enumerate() {
                let mut exec = Executor { backend, metrics: metrics.clone() };
                let batches = batches.clone();
                let started_tx = started_tx.clone();
                std::thread::Builder::new()
                    .name(format!("inst{k}-{model}"))
                    .spawn(move || {
                        let _ = started_tx.send(());
                        loop {
                            let Ok(batch) = batches.lock().map_err(drop).and_then(|rx| rx.recv().map_err(drop)) else { return };
                            exec.execute(batch);
                        }
                    })
                    .map_err(spawn_err)?;
            }
            drop(started_tx);
            for _ in 0..count {
                started.recv().map_err(|_| RuntimeError::Load {
                    path: file.display().to_string(),
                    message: "an instance thread stopped at start".into(),
                })?;
            }
            Dispatch::Pool(tx)
        };
        let recorder = metrics.clone();
        std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || Instance { rx, batching, metrics: recorder, pending: VecDeque::new(), dispatch }.run())
            .map_err(spawn_err)?;
        Ok(Version { model: model.to_string(), version: version.to_string(), metadata, batching, plan: plan.clone(), metrics, queue })
    }

    /// Queues one inference; fails at once when the queue is full.
    pub async fn infer(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, RunError> {
        Ok(self.infer_timed(inputs).await?.0)
    }

    /// [`Version::infer`], also saying where the time went.
    pub async fn infer_timed(&self, inputs: Vec<Tensor>) -> Result<(Vec<Tensor>, Timing), RunError> {
        // Both runtimes hold BYTES elements as UTF-8 strings; anything else would be changed on the way in.
        for (spec, t) in self.metadata.inputs.iter().zip(&inputs) {
            if let TensorData::Bytes(v) = &t.data
                && let Some(i) = v.iter().position(|b| std::str::from_utf8(b).is_err())
            {
                return Err(RunError::Unsupported(format!(
                    "input {:?}: BYTES element {i} is not UTF-8; the runtimes (tract, onnxruntime) take BYTES as UTF-8 strings",
                    spec.name
                )));
            }
        }
        let (reply, rx) = oneshot::channel();
        self.queue.try_send(Job { inputs, enqueued: Instant::now(), reply }).map_err(|e| match e {
            TrySendError::Full(_) => RunError::QueueFull,
            TrySendError::Disconnected(_) => RunError::Stopped,
        })?;
        self.metrics.queue_depth.inc();
        Ok(rx.await.map_err(|_| RunError::Stopped)??)
    }
}

/// A version's queue thread: forms batches and runs them (one instance) or hands them to the instances.
struct Instance {
    rx: Receiver<Job>,
    batching: Option<Batching>,
    metrics: VersionMetrics,
    /// Jobs taken from the queue that did not fit the batch being formed; they lead the next one.
    pending: VecDeque<Job>,
    dispatch: Dispatch,
}

/// Where formed batches run.
enum Dispatch {
    Inline(Executor),
    Pool(SyncSender<Vec<Job>>),
}

/// One model instance: a copy of the model that runs batches.
struct Executor {
    backend: Box<dyn Backend>,
    metrics: VersionMetrics,
}

// === impl Instance ===

impl Instance {
    fn run(mut self) {
        while let Some(first) = self.next(None) {
            let batch = match self.batching {
                Some(b) => self.form_batch(first, b),
                None => vec![first],
            };
            match &mut self.dispatch {
                Dispatch::Inline(exec) => exec.execute(batch),
                Dispatch::Pool(tx) => {
                    if tx.send(batch).is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// The next job still wanted by its client: pending ones first, then the queue (waiting until `deadline`, or
    /// forever without one). `None` when the queue is closed or the deadline passed.
    fn next(&mut self, deadline: Option<Instant>) -> Option<Job> {
        loop {
            let job = match self.pending.pop_front() {
                Some(j) => j,
                None => {
                    let job = match deadline {
                        None => self.rx.recv().ok()?,
                        Some(d) => match d.checked_duration_since(Instant::now()) {
                            Some(left) if !left.is_zero() => self.rx.recv_timeout(left).ok()?,
                            _ => self.rx.try_recv().ok()?,
                        },
                    };
                    self.metrics.queue_depth.dec();
                    job
                }
            };
            if !job.reply.is_closed() {
                return Some(job);
            }
        }
    }

    /// Adds compatible queued jobs to `first` until the batch is full or the queue delay has passed.
    fn form_batch(&mut self, first: Job, b: Batching) -> Vec<Job> {
        let deadline = Instant::now() + b.max_queue_delay;
        let mut total = rows(&first);
        let mut batch = vec![first];
        let mut deferred = Vec::new();
        while total < b.max_batch_size && deferred.len() < b.max_batch_size {
            let Some(job) = self.next(Some(deadline)) else { break };
            if compatible(&batch[0], &job) && total + rows(&job) <= b.max_batch_size {
                total += rows(&job);
                batch.push(job);
            } else {
                deferred.push(job);
            }
        }
        for job in deferred.into_iter().rev() {
            self.pending.push_front(job);
        }
        batch
    }
}

// === impl Executor ===

impl Executor {
    /// Runs the jobs as one execution and answers each with its own rows.
    fn execute(&mut self, batch: Vec<Job>) {
        let started = Instant::now();
        let sizes: Vec<usize> = batch.iter().map(rows).collect();
        let total: usize = sizes.iter().sum();
        for job in &batch {
            self.metrics.queue_seconds.observe(started.duration_since(job.enqueued).as_secs_f64());
        }
        let n_inputs = batch[0].inputs.len();
        let mut columns: Vec<Vec<Tensor>> = (0..n_inputs).map(|_| Vec::with_capacity(batch.len())).collect();
        let mut replies = Vec::with_capacity(batch.len());
        for job in batch {
            for (i, t) in job.inputs.into_iter().enumerate() {
                columns[i].push(t);
            }
            replies.push((job.reply, job.enqueued));
        }
        let single = replies.len() == 1;
        let inputs: Option<Vec<Tensor>> =
            if single { columns.into_iter().map(|mut c| c.pop()).collect() } else { columns.into_iter().map(Tensor::concat).collect() };
        let compute = Instant::now();
        let outputs = inputs.ok_or_else(|| RuntimeError::Run("batched inputs do not line up".into())).and_then(|i| self.backend.run(i));
        let done = Instant::now();
        self.metrics.compute_seconds.observe(done.duration_since(compute).as_secs_f64());
        self.metrics.executions.inc();
        self.metrics.batch_size.observe(total as f64);
        self.metrics.inferences.inc_by(total as u64);
        let result = outputs.and_then(|outputs| {
            if single {
                return Ok(vec![outputs]);
            }
            let mut per_job: Vec<Vec<Tensor>> = (0..sizes.len()).map(|_| Vec::new()).collect();
            for out in outputs {
                let parts =
                    out.split_rows(&sizes).ok_or_else(|| RuntimeError::Run("an output is not batched along its first dimension".into()))?;
                for (k, p) in parts.into_iter().enumerate() {
                    per_job[k].push(p);
                }
            }
            Ok(per_job)
        });
        let ns = |d: Duration| d.as_nanos() as u64;
        let exec_ns = ns(done.duration_since(compute));
        let st = &self.metrics.stats;
        for (_, enqueued) in &replies {
            st.queue_ns.fetch_add(ns(started.duration_since(*enqueued)), Relaxed);
            st.compute_ns.fetch_add(exec_ns, Relaxed);
            if result.is_ok() {
                st.success_ns.fetch_add(ns(done.duration_since(*enqueued)), Relaxed);
            }
        }
        st.last_inference_ms
            .store(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64), Relaxed);
        if let Ok(mut b) = st.batches.lock() {
            let e = b.entry(total).or_default();
            e.0 += 1;
            e.1 += exec_ns;
        }
        match result {
            Ok(per_job) => {
                self.metrics.success.inc_by(replies.len() as u64);
                for ((reply, enqueued), outputs) in replies.into_iter().zip(per_job) {
                    let _ = reply.send(Ok((outputs, Timing { enqueued, started, compute, done, batch_size: total })));
                }
            }
            Err(e) => {
                self.metrics.failure.inc_by(replies.len() as u64);
                for (reply, _) in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Rows (first dimension) of a job's first input.
fn rows(job: &Job) -> usize {
    job.inputs.first().and_then(|t| t.shape.first().copied()).unwrap_or(1)
}

/// Jobs batch together when every input has the same dims past the first.
fn compatible(a: &Job, b: &Job) -> bool {
    a.inputs.len() == b.inputs.len() && a.inputs.iter().zip(&b.inputs).all(|(x, y)| x.shape.get(1..) == y.shape.get(1..))
}

fn warmup_inputs(m: &ModelMetadata) -> Vec<Tensor> {
    m.inputs
        .iter()
        .map(|spec| {
            let shape: Vec<usize> = spec.shape.iter().map(|&d| if d < 0 { 1 } else { d as usize }).collect();
            let n: usize = shape.iter().product();
            let data = match spec.datatype {
                DataType::Bool => TensorData::Bool(vec![false; n]),
                DataType::U8 => TensorData::U8(vec![0; n]),
                DataType::U16 => TensorData::U16(vec![0; n]),
                DataType::U32 => TensorData::U32(vec![0; n]),
                DataType::U64 => TensorData::U64(vec![0; n]),
                DataType::I8 => TensorData::I8(vec![0; n]),
                DataType::I16 => TensorData::I16(vec![0; n]),
                DataType::I32 => TensorData::I32(vec![0; n]),
                DataType::I64 => TensorData::I64(vec![0; n]),
                DataType::F16 => TensorData::F16(vec![0; n]),
                DataType::F32 => TensorData::F32(vec![0.0; n]),
                DataType::F64 => TensorData::F64(vec![0.0; n]),
                DataType::Bytes => TensorData::Bytes(vec![Vec::new(); n]),
            };
            Tensor { shape, data }
        })
        .collect()
}
