//! The streaming bundle reader: one pass, front to back, from any `Read`, with memory bounded by
//! [`Limits`] and independent of bundle size.
//!
//! Order of checks (each a step below, in the order `docs/bundle-format.md` gives):
//! 1. zstd frame, window ≤ `max_zstd_window_log`; every decompressed byte counted against a budget;
//! 2. entry 1 is `manifest.json`, entry 2 is `signatures.json`, both regular and within limits;
//! 3. signatures meet the trust root's `bundle` threshold — *before the manifest is parsed and
//!    before any payload byte is handed out*;
//! 4. the manifest's own rules, the trust root's and the manifest's expiry, `min_airlock_version`;
//! 5. each payload entry: regular file, valid path, listed, not seen before, size as declared;
//!    its bytes are hashed as they stream and a digest mismatch is an error *from the read that
//!    would complete the entry*, so a sink never sees a clean end of a bad file;
//! 6. every listed file was present; after the tar end only zero padding; nothing after the frame.
//!
//! Invariant: the sink's `file` is called only after step 4 passed, and the reader returns `Ok`
//! only if every step passed; sinks keep what they wrote only after that.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::io::{self, Read};
use std::rc::Rc;

use sha2::{Digest as _, Sha256};

use crate::clock::ExpiryCheck;
use crate::error::Error;
use crate::keys::{KeyId, Sha256Digest, Signature, SigningContext};
use crate::manifest::{BundlePath, FileEntry, Limits, Manifest, MANIFEST_NAME, SIGNATURES_NAME};
use crate::trust::{Role, TrustRoot};

/// `signatures.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureFile {
    /// Detached signatures over the exact bytes of `manifest.json`.
    pub signatures: Vec<Signature>,
}

/// How signatures are treated. Skipping them is an explicit, named mode.
#[derive(Debug, Clone, Copy)]
pub enum SignaturePolicy<'a> {
    /// The appliance's rule: the trust root's `bundle` threshold, its revocations, and expiry.
    TrustRoot {
        /// The current trust root.
        root: &'a TrustRoot,
        /// Trusted time and enforcement.
        expiry: ExpiryCheck,
    },
    /// No trust decision at all: framing, paths, sizes and digests only. For the release side
    /// (`bundle sign` adds a signature to a bundle that may have none yet; `bundle inspect`).
    UnverifiedReleaseSide,
}

/// What the reader established about a bundle.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedManifest {
    /// The parsed manifest.
    pub manifest: Manifest,
    /// The exact signed bytes.
    pub manifest_bytes: Vec<u8>,
    /// SHA-256 of `manifest_bytes`: the bundle's content address (it covers every file digest).
    pub digest: Sha256Digest,
    /// All signatures found.
    pub signatures: Vec<Signature>,
    /// Distinct keys whose valid signatures met the threshold (empty when unverified).
    pub signers: BTreeSet<KeyId>,
    /// Tolerated expiry problems (`grace` / `warn` modes), for the audit log.
    pub warnings: Vec<String>,
}

/// Receives a bundle's content as the reader verifies it.
pub trait PayloadSink {
    /// The sink's own error.
    type Error;
    /// Called once, after the signatures and the manifest were verified, before any payload.
    fn begin(&mut self, manifest: &VerifiedManifest) -> Result<(), Self::Error>;
    /// Called once per payload entry; `data` yields exactly the entry's bytes and fails on the
    /// read that would end a file whose digest does not match.
    fn file(&mut self, entry: &FileEntry, data: &mut dyn Read) -> Result<(), Self::Error>;
}

