//! Request identity shared by every front end: W3C `traceparent` parsing (HTTP headers, gRPC
//! metadata) and request ids that tell a client nothing about the daemon.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

/// The trace id of a W3C `traceparent` header (`00-<32 hex>-<16 hex>-<2 hex>`), if valid.
pub fn trace_id(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    };
    (hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && trace != "0".repeat(32)
        && hex(span, 16)
        && hex(flags, 2)
        && parts.next().is_none())
    .then_some(trace)
}

/// A fresh request id: unique per request and unpredictable (a counter under a keyed hash
/// whose key is drawn at start, so the id tells a client neither the daemon's PID nor how many
/// requests it served).
pub fn request_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    static KEY: std::sync::OnceLock<std::hash::RandomState> = std::sync::OnceLock::new();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!(
        "{:016x}",
        KEY.get_or_init(std::hash::RandomState::new).hash_one(n)
    )
}
