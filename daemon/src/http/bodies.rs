//! The admin API's request bodies, parsed: pure functions from bytes (at most the route's body
//! limit, see `http::admin::routes`) to what a handler needs, each refusal naming the field. Fuzzed
//! (`fuzz/fuzz_targets/admin_bodies.rs`).
//!
//! Invariant: nothing here touches state; a body that parses here is the only input a handler
//! acts on.

use std::path::PathBuf;

use airlock_updater::tokens::Scope;
use semver::Version;
use serde_json::Value;

/// The longest comment or reason kept.
pub const MAX_TEXT: usize = 1024;

fn object(body: &[u8]) -> Result<serde_json::Map<String, Value>, String> {
    if body.is_empty() {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err("the body must be a JSON object".into()),
        Err(e) => Err(format!("the body is not valid JSON: {e}")),
    }
}

fn text(m: &serde_json::Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() <= MAX_TEXT => Ok(Some(s.clone())),
        Some(_) => Err(format!(
            "\"{key}\" must be a string of at most {MAX_TEXT} bytes"
        )),
    }
}

/// A version in a URL or a body.
pub fn version(v: &str) -> Result<Version, String> {
    Version::parse(v).map_err(|_| {
        format!(
            "{:?} is not a version (MAJOR.MINOR.PATCH)",
            v.chars().take(64).collect::<String>()
        )
    })
}

/// `POST …/approve`.
#[derive(Debug)]
pub struct Approve {
    /// For the audit log.
    pub comment: Option<String>,
    /// The approver read the contract change.
    pub acknowledge_contract_change: bool,
    /// An approver-role signature (under `mode = "signed"`).
    pub signature: Option<airlock_signing::Signature>,
}

/// Parses an approval.
pub fn approve(body: &[u8]) -> Result<Approve, String> {
    let m = object(body)?;
    let acknowledge_contract_change = match m.get("acknowledge_contract_change") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("\"acknowledge_contract_change\" must be true or false".into()),
    };
    let signature = match m.get("signature") {
        None | Some(Value::Null) => None,
        Some(sig) => Some(
            serde_json::from_value::<airlock_signing::Signature>(sig.clone()).map_err(|_| {
                "\"signature\" must be {\"keyid\": \"64 hex\", \"sig\": \"128 hex\"}".to_string()
            })?,
        ),
    };
    Ok(Approve {
        comment: text(&m, "comment")?,
        acknowledge_contract_change,
        signature,
    })
}

/// `POST …/reject`: the reason.
pub fn reject(body: &[u8]) -> Result<Option<String>, String> {
    text(&object(body)?, "reason")
}

/// `POST …/promote`: the version.
pub fn promote(body: &[u8]) -> Result<Version, String> {
    match object(body)?.get("version") {
        Some(Value::String(v)) => version(v),
        _ => Err("the body must be {\"version\": \"MAJOR.MINOR.PATCH\"}".into()),
    }
}

/// `POST …/rollback`.
#[derive(Debug)]
pub struct Rollback {
    /// A specific retired version (else the rollback target).
    pub to: Option<Version>,
    /// For the audit log.
    pub reason: Option<String>,
}

/// Parses a rollback.
pub fn rollback(body: &[u8]) -> Result<Rollback, String> {
    let m = object(body)?;
    Ok(Rollback {
        to: text(&m, "version")?.map(|v| version(&v)).transpose()?,
        reason: text(&m, "reason")?,
    })
}

/// `POST /bundles/import`: the path of a bundle on media the daemon offers.
pub fn import_path(body: &[u8]) -> Result<PathBuf, String> {
    match object(body)?.get("path") {
        Some(Value::String(p)) if !p.is_empty() && p.len() <= 4096 && !p.contains('\0') => {
            Ok(PathBuf::from(p))
        }
        _ => Err(
            "the body must be {\"path\": \"/media/…/NAME-VERSION.airlock\"} (a bundle airlockctl bundle media lists)"
                .into(),
        ),
    }
}

/// `POST /tokens`.
#[derive(Debug)]
pub struct NewToken {
    /// A human name.
    pub name: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
}

