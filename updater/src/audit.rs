//! The hash-chained audit log: every state change (and every refused import) is a record that
//! holds the SHA-256 of the record before it; the head (sequence and hash of the last record) is
//! kept beside the chain, so an edited, reordered, deleted or truncated record is detected.
//!
//! Invariant: records are appended only inside the registry's transactions (see `registry`),
//! never rewritten; they name who, what and when, and never hold a secret.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// One record of the log (defined with the API's types: stored and shown the same).
pub use airlock_api::AuditRecord;

/// The position and hash of the last record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    /// Number of records.
    pub count: u64,
    /// SHA-256 of the last record's bytes (zeros when empty).
    pub hash: [u8; 32],
}

impl ChainHead {
    /// The head of an empty chain.
    pub const EMPTY: ChainHead = ChainHead {
        count: 0,
        hash: [0; 32],
    };
}

/// What is appended: the record minus the chain fields.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// Which model.
    pub model: Option<String>,
    /// Which version.
    pub version: Option<String>,
    /// Details.
    pub detail: serde_json::Value,
}

/// Links `entry` after `head`: returns the record's bytes and the new head.
pub(crate) fn link(
    head: ChainHead,
    time: String,
    entry: &AuditEntry,
) -> Result<(Vec<u8>, ChainHead)> {
    let record = AuditRecord {
        seq: head.count,
        time,
        actor: entry.actor.clone(),
        action: entry.action.clone(),
        model: entry.model.clone(),
        version: entry.version.clone(),
        detail: entry.detail.clone(),
        prev: hex::encode(head.hash),
    };
    let bytes = serde_json::to_vec(&record).map_err(|e| Error::Database(e.to_string()))?;
    let hash: [u8; 32] = Sha256::digest(&bytes).into();
    Ok((
        bytes,
        ChainHead {
            count: head.count + 1,
            hash,
        },
    ))
}

/// Checks a chain given as `(key, stored bytes)` pairs in key order against its head.
pub fn verify_chain(
    records: impl IntoIterator<Item = (u64, Vec<u8>)>,
    head: ChainHead,
) -> Result<u64> {
    let mut expected_seq = 0u64;
    let mut prev = [0u8; 32];
    for (key, bytes) in records {
        let broken = |reason: String| {
            Err(Error::AuditChainBroken {
                seq: expected_seq,
                reason,
            })
        };
        if key != expected_seq {
            return broken(format!(
                "record {key} follows record {} (a record was deleted or reordered)",
                expected_seq.wrapping_sub(1)
            ));
        }
        let rec: AuditRecord = match serde_json::from_slice(&bytes) {
            Ok(r) => r,
            Err(e) => return broken(format!("unreadable record: {e}")),
        };
        if rec.seq != key {
            return broken(format!("stored under {key} but says seq {}", rec.seq));
        }
        if rec.prev != hex::encode(prev) {
            return broken("its prev hash does not match the record before it (an earlier record was edited, removed or reordered)".into());
        }
        prev = Sha256::digest(&bytes).into();
        expected_seq += 1;
    }
    if expected_seq != head.count {
        return Err(Error::AuditChainBroken {
            seq: expected_seq,
            reason: format!("the chain has {expected_seq} records, its head says {} (records were removed from the end)", head.count),
        });
    }
    if prev != head.hash {
        return Err(Error::AuditChainBroken {
            seq: expected_seq.saturating_sub(1),
            reason: "the last record does not match the head hash (it was edited)".into(),
        });
    }
    Ok(expected_seq)
}
