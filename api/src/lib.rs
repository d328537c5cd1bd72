//! The admin API's wire types (`/api/v1`, JSON): every answer airlockd gives and every body it
//! accepts there, as serde types shared by the daemon (which builds them), `airlockctl` (which
//! reads them) and, later, the console. `docs/api.md` documents the endpoints.
//!
//! The records the registry stores and shows unchanged (a version's state, its validation
//! report, an audit record) are defined here and re-exported by `airlock-updater`: one
//! definition, so a stored report and a shown one are the same bytes (signed approvals cover the
//! report's SHA-256).
//!
//! Layering: this crate knows serde and nothing else of the appliance (no HTTP, no storage), so
//! that a client links it without the daemon's dependencies.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

pub mod paths;

/// A version's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionState {
    /// Verified and in the store; not yet validated.
    Staged,
    /// Passed validation on this machine.
    Validated,
    /// Failed validation.
    ValidationFailed,
    /// Approved per the policy; may be promoted.
    Approved,
    /// Rejected by a person.
    Rejected,
    /// Serving.
    Active,
    /// Served before; may be rolled back to.
    Retired,
    /// Retired and removed from disk by retention; history only.
    Removed,
}

impl fmt::Display for VersionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VersionState::Staged => "staged",
            VersionState::Validated => "validated",
            VersionState::ValidationFailed => "validation_failed",
            VersionState::Approved => "approved",
            VersionState::Rejected => "rejected",
            VersionState::Active => "active",
            VersionState::Retired => "retired",
            VersionState::Removed => "removed",
        })
    }
}

/// The result of one golden vector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseResult {
    /// The case's name.
    pub name: String,
    /// Whether it passed.
    pub passed: bool,
    /// What went wrong, or what was checked.
    pub detail: String,
    /// Largest absolute error over all outputs (when the model was executed).
    pub max_abs_error: Option<f64>,
    /// Largest relative error over all outputs (when the model was executed).
    pub max_rel_error: Option<f64>,
}

/// A validation report, stored with the version and shown to approvers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationReport {
    /// Overall verdict.
    pub passed: bool,
    /// What validated (e.g. `contract-check`, `onnxruntime 1.31.1`).
    pub engine: String,
    /// The execution provider actually used, if the model was executed.
    pub provider: Option<String>,
    /// Per-vector results.
    pub cases: Vec<CaseResult>,
    /// Other findings (requirements, latency, contract changes).
    pub notes: Vec<String>,
    /// How the I/O contract differs from the version active at validation time, if it does:
    /// approval must then acknowledge it explicitly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contract_change: Option<String>,
    /// Latency measured on this machine's provider, per batch size.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latency: Vec<Latency>,
}

impl ValidationReport {
    /// SHA-256 (hex) of the report's JSON: what signed approvals cover.
    pub fn digest(&self) -> String {
        hex::encode(Sha256::digest(serde_json::to_vec(self).unwrap_or_default()))
    }
}

/// Latency of one batch size during validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Rows per run.
    pub batch: u64,
    /// Runs timed.
    pub runs: u32,
    /// Median, µs.
    pub p50_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
}

/// One record of the audit log, as stored and as shown (its SHA-256 is taken over the stored
/// JSON bytes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// Position in the chain, from 0.
    pub seq: u64,
    /// When (trusted time, RFC 3339).
    pub time: String,
    /// Who.
    pub actor: String,
    /// What (`import`, `import_refused`, `validate`, `approve`, `promote`, `rollback`, ...).
    pub action: String,
    /// Which model, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Which version, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Details (state change, error kind, digests, ...).
    pub detail: serde_json::Value,
    /// SHA-256 (hex) of the previous record's stored bytes; 64 zeros for the first.
    pub prev: String,
}

/// Every refusal and failure: what went wrong, and its stable kind (`anti_rollback`,
/// `queue_full`, `forbidden`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// For people.
    pub error: String,
    /// For programs.
    #[serde(default)]
    pub kind: Option<String>,
}

