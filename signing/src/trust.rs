//! The trust root (`root.json`): keys, per-role m-of-n thresholds, revocations, versioned
//! rotation with TUF's rule, and the threshold count over detached signatures.
//!
//! Invariant: a [`TrustRoot`] value is internally consistent (every role key is known, every
//! threshold is between 1 and its key count, no revoked key is trusted) and its own root role
//! signed it; a rotation is accepted only through [`TrustRoot::accept_rotation`].

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::clock::ExpiryCheck;
use crate::error::{Error, Result};
use crate::keys::{KeyId, PrivateKey, PublicKey, Signature, SigningContext};

/// The roles a trust root assigns keys to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Signs trust roots (rotation).
    Root,
    /// Signs bundle manifests.
    Bundle,
    /// Signs approvals of validated model versions.
    Approver,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Root => "root",
            Role::Bundle => "bundle",
            Role::Approver => "approver",
        })
    }
}

/// One key entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    /// Always `ed25519`.
    pub algorithm: String,
    /// The public key.
    pub public_key: PublicKey,
}

/// The keys of a role and how many of them must sign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleKeys {
    /// Key ids that may sign for the role.
    pub keyids: Vec<KeyId>,
    /// Distinct valid signatures needed.
    pub threshold: u32,
}

/// The signed part of a trust root.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootBody {
    /// Always `airlock-trust-root`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Starts at 1; each rotation adds exactly 1.
    pub version: u64,
    /// After this the root is expired.
    #[serde(with = "time::serde::rfc3339")]
    pub expires: OffsetDateTime,
    /// All keys, by key id.
    pub keys: BTreeMap<KeyId, KeyEntry>,
    /// Role assignments. `root` and `bundle` are required, `approver` is optional.
    pub roles: BTreeMap<Role, RoleKeys>,
    /// Keys that were dropped by a rotation (or revoked explicitly): never trusted again.
    #[serde(default)]
    pub revoked: BTreeSet<KeyId>,
}

/// A trust root file: the body and the root role's signatures over its canonical form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustRootFile {
    /// What is signed.
    pub signed: RootBody,
    /// Signatures by root-role keys over `canonical_json(signed)`.
    pub signatures: Vec<Signature>,
}

/// A verified, consistent trust root.
#[derive(Debug, Clone, PartialEq)]
pub struct TrustRoot {
    file: TrustRootFile,
}

const ROOT_TYPE: &str = "airlock-trust-root";

