//! Why a request was not answered with outputs. Each variant is one kind of failure with a
//! stable name ([`InferError::kind`]); every front end maps the kinds once (the HTTP status; the gRPC
//! code, in the front end being built) and keeps the name in its error body.

/// Why a request was not answered with outputs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InferError {
    /// The request does not fit the model (HTTP 400, gRPC INVALID_ARGUMENT).
    #[error("{0}")]
    BadRequest(String),
    /// The request's tensors are larger than the limits allow (413, RESOURCE_EXHAUSTED).
    #[error("{0}")]
    TooLarge(String),
    /// No such model or version (404, NOT_FOUND).
    #[error("{0}")]
    NotFound(String),
    /// The model cannot serve now (503, UNAVAILABLE).
    #[error("{0}")]
    Unavailable(String),
    /// The queue is full (429 with `Retry-After`, RESOURCE_EXHAUSTED with the hint in metadata).
    #[error("the queue of model {model} is full; retry in about {retry_after}s")]
    QueueFull {
        /// The model.
        model: String,
        /// Seconds.
        retry_after: u64,
    },
    /// The deadline passed before the request was answered (504, DEADLINE_EXCEEDED).
    #[error("the request's deadline passed after {waited_ms} ms in the queue; it was not run")]
    Timeout {
        /// Time spent waiting.
        waited_ms: u64,
    },
    /// The model failed while running (500, INTERNAL).
    #[error("{0}")]
    Internal(String),
}

impl InferError {
    /// The stable name of this kind of failure (kept in every error body).
    pub fn kind(&self) -> &'static str {
        match self {
            InferError::BadRequest(_) => "bad_request",
            InferError::TooLarge(_) => "too_large",
            InferError::NotFound(_) => "not_found",
            InferError::Unavailable(_) => "unavailable",
            InferError::QueueFull { .. } => "queue_full",
            InferError::Timeout { .. } => "deadline_exceeded",
            InferError::Internal(_) => "internal",
        }
    }

    /// The outcome a request that failed this way is counted under.
    pub fn outcome(&self) -> Outcome {
        match self {
            InferError::BadRequest(_) | InferError::TooLarge(_) => Outcome::BadRequest,
            InferError::NotFound(_) => Outcome::NotFound,
            InferError::Unavailable(_) => Outcome::Unavailable,
            InferError::QueueFull { .. } => Outcome::Rejected,
            InferError::Timeout { .. } => Outcome::Timeout,
            InferError::Internal(_) => Outcome::Error,
        }
    }
}

/// How a request ended, as statistics and metrics count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Answered with outputs.
    Success,
    /// Refused: the request did not fit the model or the limits.
    BadRequest,
    /// No such model or version.
    NotFound,
    /// The model could not serve.
    Unavailable,
    /// The queue was full.
    Rejected,
    /// The deadline passed.
    Timeout,
    /// The model failed.
    Error,
    /// The client went away before the answer.
    Cancelled,
}

impl Outcome {
    /// Every outcome.
    pub const ALL: [Outcome; 8] = [
        Outcome::Success,
        Outcome::BadRequest,
        Outcome::NotFound,
        Outcome::Unavailable,
        Outcome::Rejected,
        Outcome::Timeout,
        Outcome::Error,
        Outcome::Cancelled,
    ];

    /// The label value (`success`, `bad_request`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::BadRequest => "bad_request",
            Outcome::NotFound => "not_found",
            Outcome::Unavailable => "unavailable",
            Outcome::Rejected => "rejected",
            Outcome::Timeout => "timeout",
            Outcome::Error => "error",
            Outcome::Cancelled => "cancelled",
        }
    }
}
