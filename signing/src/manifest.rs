//! The bundle manifest (`manifest.json`): model identity, I/O contract, payload files with sizes
//! and digests, golden vectors, hardware requirements, issue and expiry times.
//!
//! Invariant: names and paths are validated newtypes ([`ModelName`], [`BundlePath`]); a
//! [`Manifest`] that passed [`Manifest::check`] references only files it lists, lists no file
//! twice and stays inside the [`Limits`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::keys::Sha256Digest;

/// The manifest format this code reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// The most bytes a bundle path may have (it must fit a ustar `name` field).
pub const MAX_PATH_LEN: usize = 100;

/// Names reserved for the first two entries.
pub const MANIFEST_NAME: &str = "manifest.json";
/// See [`MANIFEST_NAME`].
pub const SIGNATURES_NAME: &str = "signatures.json";

/// How a name read from an unverified stream (a tar header) appears in errors and logs: its
/// length and a digest prefix, never its bytes — a hostile bundle, or a file that is no bundle
/// at all, must not get its content echoed into an error or the audit log. A release engineer
/// finds the entry with `tar -tf` and `sha256sum`.
pub fn unverified_name(raw: &[u8]) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(raw);
    format!(
        "<a name of {} bytes, sha256 {}>",
        raw.len(),
        hex::encode(&digest[..6])
    )
}

/// A relative payload path inside a bundle: `/`-separated components of `[A-Za-z0-9._+:-]`, none
/// empty, none starting with `.`, at most [`MAX_PATH_LEN`] bytes.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BundlePath(String);

impl BundlePath {
    /// Validates raw name bytes as found in a tar header or a manifest, naming the broken rule.
    pub fn parse(raw: &[u8]) -> Result<Self> {
        let shown = unverified_name(raw);
        let invalid = |reason: &str| Error::InvalidPath {
            path: shown.clone(),
            reason: reason.to_string(),
        };
        if raw.contains(&0) {
            return Err(Error::NulInPath { path: shown });
        }
        if raw.first() == Some(&b'/') {
            return Err(Error::AbsolutePath { path: shown });
        }
        if raw.split(|b| *b == b'/' || *b == b'\\').any(|c| c == b"..") {
            return Err(Error::PathTraversal { path: shown });
        }
        if raw.is_empty() {
            return Err(invalid("empty"));
        }
        if raw.len() > MAX_PATH_LEN {
            return Err(invalid("longer than 100 bytes"));
        }
        for c in raw.split(|b| *b == b'/') {
            if c.is_empty() {
                return Err(invalid("empty component (leading, trailing or double `/`)"));
            }
            if c[0] == b'.' {
                return Err(invalid("a component starts with `.`"));
            }
            if let Some(b) = c.iter().find(|b| {
                !(b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+' | b':'))
            }) {
                return Err(invalid(&format!(
                    "byte {b:#04x} is not allowed (allowed: A-Z a-z 0-9 . _ - + :)"
                )));
            }
        }
        let s = String::from_utf8(raw.to_vec()).map_err(|_| invalid("not UTF-8"))?;
        if s == MANIFEST_NAME || s == SIGNATURES_NAME {
            return Err(invalid("reserved name"));
        }
        Ok(BundlePath(s))
    }

    /// The path as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BundlePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for BundlePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl Serialize for BundlePath {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for BundlePath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        BundlePath::parse(s.as_bytes()).map_err(serde::de::Error::custom)
    }
}

/// A model name: 1 to 64 characters of `[a-z0-9._-]`, starting with a letter or digit.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelName(String);

/// Names no model may have: `/v2/models/stats` is the statistics of every model.
pub const RESERVED_MODEL_NAMES: [&str; 1] = ["stats"];