/// Serializes a JSON value canonically: object keys sorted by their UTF-8 bytes, no
/// whitespace, strings escaped as `serde_json` does, integers only (floats are refused).
pub fn canonical_json(v: &Value) -> Result<Vec<u8>> {
    fn write(v: &Value, out: &mut Vec<u8>) -> Result<()> {
        match v {
            Value::Null | Value::Bool(_) | Value::String(_) => {
                out.extend(serde_json::to_vec(v).map_err(std::io::Error::other)?)
            }
            Value::Number(n) => {
                if n.is_f64() {
                    return Err(Error::InvalidTrustRoot(
                        "floating-point numbers are not allowed".into(),
                    ));
                }
                out.extend(n.to_string().as_bytes());
            }
            Value::Array(a) => {
                out.push(b'[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write(x, out)?;
                }
                out.push(b']');
            }
            Value::Object(o) => {
                let mut keys: Vec<&String> = o.keys().collect();
                keys.sort();
                out.push(b'{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend(serde_json::to_vec(k).map_err(std::io::Error::other)?);
                    out.push(b':');
                    write(&o[k], out)?;
                }
                out.push(b'}');
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    write(v, &mut out)?;
    Ok(out)
}

/// How a signature by a revoked key is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Revoked {
    /// The whole set is refused: a revoked key was used (bundles, approvals, current roots).
    Refuse,
    /// Skipped: a rotation's own check, where the keys it retires legitimately sign it.
    Ignore,
}

/// The outcome of counting signatures against a role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThresholdMet {
    /// Distinct key ids whose signatures verified.
    pub signers: BTreeSet<KeyId>,
}

impl RootBody {
    /// The canonical bytes the root role signs.
    pub fn canonical_bytes(&self) -> Result<Vec<u8>> {
        canonical_json(&serde_json::to_value(self).map_err(std::io::Error::other)?)
    }

    /// Checks internal consistency.
    pub fn check_consistent(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidTrustRoot(m));
        if self.kind != ROOT_TYPE {
            return bad(format!("type is {:?}, expected {ROOT_TYPE:?}", self.kind));
        }
        if self.version == 0 {
            return bad("version must be 1 or more".into());
        }
        for (id, k) in &self.keys {
            if k.algorithm != "ed25519" {
                return bad(format!(
                    "key {id}: algorithm {:?} is not supported (only ed25519)",
                    k.algorithm
                ));
            }
            if k.public_key.key_id() != *id {
                return bad(format!(
                    "key {id}: the key id is not the SHA-256 of its public key"
                ));
            }
            if self.revoked.contains(id) {
                return bad(format!("key {id} is both trusted and revoked"));
            }
        }
        for required in [Role::Root, Role::Bundle] {
            if !self.roles.contains_key(&required) {
                return bad(format!("role {required} is missing"));
            }
        }
        for (role, rk) in &self.roles {
            let distinct: BTreeSet<_> = rk.keyids.iter().collect();
            if distinct.len() != rk.keyids.len() {
                return bad(format!("role {role} lists a key twice"));
            }
            if let Some(unknown) = rk.keyids.iter().find(|k| !self.keys.contains_key(k)) {
                return bad(format!(
                    "role {role} names key {unknown}, which is not in keys"
                ));
            }
            if rk.threshold == 0 || rk.threshold as usize > rk.keyids.len() {
                return bad(format!(
                    "role {role} has threshold {} with {} key(s): it must be between 1 and the number of keys",
                    rk.threshold,
                    rk.keyids.len()
                ));
            }
        }
        Ok(())
    }

    /// Counts distinct valid signatures of `role` over `bytes` in `context`.
    ///
    /// Rules, in order: a signature by a revoked key refuses the whole set (it proves a
    /// compromised key was used); signatures by keys outside the role are ignored if the
    /// threshold is met without them, and otherwise named in the error; a key that signs twice
    /// counts once.
    pub fn count_signatures(
        &self,
        role: Role,
        context: SigningContext,
        bytes: &[u8],
        signatures: &[Signature],
    ) -> Result<ThresholdMet> {
        self.count(role, context, bytes, signatures, Revoked::Refuse)
    }

    fn count(
        &self,
        role: Role,
        context: SigningContext,
        bytes: &[u8],
        signatures: &[Signature],
        revoked: Revoked,
    ) -> Result<ThresholdMet> {
        let rk = self.roles.get(&role).ok_or_else(|| {
            Error::InvalidTrustRoot(format!("role {role} is not defined in the trust root"))
        })?;
        let mut valid = BTreeSet::new();
        let mut unknown = None;
        let mut bad = None;
        for s in signatures {
            if self.revoked.contains(&s.keyid) {
                match revoked {
                    Revoked::Refuse => return Err(Error::RevokedKey { keyid: s.keyid }),
                    Revoked::Ignore => continue,
                }
            }
            let key = match self.keys.get(&s.keyid) {
                Some(k) if rk.keyids.contains(&s.keyid) => k,
                _ => {
                    unknown.get_or_insert(s.keyid);
                    continue;
                }
            };
            if key.public_key.verify(context, bytes, &s.sig) {
                valid.insert(s.keyid);
            } else {
                bad.get_or_insert(s.keyid);
            }
        }
        if valid.len() >= rk.threshold as usize {
            return Ok(ThresholdMet { signers: valid });
        }
        if let Some(keyid) = bad {
            return Err(Error::BadSignature { keyid });
        }
        if let Some(keyid) = unknown {
            return Err(Error::UnknownKey { keyid });
        }
        Err(Error::ThresholdNotMet {
            role: role.to_string(),
            valid: valid.len(),
            required: rk.threshold as usize,
        })
    }
}

