//! Reading a model's I/O contract from an `.onnx` file, and building small ONNX models (the
//! demo model and test fixtures).
//!
//! The message types below are the subset of `onnx.proto` (ONNX IR, proto2 wire format) that
//! airlock needs, written as `prost` derives with the field numbers of the official schema;
//! `prost` skips every field not declared here. Weights (`TensorProto.raw_data`) decode as
//! `Bytes` slices of the input buffer, so a large embedded-weights model is not copied.
//! Invariant: graph inputs that are initializers are weights, not part of the contract.

use std::collections::BTreeSet;

use prost::bytes::Bytes;
use prost::Message;

use crate::error::{Error, Result};
use crate::manifest::{Contract, DType, Dim, TensorSpec};

#[allow(missing_docs)]
pub mod proto {
    //! `onnx.proto` messages (subset; field numbers as in onnx/onnx.proto).
    use prost::bytes::Bytes;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelProto {
        #[prost(int64, tag = "1")]
        pub ir_version: i64,
        #[prost(string, tag = "2")]
        pub producer_name: String,
        #[prost(message, optional, tag = "7")]
        pub graph: Option<GraphProto>,
        #[prost(message, repeated, tag = "8")]
        pub opset_import: Vec<OperatorSetIdProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct OperatorSetIdProto {
        #[prost(string, tag = "1")]
        pub domain: String,
        #[prost(int64, tag = "2")]
        pub version: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GraphProto {
        #[prost(message, repeated, tag = "1")]
        pub node: Vec<NodeProto>,
        #[prost(string, tag = "2")]
        pub name: String,
        #[prost(message, repeated, tag = "5")]
        pub initializer: Vec<TensorProto>,
        #[prost(message, repeated, tag = "11")]
        pub input: Vec<ValueInfoProto>,
        #[prost(message, repeated, tag = "12")]
        pub output: Vec<ValueInfoProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NodeProto {
        #[prost(string, repeated, tag = "1")]
        pub input: Vec<String>,
        #[prost(string, repeated, tag = "2")]
        pub output: Vec<String>,
        #[prost(string, tag = "3")]
        pub name: String,
        #[prost(string, tag = "4")]
        pub op_type: String,
        #[prost(message, repeated, tag = "5")]
        pub attribute: Vec<AttributeProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AttributeProto {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(float, tag = "2")]
        pub f: f32,
        #[prost(int64, tag = "3")]
        pub i: i64,
        /// A subgraph (`Loop`'s body).
        #[prost(message, optional, tag = "6")]
        pub g: Option<GraphProto>,
        /// AttributeType: FLOAT = 1, INT = 2, GRAPH = 5.
        #[prost(int32, tag = "20")]
        pub r#type: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StringStringEntryProto {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorProto {
        #[prost(int64, repeated, tag = "1")]
        pub dims: Vec<i64>,
        #[prost(int32, tag = "2")]
        pub data_type: i32,
        #[prost(string, tag = "8")]
        pub name: String,
        #[prost(bytes = "bytes", tag = "9")]
        pub raw_data: Bytes,
        #[prost(message, repeated, tag = "13")]
        pub external_data: Vec<StringStringEntryProto>,
        /// DataLocation: DEFAULT = 0, EXTERNAL = 1.
        #[prost(int32, tag = "14")]
        pub data_location: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueInfoProto {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, optional, tag = "2")]
        pub r#type: Option<TypeProto>,
    }

    /// `TypeProto`'s `value` oneof, with each alternative as its own optional field.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TypeProto {
        #[prost(message, optional, tag = "1")]
        pub tensor_type: Option<TypeTensor>,
        #[prost(message, optional, tag = "4")]
        pub sequence_type: Option<Opaque>,
        #[prost(message, optional, tag = "5")]
        pub map_type: Option<Opaque>,
        #[prost(message, optional, tag = "8")]
        pub sparse_tensor_type: Option<Opaque>,
        #[prost(message, optional, tag = "9")]
        pub optional_type: Option<Opaque>,
    }

    /// A message whose content airlock does not need.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Opaque {}

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TypeTensor {
        #[prost(int32, tag = "1")]
        pub elem_type: i32,
        #[prost(message, optional, tag = "2")]
        pub shape: Option<TensorShapeProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorShapeProto {
        #[prost(message, repeated, tag = "1")]
        pub dim: Vec<Dimension>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Dimension {
        #[prost(int64, optional, tag = "1")]
        pub dim_value: Option<i64>,
        #[prost(string, optional, tag = "2")]
        pub dim_param: Option<String>,
    }
}

use proto::*;

/// What `bundle create` learns from an `.onnx` file.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    /// The I/O contract.
    pub contract: Contract,
    /// Relative locations of external-data files the graph references.
    pub external_data: BTreeSet<String>,
}

fn spec_of(what: &str, v: &ValueInfoProto) -> Result<TensorSpec> {
    let bad = |m: String| Error::Input(format!("model {what} {:?}: {m}", v.name));
    let t = v.r#type.as_ref().ok_or_else(|| bad("has no type".into()))?;
    let tt = t.tensor_type.as_ref().ok_or_else(|| {
        bad(
            "is not a dense tensor (sequence, map, optional and sparse values are not served)"
                .into(),
        )
    })?;
    let dtype = DType::from_onnx(tt.elem_type)
        .ok_or_else(|| bad(format!("element type {} is not supported", tt.elem_type)))?;
    let shape = tt.shape.as_ref().map(|s| {
        s.dim
            .iter()
            .map(|d| match (d.dim_value, &d.dim_param) {
                (Some(n), _) if n >= 0 => Dim::Fixed(n as u64),
                (_, Some(p)) if !p.is_empty() => Dim::Named(p.clone()),
                _ => Dim::Any(()),
            })
            .collect()
    });
    Ok(TensorSpec {
        name: v.name.clone(),
        dtype,
        shape,
    })
}

/// Decodes an `.onnx` file and reads its contract and external-data references.
pub fn read_model_info(bytes: Vec<u8>) -> Result<ModelInfo> {
    let model = ModelProto::decode(Bytes::from(bytes))
        .map_err(|e| Error::Input(format!("not an ONNX model (protobuf decode failed: {e})")))?;
    let graph = model
        .graph
        .ok_or_else(|| Error::Input("ONNX model has no graph".into()))?;
    let weights: BTreeSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs = graph
        .input
        .iter()
        .filter(|v| !weights.contains(v.name.as_str()))
        .map(|v| spec_of("input", v))
        .collect::<Result<Vec<_>>>()?;
    let outputs = graph
        .output
        .iter()
        .map(|v| spec_of("output", v))
        .collect::<Result<Vec<_>>>()?;
    if inputs.is_empty() || outputs.is_empty() {
        return Err(Error::Input(
            "ONNX graph needs at least one input and one output".into(),
        ));
    }
    let mut external_data = BTreeSet::new();
    for t in &graph.initializer {
        if t.data_location == 1 {
            let loc = t
                .external_data
                .iter()
                .find(|e| e.key == "location")
                .ok_or_else(|| {
                    Error::Input(format!(
                        "initializer {:?} is external but has no location",
                        t.name
                    ))
                })?;
            external_data.insert(loc.value.clone());
        }
    }
    Ok(ModelInfo {
        contract: Contract { inputs, outputs },
        external_data,
    })
}

/// An opset-13, IR-8 model around `graph`, encoded.
fn opset13_model(graph: GraphProto) -> Vec<u8> {
    ModelProto {
        ir_version: 8,
        producer_name: "airlock".into(),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        graph: Some(graph),
    }
    .encode_to_vec()
}

/// A float32 tensor initializer with inline data.
pub fn f32_tensor(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
    TensorProto {
        dims: dims.to_vec(),
        data_type: 1,
        name: name.into(),
        raw_data: values
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>()
            .into(),
        ..Default::default()
    }
}

/// A float32 tensor value description with the given dims (`None` = named dynamic dim).
pub fn f32_value(name: &str, dims: &[Result<i64, &str>]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeTensor {
                elem_type: 1,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| match d {
                            Ok(n) => Dimension {
                                dim_value: Some(*n),
                                dim_param: None,
                            },
                            Err(p) => Dimension {
                                dim_value: None,
                                dim_param: Some((*p).into()),
                            },
                        })
                        .collect(),
                }),
            }),
            ..Default::default()
        }),
    }
}

