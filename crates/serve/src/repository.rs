//! The model repository: `DIR/<model>/<version>/model.onnx`, like Triton's. Every version found is loaded,
//! warmed up with one zero-filled request, and served by its own instance thread fed through a bounded queue
//! (STYLE §7). A version that fails to load is reported with its error; the others keep serving.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};

use modelgate_runtime::{Backend, DataType, ModelMetadata, RuntimeError, Tensor, TensorData, TractBackend};
use tokio::sync::oneshot;

/// Requests waiting per model version before new ones are refused (503 with `Retry-After`).
const QUEUE_CAPACITY: usize = 256;

/// Every model found in the repository.
pub struct Repository {
    pub dir: PathBuf,
    pub models: BTreeMap<String, Model>,
}

/// A model and its versions.
pub struct Model {
    pub name: String,
    /// Loaded versions by number; the highest is the default.
    pub versions: BTreeMap<u64, Arc<Version>>,
    /// Versions that failed to load, with the reason.
    pub failed: BTreeMap<u64, String>,
}

/// One loaded, warmed-up model version.
pub struct Version {
    pub model: String,
    pub version: String,
    pub metadata: ModelMetadata,
    queue: SyncSender<Job>,
}

struct Job {
    inputs: Vec<Tensor>,
    reply: oneshot::Sender<Result<Vec<Tensor>, RuntimeError>>,
}

/// Why an inference could not be run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("the model's queue is full; retry shortly")]
    QueueFull,
    #[error("the model instance stopped")]
    Stopped,
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

// === impl Repository ===

impl Repository {
    /// Scans `dir` and loads every model version in it.
    pub fn load(dir: &Path) -> std::io::Result<Repository> {
        let mut models = BTreeMap::new();
        for entry in sorted_dirs(dir)? {
            let Some(name) = entry.file_name().and_then(|n| n.to_str()).map(String::from) else { continue };
            let mut model = Model { name: name.clone(), versions: BTreeMap::new(), failed: BTreeMap::new() };
            for vdir in sorted_dirs(&entry)? {
                let Some(v) = vdir.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse::<u64>().ok()) else { continue };
                let file = vdir.join("model.onnx");
                match Version::load(&name, v, &file) {
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
            if !model.versions.is_empty() || !model.failed.is_empty() {
                models.insert(name, model);
            }
        }
        Ok(Repository { dir: dir.to_path_buf(), models })
    }

    /// The version asked for, or the model's default (highest) version.
    pub fn find(&self, model: &str, version: Option<&str>) -> Option<&Arc<Version>> {
        let m = self.models.get(model)?;
        match version {
            Some(v) => m.versions.get(&v.parse::<u64>().ok()?),
            None => m.versions.values().next_back(),
        }
    }

    /// Ready when every version found loaded.
    pub fn ready(&self) -> bool {
        self.models.values().all(|m| m.failed.is_empty() && !m.versions.is_empty())
    }
}

fn sorted_dirs(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect();
    dirs.sort();
    Ok(dirs)
}

// === impl Version ===

impl Version {
    fn load(model: &str, version: u64, file: &Path) -> Result<Version, RuntimeError> {
        let mut backend = TractBackend::load(file)?;
        let metadata = backend.metadata().clone();
        // Warm up: the first run allocates and plans; readiness means a request will not pay for that.
        backend.run(warmup_inputs(&metadata))?;
        let (queue, rx) = sync_channel::<Job>(QUEUE_CAPACITY);
        let thread_name = format!("model-{model}-{version}");
        std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    if job.reply.is_closed() {
                        continue; // the client went away while queued
                    }
                    let _ = job.reply.send(backend.run(job.inputs));
                }
            })
            .map_err(|e| RuntimeError::Load { path: file.display().to_string(), message: format!("cannot start instance thread: {e}") })?;
        Ok(Version { model: model.to_string(), version: version.to_string(), metadata, queue })
    }

    /// Queues one inference; fails at once when the queue is full.
    pub async fn infer(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, RunError> {
        let (reply, rx) = oneshot::channel();
        self.queue.try_send(Job { inputs, reply }).map_err(|e| match e {
            TrySendError::Full(_) => RunError::QueueFull,
            TrySendError::Disconnected(_) => RunError::Stopped,
        })?;
        Ok(rx.await.map_err(|_| RunError::Stopped)??)
    }
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