impl TrustRoot {
    /// Parses a `root.json`, checks its consistency and that its own root role signed it.
    /// Expiry is not checked here (see [`TrustRoot::check_expiry`]): an appliance must still be
    /// able to read an expired root in order to accept its successor.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let (file, canon) = parse_root(bytes)?;
        file.signed.check_consistent()?;
        file.signed.count_signatures(
            Role::Root,
            SigningContext::TrustRoot,
            &canon,
            &file.signatures,
        )?;
        Ok(TrustRoot { file })
    }

    /// Reads and verifies a `root.json` file.
    pub fn read(path: &std::path::Path) -> Result<Self> {
        let bytes = std::fs::read(path)
            .map_err(|e| Error::InvalidTrustRoot(format!("cannot read {}: {e}", path.display())))?;
        Self::from_json(&bytes)
    }

    /// The signed body.
    pub fn body(&self) -> &RootBody {
        &self.file.signed
    }

    /// The whole file (body and signatures).
    pub fn file(&self) -> &TrustRootFile {
        &self.file
    }

    /// The version.
    pub fn version(&self) -> u64 {
        self.file.signed.version
    }

    /// Pretty JSON of the whole file, as written to disk.
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(&self.file).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Checks the root's own expiry.
    pub fn check_expiry(&self, check: &ExpiryCheck) -> Result<Option<String>> {
        check.check(
            &format!("trust root version {}", self.version()),
            self.file.signed.expires,
        )
    }

    /// Counts signatures for `role` (see [`RootBody::count_signatures`]).
    pub fn count_signatures(
        &self,
        role: Role,
        context: SigningContext,
        bytes: &[u8],
        signatures: &[Signature],
    ) -> Result<ThresholdMet> {
        self.file
            .signed
            .count_signatures(role, context, bytes, signatures)
    }

    /// TUF's rotation rule: `candidate` replaces `self` only if its version is exactly one more,
    /// it is signed by a threshold of *this* root's root keys *and* a threshold of its own root
    /// keys, it has not expired, and it revokes every key this root revoked or that it drops.
    pub fn accept_rotation(&self, candidate: &[u8], check: &ExpiryCheck) -> Result<TrustRoot> {
        let refuse = |m: String| Err(Error::RotationRefused(m));
        let (file, canon) = parse_root(candidate)?;
        let new = &file.signed;
        new.check_consistent()?;
        // Rule 1: versions advance one at a time, so no intermediate root can be skipped.
        if new.version != self.version() + 1 {
            return refuse(format!(
                "candidate is version {}, the current root is version {} (a rotation must be version {})",
                new.version,
                self.version(),
                self.version() + 1
            ));
        }
        // Rule 2: the current root's root role vouches for the candidate.
        self.count_signatures(
            Role::Root,
            SigningContext::TrustRoot,
            &canon,
            &file.signatures,
        )
        .map_err(|e| {
            Error::RotationRefused(format!("not signed by the current root's root keys: {e}"))
        })?;
        // Rule 3: the candidate's own root role vouches for itself.
        // The outgoing root keys sign too, and a rotation that replaces them revokes them: here
        // (and only here) their signatures are not held against the candidate.
        new.count(
            Role::Root,
            SigningContext::TrustRoot,
            &canon,
            &file.signatures,
            Revoked::Ignore,
        )
        .map_err(|e| {
            Error::RotationRefused(format!("not signed by the new root's own root keys: {e}"))
        })?;
        // Rule 4: a new root must be current.
        check.check(&format!("trust root version {}", new.version), new.expires)?;
        // Rule 5: revocation is forever, and every dropped key is revoked.
        let old = self.body();
        if let Some(k) = old.revoked.iter().find(|k| !new.revoked.contains(k)) {
            return refuse(format!("key {k} was revoked and must stay revoked"));
        }
        if let Some(k) = old
            .keys
            .keys()
            .find(|k| !new.keys.contains_key(k) && !new.revoked.contains(k))
        {
            return refuse(format!("key {k} is dropped but not listed as revoked"));
        }
        Ok(TrustRoot { file })
    }
}

/// Parses a root file and returns it with the canonical bytes of its `signed` value *as it
/// appears in the file* (strings verbatim), which is what the signatures cover.
fn parse_root(bytes: &[u8]) -> Result<(TrustRootFile, Vec<u8>)> {
    let raw: Value =
        serde_json::from_slice(bytes).map_err(|e| Error::InvalidTrustRoot(e.to_string()))?;
    let signed = raw
        .get("signed")
        .ok_or_else(|| Error::InvalidTrustRoot("no \"signed\" member".into()))?;
    let canon = canonical_json(signed)?;
    let file: TrustRootFile =
        serde_json::from_value(raw).map_err(|e| Error::InvalidTrustRoot(e.to_string()))?;
    Ok((file, canon))
}

/// Builds and signs trust roots (the release side of `trust init` / `trust rotate`).
#[derive(Debug, Clone)]
pub struct RootBuilder {
    body: RootBody,
}