/// A tensor value description of element type `elem` (ONNX codes: 1 float, 7 int64, 9 bool).
fn typed_value(name: &str, elem: i32, dims: &[Result<i64, &str>]) -> ValueInfoProto {
    let mut v = f32_value(name, dims);
    if let Some(t) = v.r#type.as_mut().and_then(|t| t.tensor_type.as_mut()) {
        t.elem_type = elem;
    }
    v
}

fn scalar(name: &str, data_type: i32, raw: Vec<u8>) -> TensorProto {
    TensorProto {
        dims: vec![],
        data_type,
        name: name.into(),
        raw_data: raw.into(),
        ..Default::default()
    }
}

fn identity(i: &str, o: &str) -> NodeProto {
    NodeProto {
        input: vec![i.into()],
        output: vec![o.into()],
        name: format!("Identity_{o}"),
        op_type: "Identity".into(),
        attribute: vec![],
    }
}

/// A hostile but valid model: `y = x` after a `Loop` of `trips` iterations (x float32[batch, 4]
/// → y float32[batch, 4]). With a trip count of 10¹² it never finishes — what validation must
/// survive.
pub fn endless_loop(trips: i64) -> Vec<u8> {
    let body = GraphProto {
        name: "body".into(),
        node: vec![identity("cond_in", "cond_out"), identity("x_in", "x_out")],
        initializer: vec![],
        input: vec![
            typed_value("i", 7, &[]),
            typed_value("cond_in", 9, &[]),
            f32_value("x_in", &[Err("batch"), Ok(4)]),
        ],
        output: vec![
            typed_value("cond_out", 9, &[]),
            f32_value("x_out", &[Err("batch"), Ok(4)]),
        ],
    };
    opset13_model(GraphProto {
        name: "endless_loop".into(),
        node: vec![NodeProto {
            input: vec!["M".into(), "cond".into(), "x".into()],
            output: vec!["y".into()],
            name: "Loop_0".into(),
            op_type: "Loop".into(),
            attribute: vec![AttributeProto {
                name: "body".into(),
                g: Some(body),
                r#type: 5,
                ..Default::default()
            }],
        }],
        initializer: vec![
            scalar("M", 7, trips.to_le_bytes().to_vec()),
            scalar("cond", 9, vec![1]),
        ],
        input: vec![f32_value("x", &[Err("batch"), Ok(4)])],
        output: vec![f32_value("y", &[Err("batch"), Ok(4)])],
    })
}

