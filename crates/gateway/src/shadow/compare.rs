//! Comparison of two OIP v2 inference answers, output tensor by output tensor (docs/versions.md, "Shadow").
//!
//! Numeric outputs agree when their datatypes and shapes are equal and every element satisfies
//! `|shadow − primary| ≤ atol + rtol × |primary|` (NumPy's `allclose`; two NaNs are equal). Past that, the top-k
//! classes of each row (the last axis) are compared as sets: all rows agreeing is `top_k_agree`, any row not is a
//! `mismatch`. Non-numeric outputs (BYTES, FP16/BF16 in binary form) agree when equal. An output of the primary's
//! missing from the shadow's answer is a mismatch; outputs only the shadow has are ignored (a new version may add
//! some).

use bytes::Bytes;
use serde_json::Value;

/// The tolerances of a comparison (`shadow.compare`).
#[derive(Debug, Clone, Copy)]
pub struct Tolerances {
    pub atol: f64,
    pub rtol: f64,
    pub top_k: usize,
}

/// The verdict on one pair of answers: the label of `modelgate_shadow_compare_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Match,
    TopKAgree,
    Mismatch,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Match => "match",
            Verdict::TopKAgree => "top_k_agree",
            Verdict::Mismatch => "mismatch",
        }
    }
}

/// An answer's output tensors, parsed.
#[derive(Debug)]
pub struct Answer {
    outputs: Vec<Output>,
}

#[derive(Debug)]
struct Output {
    name: String,
    datatype: String,
    shape: Vec<i64>,
    values: Values,
}

#[derive(Debug, PartialEq)]
enum Values {
    Numbers(Vec<f64>),
    /// Compared for equality only.
    Other(Vec<u8>),
}

/// What the comparison found, for the metrics and `GET /admin/models/{m}/shadow`.
#[derive(Debug)]
pub struct Report {
    pub verdict: Verdict,
    /// Largest absolute and relative element differences over the numeric outputs compared (`None`: none were).
    pub max_abs: Option<f64>,
    pub max_rel: Option<f64>,
    pub tensors: Vec<TensorReport>,
}

#[derive(Debug, serde::Serialize)]
pub struct TensorReport {
    pub name: String,
    pub verdict: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issue: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_abs: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_rel: Option<f64>,
    /// Rows whose top-k classes agree, of `rows` (only when values differed past the tolerances).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k_rows_agree: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<usize>,
}

/// Parses an OIP v2 inference answer: JSON, or (with `json_len`, the `Inference-Header-Content-Length`) a JSON
/// header followed by the outputs' binary data in output order.
pub fn parse(body: &[u8], json_len: Option<usize>) -> Result<Answer, String> {
    let (head, mut blobs) = match json_len {
        Some(n) if n <= body.len() => (&body[..n], &body[n..]),
        Some(n) => return Err(format!("the JSON header length {n} is past the body's {} bytes", body.len())),
        None => (body, &[][..]),
    };
    let v: Value = serde_json::from_slice(head).map_err(|e| format!("not JSON: {e}"))?;
    let outputs = v.get("outputs").and_then(Value::as_array).ok_or("no `outputs` array")?;
    let mut out = Vec::with_capacity(outputs.len());
    for o in outputs {
        let name = o.get("name").and_then(Value::as_str).ok_or("an output without a name")?.to_string();
        let datatype = o.get("datatype").and_then(Value::as_str).unwrap_or_default().to_string();
        let shape = o.get("shape").and_then(Value::as_array).map(|s| s.iter().filter_map(Value::as_i64).collect()).unwrap_or_default();
        let binary = o.pointer("/parameters/binary_data_size").and_then(Value::as_u64);
        let values = match (binary, o.get("data")) {
            (Some(n), _) => {
                let n = usize::try_from(n).map_err(|_| "a binary size past memory")?;
                if n > blobs.len() {
                    return Err(format!("output {name:?} has {n} binary bytes, {} are left", blobs.len()));
                }
                let (blob, rest) = blobs.split_at(n);
                blobs = rest;
                decode(&datatype, blob)
            }
            (None, Some(data)) => from_json(&datatype, data),
            (None, None) => return Err(format!("output {name:?} has no data")),
        };
        out.push(Output { name, datatype, shape, values });
    }
    Ok(Answer { outputs: out })
}