impl RootBuilder {
    /// An empty version-1 root.
    pub fn new(expires: OffsetDateTime) -> Self {
        RootBuilder {
            body: RootBody {
                kind: ROOT_TYPE.into(),
                version: 1,
                expires: expires.replace_nanosecond(0).unwrap_or(expires),
                keys: BTreeMap::new(),
                roles: BTreeMap::new(),
                revoked: BTreeSet::new(),
            },
        }
    }

    /// The next version of `current`: same keys and roles, version + 1, no signatures yet.
    pub fn rotate_from(current: &TrustRoot, expires: OffsetDateTime) -> Self {
        let mut body = current.body().clone();
        body.version += 1;
        body.expires = expires.replace_nanosecond(0).unwrap_or(expires);
        RootBuilder { body }
    }

    /// Assigns `key` to `role` (adding the key if new).
    pub fn add_key(&mut self, role: Role, key: PublicKey) -> &mut Self {
        let id = key.key_id();
        self.body.keys.insert(
            id,
            KeyEntry {
                algorithm: "ed25519".into(),
                public_key: key,
            },
        );
        let rk = self.body.roles.entry(role).or_insert(RoleKeys {
            keyids: Vec::new(),
            threshold: 1,
        });
        if !rk.keyids.contains(&id) {
            rk.keyids.push(id);
        }
        self
    }

    /// Removes `keyid` from every role and revokes it.
    pub fn revoke_key(&mut self, keyid: KeyId) -> &mut Self {
        self.body.keys.remove(&keyid);
        for rk in self.body.roles.values_mut() {
            rk.keyids.retain(|k| *k != keyid);
        }
        self.body.revoked.insert(keyid);
        self
    }

    /// Sets a role's threshold.
    pub fn threshold(&mut self, role: Role, threshold: u32) -> &mut Self {
        if let Some(rk) = self.body.roles.get_mut(&role) {
            rk.threshold = threshold;
        }
        self
    }

    /// The body as it stands; keys no role uses are revoked, as a rotation that drops a key must.
    pub fn finish(&self) -> Result<RootBody> {
        let mut body = self.body.clone();
        let used: BTreeSet<KeyId> = body
            .roles
            .values()
            .flat_map(|r| r.keyids.iter().copied())
            .collect();
        let unused: Vec<KeyId> = body
            .keys
            .keys()
            .filter(|k| !used.contains(k))
            .copied()
            .collect();
        for k in unused {
            body.keys.remove(&k);
            body.revoked.insert(k);
        }
        body.check_consistent()?;
        Ok(body)
    }
}

impl RootBuilder {
    /// The finished body (see [`RootBuilder::finish`]) signed by each of `keys`.
    pub fn signed(&self, keys: &[PrivateKey]) -> Result<TrustRootFile> {
        let mut file = TrustRootFile {
            signed: self.finish()?,
            signatures: vec![],
        };
        for k in keys {
            sign_root(&mut file, k)?;
        }
        Ok(file)
    }
}

