//! The Open Inference Protocol v2 wire format: request parsing (JSON tensors and the binary
//! tensor data extension) against a model's contract, and response encoding.
//!
//! Invariant: every tensor that reaches the engine matches the contract (name, element type,
//! rank, fixed dimensions, byte length); every refusal names the input and the reason.

use airlock_signing::manifest::{Contract, DType};
use serde::de::{DeserializeSeed, SeqAccess, Visitor};
use serde_json::value::RawValue;

use airlock_engine::contract::{bytes_elements, check_string, Inputs};
use airlock_engine::tensor::{Data, Tensor};
use airlock_engine::InferError;

pub use airlock_engine::contract::metadata_shape;
pub use airlock_engine::datatype::{config_name as config_type, v2_name as datatype};

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

/// Why a request was refused: `BadRequest` (400) or `TooLarge` (413).
pub type RequestError = InferError;

pub use airlock_engine::contract::BYTES_ELEMENT_COST;

fn bad(m: impl Into<String>) -> RequestError {
    InferError::BadRequest(m.into())
}

/// The top level of a request, fields kept raw until the contract says what they must be.
/// Unknown fields are skipped without being stored.
#[derive(serde::Deserialize)]
struct Head<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    parameters: Option<&'a RawValue>,
    #[serde(borrow, default)]
    inputs: Option<&'a RawValue>,
    #[serde(borrow, default)]
    outputs: Option<&'a RawValue>,
}

#[derive(serde::Deserialize)]
struct InputHead<'a> {
    #[serde(borrow, default)]
    name: Option<&'a RawValue>,
    #[serde(borrow, default)]
    datatype: Option<&'a RawValue>,
    #[serde(borrow, default)]
    shape: Option<&'a RawValue>,
    #[serde(borrow, default)]
    parameters: Option<&'a RawValue>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

#[derive(serde::Deserialize)]
struct OutputHead<'a> {
    #[serde(borrow, default)]
    name: Option<&'a RawValue>,
    #[serde(borrow, default)]
    parameters: Option<&'a RawValue>,
}

/// `parameters` of the request, an input or an output: only the keys this server reads.
#[derive(serde::Deserialize, Default)]
struct Params<'a> {
    #[serde(borrow, default)]
    binary_data_output: Option<&'a RawValue>,
    #[serde(borrow, default)]
    timeout: Option<&'a RawValue>,
    #[serde(borrow, default)]
    binary_data_size: Option<&'a RawValue>,
    #[serde(borrow, default)]
    binary_data: Option<&'a RawValue>,
}

/// A JSON array of at most `max` elements: longer ones are refused as soon as the element
/// past the bound is seen (nothing beyond it is stored).
struct AtMost<T> {
    max: usize,
    what: &'static str,
    _t: std::marker::PhantomData<T>,
}

impl<'de, T: serde::Deserialize<'de>> DeserializeSeed<'de> for AtMost<T> {
    type Value = Vec<T>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Vec<T>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, T: serde::Deserialize<'de>> Visitor<'de> for AtMost<T> {
    type Value = Vec<T>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "an array of {}", self.what)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut out = Vec::new();
        while let Some(x) = seq.next_element()? {
            if out.len() == self.max {
                return Err(serde::de::Error::custom(format!(
                    "more {} than the model has",
                    self.what
                )));
            }
            out.push(x);
        }
        Ok(out)
    }
}

fn at_most<'a, T: serde::Deserialize<'a>>(
    raw: &'a RawValue,
    max: usize,
    what: &'static str,
) -> Result<Vec<T>, serde_json::Error> {
    let mut d = serde_json::Deserializer::from_str(raw.get());
    AtMost {
        max,
        what,
        _t: std::marker::PhantomData,
    }
    .deserialize(&mut d)
}

/// `whose` names the object in an error ("input 'x': "), formatted only then.
fn params<'a>(
    raw: Option<&'a RawValue>,
    whose: impl std::fmt::Display,
) -> Result<Params<'a>, RequestError> {
    match raw {
        None => Ok(Params::default()),
        Some(r) => serde_json::from_str(r.get())
            .map_err(|_| bad(format!("{whose}\"parameters\" must be an object"))),
    }
}

fn opt_bool(raw: Option<&RawValue>, what: &str) -> Result<Option<bool>, RequestError> {
    raw.map(|r| match r.get() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => serde_json::from_str::<bool>(r.get())
            .map_err(|_| bad(format!("{what} must be true or false"))),
    })
    .transpose()
}

