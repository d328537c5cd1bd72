//! The fixture generator: keys, trust roots, the demo payload, and a raw bundle writer.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use airlock_signing::keys::{PrivateKey, Sha256Digest, SigningContext};
use airlock_signing::manifest::{
    BundlePath, Contract, DType, Dim, ExecutionProvider, FileEntry, FileRole, GoldenVector,
    Hardware, Manifest, ModelId, ModelName, TensorSpec, FORMAT_VERSION,
};
use airlock_signing::onnx;
use airlock_signing::reader::SignatureFile;
use airlock_signing::trust::{Role, RootBuilder, TrustRootFile};
use airlock_signing::TrustRoot;
use time::macros::datetime;
use time::OffsetDateTime;

/// Deterministic keys by purpose.
pub struct Keys;

impl Keys {
    /// Root keys 1..=3.
    pub fn root(n: u8) -> PrivateKey {
        PrivateKey::from_seed([n; 32])
    }
    /// Bundle keys 1..=3.
    pub fn bundle(n: u8) -> PrivateKey {
        PrivateKey::from_seed([0x40 + n; 32])
    }
    /// A key no trust root knows.
    pub fn stranger() -> PrivateKey {
        PrivateKey::from_seed([0xee; 32])
    }
}

/// The fixtures' fixed "now".
pub const NOW: OffsetDateTime = datetime!(2026-11-24 12:00 UTC);

/// Trust root v1: root role 2 of root keys 1,2,3; bundle role 2 of bundle keys 1,2,3.
pub fn trust_root_v1() -> TrustRootFile {
    let mut b = RootBuilder::new(datetime!(2036-01-01 00:00 UTC));
    for n in 1..=3 {
        b.add_key(Role::Root, Keys::root(n).public());
        b.add_key(Role::Bundle, Keys::bundle(n).public());
    }
    b.threshold(Role::Root, 2).threshold(Role::Bundle, 2);
    b.signed(&[Keys::root(1), Keys::root(2)])
        .expect("signed root")
}

/// Trust root v2: bundle key 3 revoked; signed by root keys 1 and 2 (valid rotation).
pub fn trust_root_v2_revoking_bundle_key_3() -> TrustRootFile {
    let v1 = TrustRoot::from_json(&to_json(&trust_root_v1())).expect("v1");
    let mut b = RootBuilder::rotate_from(&v1, datetime!(2036-01-01 00:00 UTC));
    b.revoke_key(Keys::bundle(3).key_id());
    b.signed(&[Keys::root(1), Keys::root(2)])
        .expect("signed root")
}

/// JSON of a trust root file.
pub fn to_json(f: &TrustRootFile) -> Vec<u8> {
    serde_json::to_vec_pretty(f).expect("json")
}

/// One payload file of a fixture.
#[derive(Clone)]
pub struct PayloadFile {
    /// Bundle path.
    pub path: String,
    /// Content.
    pub data: Vec<u8>,
    /// Role.
    pub role: FileRole,
}

/// A model version ready to be turned into a (good or bad) bundle.
#[derive(Clone)]
pub struct Fixture {
    /// The manifest (edit it to make bad bundles).
    pub manifest: Manifest,
    /// Payload files in order.
    pub files: Vec<PayloadFile>,
}

/// The demo payload: model + one golden vector (batch of 2), with its expected outputs.
pub fn demo_files() -> Vec<PayloadFile> {
    let (model, x, y) = onnx::demo_files();
    vec![
        PayloadFile {
            path: "model/model.onnx".into(),
            data: model,
            role: FileRole::Model,
        },
        PayloadFile {
            path: "vectors/case-1/in0.npy".into(),
            data: x,
            role: FileRole::Vector,
        },
        PayloadFile {
            path: "vectors/case-1/out0.npy".into(),
            data: y,
            role: FileRole::Vector,
        },
    ]
}

fn bp(s: &str) -> BundlePath {
    BundlePath::parse(s.as_bytes()).expect("fixture path")
}

impl Fixture {
    /// A valid demo model version.
    pub fn demo(name: &str, version: &str) -> Self {
        let files = demo_files();
        let manifest = Manifest {
            format: FORMAT_VERSION,
            model: ModelId {
                name: ModelName::parse(name).expect("name"),
                version: semver::Version::parse(version).expect("semver"),
            },
            contract: Contract {
                inputs: vec![TensorSpec {
                    name: "x".into(),
                    dtype: DType::Float32,
                    shape: Some(vec![Dim::Named("batch".into()), Dim::Fixed(4)]),
                }],
                outputs: vec![TensorSpec {
                    name: "y".into(),
                    dtype: DType::Float32,
                    shape: Some(vec![Dim::Named("batch".into()), Dim::Fixed(3)]),
                }],
            },
            model_file: bp("model/model.onnx"),
            files: vec![],
            vectors: vec![GoldenVector {
                name: "case-1".into(),
                inputs: BTreeMap::from([("x".to_string(), bp("vectors/case-1/in0.npy"))]),
                expected: BTreeMap::from([("y".to_string(), bp("vectors/case-1/out0.npy"))]),
                rtol: 1e-4,
                atol: 1e-5,
            }],
            hardware: Hardware {
                execution_provider: ExecutionProvider::Any,
                min_compute_capability: None,
                gpu_memory_budget_mib: None,
                min_onnxruntime: None,
            },
            issued_at: datetime!(2026-11-20 00:00 UTC),
            expires_at: datetime!(2036-01-01 00:00 UTC),
            min_airlock_version: semver::Version::new(0, 1, 0),
        };
        let mut f = Fixture { manifest, files };
        f.sync_files();
        f
    }

