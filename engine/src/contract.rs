//! The input contract, checked the same way whatever the wire format: a front end declares
//! each input it received (name, datatype, shape) before decoding its data, and gets back the
//! model's inputs in the contract's order. Every refusal names the input and the reason.
//!
//! Invariant: every tensor that reaches the engine matches the contract (name, element type,
//! rank, fixed dimensions, byte length), and what a request's inputs take once decoded is
//! charged against the budget before they are decoded.

use airlock_signing::manifest::{Contract, DType, Dim, TensorSpec};

use crate::datatype;
use crate::error::InferError;
use crate::tensor::{elements, Data, Tensor};

/// What one BYTES element costs beyond its bytes, all the way to ONNX Runtime: our vector
/// header, the runtime's string and its pointer, allocator overhead.
pub const BYTES_ELEMENT_COST: u64 = 96;

/// Most dimensions an input may have.
pub const MAX_RANK: usize = 64;

fn bad(m: impl Into<String>) -> InferError {
    InferError::BadRequest(m.into())
}

/// One declared input: where it goes and how many elements its data must hold.
#[derive(Debug)]
pub struct Declared {
    index: usize,
    /// The input's element type.
    pub dtype: DType,
    /// Its shape.
    pub shape: Vec<u64>,
    /// Elements its data must hold.
    pub elements: u64,
}

impl Declared {
    /// Bytes its raw data must hold (`None` for BYTES).
    pub fn raw_len(&self) -> Option<u64> {
        self.dtype
            .size()
            .map(|s| self.elements.saturating_mul(s as u64))
    }
}

/// A request's inputs being assembled against a contract.
pub struct Inputs<'c> {
    contract: &'c Contract,
    got: Vec<Option<Tensor>>,
    spent: u64,
    budget: u64,
}

impl<'c> Inputs<'c> {
    /// Inputs of at most `budget` bytes once decoded (BYTES elements at their length plus
    /// [`BYTES_ELEMENT_COST`]).
    pub fn new(contract: &'c Contract, budget: u64) -> Inputs<'c> {
        Inputs {
            contract,
            got: contract.inputs.iter().map(|_| None).collect(),
            spent: 0,
            budget,
        }
    }

    /// The model's input names, for messages.
    fn names(&self) -> String {
        names(&self.contract.inputs)
    }

    /// The spec of the input named `name`: refused when the model has none of that name or it
    /// was given already.
    pub fn expect(&self, name: &str) -> Result<&'c TensorSpec, InferError> {
        self.position(name).map(|i| &self.contract.inputs[i])
    }

    fn position(&self, name: &str) -> Result<usize, InferError> {
        let index = self
            .contract
            .inputs
            .iter()
            .position(|s| s.name == name)
            .ok_or_else(|| {
                bad(format!(
                    "unexpected input '{}' (the model's inputs: {})",
                    name.escape_debug(),
                    self.names()
                ))
            })?;
        if self.got[index].is_some() {
            return Err(bad(format!(
                "input '{}' is given twice",
                self.contract.inputs[index].name
            )));
        }
        Ok(index)
    }

    /// Checks an input's name, datatype (the protocol's name, e.g. `FP32`) and shape against
    /// the contract and charges what its data will take once decoded.
    pub fn declare(
        &mut self,
        name: &str,
        datatype: &str,
        shape: &[u64],
    ) -> Result<Declared, InferError> {
        let index = self.position(name)?;
        let spec = &self.contract.inputs[index];
        let name = spec.name.as_str();
        let want = datatype::v2_name(spec.dtype);
        if datatype != want {
            return Err(bad(format!(
                "input '{name}': datatype {}, the model expects {want}",
                datatype.escape_debug(),
            )));
        }
        if shape.len() > MAX_RANK {
            return Err(bad(format!(
                "input '{name}': shape must hold non-negative integers (at most {MAX_RANK})"
            )));
        }
        check_shape(spec, shape)?;
        let n = elements(shape);
        let cost = match spec.dtype.size() {
            Some(size) => n.saturating_mul(size as u64),
            None => n.saturating_mul(BYTES_ELEMENT_COST),
        };
        self.spent = self.spent.saturating_add(cost);
        if self.spent > self.budget {
            return Err(InferError::TooLarge(format!(
                "input '{name}': shape {shape:?} of {want} takes {cost} bytes or more once decoded; a request's inputs may take at most {}",
                self.budget
            )));
        }
        Ok(Declared {
            index,
            dtype: spec.dtype,
            shape: shape.to_vec(),
            elements: n,
        })
    }

