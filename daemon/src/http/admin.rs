//! The admin API (`/api/v1`, JSON) on two transports: the Unix socket (`[admin] socket`), where
//! the peer's uid and gid (`SO_PEERCRED`, taken with the connection) and the user's groups in
//! the group database map to roles through `[admin.roles]`; and the TLS listener, where a bearer token's `admin:ROLE` scopes do.
//! Resources: status, models and versions (state, history, validation reports), bundles (import
//! from a path on the appliance or a streamed upload), approvals, promotion and rollback, the
//! trust root, the audit log, and tokens. `docs/api.md` documents every endpoint.
//!
//! Invariants: every handler except `whoami` (which only echoes the caller's identity) checks
//! the caller's role before doing anything; a token's secret
//! exists only in the response to its creation; blocking work (imports, loads, sled) runs on
//! blocking threads, never on the runtime's.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use airlock_api as api;
use airlock_config::Role;
use airlock_updater::registry::{ModelRecord, VersionRecord};
use airlock_updater::tokens::TokenRecord;
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use semver::Version;
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;

use crate::auth::{peer_identity, permitted, Identity};
use crate::error::Class;
use crate::http::error;
use crate::lifecycle::{Lifecycle, LifecycleError};

mod telemetry;

/// What the handlers share.
pub struct AdminState {
    /// The lifecycle engine.
    pub lifecycle: Arc<Lifecycle>,
    /// The token records every front end checks (refreshed on every change).
    pub tokens: Arc<crate::auth::Tokens>,
    /// How long a rotated token's previous secret keeps working.
    pub token_overlap: std::time::Duration,
    /// The local telemetry store.
    pub telemetry: Arc<crate::telemetry::Telemetry>,
    /// The request traces.
    pub traces: Arc<crate::traces::Traces>,
}

type S = State<Arc<AdminState>>;
type Who = Extension<Identity>;

fn check(who: &Identity, needed: Role, what: &str) -> Result<(), Response> {
    permitted(who, needed, what).map_err(|m| error(Class::Forbidden, m))
}

/// A lifecycle error as an HTTP answer (its class's status, its kind in the body).
fn lc_error(e: LifecycleError) -> Response {
    crate::error::Failure::from(e).into_response()
}

/// Runs blocking lifecycle work off the runtime's threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, LifecycleError> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(lc_error),
        Err(e) => Err(error(
            Class::Internal,
            format!("the operation panicked: {e}"),
        )),
    }
}

fn version(v: &str) -> Result<Version, Response> {
    crate::http::bodies::version(v).map_err(|e| error(Class::BadRequest, e))
}

/// A signature as the API shows it (the same hex `airlock-sign` writes).
fn signature_hex(s: &airlock_signing::Signature) -> Option<api::SignatureHex> {
    serde_json::to_value(s)
        .and_then(serde_json::from_value)
        .ok()
}

fn version_summary(v: &VersionRecord) -> api::VersionSummary {
    api::VersionSummary {
        version: v.version.to_string(),
        state: v.state,
        manifest_sha256: v.manifest_digest.clone(),
        payload_size: v.payload_size,
        imported_by: v.imported_by.as_str().to_string(),
        imported_at: v.imported_at.clone(),
        source: v.source.clone(),
        approvals: v
            .approvals
            .iter()
            .map(|a| api::Approval {
                by: a.by.as_str().to_string(),
                at: a.at.clone(),
                comment: a.comment.clone(),
                signature: a.signature.as_ref().and_then(signature_hex),
            })
            .collect(),
        validation_passed: v.validation.as_ref().map(|r| r.passed),
        contract_change: v
            .validation
            .as_ref()
            .and_then(|r| r.contract_change.clone()),
        changed_at: v.changed_at.clone(),
    }
}