impl ModelName {
    /// Validates a model name.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        let ok_first = s
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let ok_rest = s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
        if s.len() > 64 || !ok_first || !ok_rest {
            return Err(format!(
                "invalid model name {s:?}: 1 to 64 characters of a-z 0-9 . _ -, starting with a letter or digit"
            ));
        }
        if RESERVED_MODEL_NAMES.contains(&s) {
            return Err(format!(
                "model name {s:?} is reserved: the serving API uses it for a route of its own (reserved: {})",
                RESERVED_MODEL_NAMES.join(", ")
            ));
        }
        Ok(ModelName(s.to_string()))
    }
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl Serialize for ModelName {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ModelName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ModelName::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Tensor element types (ONNX's, named as NumPy names them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum DType {
    Bool,
    Int8,
    Int16,
    Int32,
    Int64,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Float16,
    Bfloat16,
    Float32,
    Float64,
    String,
}

impl DType {
    /// From ONNX's `TensorProto.DataType` number.
    pub fn from_onnx(code: i32) -> Option<Self> {
        Some(match code {
            1 => DType::Float32,
            2 => DType::Uint8,
            3 => DType::Int8,
            4 => DType::Uint16,
            5 => DType::Int16,
            6 => DType::Int32,
            7 => DType::Int64,
            8 => DType::String,
            9 => DType::Bool,
            10 => DType::Float16,
            11 => DType::Float64,
            12 => DType::Uint32,
            13 => DType::Uint64,
            16 => DType::Bfloat16,
            _ => return None,
        })
    }

    /// Size of one element in bytes (`None` for strings).
    pub fn size(self) -> Option<usize> {
        Some(match self {
            DType::Bool | DType::Int8 | DType::Uint8 => 1,
            DType::Int16 | DType::Uint16 | DType::Float16 | DType::Bfloat16 => 2,
            DType::Int32 | DType::Uint32 | DType::Float32 => 4,
            DType::Int64 | DType::Uint64 | DType::Float64 => 8,
            DType::String => return None,
        })
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = serde_json::to_value(self).map_err(|_| fmt::Error)?;
        f.write_str(v.as_str().unwrap_or("?"))
    }
}

/// One dimension: fixed, or dynamic (named, like `"batch"`, or anonymous `null`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Dim {
    /// A fixed size.
    Fixed(u64),
    /// A named dynamic dimension: the same name must have the same size across one request.
    Named(String),
    /// An anonymous dynamic dimension.
    Any(()),
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Named(s) => f.write_str(s),
            Dim::Any(()) => f.write_str("?"),
        }
    }
}

/// An input or output of the model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorSpec {
    /// Name in the ONNX graph.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Dimensions; `None` when the model leaves the rank open.
    pub shape: Option<Vec<Dim>>,
}

impl TensorSpec {
    /// `float32[batch, 4]`.
    pub fn describe(&self) -> String {
        match &self.shape {
            Some(s) => format!(
                "{}[{}]",
                self.dtype,
                s.iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => format!("{}[*]", self.dtype),
        }
    }
}

/// The model's I/O contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contract {
    /// Graph inputs (initializers excluded).
    pub inputs: Vec<TensorSpec>,
    /// Graph outputs.
    pub outputs: Vec<TensorSpec>,
}

/// What a payload file is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileRole {
    /// The `.onnx` graph.
    Model,
    /// A weights file the graph references as external data.
    ExternalData,
    /// A golden vector `.npy`.
    Vector,
}

/// A payload file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Path inside the bundle (and inside the store directory).
    pub path: BundlePath,
    /// Exact size in bytes.
    pub size: u64,
    /// SHA-256 of the content.
    pub sha256: Sha256Digest,
    /// What it is.
    pub role: FileRole,
}

/// A golden test vector: inputs, expected outputs (from the model owner) and tolerances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoldenVector {
    /// The case's name.
    pub name: String,
    /// Input tensor name → `.npy` file.
    pub inputs: BTreeMap<String, BundlePath>,
    /// Output tensor name → `.npy` file with the expected values.
    pub expected: BTreeMap<String, BundlePath>,
    /// Relative tolerance: `|got - want| <= atol + rtol * |want|`.
    pub rtol: f64,
    /// Absolute tolerance.
    pub atol: f64,
}

/// Which execution provider the model is meant for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionProvider {
    /// The CPU provider.
    Cpu,
    /// The CUDA provider.
    Cuda,
    /// Either.
    Any,
}

/// What the model needs from the machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hardware {
    /// Execution provider.
    pub execution_provider: ExecutionProvider,
    /// Minimum CUDA compute capability, like `"8.0"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_compute_capability: Option<String>,
    /// GPU memory the model may use, in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_memory_budget_mib: Option<u64>,
    /// Minimum ONNX Runtime version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_onnxruntime: Option<semver::Version>,
}

