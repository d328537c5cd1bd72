//! Request traces: the W3C trace context of each inference request (the client's `traceparent`,
//! or one made here), its spans (request → decode → queue → batch → execute → respond), and a
//! bounded store of the last `[telemetry] max_traces` traces plus as many failed or slower than
//! `[telemetry] slow_trace` ones (kept apart, so that a flood of fast successes never pushes the
//! interesting ones out). Queried by `/api/v1/telemetry/traces`.
//!
//! Invariants: a trace holds ids, the model and version that answered (never a name a client
//! typed that matched nothing), timings and a status — no request content, header or token;
//! the store's memory is bounded by its two capacities; recording is one short lock per request.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A trace's context as it travels: trace id, this hop's span id, the caller's span id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    /// 128-bit trace id (never 0).
    pub trace: u128,
    /// The span this daemon opens for the request.
    pub span: u64,
    /// The client's span (from its `traceparent`), if it sent one.
    pub parent: Option<u64>,
    /// Trace flags (the client's; 01 "sampled" when made here).
    pub flags: u8,
}

fn random_u64(salt: u64) -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    static KEY: std::sync::OnceLock<std::hash::RandomState> = std::sync::OnceLock::new();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    KEY.get_or_init(std::hash::RandomState::new)
        .hash_one((n, salt))
}

impl Context {
    /// The client's trace continued (from a valid `traceparent`), or a new one.
    pub fn from_header(traceparent: Option<&str>) -> Context {
        let span = random_u64(1) | 1;
        if let Some((trace, parent, flags)) = traceparent.and_then(parse) {
            return Context {
                trace,
                span,
                parent: Some(parent),
                flags,
            };
        }
        let trace = (u128::from(random_u64(2)) << 64 | u128::from(random_u64(3))).max(1);
        Context {
            trace,
            span,
            parent: None,
            flags: 1,
        }
    }

    /// The trace id as 32 hex digits.
    pub fn trace_hex(&self) -> String {
        self.trace_id().to_string()
    }

    /// The trace id, shown as 32 hex digits without allocating (for a span's field).
    pub fn trace_id(&self) -> TraceId {
        TraceId(self.trace)
    }

    /// The context of a request (from its `traceparent` HTTP header or gRPC metadata), and the
    /// cell its handler fills, put into the request's extensions.
    pub fn begin<B>(req: &mut axum::http::Request<B>) -> (Context, Arc<Cell>) {
        let ctx = Context::from_header(
            req.headers()
                .get("traceparent")
                .and_then(|v| v.to_str().ok()),
        );
        let cell = Arc::new(Cell::default());
        req.extensions_mut().insert(cell.clone());
        (ctx, cell)
    }

    /// The `traceparent` to answer with (this daemon's span as the parent of what follows).
    pub fn header(&self) -> axum::http::HeaderValue {
        let s = format!(
            "00-{:032x}-{:016x}-{:02x}",
            self.trace, self.span, self.flags
        );
        axum::http::HeaderValue::from_str(&s).unwrap_or_else(|_| unreachable!("hex digits"))
    }
}

/// A trace id, shown as 32 hex digits.
#[derive(Debug, Clone, Copy)]
pub struct TraceId(pub u128);

impl std::fmt::Display for TraceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// A W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`): (trace id, parent span id, flags),
/// if valid (lower-case hex, neither id zero, version not ff; a future version's extra fields
/// are refused rather than guessed at).
pub fn parse(traceparent: &str) -> Option<(u128, u64, u8)> {
    let trace = crate::trace::trace_id(traceparent)?;
    let mut parts = traceparent.split('-').skip(2);
    let span = u64::from_str_radix(parts.next()?, 16).ok()?;
    let flags = u8::from_str_radix(parts.next()?, 16).ok()?;
    if span == 0 {
        return None;
    }
    Some((u128::from_str_radix(trace, 16).ok()?, span, flags))
}

/// One span of a trace.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Span {
    /// `request`, `decode`, `queue`, `batch`, `execute`, `respond`, or a lifecycle step.
    pub name: &'static str,
    /// Start, in µs after the trace's start.
    pub start_us: u64,
    /// Length in µs.
    pub duration_us: u64,
    /// Rows of the batch (for `batch`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
}

/// What an inference handler learnt while it ran, for its trace.
#[derive(Debug, Default)]
pub struct Detail {
    /// The model and version that answered.
    pub model: Option<(String, String)>,
    /// When the request was decoded (queued from here).
    pub decoded: Option<Instant>,
    /// When the answer came back from the engine.
    pub answered: Option<Instant>,
    /// The engine's queue and compute times, and the batch's rows.
    pub engine: Option<(Duration, Duration, u64)>,
}

