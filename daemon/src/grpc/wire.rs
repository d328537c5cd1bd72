//! The Open Inference Protocol's gRPC messages against a model's contract: a
//! `ModelInferRequest`'s tensors (from `raw_input_contents`, one entry per input in order, or
//! from the typed `contents`) checked and decoded into engine tensors, and the engine's outputs
//! encoded as a `ModelInferResponse` with `raw_output_contents` (one per output, in order).
//!
//! Raw fixed-size data is never copied on the way in or out: `raw_input_contents` entries are
//! slices of the received message (prost decodes `bytes` fields as [`bytes::Bytes`]) and become
//! the engine's [`Data::Raw`]; the engine's output buffers become `raw_output_contents`.
//!
//! Invariant: every tensor handed to the engine matches the contract (the checks are the
//! engine's [`Inputs`], shared with HTTP); every refusal names the input and the reason.

use std::collections::HashMap;
use std::time::Duration;

use airlock_engine::contract::{bytes_elements, check_string, output_index, Inputs, MAX_RANK};
use airlock_engine::datatype::v2_name;
use airlock_engine::tensor::{Data, Tensor};
use airlock_engine::InferError;
use airlock_signing::manifest::{Contract, DType};
use bytes::Bytes;

use super::pb;
use pb::infer_parameter::ParameterChoice;

fn bad(m: impl Into<String>) -> InferError {
    InferError::BadRequest(m.into())
}

/// A checked request: inputs in the contract's order, the outputs asked for (contract
/// indices, in the order asked; all of them when none was named), the `timeout` parameter.
#[derive(Debug)]
pub struct Request {
    /// Inputs, in the contract's order.
    pub inputs: Vec<Tensor>,
    /// Outputs to send, in the order to send them.
    pub outputs: Vec<usize>,
    /// The request's `timeout` parameter (µs), if any.
    pub timeout: Option<Duration>,
}

/// Parses `req` against `contract`; the decoded inputs may take at most `budget` bytes. Takes
/// the raw contents out of `req` (no copy: they stay slices of the received message).
pub fn parse(
    contract: &Contract,
    req: &mut pb::ModelInferRequest,
    budget: u64,
) -> Result<Request, InferError> {
    let timeout = match req
        .parameters
        .get("timeout")
        .and_then(|p| p.parameter_choice.as_ref())
    {
        None => None,
        Some(ParameterChoice::Int64Param(us)) if *us >= 0 => {
            Some(Duration::from_micros(*us as u64))
        }
        Some(ParameterChoice::Uint64Param(us)) => Some(Duration::from_micros(*us)),
        Some(_) => {
            return Err(bad(
                "parameter 'timeout' must be a non-negative integer (microseconds)",
            ))
        }
    };
    if req.inputs.len() > contract.inputs.len() {
        return Err(bad(format!(
            "the request has {} inputs; the model has {}",
            req.inputs.len(),
            contract.inputs.len()
        )));
    }
    let mut raw = std::mem::take(&mut req.raw_input_contents);
    if !raw.is_empty() && raw.len() != req.inputs.len() {
        return Err(bad(format!(
            "raw_input_contents holds {} entries for {} inputs; it must hold one per input, in the inputs' order",
            raw.len(),
            req.inputs.len()
        )));
    }
    let mut assembled = Inputs::new(contract, budget);
    for (i, input) in req.inputs.iter().enumerate() {
        let spec = assembled.expect(&input.name)?;
        let name = spec.name.as_str();
        if input.shape.len() > MAX_RANK || input.shape.iter().any(|d| *d < 0) {
            return Err(bad(format!(
                "input '{name}': shape must hold non-negative integers (at most {MAX_RANK})"
            )));
        }
        let shape: Vec<u64> = input.shape.iter().map(|d| *d as u64).collect();
        let decl = assembled.declare(name, &input.datatype, &shape)?;
        let n = decl.elements;
        let data = match (raw.get_mut(i), &input.contents) {
            (Some(_), Some(c)) if !is_empty(c) => {
                return Err(bad(format!(
                    "input '{name}' has contents while raw_input_contents is given; send every input one way or the other"
                )))
            }
            (Some(bytes), _) => {
                let bytes = std::mem::take(bytes);
                if decl.dtype == DType::String {
                    let d = bytes_elements(name, &bytes, n)?;
                    let len = bytes.len();
                    assembled.charge_text(len as u64, |budget| {
                        format!("input '{name}': {n} BYTES elements in {len} bytes take more than a request's inputs may ({budget} bytes)")
                    })?;
                    d
                } else {
                    Data::Raw(bytes)
                }
            }
            (None, None) => {
                return Err(bad(format!(
                    "input '{name}' has neither contents nor an entry in raw_input_contents"
                )))
            }
            (None, Some(c)) => {
                let d = typed(name, decl.dtype, c, n)?;
                if let Data::Strings(items) = &d {
                    let text: u64 = items.iter().map(|s| s.len() as u64).sum();
                    assembled.charge_text(text, |budget| {
                        format!("input '{name}': its bytes_contents take more than a request's inputs may ({budget} bytes)")
                    })?;
                }
                d
            }
        };
        assembled.put(decl, data)?;
    }
    let inputs = assembled.finish()?;
    if req.outputs.len() > contract.outputs.len() {
        return Err(bad(format!(
            "{} outputs are requested; the model has {}",
            req.outputs.len(),
            contract.outputs.len()
        )));
    }
    let mut outputs = Vec::with_capacity(req.outputs.len());
    for o in &req.outputs {
        let i = output_index(contract, &o.name)?;
        if outputs.contains(&i) {
            return Err(bad(format!(
                "output '{}' is requested twice",
                contract.outputs[i].name
            )));
        }
        if o.parameters.contains_key("classification") {
            return Err(bad(format!(
                "output '{}': the classification extension is not supported; ask for the tensor itself",
                contract.outputs[i].name
            )));
        }
        outputs.push(i);
    }
    if outputs.is_empty() {
        outputs = (0..contract.outputs.len()).collect();
    }
    Ok(Request {
        inputs,
        outputs,
        timeout,
    })
}

