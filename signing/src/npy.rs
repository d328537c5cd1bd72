//! NumPy `.npy` files (format versions 1.0, 2.0 and 3.0): the golden vectors' format.
//!
//! Invariant: a parsed [`NpyHeader`] describes exactly the bytes that follow it: the data length
//! is `product(shape) × item size`, checked against the file, so no later reader trusts a shape
//! that the file does not back. Written by hand because the format is tiny and the crates that
//! read it pull in a whole Python-literal parser; only C-order, little-endian arrays are accepted.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::manifest::{DType, Dim, TensorSpec};

const MAGIC: &[u8] = b"\x93NUMPY";
/// Headers larger than this are refused (NumPy itself writes a few hundred bytes).
const MAX_HEADER: usize = 64 * 1024;

/// What an `.npy` header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpyHeader {
    /// Element type.
    pub dtype: DType,
    /// Width in characters of a fixed-width unicode string array (`<U8`), else 0.
    pub string_width: usize,
    /// Shape (C order).
    pub shape: Vec<u64>,
    /// Offset of the first data byte.
    pub data_offset: usize,
}

impl NpyHeader {
    /// Elements in the array.
    pub fn elements(&self) -> u64 {
        self.shape.iter().product()
    }
    /// Bytes of one element.
    pub fn item_size(&self) -> usize {
        self.dtype.size().unwrap_or(4 * self.string_width)
    }
    /// Bytes of data that must follow the header.
    pub fn data_len(&self) -> Option<u64> {
        self.shape
            .iter()
            .try_fold(self.item_size() as u64, |acc, d| acc.checked_mul(*d))
    }
}

/// An array loaded in full (golden vectors are small).
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    /// The header.
    pub header: NpyHeader,
    /// The raw little-endian data.
    pub data: Vec<u8>,
}

fn err(what: &str, m: impl std::fmt::Display) -> Error {
    Error::Input(format!("{what}: not a usable .npy file: {m}"))
}

/// Parses the header at the start of `bytes` (which may hold the whole file or just a prefix).
pub fn parse_header(what: &str, bytes: &[u8]) -> Result<NpyHeader> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(err(what, "missing the \\x93NUMPY magic"));
    }
    let (len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(err(what, format!("format version {v} is not supported"))),
    };
    if len > MAX_HEADER || bytes.len() < start + len {
        return Err(err(what, "header is truncated or too large"));
    }
    let text = std::str::from_utf8(&bytes[start..start + len])
        .map_err(|_| err(what, "header is not text"))?;
    let descr = dict_value(text, "descr").ok_or_else(|| err(what, "no 'descr'"))?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    let fortran =
        dict_value(text, "fortran_order").ok_or_else(|| err(what, "no 'fortran_order'"))?;
    let shape_text = dict_value(text, "shape").ok_or_else(|| err(what, "no 'shape'"))?;
    if fortran != "False" {
        return Err(err(
            what,
            "Fortran-order arrays are not accepted (save with numpy.ascontiguousarray)",
        ));
    }
    let (dtype, string_width) = parse_descr(descr).ok_or_else(|| {
        err(what, format!("dtype {descr:?} is not supported (little-endian bool, ints, floats or unicode strings)"))
    })?;
    let inner = shape_text
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| err(what, "shape is not a tuple"))?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<u64>()
                .map_err(|_| err(what, format!("bad dimension {s:?}")))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(NpyHeader {
        dtype,
        string_width,
        shape,
        data_offset: start + len,
    })
}

/// The raw text of `key`'s value in the header's Python dict literal.
fn dict_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let pos = text
        .find(&format!("'{key}'"))
        .or_else(|| text.find(&format!("\"{key}\"")))?;
    let rest = text[pos + key.len() + 2..]
        .trim_start()
        .strip_prefix(':')?
        .trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else if let Some(q) = rest.chars().next().filter(|c| *c == '\'' || *c == '"') {
        rest[1..].find(q)? + 2
    } else {
        rest.find([',', '}']).unwrap_or(rest.len())
    };
    Some(rest[..end].trim())
}

