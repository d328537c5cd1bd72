//! `airlock-signing`: everything the release side and any offline verifier need — keys and key
//! ids, the trust root with m-of-n roles and TUF-style rotation, detached signatures, and the
//! bundle format (manifest types, writer, and the streaming reader that yields only verified
//! entries). See `docs/bundle-format.md` for the format and `docs/security.md` for the rules.
//!
//! API boundary: this crate never touches appliance state (no sled, no store): it reads and
//! writes bundles and trust roots, and decides whether a bundle is trustworthy.
#![deny(missing_docs)]

pub mod clock;
pub mod error;
pub mod keys;
pub mod manifest;
pub mod npy;
pub mod onnx;
pub mod reader;
pub mod trust;
pub mod writer;

pub use clock::ExpiryCheck;
pub use error::{Error, Result};
pub use keys::{
    approval_payload, KeyId, PrivateKey, PublicKey, Sha256Digest, Signature, SigningContext,
};
pub use manifest::{BundlePath, Limits, Manifest, ModelName};
pub use reader::{
    read_bundle, verify_bundle, PayloadSink, ReadError, SignaturePolicy, VerifiedManifest,
};
pub use trust::{Role, TrustRoot};