fn model_head(m: &ModelRecord, s: &AdminState) -> api::ModelHead {
    let models = s.lifecycle.infer().models();
    let served = models.get(&m.name, None).ok();
    api::ModelHead {
        name: m.name.clone(),
        active: m.active.as_ref().map(|v| v.to_string()),
        promoting: m.promoting.as_ref().map(|p| api::Promotion {
            from: p.from.as_ref().map(|v| v.to_string()),
            to: p.to.to_string(),
            by: p.by.as_str().to_string(),
            started_at: p.started_at.clone(),
        }),
        highest_seen: m.highest_seen.to_string(),
        anti_rollback_floor: m.floor().map(|v| v.to_string()),
        serving: served.as_ref().map(|l| api::Serving {
            version: l.version.to_string(),
            ready: l.ready(),
            provider: format!("{:?}", l.provider).to_lowercase(),
            degraded: l.degraded(),
        }),
        rollback_target: m.rollback_target().ok().map(|v| v.to_string()),
        unavailable: models.unavailable().get(&m.name).map(|u| api::Unavailable {
            version: u.version.to_string(),
            reason: u.reason.clone(),
        }),
    }
}

fn model_summary(m: &ModelRecord, s: &AdminState) -> api::ModelSummary {
    api::ModelSummary {
        head: model_head(m, s),
        versions: m.versions.len(),
        awaiting_approval: m
            .versions
            .values()
            .filter(|v| v.state == airlock_updater::VersionState::Validated)
            .count(),
    }
}

fn whoami_of(who: &Identity) -> api::Whoami {
    api::Whoami {
        actor: who.actor.as_str().to_string(),
        roles: who.roles.iter().map(|r| r.as_str().to_string()).collect(),
    }
}

async fn whoami(Extension(who): Who) -> Response {
    Json(whoami_of(&who)).into_response()
}

async fn status(State(s): S, Extension(who): Who) -> Response {
    let lc = s.lifecycle.clone();
    let r = blocking(move || {
        let models = lc.updater().registry().models()?;
        let audit = lc.updater().registry().verify_audit();
        let trust = lc.updater().trust_root()?;
        Ok((models, audit, trust.version()))
    })
    .await;
    let (models, audit, trust) = match r {
        Ok(x) => x,
        Err(r) => return r,
    };
    let validating = s
        .lifecycle
        .in_validation()
        .iter()
        .map(|(m, v)| api::ModelVersion {
            model: m.clone(),
            version: v.to_string(),
        })
        .collect();
    Json(api::Status {
        daemon: api::Daemon {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
        },
        you: whoami_of(&who),
        models: models.iter().map(|m| model_summary(m, &s)).collect(),
        validating,
        trust_root_version: trust,
        audit: match audit {
            Ok(n) => api::AuditState {
                verified: true,
                records: Some(n),
                error: None,
            },
            Err(e) => api::AuditState {
                verified: false,
                records: None,
                error: Some(e.to_string()),
            },
        },
    })
    .into_response()
}

async fn models_list(State(s): S, _: Who) -> Response {
    let lc = s.lifecycle.clone();
    match blocking(move || Ok(lc.updater().registry().models()?)).await {
        Ok(models) => Json(api::ModelList {
            models: models.iter().map(|m| model_summary(m, &s)).collect(),
        })
        .into_response(),
        Err(r) => r,
    }
}

async fn model_record(s: &AdminState, name: String) -> Result<ModelRecord, Response> {
    let lc = s.lifecycle.clone();
    blocking(move || {
        lc.updater()
            .registry()
            .model(&name)?
            .ok_or_else(|| airlock_updater::Error::UnknownModel(name).into())
    })
    .await
}

async fn model_show(State(s): S, _: Who, UrlPath(m): UrlPath<String>) -> Response {
    match model_record(&s, m).await {
        Ok(rec) => Json(api::ModelDetail {
            head: model_head(&rec, &s),
            versions: rec.versions.values().rev().map(version_summary).collect(),
        })
        .into_response(),
        Err(r) => r,
    }
}