/// A model's identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelId {
    /// Name.
    pub name: ModelName,
    /// Semantic version.
    pub version: semver::Version,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`FORMAT_VERSION`].
    pub format: u32,
    /// Which model and version.
    pub model: ModelId,
    /// The I/O contract read from the `.onnx` file.
    pub contract: Contract,
    /// The `.onnx` graph among `files`.
    pub model_file: BundlePath,
    /// Every payload file.
    pub files: Vec<FileEntry>,
    /// Golden vectors.
    pub vectors: Vec<GoldenVector>,
    /// Hardware requirements.
    pub hardware: Hardware,
    /// When the release team signed it.
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    /// After this the bundle is expired.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// Oldest airlock that may import it.
    pub min_airlock_version: semver::Version,
}

/// Bounds on everything a bundle can make the reader allocate, read or write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest `manifest.json`.
    pub max_manifest_size: u64,
    /// Largest `signatures.json`.
    pub max_signatures_size: u64,
    /// Most payload files.
    pub max_entries: u32,
    /// Largest payload file.
    pub max_file_size: u64,
    /// Largest sum of payload sizes.
    pub max_total_size: u64,
    /// Largest zstd window, as log2 of bytes.
    pub max_zstd_window_log: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits::from(&airlock_config::Bundles::default())
    }
}

impl From<&airlock_config::Bundles> for Limits {
    fn from(b: &airlock_config::Bundles) -> Self {
        Limits {
            max_manifest_size: b.max_manifest_size.0,
            max_signatures_size: b.max_signatures_size.0,
            max_entries: b.max_entries,
            max_file_size: b.max_file_size.0,
            max_total_size: b.max_total_size.0,
            max_zstd_window_log: b.max_zstd_window_log,
        }
    }
}

