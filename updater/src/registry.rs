//! The lifecycle registry in `sled`: per model, its versions and their states, the persisted
//! promotion intent, the anti-rollback high-water mark, approvals, the audit chain and the time floor.
//!
//! State machine (each arrow one method, each call one sled transaction over the `models`,
//! `audit` and `meta` trees, flushed before it returns):
//!
//! ```text
//! staged ─validate─▶ validated ─approve×N─▶ approved ─begin/complete_promotion─▶ active ─▶ retired
//!    └────────────▶ validation_failed          │                                   ▲        │
//!  staged|validated|validation_failed|approved ─reject─▶ rejected        rollback ─┘◀───────┘
//!                                                          retired ─retention─▶ removed
//! ```
//!
//! Invariant: only the transitions above are possible; at most one version of a model is
//! `active`; a `retired` version becomes `active` again only if it was approved on this
//! appliance; a crash leaves every record as it was before or after a step, never between.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use semver::Version;
use serde::{Deserialize, Serialize};
use sled::transaction::{
    ConflictableTransactionError, TransactionError, Transactional, TransactionalTree,
};
use time::OffsetDateTime;

use airlock_signing::VerifiedManifest;

use crate::audit::{self, AuditEntry, AuditRecord, ChainHead};
use crate::error::{Error, Result};
use crate::validate::ValidationReport;

/// A version's lifecycle state (defined with the API's types: stored and shown the same).
pub use airlock_api::VersionState;

/// Who did something: a local user, a token, the daemon itself, or a policy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Actor(String);

impl Actor {
    /// Validates an identity string (`uid:1000(alice)`, `token:ops-1`, `airlockd`, ...).
    pub fn new(name: &str) -> Result<Self> {
        if name.is_empty() || name.len() > 128 || name.chars().any(|c| c.is_control()) {
            return Err(Error::InvalidActor(name.chars().take(128).collect()));
        }
        Ok(Actor(name.to_string()))
    }
    /// The daemon acting on its own (recovery, validation runs).
    pub fn system() -> Self {
        Actor("airlockd".into())
    }
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The approval policy a validated version must meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalPolicy {
    /// This many distinct people, none of them the importer (at least 1).
    Approvers(u32),
    /// Approved automatically when validation passes. Development and unattended labs only.
    UnattendedDev,
    /// Each approval carries an approver-role signature; the caller (which holds the trust
    /// root) decides when the role's threshold is met.
    Signed,
}

/// An approval's signature and whether, with it, the approver role's threshold is met (the
/// caller verified it against the trust root).
#[derive(Debug, Clone)]
pub struct SignedApproval {
    /// The signature over [`airlock_signing::approval_payload`].
    pub signature: airlock_signing::Signature,
    /// Whether the distinct valid signatures now reach the threshold.
    pub threshold_met: bool,
}

impl From<&airlock_config::Approval> for ApprovalPolicy {
    fn from(a: &airlock_config::Approval) -> Self {
        match a.mode {
            airlock_config::ApprovalMode::Approvers => {
                ApprovalPolicy::Approvers(a.required_approvers().max(1))
            }
            airlock_config::ApprovalMode::UnattendedDev => ApprovalPolicy::UnattendedDev,
            airlock_config::ApprovalMode::Signed => ApprovalPolicy::Signed,
        }
    }
}

/// One approval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRecord {
    /// Who approved.
    pub by: Actor,
    /// When.
    pub at: String,
    /// Optional comment.
    pub comment: Option<String>,
    /// The approver's signature (signed-approval policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<airlock_signing::Signature>,
}

/// One version of a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionRecord {
    /// The version.
    pub version: Version,
    /// Its state.
    pub state: VersionState,
    /// SHA-256 of the manifest: the store directory's name.
    pub manifest_digest: String,
    /// Declared payload size.
    pub payload_size: u64,
    /// Bundle signers (key ids).
    pub signers: Vec<String>,
    /// Who imported it.
    pub imported_by: Actor,
    /// When.
    pub imported_at: String,
    /// From where (a path on the appliance, `upload`, ...).
    pub source: String,
    /// Approvals so far.
    pub approvals: Vec<ApprovalRecord>,
    /// Whether it reached `approved` on this appliance (the condition for rollback).
    pub approved_here: bool,
    /// The last validation report.
    pub validation: Option<ValidationReport>,
    /// SHA-256 of that report as it was produced (what the audit record and signed approvals
    /// name; recomputing it from the stored JSON could differ in the last bit of a float).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_sha256: Option<String>,
    /// When it last changed state.
    pub changed_at: String,
}

/// A promotion in progress, persisted before the switch so that a crash can be resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Promotion {
    /// The active version when the promotion began.
    pub from: Option<Version>,
    /// The version being promoted.
    pub to: Version,
    /// Who asked.
    pub by: Actor,
    /// When.
    pub started_at: String,
}

/// A model and all its versions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRecord {
    /// The model's name.
    pub name: String,
    /// The highest version ever imported here (informational: imports do not raise the
    /// anti-rollback floor, approvals do; see [`ModelRecord::floor`]).
    pub highest_seen: Version,
    /// The serving version.
    pub active: Option<Version>,
    /// A promotion that began and has not completed.
    pub promoting: Option<Promotion>,
    /// Versions by number.
    pub versions: BTreeMap<Version, VersionRecord>,
}

impl ModelRecord {
    /// The anti-rollback floor: the highest version that people approved on this appliance
    /// (the approval policy met, whatever happened to it since). An import must be newer.
    /// Imports, validations and rejections never raise it, so a signed bundle that fails
    /// validation or is rejected cannot lock later releases out.
    pub fn floor(&self) -> Option<&Version> {
        self.versions
            .values()
            .filter(|v| v.approved_here)
            .map(|v| &v.version)
            .max()
    }

    /// Whether `version` may be imported: newer than [`ModelRecord::floor`] and not on this
    /// appliance already.
    pub fn admits(&self, version: &Version) -> Result<()> {
        if let Some(floor) = self.floor() {
            if version <= floor {
                return Err(Error::AntiRollback {
                    model: self.name.clone(),
                    version: version.to_string(),
                    highest: floor.to_string(),
                });
            }
        }
        if let Some(v) = self.versions.get(version) {
            return Err(Error::Conflict {
                model: self.name.clone(),
                reason: format!(
                    "{} {version} is on this appliance already ({}); a new release needs a new version number",
                    self.name, v.state
                ),
            });
        }
        Ok(())
    }
}