/// Adds `key`'s signature to a trust root file (replacing an earlier one by the same key).
pub fn sign_root(file: &mut TrustRootFile, key: &PrivateKey) -> Result<()> {
    let canon = file.signed.canonical_bytes()?;
    let sig = key.sign(SigningContext::TrustRoot, &canon);
    file.signatures.retain(|s| s.keyid != sig.keyid);
    file.signatures.push(sig);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn key(n: u8) -> PrivateKey {
        PrivateKey::from_seed([n; 32])
    }

    fn check() -> ExpiryCheck {
        ExpiryCheck {
            now: datetime!(2026-11-24 00:00 UTC),
            enforcement: airlock_config::ExpiryEnforcement::Strict,
            grace: std::time::Duration::ZERO,
            latest_issue: None,
        }
    }

    fn root_v1() -> TrustRoot {
        let mut b = RootBuilder::new(datetime!(2027-11-24 00:00 UTC));
        b.add_key(Role::Root, key(1).public())
            .add_key(Role::Root, key(2).public())
            .add_key(Role::Root, key(3).public())
            .threshold(Role::Root, 2)
            .add_key(Role::Bundle, key(10).public());
        let file = b.signed(&[key(1), key(2)]).expect("signed root");
        TrustRoot::from_json(&serde_json::to_vec(&file).expect("json")).expect("valid root")
    }

    fn rotated(current: &TrustRoot, signers: &[u8]) -> Vec<u8> {
        let mut b = RootBuilder::rotate_from(current, datetime!(2028-01-01 00:00 UTC));
        b.revoke_key(key(3).key_id())
            .add_key(Role::Root, key(4).public());
        let keys: Vec<PrivateKey> = signers.iter().map(|s| key(*s)).collect();
        let file = b.signed(&keys).expect("signed root");
        serde_json::to_vec_pretty(&file).expect("json")
    }

    #[test]
    fn canonical_form_ignores_layout() {
        let a: Value = serde_json::from_str(r#"{"b":1,"a":[true,null,"x"]}"#).expect("json");
        let b: Value =
            serde_json::from_str("{ \"a\" : [true, null, \"x\"],\n \"b\": 1 }").expect("json");
        assert_eq!(
            canonical_json(&a).expect("c"),
            canonical_json(&b).expect("c")
        );
        assert_eq!(
            canonical_json(&a).expect("c"),
            br#"{"a":[true,null,"x"],"b":1}"#
        );
    }

    #[test]
    fn self_signature_threshold_is_enforced() {
        let r = root_v1();
        let mut file = r.file().clone();
        file.signatures.truncate(1);
        let e =
            TrustRoot::from_json(&serde_json::to_vec(&file).expect("json")).expect_err("1 of 2");
        assert!(
            matches!(
                e,
                Error::ThresholdNotMet {
                    valid: 1,
                    required: 2,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn rotation_needs_old_and_new_thresholds() {
        let v1 = root_v1();
        // Old root keys 1+2 and new root keys (1,2,4 with threshold 2): 1+2 satisfy both.
        let v2 = v1
            .accept_rotation(&rotated(&v1, &[1, 2]), &check())
            .expect("accepted");
        assert_eq!(v2.version(), 2);
        assert!(
            v2.body().revoked.contains(&key(3).key_id()),
            "dropped key is revoked"
        );
        // Signed only by the new key 4 (+ a stolen single old key 1): old threshold unmet.
        let e = v1
            .accept_rotation(&rotated(&v1, &[4]), &check())
            .expect_err("new keys only");
        assert!(matches!(e, Error::RotationRefused(_)), "{e}");
        let e = v1
            .accept_rotation(&rotated(&v1, &[1, 4]), &check())
            .expect_err("one old key");
        assert!(
            matches!(e, Error::RotationRefused(ref m) if m.contains("current root")),
            "{e}"
        );
        // Skipping a version is refused.
        let e = v1
            .accept_rotation(&rotated(&v2, &[1, 2]), &check())
            .expect_err("skip");
        assert!(
            matches!(e, Error::RotationRefused(ref m) if m.contains("version 3")),
            "{e}"
        );
        // Replaying the current version is refused.
        let e = v2
            .accept_rotation(&rotated(&v1, &[1, 2]), &check())
            .expect_err("replay");
        assert!(matches!(e, Error::RotationRefused(_)), "{e}");
    }

    #[test]
    fn revoked_key_signature_refuses_even_above_threshold() {
        let v1 = root_v1();
        let v2 = v1
            .accept_rotation(&rotated(&v1, &[1, 2]), &check())
            .expect("accepted");
        let bytes = b"m";
        let sigs = vec![
            key(1).sign(SigningContext::Manifest, bytes),
            key(3).sign(SigningContext::Manifest, bytes),
        ];
        let e = v2
            .count_signatures(Role::Root, SigningContext::Manifest, bytes, &sigs)
            .expect_err("revoked");
        assert!(matches!(e, Error::RevokedKey { keyid } if keyid == key(3).key_id()));
    }

    #[test]
    fn duplicate_signatures_count_once() {
        let r = root_v1();
        let s = key(1).sign(SigningContext::Manifest, b"m");
        let e = r
            .count_signatures(Role::Root, SigningContext::Manifest, b"m", &[s, s, s])
            .expect_err("one distinct signer");
        assert!(
            matches!(
                e,
                Error::ThresholdNotMet {
                    valid: 1,
                    required: 2,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn inconsistent_roots_are_refused() {
        let mut b = RootBuilder::new(datetime!(2027-11-24 00:00 UTC));
        b.add_key(Role::Root, key(1).public())
            .threshold(Role::Root, 2);
        assert!(
            matches!(b.finish(), Err(Error::InvalidTrustRoot(_))),
            "threshold above key count"
        );
        let mut b = RootBuilder::new(datetime!(2027-11-24 00:00 UTC));
        b.add_key(Role::Root, key(1).public());
        assert!(matches!(b.finish(), Err(Error::InvalidTrustRoot(m)) if m.contains("bundle")));
    }
}