/// Binary tensor data (little endian, as OIP v2's binary extension sends it).
fn decode(datatype: &str, b: &[u8]) -> Values {
    fn each<const N: usize>(b: &[u8], f: impl Fn([u8; N]) -> f64) -> Option<Vec<f64>> {
        b.len().is_multiple_of(N).then(|| b.chunks_exact(N).map(|c| f(c.try_into().expect("exact chunks"))).collect())
    }
    let numbers = match datatype {
        "FP32" => each::<4>(b, |c| f64::from(f32::from_le_bytes(c))),
        "FP64" => each::<8>(b, f64::from_le_bytes),
        "INT8" => each::<1>(b, |c| f64::from(c[0] as i8)),
        "UINT8" | "BOOL" => each::<1>(b, |c| f64::from(c[0])),
        "INT16" => each::<2>(b, |c| f64::from(i16::from_le_bytes(c))),
        "UINT16" => each::<2>(b, |c| f64::from(u16::from_le_bytes(c))),
        "INT32" => each::<4>(b, |c| f64::from(i32::from_le_bytes(c))),
        "UINT32" => each::<4>(b, |c| f64::from(u32::from_le_bytes(c))),
        "INT64" => each::<8>(b, |c| i64::from_le_bytes(c) as f64),
        "UINT64" => each::<8>(b, |c| u64::from_le_bytes(c) as f64),
        _ => None,
    };
    numbers.map_or_else(|| Values::Other(b.to_vec()), Values::Numbers)
}

/// JSON tensor data, flat or nested (row-major).
fn from_json(datatype: &str, data: &Value) -> Values {
    fn flatten(v: &Value, out: &mut Vec<f64>) -> bool {
        match v {
            Value::Array(items) => items.iter().all(|i| flatten(i, out)),
            Value::Number(n) => n.as_f64().map(|f| out.push(f)).is_some(),
            Value::Bool(b) => {
                out.push(f64::from(u8::from(*b)));
                true
            }
            _ => false,
        }
    }
    let mut numbers = Vec::new();
    if datatype != "BYTES" && flatten(data, &mut numbers) { Values::Numbers(numbers) } else { Values::Other(data.to_string().into_bytes()) }
}

/// Compares the shadow's answer with the primary's (the one the client got).
pub fn compare(primary: &Answer, shadow: &Answer, tol: Tolerances) -> Report {
    let mut verdict = Verdict::Match;
    let (mut max_abs, mut max_rel) = (None::<f64>, None::<f64>);
    let mut tensors = Vec::with_capacity(primary.outputs.len());
    for p in &primary.outputs {
        let t = match shadow.outputs.iter().find(|s| s.name == p.name) {
            None => issue(&p.name, "missing from the shadow's answer".into()),
            Some(s) if s.datatype != p.datatype => issue(&p.name, format!("datatype {} vs {}", p.datatype, s.datatype)),
            Some(s) if s.shape != p.shape => issue(&p.name, format!("shape {:?} vs {:?}", p.shape, s.shape)),
            Some(s) => tensor(p, s, tol),
        };
        if let Some(a) = t.max_abs {
            max_abs = Some(max_abs.map_or(a, |m| m.max(a)));
        }
        if let Some(r) = t.max_rel {
            max_rel = Some(max_rel.map_or(r, |m| m.max(r)));
        }
        verdict = match (verdict, t.verdict) {
            (_, "mismatch") | (Verdict::Mismatch, _) => Verdict::Mismatch,
            (_, "top_k_agree") | (Verdict::TopKAgree, _) => Verdict::TopKAgree,
            _ => Verdict::Match,
        };
        tensors.push(t);
    }
    Report { verdict, max_abs, max_rel, tensors }
}

impl Answer {
    pub fn is_empty(&self) -> bool {
        self.outputs.is_empty()
    }
}