fn opt_u64(
    raw: Option<&RawValue>,
    what: impl std::fmt::Display,
) -> Result<Option<u64>, RequestError> {
    raw.map(|r| match plain_u64(r.get()) {
        Some(n) => Ok(n),
        None => serde_json::from_str::<u64>(r.get())
            .map_err(|_| bad(format!("{what} must be a non-negative integer"))),
    })
    .transpose()
}

// The shortcuts below read the common forms of a value straight from its text. A `RawValue`
// is valid JSON, so each shortcut gives exactly what serde_json would; anything else (escapes,
// signs, fractions, exponents, overflow) goes through serde_json as before.

/// The digits of a JSON integer that fits a u64 (valid JSON has no leading zeros).
fn plain_u64(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// A JSON array of at most `max` plain non-negative integers, such as `[4,16]`.
fn plain_dims(raw: &RawValue, max: usize) -> Option<Vec<u64>> {
    let inner = raw.get().strip_prefix('[')?.strip_suffix(']')?;
    let ws: &[char] = &[' ', '\t', '\n', '\r'];
    if inner.trim_matches(ws).is_empty() {
        return Some(Vec::new());
    }
    let mut dims = Vec::with_capacity(max.min(4));
    for part in inner.split(',') {
        if dims.len() == max {
            return None;
        }
        dims.push(plain_u64(part.trim_matches(ws))?);
    }
    Some(dims)
}

fn string<'a>(raw: &'a RawValue) -> Option<std::borrow::Cow<'a, str>> {
    // A string without escapes is its text between the quotes (valid JSON holds no control
    // characters in a string).
    if let Some(inner) = raw
        .get()
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
    {
        if !inner.contains('\\') {
            return Some(std::borrow::Cow::Borrowed(inner));
        }
    }
    // Borrowed from the body unless it holds escapes (a bare `Cow<str>` always copies).
    #[derive(serde::Deserialize)]
    struct Text<'a>(#[serde(borrow)] std::borrow::Cow<'a, str>);
    serde_json::from_str::<Text>(raw.get()).ok().map(|t| t.0)
}

/// Decodes `data` (nested arrays of scalars) straight into the tensor's bytes: never more
/// than the shape's element count is stored, and each element is checked against the type.
struct Flat<'s> {
    name: &'s str,
    dtype: DType,
    want: u64,
    count: u64,
    raw: Vec<u8>,
    strings: Vec<Vec<u8>>,
}

enum Scalar<'a> {
    Bool(bool),
    I(i128),
    F(f64),
    Str(&'a str),
}

impl Flat<'_> {
    fn push(&mut self, v: Scalar<'_>) -> Result<(), String> {
        let (name, i) = (self.name, self.count);
        if i >= self.want {
            return Err(format!(
                "input '{name}': \"data\" holds more than the {} elements its shape needs",
                self.want
            ));
        }
        self.count += 1;
        let dt = datatype(self.dtype);
        let int = |min: i128, max: i128| -> Result<i128, String> {
            match v {
                Scalar::I(n) if (min..=max).contains(&n) => Ok(n),
                Scalar::I(n) => Err(format!(
                    "input '{name}': element {i} ({n}) is out of range for {dt}"
                )),
                _ => Err(format!("input '{name}': element {i} is not an integer")),
            }
        };
        let num = || -> Result<f64, String> {
            match v {
                Scalar::I(n) => Ok(n as f64),
                Scalar::F(f) => Ok(f),
                _ => Err(format!("input '{name}': element {i} is not a number")),
            }
        };
        let finite = |x: f64, max: f64| -> Result<f64, String> {
            if x.abs() > max {
                Err(format!(
                    "input '{name}': element {i} ({x}) is out of range for {dt}"
                ))
            } else {
                Ok(x)
            }
        };
        macro_rules! ints {
            ($t:ty) => {
                self.raw.extend_from_slice(
                    &(int(<$t>::MIN as i128, <$t>::MAX as i128)? as $t).to_le_bytes(),
                )
            };
        }
        match self.dtype {
            DType::String => match v {
                Scalar::Str(s) => {
                    check_string(name, i as usize, s.as_bytes()).map_err(|e| e.to_string())?;
                    self.strings.push(s.as_bytes().to_vec());
                }
                _ => return Err(format!("input '{name}': BYTES element {i} is not a string")),
            },
            DType::Bool => match v {
                Scalar::Bool(b) => self.raw.push(b as u8),
                _ => return Err(format!("input '{name}': element {i} is not a boolean")),
            },
            DType::Int8 => ints!(i8),
            DType::Int16 => ints!(i16),
            DType::Int32 => ints!(i32),
            DType::Int64 => ints!(i64),
            DType::Uint8 => ints!(u8),
            DType::Uint16 => ints!(u16),
            DType::Uint32 => ints!(u32),
            DType::Uint64 => ints!(u64),
            DType::Float16 => self.raw.extend_from_slice(
                &half::f16::from_f64(finite(num()?, f64::from(half::f16::MAX))?).to_le_bytes(),
            ),
            DType::Bfloat16 => self.raw.extend_from_slice(
                &half::bf16::from_f64(finite(num()?, f64::from(half::bf16::MAX))?).to_le_bytes(),
            ),
            DType::Float32 => self
                .raw
                .extend_from_slice(&(finite(num()?, f64::from(f32::MAX))? as f32).to_le_bytes()),
            DType::Float64 => self.raw.extend_from_slice(&num()?.to_le_bytes()),
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for &mut Flat<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for &mut Flat<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("numbers, booleans or strings, in nested arrays")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(&mut *self)?.is_some() {}
        Ok(())
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<(), E> {
        self.push(Scalar::Bool(v)).map_err(E::custom)
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
        self.push(Scalar::I(v.into())).map_err(E::custom)
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
        self.push(Scalar::I(v.into())).map_err(E::custom)
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        self.push(Scalar::F(v)).map_err(E::custom)
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        self.push(Scalar::Str(v)).map_err(E::custom)
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        Err(E::custom(format!(
            "input '{}': element {} is null",
            self.name, self.count
        )))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(serde::de::Error::custom(format!(
            "input '{}': element {} is an object",
            self.name, self.count
        )))
    }
}

/// The JSON error's message without serde's position suffix when it is one of ours.
fn de_message(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) if s.starts_with("input '") => s[..i].to_string(),
        _ => s,
    }
}

