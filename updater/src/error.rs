//! The one error type of `airlock-updater`. Bundle refusals keep the signing crate's exact kind;
//! appliance-side refusals (anti-rollback, disk space, illegal transitions) have their own.
//!
//! Invariant: no variant carries secret material.

use airlock_signing::Error as BundleError;

use crate::registry::VersionState;

/// Errors of the appliance side.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bundle broke a rule of the format or of the trust root.
    #[error("bundle refused: {0}")]
    Bundle(#[from] BundleError),
    /// The version is not newer than the highest version of this model approved here.
    #[error("anti-rollback: {model} {version} is not newer than {highest}, the highest version of {model} approved on this appliance")]
    AntiRollback {
        /// The model.
        model: String,
        /// The refused version.
        version: String,
        /// The highest version approved.
        highest: String,
    },
    /// Not enough free space for the declared payload plus the configured reserve.
    #[error("not enough free disk space in {path}: the bundle declares {needed} bytes (+ {reserve} reserved), {available} available")]
    InsufficientSpace {
        /// The filesystem checked.
        path: String,
        /// Declared payload size.
        needed: u64,
        /// Configured reserve.
        reserve: u64,
        /// Available to this process.
        available: u64,
    },
    /// The model is not known.
    #[error("no model named {0}")]
    UnknownModel(String),
    /// The version is not known.
    #[error("{model} has no version {version}")]
    UnknownVersion {
        /// The model.
        model: String,
        /// The version.
        version: String,
    },
    /// The requested lifecycle step is not legal from the current state.
    #[error("{model} {version} is {state}: cannot {action}")]
    IllegalTransition {
        /// The model.
        model: String,
        /// The version.
        version: String,
        /// Its state.
        state: VersionState,
        /// What was asked.
        action: String,
    },
    /// A model-level step conflicts with the model's situation (e.g. a promotion in progress).
    #[error("{model}: {reason}")]
    Conflict {
        /// The model.
        model: String,
        /// Why.
        reason: String,
    },
    /// The importer of a version tried to approve it.
    #[error("{actor} imported {model} {version} and cannot also approve it")]
    SelfApproval {
        /// Who.
        actor: String,
        /// The model.
        model: String,
        /// The version.
        version: String,
    },
    /// The same person approved twice.
    #[error("{actor} has already approved {model} {version}")]
    DuplicateApproval {
        /// Who.
        actor: String,
        /// The model.
        model: String,
        /// The version.
        version: String,
    },
    /// A rotated trust root was refused by the current root's rules.
    #[error("trust root refused: {0}")]
    TrustRootRefused(BundleError),
    /// No token has this id.
    #[error("no token with id {0}")]
    UnknownToken(String),
    /// An identity string is not acceptable.
    #[error("invalid actor name {0:?}: 1 to 128 printable characters")]
    InvalidActor(String),
    /// The audit chain does not verify.
    #[error("audit chain broken at record {seq}: {reason}")]
    AuditChainBroken {
        /// The first bad record.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
    /// Less than the reserve is free where the state database lives: it is not opened (at
    /// start) or not written (a change), so that a full disk cannot damage it.
    #[error("{}", state_disk_full(path, *available, *needed, *opening))]
    StateDiskFull {
        /// The state directory.
        path: String,
        /// Bytes available.
        available: u64,
        /// Bytes needed.
        needed: u64,
        /// Whether this was the open at start (else a change).
        opening: bool,
    },
    /// sled refused to open the state database.
    #[error("the state database in {path} cannot be opened: {cause}. Do not delete it: it holds the registry, approvals, audit log and tokens; see \"When things go wrong\" in the operator guide")]
    StateUnopenable {
        /// The state directory.
        path: String,
        /// sled's error.
        cause: String,
    },
    /// The state database was closed after a failed write and cannot be reopened yet.
    #[error("the state database is not available: {0}")]
    StateUnavailable(String),
    /// A state change could not be written to disk; it was discarded, not half-kept.
    #[error("the change was not recorded: {0}")]
    NotRecorded(String),
    /// A file of a version in the model store is missing or does not match its manifest.
    #[error("the stored files of {model} {version} are damaged: {file} {reason} (roll back, or import the same bundle again to repair it)")]
    StoreDamaged {
        /// The model.
        model: String,
        /// The version.
        version: String,
        /// The file (its path in the store).
        file: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The trust roots recorded in the state database do not verify from the image's initial
    /// root: the database was edited, or the image's root changed in a way no rotation explains.
    #[error("trust root refused: {0}")]
    TrustChain(String),
    /// The embedded database failed.
    #[error("state database: {0}")]
    Database(String),
    /// A filesystem operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
}

impl Error {
    /// A stable snake_case name for the kind of error (bundle refusals use the signing crate's).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Bundle(b) => b.kind(),
            Error::AntiRollback { .. } => "anti_rollback",
            Error::InsufficientSpace { .. } => "insufficient_space",
            Error::UnknownModel(_) => "unknown_model",
            Error::UnknownVersion { .. } => "unknown_version",
            Error::IllegalTransition { .. } => "illegal_transition",
            Error::Conflict { .. } => "conflict",
            Error::SelfApproval { .. } => "self_approval",
            Error::DuplicateApproval { .. } => "duplicate_approval",
            Error::TrustRootRefused(_) => "trust_root_refused",
            Error::UnknownToken(_) => "unknown_token",
            Error::InvalidActor(_) => "invalid_actor",
            Error::AuditChainBroken { .. } => "audit_chain_broken",
            Error::StateDiskFull { .. } => "insufficient_space",
            Error::StateUnopenable { .. } => "state_unopenable",
            Error::StateUnavailable(_) => "state_unavailable",
            Error::NotRecorded(_) => "not_recorded",
            Error::StoreDamaged { .. } => "store_damaged",
            Error::TrustChain(_) => "trust_chain",
            Error::Database(_) => "database",
            Error::Io { .. } => "io",
        }
    }

    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}

fn state_disk_full(path: &str, available: u64, needed: u64, opening: bool) -> String {
    let mib = |b: u64| match b {
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} bytes"),
    };
    if opening {
        format!("not enough free disk space to open the state database in {path}: {} available, {} needed ([state] reserve_free_space and room for a snapshot). airlockd does not start it below that, so that a full disk cannot damage it; nothing was changed. Free space on that filesystem and start again", mib(available), mib(needed))
    } else {
        format!("not enough free disk space to record this change in the state database in {path}: {} available, {} needed ([state] reserve_free_space); nothing was changed. Free space on that filesystem", mib(available), mib(needed))
    }
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        Error::Database(e.to_string())
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