fn issue(name: &str, why: String) -> TensorReport {
    TensorReport {
        name: name.into(),
        verdict: "mismatch",
        issue: Some(why),
        max_abs: None,
        max_rel: None,
        top_k_rows_agree: None,
        rows: None,
    }
}

fn tensor(p: &Output, s: &Output, tol: Tolerances) -> TensorReport {
    let (a, b) = match (&p.values, &s.values) {
        (Values::Numbers(a), Values::Numbers(b)) if a.len() == b.len() => (a, b),
        (Values::Numbers(a), Values::Numbers(b)) => return issue(&p.name, format!("{} elements vs {}", a.len(), b.len())),
        (x, y) => {
            let same = x == y;
            let mut t = issue(&p.name, "the values differ".into());
            if same {
                (t.verdict, t.issue) = ("match", None);
            }
            return t;
        }
    };
    let (mut max_abs, mut max_rel, mut close) = (0.0f64, 0.0f64, true);
    for (x, y) in a.iter().zip(b) {
        if x.is_nan() && y.is_nan() {
            continue;
        }
        let d = (y - x).abs();
        if d.is_nan() || d > tol.atol + tol.rtol * x.abs() {
            close = false;
        }
        if !d.is_nan() {
            max_abs = max_abs.max(d);
            max_rel = max_rel.max(if *x == 0.0 { if d == 0.0 { 0.0 } else { f64::INFINITY } } else { d / x.abs() });
        }
    }
    let mut t = TensorReport {
        name: p.name.clone(),
        verdict: "match",
        issue: None,
        max_abs: Some(max_abs),
        max_rel: Some(max_rel),
        top_k_rows_agree: None,
        rows: None,
    };
    if close {
        return t;
    }
    // Rows along the last axis; a scalar or a single column has no classes to rank.
    let width = p.shape.last().copied().unwrap_or(0).max(0) as usize;
    if width < 2 || a.is_empty() || !a.len().is_multiple_of(width) {
        t.verdict = "mismatch";
        t.issue = Some("values differ past the tolerances".into());
        return t;
    }
    let k = tol.top_k.min(width);
    let rows = a.len() / width;
    let agree = a.chunks_exact(width).zip(b.chunks_exact(width)).filter(|(x, y)| top_k(x, k) == top_k(y, k)).count();
    (t.rows, t.top_k_rows_agree) = (Some(rows), Some(agree));
    t.verdict = if agree == rows { "top_k_agree" } else { "mismatch" };
    t
}

/// The indices of the `k` largest values, sorted (NaN ranks lowest; ties by index).
fn top_k(row: &[f64], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    let key = |i: &usize| if row[*i].is_nan() { f64::NEG_INFINITY } else { row[*i] };
    idx.sort_by(|x, y| key(y).total_cmp(&key(x)).then(x.cmp(y)));
    idx.truncate(k);
    idx.sort_unstable();
    idx
}