    /// Recomputes the manifest's file list from the payload.
    pub fn sync_files(&mut self) {
        self.manifest.files = self
            .files
            .iter()
            .map(|p| FileEntry {
                path: bp(&p.path),
                size: p.data.len() as u64,
                sha256: Sha256Digest::of(&p.data),
                role: p.role,
            })
            .collect();
    }

    /// The manifest's bytes.
    pub fn manifest_bytes(&self) -> Vec<u8> {
        airlock_signing::writer::manifest_json(&self.manifest)
    }

    /// Signatures by `keys` over the manifest.
    pub fn sign(&self, keys: &[PrivateKey]) -> SignatureFile {
        let m = self.manifest_bytes();
        SignatureFile {
            signatures: keys
                .iter()
                .map(|k| k.sign(SigningContext::Manifest, &m))
                .collect(),
        }
    }

    /// Raw entries: manifest, signatures, then the payload.
    pub fn entries(&self, sigs: &SignatureFile) -> Vec<RawEntry> {
        let mut v = vec![
            RawEntry::file("manifest.json", self.manifest_bytes()),
            RawEntry::file("signatures.json", serde_json::to_vec(sigs).expect("json")),
        ];
        v.extend(
            self.files
                .iter()
                .map(|p| RawEntry::file(&p.path, p.data.clone())),
        );
        v
    }

    /// A well-formed bundle signed by bundle keys 1 and 2.
    pub fn good_bundle(&self) -> Vec<u8> {
        compress(
            &tar_bytes(&self.entries(&self.sign(&[Keys::bundle(1), Keys::bundle(2)]))),
            3,
        )
    }
}

/// A tar entry written byte by byte as the test wants it, bypassing the tar crate's path checks.
#[derive(Clone)]
pub struct RawEntry {
    /// The raw name field (up to 100 bytes).
    pub name: Vec<u8>,
    /// The entry type byte.
    pub kind: tar::EntryType,
    /// The data written after the header.
    pub data: Vec<u8>,
    /// Size to put in the header (default: data length).
    pub size: Option<u64>,
    /// Link target for links.
    pub link: Option<Vec<u8>>,
}

impl RawEntry {
    /// A regular file.
    pub fn file(name: &str, data: Vec<u8>) -> Self {
        RawEntry {
            name: name.as_bytes().to_vec(),
            kind: tar::EntryType::Regular,
            data,
            size: None,
            link: None,
        }
    }
    /// An entry of another type with no data.
    pub fn special(name: &str, kind: tar::EntryType) -> Self {
        RawEntry {
            name: name.as_bytes().to_vec(),
            kind,
            data: vec![],
            size: None,
            link: None,
        }
    }
}

/// A ustar stream of `entries` with the two-block end marker.
pub fn tar_bytes(entries: &[RawEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut h = tar::Header::new_ustar();
        let name = &mut h.as_old_mut().name;
        name.fill(0);
        name[..e.name.len()].copy_from_slice(&e.name);
        if let Some(l) = &e.link {
            let ln = &mut h.as_old_mut().linkname;
            ln[..l.len()].copy_from_slice(l);
        }
        h.set_size(e.size.unwrap_or(e.data.len() as u64));
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_entry_type(e.kind);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(&e.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// zstd-compresses `data` at `level`.
pub fn compress(data: &[u8], level: i32) -> Vec<u8> {
    zstd::encode_all(data, level).expect("zstd")
}

/// zstd-compresses with an explicit window log (for window-limit tests).
pub fn compress_with_window(data: &[u8], window_log: u32) -> Vec<u8> {
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).expect("encoder");
    enc.window_log(window_log).expect("window");
    enc.long_distance_matching(true).expect("ldm");
    enc.write_all(data).expect("write");
    enc.finish().expect("finish")
}

/// Writes the demo model and its vectors directory the way a model team would hand them over:
/// `dir/model.onnx` and `dir/vectors/case-1/{inputs/x.npy, expected/y.npy}`.
pub fn write_model_dir(dir: &Path) -> PathBuf {
    let files = demo_files();
    std::fs::create_dir_all(dir.join("vectors/case-1/inputs")).expect("mkdir");
    std::fs::create_dir_all(dir.join("vectors/case-1/expected")).expect("mkdir");
    std::fs::write(dir.join("model.onnx"), &files[0].data).expect("write");
    std::fs::write(dir.join("vectors/case-1/inputs/x.npy"), &files[1].data).expect("write");
    std::fs::write(dir.join("vectors/case-1/expected/y.npy"), &files[2].data).expect("write");
    dir.join("model.onnx")
}

/// Every path (relative) under a directory with its size (0 for directories).
pub type Snapshot = Vec<(String, u64)>;

/// A listing of every path (relative) and size under `dir`, to prove a directory is unchanged.
pub fn snapshot(dir: &Path) -> Snapshot {
    fn walk(base: &Path, d: &Path, out: &mut Snapshot) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap_or(&p).display().to_string();
            let meta = std::fs::symlink_metadata(&p).expect("meta");
            out.push((rel, if meta.is_file() { meta.len() } else { 0 }));
            if meta.is_dir() {
                walk(base, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}