/// A hostile but valid model whose output is `x` expanded to `rows` × 4 floats (x float32[1, 4]
/// → y float32[n, 4]): a run allocates `rows * 16` bytes, far past what validation allows.
pub fn memory_hog(rows: i64) -> Vec<u8> {
    let shape: Vec<u8> = [rows, 4].iter().flat_map(|v| v.to_le_bytes()).collect();
    opset13_model(GraphProto {
        name: "memory_hog".into(),
        node: vec![NodeProto {
            input: vec!["x".into(), "shape".into()],
            output: vec!["y".into()],
            name: "Expand_0".into(),
            op_type: "Expand".into(),
            attribute: vec![],
        }],
        initializer: vec![TensorProto {
            dims: vec![2],
            data_type: 7,
            name: "shape".into(),
            raw_data: shape.into(),
            ..Default::default()
        }],
        input: vec![f32_value("x", &[Ok(1), Ok(4)])],
        output: vec![f32_value("y", &[Err("n"), Ok(4)])],
    })
}

/// A string tensor value description (`elem_type` STRING) with one named dynamic dimension.
fn string_value(name: &str, dim: &str) -> ValueInfoProto {
    let mut v = f32_value(name, &[Err(dim)]);
    if let Some(t) = v.r#type.as_mut().and_then(|t| t.tensor_type.as_mut()) {
        t.elem_type = 8;
    }
    v
}

/// A model that answers its BYTES input unchanged (`Identity` over string[n]): a fixture for
/// string tensors end to end.
pub fn string_identity() -> Vec<u8> {
    opset13_model(GraphProto {
        name: "string_identity".into(),
        node: vec![NodeProto {
            input: vec!["s".into()],
            output: vec!["t".into()],
            name: "Identity_0".into(),
            op_type: "Identity".into(),
            attribute: vec![],
        }],
        initializer: vec![],
        input: vec![string_value("s", "n")],
        output: vec![string_value("t", "n")],
    })
}

