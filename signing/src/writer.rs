//! Writing bundles: building a manifest from an `.onnx` file and a vectors directory, and
//! writing `manifest.json`, `signatures.json` and the payload as one zstd-compressed ustar stream.
//!
//! Invariant: the writer emits only what the reader accepts: ustar regular-file headers with
//! names ≤ 100 bytes, mode 0644, uid/gid 0, mtime 0 (reproducible), payload in manifest order,
//! then the two-block end marker. Output goes to a temporary file renamed into place when complete.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::keys::{PrivateKey, Sha256Digest, SigningContext};
use crate::manifest::{
    BundlePath, FileEntry, FileRole, GoldenVector, Hardware, Limits, Manifest, ModelId, ModelName,
    FORMAT_VERSION, MANIFEST_NAME, SIGNATURES_NAME,
};
use crate::npy;
use crate::reader::{
    read_bundle, PayloadSink, ReadError, SignatureFile, SignaturePolicy, VerifiedManifest,
};

/// What `bundle create` needs besides the files.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// Model name.
    pub name: ModelName,
    /// Model version.
    pub version: semver::Version,
    /// Hardware requirements.
    pub hardware: Hardware,
    /// Issue time (normally now).
    pub issued_at: OffsetDateTime,
    /// Expiry.
    pub expires_at: OffsetDateTime,
    /// Oldest airlock allowed to import it.
    pub min_airlock_version: semver::Version,
    /// Default relative tolerance of the vectors.
    pub rtol: f64,
    /// Default absolute tolerance of the vectors.
    pub atol: f64,
}

impl CreateOptions {
    /// Options for `name` `version`, issued now (whole seconds) and valid for `valid_for`, for any
    /// execution provider, requiring this airlock version, with tolerances rtol 1e-4, atol 1e-5.
    pub fn new(
        name: ModelName,
        version: semver::Version,
        valid_for: time::Duration,
    ) -> Result<Self> {
        let now = OffsetDateTime::now_utc();
        let now = now.replace_nanosecond(0).unwrap_or(now);
        Ok(CreateOptions {
            name,
            version,
            hardware: Hardware {
                execution_provider: crate::manifest::ExecutionProvider::Any,
                min_compute_capability: None,
                gpu_memory_budget_mib: None,
                min_onnxruntime: None,
            },
            issued_at: now,
            expires_at: now + valid_for,
            min_airlock_version: semver::Version::parse(env!("CARGO_PKG_VERSION"))
                .map_err(|e| input_err(format!("this build's version: {e}")))?,
            rtol: 1e-4,
            atol: 1e-5,
        })
    }
}

/// A manifest and where each of its payload files comes from.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The manifest.
    pub manifest: Manifest,
    /// Bundle path → source file.
    pub sources: BTreeMap<BundlePath, PathBuf>,
}

fn input_err(m: impl std::fmt::Display) -> Error {
    Error::Input(m.to_string())
}

fn hash_file(path: &Path) -> Result<(u64, Sha256Digest)> {
    use sha2::Digest as _;
    let mut f = File::open(path).map_err(|e| input_err(format!("{}: {e}", path.display())))?;
    let mut h = sha2::Sha256::new();
    let size = io::copy(&mut f, &mut h)?;
    Ok((size, Sha256Digest(h.finalize().into())))
}

fn file_name(p: &Path) -> Result<String> {
    p.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| input_err(format!("{}: not a usable file name", p.display())))
}

fn sorted_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| input_err(format!("{}: {e}", dir.display())))?
        .map(|e| e.map(|e| e.path()))
        .collect::<io::Result<_>>()?;
    v.retain(|p| {
        !p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'))
    });
    v.sort();
    Ok(v)
}

