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

/// A request's id: unique per request and unpredictable (a counter under a keyed hash whose
/// key is drawn at start, so the id tells a client neither the daemon's PID nor how many
/// requests it served). Shown as 16 hex digits; made and passed around without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestId(u64);

impl RequestId {
    /// A fresh id.
    pub fn new() -> RequestId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        static KEY: std::sync::OnceLock<std::hash::RandomState> = std::sync::OnceLock::new();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        RequestId(KEY.get_or_init(std::hash::RandomState::new).hash_one(n))
    }

    /// The id as an `x-request-id` header value.
    pub fn header(self) -> axum::http::HeaderValue {
        let mut hex = [0u8; 16];
        for (i, b) in hex.iter_mut().enumerate() {
            *b = b"0123456789abcdef"[(self.0 >> (60 - 4 * i)) as usize & 15];
        }
        axum::http::HeaderValue::from_bytes(&hex).unwrap_or_else(|_| unreachable!("hex digits"))
    }
}

impl Default for RequestId {
    fn default() -> Self {
        RequestId::new()
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A request's span, opened at once or only for its closing line. The fmt layers format a
/// span's fields when it opens, whether or not a line is ever written (about a tenth of an
/// inference request's instructions); a front end whose handlers write no line of their own
/// while they run defers the span (unless debug lines are on: the caller checks, under its own
/// target) and makes it only if the closing line is written.
pub struct RequestSpan<F: Fn() -> tracing::Span> {
    span: tracing::Span,
    make: F,
}

impl<F: Fn() -> tracing::Span> RequestSpan<F> {
    /// Opens the span now, or defers it.
    pub fn new(defer: bool, make: F) -> Self {
        let span = if defer { tracing::Span::none() } else { make() };
        RequestSpan { span, make }
    }

    /// What the request runs in (the disabled span while deferred).
    pub fn running(&self) -> tracing::Span {
        self.span.clone()
    }

    /// The span for the closing line: made now if it was deferred and the line is `written`.
    pub fn closing(self, written: bool) -> tracing::Span {
        if self.span.is_none() && written {
            (self.make)()
        } else {
            self.span
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_id_is_16_hex_digits_the_same_in_logs_and_headers_and_never_repeats() {
        let a = RequestId::new();
        let b = RequestId::new();
        assert_ne!(a, b);
        let shown = a.to_string();
        assert_eq!(shown.len(), 16);
        assert!(shown
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_eq!(a.header().to_str().expect("ascii"), shown);
        assert_eq!(
            RequestId(0xab).header().to_str().expect("ascii"),
            "00000000000000ab"
        );
    }

    #[test]
    fn a_traceparent_gives_its_trace_id_only_when_valid() {
        let t = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(trace_id(&format!("00-{t}-00f067aa0ba902b7-01")), Some(t));
        assert_eq!(
            trace_id(&format!("00-{}-00f067aa0ba902b7-01", "0".repeat(32))),
            None
        );
        assert_eq!(trace_id(&format!("ff-{t}-00f067aa0ba902b7-01")), None);
        assert_eq!(
            trace_id(&format!("00-{}-00f067aa0ba902b7-01", t.to_uppercase())),
            None
        );
        assert_eq!(trace_id(&format!("00-{t}-00f067aa0ba902b7-01-x")), None);
    }
}