    /// Charges the text of an input's BYTES elements (beyond their per-element cost); over the
    /// budget, `TooLarge` with the message `why(budget)` makes (the wire format says best what
    /// it was given).
    pub fn charge_text(
        &mut self,
        bytes: u64,
        why: impl FnOnce(u64) -> String,
    ) -> Result<(), InferError> {
        self.spent = self.spent.saturating_add(bytes);
        if self.spent > self.budget {
            return Err(InferError::TooLarge(why(self.budget)));
        }
        Ok(())
    }

    /// Gives a declared input its data (checked against its shape and element type).
    pub fn put(&mut self, d: Declared, data: Data) -> Result<(), InferError> {
        let spec = &self.contract.inputs[d.index];
        if self.got[d.index].is_some() {
            return Err(bad(format!("input '{}' is given twice", spec.name)));
        }
        let t = Tensor::new(&spec.name, d.dtype, d.shape, data).map_err(InferError::BadRequest)?;
        self.got[d.index] = Some(t);
        Ok(())
    }

    /// The inputs in the contract's order; a missing one is named.
    pub fn finish(self) -> Result<Vec<Tensor>, InferError> {
        let contract = self.contract;
        self.got
            .into_iter()
            .zip(&contract.inputs)
            .map(|(t, s)| t.ok_or_else(|| bad(format!("input '{}' is missing", s.name))))
            .collect()
    }
}

