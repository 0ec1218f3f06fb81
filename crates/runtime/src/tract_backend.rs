//! The default backend: tract, a pure-Rust ONNX runtime.

use std::path::Path;
use std::sync::Arc;

use tract_linalg::multithread::{Executor, multithread_tract_scope};
use tract_onnx::prelude::*;

use crate::{Backend, DataType, ModelMetadata, RuntimeError, Tensor, TensorData, TensorSpec};

/// An ONNX model loaded and optimized by tract. Dynamic dimensions (e.g. the batch) stay symbolic.
pub struct TractBackend {
    plan: Arc<TypedRunnableModel>,
    metadata: ModelMetadata,
    /// A private rayon pool for tract's multithreaded kernels (matrix products, element-wise and reductions over
    /// large tensors), when more than one thread was asked for.
    pool: Option<Executor>,
}

// === impl TractBackend ===

impl TractBackend {
    pub fn load(path: &Path) -> Result<TractBackend, RuntimeError> {
        Self::load_with_threads(path, None)
    }

    /// Loads `path`; with `threads` above 1 each run splits tract's large kernels over that many threads of a pool
    /// owned by this instance (default: one thread, the caller's).
    pub fn load_with_threads(path: &Path, threads: Option<usize>) -> Result<TractBackend, RuntimeError> {
        let load_err = |e: TractError| RuntimeError::Load { path: path.display().to_string(), message: format!("{e:#}") };
        let model = tract_onnx::onnx().model_for_path(path).map_err(load_err)?;
        let typed = model.into_optimized().map_err(load_err)?;
        let spec = |outlet: OutletId, name: String| -> Result<TensorSpec, RuntimeError> {
            let fact = typed.outlet_fact(outlet).map_err(load_err)?;
            let datatype = datatype(fact.datum_type)
                .ok_or_else(|| RuntimeError::UnsupportedType(path.display().to_string(), format!("{:?}", fact.datum_type)))?;
            let shape = fact.shape.iter().map(|d| d.to_i64().unwrap_or(-1)).collect();
            Ok(TensorSpec { name, datatype, shape })
        };
        // An input is named by its source node: optimization may fold an Identity into it and move an output's
        // label onto the input's outlet.
        let inputs = typed.inputs.iter().map(|o| spec(*o, typed.node(o.node).name.clone())).collect::<Result<_, _>>()?;
        let outputs = typed
            .outputs
            .iter()
            .map(|o| spec(*o, typed.outlet_label(*o).map(String::from).unwrap_or_else(|| typed.node(o.node).name.clone())))
            .collect::<Result<_, _>>()?;
        let plan = typed.into_runnable().map_err(load_err)?;
        // tract panics when the pool's threads cannot be started; that is a load error here.
        let pool = match threads.filter(|n| *n > 1) {
            Some(n) => Some(std::panic::catch_unwind(|| Executor::multithread_with_name(n, "tract")).map_err(|_| RuntimeError::Load {
                path: path.display().to_string(),
                message: format!("cannot start {n} tract threads"),
            })?),
            None => None,
        };
        Ok(TractBackend { plan, metadata: ModelMetadata { inputs, outputs }, pool })
    }
}

impl Backend for TractBackend {
    fn metadata(&self) -> &ModelMetadata {
        &self.metadata
    }

    fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, RuntimeError> {
        let run_err = |e: TractError| RuntimeError::Run(format!("{e:#}"));
        let values: TVec<TValue> = inputs.into_iter().map(|t| to_tract(t).map(TValue::from)).collect::<Result<_, _>>()?;
        let outputs = match &self.pool {
            Some(pool) => multithread_tract_scope(pool.clone(), || self.plan.run(values)),
            None => self.plan.run(values),
        }
        .map_err(run_err)?;
        outputs.iter().map(from_tract).collect()
    }
}

