//! One error kind per failure, whatever the front end: a [`Failure`] has a stable, fine-grained
//! `kind` (`anti_rollback`, `queue_full`, …, kept in every error body) and a [`Class`] that each
//! transport maps exactly once — HTTP status (`http::status`), D-Bus error name
//! (`system::dbus::error_name`); the gRPC front end, being built, gets its code mapping here too.

use airlock_engine::InferError;

use crate::lifecycle::LifecycleError;

/// What kind of refusal or failure, as transports distinguish them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The request is malformed or not what the rules allow.
    BadRequest,
    /// No valid credentials.
    Unauthenticated,
    /// Valid credentials without the role or scope.
    Forbidden,
    /// No such resource.
    NotFound,
    /// The request conflicts with the state (illegal transition, anti-rollback, busy).
    Conflict,
    /// Larger than a limit allows.
    TooLarge,
    /// A request body that did not keep its pace.
    BodyTimeout,
    /// Understood but refused on its content (a bundle or trust root that does not verify).
    Unprocessable,
    /// The queue is full: retry later (with a hint).
    QueueFull,
    /// The deadline passed.
    DeadlineExceeded,
    /// Cannot serve now (unavailable model, state database unavailable).
    Unavailable,
    /// Not enough disk space.
    InsufficientStorage,
    /// An encoding the server does not take.
    UnsupportedMedia,
    /// A failure on the appliance's side.
    Internal,
}

impl Class {
    /// The general kind of a failure of this class (where no finer kind applies).
    pub fn kind(self) -> &'static str {
        match self {
            Class::BadRequest => "bad_request",
            Class::Unauthenticated => "unauthenticated",
            Class::Forbidden => "forbidden",
            Class::NotFound => "not_found",
            Class::Conflict => "conflict",
            Class::TooLarge => "too_large",
            Class::BodyTimeout => "body_timeout",
            Class::Unprocessable => "unprocessable",
            Class::QueueFull => "queue_full",
            Class::DeadlineExceeded => "deadline_exceeded",
            Class::Unavailable => "unavailable",
            Class::InsufficientStorage => "insufficient_storage",
            Class::UnsupportedMedia => "unsupported_media",
            Class::Internal => "internal",
        }
    }
}

/// A refusal or failure, ready for any transport.
#[derive(Debug, Clone)]
pub struct Failure {
    /// How transports tell it apart.
    pub class: Class,
    /// The stable name of the failure, in every body.
    pub kind: &'static str,
    /// What went wrong, for people; never echoes unverified bytes.
    pub message: String,
    /// Seconds after which a retry may succeed (queue full).
    pub retry_after: Option<u64>,
}

impl Failure {
    /// A failure of `class` and `kind`.
    pub fn new(class: Class, kind: &'static str, message: impl Into<String>) -> Failure {
        Failure {
            class,
            kind,
            message: message.into(),
            retry_after: None,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<InferError> for Failure {
    fn from(e: InferError) -> Failure {
        let class = match &e {
            InferError::BadRequest(_) => Class::BadRequest,
            InferError::TooLarge(_) => Class::TooLarge,
            InferError::NotFound(_) => Class::NotFound,
            InferError::Unavailable(_) => Class::Unavailable,
            InferError::QueueFull { .. } => Class::QueueFull,
            InferError::Timeout { .. } => Class::DeadlineExceeded,
            InferError::Internal(_) => Class::Internal,
        };
        let retry_after = match &e {
            InferError::QueueFull { retry_after, .. } => Some(*retry_after),
            _ => None,
        };
        Failure {
            class,
            kind: e.kind(),
            message: e.to_string(),
            retry_after,
        }
    }
}

impl From<LifecycleError> for Failure {
    fn from(e: LifecycleError) -> Failure {
        use airlock_updater::Error as E;
        let (class, kind) = match &e {
            LifecycleError::Updater(u) => (
                match u {
                    E::UnknownModel(_) | E::UnknownVersion { .. } | E::UnknownToken(_) => {
                        Class::NotFound
                    }
                    E::IllegalTransition { .. }
                    | E::Conflict { .. }
                    | E::SelfApproval { .. }
                    | E::DuplicateApproval { .. }
                    | E::AntiRollback { .. } => Class::Conflict,
                    // The bytes never arrived whole: the client's transfer, not the bundle.
                    E::Bundle(b) if b.kind() == "transport" => Class::BadRequest,
                    E::Bundle(_) | E::TrustRootRefused(_) => Class::Unprocessable,
                    E::InsufficientSpace { .. } | E::StateDiskFull { .. } => {
                        Class::InsufficientStorage
                    }
                    E::InvalidActor(_) => Class::BadRequest,
                    E::StateUnavailable(_) | E::NotRecorded(_) => Class::Unavailable,
                    // The version's files on this appliance, not the request: roll back or repair.
                    E::StoreDamaged { .. } => Class::Conflict,
                    E::AuditChainBroken { .. }
                    | E::TrustChain(_)
                    | E::Database(_)
                    | E::StateUnopenable { .. }
                    | E::Io { .. } => Class::Internal,
                },
                u.kind(),
            ),
            LifecycleError::Busy(_) => (Class::Conflict, "busy"),
            LifecycleError::Refused(_) => (Class::Conflict, "refused"),
            LifecycleError::Load(_) => (Class::Unprocessable, "load_failed"),
            LifecycleError::BadInput(_) => (Class::BadRequest, "bad_request"),
            LifecycleError::NotOffered(_) => (Class::Forbidden, "not_offered"),
        };
        Failure::new(class, kind, e.to_string())
    }
}