async fn version_show(State(s): S, _: Who, UrlPath((m, v)): UrlPath<(String, String)>) -> Response {
    let ver = match version(&v) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let rec = match model_record(&s, m.clone()).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let Some(vr) = rec.versions.get(&ver) else {
        return error(Class::NotFound, format!("{m} has no version {ver}"));
    };
    let validating = s.lifecycle.is_validating(&m, &ver);
    // The version's history, from the audit log.
    let lc = s.lifecycle.clone();
    let (mm, vv) = (m.clone(), ver.to_string());
    let history = blocking(move || Ok(lc.updater().registry().audit_records(0, usize::MAX)?))
        .await
        .ok()
        .map(|records| {
            records
                .into_iter()
                .filter(|r| {
                    r.model.as_deref() == Some(mm.as_str())
                        && r.version.as_deref() == Some(vv.as_str())
                })
                .map(|r| api::HistoryEntry {
                    seq: r.seq,
                    time: r.time,
                    actor: r.actor,
                    action: r.action,
                    detail: r.detail,
                })
                .collect()
        });
    Json(api::VersionDetail {
        summary: version_summary(vr),
        validation: vr.validation.clone(),
        validation_sha256: vr.report_digest(),
        validating,
        signers: vr.signers.clone(),
        history,
        model: m,
    })
    .into_response()
}

async fn bundles_list(State(s): S, _: Who) -> Response {
    let lc = s.lifecycle.clone();
    match blocking(move || Ok(lc.updater().registry().models()?)).await {
        Ok(models) => {
            let bundles = models
                .iter()
                .flat_map(|m| {
                    m.versions.values().map(|v| api::BundleEntry {
                        model: m.name.clone(),
                        summary: version_summary(v),
                    })
                })
                .collect();
            Json(api::BundleList { bundles }).into_response()
        }
        Err(r) => r,
    }
}

fn imported(i: &crate::lifecycle::ImportedVersion) -> api::Imported {
    api::Imported {
        model: i.model.clone(),
        version: i.version.to_string(),
        manifest_sha256: i.digest.clone(),
        // A repair leaves the version's state as it was.
        state: (!i.repaired).then_some(api::VersionState::Staged),
        repaired: i.repaired,
        validating: !i.repaired,
    }
}

/// `POST /bundles/import {"path": "/media/…/x.airlock"}`: a bundle on removable media the
/// daemon offers (and nothing else: the caller's file is streamed with `POST /bundles`).
async fn bundle_import_path(State(s): S, Extension(who): Who, body: axum::body::Bytes) -> Response {
    let path = match crate::http::bodies::import_path(&body) {
        Ok(p) => p,
        Err(e) => return error(Class::BadRequest, e),
    };
    let lc = s.lifecycle.clone();
    let actor = who.actor.clone();
    match blocking(move || lc.import_offered(&path, &actor)).await {
        Ok(i) => (StatusCode::CREATED, Json(imported(&i))).into_response(),
        Err(r) => r,
    }
}

/// `POST /bundles` with the bundle as the body: streamed straight into the updater (never
/// buffered whole); a body cut off half-way leaves nothing staged.
async fn bundle_upload(State(s): S, Extension(who): Who, body: Body) -> Response {
    use futures_util::TryStreamExt;
    let stream = body
        .into_data_stream()
        .map_err(|e| std::io::Error::other(format!("the upload was cut off: {e}")));
    let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
    let lc = s.lifecycle.clone();
    let actor = who.actor.clone();
    match blocking(move || {
        lc.import(
            std::io::BufReader::with_capacity(1 << 20, reader),
            "upload",
            &actor,
        )
    })
    .await
    {
        Ok(i) => (StatusCode::CREATED, Json(imported(&i))).into_response(),
        Err(r) => r,
    }
}