/// Plans a bundle: reads the contract from `model`, finds its external data next to it (plus
/// `extra_data`), and reads golden vectors from `vectors_dir/<case>/inputs/<tensor>.npy` and
/// `vectors_dir/<case>/expected/<tensor>.npy`, checking each against the contract.
pub fn plan(
    model: &Path,
    extra_data: &[PathBuf],
    vectors_dir: Option<&Path>,
    opts: &CreateOptions,
) -> Result<Plan> {
    let bytes = std::fs::read(model).map_err(|e| input_err(format!("{}: {e}", model.display())))?;
    let info = crate::onnx::read_model_info(bytes)?;
    let mut sources = BTreeMap::new();
    let mut files = Vec::new();
    let mut add = |path: BundlePath, src: &Path, role: FileRole| -> Result<()> {
        let (size, sha256) = hash_file(src)?;
        if sources.insert(path.clone(), src.to_path_buf()).is_some() {
            return Err(input_err(format!("{path} would be in the bundle twice")));
        }
        files.push(FileEntry {
            path,
            size,
            sha256,
            role,
        });
        Ok(())
    };
    let model_path = bp(&format!("model/{}", file_name(model)?))?;
    add(model_path.clone(), model, FileRole::Model)?;
    let model_dir = model.parent().unwrap_or(Path::new("."));
    let mut data: Vec<PathBuf> = info
        .external_data
        .iter()
        .map(|loc| model_dir.join(loc))
        .collect();
    for extra in extra_data {
        if !data.contains(extra) {
            data.push(extra.clone());
        }
    }
    for (loc, src) in info
        .external_data
        .iter()
        .map(Some)
        .chain(std::iter::repeat(None))
        .zip(&data)
    {
        if !src.is_file() {
            return Err(input_err(format!(
                "the model references external data {:?}, which is not at {}",
                loc.map(String::as_str).unwrap_or("?"),
                src.display()
            )));
        }
        // External data keeps its location relative to the model file.
        let rel = loc.cloned().unwrap_or(file_name(src)?);
        add(bp(&format!("model/{rel}"))?, src, FileRole::ExternalData)?;
    }
    let mut vectors = Vec::new();
    if let Some(dir) = vectors_dir {
        for case_dir in sorted_dir(dir)? {
            if !case_dir.is_dir() {
                continue;
            }
            let case = file_name(&case_dir)?;
            let mut v = GoldenVector {
                name: case.clone(),
                inputs: BTreeMap::new(),
                expected: BTreeMap::new(),
                rtol: opts.rtol,
                atol: opts.atol,
            };
            let mut bindings = BTreeMap::new();
            for (sub, is_input) in [("inputs", true), ("expected", false)] {
                let sd = case_dir.join(sub);
                if !sd.is_dir() {
                    return Err(input_err(format!(
                        "vector case {case}: {} is missing",
                        sd.display()
                    )));
                }
                for (i, f) in sorted_dir(&sd)?.into_iter().enumerate() {
                    let fname = file_name(&f)?;
                    let Some(tensor) = fname.strip_suffix(".npy") else {
                        return Err(input_err(format!(
                            "{}: vectors are .npy files named after the tensor",
                            f.display()
                        )));
                    };
                    let specs = if is_input {
                        &info.contract.inputs
                    } else {
                        &info.contract.outputs
                    };
                    let spec =
                        specs.iter().find(|s| s.name == tensor).ok_or_else(|| {
                            input_err(format!(
                            "vector case {case}: {tensor:?} is not an {} of the model (it has: {})",
                            if is_input { "input" } else { "output" },
                            specs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
                        ))
                        })?;
                    let arr = npy::read(&f)?;
                    npy::check_against_spec(spec, &arr.header, &mut bindings)
                        .map_err(|m| input_err(format!("vector case {case}: {m}")))?;
                    let path = bp(&format!(
                        "vectors/{case}/{}{i}.npy",
                        if is_input { "in" } else { "out" }
                    ))?;
                    add(path.clone(), &f, FileRole::Vector)?;
                    if is_input {
                        &mut v.inputs
                    } else {
                        &mut v.expected
                    }
                    .insert(tensor.to_string(), path);
                }
            }
            if let Some(missing) = info
                .contract
                .inputs
                .iter()
                .find(|s| !v.inputs.contains_key(&s.name))
            {
                return Err(input_err(format!(
                    "vector case {case}: input {:?} is missing",
                    missing.name
                )));
            }
            vectors.push(v);
        }
    }
    let manifest = Manifest {
        format: FORMAT_VERSION,
        model: ModelId {
            name: opts.name.clone(),
            version: opts.version.clone(),
        },
        contract: info.contract,
        model_file: model_path,
        files,
        vectors,
        hardware: opts.hardware.clone(),
        issued_at: opts.issued_at,
        expires_at: opts.expires_at,
        min_airlock_version: opts.min_airlock_version.clone(),
    };
    manifest.check(&Limits::default())?;
    Ok(Plan { manifest, sources })
}

fn bp(s: &str) -> Result<BundlePath> {
    BundlePath::parse(s.as_bytes())
        .map_err(|e| input_err(format!("cannot name a bundle file {s:?}: {e}")))
}

/// Pretty JSON of a manifest, as signed.
pub fn manifest_json(m: &Manifest) -> Vec<u8> {
    let mut v = serde_json::to_vec_pretty(m).unwrap_or_default();
    v.push(b'\n');
    v
}

fn header(name: &str, size: u64) -> Result<tar::Header> {
    let mut h = tar::Header::new_ustar();
    h.set_path(name)?;
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    Ok(h)
}

/// Streams a bundle: manifest, signatures, then payload entries taken from `payload` in order.
pub struct BundleWriter<W: Write> {
    tar: tar::Builder<zstd::stream::write::Encoder<'static, W>>,
}

impl<W: Write> BundleWriter<W> {
    /// Starts a bundle with its two metadata entries.
    pub fn new(
        out: W,
        manifest_bytes: &[u8],
        signatures: &SignatureFile,
        level: i32,
    ) -> Result<Self> {
        let mut enc = zstd::stream::write::Encoder::new(out, level)?;
        enc.include_checksum(true)?;
        let mut tar = tar::Builder::new(enc);
        tar.mode(tar::HeaderMode::Deterministic);
        let sig_bytes = serde_json::to_vec_pretty(signatures).map_err(io::Error::other)?;
        tar.append(
            &header(MANIFEST_NAME, manifest_bytes.len() as u64)?,
            manifest_bytes,
        )?;
        tar.append(
            &header(SIGNATURES_NAME, sig_bytes.len() as u64)?,
            &sig_bytes[..],
        )?;
        Ok(BundleWriter { tar })
    }

