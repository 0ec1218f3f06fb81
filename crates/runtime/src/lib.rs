//! Inference backends behind one synchronous trait.
//!
//! A [`Backend`] is a loaded model: it describes its inputs and outputs ([`ModelMetadata`]) and runs a batch of
//! already-validated input [`Tensor`]s to output tensors. Backends are synchronous and slow by nature: the model
//! server gives each instance its own thread and feeds it through a bounded queue (STYLE §7); nothing here knows
//! about HTTP, queues or batching. `tract` (pure Rust) is the default backend.

#![deny(unsafe_code)]

mod tensor;
mod tract_backend;

pub use tensor::{DataType, ModelMetadata, Tensor, TensorData, TensorSpec};
pub use tract_backend::TractBackend;

/// A loaded model, run from one thread at a time.
pub trait Backend: Send + 'static {
    /// The model's inputs and outputs as the model declares them (`-1` for dynamic dimensions).
    fn metadata(&self) -> &ModelMetadata;

    /// Runs the model. `inputs` are in the order of `metadata().inputs`, already checked against it; the result
    /// holds every output in the order of `metadata().outputs`.
    fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, RuntimeError>;
}

/// Why a model could not be loaded or run.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot load model {path}: {message}")]
    Load { path: String, message: String },
    #[error("model {0} has a datatype modelgate does not serve: {1}")]
    UnsupportedType(String, String),
    #[error("inference failed: {0}")]
    Run(String),
}
