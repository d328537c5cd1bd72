//! Tensors as the server handles them — element type, shape, and raw little-endian bytes (or
//! byte strings for BYTES) — and their conversion to and from ONNX Runtime values, plus the
//! concatenation and split along dimension 0 that dynamic batching needs.
//!
//! Raw data is a [`Bytes`]: a front end hands the engine a slice of the request buffer it
//! received (the binary extension's tail, gRPC's `raw_input_contents`) without copying it, and
//! a batched output is split into per-request slices of one buffer.
//!
//! Invariant: a `Tensor`'s data length always matches its shape and element type (checked by
//! [`Tensor::new`]); nothing downstream re-checks it.

use airlock_signing::manifest::DType;
use bytes::Bytes;
use ort::value::{DynValue, Tensor as OrtTensor, ValueType};

/// Tensor payload.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    /// Fixed-size elements, little-endian.
    Raw(Bytes),
    /// BYTES / string elements.
    Strings(Vec<Vec<u8>>),
}

/// A named tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Name (input or output of the model).
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Shape (all dimensions known).
    pub shape: Vec<u64>,
    /// Data.
    pub data: Data,
}

/// Elements in a shape (saturating).
pub fn elements(shape: &[u64]) -> u64 {
    shape.iter().fold(1u64, |a, d| a.saturating_mul(*d))
}

impl Tensor {
    /// A tensor whose data length matches the shape, or an error that says what is off.
    pub fn new(name: &str, dtype: DType, shape: Vec<u64>, data: Data) -> Result<Self, String> {
        let n = elements(&shape);
        match (&data, dtype.size()) {
            (Data::Raw(bytes), Some(size)) => {
                let want = n.saturating_mul(size as u64);
                if bytes.len() as u64 != want {
                    return Err(format!(
                        "input '{name}': shape {shape:?} of {dtype} needs {want} bytes, got {}",
                        bytes.len()
                    ));
                }
            }
            (Data::Strings(items), None) => {
                if items.len() as u64 != n {
                    return Err(format!(
                        "input '{name}': shape {shape:?} needs {n} elements, got {}",
                        items.len()
                    ));
                }
            }
            _ => {
                return Err(format!(
                    "input '{name}': data does not suit element type {dtype}"
                ))
            }
        }
        Ok(Tensor {
            name: name.to_string(),
            dtype,
            shape,
            data,
        })
    }

    /// Rows along dimension 0 (1 for scalars).
    pub fn rows(&self) -> u64 {
        self.shape.first().copied().unwrap_or(1)
    }
}

fn chunks<const N: usize, T>(b: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
    b.chunks_exact(N)
        .map(|c| f(c.try_into().unwrap_or([0; N])))
        .collect()
}

fn bytes_of<T: Copy, const N: usize>(v: &[T], f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
    v.iter().flat_map(|x| f(*x)).collect()
}

/// Converts to an ONNX Runtime value.
pub fn to_ort(t: &Tensor) -> ort::Result<DynValue> {
    let shape: Vec<i64> = t.shape.iter().map(|d| *d as i64).collect();
    let raw = match &t.data {
        Data::Raw(b) => &b[..],
        Data::Strings(items) => {
            // The parser admits only UTF-8 without NUL (what the runtime's strings carry);
            // nothing is rewritten on the way.
            let strings = items
                .iter()
                .map(|s| String::from_utf8(s.clone()))
                .collect::<Result<Vec<String>, _>>()
                .map_err(|_| ort::Error::new("a BYTES element is not UTF-8"))?;
            return Ok(OrtTensor::from_string_array((shape, strings.as_slice()))?.into_dyn());
        }
    };
    macro_rules! mk {
        ($n:literal, $f:expr) => {
            OrtTensor::from_array((shape, chunks::<$n, _>(raw, $f)))?.into_dyn()
        };
    }
    Ok(match t.dtype {
        DType::Bool => {
            OrtTensor::from_array((shape, raw.iter().map(|b| *b != 0).collect::<Vec<bool>>()))?
                .into_dyn()
        }
        DType::Int8 => mk!(1, i8::from_le_bytes),
        DType::Uint8 => mk!(1, u8::from_le_bytes),
        DType::Int16 => mk!(2, i16::from_le_bytes),
        DType::Uint16 => mk!(2, u16::from_le_bytes),
        DType::Int32 => mk!(4, i32::from_le_bytes),
        DType::Uint32 => mk!(4, u32::from_le_bytes),
        DType::Int64 => mk!(8, i64::from_le_bytes),
        DType::Uint64 => mk!(8, u64::from_le_bytes),
        DType::Float16 => mk!(2, half::f16::from_le_bytes),
        DType::Bfloat16 => mk!(2, half::bf16::from_le_bytes),
        DType::Float32 => mk!(4, f32::from_le_bytes),
        DType::Float64 => mk!(8, f64::from_le_bytes),
        DType::String => unreachable!("strings are handled above"),
    })
}