impl VersionRecord {
    /// SHA-256 of the validation report, as recorded when it was produced.
    pub fn report_digest(&self) -> Option<String> {
        self.validation_sha256
            .clone()
            .or_else(|| self.validation.as_ref().map(|r| r.digest()))
    }
}

impl ModelRecord {
    fn version_mut(&mut self, v: &Version) -> Result<&mut VersionRecord> {
        let name = self.name.clone();
        self.versions.get_mut(v).ok_or(Error::UnknownVersion {
            model: name,
            version: v.to_string(),
        })
    }

    /// The version, if its state is one of `allowed`; otherwise the illegal-transition error.
    fn version_in(
        &mut self,
        v: &Version,
        allowed: &[VersionState],
        action: &str,
    ) -> Result<&mut VersionRecord> {
        let name = self.name.clone();
        let rec = self.version_mut(v)?;
        if !allowed.contains(&rec.state) {
            return Err(Error::IllegalTransition {
                model: name,
                version: v.to_string(),
                state: rec.state,
                action: action.to_string(),
            });
        }
        Ok(rec)
    }

    /// The version a rollback without an explicit target returns to: the most recently retired
    /// version that was approved on this appliance.
    pub fn rollback_target(&self) -> Result<Version> {
        self.versions
            .values()
            .filter(|v| v.state == VersionState::Retired && v.approved_here)
            .max_by(|a, b| {
                a.changed_at
                    .cmp(&b.changed_at)
                    .then(a.version.cmp(&b.version))
            })
            .map(|v| v.version.clone())
            .ok_or_else(|| Error::Conflict {
                model: self.name.clone(),
                reason: "no retired version approved on this appliance to roll back to".into(),
            })
    }

    fn no_promotion(&self) -> Result<()> {
        match &self.promoting {
            Some(p) => Err(Error::Conflict {
                model: self.name.clone(),
                reason: format!("a promotion to {} is in progress", p.to),
            }),
            None => Ok(()),
        }
    }
}

fn illegal(m: &ModelRecord, v: &VersionRecord, action: &str) -> Error {
    Error::IllegalTransition {
        model: m.name.clone(),
        version: v.version.to_string(),
        state: v.state,
        action: action.to_string(),
    }
}

const META_HEAD: &[u8] = b"audit_head";
const META_FLOOR: &[u8] = b"time_floor";
const META_TRUST_ROOTS: &[u8] = b"trust_roots";

/// The open database and its trees.
struct Trees {
    db: sled::Db,
    models: sled::Tree,
    audit: sled::Tree,
    meta: sled::Tree,
    tokens: sled::Tree,
}

impl Trees {
    fn open(path: &Path) -> Result<Self> {
        let db = sled::Config::new()
            .path(path)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(|e| {
                if e.to_string().contains("could not acquire lock") {
                    in_use(path)
                } else {
                    Error::StateUnopenable {
                        path: path.display().to_string(),
                        cause: sled_message(&e),
                    }
                }
            })?;
        Ok(Trees {
            models: db.open_tree("models")?,
            audit: db.open_tree("audit")?,
            meta: db.open_tree("meta")?,
            tokens: db.open_tree("tokens")?,
            db,
        })
    }
}

/// The registry over one sled database.
///
/// What it shows is what is on disk: every change is one transaction flushed before the call
/// returns, none is started with less than the reserve free, and a transaction or flush that
/// fails closes the database (its in-memory view may hold the change) and reopens it from disk.
pub struct Registry {
    path: PathBuf,
    /// Free space a state write needs on the database's filesystem (`[state] reserve_free_space`).
    reserve: u64,
    /// `None` after a failed write, until the database is reopened from disk.
    trees: RwLock<Option<Arc<Trees>>>,
    /// The handle a failed write discarded: while an operation in progress still holds it, sled
    /// keeps its lock and cannot be reopened.
    discarded: std::sync::Mutex<std::sync::Weak<Trees>>,
    /// Held by a write from its transaction through its flush (and a discard after a failure):
    /// a flush writes whatever the database holds, so another write's flush must not put a
    /// change on disk that its own write has already reported as not recorded.
    writing: std::sync::Mutex<()>,
    policy: ApprovalPolicy,
}

type TxResult<T> = std::result::Result<T, ConflictableTransactionError<Error>>;

fn abort<T>(e: Error) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(e))
}

fn json<T: Serialize>(v: &T) -> TxResult<Vec<u8>> {
    serde_json::to_vec(v).or_else(|e| abort(Error::Database(e.to_string())))
}

fn parse<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T> {
    serde_json::from_slice(b).map_err(|e| Error::Database(format!("corrupt record: {e}")))
}

/// What a transaction step produces: a changed model (if any) and audit entries.
struct Step<T> {
    value: T,
    model: Option<ModelRecord>,
    audit: Vec<AuditEntry>,
}

fn in_use(path: &Path) -> Error {
    Error::Database(format!(
        "{} is in use by another process (is another airlockd running on this data directory?)",
        path.display()
    ))
}

/// sled's error for people: an I/O error as the OS says it ("No space left on device (os error
/// 28)"), not as sled's debug print.
fn sled_message(e: &sled::Error) -> String {
    match e {
        sled::Error::Io(io) if io.raw_os_error().is_some() => io.to_string(),
        // sled hands a stored I/O error on as a new one made of its debug print; its kind
        // survives.
        sled::Error::Io(io) => format!("{} (an I/O error)", io.kind()),
        other => other.to_string(),
    }
}

/// The temporary files sled 0.34 can leave in its directory when it is stopped while writing
/// them (a start on a full disk, a kill): `snap.<LSN>.generating`, an unfinished snapshot.
/// sled 0.34.7 takes the newest `snap.*` file for its snapshot *including* these, so one empty
/// leftover makes every later open fail with "Read corrupted data" although the data is intact.
/// They hold nothing the log does not (sled regenerates the snapshot from the log), so airlockd
/// removes them before opening. A workaround for sled 0.34; re-check it when sled is upgraded.
pub fn remove_sled_leftovers(state: &Path) -> Result<Vec<(PathBuf, u64)>> {
    let mut removed = Vec::new();
    let entries = match std::fs::read_dir(state) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => {
            return Err(Error::Io {
                what: format!("cannot list {}", state.display()),
                source: e,
            })
        }
    };
    for e in entries {
        let e = e.map_err(Error::io(format!("cannot list {}", state.display())))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            let size = e.metadata().map(|m| m.len()).unwrap_or(0);
            std::fs::remove_file(e.path())
                .map_err(Error::io(format!("cannot remove {}", e.path().display())))?;
            removed.push((e.path(), size));
        }
    }
    if !removed.is_empty() {
        crate::store::fsync_dir(state)?;
    }
    Ok(removed)
}