/// `GET /whoami`: who airlockd thinks the caller is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Whoami {
    /// `uid:1000(alice)` on the socket, `token:ID(name)` over TLS.
    pub actor: String,
    /// The caller's roles (`viewer`, `operator`, `approver`, `admin`).
    pub roles: Vec<String>,
}

/// The daemon itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Daemon {
    /// airlockd's version.
    pub version: String,
    /// Its process id.
    pub pid: u32,
}

/// Whether the audit chain verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditState {
    /// The whole chain verified.
    pub verified: bool,
    /// Records checked (when it verified).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<u64>,
    /// Where it broke (when it did not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A model and one of its versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelVersion {
    /// The model.
    pub model: String,
    /// The version.
    pub version: String,
}

/// `GET /status`: the appliance at a glance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The daemon.
    pub daemon: Daemon,
    /// The caller.
    pub you: Whoami,
    /// Every model.
    pub models: Vec<ModelSummary>,
    /// Versions waiting for or in validation.
    pub validating: Vec<ModelVersion>,
    /// The trust root's version.
    pub trust_root_version: u64,
    /// The audit chain.
    pub audit: AuditState,
}

/// What serves a model now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Serving {
    /// The loaded version.
    pub version: String,
    /// Whether it answers.
    pub ready: bool,
    /// The execution provider (`cpu`, `cuda`).
    pub provider: String,
    /// Why it is degraded (e.g. fell back from CUDA to CPU), if it is.
    pub degraded: Option<String>,
}

/// A model whose active version could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unavailable {
    /// The version that failed to load.
    pub version: String,
    /// Why.
    pub reason: String,
}

/// A promotion that began and has not finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Promotion {
    /// The version that served before, if any.
    pub from: Option<String>,
    /// The version being promoted.
    pub to: String,
    /// Who promoted it.
    pub by: String,
    /// When it began.
    pub started_at: String,
}

/// What the model list and one model's record share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelHead {
    /// The model's name.
    pub name: String,
    /// The active version, if any.
    pub active: Option<String>,
    /// A promotion under way.
    pub promoting: Option<Promotion>,
    /// The highest version ever imported (anti-rollback).
    pub highest_seen: String,
    /// No version below this may be imported.
    pub anti_rollback_floor: Option<String>,
    /// What serves it now.
    pub serving: Option<Serving>,
    /// Where `model rollback` would go.
    pub rollback_target: Option<String>,
    /// Its active version could not be loaded.
    pub unavailable: Option<Unavailable>,
}

/// One model in a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelSummary {
    /// The model.
    #[serde(flatten)]
    pub head: ModelHead,
    /// How many versions it has.
    pub versions: usize,
    /// How many of them passed validation and await approval.
    pub awaiting_approval: usize,
}

/// `GET /models`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelList {
    /// Every model.
    pub models: Vec<ModelSummary>,
}

/// `GET /models/NAME`: one model with all its versions, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelDetail {
    /// The model.
    #[serde(flatten)]
    pub head: ModelHead,
    /// Its versions, newest first.
    pub versions: Vec<VersionSummary>,
}

/// A detached signature (`airlock-sign`'s format): the signer's key id and the signature, hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureHex {
    /// SHA-256 of the public key, 64 hex digits.
    pub keyid: String,
    /// The Ed25519 signature, 128 hex digits.
    pub sig: String,
}

/// One approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// Who approved.
    pub by: String,
    /// When.
    pub at: String,
    /// Their comment.
    pub comment: Option<String>,
    /// Their signature (signed-approval policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignatureHex>,
}

