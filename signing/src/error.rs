//! The one error type of `airlock-signing`: every refusal is its own variant, so callers (the
//! importer, `airlock-sign bundle verify`, tests) can tell exactly which rule a bundle broke.
//!
//! Invariant: no variant carries secret material (private keys never reach an error).

use std::io;

use crate::keys::KeyId;

/// Errors from keys, trust roots, manifests and the bundle reader and writer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing failed for a reason outside the bundle itself.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// A key file could not be used.
    #[error("key file {path}: {reason}")]
    KeyFile {
        /// The file.
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// The trust root is malformed or inconsistent.
    #[error("invalid trust root: {0}")]
    InvalidTrustRoot(String),
    /// A rotated trust root does not follow its predecessor.
    #[error("trust root rotation refused: {0}")]
    RotationRefused(String),
    /// The stream ended before the bundle did.
    #[error("bundle is truncated: {0}")]
    Truncated(String),
    /// The zstd or tar framing is damaged.
    #[error("bundle is malformed: {0}")]
    Malformed(String),
    /// Reading the bundle's bytes failed below the format (an upload cut off by the client or
    /// the network, a read error of the medium): a transport failure, not a fault of the bundle.
    #[error("the bundle could not be read to its end (a transport failure, not a fault of the bundle): {0}")]
    Transport(String),
    /// A limit from `Limits` was exceeded (decompression bombs, oversized manifests, ...).
    #[error("limit exceeded: {what} is larger than the limit of {limit}")]
    LimitExceeded {
        /// Which limit.
        what: String,
        /// The limit.
        limit: u64,
    },
    /// The first entry is not `manifest.json`.
    #[error("the first entry of a bundle must be manifest.json, found {found}")]
    MissingManifest {
        /// What was found instead.
        found: String,
    },
    /// The second entry is not `signatures.json`.
    #[error("the second entry of a bundle must be signatures.json, found {found}")]
    MissingSignatures {
        /// What was found instead.
        found: String,
    },
    /// `manifest.json` does not parse or breaks a manifest rule.
    #[error("invalid manifest: {0}")]
    InvalidManifest(String),
    /// `signatures.json` does not parse.
    #[error("invalid signatures.json: {0}")]
    InvalidSignatures(String),
    /// A signature was made by a key the trust root does not know.
    #[error("signature by unknown key {keyid}: the trust root has no such key")]
    UnknownKey {
        /// The signer.
        keyid: KeyId,
    },
    /// A signature was made by a key the trust root has revoked.
    #[error("signature by revoked key {keyid}")]
    RevokedKey {
        /// The signer.
        keyid: KeyId,
    },
    /// A signature does not verify over the signed bytes.
    #[error("signature by key {keyid} does not verify (the signed content was changed, or the signature is corrupt)")]
    BadSignature {
        /// The claimed signer.
        keyid: KeyId,
    },
    /// Fewer distinct valid signatures than the role's threshold.
    #[error("role {role} needs {required} distinct valid signature(s), found {valid}")]
    ThresholdNotMet {
        /// The role (`bundle`, `root`, ...).
        role: String,
        /// Distinct valid signatures found.
        valid: usize,
        /// The threshold.
        required: usize,
    },
    /// The bundle or trust root is past its expiry under the configured enforcement.
    #[error("{what} expired at {expired_at} (trusted time now {now})")]
    Expired {
        /// `bundle manifest` or `trust root`.
        what: String,
        /// Its expiry (RFC 3339).
        expired_at: String,
        /// The trusted time used (RFC 3339).
        now: String,
    },
    /// A signed issue time lies further ahead of this machine's clock than the allowed skew.
    #[error("{what} was issued at {issued_at}, later than this appliance accepts ({latest}: its clock plus [time] max_clock_skew); check the clock of the machine that signed it, and this one's")]
    IssuedInTheFuture {
        /// What was issued.
        what: String,
        /// Its signed issue time (RFC 3339).
        issued_at: String,
        /// The latest accepted (RFC 3339).
        latest: String,
    },
    /// The manifest asks for a newer airlock.
    #[error("bundle requires airlock {required} or newer (this is {running})")]
    RequiresNewerAirlock {
        /// The manifest's `min_airlock_version`.
        required: String,
        /// This build.
        running: String,
    },
    /// A tar entry name is absolute.
    #[error("entry {path} has an absolute path")]
    AbsolutePath {
        /// The name as found.
        path: String,
    },
    /// A tar entry name climbs out with `..`.
    #[error("entry {path} contains a `..` component")]
    PathTraversal {
        /// The name as found.
        path: String,
    },
    /// A tar entry name contains a NUL byte.
    #[error("entry name {path} contains a NUL byte")]
    NulInPath {
        /// The name as found (NULs shown escaped).
        path: String,
    },
    /// A tar entry name breaks the bundle path rules in another way.
    #[error("entry name {path} is not a valid bundle path: {reason}")]
    InvalidPath {
        /// The name as found.
        path: String,
        /// Which rule.
        reason: String,
    },
    /// A payload entry is not listed in the manifest.
    #[error("entry {path} is not listed in the manifest")]
    NotInManifest {
        /// The entry.
        path: String,
    },
    /// An entry is not a regular file (symlink, hardlink, device, FIFO, directory, extension header).
    #[error("entry {path} is a {kind}, only regular files are allowed")]
    ForbiddenEntryType {
        /// The entry.
        path: String,
        /// What it is.
        kind: String,
    },
    /// The same payload path appears twice.
    #[error("entry {path} appears more than once")]
    DuplicateEntry {
        /// The entry.
        path: String,
    },
    /// A file listed in the manifest is absent from the bundle.
    #[error("file {path} is listed in the manifest but missing from the bundle")]
    MissingFile {
        /// The file.
        path: String,
    },
    /// An entry's size differs from the manifest.
    #[error("entry {path} is {actual} bytes, the manifest says {declared}")]
    SizeMismatch {
        /// The entry.
        path: String,
        /// From the manifest.
        declared: u64,
        /// From the tar header.
        actual: u64,
    },
    /// An entry's SHA-256 differs from the manifest.
    #[error("entry {path} has SHA-256 {actual}, the manifest says {expected}")]
    DigestMismatch {
        /// The entry.
        path: String,
        /// From the manifest.
        expected: String,
        /// Computed while streaming.
        actual: String,
    },
    /// Non-zero data follows the end of the tar archive or the zstd frame.
    #[error("unexpected data after the end of the bundle")]
    TrailingData,
    /// An ONNX model or `.npy` vector cannot be used to build a bundle.
    #[error("{0}")]
    Input(String),
}

