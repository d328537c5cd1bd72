//! The one datatype table: every element type airlock serves, with its Open Inference Protocol
//! name, Triton's model-configuration name, ONNX Runtime's element type and its size. Front ends
//! (HTTP JSON, the binary extension, gRPC), the tensor conversions and validation all read it.

use airlock_signing::manifest::DType;
use ort::value::TensorElementType;

/// One element type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataType {
    /// The manifest's element type.
    pub dtype: DType,
    /// The Open Inference Protocol name (`FP32`, `BYTES`, …).
    pub v2: &'static str,
    /// Triton's model-configuration name (`TYPE_FP32`, `TYPE_STRING`, …).
    pub config: &'static str,
    /// ONNX Runtime's element type.
    pub ort: TensorElementType,
    /// Bytes per element (`None`: variable-length BYTES).
    pub size: Option<usize>,
}

macro_rules! row {
    ($d:ident, $v2:literal, $cfg:literal, $ort:ident, $size:expr) => {
        DataType {
            dtype: DType::$d,
            v2: $v2,
            config: $cfg,
            ort: TensorElementType::$ort,
            size: $size,
        }
    };
}

/// Every element type served.
pub const TABLE: [DataType; 14] = [
    row!(Bool, "BOOL", "TYPE_BOOL", Bool, Some(1)),
    row!(Uint8, "UINT8", "TYPE_UINT8", Uint8, Some(1)),
    row!(Uint16, "UINT16", "TYPE_UINT16", Uint16, Some(2)),
    row!(Uint32, "UINT32", "TYPE_UINT32", Uint32, Some(4)),
    row!(Uint64, "UINT64", "TYPE_UINT64", Uint64, Some(8)),
    row!(Int8, "INT8", "TYPE_INT8", Int8, Some(1)),
    row!(Int16, "INT16", "TYPE_INT16", Int16, Some(2)),
    row!(Int32, "INT32", "TYPE_INT32", Int32, Some(4)),
    row!(Int64, "INT64", "TYPE_INT64", Int64, Some(8)),
    row!(Float16, "FP16", "TYPE_FP16", Float16, Some(2)),
    row!(Float32, "FP32", "TYPE_FP32", Float32, Some(4)),
    row!(Float64, "FP64", "TYPE_FP64", Float64, Some(8)),
    row!(Bfloat16, "BF16", "TYPE_BF16", Bfloat16, Some(2)),
    row!(String, "BYTES", "TYPE_STRING", String, None),
];

/// The row of an element type.
pub fn of(d: DType) -> &'static DataType {
    // Every DType has a row (the table test checks it); the fallback is never taken.
    TABLE.iter().find(|r| r.dtype == d).unwrap_or(&TABLE[13])
}

/// The Open Inference Protocol name of an element type.
pub fn v2_name(d: DType) -> &'static str {
    of(d).v2
}

/// Triton's model-configuration name of an element type.
pub fn config_name(d: DType) -> &'static str {
    of(d).config
}

/// The element type of an Open Inference Protocol name.
pub fn from_v2(name: &str) -> Option<DType> {
    TABLE.iter().find(|r| r.v2 == name).map(|r| r.dtype)
}

/// The element type of an ONNX Runtime element type, if airlock serves it.
pub fn from_ort(t: TensorElementType) -> Option<DType> {
    TABLE.iter().find(|r| r.ort == t).map(|r| r.dtype)
}

/// Every element of a fixed-size tensor as `f64` (golden-vector comparison); `None` for BYTES.
pub fn to_f64s(d: DType, b: &[u8]) -> Option<Vec<f64>> {
    fn conv<const N: usize>(b: &[u8], f: impl Fn([u8; N]) -> f64) -> Vec<f64> {
        b.chunks_exact(N)
            .map(|c| f(c.try_into().unwrap_or([0; N])))
            .collect()
    }
    Some(match d {
        DType::Bool | DType::Uint8 => b.iter().map(|x| f64::from(*x)).collect(),
        DType::Int8 => b.iter().map(|x| f64::from(*x as i8)).collect(),
        DType::Int16 => conv(b, |c| f64::from(i16::from_le_bytes(c))),
        DType::Uint16 => conv(b, |c| f64::from(u16::from_le_bytes(c))),
        DType::Int32 => conv(b, |c| f64::from(i32::from_le_bytes(c))),
        DType::Uint32 => conv(b, |c| f64::from(u32::from_le_bytes(c))),
        DType::Int64 => conv(b, |c| i64::from_le_bytes(c) as f64),
        DType::Uint64 => conv(b, |c| u64::from_le_bytes(c) as f64),
        DType::Float16 => conv(b, |c| f64::from(half::f16::from_le_bytes(c))),
        DType::Bfloat16 => conv(b, |c| f64::from(half::bf16::from_le_bytes(c))),
        DType::Float32 => conv(b, |c| f64::from(f32::from_le_bytes(c))),
        DType::Float64 => conv(b, f64::from_le_bytes),
        DType::String => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_element_type_has_one_row_and_names_round_trip() {
        let all = [
            DType::Bool,
            DType::Int8,
            DType::Int16,
            DType::Int32,
            DType::Int64,
            DType::Uint8,
            DType::Uint16,
            DType::Uint32,
            DType::Uint64,
            DType::Float16,
            DType::Bfloat16,
            DType::Float32,
            DType::Float64,
            DType::String,
        ];
        for d in all {
            assert_eq!(TABLE.iter().filter(|r| r.dtype == d).count(), 1, "{d}");
            let r = of(d);
            assert_eq!(r.dtype, d);
            assert_eq!(from_v2(r.v2), Some(d));
            assert_eq!(from_ort(r.ort), Some(d));
            assert_eq!(
                r.size,
                d.size(),
                "{d}: the table and the manifest agree on sizes"
            );
        }
        assert_eq!(
            from_v2("fp32"),
            None,
            "names are case-sensitive, as in the protocol"
        );
        assert_eq!(config_name(DType::String), "TYPE_STRING");
        assert_eq!(v2_name(DType::Bfloat16), "BF16");
        assert_eq!(
            to_f64s(DType::Int16, &(-3i16).to_le_bytes()),
            Some(vec![-3.0])
        );
    }
}