fn names(specs: &[TensorSpec]) -> String {
    specs
        .iter()
        .map(|s| s.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The index of a requested output, or an error naming the model's outputs.
pub fn output_index(c: &Contract, name: &str) -> Result<usize, InferError> {
    c.outputs
        .iter()
        .position(|s| s.name == name)
        .ok_or_else(|| {
            bad(format!(
                "unknown output '{}' requested (the model's outputs: {})",
                name.escape_debug(),
                names(&c.outputs)
            ))
        })
}

/// Checks a shape's rank and fixed dimensions against an input's spec.
pub fn check_shape(spec: &TensorSpec, shape: &[u64]) -> Result<(), InferError> {
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

/// Checks one BYTES element: UTF-8 without NUL, what ONNX Runtime's strings carry.
pub fn check_string(name: &str, i: usize, item: &[u8]) -> Result<(), InferError> {
    match std::str::from_utf8(item) {
        Err(e) => Err(bad(format!(
            "input '{name}': BYTES element {i} is not UTF-8 (at byte {}); ONNX Runtime's strings carry UTF-8 text only",
            e.valid_up_to()
        ))),
        Ok(s) if s.contains('\0') => Err(bad(format!(
            "input '{name}': BYTES element {i} holds a NUL byte, which ONNX Runtime's strings cannot carry"
        ))),
        Ok(_) => Ok(()),
    }
}

/// Splits serialized BYTES data (the binary extension's and gRPC's raw form): each element is
/// a 4-byte little-endian length and that many bytes. More elements than the shape needs are
/// refused as soon as they are seen.
pub fn bytes_elements(name: &str, mut b: &[u8], count: u64) -> Result<Data, InferError> {
    let mut items = Vec::new();
    while !b.is_empty() {
        if b.len() < 4 {
            return Err(bad(format!(
                "input '{name}': BYTES data ends inside a 4-byte length prefix"
            )));
        }
        let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        b = &b[4..];
        let i = items.len();
        if len > b.len() {
            return Err(bad(format!(
                "input '{name}': BYTES element {i} claims {len} bytes but only {} remain",
                b.len()
            )));
        }
        if i as u64 >= count {
            return Err(bad(format!(
                "input '{name}': shape needs {count} BYTES elements, the data holds more"
            )));
        }
        let item = &b[..len];
        check_string(name, i, item)?;
        items.push(item.to_vec());
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

/// Serializes BYTES elements in the raw form [`bytes_elements`] reads.
pub fn write_bytes_elements(items: &[Vec<u8>], out: &mut Vec<u8>) {
    for s in items {
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s);
    }
}

/// Shape as metadata shows it (-1 for dynamic dimensions).
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

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, dtype: DType, shape: Vec<Dim>) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            dtype,
            shape: Some(shape),
        }
    }

    fn contract() -> Contract {
        Contract {
            inputs: vec![
                spec(
                    "x",
                    DType::Float32,
                    vec![Dim::Named("b".into()), Dim::Fixed(2)],
                ),
                spec("s", DType::String, vec![Dim::Named("b".into())]),
            ],
            outputs: vec![spec("y", DType::Float32, vec![Dim::Named("b".into())])],
        }
    }

    #[test]
    fn inputs_are_checked_named_and_put_in_the_contracts_order() {
        let c = contract();
        let mut i = Inputs::new(&c, 1 << 20);
        let e = i.declare("z", "FP32", &[1, 2]).expect_err("unknown");
        assert!(
            e.to_string()
                .contains("unexpected input 'z' (the model's inputs: x, s)"),
            "{e}"
        );
        let e = i.declare("x", "FP64", &[1, 2]).expect_err("datatype");
        assert_eq!(
            e.to_string(),
            "input 'x': datatype FP64, the model expects FP32"
        );
        let e = i.declare("x", "FP32", &[1, 3]).expect_err("fixed dim");
        assert!(
            e.to_string()
                .starts_with("input 'x': dimension 1 is 3, the model expects 2"),
            "{e}"
        );
        let e = i.declare("x", "FP32", &[2]).expect_err("rank");
        assert!(
            e.to_string()
                .contains("has 1 dimensions, the model expects 2"),
            "{e}"
        );
        let s = i.declare("s", "BYTES", &[2]).expect("s");
        i.put(
            s,
            bytes_elements("s", b"\x01\0\0\0a\x02\0\0\0bc", 2).expect("bytes"),
        )
        .expect("put");
        let e = i.declare("s", "BYTES", &[2]).expect_err("twice");
        assert_eq!(e.to_string(), "input 's' is given twice");
        let x = i.declare("x", "FP32", &[1, 2]).expect("x");
        assert_eq!(x.raw_len(), Some(8));
        let e = i
            .put(x, Data::Raw(vec![0u8; 4].into()))
            .expect_err("short data");
        assert!(e.to_string().contains("needs 8 bytes, got 4"), "{e}");
        let mut i = Inputs::new(&c, 1 << 20);
        let x = i.declare("x", "FP32", &[1, 2]).expect("x");
        i.put(x, Data::Raw(vec![0u8; 8].into())).expect("put");
        let e = i.finish().expect_err("missing");
        assert_eq!(e.to_string(), "input 's' is missing");
    }

    #[test]
    fn what_inputs_take_once_decoded_is_charged_before_decoding() {
        let c = contract();
        let mut i = Inputs::new(&c, 1000);
        let e = i.declare("x", "FP32", &[126, 2]).expect_err("over");
        assert_eq!(e.kind(), "too_large");
        let mut i = Inputs::new(&c, 1000);
        let s = i.declare("s", "BYTES", &[10]).expect("960 bytes");
        assert_eq!(s.elements, 10);
        let e = i
            .charge_text(41, |b| format!("over {b}"))
            .expect_err("over");
        assert_eq!(
            (e.kind(), e.to_string().as_str()),
            ("too_large", "over 1000")
        );
    }

    #[test]
    fn bytes_elements_are_bounded_by_the_shape_and_must_be_text() {
        assert!(bytes_elements("s", b"\x01\0\0", 1).is_err());
        assert!(bytes_elements("s", b"\x09\0\0\0abc", 1).is_err());
        assert!(bytes_elements("s", b"\x01\0\0\0a\x01\0\0\0b", 1)
            .expect_err("more")
            .to_string()
            .contains("the data holds more"));
        assert!(bytes_elements("s", b"\x01\0\0\0\xff", 1)
            .expect_err("utf8")
            .to_string()
            .contains("not UTF-8"));
        assert!(bytes_elements("s", b"\x01\0\0\0\0", 1)
            .expect_err("nul")
            .to_string()
            .contains("NUL"));
        let mut out = Vec::new();
        write_bytes_elements(&[b"ab".to_vec(), Vec::new()], &mut out);
        assert_eq!(
            bytes_elements("s", &out, 2).expect("round trip"),
            Data::Strings(vec![b"ab".to_vec(), Vec::new()])
        );
        assert_eq!(output_index(&contract(), "y").expect("y"), 0);
        assert!(output_index(&contract(), "q").is_err());
    }
}
