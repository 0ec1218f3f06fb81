//! Open Inference Protocol v2 (KServe / Triton) REST messages as typed structs. Tensor `data` may be flat or
//! nested (row-major); it is flattened while parsing, without an intermediate JSON tree.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

/// A request that does not fit the model.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// `POST /v2/models/{m}[/versions/{v}]/infer` request body.
#[derive(Debug, Deserialize)]
pub struct InferRequest {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub parameters: Option<Parameters>,
    pub inputs: Vec<InputTensor>,
    #[serde(default)]
    pub outputs: Option<Vec<RequestedOutput>>,
}

/// Free-form parameters (`binary_data_output`, ...); values are scalars.
pub type Parameters = BTreeMap<String, ParameterValue>;

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum ParameterValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
}

#[derive(Debug, Deserialize)]
pub struct InputTensor {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    #[serde(default)]
    pub parameters: Option<Parameters>,
    #[serde(default)]
    pub data: Option<FlatData>,
}

#[derive(Debug, Deserialize)]
pub struct RequestedOutput {
    pub name: String,
    #[serde(default)]
    pub parameters: Option<Parameters>,
}

/// Request header of the binary tensor data extension: the length of the JSON part that starts the body.
pub const HEADER_CONTENT_LENGTH: &str = "inference-header-content-length";

impl ParameterValue {
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            ParameterValue::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self {
            ParameterValue::Int(i) => u64::try_from(*i).ok(),
            _ => None,
        }
    }
}

/// Response body of an inference.
#[derive(Debug, Serialize)]
pub struct InferResponse {
    pub model_name: String,
    pub model_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub outputs: Vec<OutputTensor>,
}

#[derive(Debug, Serialize)]
pub struct OutputTensor {
    pub name: String,
    pub datatype: &'static str,
    pub shape: Vec<usize>,
    /// Absent when the tensor is sent in binary after the JSON (`parameters.binary_data_size`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Parameters>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<OutputData>,
}

/// Output values, serialized as a flat JSON array.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum OutputData {
    Bool(Vec<bool>),
    Int(Vec<i64>),
    UInt(Vec<u64>),
    Float(Vec<f64>),
    F32(Vec<f32>),
    Str(Vec<String>),
}

/// `GET /v2/models/{m}[/versions/{v}]` response.
#[derive(Debug, Serialize)]
pub struct ModelMetadataResponse {
    pub name: String,
    pub versions: Vec<String>,
    pub platform: &'static str,
    pub inputs: Vec<TensorMetadata>,
    pub outputs: Vec<TensorMetadata>,
}

#[derive(Debug, Serialize)]
pub struct TensorMetadata {
    pub name: String,
    pub datatype: &'static str,
    pub shape: Vec<i64>,
}

/// `GET /v2` response.
#[derive(Debug, Serialize)]
pub struct ServerMetadataResponse {
    pub name: &'static str,
    pub version: &'static str,
    pub extensions: Vec<&'static str>,
}

/// The protocol's error body: `{"error": "..."}`.
#[derive(Debug, Serialize)]
pub struct ErrorResponse {
    pub error: String,
}

/// One JSON scalar of tensor data.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Int(i64),
    UInt(u64),
    Float(f64),
    Bool(bool),
    Str(String),
}

/// Tensor data flattened from flat or nested JSON arrays.
#[derive(Debug, Default, PartialEq)]
pub struct FlatData(pub Vec<Scalar>);

// === impl FlatData ===

impl<'de> Deserialize<'de> for FlatData {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // The declared `shape` is what counts; the nesting only has to be rectangular.
        ShapedData::deserialize(d).map(|s| FlatData(s.data))
    }
}

/// Nesting deeper than this is refused (no tensor has that many dimensions; it protects the stack).
const MAX_DEPTH: usize = 32;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_and_nested_data_flatten_the_same() {
        let flat: FlatData = serde_json::from_str("[1, 2, 3, 4]").unwrap();
        let nested: FlatData = serde_json::from_str("[[1, 2], [3, 4]]").unwrap();
        assert_eq!(flat, nested);
        let mixed: FlatData = serde_json::from_str(r#"[true, 1.5, -2, "x"]"#).unwrap();
        assert_eq!(mixed.0, vec![Scalar::Bool(true), Scalar::Float(1.5), Scalar::Int(-2), Scalar::Str("x".into())]);
        let deep = "[".repeat(40) + &"]".repeat(40);
        assert!(serde_json::from_str::<FlatData>(&deep).is_err());
        assert!(serde_json::from_str::<FlatData>(r#"{"a": 1}"#).is_err());
    }
}

/// A rectangular nested JSON array: its shape and its scalars in row-major order (TorchServe-style bodies).
#[derive(Debug, Default, PartialEq)]
pub struct ShapedData {
    pub shape: Vec<usize>,
    pub data: Vec<Scalar>,
}

impl<'de> Deserialize<'de> for ShapedData {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut out = ShapedData::default();
        d.deserialize_any(Shaped { out: &mut out, depth: 0 })?;
        Ok(out)
    }
}

/// Records each depth's length on first sight and requires every later array at that depth to match.
struct Shaped<'a> {
    out: &'a mut ShapedData,
    depth: usize,
}

impl Shaped<'_> {
    fn scalar<E: de::Error>(self, s: Scalar) -> Result<(), E> {
        if self.depth != self.out.shape.len() {
            return Err(E::custom("the array is not rectangular: a value stands where an array is expected"));
        }
        self.out.data.push(s);
        Ok(())
    }
}

impl<'de> Visitor<'de> for Shaped<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a rectangular (nested) array of numbers, booleans or strings")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.scalar(Scalar::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.scalar(Scalar::UInt(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.scalar(Scalar::Float(v))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.scalar(Scalar::Bool(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.scalar(Scalar::Str(v.to_string()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.depth >= MAX_DEPTH {
            return Err(de::Error::custom("data is nested too deeply"));
        }
        let first_visit = self.depth == self.out.shape.len() && self.out.data.is_empty();
        if first_visit {
            self.out.shape.push(0);
        } else if self.depth >= self.out.shape.len() {
            return Err(de::Error::custom("the array is not rectangular: an array stands where a value is expected"));
        }
        let mut n = 0;
        while seq.next_element_seed(ShapedSeed { out: &mut *self.out, depth: self.depth + 1 })?.is_some() {
            n += 1;
        }
        if first_visit {
            self.out.shape[self.depth] = n;
        } else if self.out.shape[self.depth] != n {
            return Err(de::Error::custom(format!(
                "the array is not rectangular: {n} items where {} were expected",
                self.out.shape[self.depth]
            )));
        }
        Ok(())
    }
}

struct ShapedSeed<'a> {
    out: &'a mut ShapedData,
    depth: usize,
}

impl<'de> de::DeserializeSeed<'de> for ShapedSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(Shaped { out: self.out, depth: self.depth })
    }
}

#[cfg(test)]
mod shaped_tests {
    use super::*;

    #[test]
    fn infers_shape_and_rejects_ragged_arrays() {
        let s: ShapedData = serde_json::from_str("[[1, 2, 3], [4, 5, 6]]").unwrap();
        assert_eq!(s.shape, vec![2, 3]);
        assert_eq!(s.data.len(), 6);
        assert!(serde_json::from_str::<ShapedData>("[[1, 2], [3]]").is_err());
        assert!(serde_json::from_str::<ShapedData>("[[1, 2], 3]").is_err());
        assert!(serde_json::from_str::<ShapedData>("[1, [2]]").is_err());
    }
}
