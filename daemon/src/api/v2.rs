//! The Open Inference Protocol v2 wire format: request parsing (JSON tensors and the binary
//! tensor data extension) against a model's contract, and response encoding.
//!
//! Invariant: every tensor that reaches the engine matches the contract (name, element type,
//! rank, fixed dimensions, byte length); every refusal names the input and the reason.

use std::collections::BTreeMap;

use airlock_signing::manifest::{Contract, DType, Dim, TensorSpec};
use serde_json::{json, Map, Value};

use crate::engine::tensor::{elements, Data, Tensor};

/// The v2 name of an element type.
pub fn datatype(d: DType) -> &'static str {
    match d {
        DType::Bool => "BOOL",
        DType::Int8 => "INT8",
        DType::Int16 => "INT16",
        DType::Int32 => "INT32",
        DType::Int64 => "INT64",
        DType::Uint8 => "UINT8",
        DType::Uint16 => "UINT16",
        DType::Uint32 => "UINT32",
        DType::Uint64 => "UINT64",
        DType::Float16 => "FP16",
        DType::Bfloat16 => "BF16",
        DType::Float32 => "FP32",
        DType::Float64 => "FP64",
        DType::String => "BYTES",
    }
}

/// Triton's model-config name of an element type.
pub fn config_type(d: DType) -> String {
    match d {
        DType::String => "TYPE_STRING".into(),
        other => format!("TYPE_{}", datatype(other)),
    }
}

/// Shape as v2 metadata shows it (-1 for dynamic dimensions).
pub fn metadata_shape(s: &TensorSpec) -> Vec<i64> {
    s.shape
        .as_ref()
        .map(|d| {
            d.iter()
                .map(|d| if let Dim::Fixed(n) = d { *n as i64 } else { -1 })
                .collect()
        })
        .unwrap_or_else(|| vec![-1])
}

/// A parsed infer request.
#[derive(Debug)]
pub struct InferRequest {
    /// The client's request id, echoed back.
    pub id: Option<String>,
    /// Inputs in the contract's order.
    pub inputs: Vec<Tensor>,
    /// Requested outputs (contract order) and whether each is binary.
    pub outputs: Vec<(usize, bool)>,
    /// Deadline override (µs), from `parameters.timeout`.
    pub timeout_us: Option<u64>,
}

fn bad(m: impl Into<String>) -> String {
    m.into()
}

fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(a) => a.iter().for_each(|x| flatten(x, out)),
        other => out.push(other),
    }
}