/// What opening the state database needs free on its filesystem: the reserve, plus room for
/// sled to write a new snapshot as large as its newest one.
fn space_to_open(state: &Path, reserve: u64) -> u64 {
    let snapshot = std::fs::read_dir(state)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("snap."))
        .filter_map(|e| e.metadata().ok().map(|m| m.len()))
        .max()
        .unwrap_or(0);
    reserve.saturating_add(snapshot)
}

impl Registry {
    /// Opens (or creates) the registry at `path`, which must have `reserve` bytes free (and
    /// room for a snapshot) on its filesystem first: below that sled is not started at all, so
    /// that a full disk cannot leave it unopenable. sled's leftover temporary files are removed
    /// first ([`remove_sled_leftovers`]).
    pub fn open(path: &Path, policy: ApprovalPolicy, reserve: u64) -> Result<Self> {
        let r = Registry {
            path: path.to_path_buf(),
            reserve,
            trees: RwLock::new(None),
            discarded: std::sync::Mutex::new(std::sync::Weak::new()),
            writing: std::sync::Mutex::new(()),
            policy,
        };
        // Approvals, audit chain, token hashes: the owner's only.
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(path)
            .map_err(Error::io(format!("cannot create {}", path.display())))?;
        r.open_trees(true)?;
        Ok(r)
    }

