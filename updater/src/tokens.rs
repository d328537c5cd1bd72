//! API tokens, stored hashed: a token is `al_<id>_<secret>`; the registry keeps the id, a name,
//! the scopes and the SHA-256 of the secret — never the secret itself, which is shown once, at
//! creation. Creating and revoking a token are audited (by id and name, never by value).
//!
//! Invariant: no function here returns or logs a secret except `create`, to its caller.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// What a token may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scope {
    /// Inference on one model (`model:NAME`) or on every model (`model:*`).
    Model(String),
    /// Reading `/metrics`.
    Metrics,
    /// The admin API on the TLS listener with one role (`admin:viewer`, `admin:operator`,
    /// `admin:approver`, `admin:admin`).
    Admin(airlock_config::Role),
}

impl Scope {
    /// Parses `model:NAME`, `model:*` or `metrics`.
    pub fn parse(s: &str) -> Result<Scope, String> {
        match s {
            "metrics" => Ok(Scope::Metrics),
            _ => match (s.strip_prefix("model:"), s.strip_prefix("admin:")) {
                (Some(m), _) if !m.is_empty() => Ok(Scope::Model(m.to_string())),
                (_, Some(r)) => airlock_config::Role::parse(r).map(Scope::Admin).ok_or_else(|| {
                    format!("invalid scope {s:?}: no role {r:?} (allowed: admin:viewer, admin:operator, admin:approver, admin:admin)")
                }),
                _ => Err(format!(
                    "invalid scope {s:?} (allowed: model:NAME, model:*, metrics, admin:viewer|operator|approver|admin)"
                )),
            },
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Model(m) => write!(f, "model:{m}"),
            Scope::Metrics => f.write_str("metrics"),
            Scope::Admin(r) => write!(f, "admin:{}", r.as_str()),
        }
    }
}

/// A stored token (no secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Public id (the lookup key; appears in the token and in audit records).
    pub id: String,
    /// A human name.
    pub name: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// SHA-256 (hex) of the secret part.
    pub secret_sha256: String,
    /// Who created it.
    pub created_by: String,
    /// When.
    pub created_at: String,
    /// When it was revoked, if it was.
    pub revoked_at: Option<String>,
    /// After a rotation: the SHA-256 of the previous secret, which keeps working until
    /// `previous_until` so that clients in flight are not cut off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_sha256: Option<String>,
    /// Unix seconds until which the previous secret is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_until: Option<i64>,
}

impl TokenRecord {
    /// Whether the token grants `scope` (`model:*` grants every model).
    pub fn grants(&self, scope: &Scope) -> bool {
        self.revoked_at.is_none()
            && self.scopes.iter().any(|s| {
                s == scope || (matches!((s, scope), (Scope::Model(a), Scope::Model(_)) if a == "*"))
            })
    }
}

/// Splits a presented token into (id, secret) if it has the right shape.
pub fn split_token(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix("al_")?;
    let (id, secret) = rest.split_once('_')?;
    let ok = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (ok(id, 16) && ok(secret, 64)).then_some((id, secret))
}

/// SHA-256 (hex) of a secret.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Compares two equal-length strings without an early exit.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Checks a presented token against the stored records: the record if it is valid and not
/// revoked — its current secret, or (after a rotation) its previous one until the overlap ends
/// (`now`: Unix seconds). Revocation ends both at once.
pub fn verify<'a>(
    records: &'a std::collections::BTreeMap<String, TokenRecord>,
    token: &str,
    now: i64,
) -> Option<&'a TokenRecord> {
    let (id, secret) = split_token(token)?;
    let rec = records.get(id)?;
    verify_secret(rec, secret, now).then_some(rec)
}

/// Whether `secret` (the part of a token after its id) is `rec`'s current secret, or its
/// previous one within the rotation overlap; a revoked record matches nothing.
pub fn verify_secret(rec: &TokenRecord, secret: &str, now: i64) -> bool {
    if rec.revoked_at.is_some() {
        return false;
    }
    let presented = hash_secret(secret);
    let current = constant_time_eq(&rec.secret_sha256, &presented);
    let previous = match (&rec.previous_sha256, rec.previous_until) {
        (Some(h), Some(until)) => now < until && constant_time_eq(h, &presented),
        _ => false,
    };
    current || previous
}

/// Fresh random id (8 bytes) and secret (32 bytes), hex.
pub fn generate() -> std::io::Result<(String, String)> {
    let mut b = [0u8; 40];
    getrandom(&mut b)?;
    Ok((hex::encode(&b[..8]), hex::encode(&b[8..])))
}

fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_hash_and_scopes() {
        let (id, secret) = generate().expect("random");
        let token = format!("al_{id}_{secret}");
        assert_eq!(split_token(&token), Some((id.as_str(), secret.as_str())));
        assert!(split_token("al_short_x").is_none());
        let rec = TokenRecord {
            id: id.clone(),
            name: "ci".into(),
            scopes: vec![Scope::Model("demo".into()), Scope::Metrics],
            secret_sha256: hash_secret(&secret),
            created_by: "root".into(),
            created_at: "now".into(),
            revoked_at: None,
            previous_sha256: None,
            previous_until: None,
        };
        let map = std::collections::BTreeMap::from([(id.clone(), rec.clone())]);
        assert!(verify(&map, &token, 0).is_some());
        assert!(verify(&map, &format!("al_{id}_{}", "0".repeat(64)), 0).is_none());
        // After a rotation the old secret works until the overlap ends, the new one always.
        let (_, new_secret) = generate().expect("random");
        let rotated = TokenRecord {
            secret_sha256: hash_secret(&new_secret),
            previous_sha256: Some(rec.secret_sha256.clone()),
            previous_until: Some(100),
            ..rec.clone()
        };
        let map = std::collections::BTreeMap::from([(id.clone(), rotated)]);
        assert!(verify(&map, &token, 99).is_some());
        assert!(verify(&map, &token, 100).is_none());
        assert!(verify(&map, &format!("al_{id}_{new_secret}"), 1000).is_some());
        assert!(rec.grants(&Scope::Model("demo".into())) && rec.grants(&Scope::Metrics));
        assert!(!rec.grants(&Scope::Model("other".into())));
        let all = TokenRecord {
            scopes: vec![Scope::Model("*".into())],
            ..rec.clone()
        };
        assert!(all.grants(&Scope::Model("other".into())) && !all.grants(&Scope::Metrics));
        let revoked = TokenRecord {
            revoked_at: Some("then".into()),
            ..rec
        };
        assert!(!revoked.grants(&Scope::Metrics));
        assert_eq!(Scope::parse("model:x"), Ok(Scope::Model("x".into())));
        assert!(Scope::parse("admin").is_err());
    }
}