fn parse_descr(d: &str) -> Option<(DType, usize)> {
    // `get` rather than `split_at`: an empty or non-ASCII descr must be refused, not panic
    // (found by the `manifest` fuzz target).
    let (endian, kind) = (d.get(..1)?, d.get(1..)?);
    if !matches!(endian, "<" | "|" | "=") {
        return None;
    }
    if let Some(w) = kind.strip_prefix('U') {
        return w
            .parse()
            .ok()
            .filter(|w| *w > 0)
            .map(|w| (DType::String, w));
    }
    let t = match kind {
        "b1" => DType::Bool,
        "i1" => DType::Int8,
        "i2" => DType::Int16,
        "i4" => DType::Int32,
        "i8" => DType::Int64,
        "u1" => DType::Uint8,
        "u2" => DType::Uint16,
        "u4" => DType::Uint32,
        "u8" => DType::Uint64,
        "f2" => DType::Float16,
        "f4" => DType::Float32,
        "f8" => DType::Float64,
        _ => return None,
    };
    Some((t, 0))
}

fn descr_of(dtype: DType, string_width: usize) -> Option<String> {
    Some(match dtype {
        DType::Bool => "|b1".into(),
        DType::Int8 => "|i1".into(),
        DType::Uint8 => "|u1".into(),
        DType::Int16 => "<i2".into(),
        DType::Int32 => "<i4".into(),
        DType::Int64 => "<i8".into(),
        DType::Uint16 => "<u2".into(),
        DType::Uint32 => "<u4".into(),
        DType::Uint64 => "<u8".into(),
        DType::Float16 => "<f2".into(),
        DType::Float32 => "<f4".into(),
        DType::Float64 => "<f8".into(),
        DType::String => format!("<U{string_width}"),
        DType::Bfloat16 => return None,
    })
}

/// Parses a whole file's bytes, checking the data length against the header.
pub fn parse(what: &str, bytes: Vec<u8>) -> Result<NpyArray> {
    let header = parse_header(what, &bytes)?;
    let want = header
        .data_len()
        .ok_or_else(|| err(what, "shape overflows"))?;
    let have = (bytes.len() - header.data_offset) as u64;
    if want != have {
        return Err(err(
            what,
            format!(
                "shape {:?} needs {want} data bytes, the file has {have}",
                header.shape
            ),
        ));
    }
    let data = bytes[header.data_offset..].to_vec();
    Ok(NpyArray { header, data })
}

/// Reads and parses an `.npy` file.
pub fn read(path: &std::path::Path) -> Result<NpyArray> {
    let what = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| err(&what, e))?;
    parse(&what, bytes)
}

/// Encodes an array as a version 1.0 `.npy` file.
pub fn encode(dtype: DType, string_width: usize, shape: &[u64], data: &[u8]) -> Result<Vec<u8>> {
    let descr = descr_of(dtype, string_width)
        .ok_or_else(|| Error::Input(format!("{dtype} cannot be stored in .npy")))?;
    let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
    let shape_text = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}, }}");
    // Pad so that the data starts on a 64-byte boundary, ending with '\n', as NumPy does.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    Ok(out)
}