/// One version, as lists show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionSummary {
    /// The version.
    pub version: String,
    /// Its state.
    pub state: VersionState,
    /// SHA-256 of its signed manifest.
    pub manifest_sha256: String,
    /// Bytes of payload.
    pub payload_size: u64,
    /// Who imported it.
    pub imported_by: String,
    /// When.
    pub imported_at: String,
    /// From where (`upload`, a medium's path).
    pub source: String,
    /// Approvals so far.
    pub approvals: Vec<Approval>,
    /// The validation verdict, once there is one.
    pub validation_passed: Option<bool>,
    /// How its I/O contract differs from the active version's, if it does.
    pub contract_change: Option<String>,
    /// When its state last changed.
    pub changed_at: String,
}

/// `GET /models/NAME/versions/VERSION`: one version in full.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionDetail {
    /// The model.
    pub model: String,
    /// The version.
    #[serde(flatten)]
    pub summary: VersionSummary,
    /// The validation report.
    pub validation: Option<ValidationReport>,
    /// Its SHA-256 (what a signed approval covers).
    pub validation_sha256: Option<String>,
    /// Whether validation is running or queued now.
    pub validating: bool,
    /// The release keys that signed the bundle.
    pub signers: Vec<String>,
    /// Its history from the audit log (absent when the log could not be read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<HistoryEntry>>,
}

/// One step in a version's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The audit record's sequence number.
    pub seq: u64,
    /// When.
    pub time: String,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// Details.
    pub detail: serde_json::Value,
}

/// One imported version of some model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundleEntry {
    /// The model.
    pub model: String,
    /// The version.
    #[serde(flatten)]
    pub summary: VersionSummary,
}

/// `GET /bundles`: every imported version of every model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundleList {
    /// The versions.
    pub bundles: Vec<BundleEntry>,
}

/// `POST /bundles` and `POST /bundles/import`: what was imported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Imported {
    /// The model.
    pub model: String,
    /// The version.
    pub version: String,
    /// SHA-256 of its signed manifest.
    pub manifest_sha256: String,
    /// `staged`; null for a repair, which leaves the state as it was.
    pub state: Option<VersionState>,
    /// The bundle repaired the stored files of a version already imported.
    pub repaired: bool,
    /// Validation started.
    pub validating: bool,
}

/// `POST …/approve`: the approval was recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approved {
    /// The model.
    pub model: String,
    /// The version.
    pub version: String,
    /// Its state now (`approved` once the policy is met).
    pub state: VersionState,
    /// Who approved.
    pub approved_by: String,
}

/// `POST …/reject`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    /// The model.
    pub model: String,
    /// The version.
    pub version: String,
    /// `rejected`.
    pub state: VersionState,
}

/// `POST /models/NAME/promote` and `…/rollback`: what serves now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Active {
    /// The model.
    pub model: String,
    /// The version now active.
    pub active: String,
}

/// A bundle on a medium.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaBundle {
    /// Its path (what `POST /bundles/import` takes).
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
}

/// A removable medium airlockd mounted read-only and offers bundles from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Medium {
    /// The block device (`/dev/sdb1`).
    pub device: String,
    /// Its label.
    pub label: String,
    /// Where it is mounted.
    pub mount: String,
    /// A limit stopped the listing early.
    pub truncated: bool,
    /// The bundles on it.
    pub bundles: Vec<MediaBundle>,
}

/// `GET /media`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaList {
    /// Media with bundles.
    pub media: Vec<Medium>,
}

/// `GET /trust` and `POST /trust`: the trust root.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrustRoot {
    /// Its version.
    pub version: u64,
    /// Its signed body (`expires`, `roles`, `keys`, `revoked`, …).
    pub root: serde_json::Value,
}

/// `GET /audit?from=N&limit=M`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecords {
    /// Records, oldest first.
    pub records: Vec<AuditRecord>,
}

/// `GET /audit/verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditVerified {
    /// Always true in an answer (a broken chain is an error).
    pub verified: bool,
    /// Records checked.
    pub records: u64,
}

/// A token as anyone may see it: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// Its public id.
    pub id: String,
    /// A name for people.
    pub name: String,
    /// What it may do (`model:NAME`, `model:*`, `metrics`, `admin:ROLE`).
    pub scopes: Vec<String>,
    /// Who created it.
    pub created_by: String,
    /// When.
    pub created_at: String,
    /// When it was revoked, if it was.
    pub revoked_at: Option<String>,
}

