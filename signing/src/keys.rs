//! Ed25519 keys, key ids, SHA-256 digests and domain-separated detached signatures.
//!
//! Invariant: a private key is only ever read from a file the caller names and never appears in
//! `Debug`, `Display`, errors or logs; it is zeroized when dropped (ed25519-dalek's `zeroize`).
//! Every signature is made over `"airlock-v1:" || context || 0x00 || bytes`, so a signature for
//! one purpose (a manifest) can never be replayed as another (a trust root, an approval).

use std::fmt;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// What a signature is for; part of the signed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningContext {
    /// `manifest.json` of a bundle.
    Manifest,
    /// The `signed` part of a trust root.
    TrustRoot,
    /// An approval of a validated model version (signed approvals).
    Approval,
}

impl SigningContext {
    fn label(self) -> &'static [u8] {
        match self {
            SigningContext::Manifest => b"manifest",
            SigningContext::TrustRoot => b"trust-root",
            SigningContext::Approval => b"approval",
        }
    }

    /// The exact message that is signed for `bytes` in this context.
    pub fn message(self, bytes: &[u8]) -> Vec<u8> {
        let mut m = Vec::with_capacity(bytes.len() + 32);
        m.extend_from_slice(b"airlock-v1:");
        m.extend_from_slice(self.label());
        m.push(0);
        m.extend_from_slice(bytes);
        m
    }
}

/// A SHA-256 digest, shown and serialized as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    /// Digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Sha256Digest(Sha256::digest(bytes).into())
    }
    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    /// Parses 64 lowercase hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() != 64 || s.bytes().any(|b| b.is_ascii_uppercase()) {
            return None;
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Sha256Digest(out))
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.to_hex())
    }
}

impl Serialize for Sha256Digest {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Sha256Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Sha256Digest::from_hex(&s).ok_or_else(|| {
            serde::de::Error::custom(format!("{s:?} is not 64 lowercase hex digits"))
        })
    }
}

/// A key id: the SHA-256 of the 32 public key bytes, as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyId(Sha256Digest);

impl KeyId {
    /// The id of a public key.
    pub fn of(key: &PublicKey) -> Self {
        KeyId(Sha256Digest::of(key.0.as_bytes()))
    }
    /// Parses 64 lowercase hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        Sha256Digest::from_hex(s).map(KeyId)
    }
    /// The first 12 hex digits, for tables.
    pub fn short(&self) -> String {
        self.0.to_hex()[..12].to_string()
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_hex())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.0.to_hex())
    }
}

/// An Ed25519 public key (serialized as 64 hex digits).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(pub VerifyingKey);

impl PublicKey {
    /// Its key id.
    pub fn key_id(&self) -> KeyId {
        KeyId::of(self)
    }
    /// Checks `sig` over `bytes` in `context`.
    pub fn verify(&self, context: SigningContext, bytes: &[u8], sig: &SignatureBytes) -> bool {
        let sig = ed25519_dalek::Signature::from_bytes(&sig.0);
        self.0.verify_strict(&context.message(bytes), &sig).is_ok()
    }
    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut b = [0u8; 32];
        hex::decode_to_slice(s, &mut b).ok()?;
        VerifyingKey::from_bytes(&b).ok().map(PublicKey)
    }
    /// 64 hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0.as_bytes())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PublicKey::from_hex(&s).ok_or_else(|| {
            serde::de::Error::custom("not a valid Ed25519 public key (64 hex digits)")
        })
    }
}

/// A 64-byte Ed25519 signature (serialized as 128 hex digits).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SignatureBytes(pub [u8; 64]);

impl fmt::Debug for SignatureBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}…)", &hex::encode(self.0)[..16])
    }
}

impl Serialize for SignatureBytes {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}

impl<'de> Deserialize<'de> for SignatureBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let mut b = [0u8; 64];
        hex::decode_to_slice(&s, &mut b)
            .map_err(|_| serde::de::Error::custom("a signature is 128 hex digits"))?;
        Ok(SignatureBytes(b))
    }
}

/// One detached signature: who signed, and the signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// The signer's key id.
    pub keyid: KeyId,
    /// The signature over the context message.
    pub sig: SignatureBytes,
}

