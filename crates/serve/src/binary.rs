//! The binary tensor data extension (KServe v2 / Triton): tensors as raw little-endian bytes after the JSON part
//! of the body, sized by `binary_data_size`; BYTES elements are each a 4-byte little-endian length and the bytes.

use modelgate_runtime::{DataType, TensorData};

use crate::protocol::Invalid;

/// Decodes `raw` as `elements` values of `datatype`, naming `tensor` in errors.
pub fn decode(tensor: &str, datatype: DataType, elements: usize, raw: &[u8]) -> Result<TensorData, Invalid> {
    if datatype == DataType::Bytes {
        let mut out = Vec::with_capacity(elements);
        let mut rest = raw;
        while !rest.is_empty() {
            let (len, tail) =
                rest.split_first_chunk::<4>().ok_or_else(|| Invalid(format!("input {tensor:?}: truncated BYTES element length")))?;
            let len = u32::from_le_bytes(*len) as usize;
            if tail.len() < len {
                return Err(Invalid(format!("input {tensor:?}: BYTES element {} claims {len} bytes but {} remain", out.len(), tail.len())));
            }
            out.push(tail[..len].to_vec());
            rest = &tail[len..];
        }
        if out.len() != elements {
            return Err(Invalid(format!("input {tensor:?}: the shape holds {elements} elements but the binary data has {}", out.len())));
        }
        return Ok(TensorData::Bytes(out));
    }
    let size = datatype.size().expect("fixed-size datatype");
    let expected = elements.checked_mul(size).ok_or_else(|| Invalid(format!("input {tensor:?}: too large")))?;
    if raw.len() != expected {
        return Err(Invalid(format!(
            "input {tensor:?}: binary_data_size is {} bytes but {elements} {datatype} elements take {expected}",
            raw.len()
        )));
    }
    macro_rules! le {
        ($variant:ident, $t:ty, $n:literal) => {
            TensorData::$variant(raw.chunks_exact($n).map(|c| <$t>::from_le_bytes(c.try_into().expect("exact chunk"))).collect())
        };
    }
    Ok(match datatype {
        DataType::Bool => TensorData::Bool(raw.iter().map(|&b| b != 0).collect()),
        DataType::U8 => TensorData::U8(raw.to_vec()),
        DataType::I8 => le!(I8, i8, 1),
        DataType::U16 => le!(U16, u16, 2),
        DataType::I16 => le!(I16, i16, 2),
        DataType::F16 => le!(F16, u16, 2),
        DataType::U32 => le!(U32, u32, 4),
        DataType::I32 => le!(I32, i32, 4),
        DataType::F32 => le!(F32, f32, 4),
        DataType::U64 => le!(U64, u64, 8),
        DataType::I64 => le!(I64, i64, 8),
        DataType::F64 => le!(F64, f64, 8),
        DataType::Bytes => unreachable!("handled above"),
    })
}

/// Encodes tensor data as the extension's raw bytes.
pub fn encode(data: &TensorData) -> Vec<u8> {
    macro_rules! le {
        ($v:expr) => {
            $v.iter().flat_map(|x| x.to_le_bytes()).collect()
        };
    }
    match data {
        TensorData::Bool(v) => v.iter().map(|&b| b as u8).collect(),
        TensorData::U8(v) => v.clone(),
        TensorData::I8(v) => le!(v),
        TensorData::U16(v) | TensorData::F16(v) => le!(v),
        TensorData::I16(v) => le!(v),
        TensorData::U32(v) => le!(v),
        TensorData::I32(v) => le!(v),
        TensorData::F32(v) => le!(v),
        TensorData::U64(v) => le!(v),
        TensorData::I64(v) => le!(v),
        TensorData::F64(v) => le!(v),
        TensorData::Bytes(v) => v.iter().flat_map(|b| (b.len() as u32).to_le_bytes().into_iter().chain(b.iter().copied())).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_mismatched_sizes() {
        for data in [
            TensorData::F32(vec![1.5, -2.0]),
            TensorData::I64(vec![7, -9]),
            TensorData::Bool(vec![true, false]),
            TensorData::Bytes(vec![b"ab".to_vec(), vec![]]),
        ] {
            let raw = encode(&data);
            assert_eq!(decode("x", data.datatype(), 2, &raw).unwrap(), data);
        }
        assert!(decode("x", DataType::F32, 2, &[0u8; 7]).unwrap_err().0.contains("binary_data_size is 7 bytes"));
        assert!(decode("x", DataType::Bytes, 1, &[5, 0, 0, 0, b'a']).unwrap_err().0.contains("claims 5 bytes"));
        assert!(decode("x", DataType::Bytes, 1, &[1, 0]).unwrap_err().0.contains("truncated"));
    }
}