/// `POST /tokens` and `POST /tokens/ID/rotate`: the token and its secret, shown this once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenSecret {
    /// The token.
    #[serde(flatten)]
    pub info: Token,
    /// The secret (`al_ID_SECRET`): in this answer and nowhere else.
    pub token: String,
    /// After a rotation: how long the previous secret keeps working.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_valid_for_s: Option<u64>,
}

/// `GET /tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenList {
    /// Every token, revoked ones too.
    pub tokens: Vec<Token>,
}

/// `GET /time` and `POST /time/reset-floor`: the clocks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeInfo {
    /// The system clock (RFC 3339).
    pub system: String,
    /// The time floor (never goes back).
    pub floor: String,
    /// What expiry is judged against: the later of the two.
    pub trusted: String,
    /// How far the system clock is behind the floor, if it is.
    pub clock_behind_floor_s: Option<i64>,
}

/// `POST /bundles/import`: a bundle on a medium airlockd offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportPath {
    /// As `GET /media` lists it.
    pub path: String,
}

/// `POST /models/NAME/versions/VERSION/approve`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApproveRequest {
    /// For the audit log.
    pub comment: Option<String>,
    /// The approver read the contract change.
    pub acknowledge_contract_change: bool,
    /// An approver-role signature (under `mode = "signed"`).
    pub signature: Option<SignatureHex>,
}

/// `POST /models/NAME/versions/VERSION/reject`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectRequest {
    /// Why, for the audit log.
    pub reason: Option<String>,
}

/// `POST /models/NAME/promote`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromoteRequest {
    /// The approved version to put into service.
    pub version: String,
}

/// `POST /models/NAME/rollback`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackRequest {
    /// A specific retired version (else the rollback target).
    pub version: Option<String>,
    /// Why, for the audit log.
    pub reason: Option<String>,
}

/// `POST /tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTokenRequest {
    /// A name for people.
    pub name: String,
    /// What it may do.
    pub scopes: Vec<String>,
}

/// A telemetry series: metric name, labels, kind and the unit of its stored integers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TelemetrySeries {
    /// Metric name (`airlock_queue_depth`).
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// `gauge` or `counter` (a counter's points are its increases: `sum` is the increase over
    /// the bucket, `avg` the increase per second).
    pub kind: String,
    /// Unit of the values (`us`, `bytes`, `percent`, `1/100`, `` for a count).
    pub unit: String,
}

/// One tier of the telemetry store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TelemetryTier {
    /// Step in seconds.
    pub step: u64,
    /// Retention in seconds.
    pub keep: u64,
    /// Segment files.
    pub segments: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Stored series-slots.
    pub slots: u64,
    /// Start of its oldest block (Unix seconds).
    pub oldest: Option<u64>,
}

/// The telemetry store's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TelemetryStore {
    /// `recording`, `paused` (see `reason`), `opening`, `failed` or `off`.
    pub state: String,
    /// Why it is not recording.
    pub reason: Option<String>,
    /// Bytes of every file of the store.
    pub bytes_used: u64,
    /// The budget.
    pub max_bytes: u64,
    /// Segment files found damaged.
    pub damaged_segments: u64,
    /// Chunks whose checksum did not match.
    pub damaged_chunks: u64,
    /// Samples dropped beyond `max_series`.
    pub dropped_samples: u64,
    /// Samples refused because the clock had gone back.
    pub clock_skips: u64,
    /// Writes that failed.
    pub write_errors: u64,
    /// Segments deleted to stay within the budget.
    pub budget_deletions: u64,
    /// Newest sample (Unix seconds).
    pub last_sample: Option<u64>,
    /// Tiers, finest first.
    pub tiers: Vec<TelemetryTier>,
}