fn datatype(dt: DatumType) -> Option<DataType> {
    Some(match dt {
        DatumType::Bool => DataType::Bool,
        DatumType::U8 => DataType::U8,
        DatumType::U16 => DataType::U16,
        DatumType::U32 => DataType::U32,
        DatumType::U64 => DataType::U64,
        DatumType::I8 => DataType::I8,
        DatumType::I16 => DataType::I16,
        DatumType::I32 => DataType::I32,
        DatumType::I64 => DataType::I64,
        DatumType::F16 => DataType::F16,
        DatumType::F32 => DataType::F32,
        DatumType::F64 => DataType::F64,
        DatumType::String => DataType::Bytes,
        _ => return None,
    })
}

fn to_tract(t: Tensor) -> Result<tract_onnx::prelude::Tensor, RuntimeError> {
    let err = |e: TractError| RuntimeError::Run(format!("{e:#}"));
    let s = &t.shape;
    match t.data {
        TensorData::Bool(v) => tract_onnx::prelude::Tensor::from_shape(s, &v),
        TensorData::U8(v) => tract_onnx::prelude::Tensor::from_shape(s, &v),
        TensorData::U16(v) => tract_onnx::prelude::Tensor::from_shape(s, &v),
        TensorData::U32(v) => tract_onnx::prelude::Tensor::from_shape(s, &v),
        TensorData::U64(v) => tract_onnx::prelude::Tensor::from_shape(s, &v),
        TensorData::I8(v) => tract_onnx::prelude::Tensor::from_shape(s, &v),
        TensorData::I16(v) => tract_onnx::prelude::Tensor::from_shape(s, &v),
        TensorData::I32(v) => tract_onnx::prelude::Tensor::from_shape(s, &v),
        TensorData::I64(v) => tract_onnx::prelude::Tensor::from_shape(s, &v),
        TensorData::F16(v) => {
            let halves: Vec<f16> = v.into_iter().map(f16::from_bits).collect();
            tract_onnx::prelude::Tensor::from_shape(s, &halves)
        }
        TensorData::F32(v) => tract_onnx::prelude::Tensor::from_shape(s, &v),
        TensorData::F64(v) => tract_onnx::prelude::Tensor::from_shape(s, &v),
        TensorData::Bytes(v) => {
            // The model server refuses non-UTF-8 BYTES before they get here; never change them silently.
            let strings = v
                .into_iter()
                .map(String::from_utf8)
                .collect::<Result<Vec<String>, _>>()
                .map_err(|_| RuntimeError::Run("a BYTES element is not UTF-8".into()))?;
            tract_ndarray::ArrayD::from_shape_vec(tract_ndarray::IxDyn(s), strings)
                .map(|a| a.into_tensor())
                .map_err(|e| TractError::msg(e.to_string()))
        }
    }
    .map_err(err)
}

fn from_tract(v: &TValue) -> Result<Tensor, RuntimeError> {
    fn vec<T: Datum + Copy>(v: &TValue) -> Result<Vec<T>, RuntimeError> {
        Ok(v.to_plain_array_view::<T>().map_err(|e| RuntimeError::Run(format!("{e:#}")))?.iter().copied().collect())
    }
    let shape = v.shape().to_vec();
    let data = match v.datum_type() {
        DatumType::Bool => TensorData::Bool(vec(v)?),
        DatumType::U8 => TensorData::U8(vec(v)?),
        DatumType::U16 => TensorData::U16(vec(v)?),
        DatumType::U32 => TensorData::U32(vec(v)?),
        DatumType::U64 => TensorData::U64(vec(v)?),
        DatumType::I8 => TensorData::I8(vec(v)?),
        DatumType::I16 => TensorData::I16(vec(v)?),
        DatumType::I32 => TensorData::I32(vec(v)?),
        DatumType::I64 => TensorData::I64(vec(v)?),
        DatumType::F16 => TensorData::F16(vec::<f16>(v)?.into_iter().map(|h| h.to_bits()).collect()),
        DatumType::F32 => TensorData::F32(vec(v)?),
        DatumType::F64 => TensorData::F64(vec(v)?),
        DatumType::String => TensorData::Bytes(
            v.to_plain_array_view::<String>()
                .map_err(|e| RuntimeError::Run(format!("{e:#}")))?
                .iter()
                .map(|s| s.as_bytes().to_vec())
                .collect(),
        ),
        other => return Err(RuntimeError::Run(format!("unsupported output type {other:?}"))),
    };
    Ok(Tensor { shape, data })
}
