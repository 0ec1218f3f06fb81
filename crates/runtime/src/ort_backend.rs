//! The onnxruntime backend, with `libonnxruntime` loaded at run time where [`crate::ort_lib`] found it (the library
//! ships inside the PyPI `onnxruntime` wheel). Supports every OIP v2 datatype: FP16/32/64, INT8–64,
//! UINT8–64, BOOL and BYTES (onnxruntime strings: BYTES elements must be UTF-8).

use std::path::Path;

use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Tensor as OrtTensor, TensorElementType, ValueType};

use crate::{Backend, DataType, ModelMetadata, RuntimeError, Tensor, TensorData, TensorSpec};

/// An ONNX model run by onnxruntime.
pub struct OrtBackend {
    session: Session,
    metadata: ModelMetadata,
}

// === impl OrtBackend ===

impl OrtBackend {
    /// Loads `path` with onnxruntime's default intra-op threads (one per core).
    pub fn load(path: &Path) -> Result<OrtBackend, RuntimeError> {
        Self::load_with_threads(path, None)
    }

    /// Loads `path` with `threads` intra-op threads (onnxruntime's default: one per core), with the library that
    /// [`crate::ort_lib::discover`] found (which runs here if it has not yet, without `--ort-lib`).
    pub fn load_with_threads(path: &Path, threads: Option<usize>) -> Result<OrtBackend, RuntimeError> {
        let err = |e: &dyn std::fmt::Display| RuntimeError::Load { path: path.display().to_string(), message: e.to_string() };
        let discovery = crate::ort_lib::discover(None);
        let env = crate::ort_lib::environment().ok_or_else(|| err(&discovery.summary()))?;
        let mut builder = Session::builder(env).map_err(|e| err(&e))?;
        if let Some(n) = threads {
            builder = builder.with_intra_threads(n).map_err(|e| err(&e))?;
        }
        let session = builder.commit_from_file(path).map_err(|e| err(&e))?;
        let spec = |name: &str, ty: &ValueType| -> Result<TensorSpec, RuntimeError> {
            let ValueType::Tensor { ty, shape, .. } = ty else {
                return Err(RuntimeError::UnsupportedType(path.display().to_string(), format!("{name}: not a tensor")));
            };
            let datatype =
                datatype(*ty).ok_or_else(|| RuntimeError::UnsupportedType(path.display().to_string(), format!("{name}: {ty:?}")))?;
            Ok(TensorSpec { name: name.to_string(), datatype, shape: shape.iter().map(|&d| if d < 0 { -1 } else { d }).collect() })
        };
        let inputs = session.inputs().iter().map(|o| spec(o.name(), o.dtype())).collect::<Result<_, _>>()?;
        let outputs = session.outputs().iter().map(|o| spec(o.name(), o.dtype())).collect::<Result<_, _>>()?;
        Ok(OrtBackend { session, metadata: ModelMetadata { inputs, outputs } })
    }
}

fn datatype(t: TensorElementType) -> Option<DataType> {
    Some(match t {
        TensorElementType::Float16 => DataType::F16,
        TensorElementType::Float32 => DataType::F32,
        TensorElementType::Float64 => DataType::F64,
        TensorElementType::Int64 => DataType::I64,
        TensorElementType::Int32 => DataType::I32,
        TensorElementType::Int16 => DataType::I16,
        TensorElementType::Int8 => DataType::I8,
        TensorElementType::Uint8 => DataType::U8,
        TensorElementType::Uint16 => DataType::U16,
        TensorElementType::Uint32 => DataType::U32,
        TensorElementType::Uint64 => DataType::U64,
        TensorElementType::Bool => DataType::Bool,
        TensorElementType::String => DataType::Bytes,
        _ => return None,
    })
}