/// A private signing key. Never printed; zeroized on drop.
pub struct PrivateKey(SigningKey);

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey(keyid {}, secret withheld)", self.key_id())
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrivateKeyFile {
    #[serde(rename = "type")]
    kind: String,
    keyid: KeyId,
    public_key: PublicKey,
    private_key: Zeroizing<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublicKeyFile {
    #[serde(rename = "type")]
    kind: String,
    keyid: KeyId,
    public_key: PublicKey,
}

const PRIVATE_TYPE: &str = "airlock-ed25519-private-key";
const PUBLIC_TYPE: &str = "airlock-ed25519-public-key";

impl PrivateKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<Self> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::getrandom(seed.as_mut()).map_err(|e| Error::Io(std::io::Error::other(e)))?;
        Ok(PrivateKey(SigningKey::from_bytes(&seed)))
    }
    /// From a 32-byte seed (tests and fixtures that need determinism).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        PrivateKey(SigningKey::from_bytes(&seed))
    }
    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }
    /// The key id of the public half.
    pub fn key_id(&self) -> KeyId {
        self.public().key_id()
    }
    /// Signs `bytes` in `context`.
    pub fn sign(&self, context: SigningContext, bytes: &[u8]) -> Signature {
        Signature {
            keyid: self.key_id(),
            sig: SignatureBytes(self.0.sign(&context.message(bytes)).to_bytes()),
        }
    }

    /// Writes the key to a new file with mode 0600; refuses to overwrite an existing file.
    pub fn write_new(&self, path: &Path) -> Result<()> {
        let body = PrivateKeyFile {
            kind: PRIVATE_TYPE.into(),
            keyid: self.key_id(),
            public_key: self.public(),
            private_key: Zeroizing::new(hex::encode(self.0.to_bytes())),
        };
        let text = Zeroizing::new(
            serde_json::to_string_pretty(&body).map_err(std::io::Error::other)? + "\n",
        );
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| key_err(path, &e))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        Ok(())
    }

    /// Reads a private key file written by [`PrivateKey::write_new`].
    pub fn read(path: &Path) -> Result<Self> {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| key_err(path, &e))?);
        // The parse error of a private key file is not shown: serde could quote the secret.
        let file: PrivateKeyFile = serde_json::from_str(&text).map_err(|_| Error::KeyFile {
            path: path.display().to_string(),
            reason: "not an airlock private key file (expected the JSON that `airlock-sign keygen` writes)".into(),
        })?;
        if file.kind != PRIVATE_TYPE {
            return Err(key_err(
                path,
                &format!("type is {:?}, expected {PRIVATE_TYPE:?}", file.kind),
            ));
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(file.private_key.as_bytes(), seed.as_mut())
            .map_err(|_| key_err(path, &"private_key is not 64 hex digits"))?;
        let key = PrivateKey(SigningKey::from_bytes(&seed));
        if key.public() != file.public_key || key.key_id() != file.keyid {
            return Err(key_err(
                path,
                &"public_key or keyid does not match the private key",
            ));
        }
        Ok(key)
    }
}

fn key_err(path: &Path, reason: &dyn fmt::Display) -> Error {
    Error::KeyFile {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Writes a public key file (`KEY.pub`), refusing to overwrite.
pub fn write_public_key(path: &Path, key: &PublicKey) -> Result<()> {
    let body = PublicKeyFile {
        kind: PUBLIC_TYPE.into(),
        keyid: key.key_id(),
        public_key: *key,
    };
    let text = serde_json::to_string_pretty(&body).map_err(std::io::Error::other)? + "\n";
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
        .map_err(|e| key_err(path, &e))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// Reads a public key from a public key file, or the public half of a private key file.
pub fn read_public_key(path: &Path) -> Result<PublicKey> {
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| key_err(path, &e))?);
    if let Ok(file) = serde_json::from_str::<PublicKeyFile>(&text) {
        if file.kind != PUBLIC_TYPE || file.public_key.key_id() != file.keyid {
            return Err(key_err(path, &"type or keyid does not match"));
        }
        return Ok(file.public_key);
    }
    Ok(PrivateKey::read(path)?.public())
}

/// The bytes an approver signs (in [`SigningContext::Approval`]) to approve one model version:
/// canonical JSON naming the model, the version, the manifest's SHA-256 and the SHA-256 of the
/// validation report produced on the appliance. A signature therefore covers exactly the bundle
/// and the evidence the approver looked at.
pub fn approval_payload(
    model: &str,
    version: &str,
    manifest_sha256: &str,
    report_sha256: &str,
) -> Vec<u8> {
    let v = serde_json::json!({
        "type": "airlock-approval",
        "model": model,
        "version": version,
        "manifest_sha256": manifest_sha256,
        "validation_report_sha256": report_sha256,
    });
    crate::trust::canonical_json(&v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_separates_signatures() {
        let k = PrivateKey::from_seed([7; 32]);
        let s = k.sign(SigningContext::Manifest, b"x");
        assert!(k.public().verify(SigningContext::Manifest, b"x", &s.sig));
        assert!(!k.public().verify(SigningContext::TrustRoot, b"x", &s.sig));
        assert!(!k.public().verify(SigningContext::Manifest, b"y", &s.sig));
    }

    #[test]
    fn key_files_round_trip_and_never_overwrite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("k");
        let k = PrivateKey::generate().expect("random");
        k.write_new(&p).expect("write");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777,
            0o600
        );
        assert!(k.write_new(&p).is_err(), "refuses to overwrite");
        let back = PrivateKey::read(&p).expect("read");
        assert_eq!(back.key_id(), k.key_id());
        assert_eq!(read_public_key(&p).expect("pub"), k.public());
        let dbg = format!("{back:?}");
        let secret = hex::encode(back.0.to_bytes());
        assert!(!dbg.contains(&secret), "Debug never shows the secret");
    }
}