/// A request's trace cell: the front end puts it into the request, the handler fills it.
#[derive(Debug, Default)]
pub struct Cell(Mutex<Option<Detail>>);

impl Cell {
    /// Fills the detail (marks the request as an inference request: it will be recorded).
    pub fn with(&self, f: impl FnOnce(&mut Detail)) {
        let mut d = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(d.get_or_insert_with(Detail::default));
    }

    fn take(&self) -> Option<Detail> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Where a request came from, for its trace.
#[derive(Debug)]
pub struct Origin {
    /// Its request id.
    pub request_id: String,
    /// `http` or `grpc`.
    pub transport: &'static str,
    /// The operation.
    pub operation: &'static str,
}

/// A finished request's trace.
#[derive(Debug, Clone)]
pub struct Trace {
    /// Its context.
    pub ctx: Context,
    /// The request id (as in `x-request-id` and the log).
    pub request_id: String,
    /// `http` or `grpc`.
    pub transport: &'static str,
    /// The operation (`infer`, `ModelInfer`, …).
    pub operation: &'static str,
    /// The model and version that answered, if one did.
    pub model: Option<(String, String)>,
    /// Start (Unix µs).
    pub start_unix_us: u64,
    /// Length (µs).
    pub duration_us: u64,
    /// The HTTP status or gRPC code.
    pub code: u32,
    /// Whether it failed (a 4xx/5xx, a gRPC code other than OK).
    pub failed: bool,
    /// Spans, the root first.
    pub spans: Vec<Span>,
}

impl Trace {
    /// Builds the trace of a request that began at `start` (its spans from the handler's
    /// detail). `None` when no handler marked it as an inference request.
    pub fn finish(
        ctx: Context,
        origin: Origin,
        start: Instant,
        cell: &Cell,
        code: u32,
        failed: bool,
    ) -> Option<Trace> {
        let d = cell.take()?;
        let end = Instant::now();
        let us = |a: Instant, b: Instant| b.saturating_duration_since(a).as_micros() as u64;
        let total = us(start, end);
        let mut spans = vec![Span {
            name: "request",
            start_us: 0,
            duration_us: total,
            rows: None,
        }];
        if let Some(dec) = d.decoded {
            spans.push(Span {
                name: "decode",
                start_us: 0,
                duration_us: us(start, dec),
                rows: None,
            });
            if let Some((queue, compute, rows)) = d.engine {
                let q0 = us(start, dec);
                let q = queue.as_micros() as u64;
                let answered = d.answered.map_or(total, |a| us(start, a));
                spans.push(Span {
                    name: "queue",
                    start_us: q0,
                    duration_us: q,
                    rows: None,
                });
                spans.push(Span {
                    name: "batch",
                    start_us: q0 + q,
                    duration_us: answered.saturating_sub(q0 + q),
                    rows: Some(rows),
                });
                spans.push(Span {
                    name: "execute",
                    start_us: q0 + q,
                    duration_us: compute.as_micros() as u64,
                    rows: None,
                });
                spans.push(Span {
                    name: "respond",
                    start_us: answered,
                    duration_us: total.saturating_sub(answered),
                    rows: None,
                });
            }
        }
        let start_unix_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |t| t.as_micros() as u64)
            .saturating_sub(total);
        Some(Trace {
            ctx,
            request_id: origin.request_id,
            transport: origin.transport,
            operation: origin.operation,
            model: d.model,
            start_unix_us,
            duration_us: total,
            code,
            failed,
            spans,
        })
    }
}

/// What a query asks for.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    /// One trace id.
    pub trace: Option<u128>,
    /// One model.
    pub model: Option<String>,
    /// Started at or after (Unix µs).
    pub from_us: Option<u64>,
    /// Started before (Unix µs).
    pub to_us: Option<u64>,
    /// Only failed (`Some(true)`) or only successful (`Some(false)`) ones.
    pub failed: Option<bool>,
    /// Only those at least this long (µs).
    pub min_duration_us: Option<u64>,
}

impl Filter {
    fn matches(&self, t: &Trace) -> bool {
        self.trace.is_none_or(|id| t.ctx.trace == id)
            && self
                .model
                .as_ref()
                .is_none_or(|m| t.model.as_ref().is_some_and(|(n, _)| n == m))
            && self.from_us.is_none_or(|f| t.start_unix_us >= f)
            && self.to_us.is_none_or(|e| t.start_unix_us < e)
            && self.failed.is_none_or(|f| t.failed == f)
            && self.min_duration_us.is_none_or(|d| t.duration_us >= d)
    }
}

struct Lists {
    recent: VecDeque<Arc<Trace>>,
    kept: VecDeque<Arc<Trace>>,
}

