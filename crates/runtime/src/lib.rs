//! Inference backends behind one synchronous trait.
//!
//! A [`Backend`] is a loaded model: it describes its inputs and outputs ([`ModelMetadata`]) and runs a batch of
//! already-validated input [`Tensor`]s to output tensors. Backends are synchronous and slow by nature: the model
//! server gives each instance its own thread and feeds it through a bounded queue (STYLE §7); nothing here knows
//! about HTTP, queues or batching. onnxruntime (`OrtBackend`, its library found at run time by [`ort_lib`]) is used
//! where present; `tract` (pure Rust) always works.

#![deny(unsafe_code)]

mod ort_backend;
pub mod ort_lib;
mod tensor;
mod tract_backend;

pub use ort_backend::OrtBackend;
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

/// One contract suite, run against every backend (STYLE §9): the same model, metadata and PyTorch golden outputs.
#[cfg(test)]
mod contract {
    use std::path::{Path, PathBuf};

    use super::*;

    fn digits() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/models/digits/1/model.onnx")
    }

    fn golden() -> serde_json::Value {
        serde_json::from_str(
            &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/digits/golden.json")).unwrap(),
        )
        .unwrap()
    }

    pub fn metadata_keeps_the_batch_dimension_dynamic(b: &dyn Backend) {
        let m = b.metadata();
        assert_eq!(m.inputs, vec![TensorSpec { name: "input".into(), datatype: DataType::F32, shape: vec![-1, 1, 8, 8] }]);
        assert_eq!(m.outputs, vec![TensorSpec { name: "logits".into(), datatype: DataType::F32, shape: vec![-1, 10] }]);
    }

    pub fn outputs_match_pytorch(b: &mut dyn Backend) {
        let g = golden();
        let cases = g["cases"].as_array().unwrap();
        let input: Vec<f32> =
            cases.iter().flat_map(|c| c["input"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32)).collect();
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

    fn dtypes() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/models/dtypes.onnx")
    }

    /// Every OIP v2 datatype goes in and comes back unchanged (tests/data/models/dtypes.onnx, a hand-built graph of
    /// Identity nodes), and FP16 values doubled through FP32 come back doubled.
    pub fn every_datatype_round_trips(b: &mut dyn Backend) {
        let specs = b.metadata().inputs.clone();
        let inputs: Vec<Tensor> = specs
            .iter()
            .map(|s| {
                let data = match s.datatype {
                    DataType::F16 => TensorData::F16(vec![0x3c00, 0xc000, 0x3555, 0x7bff]), // 1, -2, 0.333, 65504
                    DataType::F32 => TensorData::F32(vec![1.5, -2.25, 0.0, 3.0e38]),
                    DataType::F64 => TensorData::F64(vec![1.5, -2.25, 1e-300, 1e300]),
                    DataType::I8 => TensorData::I8(vec![i8::MIN, -1, 0, i8::MAX]),
                    DataType::I16 => TensorData::I16(vec![i16::MIN, -1, 0, i16::MAX]),
                    DataType::I32 => TensorData::I32(vec![i32::MIN, -1, 0, i32::MAX]),
                    DataType::I64 => TensorData::I64(vec![i64::MIN, -1, 0, i64::MAX]),
                    DataType::U8 => TensorData::U8(vec![0, 1, 128, u8::MAX]),
                    DataType::U16 => TensorData::U16(vec![0, 1, 1 << 15, u16::MAX]),
                    DataType::U32 => TensorData::U32(vec![0, 1, 1 << 31, u32::MAX]),
                    DataType::U64 => TensorData::U64(vec![0, 1, 1 << 63, u64::MAX]),
                    DataType::Bool => TensorData::Bool(vec![true, false, false, true]),
                    DataType::Bytes => {
                        TensorData::Bytes(vec![b"hello".to_vec(), Vec::new(), "gr\u{fc}\u{df}e".as_bytes().to_vec(), b"x".repeat(300)])
                    }
                };
                Tensor { shape: vec![2, 2], data }
            })
            .collect();
        assert_eq!(specs.len(), 13, "one input per datatype");
        assert!(specs.iter().all(|s| s.name.starts_with("x_")), "inputs keep their names: {specs:?}");
        let out = b.run(inputs.clone()).unwrap();
        let outputs = &b.metadata().outputs;
        for (i, input) in inputs.iter().enumerate() {
            let k = outputs.iter().position(|o| o.name == specs[i].name.replacen("x_", "y_", 1)).unwrap();
            assert_eq!(&out[k], input, "{}", specs[i].name);
        }
        let twice = outputs.iter().position(|o| o.name == "twice_fp16").unwrap();
        assert_eq!(out[twice].data, TensorData::F16(vec![0x4000, 0xc400, 0x3955, 0x7c00]), "1→2, -2→-4, 0.333→0.667, 65504→inf");
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
                #[test]
                fn every_datatype_round_trips() {
                    super::every_datatype_round_trips(&mut $load(&super::dtypes()).unwrap());
                }
            }
        };
    }

    suite!(tract, crate::TractBackend::load);
    suite!(tract_two_threads, |p: &std::path::Path| crate::TractBackend::load_with_threads(p, Some(2)));
    suite!(onnxruntime, crate::OrtBackend::load);
}