fn is_empty(c: &pb::InferTensorContents) -> bool {
    counts(c).iter().all(|(_, n)| *n == 0)
}

/// Elements in each typed field, by field name.
fn counts(c: &pb::InferTensorContents) -> [(&'static str, usize); 8] {
    [
        ("bool_contents", c.bool_contents.len()),
        ("int_contents", c.int_contents.len()),
        ("int64_contents", c.int64_contents.len()),
        ("uint_contents", c.uint_contents.len()),
        ("uint64_contents", c.uint64_contents.len()),
        ("fp32_contents", c.fp32_contents.len()),
        ("fp64_contents", c.fp64_contents.len()),
        ("bytes_contents", c.bytes_contents.len()),
    ]
}

/// The typed field an element type's contents go in (`None`: FP16 and BF16 have none).
fn field_of(d: DType) -> Option<&'static str> {
    Some(match d {
        DType::Bool => "bool_contents",
        DType::Int8 | DType::Int16 | DType::Int32 => "int_contents",
        DType::Int64 => "int64_contents",
        DType::Uint8 | DType::Uint16 | DType::Uint32 => "uint_contents",
        DType::Uint64 => "uint64_contents",
        DType::Float32 => "fp32_contents",
        DType::Float64 => "fp64_contents",
        DType::String => "bytes_contents",
        DType::Float16 | DType::Bfloat16 => return None,
    })
}