/// Parses an infer request: `header` is the JSON part, `binary` what follows it. The decoded
/// inputs may take at most `budget` bytes (BYTES elements counted at their length plus
/// [`BYTES_ELEMENT_COST`]); the check comes before anything is decoded.
pub fn parse_request(
    contract: &Contract,
    header: &[u8],
    binary: bytes::Bytes,
    budget: u64,
) -> Result<InferRequest, RequestError> {
    let text =
        std::str::from_utf8(header).map_err(|_| bad("malformed JSON in the request: not UTF-8"))?;
    if !text.trim_start().starts_with('{') {
        return Err(bad("the request must be a JSON object"));
    }
    let head: Head = serde_json::from_str(text)
        .map_err(|e| bad(format!("malformed JSON in the request: {e}")))?;
    let p = params(head.parameters, "")?;
    let binary_all =
        opt_bool(p.binary_data_output, "parameters.binary_data_output")?.unwrap_or(false);
    let timeout_us = opt_u64(p.timeout, "parameters.timeout")?;
    let inputs: Vec<InputHead> = match head.inputs {
        None => return Err(bad("the request has no \"inputs\" array")),
        // One more than the model has, so that an extra input is named below.
        Some(r) => at_most(r, contract.inputs.len() + 1, "inputs").map_err(|e| {
            bad(format!(
                "\"inputs\" must be an array of at most {} objects: {e}",
                contract.inputs.len()
            ))
        })?,
    };
    let mut assembled = Inputs::new(contract, budget);
    let mut offset = 0usize;
    for (idx, inp) in inputs.iter().enumerate() {
        let name = inp
            .name
            .and_then(string)
            .ok_or_else(|| bad(format!("input {idx} has no \"name\"")))?;
        let spec = assembled.expect(&name)?;
        let name = spec.name.as_str();
        let dt = inp
            .datatype
            .and_then(string)
            .ok_or_else(|| bad(format!("input '{name}' has no \"datatype\"")))?;
        if dt != datatype(spec.dtype) {
            return Err(bad(format!(
                "input '{name}': datatype {}, the model expects {}",
                dt.escape_debug(),
                datatype(spec.dtype)
            )));
        }
        let shape: Vec<u64> = match inp.shape {
            None => return Err(bad(format!("input '{name}' has no \"shape\""))),
            Some(r) => match plain_dims(r, airlock_engine::contract::MAX_RANK) {
                Some(dims) => dims,
                None => {
                    at_most(r, airlock_engine::contract::MAX_RANK, "dimensions").map_err(|_| {
                        bad(format!(
                            "input '{name}': shape must hold non-negative integers (at most {})",
                            airlock_engine::contract::MAX_RANK
                        ))
                    })?
                }
            },
        };
        let decl = assembled.declare(name, &dt, &shape)?;
        let n = decl.elements;
        let ip = params(inp.parameters, format_args!("input '{name}': "))?;
        let binary_size = opt_u64(
            ip.binary_data_size,
            format_args!("input '{name}': binary_data_size"),
        )?;
        let data = match (binary_size, inp.data) {
            (Some(size), _) => {
                let end = offset.checked_add(size as usize).filter(|e| *e <= binary.len()).ok_or_else(|| {
                    bad(format!(
                        "input '{name}': binary_data_size {size} runs past the end of the body ({} binary bytes after the header, {} already used)",
                        binary.len(),
                        offset
                    ))
                })?;
                let range = offset..end;
                offset = end;
                if spec.dtype == DType::String {
                    let d = bytes_elements(name, &binary[range.clone()], n)?;
                    assembled.charge_text(range.len() as u64, |budget| {
                        format!(
                            "input '{name}': {n} BYTES elements in {} bytes take more than a request's inputs may ({budget} bytes)",
                            range.len()
                        )
                    })?;
                    d
                } else {
                    // A slice of the body: no copy on the way to the engine.
                    Data::Raw(binary.slice(range))
                }
            }
            (None, Some(raw)) => {
                let mut flat = Flat {
                    name,
                    dtype: spec.dtype,
                    want: n,
                    count: 0,
                    raw: Vec::with_capacity(decl.raw_len().unwrap_or(0) as usize),
                    strings: Vec::new(),
                };
                let mut d = serde_json::Deserializer::from_str(raw.get());
                (&mut flat)
                    .deserialize(&mut d)
                    .map_err(|e| bad(de_message(&e)))?;
                if flat.count != n {
                    return Err(bad(format!(
                        "input '{name}': shape {shape:?} needs {n} elements, \"data\" holds {}",
                        flat.count
                    )));
                }
                if spec.dtype == DType::String {
                    let text: u64 = flat.strings.iter().map(|s| s.len() as u64).sum();
                    assembled.charge_text(text, |budget| {
                        format!("input '{name}': its strings take more than a request's inputs may ({budget} bytes)")
                    })?;
                    Data::Strings(flat.strings)
                } else {
                    Data::Raw(flat.raw.into())
                }
            }
            (None, None) => {
                return Err(bad(format!(
                    "input '{name}' has neither \"data\" nor binary_data_size"
                )))
            }
        };
        assembled.put(decl, data)?;
    }
    if offset != binary.len() {
        return Err(bad(format!(
            "{} bytes of binary data follow the inputs and belong to none of them",
            binary.len() - offset
        )));
    }
    let ordered = assembled.finish()?;
    let outputs = match head.outputs {
        None => (0..contract.outputs.len())
            .map(|i| (i, binary_all))
            .collect(),
        Some(raw) => {
            let asked: Vec<OutputHead> = at_most(raw, contract.outputs.len() + 1, "outputs")
                .map_err(|e| {
                    bad(format!(
                        "\"outputs\" must be an array of at most {} objects (the model's outputs, each once): {e}",
                        contract.outputs.len()
                    ))
                })?;
            let mut out: Vec<(usize, bool)> = Vec::with_capacity(asked.len());
            for o in asked {
                let name = o
                    .name
                    .and_then(string)
                    .ok_or_else(|| bad("a requested output has no \"name\""))?;
                let i = contract
                    .outputs
                    .iter()
                    .position(|s| s.name == name)
                    .ok_or_else(|| {
                        bad(format!(
                            "unknown output '{}' requested (the model's outputs: {})",
                            name.escape_debug(),
                            contract
                                .outputs
                                .iter()
                                .map(|s| s.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))
                    })?;
                if out.iter().any(|(j, _)| *j == i) {
                    return Err(bad(format!(
                        "output '{}' is requested twice",
                        contract.outputs[i].name
                    )));
                }
                let op = params(
                    o.parameters,
                    format_args!("output '{}': ", contract.outputs[i].name),
                )?;
                let bin = opt_bool(op.binary_data, "parameters.binary_data")?.unwrap_or(binary_all);
                out.push((i, bin));
            }
            out
        }
    };
    let id = match head.id.map(|r| string(r).filter(|s| s.len() <= 256)) {
        None => None,
        Some(Some(s)) => Some(s.into_owned()),
        Some(None) => return Err(bad("\"id\" must be a string of at most 256 bytes")),
    };
    Ok(InferRequest {
        id,
        inputs: ordered,
        outputs,
        timeout_us,
    })
}

/// A tensor's elements as a flat JSON array, written straight to the output.
struct JsonData<'a>(&'a Tensor);