/// Parses a token request.
pub fn token(body: &[u8]) -> Result<NewToken, String> {
    let m = object(body).map_err(|e| {
        format!("{e}; the body must be {{\"name\": \"...\", \"scopes\": [\"model:NAME\" | \"model:*\" | \"metrics\" | \"admin:ROLE\"]}}")
    })?;
    let name = match m.get("name") {
        Some(Value::String(n))
            if !n.is_empty() && n.len() <= 64 && !n.chars().any(char::is_control) =>
        {
            n.clone()
        }
        _ => return Err("\"name\" must be a string of 1 to 64 characters".into()),
    };
    let scopes = match m.get("scopes") {
        Some(Value::Array(a)) if !a.is_empty() && a.len() <= 64 => a
            .iter()
            .map(|v| match v {
                Value::String(s) => Scope::parse(s),
                _ => Err("each scope must be a string".to_string()),
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => {
            return Err(
                "\"scopes\" must be an array of 1 to 64 scopes (model:NAME, model:*, metrics, admin:ROLE)"
                    .into(),
            )
        }
    };
    Ok(NewToken { name, scopes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_parse_and_refusals_name_the_field() {
        assert!(approve(b"").is_ok());
        assert!(approve(br#"{"acknowledge_contract_change": 1}"#)
            .expect_err("ack")
            .contains("acknowledge_contract_change"));
        assert!(approve(br#"[]"#)
            .expect_err("array")
            .contains("JSON object"));
        assert!(
            reject(format!(r#"{{"reason": "{}"}}"#, "x".repeat(2000)).as_bytes())
                .expect_err("long")
                .contains("reason")
        );
        assert_eq!(
            promote(br#"{"version": "1.2.3"}"#).expect("ok"),
            Version::new(1, 2, 3)
        );
        assert!(promote(br#"{"version": 1}"#).is_err());
        assert!(rollback(br#"{"version": "x"}"#)
            .expect_err("v")
            .contains("not a version"));
        assert!(import_path(br#"{"path": "a\u0000b"}"#).is_err());
        let t = token(br#"{"name": "ci", "scopes": ["model:*", "metrics"]}"#).expect("token");
        assert_eq!(t.scopes.len(), 2);
        assert!(token(br#"{"name": "ci", "scopes": [1]}"#).is_err());
        assert!(token(br#"{"name": "a\nb", "scopes": ["metrics"]}"#).is_err());
    }

    /// What `airlockctl` sends (the `airlock-api` request types) is what these parsers accept.
    #[test]
    fn the_api_crate_s_request_bodies_parse_here() {
        use airlock_api as api;
        fn enc<T: serde::Serialize>(v: &T) -> Vec<u8> {
            serde_json::to_vec(v).expect("encode")
        }
        let a = api::ApproveRequest {
            comment: Some("ok".into()),
            acknowledge_contract_change: true,
            signature: Some(api::SignatureHex {
                keyid: "ab".repeat(32),
                sig: "cd".repeat(64),
            }),
        };
        let got = approve(&enc(&a)).expect("approve");
        assert!(got.acknowledge_contract_change && got.signature.is_some());
        assert_eq!(got.comment.as_deref(), Some("ok"));
        assert!(approve(&enc(&api::ApproveRequest::default())).is_ok());
        let r = api::RejectRequest {
            reason: Some("no".into()),
        };
        assert_eq!(reject(&enc(&r)).expect("reject").as_deref(), Some("no"));
        let p = api::PromoteRequest {
            version: "1.2.3".into(),
        };
        assert_eq!(promote(&enc(&p)).expect("promote"), Version::new(1, 2, 3));
        let rb = api::RollbackRequest {
            version: Some("1.0.0".into()),
            reason: None,
        };
        assert_eq!(
            rollback(&enc(&rb)).expect("rollback").to,
            Some(Version::new(1, 0, 0))
        );
        let i = api::ImportPath {
            path: "/media/x/a.airlock".into(),
        };
        assert_eq!(
            import_path(&enc(&i)).expect("path"),
            PathBuf::from("/media/x/a.airlock")
        );
        let t = api::NewTokenRequest {
            name: "ci".into(),
            scopes: vec!["admin:viewer".into()],
        };
        assert_eq!(token(&enc(&t)).expect("token").scopes.len(), 1);
    }
}