/// Decodes typed `contents` of `n` elements of `dtype` into an engine tensor's data.
fn typed(
    name: &str,
    dtype: DType,
    c: &pb::InferTensorContents,
    n: u64,
) -> Result<Data, InferError> {
    let dt = v2_name(dtype);
    let Some(field) = field_of(dtype) else {
        return Err(bad(format!(
            "input '{name}': {dt} has no typed contents field in the protocol; send it in raw_input_contents"
        )));
    };
    for (other, count) in counts(c) {
        if other != field && count > 0 {
            return Err(bad(format!(
                "input '{name}': {dt} elements go in contents.{field}, but contents.{other} holds {count}"
            )));
        }
    }
    let have = counts(c)
        .iter()
        .find(|(f, _)| *f == field)
        .map(|(_, n)| *n as u64)
        .unwrap_or(0);
    if have != n {
        return Err(bad(format!(
            "input '{name}': its shape needs {n} elements, contents.{field} holds {have}"
        )));
    }
    fn narrow<T: TryFrom<W>, W: Copy + std::fmt::Display, const N: usize>(
        name: &str,
        dt: &str,
        v: &[W],
        le: impl Fn(T) -> [u8; N],
    ) -> Result<Data, InferError> {
        let mut out = Vec::with_capacity(v.len() * N);
        for (i, x) in v.iter().enumerate() {
            let t = T::try_from(*x).map_err(|_| {
                bad(format!(
                    "input '{name}': element {i} ({x}) is out of range for {dt}"
                ))
            })?;
            out.extend_from_slice(&le(t));
        }
        Ok(Data::Raw(out.into()))
    }
    fn le<T: Copy, const N: usize>(v: &[T], f: impl Fn(T) -> [u8; N]) -> Data {
        Data::Raw(v.iter().flat_map(|x| f(*x)).collect::<Vec<u8>>().into())
    }
    Ok(match dtype {
        DType::Bool => Data::Raw(
            c.bool_contents
                .iter()
                .map(|b| *b as u8)
                .collect::<Vec<u8>>()
                .into(),
        ),
        DType::Int8 => narrow(name, dt, &c.int_contents, i8::to_le_bytes)?,
        DType::Int16 => narrow(name, dt, &c.int_contents, i16::to_le_bytes)?,
        DType::Int32 => le(&c.int_contents, i32::to_le_bytes),
        DType::Int64 => le(&c.int64_contents, i64::to_le_bytes),
        DType::Uint8 => narrow(name, dt, &c.uint_contents, u8::to_le_bytes)?,
        DType::Uint16 => narrow(name, dt, &c.uint_contents, u16::to_le_bytes)?,
        DType::Uint32 => le(&c.uint_contents, u32::to_le_bytes),
        DType::Uint64 => le(&c.uint64_contents, u64::to_le_bytes),
        DType::Float32 => le(&c.fp32_contents, f32::to_le_bytes),
        DType::Float64 => le(&c.fp64_contents, f64::to_le_bytes),
        DType::String => {
            for (i, s) in c.bytes_contents.iter().enumerate() {
                check_string(name, i, s)?;
            }
            Data::Strings(c.bytes_contents.clone())
        }
        DType::Float16 | DType::Bfloat16 => unreachable!("refused above"),
    })
}

/// Who answered, for the response.
pub struct Answering<'a> {
    /// The model that answered.
    pub model: &'a str,
    /// Its version.
    pub version: String,
    /// Its digest.
    pub digest: &'a str,
    /// The client's request id, echoed.
    pub id: String,
    /// Set when a degraded model (or its fallback) answered for this requested model.
    pub degraded_request_for: Option<&'a str>,
}

/// The answer's parameters: `model_digest` always, `degraded` and `requested_model` when a
/// degraded model or its fallback answered.
pub fn parameters(who: &Answering<'_>) -> HashMap<String, pb::InferParameter> {
    let p = |c| pb::InferParameter {
        parameter_choice: Some(c),
    };
    let mut m = HashMap::new();
    m.insert(
        "model_digest".to_string(),
        p(ParameterChoice::StringParam(who.digest.to_string())),
    );
    if let Some(r) = who.degraded_request_for {
        m.insert("degraded".into(), p(ParameterChoice::BoolParam(true)));
        if r != who.model {
            m.insert(
                "requested_model".into(),
                p(ParameterChoice::StringParam(r.to_string())),
            );
        }
    }
    m
}

