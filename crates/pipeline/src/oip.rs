//! What the gateway reads of an Open Inference Protocol v2 inference request: each input's name, datatype, shape
//! and how many elements its `data` holds (counted while parsing, nothing kept), or its `binary_data_size` (binary
//! tensor extension). Parsed once per request, for `tensor_validation` and for rate limits that cost batch items
//! or elements. Typed structs, no `serde_json::Value` plumbing.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, SeqAccess, Visitor};

/// The header that marks a binary-extension body and gives the length of its JSON part.
pub static HEADER_LENGTH: http::HeaderName = http::HeaderName::from_static("inference-header-content-length");

/// The `Inference-Header-Content-Length` of a request or answer: where its JSON ends and binary tensor data begins.
pub fn header_length(h: &http::HeaderMap) -> Option<usize> {
    h.get(&HEADER_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok())
}

#[derive(Debug, Deserialize)]
pub struct InferRequest {
    pub inputs: Vec<Input>,
}

#[derive(Debug, Deserialize)]
pub struct Input {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
    /// Leaf elements of `data` (nested arrays flattened); absent with the binary extension.
    #[serde(default)]
    pub data: Option<Count>,
    #[serde(default)]
    pub parameters: Option<InputParameters>,
}

#[derive(Debug, Default, Deserialize)]
pub struct InputParameters {
    #[serde(default)]
    pub binary_data_size: Option<u64>,
}

/// The number of leaves in a (nested) JSON array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count(pub u64);

/// A parsed request, or why it could not be read.
pub type Parsed = Result<Summary, BadTensor>;

/// A request body that is not a well-formed inference request, or whose tensors do not fit the model; answered
/// as 400 `invalid_tensor` with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadTensor(pub String);

/// The request as the gateway checks it.
#[derive(Debug)]
pub struct Summary {
    pub inputs: Vec<Input>,
    /// Bytes after the JSON part (binary extension).
    pub binary_len: u64,
}

impl Summary {
    /// The batch dimension: the first dimension of the first input (1 for a scalar input or none).
    pub fn batch_items(&self) -> u64 {
        self.inputs.first().and_then(|i| i.shape.first()).map_or(1, |d| (*d).max(0) as u64)
    }

    /// Elements across all inputs (the product of each shape).
    pub fn elements(&self) -> u64 {
        self.inputs.iter().map(|i| elements(&i.shape).unwrap_or(u64::MAX)).fold(0u64, u64::saturating_add)
    }
}

/// The product of a shape; `None` for a negative dimension or an overflow.
pub fn elements(shape: &[i64]) -> Option<u64> {
    shape.iter().try_fold(1u64, |acc, d| u64::try_from(*d).ok().and_then(|d| acc.checked_mul(d)))
}

/// Every OIP v2 datatype name with its bytes per element (`None`: `BYTES`, length-prefixed elements). The gateway's
/// one table (the model server's typed equivalent is `modelgate_runtime::DataType`, which has no `BF16`).
pub const DATATYPES: [(&str, Option<u64>); 14] = [
    ("BOOL", Some(1)),
    ("UINT8", Some(1)),
    ("UINT16", Some(2)),
    ("UINT32", Some(4)),
    ("UINT64", Some(8)),
    ("INT8", Some(1)),
    ("INT16", Some(2)),
    ("INT32", Some(4)),
    ("INT64", Some(8)),
    ("FP16", Some(2)),
    ("BF16", Some(2)),
    ("FP32", Some(4)),
    ("FP64", Some(8)),
    ("BYTES", None),
];

/// Whether `dt` is an OIP v2 datatype name.
pub fn is_datatype(dt: &str) -> bool {
    DATATYPES.iter().any(|(name, _)| *name == dt)
}

/// Bytes per element of a fixed-size datatype; `None` for `BYTES` (variable) or an unknown name.
pub fn datatype_size(dt: &str) -> Option<u64> {
    DATATYPES.iter().find(|(name, _)| *name == dt).and_then(|(_, size)| *size)
}

/// Reads a request body: JSON, or with `json_len` (from `Inference-Header-Content-Length`) the binary extension.
pub fn parse(body: &[u8], json_len: Option<usize>) -> Parsed {
    let (json, rest) = match json_len {
        Some(n) if n <= body.len() => body.split_at(n),
        Some(n) => return Err(BadTensor(format!("Inference-Header-Content-Length is {n} but the body has {} bytes", body.len()))),
        None => (body, &[][..]),
    };
    let req: InferRequest = serde_json::from_slice(json)
        .map_err(|e| BadTensor(format!("the inference request is not valid JSON of the expected shape: {e}")))?;
    Ok(Summary { inputs: req.inputs, binary_len: rest.len() as u64 })
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Count, D::Error> {
        struct Leaves;
        impl<'de> Visitor<'de> for Leaves {
            type Value = Count;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a value or a (nested) array of values")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Count, A::Error> {
                let mut n = 0u64;
                while let Some(c) = seq.next_element::<Count>()? {
                    n = n.saturating_add(c.0);
                }
                Ok(Count(n))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Count, E> {
                Ok(Count(1))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Count, E> {
                Ok(Count(1))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Count, E> {
                Ok(Count(1))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Count, E> {
                Ok(Count(1))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Count, E> {
                Ok(Count(1))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Count, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Err(de::Error::custom("tensor data holds an object"))
            }
        }
        d.deserialize_any(Leaves)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_flat_and_nested_data_and_reads_binary_sizes() {
        let s = parse(br#"{"inputs":[{"name":"x","datatype":"FP32","shape":[2,3],"data":[[1,2,3],[4,5,6]]},{"name":"y","datatype":"BYTES","shape":[1],"data":["a"]}]}"#, None).unwrap();
        assert_eq!(s.inputs[0].data, Some(Count(6)));
        assert_eq!(s.inputs[1].data, Some(Count(1)));
        assert_eq!((s.batch_items(), s.elements()), (2, 7));
        let body = br#"{"inputs":[{"name":"x","datatype":"FP32","shape":[1,2],"parameters":{"binary_data_size":8}}]}12345678"#;
        let json_len = body.len() - 8;
        let s = parse(body, Some(json_len)).unwrap();
        assert_eq!((s.inputs[0].parameters.as_ref().unwrap().binary_data_size, s.binary_len), (Some(8), 8));
        assert!(parse(b"{\"inputs\":[{\"name\":1}]}", None).is_err());
        assert!(parse(b"{}", Some(10)).is_err());
        // A duplicate key in a field the gateway reads is refused (servers disagree on first or last wins).
        let e = parse(br#"{"inputs":[],"inputs":[]}"#, None).unwrap_err();
        assert!(e.0.contains("duplicate field `inputs`"), "{e}");
        assert!(parse(br#"{"inputs":[{"name":"x","name":"y","datatype":"FP32","shape":[1],"data":[1]}]}"#, None).is_err());
        assert!(parse(br#"{"inputs":[{"name":"x","datatype":"FP32","shape":[1],"shape":[9],"data":[1]}]}"#, None).is_err());
        assert_eq!(elements(&[-1, 3]), None);
        assert_eq!(elements(&[i64::MAX, 4]), None);
    }
}