fn to_value(t: Tensor) -> Result<SessionInputValue<'static>, RuntimeError> {
    let shape: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
    let run = |e: ort::Error| RuntimeError::Run(e.to_string());
    Ok(match t.data {
        TensorData::F32(v) => OrtTensor::from_array((shape, v)).map_err(run)?.into_dyn().into(),
        TensorData::F64(v) => OrtTensor::from_array((shape, v)).map_err(run)?.into_dyn().into(),
        TensorData::I64(v) => OrtTensor::from_array((shape, v)).map_err(run)?.into_dyn().into(),
        TensorData::I32(v) => OrtTensor::from_array((shape, v)).map_err(run)?.into_dyn().into(),
        TensorData::I8(v) => OrtTensor::from_array((shape, v)).map_err(run)?.into_dyn().into(),
        TensorData::U8(v) => OrtTensor::from_array((shape, v)).map_err(run)?.into_dyn().into(),
        TensorData::Bool(v) => OrtTensor::from_array((shape, v)).map_err(run)?.into_dyn().into(),
        TensorData::I16(v) => OrtTensor::from_array((shape, v)).map_err(run)?.into_dyn().into(),
        TensorData::U16(v) => OrtTensor::from_array((shape, v)).map_err(run)?.into_dyn().into(),
        TensorData::U32(v) => OrtTensor::from_array((shape, v)).map_err(run)?.into_dyn().into(),
        TensorData::U64(v) => OrtTensor::from_array((shape, v)).map_err(run)?.into_dyn().into(),
        TensorData::F16(v) => {
            let halves: Vec<half::f16> = v.into_iter().map(half::f16::from_bits).collect();
            OrtTensor::from_array((shape, halves)).map_err(run)?.into_dyn().into()
        }
        TensorData::Bytes(v) => {
            let strings = v
                .into_iter()
                .map(|b| {
                    String::from_utf8(b).map_err(|_| {
                        RuntimeError::Run("the onnxruntime backend takes BYTES elements as UTF-8 strings; an element is not UTF-8".into())
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            OrtTensor::from_string_array((shape, strings.as_slice())).map_err(run)?.into_dyn().into()
        }
    })
}

fn from_value(v: &DynValue, datatype: DataType) -> Result<Tensor, RuntimeError> {
    fn get<T: ort::value::PrimitiveTensorElementType + Copy>(v: &DynValue) -> Result<(Vec<usize>, Vec<T>), RuntimeError> {
        let (shape, data) = v.try_extract_tensor::<T>().map_err(|e| RuntimeError::Run(e.to_string()))?;
        Ok((shape.iter().map(|&d| d as usize).collect(), data.to_vec()))
    }
    let (shape, data) = match datatype {
        DataType::F32 => get::<f32>(v).map(|(s, d)| (s, TensorData::F32(d)))?,
        DataType::F64 => get::<f64>(v).map(|(s, d)| (s, TensorData::F64(d)))?,
        DataType::I64 => get::<i64>(v).map(|(s, d)| (s, TensorData::I64(d)))?,
        DataType::I32 => get::<i32>(v).map(|(s, d)| (s, TensorData::I32(d)))?,
        DataType::I8 => get::<i8>(v).map(|(s, d)| (s, TensorData::I8(d)))?,
        DataType::U8 => get::<u8>(v).map(|(s, d)| (s, TensorData::U8(d)))?,
        DataType::Bool => get::<bool>(v).map(|(s, d)| (s, TensorData::Bool(d)))?,
        DataType::I16 => get::<i16>(v).map(|(s, d)| (s, TensorData::I16(d)))?,
        DataType::U16 => get::<u16>(v).map(|(s, d)| (s, TensorData::U16(d)))?,
        DataType::U32 => get::<u32>(v).map(|(s, d)| (s, TensorData::U32(d)))?,
        DataType::U64 => get::<u64>(v).map(|(s, d)| (s, TensorData::U64(d)))?,
        DataType::F16 => get::<half::f16>(v).map(|(s, d)| (s, TensorData::F16(d.into_iter().map(half::f16::to_bits).collect())))?,
        DataType::Bytes => {
            let (shape, strings) = v.try_extract_strings().map_err(|e| RuntimeError::Run(e.to_string()))?;
            (shape.iter().map(|&d| d as usize).collect(), TensorData::Bytes(strings.into_iter().map(String::into_bytes).collect()))
        }
    };
    Ok(Tensor { shape, data })
}

impl Backend for OrtBackend {
    fn metadata(&self) -> &ModelMetadata {
        &self.metadata
    }

    fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, RuntimeError> {
        let named: Vec<(String, SessionInputValue<'static>)> =
            self.metadata.inputs.iter().zip(inputs).map(|(s, t)| to_value(t).map(|v| (s.name.clone(), v))).collect::<Result<_, _>>()?;
        let outputs = self.session.run(named).map_err(|e| RuntimeError::Run(e.to_string()))?;
        self.metadata.outputs.iter().map(|s| from_value(&outputs[s.name.as_str()], s.datatype)).collect()
    }
}