/// An error of the bundle, or of the sink.
#[derive(Debug, thiserror::Error)]
pub enum ReadError<E> {
    /// The bundle broke a rule.
    #[error(transparent)]
    Bundle(#[from] Error),
    /// The sink refused or failed.
    #[error("{0}")]
    Sink(E),
}

/// A sink that discards payload bytes (after they were hashed): `bundle verify`.
#[derive(Debug, Default)]
pub struct DiscardSink;

impl PayloadSink for DiscardSink {
    type Error = io::Error;
    fn begin(&mut self, _: &VerifiedManifest) -> io::Result<()> {
        Ok(())
    }
    fn file(&mut self, _: &FileEntry, data: &mut dyn Read) -> io::Result<()> {
        io::copy(data, &mut io::sink()).map(|_| ())
    }
}

/// The first fault seen below the tar layer (zstd or budget), shared with the classifier.
type Fault = Rc<RefCell<Option<Error>>>;

/// Counts decompressed bytes against the budget and turns zstd errors into bundle errors.
struct Budgeted<R> {
    inner: R,
    left: u64,
    budget: u64,
    window_log: u32,
    fault: Fault,
}

impl<R: Read> Read for Budgeted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) => {
                let err = if e.kind() == io::ErrorKind::UnexpectedEof {
                    Error::Truncated("the zstd stream ends inside a frame".into())
                } else if e.to_string().contains("memory") {
                    Error::LimitExceeded {
                        what: "the zstd window".into(),
                        limit: 1 << self.window_log,
                    }
                } else {
                    Error::Malformed(format!("zstd: {e}"))
                };
                let msg = err.to_string();
                self.fault.borrow_mut().get_or_insert(err);
                return Err(io::Error::other(msg));
            }
        };
        if n as u64 > self.left {
            let err = Error::LimitExceeded {
                what: "the decompressed bundle".into(),
                limit: self.budget,
            };
            let msg = err.to_string();
            self.fault.borrow_mut().get_or_insert(err);
            return Err(io::Error::other(msg));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// The bundle's source: a read error here is a transport failure (an upload cut off, a medium
/// that fails), recorded as such before the zstd layer sees it.
struct Source<R> {
    inner: R,
    fault: Fault,
}

impl<R: Read> Read for Source<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            if e.kind() != io::ErrorKind::Interrupted {
                self.fault
                    .borrow_mut()
                    .get_or_insert(Error::Transport(e.to_string()));
            }
        })
    }
}

/// Maps an I/O error from the tar layer to the bundle error that caused it.
fn classify(fault: &Fault, e: io::Error) -> Error {
    if let Some(f) = fault.borrow_mut().take() {
        return f;
    }
    match e.kind() {
        io::ErrorKind::UnexpectedEof => {
            Error::Truncated("the tar stream ends inside an entry".into())
        }
        _ => Error::Malformed(format!("tar: {e}")),
    }
}

/// Hashes an entry while it streams; fails the completing read on a digest mismatch.
struct HashingReader<'a, R> {
    inner: &'a mut R,
    path: &'a str,
    expected: Sha256Digest,
    remaining: u64,
    hasher: Sha256,
    failure: Option<Error>,
    fault: &'a Fault,
}

impl<R: Read> HashingReader<'_, R> {
    fn fail(&mut self, e: Error) -> io::Error {
        let msg = e.to_string();
        self.failure.get_or_insert(e);
        io::Error::new(io::ErrorKind::InvalidData, msg)
    }

    /// Reads what the sink left unread (verifying it too) and reports the entry's verdict.
    fn finish(mut self) -> Result<(), Error> {
        if self.failure.is_none() {
            let _ = io::copy(&mut self, &mut io::sink());
        }
        match self.failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl<R: Read> Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(f) = &self.failure {
            return Err(io::Error::new(io::ErrorKind::InvalidData, f.to_string()));
        }
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(self.remaining.min(usize::MAX as u64) as usize);
        let n = match self.inner.read(&mut buf[..want]) {
            Ok(n) => n,
            Err(e) => {
                let err = classify(self.fault, e);
                return Err(self.fail(err));
            }
        };
        if n == 0 {
            return Err(self.fail(Error::Truncated(format!(
                "the stream ends inside {}",
                self.path
            ))));
        }
        self.hasher.update(&buf[..n]);
        self.remaining -= n as u64;
        if self.remaining == 0 {
            // This read completes the entry: it may only succeed if the digest matches.
            let actual = Sha256Digest(std::mem::take(&mut self.hasher).finalize().into());
            if actual != self.expected {
                return Err(self.fail(Error::DigestMismatch {
                    path: self.path.to_string(),
                    expected: self.expected.to_hex(),
                    actual: actual.to_hex(),
                }));
            }
        }
        Ok(n)
    }
}

/// The name bytes of a tar header, checking that nothing hides behind a NUL terminator and that
/// no ustar prefix splits the name.
fn entry_name(header: &tar::Header) -> Result<Vec<u8>, Error> {
    let raw = &header.as_old().name;
    let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    if raw[end..].iter().any(|b| *b != 0) {
        // A name such as "ok.npy\0../../x": tools disagree on where it ends.
        return Err(Error::NulInPath {
            path: crate::manifest::unverified_name(raw),
        });
    }
    if let Some(ustar) = header.as_ustar() {
        if ustar.prefix.iter().any(|b| *b != 0) {
            return Err(Error::InvalidPath {
                path: crate::manifest::unverified_name(&raw[..end]),
                reason:
                    "the ustar prefix field is used (names longer than 100 bytes are not allowed)"
                        .into(),
            });
        }
    }
    Ok(raw[..end].to_vec())
}