    /// Opens the database from disk: refused while another process holds it, its leftover
    /// temporary files removed, then refused below the reserve (and room for a snapshot), and
    /// only then started. `first`: the open at start, which may create a database; a reopen
    /// after a failed write requires the one that was there (a data filesystem gone from under
    /// the daemon must not turn into an empty registry).
    fn open_trees(&self, first: bool) -> Result<Arc<Trees>> {
        let mut slot = self.trees.write().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = slot.as_ref() {
            return Ok(t.clone());
        }
        let db = self.path.join("db");
        if !first && !db.exists() {
            return Err(Error::StateUnavailable(format!(
                "{} is gone (was the data filesystem unmounted?); airlockd does not create a new, empty state database while running",
                db.display()
            )));
        }
        if self
            .discarded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .upgrade()
            .is_some()
        {
            return Err(Error::StateUnavailable(
                "it is being reloaded from disk after a failed write, and an operation in progress still holds it; retry".into(),
            ));
        }
        // sled takes an exclusive flock on `db`; probe it first, so that a second process never
        // touches the files of a database another one is running on.
        if let Ok(f) = std::fs::File::open(&db) {
            if let Err((_, e)) =
                nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock)
            {
                return Err(if e == nix::errno::Errno::EWOULDBLOCK {
                    in_use(&self.path)
                } else {
                    Error::Io {
                        what: format!("cannot lock {}", db.display()),
                        source: std::io::Error::from_raw_os_error(e as i32),
                    }
                });
            }
        }
        for (p, size) in remove_sled_leftovers(&self.path)? {
            tracing::warn!(file = %p.display(), bytes = size, "removed an unfinished sled snapshot left by an interrupted write (sled 0.34 would take it for the newest and refuse to open)");
        }
        let needed = space_to_open(&self.path, self.reserve);
        let available = crate::store::available_space(&self.path)?;
        if available < needed {
            return Err(Error::StateDiskFull {
                path: self.path.display().to_string(),
                available,
                needed,
                opening: first,
            });
        }
        let t = Arc::new(Trees::open(&self.path)?);
        *slot = Some(t.clone());
        Ok(t)
    }

    /// The open database, reopened from disk if a failed write closed it.
    fn t(&self) -> Result<Arc<Trees>> {
        if let Some(t) = self
            .trees
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            return Ok(t.clone());
        }
        self.open_trees(false).map_err(|e| match e {
            e @ Error::StateUnavailable(_) => e,
            e => Error::StateUnavailable(e.to_string()),
        })
    }

    /// After a failed transaction or flush: the in-memory view may hold a change that is not on
    /// disk, so the database is closed and reopened from disk (at once if nothing else holds
    /// it, else at the next use). `wrote` is the audit head the failed write made, if it made
    /// one: when the reload finds it on disk, the change was recorded after all (Ok).
    fn discard(&self, failed: Arc<Trees>, cause: String, wrote: Option<sled::IVec>) -> Result<()> {
        let released = Arc::downgrade(&failed);
        {
            let mut slot = self.trees.write().unwrap_or_else(|p| p.into_inner());
            if slot.as_ref().is_some_and(|t| Arc::ptr_eq(t, &failed)) {
                *slot = None;
                *self.discarded.lock().unwrap_or_else(|p| p.into_inner()) = released.clone();
            }
        }
        drop(failed);
        // Readers hold the handle only for a lookup: give them a moment to let go (up to 2 s: a
        // reader descheduled on a loaded machine holds it longer than its lookup takes, and
        // sled will not open files this process still holds).
        for _ in 0..1000 {
            if released.strong_count() == 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        // sled lets go of its lock on `db` when its flusher thread ends, a moment after the last
        // handle was dropped: wait for that too (same bound), or the reload below would take this
        // process's own closing handle for another airlockd.
        let db = self.path.join("db");
        for _ in 0..1000 {
            let held = std::fs::File::open(&db).is_ok_and(|f| {
                matches!(
                    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock),
                    Err((_, nix::errno::Errno::EWOULDBLOCK))
                )
            });
            if !held {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        // What reached the disk may include the change (a write that landed before its fsync
        // failed): after the reload, what airlockd shows is what is on disk, whichever it is.
        let reopened = self.open_trees(false);
        let landed = match (&reopened, &wrote) {
            (Ok(t), Some(w)) => t.meta.get(META_HEAD).ok().flatten().as_ref() == Some(w),
            _ => false,
        };
        if landed {
            tracing::warn!(cause = %cause, "a state change could not be confirmed, yet the reload from disk finds it recorded: it stands");
            return Ok(());
        }
        let reopened = match reopened {
            Ok(_) => "the state was reloaded from disk: what airlockd shows now is what is on disk (look before you retry)".to_string(),
            Err(e) => format!("the state database stays closed until it can be reopened ({e})"),
        };
        tracing::error!(cause = %cause, state = %reopened, "a state change could not be confirmed on disk; the in-memory state was discarded");
        Err(Error::NotRecorded(format!("{cause}; {reopened}")))
    }

    /// Refuses a state write before it starts when less than the reserve is free.
    fn room_to_write(&self) -> Result<()> {
        let available = crate::store::available_space(&self.path)?;
        if available < self.reserve {
            return Err(Error::StateDiskFull {
                path: self.path.display().to_string(),
                available,
                needed: self.reserve,
                opening: false,
            });
        }
        Ok(())
    }

    /// One state write: checked against the reserve, run as one transaction over the trees
    /// `tx` names, flushed. A storage error or a failed flush discards the in-memory view.
    fn write<T>(
        &self,
        tx: impl FnOnce(&Trees) -> std::result::Result<T, TransactionError<Error>>,
    ) -> Result<T> {
        let _writing = self
            .writing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.room_to_write()?;
        let t = self.t()?;
        let head_before = t.meta.get(META_HEAD).ok().flatten();
        match tx(&t) {
            Ok(v) => {
                let mut flushed = t.db.flush().map(drop).map_err(|e| sled_message(&e));
                if crate::fault_fails("state:flush") {
                    flushed = flushed.and(Err("a failure injected after the flush (test)".into()));
                }
                let Err(why) = flushed else { return Ok(v) };
                // The head this write appended, if it appended records: after the reload it
                // says whether the change reached the disk after all.
                let wrote = t
                    .meta
                    .get(META_HEAD)
                    .ok()
                    .flatten()
                    .filter(|h| head_before.as_ref() != Some(h));
                let cause = format!("flushing the state database failed: {why}");
                self.discard(t, cause, wrote).map(|()| v)
            }
            Err(TransactionError::Abort(e)) => Err(e),
            Err(TransactionError::Storage(e)) => {
                let cause = format!("the state database failed to write: {}", sled_message(&e));
                // A transaction that failed left nothing to find on disk.
                Err(self
                    .discard(t, cause.clone(), None)
                    .err()
                    .unwrap_or(Error::NotRecorded(cause)))
            }
        }
    }

    /// One written transaction over the audit chain (`audit`, and `meta`, which holds its head):
    /// every audited change goes through here or [`Self::audited_with`].
    fn audited<T>(
        &self,
        f: impl Fn(&TransactionalTree, &TransactionalTree) -> TxResult<T>,
    ) -> Result<T> {
        self.write(|t| {
            (&t.audit, &t.meta).transaction(
                |(audit, meta): &(TransactionalTree, TransactionalTree)| f(audit, meta),
            )
        })
    }

    /// [`Self::audited`] with one more tree of the open state (`models` or `tokens`), passed
    /// first.
    fn audited_with<T>(
        &self,
        tree: fn(&Trees) -> &sled::Tree,
        f: impl Fn(&TransactionalTree, &TransactionalTree, &TransactionalTree) -> TxResult<T>,
    ) -> Result<T> {
        self.write(|t| {
            (tree(t), &t.audit, &t.meta).transaction(
                |(x, audit, meta): &(TransactionalTree, TransactionalTree, TransactionalTree)| {
                    f(x, audit, meta)
                },
            )
        })
    }

    /// The approval policy in force.
    pub fn policy(&self) -> ApprovalPolicy {
        self.policy
    }

    /// The persisted time floor: the latest trusted time seen (Unix seconds).
    pub fn time_floor(&self) -> Result<i64> {
        Ok(self
            .t()?
            .meta
            .get(META_FLOOR)?
            .map(|v| i64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8])))
            .unwrap_or(0))
    }

    /// "Now" for expiry checks: the later of the system clock and the floor. Raises the floor to
    /// the system clock when the clock is ahead by more than a minute (one write per minute at most).
    pub fn trusted_now(&self, system: OffsetDateTime) -> Result<OffsetDateTime> {
        let floor = self.time_floor()?;
        let sys = system.unix_timestamp();
        if sys > floor + 60 {
            // Raising the floor is a state write like any other; on a full disk it waits for
            // the next call (the clock is ahead of the floor, so it is "now" either way).
            let raised = self.write(|t| {
                (&t.meta,).transaction(|(meta,): &(TransactionalTree,)| {
                    raise_floor(meta, sys)?;
                    Ok(())
                })
            });
            if let Err(e) = raised {
                tracing::debug!(error = %e, "time floor not raised");
            }
            return Ok(system);
        }
        if sys >= floor {
            return Ok(system);
        }
        Ok(OffsetDateTime::from_unix_timestamp(floor).unwrap_or(system))
    }

    /// Sets the time floor back to `system` (an admin's acknowledgement that the clock is
    /// right), in one transaction with its audit record. Returns (old floor, new floor).
    pub fn reset_time_floor(&self, system: OffsetDateTime, actor: &Actor) -> Result<(i64, i64)> {
        let new = system.unix_timestamp();
        let time = stamp(system);
        self.audited(|audit, meta| {
            let old = meta
                .get(META_FLOOR)?
                .map(|v| i64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8])))
                .unwrap_or(0);
            meta.insert(META_FLOOR, &new.to_be_bytes())?;
            let fmt = |t: i64| {
                OffsetDateTime::from_unix_timestamp(t)
                    .map(stamp)
                    .unwrap_or_else(|_| t.to_string())
            };
            append(
                audit,
                meta,
                &time,
                &[AuditEntry {
                    actor: actor.to_string(),
                    action: "time_floor_reset".into(),
                    model: None,
                    version: None,
                    detail: serde_json::json!({ "from": fmt(old), "to": fmt(new) }),
                }],
            )?;
            Ok((old, new))
        })
    }

    /// Runs `f` on the model's record inside one transaction with the audit append.
    fn step<T>(
        &self,
        model: &str,
        now: OffsetDateTime,
        floor: Option<OffsetDateTime>,
        f: impl Fn(Option<ModelRecord>) -> Result<Step<T>>,
    ) -> Result<T> {
        let time = stamp(now);
        let floor_raise = floor.map_or(now, |f| f.max(now)).unix_timestamp();
        self.audited_with(
            |t| &t.models,
            |models, audit, meta| {
                let current = match models.get(model.as_bytes())? {
                    Some(b) => Some(parse::<ModelRecord>(&b).or_else(abort)?),
                    None => None,
                };
                let step = f(current).or_else(abort)?;
                if let Some(m) = &step.model {
                    models.insert(model.as_bytes(), json(m)?)?;
                }
                append(audit, meta, &time, &step.audit)?;
                raise_floor(meta, floor_raise)?;
                Ok(step.value)
            },
        )
    }

    /// Appends audit entries that change no model (refused imports, recovery notes).
    pub fn audit_only(&self, now: OffsetDateTime, entries: &[AuditEntry]) -> Result<()> {
        let time = stamp(now);
        self.audited(|audit, meta| append(audit, meta, &time, entries))
    }

    /// The highest version of `model` ever seen here.
    pub fn highest_seen(&self, model: &str) -> Result<Option<Version>> {
        Ok(self.model(model)?.map(|m| m.highest_seen))
    }

    /// One model.
    pub fn model(&self, name: &str) -> Result<Option<ModelRecord>> {
        self.t()?
            .models
            .get(name.as_bytes())?
            .map(|b| parse(&b))
            .transpose()
    }

    /// All models, by name.
    pub fn models(&self) -> Result<Vec<ModelRecord>> {
        self.t()?
            .models
            .iter()
            .values()
            .map(|v| parse(&v?))
            .collect()
    }

    /// Records a verified, stored bundle as a `staged` version (refused unless newer than the
    /// anti-rollback floor, [`ModelRecord::floor`]); raises the time floor (to the bundle's
    /// signed issue time) in the same transaction.
    pub fn record_import(
        &self,
        now: OffsetDateTime,
        v: &VerifiedManifest,
        source: &str,
        actor: &Actor,
    ) -> Result<()> {
        let m = &v.manifest;
        let name = m.model.name.as_str();
        // The bundle's signed issue time is trusted time: the floor never goes below it.
        self.step(name, now, Some(m.issued_at), |cur| {
            let mut rec = cur.unwrap_or(ModelRecord {
                name: name.to_string(),
                highest_seen: Version::new(0, 0, 0),
                active: None,
                promoting: None,
                versions: BTreeMap::new(),
            });
            // Anti-rollback, re-checked inside the transaction (the importer checked it first).
            rec.admits(&m.model.version)?;
            rec.highest_seen = rec.highest_seen.clone().max(m.model.version.clone());
            rec.versions.insert(
                m.model.version.clone(),
                VersionRecord {
                    version: m.model.version.clone(),
                    state: VersionState::Staged,
                    manifest_digest: v.digest.to_hex(),
                    payload_size: m.payload_size(),
                    signers: v.signers.iter().map(|k| k.to_string()).collect(),
                    imported_by: actor.clone(),
                    imported_at: stamp(now),
                    source: source.to_string(),
                    approvals: vec![],
                    approved_here: false,
                    validation: None,
                    validation_sha256: None,
                    changed_at: stamp(now),
                },
            );
            Ok(Step {
                value: (),
                model: Some(rec),
                audit: vec![AuditEntry {
                    actor: actor.to_string(),
                    action: "import".into(),
                    model: Some(name.into()),
                    version: Some(m.model.version.to_string()),
                    detail: serde_json::json!({
                        "to": "staged",
                        "manifest_sha256": v.digest.to_hex(),
                        "signers": v.signers.iter().map(|k| k.to_string()).collect::<Vec<_>>(),
                        "source": source,
                        "warnings": v.warnings,
                    }),
                }],
            })
        })
    }

    /// Records a validation result: `staged` → `validated` or `validation_failed`; under the
    /// unattended-dev policy a pass is also an (audited) automatic approval.
    pub fn record_validation(
        &self,
        now: OffsetDateTime,
        model: &str,
        version: &Version,
        report: &ValidationReport,
        actor: &Actor,
    ) -> Result<VersionState> {
        let policy = self.policy;
        self.step(model, now, None, |cur| {
            let mut rec = cur.ok_or_else(|| Error::UnknownModel(model.into()))?;
            let v = rec.version_in(
                version,
                &[VersionState::Staged],
                "record a validation (only staged versions are validated)",
            )?;
            v.state = if report.passed {
                VersionState::Validated
            } else {
                VersionState::ValidationFailed
            };
            v.validation = Some(report.clone());
            v.validation_sha256 = Some(report.digest());
            v.changed_at = stamp(now);
            let mut audit = vec![entry(
                actor,
                "validate",
                model,
                version,
                serde_json::json!({
                    "to": v.state,
                    "passed": report.passed,
                    "report_sha256": report.digest(),
                    "engine": report.engine,
                }),
            )];
            if report.passed && policy == ApprovalPolicy::UnattendedDev {
                v.state = VersionState::Approved;
                v.approved_here = true;
                v.approvals.push(ApprovalRecord {
                    by: Actor("policy:unattended-dev".into()),
                    at: stamp(now),
                    comment: None,
                    signature: None,
                });
                audit.push(entry(
                    &Actor("policy:unattended-dev".into()),
                    "approve",
                    model,
                    version,
                    serde_json::json!({
                        "to": "approved", "automatic": true,
                    }),
                ));
            }
            let state = v.state;
            Ok(Step {
                value: state,
                model: Some(rec),
                audit,
            })
        })
    }

    /// Records one approval; the version becomes `approved` when the policy's count is reached.
    pub fn approve(
        &self,
        now: OffsetDateTime,
        model: &str,
        version: &Version,
        actor: &Actor,
        comment: Option<&str>,
        signed: Option<SignedApproval>,
    ) -> Result<VersionState> {
        let policy = self.policy;
        // People, not credentials: a token acts for the person who created it.
        // Every person of this decision from one handle of the database: a failed read is an
        // error, never "the token stands for itself".
        let handle = self.t()?;
        let me = person_in(&handle.tokens, actor)?;
        let named = if me == actor.as_str() {
            actor.to_string()
        } else {
            format!("{actor} (a token of {me})")
        };
        // Resolved before the transaction (the token tree is not read inside it); an actor
        // that appears in between stands for itself.
        let mut people = std::collections::HashMap::new();
        if let Some(v) = self
            .model(model)?
            .and_then(|r| r.versions.get(version).cloned())
        {
            for a in std::iter::once(&v.imported_by).chain(v.approvals.iter().map(|a| &a.by)) {
                people.insert(a.clone(), person_in(&handle.tokens, a)?);
            }
        }
        let person = |a: &Actor| {
            people
                .get(a)
                .cloned()
                .unwrap_or_else(|| a.as_str().to_string())
        };
        self.step(model, now, None, |cur| {
            let mut rec = cur.ok_or_else(|| Error::UnknownModel(model.into()))?;
            let v = rec.version_in(
                version,
                &[VersionState::Validated],
                "approve (only validated versions can be approved)",
            )?;
            // Four eyes: whoever brought the bundle in cannot also vouch for it.
            if person(&v.imported_by) == me {
                return Err(Error::SelfApproval {
                    actor: named.clone(),
                    model: model.into(),
                    version: version.to_string(),
                });
            }
            if v.approvals.iter().any(|a| person(&a.by) == me) {
                return Err(Error::DuplicateApproval {
                    actor: named.clone(),
                    model: model.into(),
                    version: version.to_string(),
                });
            }
            if policy == ApprovalPolicy::Signed && signed.is_none() {
                return Err(Error::Conflict {
                    model: model.into(),
                    reason: "the approval policy is \"signed\": an approval needs an approver-role signature (airlockctl bundle approve --key FILE)".into(),
                });
            }
            if let Some(sa) = &signed {
                if v.approvals.iter().any(|a| a.signature.as_ref().map(|s| s.keyid) == Some(sa.signature.keyid)) {
                    return Err(Error::Conflict {
                        model: model.into(),
                        reason: format!("approver key {} has already signed {version}", sa.signature.keyid.short()),
                    });
                }
            }
            v.approvals.push(ApprovalRecord {
                by: actor.clone(),
                at: stamp(now),
                comment: comment.map(str::to_string),
                signature: signed.as_ref().map(|s| s.signature),
            });
            let (required, met) = match (policy, &signed) {
                (ApprovalPolicy::Signed, Some(sa)) => {
                    (serde_json::json!("approver-role threshold of the trust root"), sa.threshold_met)
                }
                (ApprovalPolicy::Approvers(n), _) => {
                    (serde_json::json!(n), v.approvals.len() >= n as usize)
                }
                (_, _) => (serde_json::json!(0), true),
            };
            if met {
                v.state = VersionState::Approved;
                v.approved_here = true;
                v.changed_at = stamp(now);
            }
            let detail = serde_json::json!({
                "to": v.state,
                "approvals": v.approvals.len(),
                "required": required,
                "comment": comment,
                "signed_by_key": signed.as_ref().map(|s| s.signature.keyid.to_string()),
            });
            let state = v.state;
            Ok(Step {
                value: state,
                model: Some(rec),
                audit: vec![entry(actor, "approve", model, version, detail)],
            })
        })
    }

    /// Rejects a version that is not serving and never served.
    pub fn reject(
        &self,
        now: OffsetDateTime,
        model: &str,
        version: &Version,
        actor: &Actor,
        reason: Option<&str>,
    ) -> Result<()> {
        self.step(model, now, None, |cur| {
            let mut rec = cur.ok_or_else(|| Error::UnknownModel(model.into()))?;
            if rec.promoting.as_ref().is_some_and(|p| &p.to == version) {
                return Err(Error::Conflict {
                    model: model.into(),
                    reason: format!("{version} is being promoted"),
                });
            }
            let v = rec.version_in(
                version,
                &[
                    VersionState::Staged,
                    VersionState::Validated,
                    VersionState::ValidationFailed,
                    VersionState::Approved,
                ],
                "reject",
            )?;
            let from = v.state;
            v.state = VersionState::Rejected;
            v.changed_at = stamp(now);
            let detail = serde_json::json!({ "from": from, "to": "rejected", "reason": reason });
            Ok(Step {
                value: (),
                model: Some(rec),
                audit: vec![entry(actor, "reject", model, version, detail)],
            })
        })
    }

    /// Persists the intent to promote `version` (which must be `approved`). The serving switch
    /// happens after this returns; [`Registry::complete_promotion`] records it.
    pub fn begin_promotion(
        &self,
        now: OffsetDateTime,
        model: &str,
        version: &Version,
        actor: &Actor,
    ) -> Result<Promotion> {
        self.step(model, now, None, |cur| {
            let mut rec = cur.ok_or_else(|| Error::UnknownModel(model.into()))?;
            rec.no_promotion()?;
            rec.version_in(
                version,
                &[VersionState::Approved],
                "promote (only approved versions can be promoted)",
            )?;
            let p = Promotion { from: rec.active.clone(), to: version.clone(), by: actor.clone(), started_at: stamp(now) };
            rec.promoting = Some(p.clone());
            let detail = serde_json::json!({ "from": p.from.as_ref().map(|v| v.to_string()), "to": version.to_string() });
            Ok(Step { value: p, model: Some(rec), audit: vec![entry(actor, "promote_begin", model, version, detail)] })
        })
    }

    /// Completes the persisted promotion: the new version is `active`, the old one `retired`.
    pub fn complete_promotion(
        &self,
        now: OffsetDateTime,
        model: &str,
        actor: &Actor,
    ) -> Result<Version> {
        self.step(model, now, None, |cur| {
            let mut rec = cur.ok_or_else(|| Error::UnknownModel(model.into()))?;
            let p = rec.promoting.take().ok_or_else(|| Error::Conflict { model: model.into(), reason: "no promotion in progress".into() })?;
            if let Some(old) = &p.from {
                let o = rec.version_mut(old)?;
                o.state = VersionState::Retired;
                o.changed_at = stamp(now);
            }
            let n = rec.version_mut(&p.to)?;
            n.state = VersionState::Active;
            n.changed_at = stamp(now);
            rec.active = Some(p.to.clone());
            let detail = serde_json::json!({ "from": p.from.as_ref().map(|v| v.to_string()), "to": p.to.to_string(), "state": "active" });
            let to = p.to.clone();
            Ok(Step { value: to, model: Some(rec), audit: vec![entry(actor, "promote", model, &p.to, detail)] })
        })
    }

    /// Abandons the persisted promotion: everything stays as before it began.
    pub fn abort_promotion(
        &self,
        now: OffsetDateTime,
        model: &str,
        actor: &Actor,
        reason: &str,
    ) -> Result<()> {
        self.step(model, now, None, |cur| {
            let mut rec = cur.ok_or_else(|| Error::UnknownModel(model.into()))?;
            let p = rec.promoting.take().ok_or_else(|| Error::Conflict { model: model.into(), reason: "no promotion in progress".into() })?;
            let detail = serde_json::json!({ "reason": reason, "active": p.from.as_ref().map(|v| v.to_string()) });
            Ok(Step { value: (), model: Some(rec), audit: vec![entry(actor, "promote_aborted", model, &p.to, detail)] })
        })
    }

    /// Switches back to a `retired` version that was approved here (default: the most recently
    /// retired one); the current active version becomes `retired`. One transaction, whose
    /// audit record carries `reason`.
    pub fn rollback(
        &self,
        now: OffsetDateTime,
        model: &str,
        to: Option<&Version>,
        actor: &Actor,
        reason: Option<&str>,
    ) -> Result<Version> {
        self.step(model, now, None, |cur| {
            let mut rec = cur.ok_or_else(|| Error::UnknownModel(model.into()))?;
            rec.no_promotion()?;
            let target = match to {
                Some(v) => v.clone(),
                None => rec.rollback_target()?,
            };
            let t = rec.version_mut(&target)?.clone();
            // Anti-rollback: only a version this appliance approved before may serve again.
            if t.state != VersionState::Retired || !t.approved_here {
                return Err(illegal(&rec, &t, "roll back to it (only retired versions approved on this appliance)"));
            }
            let from = rec.active.clone();
            if let Some(old) = &from {
                let o = rec.version_mut(old)?;
                o.state = VersionState::Retired;
                o.changed_at = stamp(now);
            }
            let t = rec.version_mut(&target)?;
            t.state = VersionState::Active;
            t.changed_at = stamp(now);
            rec.active = Some(target.clone());
            // The reason is part of the rollback's own record: one transaction, nothing to lose.
            let detail = serde_json::json!({ "from": from.map(|v| v.to_string()), "to": target.to_string(), "reason": reason });
            Ok(Step { value: target.clone(), model: Some(rec), audit: vec![entry(actor, "rollback", model, &target, detail)] })
        })
    }

    /// Retention: a `retired` version that is not the rollback target becomes `removed`; the
    /// caller deletes its store directory after this returns.
    pub fn mark_removed(
        &self,
        now: OffsetDateTime,
        model: &str,
        version: &Version,
        actor: &Actor,
    ) -> Result<String> {
        self.step(model, now, None, |cur| {
            let mut rec = cur.ok_or_else(|| Error::UnknownModel(model.into()))?;
            rec.no_promotion()?;
            if rec.rollback_target().ok().as_ref() == Some(version) {
                return Err(Error::Conflict {
                    model: model.into(),
                    reason: format!("{version} is the rollback target and is kept"),
                });
            }
            let v = rec.version_in(version, &[VersionState::Retired], "remove (only retired versions)")?;
            v.state = VersionState::Removed;
            v.changed_at = stamp(now);
            let digest = v.manifest_digest.clone();
            let detail = serde_json::json!({ "from": "retired", "to": "removed", "manifest_sha256": digest });
            Ok(Step { value: digest, model: Some(rec), audit: vec![entry(actor, "remove", model, version, detail)] })
        })
    }

    /// After a crash: every promotion that began and did not complete is abandoned, so the
    /// version that was active before it stays active. Returns the affected models.
    pub fn recover_interrupted(&self, now: OffsetDateTime) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for m in self.models()? {
            if m.promoting.is_some() {
                self.abort_promotion(now, &m.name, &Actor::system(), "interrupted by a restart")?;
                out.push(m.name);
            }
        }
        Ok(out)
    }

    /// Creates a token; returns its record and the full token, which is shown only this once.
    pub fn create_token(
        &self,
        now: OffsetDateTime,
        name: &str,
        scopes: Vec<crate::tokens::Scope>,
        actor: &Actor,
    ) -> Result<(crate::tokens::TokenRecord, String)> {
        let (id, secret) =
            crate::tokens::generate().map_err(Error::io("cannot generate a token"))?;
        let rec = crate::tokens::TokenRecord {
            id: id.clone(),
            name: name.to_string(),
            scopes,
            secret_sha256: crate::tokens::hash_secret(&secret),
            created_by: actor.to_string(),
            created_at: stamp(now),
            revoked_at: None,
            previous_sha256: None,
            previous_until: None,
        };
        let time = stamp(now);
        let entry = AuditEntry {
            actor: actor.to_string(),
            action: "token_create".into(),
            model: None,
            version: None,
            detail: serde_json::json!({ "id": id, "name": name, "scopes": rec.scopes.iter().map(|s| s.to_string()).collect::<Vec<_>>() }),
        };
        self.audited_with(
            |t| &t.tokens,
            |tokens, audit, meta| {
                tokens.insert(id.as_bytes(), json(&rec)?)?;
                append(audit, meta, &time, std::slice::from_ref(&entry))
            },
        )?;
        Ok((rec, format!("al_{id}_{secret}")))
    }

    /// Rotates a token's secret: the new one is returned (shown only this once), the previous one
    /// keeps working for `overlap` so that clients in flight are not cut off.
    pub fn rotate_token(
        &self,
        now: OffsetDateTime,
        id: &str,
        overlap: std::time::Duration,
        actor: &Actor,
    ) -> Result<(crate::tokens::TokenRecord, String)> {
        let (_, secret) =
            crate::tokens::generate().map_err(Error::io("cannot generate a token"))?;
        let time = stamp(now);
        let until = now.unix_timestamp() + overlap.as_secs() as i64;
        let rec = self.audited_with(|t| &t.tokens, |tokens, audit, meta| {
                let Some(b) = tokens.get(id.as_bytes())? else {
                    return abort(Error::UnknownToken(id.to_string()));
                };
                let mut rec: crate::tokens::TokenRecord = parse(&b).or_else(abort)?;
                if rec.revoked_at.is_some() {
                    return abort(Error::Conflict {
                        model: format!("token {id}"),
                        reason: "it is revoked; create a new one".into(),
                    });
                }
                rec.previous_sha256 = Some(rec.secret_sha256.clone());
                rec.previous_until = Some(until);
                rec.secret_sha256 = crate::tokens::hash_secret(&secret);
                tokens.insert(id.as_bytes(), json(&rec)?)?;
                let entry = AuditEntry {
                    actor: actor.to_string(),
                    action: "token_rotate".into(),
                    model: None,
                    version: None,
                    detail: serde_json::json!({ "id": id, "name": rec.name, "previous_valid_for_s": overlap.as_secs() }),
                };
                append(audit, meta, &time, std::slice::from_ref(&entry))?;
                Ok(rec)
        })?;
        Ok((rec, format!("al_{id}_{secret}")))
    }

    /// Revokes a token at once (it stays listed, marked revoked).
    pub fn revoke_token(
        &self,
        now: OffsetDateTime,
        id: &str,
        actor: &Actor,
    ) -> Result<crate::tokens::TokenRecord> {
        let time = stamp(now);
        let rec = self.audited_with(
            |t| &t.tokens,
            |tokens, audit, meta| {
                let Some(b) = tokens.get(id.as_bytes())? else {
                    return abort(Error::UnknownToken(id.to_string()));
                };
                let mut rec: crate::tokens::TokenRecord = parse(&b).or_else(abort)?;
                if rec.revoked_at.is_none() {
                    rec.revoked_at = Some(time.clone());
                    tokens.insert(id.as_bytes(), json(&rec)?)?;
                    let entry = AuditEntry {
                        actor: actor.to_string(),
                        action: "token_revoke".into(),
                        model: None,
                        version: None,
                        detail: serde_json::json!({ "id": id, "name": rec.name }),
                    };
                    append(audit, meta, &time, std::slice::from_ref(&entry))?;
                }
                Ok(rec)
            },
        )?;
        Ok(rec)
    }

    /// The person behind `actor`: a token (`token:ID(NAME)`) stands for whoever created it,
    /// followed through tokens that created tokens; anyone else is themselves. An approval
    /// policy counts these, so one person with two tokens is still one person.
    pub fn person(&self, actor: &Actor) -> Result<String> {
        person_in(&self.t()?.tokens, actor)
    }

    /// Every token record (no secrets), by id.
    pub fn tokens(&self) -> Result<std::collections::BTreeMap<String, crate::tokens::TokenRecord>> {
        self.t()?
            .tokens
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                Ok((String::from_utf8_lossy(&k).into_owned(), parse(&v)?))
            })
            .collect()
    }

    /// Audit records from `from` (at most `limit`).
    pub fn audit_records(&self, from: u64, limit: usize) -> Result<Vec<AuditRecord>> {
        self.t()?
            .audit
            .range(from.to_be_bytes()..)
            .take(limit)
            .map(|kv| parse(&kv?.1))
            .collect()
    }

    /// Verifies the whole audit chain against its head; returns the number of records.
    pub fn verify_audit(&self) -> Result<u64> {
        let t = self.t()?;
        let head = head(&t.meta)?;
        let records = t
            .audit
            .iter()
            .map(|kv| {
                kv.map(|(k, v)| {
                    (
                        u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0xff; 8])),
                        v.to_vec(),
                    )
                })
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        audit::verify_chain(records, head)
    }

    /// Direct access to the audit tree, for tamper tests and forensic tools.
    #[doc(hidden)]
    pub fn audit_tree(&self) -> Result<sled::Tree> {
        Ok(self.t()?.audit.clone())
    }

    /// Flushes everything to disk.
    pub fn flush(&self) -> Result<()> {
        self.t()?.db.flush()?;
        Ok(())
    }

    /// The trust roots installed on this appliance, oldest first (the files' bytes): the first
    /// one the image's initial root, each next one a rotation of the one before. The caller
    /// verifies the chain from the image's initial root, which this database cannot change.
    pub fn trust_roots(&self) -> Result<Vec<Vec<u8>>> {
        match self.t()?.meta.get(META_TRUST_ROOTS)? {
            None => Ok(Vec::new()),
            Some(b) => {
                let chain: Vec<String> = parse(&b)?;
                Ok(chain.into_iter().map(String::into_bytes).collect())
            }
        }
    }

    /// Records `chain` as the installed trust roots, in one transaction with `entries`.
    pub fn record_trust_roots(
        &self,
        now: OffsetDateTime,
        chain: &[Vec<u8>],
        entries: &[AuditEntry],
    ) -> Result<()> {
        let time = stamp(now);
        let texts = chain
            .iter()
            .map(|b| String::from_utf8(b.clone()))
            .collect::<std::result::Result<Vec<String>, _>>()
            .map_err(|_| Error::Database("a trust root is not UTF-8 JSON".into()))?;
        let bytes = serde_json::to_vec(&texts).map_err(|e| Error::Database(e.to_string()))?;
        self.audited(|audit, meta| {
            meta.insert(META_TRUST_ROOTS, bytes.as_slice())?;
            append(audit, meta, &time, entries)
        })
    }
}