/// The element types [`every_type_identity`] carries: (ONNX element code, the suffix of its
/// tensors' names — the Open Inference Protocol name in lower case).
pub const EVERY_TYPE: [(i32, &str); 14] = [
    (9, "bool"),
    (2, "uint8"),
    (4, "uint16"),
    (12, "uint32"),
    (13, "uint64"),
    (3, "int8"),
    (5, "int16"),
    (6, "int32"),
    (7, "int64"),
    (10, "fp16"),
    (1, "fp32"),
    (11, "fp64"),
    (16, "bf16"),
    (8, "bytes"),
];

/// A model that answers each input unchanged: for every element type airlock serves, an input
/// `x_NAME` of shape [batch, 2] and an output `y_NAME = Identity(x_NAME)` (`NAME` as in
/// [`EVERY_TYPE`]) — a fixture for every datatype end to end, over every protocol.
pub fn every_type_identity() -> Vec<u8> {
    let dims = [Err("batch"), Ok(2)];
    opset13_model(GraphProto {
        name: "every_type_identity".into(),
        node: EVERY_TYPE
            .iter()
            .map(|(_, n)| identity(&format!("x_{n}"), &format!("y_{n}")))
            .collect(),
        initializer: vec![],
        input: EVERY_TYPE
            .iter()
            .map(|(c, n)| typed_value(&format!("x_{n}"), *c, &dims))
            .collect(),
        output: EVERY_TYPE
            .iter()
            .map(|(c, n)| typed_value(&format!("y_{n}"), *c, &dims))
            .collect(),
    })
}

/// The demo model: a linear classifier `y = softmax(x · W + b)` over 4 features and 3 classes,
/// with a dynamic batch dimension. Runs on any ONNX Runtime (opset 13).
pub fn linear_classifier(weights: &[f32; 12], bias: &[f32; 3]) -> Vec<u8> {
    let node = |op: &str, i: &[&str], o: &str, attrs: Vec<AttributeProto>| NodeProto {
        input: i.iter().map(|s| s.to_string()).collect(),
        output: vec![o.into()],
        name: format!("{op}_0"),
        op_type: op.into(),
        attribute: attrs,
    };
    opset13_model(GraphProto {
        name: "linear_classifier".into(),
        node: vec![
            node("Gemm", &["x", "W", "b"], "logits", vec![]),
            node(
                "Softmax",
                &["logits"],
                "y",
                vec![AttributeProto {
                    name: "axis".into(),
                    i: 1,
                    r#type: 2,
                    ..Default::default()
                }],
            ),
        ],
        initializer: vec![
            f32_tensor("W", &[4, 3], weights),
            f32_tensor("b", &[3], bias),
        ],
        input: vec![f32_value("x", &[Err("batch"), Ok(4)])],
        output: vec![f32_value("y", &[Err("batch"), Ok(3)])],
    })
}

/// A well-formed ONNX file whose one node uses an operator no runtime has (`NoSuchOp`): its
/// contract reads fine (x float32[batch, 4] → y float32[batch, 3]) but ONNX Runtime refuses to
/// load it. A test fixture for "validation on the real runtime catches what parsing cannot".
pub fn unknown_op_model() -> Vec<u8> {
    opset13_model(GraphProto {
        name: "unloadable".into(),
        node: vec![NodeProto {
            input: vec!["x".into()],
            output: vec!["y".into()],
            name: "NoSuchOp_0".into(),
            op_type: "NoSuchOp".into(),
            attribute: vec![],
        }],
        initializer: vec![],
        input: vec![f32_value("x", &[Err("batch"), Ok(4)])],
        output: vec![f32_value("y", &[Err("batch"), Ok(3)])],
    })
}

/// Evaluates [`linear_classifier`] in plain Rust (to write golden vectors the model must match).
pub fn linear_classifier_eval(weights: &[f32; 12], bias: &[f32; 3], x: &[f32]) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len() / 4 * 3);
    for row in x.chunks(4) {
        let logits: Vec<f32> = (0..3)
            .map(|c| bias[c] + (0..4).map(|k| row[k] * weights[k * 3 + c]).sum::<f32>())
            .collect();
        let max = logits.iter().copied().fold(f32::MIN, f32::max);
        let exps: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
        let sum: f32 = exps.iter().sum();
        out.extend(exps.iter().map(|e| e / sum));
    }
    out
}

