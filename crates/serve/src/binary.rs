//! The binary tensor data extension (KServe v2 / Triton): tensors as raw little-endian bytes after the JSON part
//! of the body, sized by `binary_data_size`; BYTES elements are each a 4-byte little-endian length and the bytes.

use modelgate_runtime::{DataType, TensorData};

use crate::protocol::Invalid;

/// Decodes `raw` as `elements` values of `datatype`, naming `tensor` in errors.
pub fn decode(tensor: &str, datatype: DataType, elements: usize, raw: &[u8]) -> Result<TensorData, Invalid> {
    if datatype == DataType::Bytes {
        // Each element takes at least its 4-byte length: the capacity follows the bytes sent, not the shape claimed.
        let mut out = Vec::with_capacity(elements.min(raw.len() / 4));
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

    /// Fuzzing in the test run (the fuzz workspace does not build the model server's runtimes): 200,000 random
    /// inputs — every datatype, element counts up to the validator's bound, bytes with plausible and absurd BYTES
    /// length prefixes. Never a panic; what decodes holds exactly `elements` values and encodes back to the input.
    #[test]
    fn random_inputs_never_panic_and_round_trip() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..200_000 {
            let datatype = DataType::ALL[(next() % DataType::ALL.len() as u64) as usize];
            let len = (next() % 48) as usize;
            let mut raw: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if datatype == DataType::Bytes && len >= 4 && next() % 2 == 0 {
                // A plausible first length prefix, so that some inputs decode.
                let claimed = (next() % (len as u64 - 3)) as u32;
                raw[..4].copy_from_slice(&claimed.to_le_bytes());
            }
            let elements = match next() % 4 {
                0 => (next() % 16) as usize,
                1 => crate::validate::MAX_ELEMENTS,
                2 => len / datatype.size().unwrap_or(4).max(1),
                _ => (next() % 1_000_000) as usize,
            };
            if let Ok(data) = decode("x", datatype, elements, &raw) {
                assert_eq!(data.len(), elements, "{datatype:?} {raw:?}");
                // BOOL reads any non-zero byte as true, so it round-trips as 0/1.
                let expected: Vec<u8> =
                    if datatype == DataType::Bool { raw.iter().map(|&b| u8::from(b != 0)).collect() } else { raw.clone() };
                assert_eq!(encode(&data), expected, "{datatype:?} round trip");
            }
        }
    }
}