/// Checks one array against a contract tensor: same element type, same rank, fixed dimensions
/// equal, and every named dimension bound to one size across the case (`bindings`).
pub fn check_against_spec(
    spec: &TensorSpec,
    header: &NpyHeader,
    bindings: &mut BTreeMap<String, u64>,
) -> std::result::Result<(), String> {
    if header.dtype != spec.dtype {
        return Err(format!(
            "{}: element type is {}, the model wants {}",
            spec.name, header.dtype, spec.dtype
        ));
    }
    let Some(dims) = &spec.shape else {
        return Ok(());
    };
    if dims.len() != header.shape.len() {
        return Err(format!(
            "{}: shape {:?} has rank {}, the model wants {} ({})",
            spec.name,
            header.shape,
            header.shape.len(),
            dims.len(),
            spec.describe()
        ));
    }
    for (i, (d, n)) in dims.iter().zip(&header.shape).enumerate() {
        match d {
            Dim::Fixed(f) if f != n => {
                return Err(format!(
                    "{}: dimension {i} is {n}, the model wants {f} ({})",
                    spec.name,
                    spec.describe()
                ))
            }
            Dim::Named(name) => {
                let bound = *bindings.entry(name.clone()).or_insert(*n);
                if bound != *n {
                    return Err(format!(
                        "{}: dimension {i} ({name}) is {n}, but {name} is {bound} elsewhere in this case",
                        spec.name
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_strict_length() {
        let data: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]
            .iter()
            .flat_map(|f| f.to_le_bytes())
            .collect();
        let bytes = encode(DType::Float32, 0, &[2, 3], &data).expect("encode");
        assert_eq!((bytes.len() - data.len()) % 64, 0, "aligned like NumPy");
        let a = parse("t", bytes.clone()).expect("parse");
        assert_eq!(a.header.shape, vec![2, 3]);
        assert_eq!(a.header.dtype, DType::Float32);
        assert_eq!(a.data, data);
        let mut short = bytes.clone();
        short.pop();
        assert!(parse("t", short).is_err());
    }

    #[test]
    fn numpy_written_header_parses() {
        // Byte-for-byte what numpy.save writes for np.zeros((1,), '<i8'): a 118-byte header.
        let dict = "{'descr': '<i8', 'fortran_order': False, 'shape': (1,), }";
        let mut b = b"\x93NUMPY\x01\x00v\x00".to_vec();
        b.extend(dict.as_bytes());
        b.resize(127, b' ');
        b.push(b'\n');
        b.extend([0u8; 8]);
        let a = parse("np", b).expect("parse");
        assert_eq!(a.header.dtype, DType::Int64);
        assert_eq!(a.header.shape, vec![1]);
    }

    #[test]
    fn refuses_what_it_cannot_check() {
        let fortran = b"\x93NUMPY\x01\x00\x30\x00{'descr': '<f4', 'fortran_order': True, 'shape': (1,), }   \n".to_vec();
        assert!(parse_header("f", &fortran).is_err());
        let big =
            b"\x93NUMPY\x01\x00\x30\x00{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }\n"
                .to_vec();
        assert!(parse_header("b", &big).is_err());
        let obj =
            b"\x93NUMPY\x01\x00\x30\x00{'descr': '|O', 'fortran_order': False, 'shape': (1,), }\n"
                .to_vec();
        assert!(parse_header("o", &obj).is_err());
    }

    #[test]
    fn empty_or_odd_descr_is_refused_not_a_panic() {
        for descr in ["''", "'é4'", "'<'", "'<U'", "'<U0'"] {
            let dict = format!("{{'descr': {descr}, 'fortran_order': False, 'shape': (2, 4), }}");
            let mut b = b"\x93NUMPY\x01\x00v\x00".to_vec();
            b.extend(dict.as_bytes());
            b.resize(127, b' ');
            b.push(b'\n');
            assert!(parse_header("fuzz", &b).is_err(), "{descr}");
        }
    }

    #[test]
    fn named_dims_bind_across_a_case() {
        let spec = |n: &str| TensorSpec {
            name: n.into(),
            dtype: DType::Float32,
            shape: Some(vec![Dim::Named("batch".into()), Dim::Fixed(4)]),
        };
        let h = |b| NpyHeader {
            dtype: DType::Float32,
            string_width: 0,
            shape: vec![b, 4],
            data_offset: 0,
        };
        let mut bind = BTreeMap::new();
        check_against_spec(&spec("a"), &h(2), &mut bind).expect("binds batch=2");
        assert!(
            check_against_spec(&spec("b"), &h(3), &mut bind).is_err(),
            "batch differs"
        );
        let wrong = NpyHeader {
            shape: vec![2, 5],
            ..h(2)
        };
        let e =
            check_against_spec(&spec("c"), &wrong, &mut BTreeMap::new()).expect_err("wrong dim");
        assert!(e.contains("dimension 1"), "{e}");
    }
}