impl serde::Serialize for JsonData<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let t = self.0;
        let b = match &t.data {
            Data::Strings(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for x in items {
                    seq.serialize_element(&String::from_utf8_lossy(x))?;
                }
                return seq.end();
            }
            Data::Raw(b) => b,
        };
        let size = t.dtype.size().unwrap_or(1).max(1);
        let mut seq = s.serialize_seq(Some(b.len() / size))?;
        macro_rules! each {
            ($n:literal, $f:expr) => {
                for c in b.chunks_exact($n) {
                    seq.serialize_element(&$f(c.try_into().unwrap_or([0; $n])))?;
                }
            };
        }
        match t.dtype {
            DType::Bool => each!(1, |c: [u8; 1]| c[0] != 0),
            DType::Int8 => each!(1, i8::from_le_bytes),
            DType::Uint8 => each!(1, u8::from_le_bytes),
            DType::Int16 => each!(2, i16::from_le_bytes),
            DType::Uint16 => each!(2, u16::from_le_bytes),
            DType::Int32 => each!(4, i32::from_le_bytes),
            DType::Uint32 => each!(4, u32::from_le_bytes),
            DType::Int64 => each!(8, i64::from_le_bytes),
            DType::Uint64 => each!(8, u64::from_le_bytes),
            DType::Float16 => each!(2, |c| half::f16::from_le_bytes(c).to_f32()),
            DType::Bfloat16 => each!(2, |c| half::bf16::from_le_bytes(c).to_f32()),
            DType::Float32 => each!(4, f32::from_le_bytes),
            DType::Float64 => each!(8, f64::from_le_bytes),
            DType::String => {}
        }
        seq.end()
    }
}

