//! Checks an inference request against the model's metadata and converts it to runtime tensors. Every problem is
//! a 400 naming the tensor and what was expected; nothing malformed reaches an instance thread.

use modelgate_runtime::{DataType, ModelMetadata, Tensor, TensorData, TensorSpec};

pub use crate::protocol::Invalid;
use crate::protocol::{InferRequest, InputTensor, OutputData, OutputTensor, Scalar};

/// Largest element count accepted for one tensor (guards against huge declared shapes).
pub const MAX_ELEMENTS: usize = 64 << 20;

/// Inputs in model order, and the indexes of the outputs to return. `binary` is the body after the JSON part
/// (binary tensor data extension), sliced among the inputs that declare `binary_data_size`, in request order.
pub fn inputs(req: &mut InferRequest, meta: &ModelMetadata, binary: &[u8]) -> Result<(Vec<Tensor>, Vec<usize>), Invalid> {
    for given in &req.inputs {
        if !meta.inputs.iter().any(|s| s.name == given.name) {
            return Err(Invalid(format!("unknown input {:?}; the model takes {}", given.name, describe(&meta.inputs))));
        }
    }
    let mut raws: Vec<Option<&[u8]>> = Vec::with_capacity(req.inputs.len());
    let mut offset = 0usize;
    for given in &req.inputs {
        let Some(size) = given.parameters.as_ref().and_then(|p| p.get("binary_data_size")) else {
            raws.push(None);
            continue;
        };
        let n = size.as_u64().ok_or_else(|| Invalid(format!("input {:?}: binary_data_size must be a non-negative integer", given.name)))?;
        let end = offset.checked_add(n as usize).filter(|&e| e <= binary.len()).ok_or_else(|| {
            Invalid(format!("input {:?}: binary_data_size {n} goes past the end of the {} bytes of binary data", given.name, binary.len()))
        })?;
        raws.push(Some(&binary[offset..end]));
        offset = end;
    }
    if offset != binary.len() {
        return Err(Invalid(format!(
            "the body has {} bytes of binary data but the inputs' binary_data_size add up to {offset}",
            binary.len()
        )));
    }
    let mut tensors = Vec::with_capacity(meta.inputs.len());
    for spec in &meta.inputs {
        let mut matching = req.inputs.iter().enumerate().filter(|(_, i)| i.name == spec.name).map(|(k, _)| k);
        let k = matching.next().ok_or_else(|| Invalid(format!("missing input {:?} ({} {:?})", spec.name, spec.datatype, spec.shape)))?;
        if matching.next().is_some() {
            return Err(Invalid(format!("input {:?} is given twice", spec.name)));
        }
        tensors.push(tensor(&mut req.inputs[k], spec, raws[k])?);
    }
    let outputs = match &req.outputs {
        None => (0..meta.outputs.len()).collect(),
        Some(wanted) => wanted
            .iter()
            .map(|w| {
                meta.outputs
                    .iter()
                    .position(|o| o.name == w.name)
                    .ok_or_else(|| Invalid(format!("unknown output {:?}; the model returns {}", w.name, describe(&meta.outputs))))
            })
            .collect::<Result<_, _>>()?,
    };
    Ok((tensors, outputs))
}

fn describe(specs: &[TensorSpec]) -> String {
    specs.iter().map(|s| format!("{:?} ({} {:?})", s.name, s.datatype, s.shape)).collect::<Vec<_>>().join(", ")
}