impl Error {
    /// A stable snake_case name for the kind of error, for audit records, JSON output and tests.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Io(_) => "io",
            Error::KeyFile { .. } => "key_file",
            Error::InvalidTrustRoot(_) => "invalid_trust_root",
            Error::RotationRefused(_) => "rotation_refused",
            Error::Truncated(_) => "truncated",
            Error::Malformed(_) => "malformed",
            Error::Transport(_) => "transport",
            Error::LimitExceeded { .. } => "limit_exceeded",
            Error::MissingManifest { .. } => "missing_manifest",
            Error::MissingSignatures { .. } => "missing_signatures",
            Error::InvalidManifest(_) => "invalid_manifest",
            Error::InvalidSignatures(_) => "invalid_signatures",
            Error::UnknownKey { .. } => "unknown_key",
            Error::RevokedKey { .. } => "revoked_key",
            Error::BadSignature { .. } => "bad_signature",
            Error::ThresholdNotMet { .. } => "threshold_not_met",
            Error::Expired { .. } => "expired",
            Error::IssuedInTheFuture { .. } => "issued_in_the_future",
            Error::RequiresNewerAirlock { .. } => "requires_newer_airlock",
            Error::AbsolutePath { .. } => "absolute_path",
            Error::PathTraversal { .. } => "path_traversal",
            Error::NulInPath { .. } => "nul_in_path",
            Error::InvalidPath { .. } => "invalid_path",
            Error::NotInManifest { .. } => "not_in_manifest",
            Error::ForbiddenEntryType { .. } => "forbidden_entry_type",
            Error::DuplicateEntry { .. } => "duplicate_entry",
            Error::MissingFile { .. } => "missing_file",
            Error::SizeMismatch { .. } => "size_mismatch",
            Error::DigestMismatch { .. } => "digest_mismatch",
            Error::TrailingData => "trailing_data",
            Error::Input(_) => "input",
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