async fn approve(
    State(s): S,
    Extension(who): Who,
    UrlPath((m, v)): UrlPath<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let (ver, req) = match (version(&v), crate::http::bodies::approve(&body)) {
        (Ok(v), Ok(b)) => (v, b),
        (Err(r), _) => return r,
        (_, Err(e)) => return error(Class::BadRequest, e),
    };
    let lc = s.lifecycle.clone();
    let actor = who.actor.clone();
    let (mm, vv) = (m.clone(), ver.clone());
    match blocking(move || {
        lc.approve(
            &mm,
            &vv,
            &actor,
            req.comment.as_deref(),
            req.acknowledge_contract_change,
            req.signature,
        )
    })
    .await
    {
        Ok(state) => Json(api::Approved {
            model: m,
            version: ver.to_string(),
            state,
            approved_by: who.actor.as_str().to_string(),
        })
        .into_response(),
        Err(r) => r,
    }
}

async fn reject(
    State(s): S,
    Extension(who): Who,
    UrlPath((m, v)): UrlPath<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let (ver, reason) = match (version(&v), crate::http::bodies::reject(&body)) {
        (Ok(v), Ok(b)) => (v, b),
        (Err(r), _) => return r,
        (_, Err(e)) => return error(Class::BadRequest, e),
    };
    let lc = s.lifecycle.clone();
    let actor = who.actor.clone();
    let (mm, vv) = (m.clone(), ver.clone());
    match blocking(move || lc.reject(&mm, &vv, &actor, reason.as_deref())).await {
        Ok(()) => Json(api::Rejected {
            model: m,
            version: ver.to_string(),
            state: api::VersionState::Rejected,
        })
        .into_response(),
        Err(r) => r,
    }
}

async fn promote(
    State(s): S,
    Extension(who): Who,
    UrlPath(m): UrlPath<String>,
    body: axum::body::Bytes,
) -> Response {
    let ver = match crate::http::bodies::promote(&body) {
        Ok(v) => v,
        Err(e) => return error(Class::BadRequest, e),
    };
    let lc = s.lifecycle.clone();
    let actor = who.actor.clone();
    let (mm, vv) = (m.clone(), ver.clone());
    match blocking(move || lc.promote(&mm, &vv, &actor)).await {
        Ok(()) => Json(api::Active {
            model: m,
            active: ver.to_string(),
        })
        .into_response(),
        Err(r) => r,
    }
}

async fn rollback(
    State(s): S,
    Extension(who): Who,
    UrlPath(m): UrlPath<String>,
    body: axum::body::Bytes,
) -> Response {
    let req = match crate::http::bodies::rollback(&body) {
        Ok(r) => r,
        Err(e) => return error(Class::BadRequest, e),
    };
    let lc = s.lifecycle.clone();
    let actor = who.actor.clone();
    let mm = m.clone();
    match blocking(move || lc.rollback(&mm, req.to.as_ref(), &actor, req.reason.as_deref())).await {
        Ok(v) => Json(api::Active {
            model: m,
            active: v.to_string(),
        })
        .into_response(),
        Err(r) => r,
    }
}

async fn media_list(State(s): S, _: Who) -> Response {
    let media = s
        .lifecycle
        .media()
        .lock()
        .values()
        .map(|m| api::Medium {
            device: m.device.clone(),
            label: m.label.clone(),
            mount: m.mount.to_string_lossy().into_owned(),
            truncated: m.listing.truncated,
            bundles: m
                .listing
                .bundles
                .iter()
                .map(|b| api::MediaBundle {
                    path: b.path.to_string_lossy().into_owned(),
                    size: b.size,
                })
                .collect(),
        })
        .collect();
    Json(api::MediaList { media }).into_response()
}

fn trust_root(root: &airlock_signing::TrustRoot) -> api::TrustRoot {
    api::TrustRoot {
        version: root.version(),
        root: serde_json::to_value(root.body()).unwrap_or_default(),
    }
}