fn tensor(given: &mut InputTensor, spec: &TensorSpec, raw: Option<&[u8]>) -> Result<Tensor, Invalid> {
    let name = &spec.name;
    let datatype =
        DataType::parse(&given.datatype).ok_or_else(|| Invalid(format!("input {name:?}: unknown datatype {:?}", given.datatype)))?;
    if datatype != spec.datatype {
        return Err(Invalid(format!("input {name:?}: datatype {datatype}, the model expects {}", spec.datatype)));
    }
    let fits = given.shape.len() == spec.shape.len() && given.shape.iter().zip(&spec.shape).all(|(&g, &s)| g >= 0 && (s < 0 || g == s));
    if !fits {
        return Err(Invalid(format!(
            "input {name:?}: shape {:?} does not match the model's {:?} (-1 = any size)",
            given.shape, spec.shape
        )));
    }
    let shape: Vec<usize> = given.shape.iter().map(|&d| d as usize).collect();
    let elements = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS)
        .ok_or_else(|| Invalid(format!("input {name:?}: shape {:?} has more than {MAX_ELEMENTS} elements", given.shape)))?;
    let data = match (raw, given.data.take()) {
        (Some(_), Some(_)) => return Err(Invalid(format!("input {name:?} has both data and binary_data_size"))),
        (Some(raw), None) => return Ok(Tensor { shape, data: crate::binary::decode(name, datatype, elements, raw)? }),
        (None, Some(data)) => data.0,
        (None, None) => return Err(Invalid(format!("input {name:?} has no data"))),
    };
    if data.len() != elements {
        return Err(Invalid(format!("input {name:?}: shape {:?} holds {elements} elements but data has {}", given.shape, data.len())));
    }
    let bad = |i: usize, v: &Scalar| Invalid(format!("input {name:?}: element {i} ({v:?}) is not a valid {datatype}"));
    macro_rules! ints {
        ($variant:ident, $t:ty) => {
            TensorData::$variant(
                data.iter()
                    .enumerate()
                    .map(|(i, v)| match v {
                        Scalar::Int(x) => <$t>::try_from(*x).map_err(|_| bad(i, v)),
                        Scalar::UInt(x) => <$t>::try_from(*x).map_err(|_| bad(i, v)),
                        _ => Err(bad(i, v)),
                    })
                    .collect::<Result<_, _>>()?,
            )
        };
    }
    let float = |i: usize, v: &Scalar| match v {
        Scalar::Int(x) => Ok(*x as f64),
        Scalar::UInt(x) => Ok(*x as f64),
        Scalar::Float(x) => Ok(*x),
        _ => Err(bad(i, v)),
    };
    let data = match datatype {
        DataType::Bool => TensorData::Bool(
            data.iter()
                .enumerate()
                .map(|(i, v)| if let Scalar::Bool(b) = v { Ok(*b) } else { Err(bad(i, v)) })
                .collect::<Result<_, _>>()?,
        ),
        DataType::U8 => ints!(U8, u8),
        DataType::U16 => ints!(U16, u16),
        DataType::U32 => ints!(U32, u32),
        DataType::U64 => ints!(U64, u64),
        DataType::I8 => ints!(I8, i8),
        DataType::I16 => ints!(I16, i16),
        DataType::I32 => ints!(I32, i32),
        DataType::I64 => ints!(I64, i64),
        DataType::F16 => TensorData::F16(data.iter().enumerate().map(|(i, v)| float(i, v).map(f32_to_f16_bits)).collect::<Result<_, _>>()?),
        DataType::F32 => TensorData::F32(data.iter().enumerate().map(|(i, v)| float(i, v).map(|x| x as f32)).collect::<Result<_, _>>()?),
        DataType::F64 => TensorData::F64(data.iter().enumerate().map(|(i, v)| float(i, v)).collect::<Result<_, _>>()?),
        DataType::Bytes => TensorData::Bytes(
            data.into_iter()
                .enumerate()
                .map(|(i, v)| if let Scalar::Str(s) = v { Ok(s.into_bytes()) } else { Err(bad(i, &v)) })
                .collect::<Result<_, _>>()?,
        ),
    };
    Ok(Tensor { shape, data })
}

fn f32_to_f16_bits(x: f64) -> u16 {
    half::f16::from_f64(x).to_bits()
}

/// Converts one model output to its JSON form, or to raw bytes sent after the JSON when `binary` is set.
pub fn output(spec: &TensorSpec, t: Tensor, binary: bool) -> (OutputTensor, Option<Vec<u8>>) {
    if binary {
        let raw = crate::binary::encode(&t.data);
        let mut parameters = crate::protocol::Parameters::new();
        parameters.insert("binary_data_size".into(), crate::protocol::ParameterValue::Int(raw.len() as i64));
        let out = OutputTensor {
            name: spec.name.clone(),
            datatype: spec.datatype.as_str(),
            shape: t.shape,
            parameters: Some(parameters),
            data: None,
        };
        return (out, Some(raw));
    }
    let data = match t.data {
        TensorData::Bool(v) => OutputData::Bool(v),
        TensorData::U8(v) => OutputData::UInt(v.into_iter().map(u64::from).collect()),
        TensorData::U16(v) => OutputData::UInt(v.into_iter().map(u64::from).collect()),
        TensorData::U32(v) => OutputData::UInt(v.into_iter().map(u64::from).collect()),
        TensorData::U64(v) => OutputData::UInt(v),
        TensorData::I8(v) => OutputData::Int(v.into_iter().map(i64::from).collect()),
        TensorData::I16(v) => OutputData::Int(v.into_iter().map(i64::from).collect()),
        TensorData::I32(v) => OutputData::Int(v.into_iter().map(i64::from).collect()),
        TensorData::I64(v) => OutputData::Int(v),
        TensorData::F16(v) => OutputData::Float(v.into_iter().map(f16_bits_to_f64).collect()),
        TensorData::F32(v) => OutputData::F32(v),
        TensorData::F64(v) => OutputData::Float(v),
        // Both runtimes hold BYTES as UTF-8 strings, so this never replaces anything.
        TensorData::Bytes(v) => OutputData::Str(v.into_iter().map(|b| String::from_utf8_lossy(&b).into_owned()).collect()),
    };
    (OutputTensor { name: spec.name.clone(), datatype: spec.datatype.as_str(), shape: t.shape, parameters: None, data: Some(data) }, None)
}

fn f16_bits_to_f64(h: u16) -> f64 {
    half::f16::from_bits(h).to_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_floats_round_trip_common_values() {
        for x in [0.0, 1.0, -2.5, 0.333, 1000.0] {
            let back = f16_bits_to_f64(f32_to_f16_bits(x));
            assert!((back - x).abs() <= x.abs() * 1e-3, "{x} → {back}");
        }
    }
}
