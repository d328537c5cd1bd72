//! `airlock-engine`, the inference core: finding and loading ONNX Runtime and building sessions
//! with the configured provider ([`runtime`]), loaded model versions on dedicated threads
//! ([`model`]) serving a bounded queue with dynamic batching ([`batcher`]), tensors
//! ([`tensor`]) with the one datatype table ([`datatype`]), the input-contract checks
//! ([`contract`]), the routing table ([`routing`]), and the protocol-neutral entry point every
//! front end calls ([`infer::Infer`]) with its error kinds ([`error`]).
//!
//! API boundary: no HTTP, gRPC, sled or D-Bus; this crate's `Cargo.toml` has none of them, so
//! the layering holds by construction. The daemon's front ends parse their wire formats into
//! [`tensor::Tensor`]s and map [`InferError`] kinds to their status codes.
//!
//! Invariant: ONNX Runtime is only ever called from the engine's own threads, never from the
//! async runtime; a full queue is refused at once and memory never grows with overload.

pub mod batcher;
pub mod contract;
pub mod datatype;
pub mod error;
pub mod infer;
pub mod model;
pub mod routing;
pub mod runtime;
pub mod tensor;

pub use batcher::{Answer, Stats};
pub use error::{InferError, Outcome};
pub use infer::{Call, Infer};
pub use model::LoadedModel;
pub use routing::{Models, Unavailable};
pub use runtime::{EngineError, Runtime};
pub use tensor::{Data, Tensor};