fn binary_len(t: &Tensor) -> u64 {
    match &t.data {
        Data::Raw(b) => b.len() as u64,
        Data::Strings(items) => items.iter().map(|s| 4 + s.len() as u64).sum(),
    }
}

fn write_binary(t: &Tensor, out: &mut Vec<u8>) {
    match &t.data {
        Data::Raw(b) => out.extend_from_slice(b),
        Data::Strings(items) => airlock_engine::contract::write_bytes_elements(items, out),
    }
}

#[derive(serde::Serialize)]
struct OutParams {
    binary_data_size: u64,
}

#[derive(serde::Serialize)]
struct OutJson<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [u64],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<OutParams>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<JsonData<'a>>,
}

#[derive(serde::Serialize)]
struct RespParams<'a> {
    model_digest: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    degraded: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    requested_model: Option<&'a str>,
}

#[derive(serde::Serialize)]
struct RespJson<'a> {
    model_name: &'a str,
    model_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    parameters: RespParams<'a>,
    outputs: Vec<OutJson<'a>>,
}

/// A buffer that refuses to grow past its cap (the response limit).
struct Capped {
    buf: Vec<u8>,
    cap: usize,
}

impl std::io::Write for Capped {
    #[inline]
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.write_all(b).map(|()| b.len())
    }
    // serde_json writes an answer in dozens of small pieces, each through `write_all`: inlined,
    // one comparison and a copy into the reserved buffer.
    #[inline]
    fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        if self.buf.len() + b.len() > self.cap {
            return Err(over_the_limit());
        }
        self.buf.extend_from_slice(b);
        Ok(())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cold]
fn over_the_limit() -> std::io::Error {
    std::io::Error::other("the response limit")
}

/// The answer would be larger than the response limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseTooLarge {
    /// Whether some output was asked for as JSON (binary would be smaller).
    pub json: bool,
}

/// Who asked, for the answer's header.
pub struct Answering<'a> {
    /// The model that answered.
    pub model: &'a str,
    /// Its version.
    pub version: &'a str,
    /// Its digest.
    pub digest: &'a str,
    /// The client's request id.
    pub id: Option<&'a str>,
    /// Set when a degraded model (or its fallback) answered for this requested model.
    pub degraded_request_for: Option<&'a str>,
}