/// Converts an output value back.
pub fn from_ort(name: &str, v: &DynValue) -> Result<Tensor, String> {
    let ValueType::Tensor { ty, .. } = v.dtype() else {
        return Err(format!("output '{name}' is not a tensor"));
    };
    let dtype = crate::datatype::from_ort(*ty)
        .ok_or_else(|| format!("output '{name}' has unsupported element type {ty:?}"))?;
    let err = |e: ort::Error| format!("output '{name}': {e}");
    macro_rules! ex {
        ($t:ty, $f:expr) => {{
            let (shape, data) = v.try_extract_tensor::<$t>().map_err(err)?;
            (
                shape.iter().map(|d| *d as u64).collect::<Vec<u64>>(),
                Data::Raw(bytes_of(data, $f).into()),
            )
        }};
    }
    let (shape, data) = match dtype {
        DType::Bool => {
            let (shape, data) = v.try_extract_tensor::<bool>().map_err(err)?;
            (
                shape.iter().map(|d| *d as u64).collect(),
                Data::Raw(data.iter().map(|b| *b as u8).collect::<Vec<u8>>().into()),
            )
        }
        DType::Int8 => ex!(i8, i8::to_le_bytes),
        DType::Uint8 => ex!(u8, u8::to_le_bytes),
        DType::Int16 => ex!(i16, i16::to_le_bytes),
        DType::Uint16 => ex!(u16, u16::to_le_bytes),
        DType::Int32 => ex!(i32, i32::to_le_bytes),
        DType::Uint32 => ex!(u32, u32::to_le_bytes),
        DType::Int64 => ex!(i64, i64::to_le_bytes),
        DType::Uint64 => ex!(u64, u64::to_le_bytes),
        DType::Float16 => ex!(half::f16, half::f16::to_le_bytes),
        DType::Bfloat16 => ex!(half::bf16, half::bf16::to_le_bytes),
        DType::Float32 => ex!(f32, f32::to_le_bytes),
        DType::Float64 => ex!(f64, f64::to_le_bytes),
        DType::String => {
            let (shape, strings) = v.try_extract_strings().map_err(err)?;
            (
                shape.iter().map(|d| *d as u64).collect(),
                Data::Strings(strings.into_iter().map(String::into_bytes).collect()),
            )
        }
    };
    Tensor::new(name, dtype, shape, data)
}

/// Concatenates same-named tensors of several requests along dimension 0.
pub fn concat(parts: &[&Tensor]) -> Result<Tensor, String> {
    let first = parts.first().ok_or("nothing to concatenate")?;
    let rows: u64 = parts.iter().map(|t| t.rows()).sum();
    let mut shape = first.shape.clone();
    if shape.is_empty() {
        return Err(format!(
            "'{}' is a scalar and cannot be batched",
            first.name
        ));
    }
    shape[0] = rows;
    let data = match &first.data {
        Data::Raw(_) => {
            let mut all = Vec::with_capacity(
                parts
                    .iter()
                    .map(|t| match &t.data {
                        Data::Raw(b) => b.len(),
                        Data::Strings(_) => 0,
                    })
                    .sum(),
            );
            for t in parts {
                if let Data::Raw(b) = &t.data {
                    all.extend_from_slice(b);
                }
            }
            Data::Raw(all.into())
        }
        Data::Strings(_) => Data::Strings(
            parts
                .iter()
                .flat_map(|t| match &t.data {
                    Data::Strings(s) => s.clone(),
                    Data::Raw(_) => Vec::new(),
                })
                .collect(),
        ),
    };
    Tensor::new(&first.name, first.dtype, shape, data)
}

/// Splits a batched output back into per-request tensors with `rows[i]` rows each.
pub fn split(t: &Tensor, rows: &[u64]) -> Result<Vec<Tensor>, String> {
    let total: u64 = rows.iter().sum();
    if t.shape.first() != Some(&total) {
        return Err(format!(
            "output '{}' has shape {:?}; a batch of {total} rows was expected along dimension 0",
            t.name, t.shape
        ));
    }
    let per_row = elements(&t.shape[1..]) as usize;
    let mut out = Vec::with_capacity(rows.len());
    let mut at = 0usize;
    for r in rows {
        let n = per_row * *r as usize;
        let mut shape = t.shape.clone();
        shape[0] = *r;
        let data = match &t.data {
            Data::Raw(b) => {
                let size = t.dtype.size().unwrap_or(1);
                Data::Raw(b.slice(at * size..(at + n) * size))
            }
            Data::Strings(s) => Data::Strings(s[at..at + n].to_vec()),
        };
        out.push(Tensor::new(&t.name, t.dtype, shape, data)?);
        at += n;
    }
    Ok(out)
}