fn entry(
    actor: &Actor,
    action: &str,
    model: &str,
    version: &Version,
    detail: serde_json::Value,
) -> AuditEntry {
    AuditEntry {
        actor: actor.to_string(),
        action: action.into(),
        model: Some(model.into()),
        version: Some(version.to_string()),
        detail,
    }
}

fn append(
    audit: &TransactionalTree,
    meta: &TransactionalTree,
    time: &str,
    entries: &[AuditEntry],
) -> TxResult<()> {
    let mut head: ChainHead = match meta.get(META_HEAD)? {
        Some(b) => parse(&b).or_else(abort)?,
        None => ChainHead::EMPTY,
    };
    for e in entries {
        let (bytes, next) = audit::link(head, time.to_string(), e).or_else(abort)?;
        audit.insert(&head.count.to_be_bytes(), bytes)?;
        head = next;
    }
    meta.insert(META_HEAD, json(&head)?)?;
    Ok(())
}

fn raise_floor(meta: &TransactionalTree, t: i64) -> TxResult<()> {
    let cur = meta
        .get(META_FLOOR)?
        .map(|v| i64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8])))
        .unwrap_or(0);
    if t > cur {
        meta.insert(META_FLOOR, &t.to_be_bytes())?;
    }
    Ok(())
}

/// The one format of every time the registry writes (audit records, state changes):
/// RFC 3339 in UTC with exactly six fractional digits, so that times sort as strings and
/// never switch between whole seconds and nanoseconds.
pub fn stamp(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

fn head(meta: &sled::Tree) -> Result<ChainHead> {
    Ok(match meta.get(META_HEAD)? {
        Some(b) => parse(&b)?,
        None => ChainHead::EMPTY,
    })
}

/// [`Registry::person`] over one handle of the token tree (every person of one decision from the
/// same database).
fn person_in(tokens: &sled::Tree, actor: &Actor) -> Result<String> {
    let mut cur = actor.as_str().to_string();
    for _ in 0..16 {
        let Some(rest) = cur.strip_prefix("token:") else {
            return Ok(cur);
        };
        let id = rest.split('(').next().unwrap_or(rest);
        match tokens.get(id.as_bytes())? {
            Some(v) => cur = parse::<crate::tokens::TokenRecord>(&v)?.created_by,
            // A token that is gone stands for itself.
            None => return Ok(cur),
        }
    }
    Ok(cur)
}