/// A stack of `MatMul` + `Relu` layers, `x: float32[batch, in_dim]` → `y: float32[batch, last
/// width]`, with deterministic pseudo-random weights (scaled by 1/sqrt(fan-in)). Used by the
/// serving benchmark (compute-bound and tiny models).
pub fn dense_relu(in_dim: i64, widths: &[i64], seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    };
    let (mut nodes, mut inits) = (Vec::new(), Vec::new());
    let (mut prev, mut fan_in) = ("x".to_string(), in_dim);
    for (i, w) in widths.iter().enumerate() {
        let scale = 1.0 / (fan_in as f32).sqrt();
        let values: Vec<f32> = (0..fan_in * w).map(|_| next() * scale).collect();
        inits.push(f32_tensor(&format!("W{i}"), &[fan_in, *w], &values));
        let (mm, out) = (
            format!("mm{i}"),
            if i + 1 == widths.len() {
                "y".to_string()
            } else {
                format!("h{i}")
            },
        );
        for (op, ins, o) in [
            ("MatMul", vec![prev.clone(), format!("W{i}")], mm.clone()),
            ("Relu", vec![mm.clone()], out.clone()),
        ] {
            nodes.push(NodeProto {
                input: ins,
                output: vec![o],
                name: format!("{op}_{i}"),
                op_type: op.into(),
                attribute: vec![],
            });
        }
        prev = out;
        fan_in = *w;
    }
    opset13_model(GraphProto {
        name: "dense_relu".into(),
        node: nodes,
        initializer: inits,
        input: vec![f32_value("x", &[Err("batch"), Ok(in_dim)])],
        output: vec![f32_value("y", &[Err("batch"), Ok(fan_in)])],
    })
}

/// Weights of the demo classifier.
pub const DEMO_WEIGHTS: [f32; 12] = [
    0.9, -0.4, 0.1, -0.3, 0.8, 0.2, 0.5, 0.1, -0.7, -0.2, 0.3, 0.6,
];
/// Bias of the demo classifier.
pub const DEMO_BIAS: [f32; 3] = [0.05, -0.1, 0.02];
/// The demo's golden input: two rows of four features.
pub const DEMO_INPUT: [f32; 8] = [5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3];

/// The demo model and its golden vector as files: (`model.onnx`, input `x.npy`, expected `y.npy`).
pub fn demo_files() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let model = linear_classifier(&DEMO_WEIGHTS, &DEMO_BIAS);
    let expected = linear_classifier_eval(&DEMO_WEIGHTS, &DEMO_BIAS, &DEMO_INPUT);
    let x = crate::npy::encode(DType::Float32, 0, &[2, 4], &f32s(&DEMO_INPUT)).unwrap_or_default();
    let y = crate::npy::encode(DType::Float32, 0, &[2, 3], &f32s(&expected)).unwrap_or_default();
    (model, x, y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_of_the_demo_model() {
        let bytes = linear_classifier(&[0.5; 12], &[0.1, 0.2, 0.3]);
        let info = read_model_info(bytes).expect("parse");
        assert_eq!(
            info.contract.inputs.len(),
            1,
            "initializers W and b are not inputs"
        );
        assert_eq!(info.contract.inputs[0].describe(), "float32[batch, 4]");
        assert_eq!(info.contract.outputs[0].describe(), "float32[batch, 3]");
        assert!(info.external_data.is_empty());
    }

    #[test]
    fn external_data_is_found_and_garbage_refused() {
        let mut g = GraphProto {
            input: vec![f32_value("x", &[Ok(1)])],
            output: vec![f32_value("y", &[Ok(1)])],
            ..Default::default()
        };
        g.initializer.push(TensorProto {
            name: "w".into(),
            data_location: 1,
            external_data: vec![StringStringEntryProto {
                key: "location".into(),
                value: "weights.bin".into(),
            }],
            ..Default::default()
        });
        let m = ModelProto {
            graph: Some(g),
            ..Default::default()
        };
        let info = read_model_info(m.encode_to_vec()).expect("parse");
        assert!(info.external_data.contains("weights.bin"));
        assert!(read_model_info(b"\xff\xff\xff garbage".to_vec()).is_err());
    }

    #[test]
    fn evaluation_is_a_distribution() {
        let y = linear_classifier_eval(&[0.5; 12], &[0.1, 0.2, 0.3], &[1.0, 2.0, 3.0, 4.0]);
        assert!((y.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }
}
