//! Tensors as the protocol sees them: an OIP v2 datatype, a shape and typed row-major data.

use std::fmt;

/// Tensor element types, named as in the Open Inference Protocol (`FP32`, `INT64`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    Bool,
    U8,
    U16,
    U32,
    U64,
    I8,
    I16,
    I32,
    I64,
    F16,
    F32,
    F64,
    Bytes,
}

/// Typed tensor contents, row-major.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    Bool(Vec<bool>),
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
    U64(Vec<u64>),
    I8(Vec<i8>),
    I16(Vec<i16>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    /// IEEE half floats as raw bits.
    F16(Vec<u16>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bytes(Vec<Vec<u8>>),
}

/// A tensor with a concrete shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: TensorData,
}

/// Name, type and shape of one model input or output; `-1` marks a dynamic dimension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub datatype: DataType,
    pub shape: Vec<i64>,
}

/// What a model takes and returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelMetadata {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

// === impl DataType ===

impl DataType {
    pub const ALL: [DataType; 13] = [
        DataType::Bool,
        DataType::U8,
        DataType::U16,
        DataType::U32,
        DataType::U64,
        DataType::I8,
        DataType::I16,
        DataType::I32,
        DataType::I64,
        DataType::F16,
        DataType::F32,
        DataType::F64,
        DataType::Bytes,
    ];

    /// The protocol name.
    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::U8 => "UINT8",
            DataType::U16 => "UINT16",
            DataType::U32 => "UINT32",
            DataType::U64 => "UINT64",
            DataType::I8 => "INT8",
            DataType::I16 => "INT16",
            DataType::I32 => "INT32",
            DataType::I64 => "INT64",
            DataType::F16 => "FP16",
            DataType::F32 => "FP32",
            DataType::F64 => "FP64",
            DataType::Bytes => "BYTES",
        }
    }

    pub fn parse(s: &str) -> Option<DataType> {
        DataType::ALL.into_iter().find(|d| d.as_str() == s)
    }

    /// Bytes per element in the binary tensor encoding; `None` for BYTES (length-prefixed elements).
    pub fn size(self) -> Option<usize> {
        Some(match self {
            DataType::Bool | DataType::U8 | DataType::I8 => 1,
            DataType::U16 | DataType::I16 | DataType::F16 => 2,
            DataType::U32 | DataType::I32 | DataType::F32 => 4,
            DataType::U64 | DataType::I64 | DataType::F64 => 8,
            DataType::Bytes => return None,
        })
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl TensorData ===

impl TensorData {
    pub fn datatype(&self) -> DataType {
        match self {
            TensorData::Bool(_) => DataType::Bool,
            TensorData::U8(_) => DataType::U8,
            TensorData::U16(_) => DataType::U16,
            TensorData::U32(_) => DataType::U32,
            TensorData::U64(_) => DataType::U64,
            TensorData::I8(_) => DataType::I8,
            TensorData::I16(_) => DataType::I16,
            TensorData::I32(_) => DataType::I32,
            TensorData::I64(_) => DataType::I64,
            TensorData::F16(_) => DataType::F16,
            TensorData::F32(_) => DataType::F32,
            TensorData::F64(_) => DataType::F64,
            TensorData::Bytes(_) => DataType::Bytes,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            TensorData::Bool(v) => v.len(),
            TensorData::U8(v) => v.len(),
            TensorData::U16(v) | TensorData::F16(v) => v.len(),
            TensorData::U32(v) => v.len(),
            TensorData::U64(v) => v.len(),
            TensorData::I8(v) => v.len(),
            TensorData::I16(v) => v.len(),
            TensorData::I32(v) => v.len(),
            TensorData::I64(v) => v.len(),
            TensorData::F32(v) => v.len(),
            TensorData::F64(v) => v.len(),
            TensorData::Bytes(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

// === impl Tensor (batching) ===

impl Tensor {
    /// Concatenates tensors along the first dimension. All must have the same datatype and the same other dims
    /// (the batcher only groups such requests). Returns `None` otherwise.
    pub fn concat(parts: Vec<Tensor>) -> Option<Tensor> {
        let first = parts.first()?;
        let tail = first.shape.get(1..)?.to_vec();
        let datatype = first.data.datatype();
        if parts.iter().any(|p| p.shape.get(1..) != Some(&tail[..]) || p.data.datatype() != datatype) {
            return None;
        }
        let rows: usize = parts.iter().map(|p| p.shape[0]).sum();
        let mut iter = parts.into_iter();
        let head = iter.next()?;
        let data = iter.try_fold(head.data, |acc, p| append(acc, p.data))?;
        let mut shape = vec![rows];
        shape.extend(tail);
        Some(Tensor { shape, data })
    }

    /// Splits along the first dimension into parts of `rows[i]` rows each (the inverse of [`Tensor::concat`]).
    pub fn split_rows(self, rows: &[usize]) -> Option<Vec<Tensor>> {
        let total: usize = rows.iter().sum();
        if self.shape.first() != Some(&total) {
            return None;
        }
        let row_len: usize = self.shape[1..].iter().product();
        let mut out = Vec::with_capacity(rows.len());
        let mut data = self.data;
        for &r in rows.iter().rev() {
            let keep = data.len() - r * row_len;
            let (rest, part) = split_off(data, keep);
            let mut shape = self.shape.clone();
            shape[0] = r;
            out.push(Tensor { shape, data: part });
            data = rest;
        }
        out.reverse();
        Some(out)
    }
}

fn append(acc: TensorData, more: TensorData) -> Option<TensorData> {
    macro_rules! cat {
        ($($variant:ident),*) => {
            match (acc, more) {
                $((TensorData::$variant(mut a), TensorData::$variant(b)) => { a.extend(b); Some(TensorData::$variant(a)) })*
                _ => None,
            }
        };
    }
    cat!(Bool, U8, U16, U32, U64, I8, I16, I32, I64, F16, F32, F64, Bytes)
}

/// Splits `data` at element `at`: (first `at` elements, the rest).
fn split_off(data: TensorData, at: usize) -> (TensorData, TensorData) {
    macro_rules! split {
        ($($variant:ident),*) => {
            match data {
                $(TensorData::$variant(mut v) => {
                    let tail = v.split_off(at);
                    (TensorData::$variant(v), TensorData::$variant(tail))
                })*
            }
        };
    }
    split!(Bool, U8, U16, U32, U64, I8, I16, I32, I64, F16, F32, F64, Bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concat_then_split_restores_each_part() {
        let a = Tensor { shape: vec![1, 2], data: TensorData::F32(vec![1.0, 2.0]) };
        let b = Tensor { shape: vec![2, 2], data: TensorData::F32(vec![3.0, 4.0, 5.0, 6.0]) };
        let joined = Tensor::concat(vec![a.clone(), b.clone()]).unwrap();
        assert_eq!(joined.shape, vec![3, 2]);
        assert_eq!(joined.split_rows(&[1, 2]).unwrap(), vec![a, b]);
        let other = Tensor { shape: vec![1, 3], data: TensorData::F32(vec![0.0; 3]) };
        assert!(Tensor::concat(vec![other, Tensor { shape: vec![1, 2], data: TensorData::F32(vec![0.0; 2]) }]).is_none());
    }
}