    /// Appends one payload entry of exactly `size` bytes.
    pub fn add(&mut self, path: &BundlePath, size: u64, data: impl Read) -> Result<()> {
        let mut counted = data.take(size);
        self.tar
            .append(&header(path.as_str(), size)?, &mut counted)?;
        if counted.limit() != 0 {
            return Err(input_err(format!(
                "{path}: the source ended {} bytes early",
                counted.limit()
            )));
        }
        Ok(())
    }

    /// Writes the end marker and the end of the zstd frame.
    pub fn finish(self) -> Result<W> {
        let enc = self.tar.into_inner()?;
        Ok(enc.finish()?)
    }
}

/// Writes `data` to `dest` through a temporary file in the same directory, renamed when complete.
pub fn write_atomically(
    dest: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<()>,
) -> Result<()> {
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".airlock-partial-")
        .tempfile_in(dir)
        .map_err(|e| input_err(format!("cannot create a file in {}: {e}", dir.display())))?;
    let (file, tmp_path) = tmp.into_parts();
    let mut w = BufWriter::new(file);
    write(&mut w)?;
    let file = w.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    tmp_path
        .persist(dest)
        .map_err(|e| input_err(format!("cannot write {}: {}", dest.display(), e.error)))?;
    Ok(())
}

/// Writes a planned bundle, signed by `keys` (possibly none: `bundle sign` adds them later).
pub fn write_plan(
    plan: &Plan,
    keys: &[PrivateKey],
    dest: &Path,
    level: i32,
) -> Result<Sha256Digest> {
    let manifest_bytes = manifest_json(&plan.manifest);
    let signatures = SignatureFile {
        signatures: keys
            .iter()
            .map(|k| k.sign(SigningContext::Manifest, &manifest_bytes))
            .collect(),
    };
    write_atomically(dest, |w| {
        let mut bw = BundleWriter::new(w, &manifest_bytes, &signatures, level)?;
        for f in &plan.manifest.files {
            let src = &plan.sources[&f.path];
            let file = File::open(src).map_err(|e| input_err(format!("{}: {e}", src.display())))?;
            bw.add(&f.path, f.size, file)?;
        }
        bw.finish()?;
        Ok(())
    })?;
    Ok(Sha256Digest::of(&manifest_bytes))
}

/// Copies a verified bundle's payload into a new bundle with other signatures.
struct Resign<W: Write> {
    writer: Option<BundleWriter<W>>,
    out: Option<W>,
    add: Vec<PrivateKey>,
    level: i32,
}

impl<W: Write> PayloadSink for Resign<W> {
    type Error = Error;
    fn begin(&mut self, v: &VerifiedManifest) -> Result<()> {
        let mut signatures = SignatureFile {
            signatures: v.signatures.clone(),
        };
        for k in &self.add {
            let s = k.sign(SigningContext::Manifest, &v.manifest_bytes);
            signatures.signatures.retain(|o| o.keyid != s.keyid);
            signatures.signatures.push(s);
        }
        let out = self
            .out
            .take()
            .ok_or_else(|| input_err("writer used twice"))?;
        self.writer = Some(BundleWriter::new(
            out,
            &v.manifest_bytes,
            &signatures,
            self.level,
        )?);
        Ok(())
    }
    fn file(&mut self, entry: &FileEntry, data: &mut dyn Read) -> Result<()> {
        let w = self
            .writer
            .as_mut()
            .ok_or_else(|| input_err("payload before manifest"))?;
        w.add(&entry.path, entry.size, data)
    }
}

/// Adds signatures by `keys` to the bundle at `src`, writing the result to `dest` (which may be
/// `src`). The payload is verified against the manifest while it is copied, so nobody signs a
/// bundle whose files do not match what they sign.
pub fn add_signatures(
    src: &Path,
    dest: &Path,
    keys: Vec<PrivateKey>,
    limits: &Limits,
    level: i32,
) -> Result<VerifiedManifest> {
    let input = File::open(src).map_err(|e| input_err(format!("{}: {e}", src.display())))?;
    let mut verified = None;
    write_atomically(dest, |w| {
        let mut sink = Resign {
            writer: None,
            out: Some(w),
            add: keys,
            level,
        };
        let v = read_bundle(
            io::BufReader::new(input),
            &SignaturePolicy::UnverifiedReleaseSide,
            limits,
            &mut sink,
        )
        .map_err(|e| match e {
            ReadError::Bundle(b) | ReadError::Sink(b) => b,
        })?;
        sink.writer
            .take()
            .ok_or_else(|| input_err("empty bundle"))?
            .finish()?;
        verified = Some(v);
        Ok(())
    })?;
    verified.ok_or_else(|| input_err("bundle was not read"))
}