/// The chunks of a copied body as one buffer.
pub fn join(chunks: Vec<Bytes>) -> Bytes {
    match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.into_iter().next().expect("one"),
        _ => {
            let mut v = Vec::with_capacity(chunks.iter().map(Bytes::len).sum());
            for c in chunks {
                v.extend_from_slice(&c);
            }
            Bytes::from(v)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOL: Tolerances = Tolerances { atol: 1e-5, rtol: 1e-3, top_k: 1 };

    fn answer(data: &str) -> Answer {
        parse(format!(r#"{{"outputs":[{{"name":"logits","datatype":"FP32","shape":[2,3],"data":{data}}}]}}"#).as_bytes(), None).unwrap()
    }

    #[test]
    fn within_tolerance_is_a_match_past_it_top_k_decides() {
        let p = answer("[1.0, 2.0, 3.0, 0.5, 0.1, 0.2]");
        let r = compare(&p, &answer("[1.0, 2.0000001, 3.0, 0.5, 0.1, 0.2]"), TOL);
        assert_eq!(r.verdict, Verdict::Match);
        // Nested data is the same tensor.
        assert_eq!(compare(&p, &answer("[[1.0, 2.0, 3.0], [0.5, 0.1, 0.2]]"), TOL).verdict, Verdict::Match);
        let r = compare(&p, &answer("[1.0, 2.5, 3.0, 0.5, 0.1, 0.2]"), TOL);
        assert_eq!(r.verdict, Verdict::TopKAgree);
        assert_eq!((r.tensors[0].rows, r.tensors[0].top_k_rows_agree), (Some(2), Some(2)));
        assert!((r.max_abs.unwrap() - 0.5).abs() < 1e-9 && (r.max_rel.unwrap() - 0.25).abs() < 1e-9);
        // The second row's argmax moves: a mismatch, one row of two agreeing.
        let r = compare(&p, &answer("[1.0, 2.0, 3.0, 0.1, 0.5, 0.2]"), TOL);
        assert_eq!((r.verdict, r.tensors[0].top_k_rows_agree), (Verdict::Mismatch, Some(1)));
        // With top-2 the sets {0,2} vs {1,2} still differ; top-3 is every class.
        let r = compare(&p, &answer("[1.0, 2.0, 3.0, 0.1, 0.5, 0.2]"), Tolerances { top_k: 3, ..TOL });
        assert_eq!(r.verdict, Verdict::TopKAgree);
    }

    #[test]
    fn shapes_datatypes_and_missing_outputs_mismatch() {
        let p = answer("[1, 2, 3, 4, 5, 6]");
        let other = |dt: &str, shape: &str, name: &str| {
            parse(format!(r#"{{"outputs":[{{"name":"{name}","datatype":"{dt}","shape":{shape},"data":[1,2,3,4,5,6]}}]}}"#).as_bytes(), None)
                .unwrap()
        };
        for (s, why) in [
            (other("FP64", "[2,3]", "logits"), "datatype"),
            (other("FP32", "[3,2]", "logits"), "shape"),
            (other("FP32", "[2,3]", "probs"), "missing"),
        ] {
            let r = compare(&p, &s, TOL);
            assert_eq!(r.verdict, Verdict::Mismatch);
            assert!(r.tensors[0].issue.as_deref().unwrap().contains(why), "{r:?}");
        }
        assert_eq!(compare(&p, &other("FP32", "[2,3]", "logits"), TOL).verdict, Verdict::Match);
    }

    #[test]
    fn binary_outputs_and_bytes() {
        let head = br#"{"outputs":[{"name":"y","datatype":"FP32","shape":[1,2],"parameters":{"binary_data_size":8}}]}"#;
        let mut body = head.to_vec();
        body.extend_from_slice(&1.5f32.to_le_bytes());
        body.extend_from_slice(&(-2.0f32).to_le_bytes());
        let bin = parse(&body, Some(head.len())).unwrap();
        let json = parse(br#"{"outputs":[{"name":"y","datatype":"FP32","shape":[1,2],"data":[1.5,-2.0]}]}"#, None).unwrap();
        assert_eq!(compare(&json, &bin, TOL).verdict, Verdict::Match);
        assert!(parse(&body[..body.len() - 1], Some(head.len())).is_err(), "short binary data");
        let text = |s: &str| {
            parse(format!(r#"{{"outputs":[{{"name":"t","datatype":"BYTES","shape":[1],"data":["{s}"]}}]}}"#).as_bytes(), None).unwrap()
        };
        assert_eq!(compare(&text("a"), &text("a"), TOL).verdict, Verdict::Match);
        assert_eq!(compare(&text("a"), &text("b"), TOL).verdict, Verdict::Mismatch);
        assert!(parse(b"{\"error\":\"x\"}", None).is_err());
    }

    #[test]
    fn differences_from_zero() {
        let p = answer("[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]");
        let r = compare(&p, &answer("[0.00001, 1.0, 2.0, 3.0, 4.0, 5.0]"), TOL);
        assert_eq!(r.verdict, Verdict::Match, "atol covers a difference from 0");
        assert_eq!(r.max_rel, Some(f64::INFINITY));
        let n = parse(br#"{"outputs":[{"name":"logits","datatype":"FP32","shape":[2,3],"data":[0,1,2,3,4,5]}]}"#, None).unwrap();
        assert_eq!(compare(&n, &p, TOL).verdict, Verdict::Match);
    }
}