impl Manifest {
    /// Parses manifest bytes (which must already be signature-verified by the caller).
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|e| Error::InvalidManifest(e.to_string()))
    }

    /// The bundle's file name: `NAME-VERSION.airlock`.
    pub fn bundle_file_name(&self) -> String {
        format!("{}-{}.airlock", self.model.name, self.model.version)
    }

    /// Sum of payload sizes.
    pub fn payload_size(&self) -> u64 {
        self.files
            .iter()
            .map(|f| f.size)
            .fold(0u64, u64::saturating_add)
    }

    /// The entry for `path`.
    pub fn file(&self, path: &BundlePath) -> Option<&FileEntry> {
        self.files.iter().find(|f| &f.path == path)
    }

    /// Every rule a manifest must meet beyond its types.
    pub fn check(&self, limits: &Limits) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidManifest(m));
        // The format is versioned so that a future reader can refuse what it does not know.
        if self.format != FORMAT_VERSION {
            return bad(format!(
                "format {} is not supported (this reader knows {FORMAT_VERSION})",
                self.format
            ));
        }
        // Limits bound the work before a single payload byte is read.
        if self.files.len() > limits.max_entries as usize {
            return Err(Error::LimitExceeded {
                what: format!("the number of payload files ({})", self.files.len()),
                limit: limits.max_entries as u64,
            });
        }
        let mut seen = BTreeSet::new();
        let mut total: u64 = 0;
        for f in &self.files {
            if !seen.insert(&f.path) {
                return bad(format!("file {} is listed twice", f.path));
            }
            if f.size > limits.max_file_size {
                return Err(Error::LimitExceeded {
                    what: format!("file {} ({} bytes)", f.path, f.size),
                    limit: limits.max_file_size,
                });
            }
            total = total.saturating_add(f.size);
        }
        if total > limits.max_total_size {
            return Err(Error::LimitExceeded {
                what: format!("the payload ({total} bytes)"),
                limit: limits.max_total_size,
            });
        }
        // Every reference resolves to a listed file of the right role.
        let role_of = |p: &BundlePath| self.file(p).map(|f| f.role);
        if role_of(&self.model_file) != Some(FileRole::Model) {
            return bad(format!(
                "model_file {} is not listed as a file with role model",
                self.model_file
            ));
        }
        if self
            .files
            .iter()
            .filter(|f| f.role == FileRole::Model)
            .count()
            != 1
        {
            return bad("exactly one file must have role model".into());
        }
        if self.contract.inputs.is_empty() || self.contract.outputs.is_empty() {
            return bad("the contract needs at least one input and one output".into());
        }
        for (what, specs) in [
            ("input", &self.contract.inputs),
            ("output", &self.contract.outputs),
        ] {
            let mut names = BTreeSet::new();
            if let Some(dup) = specs.iter().find(|s| !names.insert(s.name.as_str())) {
                return bad(format!(
                    "{what} {:?} is listed twice in the contract",
                    dup.name
                ));
            }
        }
        if let Some(cc) = &self.hardware.min_compute_capability {
            let ok = cc.split_once('.').is_some_and(|(a, b)| {
                !a.is_empty()
                    && !b.is_empty()
                    && (a.to_owned() + b).bytes().all(|c| c.is_ascii_digit())
            });
            if !ok {
                return bad(format!(
                    "hardware.min_compute_capability {cc:?} is not MAJOR.MINOR (e.g. \"8.0\")"
                ));
            }
        }
        let mut names = BTreeSet::new();
        for v in &self.vectors {
            if !names.insert(v.name.as_str()) {
                return bad(format!("vector {:?} is listed twice", v.name));
            }
            if !(v.rtol.is_finite() && v.rtol >= 0.0 && v.atol.is_finite() && v.atol >= 0.0) {
                return bad(format!(
                    "vector {:?}: rtol and atol must be finite and not negative",
                    v.name
                ));
            }
            for (t, p) in v.inputs.iter().chain(&v.expected) {
                if role_of(p) != Some(FileRole::Vector) {
                    return bad(format!(
                        "vector {:?}: {t} refers to {p}, which is not a vector file",
                        v.name
                    ));
                }
            }
            for t in v.inputs.keys() {
                if !self.contract.inputs.iter().any(|s| &s.name == t) {
                    return bad(format!(
                        "vector {:?}: {t:?} is not an input of the model",
                        v.name
                    ));
                }
            }
            for t in v.expected.keys() {
                if !self.contract.outputs.iter().any(|s| &s.name == t) {
                    return bad(format!(
                        "vector {:?}: {t:?} is not an output of the model",
                        v.name
                    ));
                }
            }
            if v.expected.is_empty() {
                return bad(format!("vector {:?} has no expected outputs", v.name));
            }
        }
        if self.expires_at <= self.issued_at {
            return bad("expires_at must be after issued_at".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_rules_name_the_attack() {
        assert!(matches!(
            BundlePath::parse(b"/etc/passwd"),
            Err(Error::AbsolutePath { .. })
        ));
        assert!(matches!(
            BundlePath::parse(b"a/../../x"),
            Err(Error::PathTraversal { .. })
        ));
        assert!(matches!(
            BundlePath::parse(b"..\\x"),
            Err(Error::PathTraversal { .. })
        ));
        assert!(matches!(
            BundlePath::parse(b"a\0b"),
            Err(Error::NulInPath { .. })
        ));
        assert!(matches!(
            BundlePath::parse(b"a//b"),
            Err(Error::InvalidPath { .. })
        ));
        assert!(matches!(
            BundlePath::parse(b"a/.hidden"),
            Err(Error::InvalidPath { .. })
        ));
        assert!(matches!(
            BundlePath::parse(b"a/"),
            Err(Error::InvalidPath { .. })
        ));
        assert!(matches!(
            BundlePath::parse(b"manifest.json"),
            Err(Error::InvalidPath { .. })
        ));
        assert!(matches!(
            BundlePath::parse("é".as_bytes()),
            Err(Error::InvalidPath { .. })
        ));
        assert!(matches!(
            BundlePath::parse(&[b'a'; 101]),
            Err(Error::InvalidPath { .. })
        ));
        assert_eq!(
            BundlePath::parse(b"vectors/c1/in-0.npy")
                .expect("ok")
                .as_str(),
            "vectors/c1/in-0.npy"
        );
    }

    #[test]
    fn model_names() {
        assert!(ModelName::parse("resnet-50.v2").is_ok());
        for bad in ["", "Upper", "-x", "a/b", &"x".repeat(65), "stats"] {
            assert!(ModelName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dims_round_trip() {
        let s: Vec<Dim> = serde_json::from_str(r#"[3, "batch", null]"#).expect("dims");
        assert_eq!(
            s,
            vec![Dim::Fixed(3), Dim::Named("batch".into()), Dim::Any(())]
        );
        assert_eq!(
            serde_json::to_string(&s).expect("json"),
            r#"[3,"batch",null]"#
        );
    }
}