fn kind_name(t: tar::EntryType) -> String {
    match t {
        tar::EntryType::Symlink => "symlink".into(),
        tar::EntryType::Link => "hardlink".into(),
        tar::EntryType::Char => "character device".into(),
        tar::EntryType::Block => "block device".into(),
        tar::EntryType::Fifo => "FIFO".into(),
        tar::EntryType::Directory => "directory".into(),
        tar::EntryType::XHeader | tar::EntryType::XGlobalHeader => "PAX extension header".into(),
        tar::EntryType::GNULongName | tar::EntryType::GNULongLink => "GNU long-name header".into(),
        tar::EntryType::GNUSparse => "sparse file".into(),
        other => format!("entry of type {:?}", other.as_byte() as char),
    }
}

/// A regular file entry's header facts, or the refusal for anything else.
fn regular_entry(header: &tar::Header) -> Result<(Vec<u8>, u64), Error> {
    let name = entry_name(header)?;
    let t = header.entry_type();
    if !(t == tar::EntryType::Regular || t.as_byte() == 0) {
        return Err(Error::ForbiddenEntryType {
            path: crate::manifest::unverified_name(&name),
            kind: kind_name(t),
        });
    }
    let size = header
        .entry_size()
        .map_err(|e| Error::Malformed(format!("tar header size: {e}")))?;
    Ok((name, size))
}

/// Reads a small metadata entry (manifest or signatures) in full, bounded by `limit`.
fn read_small<R: Read>(
    entry: Option<io::Result<tar::Entry<'_, R>>>,
    fault: &Fault,
    expected: &str,
    limit: u64,
    missing: impl Fn(String) -> Error,
) -> Result<Vec<u8>, Error> {
    let mut entry = match entry {
        None => return Err(missing("the end of the archive".into())),
        Some(e) => e.map_err(|e| classify(fault, e))?,
    };
    let (name, size) = regular_entry(entry.header())?;
    if name != expected.as_bytes() {
        return Err(missing(crate::manifest::unverified_name(&name)));
    }
    if size > limit {
        return Err(Error::LimitExceeded {
            what: format!("{expected} ({size} bytes)"),
            limit,
        });
    }
    let mut buf = Vec::with_capacity(size as usize);
    entry
        .read_to_end(&mut buf)
        .map_err(|e| classify(fault, e))?;
    if buf.len() as u64 != size {
        return Err(Error::Truncated(format!(
            "the stream ends inside {expected}"
        )));
    }
    Ok(buf)
}

/// Verifies signatures, then the manifest: steps 3 and 4.
fn verify_header(
    manifest_bytes: Vec<u8>,
    sig_bytes: &[u8],
    policy: &SignaturePolicy<'_>,
    limits: &Limits,
) -> Result<VerifiedManifest, Error> {
    let sigs: SignatureFile =
        serde_json::from_slice(sig_bytes).map_err(|e| Error::InvalidSignatures(e.to_string()))?;
    let mut warnings = Vec::new();
    let signers = match policy {
        SignaturePolicy::TrustRoot { root, expiry } => {
            // A root past its expiry cannot vouch for anything (under strict enforcement).
            warnings.extend(root.check_expiry(expiry)?);
            // Nothing in the manifest is trusted, or even parsed, before this passes.
            root.count_signatures(
                Role::Bundle,
                SigningContext::Manifest,
                &manifest_bytes,
                &sigs.signatures,
            )?
            .signers
        }
        SignaturePolicy::UnverifiedReleaseSide => BTreeSet::new(),
    };
    let manifest = Manifest::from_json(&manifest_bytes)?;
    manifest.check(limits)?;
    if let SignaturePolicy::TrustRoot { expiry, .. } = policy {
        expiry.check_issued(
            &format!("bundle {}-{}", manifest.model.name, manifest.model.version),
            manifest.issued_at,
        )?;
        warnings.extend(expiry.check(
            &format!("bundle {}-{}", manifest.model.name, manifest.model.version),
            manifest.expires_at,
        )?);
    }
    let running =
        semver::Version::parse(env!("CARGO_PKG_VERSION")).unwrap_or(semver::Version::new(0, 0, 0));
    if manifest.min_airlock_version > running {
        return Err(Error::RequiresNewerAirlock {
            required: manifest.min_airlock_version.to_string(),
            running: running.to_string(),
        });
    }
    Ok(VerifiedManifest {
        digest: Sha256Digest::of(&manifest_bytes),
        manifest,
        manifest_bytes,
        signatures: sigs.signatures,
        signers,
        warnings,
    })
}

