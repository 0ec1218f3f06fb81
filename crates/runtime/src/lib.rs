//! Inference backends behind one synchronous trait.
//!
//! A [`Backend`] is a loaded model: it describes its inputs and outputs ([`ModelMetadata`]) and runs a batch of
//! already-validated input [`Tensor`]s to output tensors. Backends are synchronous and slow by nature: the model
//! server gives each instance its own thread and feeds it through a bounded queue (STYLE §7); nothing here knows
//! about HTTP, queues or batching. `tract` (pure Rust) is the default backend; onnxruntime (`OrtBackend`) comes with
//! the cargo feature `ort`.

#![deny(unsafe_code)]

#[cfg(feature = "ort")]
mod ort_backend;
mod tensor;
mod tract_backend;

pub use tensor::{DataType, ModelMetadata, Tensor, TensorData, TensorSpec};
pub use tract_backend::TractBackend;
#[cfg(feature = "ort")]
pub use ort_backend::OrtBackend;

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

/// One contract suite, run against every backend (STYLE §9): the same model, metadata and PyTorch golden outputs.
#[cfg(test)]
mod contract {
    use std::path::{Path, PathBuf};

    use super::*;

    fn digits() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/models/digits/1/model.onnx")
    }

    fn golden() -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/digits/golden.json")).unwrap()).unwrap()
    }

    pub fn metadata_keeps_the_batch_dimension_dynamic(b: &dyn Backend) {
        let m = b.metadata();
        assert_eq!(m.inputs, vec![TensorSpec { name: "input".into(), datatype: DataType::F32, shape: vec![-1, 1, 8, 8] }]);
        assert_eq!(m.outputs, vec![TensorSpec { name: "logits".into(), datatype: DataType::F32, shape: vec![-1, 10] }]);
    }

    pub fn outputs_match_pytorch(b: &mut dyn Backend) {
        let g = golden();
        let cases = g["cases"].as_array().unwrap();
        let input: Vec<f32> = cases.iter().flat_map(|c| c["input"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32)).collect();
        let out = b.run(vec![Tensor { shape: vec![cases.len(), 1, 8, 8], data: TensorData::F32(input) }]).unwrap();
        assert_eq!(out[0].shape, vec![cases.len(), 10]);
        let TensorData::F32(logits) = &out[0].data else { panic!("FP32 logits") };
        let mut max_err = 0f32;
        for (k, c) in cases.iter().enumerate() {
            let want: Vec<f32> = c["logits"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
            for (j, w) in want.iter().enumerate() {
                max_err = max_err.max((logits[k * 10 + j] - w).abs());
            }
            // The same class as PyTorch chose (the true label for all but one of these digits).
            let argmax = (0..10).max_by(|&a, &b| logits[k * 10 + a].total_cmp(&logits[k * 10 + b])).unwrap();
            let torch_argmax = (0..10).max_by(|&a, &b| want[a].total_cmp(&want[b])).unwrap();
            assert_eq!(argmax, torch_argmax, "case {k}");
        }
        assert!(max_err < 1e-4, "max abs error vs PyTorch {max_err}");
    }

    macro_rules! suite {
        ($name:ident, $load:expr) => {
            mod $name {
                #[test]
                fn metadata_keeps_the_batch_dimension_dynamic() {
                    super::metadata_keeps_the_batch_dimension_dynamic(&$load(&super::digits()).unwrap());
                }
                #[test]
                fn outputs_match_pytorch() {
                    super::outputs_match_pytorch(&mut $load(&super::digits()).unwrap());
                }
            }
        };
    }

    suite!(tract, crate::TractBackend::load);
    #[cfg(feature = "ort")]
    suite!(onnxruntime, crate::OrtBackend::load);
}
