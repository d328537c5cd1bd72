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
            Error::Database(_) => "database",
            Error::Io { .. } => "io",
        }
    }

    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        Error::Database(e.to_string())
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