async fn trust_show(State(s): S, _: Who) -> Response {
    let lc = s.lifecycle.clone();
    match blocking(move || Ok(lc.updater().trust_root()?)).await {
        Ok(root) => Json(trust_root(&root)).into_response(),
        Err(r) => r,
    }
}

async fn trust_import(State(s): S, Extension(who): Who, body: axum::body::Bytes) -> Response {
    let lc = s.lifecycle.clone();
    let actor = who.actor.clone();
    match blocking(move || Ok(lc.updater().rotate_trust_root(&body, &actor)?)).await {
        Ok(root) => {
            tracing::warn!(version = root.version(), by = %who.actor, "trust root rotated");
            Json(trust_root(&root)).into_response()
        }
        Err(r) => r,
    }
}

async fn audit_list(State(s): S, _: Who, uri: axum::http::Uri) -> Response {
    let q: BTreeMap<&str, &str> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    let num = |k: &str, d: u64| -> Result<u64, Response> {
        q.get(k).map_or(Ok(d), |v| {
            v.parse()
                .map_err(|_| error(Class::BadRequest, format!("{k}={v:?} is not a number")))
        })
    };
    let (from, limit) = match (num("from", 0), num("limit", 100)) {
        (Ok(f), Ok(l)) => (f, l.min(10_000) as usize),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let lc = s.lifecycle.clone();
    match blocking(move || Ok(lc.updater().registry().audit_records(from, limit)?)).await {
        Ok(records) => Json(api::AuditRecords { records }).into_response(),
        Err(r) => r,
    }
}

async fn audit_verify(State(s): S, _: Who) -> Response {
    let lc = s.lifecycle.clone();
    match blocking(move || Ok(lc.updater().registry().verify_audit()?)).await {
        Ok(n) => Json(api::AuditVerified {
            verified: true,
            records: n,
        })
        .into_response(),
        Err(r) => r,
    }
}

fn public(r: &TokenRecord) -> api::Token {
    api::Token {
        id: r.id.clone(),
        name: r.name.clone(),
        scopes: r.scopes.iter().map(|s| s.to_string()).collect(),
        created_by: r.created_by.clone(),
        created_at: r.created_at.clone(),
        revoked_at: r.revoked_at.clone(),
    }
}

fn refresh(s: &AdminState) -> Result<(), LifecycleError> {
    Ok(s.tokens.refresh()?)
}

async fn tokens_list(State(s): S, _: Who) -> Response {
    let lc = s.lifecycle.clone();
    match blocking(move || Ok(lc.updater().registry().tokens()?)).await {
        Ok(all) => Json(api::TokenList {
            tokens: all.values().map(public).collect(),
        })
        .into_response(),
        Err(r) => r,
    }
}

async fn token_create(State(s): S, Extension(who): Who, body: axum::body::Bytes) -> Response {
    let crate::http::bodies::NewToken { name, scopes } = match crate::http::bodies::token(&body) {
        Ok(t) => t,
        Err(e) => return error(Class::BadRequest, e),
    };
    let st = s.clone();
    let actor = who.actor.clone();
    match blocking(move || {
        let now = st.lifecycle.updater().now()?;
        let r = st
            .lifecycle
            .updater()
            .registry()
            .create_token(now, &name, scopes, &actor)?;
        refresh(&st)?;
        Ok(r)
    })
    .await
    {
        Ok((rec, token)) => {
            tracing::info!(id = %rec.id, name = %rec.name, by = %who.actor, "token created");
            let v = api::TokenSecret {
                info: public(&rec),
                token,
                previous_valid_for_s: None,
            };
            (StatusCode::CREATED, Json(v)).into_response()
        }
        Err(r) => r,
    }
}

async fn token_rotate(State(s): S, Extension(who): Who, UrlPath(id): UrlPath<String>) -> Response {
    let st = s.clone();
    let actor = who.actor.clone();
    match blocking(move || {
        // The overlap runs on this machine's clock (what verification compares with), never on
        // the time floor: a floor pushed ahead must not keep an old secret alive.
        let now = time::OffsetDateTime::now_utc();
        let r =
            st.lifecycle
                .updater()
                .registry()
                .rotate_token(now, &id, st.token_overlap, &actor)?;
        refresh(&st)?;
        Ok(r)
    })
    .await
    {
        Ok((rec, token)) => {
            tracing::info!(id = %rec.id, name = %rec.name, by = %who.actor, "token rotated");
            Json(api::TokenSecret {
                info: public(&rec),
                token,
                previous_valid_for_s: Some(s.token_overlap.as_secs()),
            })
            .into_response()
        }
        Err(r) => r,
    }
}

async fn token_revoke(State(s): S, Extension(who): Who, UrlPath(id): UrlPath<String>) -> Response {
    let st = s.clone();
    let actor = who.actor.clone();
    match blocking(move || {
        let now = st.lifecycle.updater().now()?;
        let r = st
            .lifecycle
            .updater()
            .registry()
            .revoke_token(now, &id, &actor)?;
        refresh(&st)?;
        Ok(r)
    })
    .await
    {
        Ok(rec) => {
            tracing::info!(id = %rec.id, name = %rec.name, by = %who.actor, "token revoked");
            Json(public(&rec)).into_response()
        }
        Err(r) => r,
    }
}

fn time_info(lc: &Lifecycle) -> Result<api::TimeInfo, LifecycleError> {
    let u = lc.updater();
    let fmt = |t: i64| {
        time::OffsetDateTime::from_unix_timestamp(t)
            .map(airlock_signing::clock::rfc3339)
            .unwrap_or_else(|_| t.to_string())
    };
    let floor = u.registry().time_floor()?;
    let behind = u.clock_behind()?;
    Ok(api::TimeInfo {
        system: airlock_signing::clock::rfc3339(time::OffsetDateTime::now_utc()),
        floor: fmt(floor),
        trusted: airlock_signing::clock::rfc3339(u.now()?),
        clock_behind_floor_s: behind.map(|d| d.whole_seconds()),
    })
}

async fn time_show(State(s): S, _: Who) -> Response {
    let lc = s.lifecycle.clone();
    match blocking(move || time_info(&lc)).await {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

/// `POST /time/reset-floor`: an admin says the system clock is right; the floor returns to it.
async fn time_reset(State(s): S, Extension(who): Who) -> Response {
    let lc = s.lifecycle.clone();
    let actor = who.actor.clone();
    match blocking(move || {
        let (old, new) = lc.updater().reset_time_floor(&actor)?;
        Ok((old, new, time_info(&lc)?))
    })
    .await
    {
        Ok((old, new, v)) => {
            tracing::warn!(by = %who.actor, from = old, to = new, "time floor reset to the system clock");
            Json(v).into_response()
        }
        Err(r) => r,
    }
}

/// Who may call a route and how large its body may be: the one place the admin API decides
/// it. The guard runs before the handler and before any byte of the body is read.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// The role needed (`None`: any caller, for `whoami`).
    pub role: Option<Role>,
    /// What the caller wants to do, for the refusal ("may not {what}").
    pub what: &'static str,
    /// The body limit in bytes (`Some(0)`: the route takes none and ignores one unread;
    /// `None`: streamed by the handler, which bounds it itself).
    pub max_body: Option<u64>,
}

const fn rule(role: Role, what: &'static str) -> Rule {
    Rule {
        role: Some(role),
        what,
        max_body: Some(0),
    }
}

const fn with_body(role: Role, what: &'static str, max: u64) -> Rule {
    Rule {
        role: Some(role),
        what,
        max_body: Some(max),
    }
}

/// Bodies of approvals, rejections, promotions, rollbacks, path imports and token requests:
/// a few fields (a detached signature, a 1 KiB comment).
const SMALL_BODY: u64 = 16 << 10;
/// A trust root file: keys and signatures, a few kilobytes.
pub const TRUST_ROOT_BODY: u64 = 256 << 10;

/// Reads and drops at most `max` bytes of a refused request's body (under the body's pace).
async fn drain(body: Body, max: u64) {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut seen = 0u64;
    while seen <= max {
        match body.frame().await {
            Some(Ok(f)) => seen += f.data_ref().map_or(0, |d| d.len() as u64),
            _ => return,
        }
    }
}

/// Authorises on the headers, then reads the body under the route's limit (refusing by
/// `Content-Length` before reading) so that the handler gets it whole.
async fn guard(rule: Rule, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let Some(who) = req.extensions().get::<Identity>() else {
        return error(Class::Internal, "no caller identity");
    };
    if let Some(role) = rule.role {
        if let Err(r) = check(who, role, rule.what) {
            // Decided on the headers. A body that fits the route's limit is read and dropped
            // (never kept) so that the client, still sending it, gets the answer rather than a
            // reset connection; anything larger is not read at all.
            if let Some(max) = rule.max_body.filter(|m| *m > 0) {
                drain(req.into_body(), max).await;
            }
            return r;
        }
    }
    let Some(max) = rule.max_body else {
        return next.run(req).await;
    };
    let (parts, body) = req.into_parts();
    if max == 0 {
        // A route that takes no body ignores one without reading it.
        drop(body);
        return next
            .run(axum::extract::Request::from_parts(parts, Body::empty()))
            .await;
    }
    let bytes = match crate::http::read_limited(max, &parts.headers, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    next.run(axum::extract::Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// The `/api/v1` routes (relative: both transports nest them under `/api/v1`), each with its
/// [`Rule`] and handler. Each request must carry an [`Identity`] extension, which the
/// transport inserts.
pub fn routes() -> Vec<(
    &'static str,
    Rule,
    axum::routing::MethodRouter<Arc<AdminState>>,
)> {
    use Role::*;
    vec![
        (
            "/whoami",
            Rule {
                role: None,
                what: "ask who they are",
                max_body: Some(0),
            },
            get(whoami),
        ),
        ("/status", rule(Viewer, "read the status"), get(status)),
        ("/models", rule(Viewer, "list models"), get(models_list)),
        ("/models/{m}", rule(Viewer, "read models"), get(model_show)),
        (
            "/models/{m}/versions/{v}",
            rule(Viewer, "read versions"),
            get(version_show),
        ),
        (
            "/models/{m}/versions/{v}/approve",
            with_body(Approver, "approve versions", SMALL_BODY),
            post(approve),
        ),
        (
            "/models/{m}/versions/{v}/reject",
            with_body(Approver, "reject versions", SMALL_BODY),
            post(reject),
        ),
        (
            "/models/{m}/promote",
            with_body(Operator, "promote versions", SMALL_BODY),
            post(promote),
        ),
        (
            "/models/{m}/rollback",
            with_body(Operator, "roll back", SMALL_BODY),
            post(rollback),
        ),
        ("/bundles", rule(Viewer, "list bundles"), get(bundles_list)),
        (
            "/bundles",
            Rule {
                role: Some(Operator),
                what: "import bundles",
                max_body: None,
            },
            post(bundle_upload),
        ),
        (
            "/bundles/import",
            with_body(Operator, "import bundles", SMALL_BODY),
            post(bundle_import_path),
        ),
        (
            "/trust",
            rule(Viewer, "read the trust root"),
            get(trust_show),
        ),
        (
            "/trust",
            with_body(Admin, "replace the trust root", TRUST_ROOT_BODY),
            post(trust_import),
        ),
        (
            "/media",
            rule(Viewer, "list removable media"),
            get(media_list),
        ),
        ("/time", rule(Viewer, "read the time floor"), get(time_show)),
        (
            "/time/reset-floor",
            rule(Admin, "reset the time floor"),
            post(time_reset),
        ),
        (
            "/audit",
            rule(Viewer, "read the audit log"),
            get(audit_list),
        ),
        (
            "/audit/verify",
            rule(Viewer, "verify the audit log"),
            get(audit_verify),
        ),
        (
            "/telemetry/series",
            rule(Viewer, "read telemetry"),
            get(telemetry::series_list),
        ),
        (
            "/telemetry/query",
            rule(Viewer, "read telemetry"),
            get(telemetry::query),
        ),
        (
            "/telemetry/traces",
            rule(Viewer, "read telemetry"),
            get(telemetry::traces),
        ),
        ("/tokens", rule(Admin, "list tokens"), get(tokens_list)),
        (
            "/tokens",
            with_body(Admin, "create tokens", SMALL_BODY),
            post(token_create),
        ),
        (
            "/tokens/{id}",
            rule(Admin, "revoke tokens"),
            delete(token_revoke),
        ),
        (
            "/tokens/{id}/rotate",
            with_body(Admin, "rotate tokens", SMALL_BODY),
            post(token_rotate),
        ),
    ]
}

/// The admin router: every route of [`routes`] behind its [`guard`].
pub fn router(state: Arc<AdminState>) -> Router {
    let mut r = Router::new();
    for (path, rule, handler) in routes() {
        r = r.route(
            path,
            handler.layer(axum::middleware::from_fn(
                move |req: axum::extract::Request, next: axum::middleware::Next| {
                    guard(rule, req, next)
                },
            )),
        );
    }
    r.fallback(|| async { error(Class::NotFound, "no such admin endpoint") })
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

/// Binds the admin socket (replacing a stale socket from an earlier run, nothing else) with
/// `mode` permission bits.
pub fn bind(socket: &std::path::Path, mode: u32) -> anyhow::Result<UnixListener> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(socket) {
        if std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) {
            std::fs::remove_file(socket)?;
        }
    }
    let listener = UnixListener::bind(socket)
        .map_err(|e| anyhow::anyhow!("cannot bind the admin socket {}: {e}", socket.display()))?;
    std::fs::set_permissions(socket, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
    tracing::info!(socket = %socket.display(), mode = format!("{mode:o}"), "admin API listening");
    Ok(listener)
}

/// Serves the admin API on `listener` (bound at `socket`) until `shutdown`: every connection
/// under `cap` (per uid too) and the [`crate::limits::ConnTimeouts`].
pub async fn serve(
    listener: UnixListener,
    socket: PathBuf,
    state: Arc<AdminState>,
    roles: BTreeMap<String, Role>,
    timeouts: crate::limits::ConnTimeouts,
    cap: Arc<crate::limits::ConnCap>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let app = Router::new().nest_service("/api/v1", router(state));
    let mut backoff = crate::limits::AcceptBackoff::new("admin socket");
    let tracker = tokio_util::task::TaskTracker::new();
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => { backoff.ok(); x }
                Err(e) => { backoff.failed(e).await; continue; }
            },
        };
        let cred = match stream.peer_cred() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "admin peer credentials unavailable; connection refused");
                continue;
            }
        };
        // Counted before anything else is spent on the peer (its groups, its roles).
        let Some(permit) = cap.admit(Some(cred.uid())) else {
            continue;
        };
        let who = peer_identity(&roles, cred.uid(), cred.gid());
        let app = app.clone().layer(Extension(who));
        let (token, peer) = (shutdown.clone(), format!("uid:{}", cred.uid()));
        tracker.spawn(async move {
            let _permit = permit;
            crate::limits::serve_http1(stream, app, timeouts, token, &peer).await;
        });
    }
    drop(listener);
    let _ = std::fs::remove_file(&socket);
    tracker.close();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), tracker.wait()).await;
    Ok(())
}