/// `GET /telemetry/series[?match=SELECTOR]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TelemetryCatalog {
    /// The store.
    pub store: TelemetryStore,
    /// Series, sorted by name and labels.
    pub series: Vec<TelemetrySeries>,
}

/// One bucket of a telemetry answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TelemetryPoint {
    /// Bucket start (Unix seconds).
    pub t: u64,
    /// Smallest value.
    pub min: i64,
    /// Largest value.
    pub max: i64,
    /// Mean of the values (`sum / count`).
    pub avg: f64,
    /// Sum of the values (for a counter: the increase over the bucket).
    pub sum: i64,
    /// Seconds with a value in the bucket.
    pub count: u32,
}

/// One series of a telemetry answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TelemetrySeriesPoints {
    /// The series.
    #[serde(flatten)]
    pub series: TelemetrySeries,
    /// Buckets with data, oldest first (at most `points`).
    pub points: Vec<TelemetryPoint>,
}

/// `GET /telemetry/query?series=SELECTOR&from=…&to=…&points=N`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TelemetryAnswer {
    /// Start of the window (Unix seconds).
    pub from: u64,
    /// End of the window (Unix seconds, exclusive).
    pub to: u64,
    /// The tier read (0 is the finest).
    pub tier: usize,
    /// Bucket width in seconds.
    pub step: u64,
    /// Matching series.
    pub series: Vec<TelemetrySeriesPoints>,
}

/// One span of a trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceSpan {
    /// `request`, `decode`, `queue`, `batch`, `execute`, `respond`.
    pub name: String,
    /// Start, µs after the trace's start.
    pub start_us: u64,
    /// Length in µs.
    pub duration_us: u64,
    /// Rows of the batch (on `batch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
}

/// One request's trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceRecord {
    /// W3C trace id (32 hex digits): the client's, or made by airlockd.
    pub trace_id: String,
    /// airlockd's span for the request (16 hex digits), as in the answer's `traceparent`.
    pub span_id: String,
    /// The client's span, when it sent a `traceparent`.
    pub parent_span_id: Option<String>,
    /// The request id (`x-request-id`, and on the request's log lines).
    pub request_id: String,
    /// `http` or `grpc`.
    pub transport: String,
    /// The operation.
    pub operation: String,
    /// The model that answered.
    pub model: Option<String>,
    /// Its version.
    pub version: Option<String>,
    /// Start (RFC 3339, µs).
    pub start: String,
    /// Start (Unix µs).
    pub start_unix_us: u64,
    /// Length in µs.
    pub duration_us: u64,
    /// `ok` or `error`.
    pub status: String,
    /// The HTTP status or the gRPC code.
    pub code: u32,
    /// Spans, the whole request first.
    pub spans: Vec<TraceSpan>,
}

/// `GET /telemetry/traces?trace_id=…&model=…&from=…&to=…&status=ok|error&min_duration_ms=…&limit=N`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceList {
    /// Traces recorded since airlockd started (kept or since dropped).
    pub recorded: u64,
    /// Matching traces, newest first.
    pub traces: Vec<TraceRecord>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_flattens_into_the_shape_the_api_documents() {
        let m = ModelSummary {
            head: ModelHead {
                name: "iris".into(),
                active: Some("1.0.0".into()),
                promoting: None,
                highest_seen: "1.0.0".into(),
                anti_rollback_floor: None,
                serving: None,
                rollback_target: None,
                unavailable: None,
            },
            versions: 2,
            awaiting_approval: 1,
        };
        let v = serde_json::to_value(&m).expect("json");
        assert_eq!(v["name"], "iris");
        assert_eq!(v["versions"], 2);
        assert_eq!(v["serving"], serde_json::Value::Null);
        let back: ModelSummary = serde_json::from_value(v).expect("back");
        assert_eq!(back, m);
    }

    #[test]
    fn an_error_body_without_a_kind_still_reads() {
        let e: ErrorBody = serde_json::from_str(r#"{"error": "no"}"#).expect("body");
        assert_eq!(e.kind, None);
    }
}