/// The bounded trace store.
pub struct Traces {
    lists: Mutex<Lists>,
    max: usize,
    slow_us: u64,
    recorded: AtomicU64,
}

impl Traces {
    /// A store of at most `max` recent traces and `max` failed or slow ones.
    pub fn new(max: u32, slow: Duration) -> Arc<Traces> {
        let max = max as usize;
        Arc::new(Traces {
            lists: Mutex::new(Lists {
                recent: VecDeque::with_capacity(max.min(1024)),
                kept: VecDeque::new(),
            }),
            max,
            slow_us: slow.as_micros() as u64,
            recorded: AtomicU64::new(0),
        })
    }

    /// Keeps a finished trace (the oldest of its list goes when the list is full).
    pub fn record(&self, t: Trace) {
        if self.max == 0 {
            return;
        }
        self.recorded.fetch_add(1, Ordering::Relaxed);
        let keep = t.failed || t.duration_us >= self.slow_us;
        let t = Arc::new(t);
        let mut l = self.lists.lock().unwrap_or_else(|p| p.into_inner());
        let list = if keep { &mut l.kept } else { &mut l.recent };
        if list.len() >= self.max {
            list.pop_front();
        }
        list.push_back(t);
    }

    /// Traces recorded since start.
    pub fn recorded(&self) -> u64 {
        self.recorded.load(Ordering::Relaxed)
    }

    /// The newest `limit` traces matching `f`, newest first.
    pub fn query(&self, f: &Filter, limit: usize) -> Vec<Arc<Trace>> {
        let l = self.lists.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<Arc<Trace>> = l
            .recent
            .iter()
            .chain(l.kept.iter())
            .filter(|t| f.matches(t))
            .cloned()
            .collect();
        drop(l);
        out.sort_by_key(|t| std::cmp::Reverse(t.start_unix_us));
        out.truncate(limit);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace(failed: bool, duration_us: u64, start: u64) -> Trace {
        Trace {
            ctx: Context::from_header(None),
            request_id: "r".into(),
            transport: "http",
            operation: "infer",
            model: Some(("m".into(), "1.0.0".into())),
            start_unix_us: start,
            duration_us,
            code: if failed { 500 } else { 200 },
            failed,
            spans: Vec::new(),
        }
    }

    #[test]
    fn a_client_trace_is_continued_and_an_absent_or_bad_one_is_made_new() {
        let t = "4bf92f3577b34da6a3ce929d0e0e4736";
        let c = Context::from_header(Some(&format!("00-{t}-00f067aa0ba902b7-01")));
        assert_eq!(c.trace_hex(), t);
        assert_eq!(c.parent, Some(0x00f0_67aa_0ba9_02b7));
        assert_ne!(c.span, 0x00f0_67aa_0ba9_02b7, "a span of its own");
        let h = c.header();
        let h = h.to_str().expect("ascii");
        assert!(
            h.starts_with(&format!("00-{t}-")) && h.ends_with("-01"),
            "{h}"
        );
        for bad in [
            None,
            Some("garbage"),
            Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"),
        ] {
            let n = Context::from_header(bad);
            assert_eq!(n.parent, None, "{bad:?}");
            assert_ne!(n.trace, 0);
            assert_ne!(n.trace_hex(), t);
            assert!(parse(n.header().to_str().expect("ascii")).is_some());
        }
    }

    #[test]
    fn fast_successes_never_push_out_the_failed_and_slow_ones_and_both_stay_bounded() {
        let s = Traces::new(10, Duration::from_millis(1));
        s.record(trace(true, 10, 1));
        s.record(trace(false, 5_000, 2));
        for i in 0..1000 {
            s.record(trace(false, 10, 100 + i));
        }
        let all = s.query(&Filter::default(), 1000);
        assert_eq!(all.len(), 20 - 8, "10 recent + the 2 kept");
        assert_eq!(all[0].start_unix_us, 1099, "newest first");
        let failed = s.query(
            &Filter {
                failed: Some(true),
                ..Filter::default()
            },
            10,
        );
        assert_eq!(failed.len(), 1);
        let slow = s.query(
            &Filter {
                min_duration_us: Some(1000),
                ..Filter::default()
            },
            10,
        );
        assert_eq!(slow.len(), 1);
        for i in 0..100 {
            s.record(trace(true, 10, 5000 + i));
        }
        assert_eq!(
            s.query(
                &Filter {
                    failed: Some(true),
                    ..Filter::default()
                },
                1000
            )
            .len(),
            10
        );
        let one = all[3].ctx.trace;
        let by_id = s.query(
            &Filter {
                trace: Some(one),
                ..Filter::default()
            },
            10,
        );
        assert_eq!(by_id.len(), 1);
        assert_eq!(by_id[0].ctx.trace, one);
    }
}