fn json_elements(name: &str, dtype: DType, values: &[&Value]) -> Result<Data, String> {
    let num = |i: usize, v: &Value| {
        v.as_f64()
            .ok_or_else(|| bad(format!("input '{name}': element {i} is not a number")))
    };
    let int = |i: usize, v: &Value, min: i128, max: i128| -> Result<i128, String> {
        let n = v
            .as_i64()
            .map(i128::from)
            .or_else(|| v.as_u64().map(i128::from))
            .ok_or_else(|| bad(format!("input '{name}': element {i} is not an integer")))?;
        if n < min || n > max {
            return Err(bad(format!(
                "input '{name}': element {i} ({n}) is out of range for {}",
                datatype(dtype)
            )));
        }
        Ok(n)
    };
    let mut out = Vec::with_capacity(values.len() * dtype.size().unwrap_or(1));
    macro_rules! ints {
        ($t:ty) => {
            for (i, v) in values.iter().enumerate() {
                out.extend_from_slice(
                    &(int(i, v, <$t>::MIN as i128, <$t>::MAX as i128)? as $t).to_le_bytes(),
                );
            }
        };
    }
    match dtype {
        DType::String => {
            return values
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_str().map(|s| s.as_bytes().to_vec()).ok_or_else(|| {
                        bad(format!("input '{name}': BYTES element {i} is not a string"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Data::Strings);
        }
        DType::Bool => {
            for (i, v) in values.iter().enumerate() {
                let b = v
                    .as_bool()
                    .ok_or_else(|| bad(format!("input '{name}': element {i} is not a boolean")))?;
                out.push(b as u8);
            }
        }
        DType::Int8 => ints!(i8),
        DType::Int16 => ints!(i16),
        DType::Int32 => ints!(i32),
        DType::Int64 => ints!(i64),
        DType::Uint8 => ints!(u8),
        DType::Uint16 => ints!(u16),
        DType::Uint32 => ints!(u32),
        DType::Uint64 => ints!(u64),
        DType::Float16 => {
            for (i, v) in values.iter().enumerate() {
                out.extend_from_slice(&half::f16::from_f64(num(i, v)?).to_le_bytes());
            }
        }
        DType::Bfloat16 => {
            for (i, v) in values.iter().enumerate() {
                out.extend_from_slice(&half::bf16::from_f64(num(i, v)?).to_le_bytes());
            }
        }
        DType::Float32 => {
            for (i, v) in values.iter().enumerate() {
                out.extend_from_slice(&(num(i, v)? as f32).to_le_bytes());
            }
        }
        DType::Float64 => {
            for (i, v) in values.iter().enumerate() {
                out.extend_from_slice(&num(i, v)?.to_le_bytes());
            }
        }
    }
    Ok(Data::Raw(out))
}

/// Splits BYTES binary data: each element is a 4-byte little-endian length and that many bytes.
fn bytes_elements(name: &str, mut b: &[u8], count: u64) -> Result<Data, String> {
    let mut items = Vec::new();
    while !b.is_empty() {
        if b.len() < 4 {
            return Err(bad(format!(
                "input '{name}': BYTES data ends inside a 4-byte length prefix"
            )));
        }
        let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        b = &b[4..];
        if len > b.len() {
            return Err(bad(format!(
                "input '{name}': BYTES element {} claims {len} bytes but only {} remain",
                items.len(),
                b.len()
            )));
        }
        items.push(b[..len].to_vec());
        b = &b[len..];
    }
    if items.len() as u64 != count {
        return Err(bad(format!(
            "input '{name}': shape needs {count} BYTES elements, the data holds {}",
            items.len()
        )));
    }
    Ok(Data::Strings(items))
}

fn check_shape(spec: &TensorSpec, shape: &[u64]) -> Result<(), String> {
    let Some(dims) = &spec.shape else {
        return Ok(());
    };
    if dims.len() != shape.len() {
        return Err(bad(format!(
            "input '{}': shape {shape:?} has {} dimensions, the model expects {} ({})",
            spec.name,
            shape.len(),
            dims.len(),
            spec.describe()
        )));
    }
    for (i, (d, n)) in dims.iter().zip(shape).enumerate() {
        if let Dim::Fixed(f) = d {
            if f != n {
                return Err(bad(format!(
                    "input '{}': dimension {i} is {n}, the model expects {f} ({})",
                    spec.name,
                    spec.describe()
                )));
            }
        }
    }
    Ok(())
}

/// Parses an infer request: `header` is the JSON part, `binary` what follows it.
pub fn parse_request(
    contract: &Contract,
    header: &[u8],
    binary: &[u8],
) -> Result<InferRequest, String> {
    let v: Value = serde_json::from_slice(header)
        .map_err(|e| bad(format!("malformed JSON in the request: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| bad("the request must be a JSON object"))?;
    let params = obj.get("parameters").and_then(Value::as_object);
    let binary_all = params
        .and_then(|p| p.get("binary_data_output"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let timeout_us = params
        .and_then(|p| p.get("timeout"))
        .and_then(Value::as_u64);
    let inputs = obj
        .get("inputs")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("the request has no \"inputs\" array"))?;
    let mut by_name: BTreeMap<&str, Tensor> = BTreeMap::new();
    let mut offset = 0usize;
    for (idx, inp) in inputs.iter().enumerate() {
        let name = inp
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("input {idx} has no \"name\"")))?;
        let spec = contract
            .inputs
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| {
                bad(format!(
                    "unexpected input '{name}' (the model's inputs: {})",
                    contract
                        .inputs
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
        let dt = inp
            .get("datatype")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("input '{name}' has no \"datatype\"")))?;
        if dt != datatype(spec.dtype) {
            return Err(bad(format!(
                "input '{name}': datatype {dt}, the model expects {}",
                datatype(spec.dtype)
            )));
        }
        let shape: Vec<u64> = inp
            .get("shape")
            .and_then(Value::as_array)
            .ok_or_else(|| bad(format!("input '{name}' has no \"shape\"")))?
            .iter()
            .map(|d| {
                d.as_u64().ok_or_else(|| {
                    bad(format!(
                        "input '{name}': shape must hold non-negative integers"
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
        check_shape(spec, &shape)?;
        let n = elements(&shape);
        let binary_size = inp
            .get("parameters")
            .and_then(|p| p.get("binary_data_size"))
            .map(|s| {
                s.as_u64().ok_or_else(|| {
                    bad(format!(
                        "input '{name}': binary_data_size must be a non-negative integer"
                    ))
                })
            })
            .transpose()?;
        let data = match (binary_size, inp.get("data")) {
            (Some(size), _) => {
                let end = offset.checked_add(size as usize).filter(|e| *e <= binary.len()).ok_or_else(|| {
                    bad(format!(
                        "input '{name}': binary_data_size {size} runs past the end of the body ({} binary bytes after the header, {} already used)",
                        binary.len(),
                        offset
                    ))
                })?;
                let chunk = &binary[offset..end];
                offset = end;
                if spec.dtype == DType::String {
                    bytes_elements(name, chunk, n)?
                } else {
                    Data::Raw(chunk.to_vec())
                }
            }
            (None, Some(d)) => {
                let mut flat = Vec::new();
                flatten(d, &mut flat);
                if flat.len() as u64 != n {
                    return Err(bad(format!(
                        "input '{name}': shape {shape:?} needs {n} elements, \"data\" holds {}",
                        flat.len()
                    )));
                }
                json_elements(name, spec.dtype, &flat)?
            }
            (None, None) => {
                return Err(bad(format!(
                    "input '{name}' has neither \"data\" nor binary_data_size"
                )))
            }
        };
        let t = Tensor::new(name, spec.dtype, shape, data)?;
        if by_name.insert(spec.name.as_str(), t).is_some() {
            return Err(bad(format!("input '{name}' is given twice")));
        }
    }
    if offset != binary.len() {
        return Err(bad(format!(
            "{} bytes of binary data follow the inputs and belong to none of them",
            binary.len() - offset
        )));
    }
    let mut ordered = Vec::with_capacity(contract.inputs.len());
    for s in &contract.inputs {
        ordered.push(
            by_name
                .remove(s.name.as_str())
                .ok_or_else(|| bad(format!("input '{}' is missing", s.name)))?,
        );
    }
    // Rows must agree along the batch dimension when the model batches.
    let outputs = match obj.get("outputs").and_then(Value::as_array) {
        None => (0..contract.outputs.len())
            .map(|i| (i, binary_all))
            .collect(),
        Some(req) => req
            .iter()
            .map(|o| {
                let name = o
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("a requested output has no \"name\""))?;
                let i = contract
                    .outputs
                    .iter()
                    .position(|s| s.name == name)
                    .ok_or_else(|| {
                        bad(format!(
                            "unknown output '{name}' requested (the model's outputs: {})",
                            contract
                                .outputs
                                .iter()
                                .map(|s| s.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))
                    })?;
                let bin = o
                    .get("parameters")
                    .and_then(|p| p.get("binary_data"))
                    .and_then(Value::as_bool)
                    .unwrap_or(binary_all);
                Ok((i, bin))
            })
            .collect::<Result<_, String>>()?,
    };
    let id = obj.get("id").and_then(|i| i.as_str().map(str::to_string));
    Ok(InferRequest {
        id,
        inputs: ordered,
        outputs,
        timeout_us,
    })
}

fn json_data(t: &Tensor) -> Value {
    match &t.data {
        Data::Strings(s) => Value::Array(
            s.iter()
                .map(|b| Value::String(String::from_utf8_lossy(b).into_owned()))
                .collect(),
        ),
        Data::Raw(b) => {
            macro_rules! nums {
                ($n:literal, $f:expr) => {
                    Value::Array(
                        b.chunks_exact($n)
                            .map(|c| json!($f(c.try_into().unwrap_or([0; $n]))))
                            .collect(),
                    )
                };
            }
            match t.dtype {
                DType::Bool => Value::Array(b.iter().map(|x| Value::Bool(*x != 0)).collect()),
                DType::Int8 => Value::Array(b.iter().map(|x| json!(*x as i8)).collect()),
                DType::Uint8 => Value::Array(b.iter().map(|x| json!(*x)).collect()),
                DType::Int16 => nums!(2, i16::from_le_bytes),
                DType::Uint16 => nums!(2, u16::from_le_bytes),
                DType::Int32 => nums!(4, i32::from_le_bytes),
                DType::Uint32 => nums!(4, u32::from_le_bytes),
                DType::Int64 => nums!(8, i64::from_le_bytes),
                DType::Uint64 => nums!(8, u64::from_le_bytes),
                DType::Float16 => Value::Array(
                    b.chunks_exact(2)
                        .map(|c| json!(half::f16::from_le_bytes([c[0], c[1]]).to_f32()))
                        .collect(),
                ),
                DType::Bfloat16 => Value::Array(
                    b.chunks_exact(2)
                        .map(|c| json!(half::bf16::from_le_bytes([c[0], c[1]]).to_f32()))
                        .collect(),
                ),
                DType::Float32 => nums!(4, f32::from_le_bytes),
                DType::Float64 => nums!(8, f64::from_le_bytes),
                DType::String => Value::Null,
            }
        }
    }
}

fn binary_bytes(t: &Tensor) -> Vec<u8> {
    match &t.data {
        Data::Raw(b) => b.clone(),
        Data::Strings(items) => {
            let mut out = Vec::new();
            for s in items {
                out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                out.extend_from_slice(s);
            }
            out
        }
    }
}

/// Encodes a response. Returns (body, JSON header length if any output is binary).
pub fn encode_response(
    model: &str,
    version: &str,
    digest: &str,
    id: Option<&str>,
    outputs: &[Tensor],
    wanted: &[(usize, bool)],
    degraded_request_for: Option<&str>,
) -> (Vec<u8>, Option<usize>) {
    let mut binary = Vec::new();
    let mut outs = Vec::with_capacity(wanted.len());
    for (i, bin) in wanted {
        let t = &outputs[*i];
        let mut o = Map::new();
        o.insert("name".into(), json!(t.name));
        o.insert("datatype".into(), json!(datatype(t.dtype)));
        o.insert("shape".into(), json!(t.shape));
        if *bin {
            let b = binary_bytes(t);
            o.insert("parameters".into(), json!({ "binary_data_size": b.len() }));
            binary.extend_from_slice(&b);
        } else {
            o.insert("data".into(), json_data(t));
        }
        outs.push(Value::Object(o));
    }
    let mut params = Map::new();
    params.insert("model_digest".into(), json!(digest));
    if let Some(requested) = degraded_request_for {
        params.insert("degraded".into(), json!(true));
        if requested != model {
            params.insert("requested_model".into(), json!(requested));
        }
    }
    let mut root = Map::new();
    root.insert("model_name".into(), json!(model));
    root.insert("model_version".into(), json!(version));
    if let Some(id) = id {
        root.insert("id".into(), json!(id));
    }
    root.insert("parameters".into(), Value::Object(params));
    root.insert("outputs".into(), Value::Array(outs));
    let mut body = serde_json::to_vec(&Value::Object(root)).unwrap_or_default();
    if binary.is_empty() && !wanted.iter().any(|(_, b)| *b) {
        return (body, None);
    }
    let header_len = body.len();
    body.extend_from_slice(&binary);
    (body, Some(header_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contract() -> Contract {
        let spec = |name: &str, dtype: DType, shape: Vec<Dim>| TensorSpec {
            name: name.into(),
            dtype,
            shape: Some(shape),
        };
        Contract {
            inputs: vec![
                spec("text", DType::String, vec![Dim::Named("batch".into())]),
                spec("flag", DType::Bool, vec![Dim::Fixed(1)]),
                spec("small", DType::Int8, vec![Dim::Fixed(2)]),
            ],
            outputs: vec![spec("y", DType::Float32, vec![Dim::Fixed(1)])],
        }
    }

    fn header(text_size: usize) -> Vec<u8> {
        serde_json::to_vec(&json!({ "inputs": [
            { "name": "text", "datatype": "BYTES", "shape": [2], "parameters": { "binary_data_size": text_size } },
            { "name": "flag", "datatype": "BOOL", "shape": [1], "data": [true] },
            { "name": "small", "datatype": "INT8", "shape": [2], "data": [-128, 127] },
        ]}))
        .expect("json")
    }

    fn bytes_elems(items: &[&[u8]]) -> Vec<u8> {
        items
            .iter()
            .flat_map(|s| [(s.len() as u32).to_le_bytes().to_vec(), s.to_vec()].concat())
            .collect()
    }

    #[test]
    fn bytes_tensors_parse_and_bad_length_prefixes_are_refused() {
        let good = bytes_elems(&[b"hello", b""]);
        let r = parse_request(&contract(), &header(good.len()), &good).expect("valid");
        assert_eq!(
            r.inputs[0].data,
            Data::Strings(vec![b"hello".to_vec(), vec![]])
        );
        assert_eq!(r.inputs[1].data, Data::Raw(vec![1]));
        assert_eq!(r.inputs[2].data, Data::Raw(vec![0x80, 0x7f]));
        // A prefix claiming more bytes than remain.
        let mut long = bytes_elems(&[b"hello", b"x"]);
        long[0] = 200;
        let e = parse_request(&contract(), &header(long.len()), &long).expect_err("overlong");
        assert!(e.contains("BYTES element 0 claims 200 bytes"), "{e}");
        // Data that ends inside a prefix.
        let cut = [bytes_elems(&[b"hello"]), vec![1, 0]].concat();
        let e = parse_request(&contract(), &header(cut.len()), &cut).expect_err("cut");
        assert!(e.contains("inside a 4-byte length prefix"), "{e}");
        // The right bytes but the wrong count for the shape.
        let three = bytes_elems(&[b"a", b"b", b"c"]);
        let e = parse_request(&contract(), &header(three.len()), &three).expect_err("count");
        assert!(
            e.contains("needs 2 BYTES elements, the data holds 3"),
            "{e}"
        );
        // Binary data left over after every input took its share.
        let extra = [good.clone(), vec![0]].concat();
        let e = parse_request(&contract(), &header(good.len()), &extra).expect_err("extra");
        assert!(e.contains("belong to none of them"), "{e}");
    }

    #[test]
    fn json_values_are_checked_against_the_datatype() {
        let bad = |small: Value, flag: Value| {
            let h = serde_json::to_vec(&json!({ "inputs": [
                { "name": "text", "datatype": "BYTES", "shape": [1], "data": ["a"] },
                { "name": "flag", "datatype": "BOOL", "shape": [1], "data": [flag] },
                { "name": "small", "datatype": "INT8", "shape": [2], "data": small },
            ]}))
            .expect("json");
            parse_request(&contract(), &h, &[])
        };
        assert!(bad(json!([1, 2]), json!(false)).is_ok());
        assert!(bad(json!([1, 300]), json!(false))
            .expect_err("range")
            .contains("out of range for INT8"));
        assert!(bad(json!([1, 2.5]), json!(false))
            .expect_err("int")
            .contains("not an integer"));
        assert!(bad(json!([1, 2]), json!(1))
            .expect_err("bool")
            .contains("not a boolean"));
        assert!(
            bad(json!([[1], [2]]), json!(true)).is_ok(),
            "nested arrays are flattened"
        );
    }
}