/// Encodes a response of at most `max` bytes, written straight into one buffer (no JSON tree).
/// Returns (body, JSON header length if any output is binary).
pub fn encode_response(
    who: &Answering<'_>,
    outputs: &[Tensor],
    wanted: &[(usize, bool)],
    max: u64,
) -> Result<(Vec<u8>, Option<usize>), ResponseTooLarge> {
    let json = wanted.iter().any(|(_, b)| !*b);
    let binary_total: u64 = wanted
        .iter()
        .filter(|(_, b)| *b)
        .map(|(i, _)| binary_len(&outputs[*i]))
        .sum();
    if binary_total > max {
        return Err(ResponseTooLarge { json });
    }
    let outs: Vec<OutJson> = wanted
        .iter()
        .map(|(i, bin)| {
            let t = &outputs[*i];
            OutJson {
                name: &t.name,
                datatype: datatype(t.dtype),
                shape: &t.shape,
                parameters: bin.then(|| OutParams {
                    binary_data_size: binary_len(t),
                }),
                data: (!bin).then_some(JsonData(t)),
            }
        })
        .collect();
    let root = RespJson {
        model_name: who.model,
        model_version: who.version,
        id: who.id,
        parameters: RespParams {
            model_digest: who.digest,
            degraded: who.degraded_request_for.map(|_| true),
            requested_model: who.degraded_request_for.filter(|r| *r != who.model),
        },
        outputs: outs,
    };
    // One buffer for the JSON header and the binary outputs after it, reserved up front for
    // a typical header (JSON data grows it as it must).
    let names: usize = outputs
        .iter()
        .map(|t| t.name.len() + 24 * t.shape.len())
        .sum();
    let reserve = 320
        + who.model.len()
        + who.digest.len()
        + who.id.map_or(0, str::len)
        + 96 * wanted.len()
        + names;
    let mut w = Capped {
        buf: Vec::with_capacity(reserve.min(max as usize) + binary_total as usize),
        cap: (max - binary_total) as usize,
    };
    serde_json::to_writer(&mut w, &root).map_err(|_| ResponseTooLarge { json })?;
    let mut body = w.buf;
    if !wanted.iter().any(|(_, b)| *b) {
        return Ok((body, None));
    }
    let header_len = body.len();
    body.reserve(binary_total as usize);
    for (i, bin) in wanted {
        if *bin {
            write_binary(&outputs[*i], &mut body);
        }
    }
    Ok((body, Some(header_len)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_signing::manifest::{Dim, TensorSpec};
    use serde_json::{json, Value};

    #[test]
    fn the_shortcuts_read_values_exactly_as_serde_json_does() {
        let raw = |t: &str| -> Box<RawValue> { serde_json::from_str(t).expect("valid JSON") };
        for t in [
            "0",
            "7",
            "18446744073709551615",
            "18446744073709551616",
            "-1",
            "1.0",
            "1e3",
            "\"5\"",
            "true",
            "null",
            "[1]",
        ] {
            let r = raw(t);
            let serde = serde_json::from_str::<u64>(r.get()).ok();
            if let Some(n) = plain_u64(r.get()) {
                assert_eq!(Some(n), serde, "{t}");
            }
            assert_eq!(opt_u64(Some(&r), "x").ok().flatten(), serde, "{t}");
            let serde = serde_json::from_str::<bool>(r.get()).ok();
            assert_eq!(opt_bool(Some(&r), "x").ok().flatten(), serde, "{t}");
        }
        for t in [
            "[]",
            "[ ]",
            "[4,16]",
            "[ 4 ,\n16 ]",
            "[0]",
            "[1,2,3,4,5,6,7,8]",
            "[1,2,3,4,5,6,7,8,9]",
            "[-1]",
            "[1.5]",
            "[[4]]",
            "[\"4\"]",
            "[18446744073709551616]",
            "{}",
            "4",
            "[4,null]",
        ] {
            let r = raw(t);
            let max = 8;
            let serde = at_most::<u64>(&r, max, "dimensions").ok();
            if let Some(d) = plain_dims(&r, max) {
                assert_eq!(Some(d), serde, "{t}");
            }
        }
        for t in [
            "\"x\"",
            "\"\"",
            "\"caf\u{e9}\"",
            "\"a\\\"b\"",
            "\"\\u0041\"",
            "\"a\\\\\"",
            "1",
            "null",
            "[\"x\"]",
        ] {
            let r = raw(t);
            #[derive(serde::Deserialize)]
            struct Owned(String);
            let serde = serde_json::from_str::<Owned>(r.get()).ok().map(|o| o.0);
            assert_eq!(string(&r).map(|c| c.into_owned()), serde, "{t}");
        }
    }

    fn parse_bin(
        c: &Contract,
        header: &[u8],
        binary: &[u8],
        budget: u64,
    ) -> Result<InferRequest, RequestError> {
        parse_request(c, header, bytes::Bytes::copy_from_slice(binary), budget)
    }

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
        let r = parse_bin(&contract(), &header(good.len()), &good, 1 << 20).expect("valid");
        assert_eq!(
            r.inputs[0].data,
            Data::Strings(vec![b"hello".to_vec(), vec![]])
        );
        assert_eq!(r.inputs[1].data, Data::Raw(vec![1].into()));
        assert_eq!(r.inputs[2].data, Data::Raw(vec![0x80, 0x7f].into()));
        // A prefix claiming more bytes than remain.
        let mut long = bytes_elems(&[b"hello", b"x"]);
        long[0] = 200;
        let e = parse_bin(&contract(), &header(long.len()), &long, 1 << 20)
            .expect_err("overlong")
            .to_string();
        assert!(e.contains("BYTES element 0 claims 200 bytes"), "{e}");
        // Data that ends inside a prefix.
        let cut = [bytes_elems(&[b"hello"]), vec![1, 0]].concat();
        let e = parse_bin(&contract(), &header(cut.len()), &cut, 1 << 20)
            .expect_err("cut")
            .to_string();
        assert!(e.contains("inside a 4-byte length prefix"), "{e}");
        // The right bytes but the wrong count for the shape.
        let three = bytes_elems(&[b"a", b"b", b"c"]);
        let e = parse_bin(&contract(), &header(three.len()), &three, 1 << 20)
            .expect_err("count")
            .to_string();
        assert!(
            e.contains("needs 2 BYTES elements, the data holds more"),
            "{e}"
        );
        // Binary data left over after every input took its share.
        let extra = [good.clone(), vec![0]].concat();
        let e = parse_bin(&contract(), &header(good.len()), &extra, 1 << 20)
            .expect_err("extra")
            .to_string();
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
            parse_bin(&contract(), &h, &[], 1 << 20)
        };
        assert!(bad(json!([1, 2]), json!(false)).is_ok());
        assert!(bad(json!([1, 300]), json!(false))
            .expect_err("range")
            .to_string()
            .contains("out of range for INT8"));
        assert!(bad(json!([1, 2.5]), json!(false))
            .expect_err("int")
            .to_string()
            .contains("not an integer"));
        assert!(bad(json!([1, 2]), json!(1))
            .expect_err("bool")
            .to_string()
            .contains("not a boolean"));
        assert!(
            bad(json!([[1], [2]]), json!(true)).is_ok(),
            "nested arrays are flattened"
        );
    }

    fn iris() -> Contract {
        let spec = |name: &str, dtype: DType, shape: Vec<Dim>| TensorSpec {
            name: name.into(),
            dtype,
            shape: Some(shape),
        };
        Contract {
            inputs: vec![spec(
                "x",
                DType::Float32,
                vec![Dim::Named("b".into()), Dim::Fixed(2)],
            )],
            outputs: vec![
                spec(
                    "y",
                    DType::Float32,
                    vec![Dim::Named("b".into()), Dim::Fixed(2)],
                ),
                spec("z", DType::String, vec![Dim::Named("b".into())]),
            ],
        }
    }

    fn parse(body: &str) -> Result<InferRequest, RequestError> {
        parse_bin(&iris(), body.as_bytes(), &[], 1 << 20)
    }

    #[test]
    fn requested_outputs_are_bounded_and_each_named_once() {
        let x = r#""inputs":[{"name":"x","datatype":"FP32","shape":[1,2],"data":[1,2]}]"#;
        let r = parse(&format!(
            r#"{{{x},"outputs":[{{"name":"z"}},{{"name":"y"}}]}}"#
        ))
        .expect("ok");
        assert_eq!(r.outputs, vec![(1, false), (0, false)]);
        let e = parse(&format!(
            r#"{{{x},"outputs":[{{"name":"y"}},{{"name":"y"}}]}}"#
        ))
        .expect_err("twice");
        assert!(
            e.to_string().contains("output 'y' is requested twice"),
            "{e}"
        );
        // A million entries stop at the third: nothing past the bound is stored.
        let many = vec![r#"{"name":"y"}"#; 1_000_000].join(",");
        let e = parse(&format!(r#"{{{x},"outputs":[{many}]}}"#)).expect_err("many");
        assert!(e.to_string().contains("at most 2"), "{e}");
        let many = vec![r#"{"name":"x"}"#; 1000].join(",");
        let e = parse(&format!(r#"{{"inputs":[{many}]}}"#)).expect_err("inputs");
        assert!(e.to_string().contains("at most 1"), "{e}");
    }

    #[test]
    fn values_the_tensor_cannot_hold_are_refused() {
        let one = |v: &str| {
            parse(&format!(
                r#"{{"inputs":[{{"name":"x","datatype":"FP32","shape":[1,2],"data":[1,{v}]}}]}}"#
            ))
        };
        assert!(one("3.4e38").is_ok());
        for v in ["3.5e38", "-1e39", "1e300"] {
            let e = one(v).expect_err(v).to_string();
            assert!(e.contains("out of range for FP32"), "{v}: {e}");
        }
        assert!(one("null")
            .expect_err("null")
            .to_string()
            .contains("element 1 is null"));
        // More elements than the shape: refused at the first one too many.
        let e = one("2, 3").expect_err("extra").to_string();
        assert!(e.contains("holds more than the 2 elements"), "{e}");
        let bytes = Contract {
            inputs: vec![TensorSpec {
                name: "s".into(),
                dtype: DType::String,
                shape: Some(vec![Dim::Named("n".into())]),
            }],
            outputs: vec![],
        };
        let head = |size: usize| {
            format!(
                r#"{{"inputs":[{{"name":"s","datatype":"BYTES","shape":[1],"parameters":{{"binary_data_size":{size}}}}}]}}"#
            )
        };
        for (item, why) in [(&b"a\xffb"[..], "not UTF-8"), (b"a\0b", "NUL byte")] {
            let data = bytes_elems(&[item]);
            let e = parse_bin(&bytes, head(data.len()).as_bytes(), &data, 1 << 20)
                .expect_err(why)
                .to_string();
            assert!(e.contains(why), "{e}");
        }
        let e = parse_bin(
            &bytes,
            br#"{"inputs":[{"name":"s","datatype":"BYTES","shape":[1],"data":["a\u0000"]}]}"#,
            &[],
            1 << 20,
        )
        .expect_err("json NUL");
        assert!(e.to_string().contains("NUL byte"), "{e}");
    }

    #[test]
    fn decoded_inputs_are_charged_before_they_are_decoded() {
        let bytes = Contract {
            inputs: vec![TensorSpec {
                name: "s".into(),
                dtype: DType::String,
                shape: Some(vec![Dim::Named("n".into())]),
            }],
            outputs: vec![],
        };
        // 4 M empty strings in 16 MB of binary data: 4 M x 96 bytes is far over a 64 MiB budget.
        let n = 4usize << 20;
        let data = vec![0u8; 4 * n];
        let head = format!(
            r#"{{"inputs":[{{"name":"s","datatype":"BYTES","shape":[{n}],"parameters":{{"binary_data_size":{}}}}}]}}"#,
            data.len()
        );
        let e = parse_bin(&bytes, head.as_bytes(), &data, 64 << 20).expect_err("budget");
        assert!(matches!(e, InferError::TooLarge(_)), "{e}");
        // A shape that claims far more than the body holds is refused before any allocation.
        let e = parse("{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[1000000000000,2],\"data\":[]}]}")
            .expect_err("huge");
        assert!(matches!(e, InferError::TooLarge(_)), "{e}");
    }

    #[test]
    fn responses_are_capped_while_they_are_written() {
        let y = Tensor::new(
            "y",
            DType::Float32,
            vec![1000, 2],
            Data::Raw(vec![0; 8000].into()),
        )
        .expect("t");
        let z = Tensor::new(
            "z",
            DType::String,
            vec![1000],
            Data::Strings(vec![b"ab".to_vec(); 1000]),
        )
        .expect("t");
        let who = Answering {
            model: "m",
            version: "1.0.0",
            digest: "d",
            id: None,
            degraded_request_for: None,
        };
        let outs = [y, z];
        let (body, json) =
            encode_response(&who, &outs, &[(0, false), (1, true)], 1 << 20).expect("fits");
        let header = json.expect("binary");
        let v: serde_json::Value = serde_json::from_slice(&body[..header]).expect("json");
        assert_eq!(v["outputs"][0]["data"].as_array().map(Vec::len), Some(2000));
        assert_eq!(v["outputs"][1]["parameters"]["binary_data_size"], 6000);
        assert_eq!(body.len() - header, 6000);
        assert_eq!(
            encode_response(&who, &outs, &[(0, false)], 1000),
            Err(ResponseTooLarge { json: true })
        );
        assert_eq!(
            encode_response(&who, &outs, &[(1, true)], 1000),
            Err(ResponseTooLarge { json: false })
        );
    }
}