/// Reads, verifies and streams a bundle into `sink`. See the module documentation for the steps.
pub fn read_bundle<R: Read, S: PayloadSink>(
    input: R,
    policy: &SignaturePolicy<'_>,
    limits: &Limits,
    sink: &mut S,
) -> Result<VerifiedManifest, ReadError<S::Error>> {
    let fault: Fault = Rc::default();
    // Step 1: one zstd frame with a bounded window; a budget on decompressed bytes stops bombs.
    let source = Source {
        inner: input,
        fault: fault.clone(),
    };
    let mut decoder = zstd::stream::read::Decoder::new(source).map_err(Error::Io)?;
    decoder
        .window_log_max(limits.max_zstd_window_log)
        .map_err(Error::Io)?;
    let decoder = decoder.single_frame();
    let budget = limits
        .max_total_size
        .saturating_add(limits.max_manifest_size)
        .saturating_add(limits.max_signatures_size)
        .saturating_add((u64::from(limits.max_entries) + 3) * 1024)
        .saturating_add(64 << 10);
    let counted = Budgeted {
        inner: decoder,
        left: budget,
        budget,
        window_log: limits.max_zstd_window_log,
        fault: fault.clone(),
    };
    let mut archive = tar::Archive::new(counted);
    let verified = {
        let mut entries = archive
            .entries()
            .map_err(|e| classify(&fault, e))?
            .raw(true);
        // Step 2: the two metadata entries, in order.
        let manifest_bytes = read_small(
            entries.next(),
            &fault,
            MANIFEST_NAME,
            limits.max_manifest_size,
            |found| Error::MissingManifest { found },
        )?;
        let sig_bytes = read_small(
            entries.next(),
            &fault,
            SIGNATURES_NAME,
            limits.max_signatures_size,
            |found| Error::MissingSignatures { found },
        )?;
        // Steps 3 and 4.
        let verified = verify_header(manifest_bytes, &sig_bytes, policy, limits)?;
        sink.begin(&verified).map_err(ReadError::Sink)?;
        // Step 5: payload entries.
        let mut seen: BTreeSet<BundlePath> = BTreeSet::new();
        for entry in entries {
            let mut entry = entry.map_err(|e| classify(&fault, e))?;
            let (name, size) = regular_entry(entry.header())?;
            let path = BundlePath::parse(&name)?;
            let file = verified
                .manifest
                .file(&path)
                .ok_or_else(|| Error::NotInManifest {
                    path: crate::manifest::unverified_name(path.as_str().as_bytes()),
                })?;
            if !seen.insert(path.clone()) {
                return Err(Error::DuplicateEntry {
                    path: path.to_string(),
                }
                .into());
            }
            if size != file.size {
                return Err(Error::SizeMismatch {
                    path: path.to_string(),
                    declared: file.size,
                    actual: size,
                }
                .into());
            }
            let mut hashing = HashingReader {
                inner: &mut entry,
                path: path.as_str(),
                expected: file.sha256,
                remaining: size,
                hasher: Sha256::new(),
                failure: None,
                fault: &fault,
            };
            let sunk = sink.file(file, &mut hashing);
            // The bundle's verdict comes first: a sink error caused by a bad entry is that entry's fault.
            hashing.finish()?;
            sunk.map_err(ReadError::Sink)?;
        }
        // Step 6a: nothing listed may be missing.
        if let Some(missing) = verified
            .manifest
            .files
            .iter()
            .find(|f| !seen.contains(&f.path))
        {
            return Err(Error::MissingFile {
                path: missing.path.to_string(),
            }
            .into());
        }
        verified
    };
    // Step 6b: after the tar end marker only zero padding, then the end of the one zstd frame.
    let mut rest = archive.into_inner();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = rest.read(&mut buf).map_err(|e| classify(&fault, e))?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|b| *b != 0) {
            return Err(Error::TrailingData.into());
        }
    }
    let mut after = rest.inner.finish();
    let mut one = [0u8; 1];
    if after.read(&mut one).map_err(Error::Io)? != 0 {
        return Err(Error::TrailingData.into());
    }
    Ok(verified)
}

/// Verifies a bundle completely and writes nothing (`airlock-sign bundle verify`).
pub fn verify_bundle<R: Read>(
    input: R,
    policy: &SignaturePolicy<'_>,
    limits: &Limits,
) -> Result<VerifiedManifest, Error> {
    read_bundle(input, policy, limits, &mut DiscardSink).map_err(|e| match e {
        ReadError::Bundle(b) => b,
        ReadError::Sink(io) => Error::Io(io),
    })
}