/// The response carrying `wanted` of `outputs` (in that order) as raw contents, or `Err(bytes)`
/// when they would take more than `max` bytes.
pub fn response(
    who: Answering<'_>,
    outputs: Vec<Tensor>,
    wanted: &[usize],
    max: u64,
) -> Result<pb::ModelInferResponse, u64> {
    let size = |t: &Tensor| match &t.data {
        Data::Raw(b) => b.len() as u64,
        Data::Strings(items) => items.iter().map(|s| 4 + s.len() as u64).sum(),
    };
    let total: u64 = wanted.iter().map(|i| size(&outputs[*i])).sum();
    if total > max {
        return Err(total);
    }
    let mut slots: Vec<Option<Tensor>> = outputs.into_iter().map(Some).collect();
    let mut tensors = Vec::with_capacity(wanted.len());
    let mut raw = Vec::with_capacity(wanted.len());
    for i in wanted {
        let Some(t) = slots.get_mut(*i).and_then(Option::take) else {
            continue;
        };
        tensors.push(pb::model_infer_response::InferOutputTensor {
            name: t.name,
            datatype: v2_name(t.dtype).to_string(),
            shape: t.shape.iter().map(|d| *d as i64).collect(),
            parameters: HashMap::new(),
            contents: None,
        });
        raw.push(match t.data {
            Data::Raw(b) => b,
            Data::Strings(items) => {
                let mut out = Vec::new();
                airlock_engine::contract::write_bytes_elements(&items, &mut out);
                Bytes::from(out)
            }
        });
    }
    Ok(pb::ModelInferResponse {
        parameters: parameters(&who),
        model_name: who.model.to_string(),
        model_version: who.version,
        id: who.id,
        outputs: tensors,
        raw_output_contents: raw,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_signing::manifest::{Dim, TensorSpec};
    use pb::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};

    fn contract() -> Contract {
        let spec = |name: &str, dtype| TensorSpec {
            name: name.into(),
            dtype,
            shape: Some(vec![Dim::Named("b".into()), Dim::Fixed(2)]),
        };
        Contract {
            inputs: vec![
                spec("x", DType::Float32),
                spec("h", DType::Float16),
                spec("s", DType::String),
            ],
            outputs: vec![spec("y", DType::Float32), spec("t", DType::String)],
        }
    }

    fn input(name: &str, dt: &str, contents: Option<pb::InferTensorContents>) -> InferInputTensor {
        InferInputTensor {
            name: name.into(),
            datatype: dt.into(),
            shape: vec![1, 2],
            parameters: HashMap::new(),
            contents,
        }
    }

    fn strings(items: &[&[u8]]) -> Bytes {
        let mut out = Vec::new();
        airlock_engine::contract::write_bytes_elements(
            &items.iter().map(|s| s.to_vec()).collect::<Vec<_>>(),
            &mut out,
        );
        out.into()
    }

    #[test]
    fn raw_contents_reach_the_engine_without_a_copy_in_the_contracts_order() {
        let x = Bytes::from(vec![0u8; 8]);
        let mut req = pb::ModelInferRequest {
            inputs: vec![
                input("s", "BYTES", None),
                input("x", "FP32", None),
                input("h", "FP16", None),
            ],
            raw_input_contents: vec![
                strings(&[b"a", b"bc"]),
                x.clone(),
                Bytes::from(vec![0u8; 4]),
            ],
            outputs: vec![InferRequestedOutputTensor {
                name: "t".into(),
                parameters: HashMap::new(),
            }],
            ..Default::default()
        };
        let r = parse(&contract(), &mut req, 1 << 20).expect("valid");
        let names: Vec<&str> = r.inputs.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["x", "h", "s"]);
        match &r.inputs[0].data {
            Data::Raw(b) => assert_eq!(b.as_ptr(), x.as_ptr(), "copied"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            r.inputs[2].data,
            Data::Strings(vec![b"a".to_vec(), b"bc".to_vec()])
        );
        assert_eq!(r.outputs, [1]);
    }

    #[test]
    fn typed_contents_are_checked_against_the_datatype_and_shape() {
        let c = contract();
        let fp32 = |v: Vec<f32>| pb::InferTensorContents {
            fp32_contents: v,
            ..Default::default()
        };
        let with = |x: InferInputTensor| {
            let mut req = pb::ModelInferRequest {
                inputs: vec![
                    x,
                    input("h", "FP16", Some(pb::InferTensorContents::default())),
                    input(
                        "s",
                        "BYTES",
                        Some(pb::InferTensorContents {
                            bytes_contents: vec![b"a".to_vec(), b"b".to_vec()],
                            ..Default::default()
                        }),
                    ),
                ],
                ..Default::default()
            };
            parse(&c, &mut req, 1 << 20)
                .map(|_| ())
                .expect_err("refused")
                .to_string()
        };
        assert_eq!(
            with(input("x", "FP32", Some(fp32(vec![1.0])))),
            "input 'x': its shape needs 2 elements, contents.fp32_contents holds 1"
        );
        assert_eq!(
            with(input("x", "FP32", Some(pb::InferTensorContents { int_contents: vec![1, 2], ..Default::default() }))),
            "input 'x': FP32 elements go in contents.fp32_contents, but contents.int_contents holds 2"
        );
        assert_eq!(
            with(input("x", "INT32", Some(fp32(vec![1.0, 2.0])))),
            "input 'x': datatype INT32, the model expects FP32"
        );
        // FP16 has no typed field: raw only.
        assert_eq!(
            with(input("x", "FP32", Some(fp32(vec![1.0, 2.0])))),
            "input 'h': FP16 has no typed contents field in the protocol; send it in raw_input_contents"
        );
        let mut shape = input("x", "FP32", Some(fp32(vec![1.0, 2.0])));
        shape.shape = vec![-1, 2];
        assert!(with(shape).contains("non-negative"));
        let mut req = pb::ModelInferRequest {
            inputs: vec![input("x", "FP32", None)],
            raw_input_contents: vec![Bytes::new(), Bytes::new()],
            ..Default::default()
        };
        assert!(parse(&c, &mut req, 1 << 20)
            .expect_err("count")
            .to_string()
            .contains("one per input"));
        let mut req = pb::ModelInferRequest {
            inputs: vec![input("x", "FP32", Some(fp32(vec![1.0, 2.0])))],
            raw_input_contents: vec![Bytes::from(vec![0u8; 8])],
            ..Default::default()
        };
        assert!(parse(&c, &mut req, 1 << 20)
            .expect_err("both")
            .to_string()
            .contains("one way or the other"));
    }

    #[test]
    fn narrow_integers_are_range_checked() {
        let spec = TensorSpec {
            name: "i".into(),
            dtype: DType::Int8,
            shape: Some(vec![Dim::Fixed(2)]),
        };
        let c = Contract {
            inputs: vec![spec.clone()],
            outputs: vec![spec],
        };
        let mut req = pb::ModelInferRequest {
            inputs: vec![InferInputTensor {
                name: "i".into(),
                datatype: "INT8".into(),
                shape: vec![2],
                parameters: HashMap::new(),
                contents: Some(pb::InferTensorContents {
                    int_contents: vec![-128, 128],
                    ..Default::default()
                }),
            }],
            ..Default::default()
        };
        assert_eq!(
            parse(&c, &mut req, 1 << 20).expect_err("range").to_string(),
            "input 'i': element 1 (128) is out of range for INT8"
        );
    }

    #[test]
    fn the_response_carries_the_wanted_outputs_raw_in_order_and_is_bounded() {
        let y = Tensor::new(
            "y",
            DType::Float32,
            vec![1, 2],
            Data::Raw(Bytes::from(vec![1u8; 8])),
        )
        .expect("y");
        let t = Tensor::new(
            "t",
            DType::String,
            vec![1, 2],
            Data::Strings(vec![b"a".to_vec(), Vec::new()]),
        )
        .expect("t");
        let who = || Answering {
            model: "m",
            version: "1.0.0".into(),
            digest: "d",
            id: "r1".into(),
            degraded_request_for: None,
        };
        let raw_y = match &y.data {
            Data::Raw(b) => b.clone(),
            _ => unreachable!(),
        };
        let r = response(who(), vec![y.clone(), t.clone()], &[1, 0], 1 << 20).expect("fits");
        assert_eq!(
            r.outputs
                .iter()
                .map(|o| o.name.as_str())
                .collect::<Vec<_>>(),
            ["t", "y"]
        );
        assert_eq!(&r.raw_output_contents[0][..], b"\x01\0\0\0a\0\0\0\0");
        assert_eq!(r.raw_output_contents[1].as_ptr(), raw_y.as_ptr(), "copied");
        assert_eq!((r.id.as_str(), r.model_version.as_str()), ("r1", "1.0.0"));
        assert!(matches!(
            r.parameters["model_digest"].parameter_choice,
            Some(ParameterChoice::StringParam(ref d)) if d == "d"
        ));
        assert_eq!(response(who(), vec![y, t], &[0, 1], 16), Err(17));
    }
}
