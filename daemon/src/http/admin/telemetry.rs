//! `/api/v1/telemetry/…`: the local telemetry store's catalog and its queries (viewer may read).
//!
//! Invariants: a query names its window and gets at most `points` (≤ 2000) buckets per series
//! and at most 64 series, never "all of history"; the store is read on a blocking thread; no
//! caller byte is echoed in an error.

use std::sync::Arc;

use airlock_api as api;
use airlock_telemetry::{Health, Kind, Selector, SeriesDef, MAX_POINTS};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{AdminState, Who};
use crate::error::Class;
use crate::http::error;
use crate::telemetry::Unavailable;

/// Buckets when a query does not say.
const DEFAULT_POINTS: u32 = 300;

type Params = Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>;

/// The query's parameters, each at most once and each one known.
fn params<'a>(
    q: &'a Params,
    known: &[&'static str],
) -> Result<std::collections::BTreeMap<&'static str, &'a str>, Response> {
    let Ok(Query(pairs)) = q else {
        return Err(error(
            Class::BadRequest,
            "the query string is not valid (percent-encoded key=value pairs)",
        ));
    };
    let mut out = std::collections::BTreeMap::new();
    for (k, v) in pairs {
        let Some(name) = known.iter().find(|n| **n == k.as_str()) else {
            return Err(error(
                Class::BadRequest,
                format!("unknown query parameter (expected {})", known.join(", ")),
            ));
        };
        if out.insert(*name, v.as_str()).is_some() {
            return Err(error(Class::BadRequest, format!("{name} is given twice")));
        }
    }
    Ok(out)
}

/// A time as a query gives it: Unix seconds, RFC 3339, `now`, or relative to now (`-1h`,
/// `-30m`, `-7d`, `-90s`, `-2w`, `-1y`).
fn parse_time(what: &str, v: &str, now: u64) -> Result<u64, Response> {
    let bad = || {
        error(
            Class::BadRequest,
            format!(
                "{what} is not a time (Unix seconds, RFC 3339, now, or relative like -1h, -7d)"
            ),
        )
    };
    if v == "now" {
        return Ok(now);
    }
    if let Some(rel) = v.strip_prefix('-') {
        let split = rel.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (n, unit) = rel.split_at(split);
        let n: u64 = n.parse().map_err(|_| bad())?;
        let secs = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 7 * 86_400,
            "y" => 365 * 86_400,
            _ => return Err(bad()),
        };
        return Ok(now.saturating_sub(n.saturating_mul(secs)));
    }
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return v.parse().map_err(|_| bad());
    }
    let t = time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
        .map_err(|_| bad())?;
    u64::try_from(t.unix_timestamp()).map_err(|_| bad())
}

fn unavailable(e: Unavailable) -> Response {
    let class = match e {
        Unavailable::Off => Class::NotFound,
        Unavailable::Opening | Unavailable::Failed(_) => Class::Unavailable,
    };
    error(class, e.to_string())
}

fn kind(k: Kind) -> String {
    match k {
        Kind::Gauge => "gauge".into(),
        Kind::Counter => "counter".into(),
    }
}

fn series(d: &SeriesDef) -> api::TelemetrySeries {
    api::TelemetrySeries {
        name: d.name.clone(),
        labels: d.labels.clone(),
        kind: kind(d.kind),
        unit: d.unit.clone(),
    }
}

/// The store's state for the API.
pub fn store_state(h: &Health, last: Option<u64>) -> api::TelemetryStore {
    api::TelemetryStore {
        state: if h.paused.is_some() {
            "paused"
        } else {
            "recording"
        }
        .into(),
        reason: h.paused.clone(),
        bytes_used: h.bytes_used,
        max_bytes: h.max_bytes,
        damaged_segments: h.damaged_segments,
        damaged_chunks: h.damaged_chunks,
        dropped_samples: h.dropped_samples,
        clock_skips: h.clock_skips,
        write_errors: h.write_errors,
        budget_deletions: h.budget_deletions,
        last_sample: last,
        tiers: h
            .tiers
            .iter()
            .map(|t| api::TelemetryTier {
                step: t.step,
                keep: t.keep,
                segments: t.segments,
                bytes: t.bytes,
                slots: t.slots,
                oldest: t.oldest,
            })
            .collect(),
    }
}

async fn on_store<T: Send + 'static>(
    s: &Arc<AdminState>,
    f: impl FnOnce(&mut airlock_telemetry::Store) -> Result<T, Response> + Send + 'static,
) -> Result<T, Response> {
    let t = s.telemetry.clone();
    match tokio::task::spawn_blocking(move || t.with_store(f)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(unavailable(e)),
        Err(e) => Err(error(Class::Internal, format!("the query panicked: {e}"))),
    }
}

fn selector(v: &str) -> Result<Selector, Response> {
    Selector::parse(v).map_err(|e| error(Class::BadRequest, e.to_string()))
}

/// `GET /telemetry/series[?match=SELECTOR]`: the catalog and the store's state.
pub async fn series_list(State(s): State<Arc<AdminState>>, _: Who, q: Params) -> Response {
    let p = match params(&q, &["match"]) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let sel = match p.get("match").map(|v| selector(v)).transpose() {
        Ok(s) => s,
        Err(r) => return r,
    };
    let r = on_store(&s, move |store| {
        let mut list: Vec<api::TelemetrySeries> = store
            .series()
            .iter()
            .filter(|(_, d)| sel.as_ref().is_none_or(|s| s.matches(d)))
            .map(|(_, d)| series(d))
            .collect();
        list.sort_by(|a, b| (&a.name, &a.labels).cmp(&(&b.name, &b.labels)));
        Ok(api::TelemetryCatalog {
            store: store_state(&store.health(), store.last_time()),
            series: list,
        })
    })
    .await;
    match r {
        Ok(c) => Json(c).into_response(),
        Err(r) => r,
    }
}

/// `GET /telemetry/query?series=SELECTOR&from=T&to=T&points=N` (from defaults to an hour
/// before `to`, `to` to now, points to 300).
pub async fn query(State(s): State<Arc<AdminState>>, _: Who, q: Params) -> Response {
    let p = match params(&q, &["series", "from", "to", "points"]) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let Some(sel) = p.get("series") else {
        return error(
            Class::BadRequest,
            "series is required (a metric name, a prefix ending in *, with optional {label=\"value\"})",
        );
    };
    let sel = match selector(sel) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let points = match p.get("points").map(|v| v.parse::<u32>()) {
        None => DEFAULT_POINTS,
        Some(Ok(n)) if (1..=MAX_POINTS).contains(&n) => n,
        Some(_) => {
            return error(
                Class::BadRequest,
                format!("points must be a number from 1 to {MAX_POINTS}"),
            )
        }
    };
    let (from, to) = (
        p.get("from").map(|v| v.to_string()),
        p.get("to").map(|v| v.to_string()),
    );
    let r = on_store(&s, move |store| {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // The store's clock: the wall clock, or a newer sample's (a warped test clock).
        let now = store.last_time().map_or(wall, |t| t.max(wall)) + 1;
        let to = match &to {
            Some(v) => parse_time("to", v, now)?,
            None => now,
        };
        let from = match &from {
            Some(v) => parse_time("from", v, now)?,
            None => to.saturating_sub(3600),
        };
        let results = store
            .query(&sel, from, to, points)
            .map_err(|e| error(Class::BadRequest, e.to_string()))?;
        let (tier, step) = results.first().map_or((0, 0), |r| (r.tier, r.step));
        Ok(api::TelemetryAnswer {
            from,
            to,
            tier,
            step,
            series: results
                .into_iter()
                .map(|r| api::TelemetrySeriesPoints {
                    series: series(&r.series),
                    points: r
                        .points
                        .iter()
                        .map(|p| api::TelemetryPoint {
                            t: p.t,
                            min: p.min,
                            max: p.max,
                            avg: if p.count > 0 {
                                p.sum as f64 / f64::from(p.count)
                            } else {
                                0.0
                            },
                            sum: p.sum,
                            count: p.count,
                        })
                        .collect(),
                })
                .collect(),
        })
    })
    .await;
    match r {
        Ok(a) => Json(a).into_response(),
        Err(r) => r,
    }
}

/// Traces when a query does not say, and at most.
const DEFAULT_TRACES: usize = 100;
const MAX_TRACES: usize = 1000;

/// `GET /telemetry/traces?trace_id=…&model=…&from=…&to=…&status=ok|error&min_duration_ms=…&limit=N`:
/// the newest matching traces (at most 1000).
pub async fn traces(State(s): State<Arc<AdminState>>, _: Who, q: Params) -> Response {
    let p = match params(
        &q,
        &[
            "trace_id",
            "model",
            "from",
            "to",
            "status",
            "min_duration_ms",
            "limit",
        ],
    ) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut f = crate::traces::Filter::default();
    if let Some(t) = p.get("trace_id") {
        match (t.len() == 32)
            .then(|| u128::from_str_radix(t, 16).ok())
            .flatten()
        {
            Some(id) => f.trace = Some(id),
            None => return error(Class::BadRequest, "trace_id must be 32 hex digits"),
        }
    }
    if let Some(m) = p.get("model") {
        f.model = Some((*m).to_string());
    }
    for (k, slot) in [("from", &mut f.from_us), ("to", &mut f.to_us)] {
        if let Some(v) = p.get(k) {
            match parse_time(k, v, now) {
                Ok(t) => *slot = Some(t.saturating_mul(1_000_000)),
                Err(r) => return r,
            }
        }
    }
    match p.get("status").copied() {
        None => {}
        Some("ok") => f.failed = Some(false),
        Some("error") => f.failed = Some(true),
        Some(_) => return error(Class::BadRequest, "status must be ok or error"),
    }
    if let Some(v) = p.get("min_duration_ms") {
        match v.parse::<u64>() {
            Ok(ms) => f.min_duration_us = Some(ms.saturating_mul(1000)),
            Err(_) => return error(Class::BadRequest, "min_duration_ms must be a number"),
        }
    }
    let limit = match p.get("limit").map(|v| v.parse::<usize>()) {
        None => DEFAULT_TRACES,
        Some(Ok(n)) if (1..=MAX_TRACES).contains(&n) => n,
        Some(_) => {
            return error(
                Class::BadRequest,
                format!("limit must be a number from 1 to {MAX_TRACES}"),
            )
        }
    };
    let found = s.traces.query(&f, limit);
    Json(api::TraceList {
        recorded: s.traces.recorded(),
        traces: found.iter().map(|t| trace_record(t)).collect(),
    })
    .into_response()
}

/// A trace as the API shows it.
pub fn trace_record(t: &crate::traces::Trace) -> api::TraceRecord {
    let start = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.start_unix_us) * 1000)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    api::TraceRecord {
        trace_id: t.ctx.trace_hex(),
        span_id: format!("{:016x}", t.ctx.span),
        parent_span_id: t.ctx.parent.map(|p| format!("{p:016x}")),
        request_id: t.request_id.clone(),
        transport: t.transport.into(),
        operation: t.operation.into(),
        model: t.model.as_ref().map(|m| m.0.clone()),
        version: t.model.as_ref().map(|m| m.1.clone()),
        start,
        start_unix_us: t.start_unix_us,
        duration_us: t.duration_us,
        status: if t.failed { "error" } else { "ok" }.into(),
        code: t.code,
        spans: t
            .spans
            .iter()
            .map(|s| api::TraceSpan {
                name: s.name.into(),
                start_us: s.start_us,
                duration_us: s.duration_us,
                rows: s.rows,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_unix_rfc3339_now_and_relative_and_errors_echo_nothing() {
        let now = 1_800_000_000;
        assert_eq!(parse_time("from", "now", now).ok(), Some(now));
        assert_eq!(parse_time("from", "-1h", now).ok(), Some(now - 3600));
        assert_eq!(parse_time("from", "-7d", now).ok(), Some(now - 7 * 86_400));
        assert_eq!(
            parse_time("from", "1700000000", now).ok(),
            Some(1_700_000_000)
        );
        assert_eq!(
            parse_time("from", "2023-11-14T22:13:20Z", now).ok(),
            Some(1_700_000_000)
        );
        for bad in [
            "-1",
            "-h",
            "-1x",
            "yesterday<script>",
            "",
            "-99999999999999999999y",
        ] {
            assert!(parse_time("from", bad, now).is_err(), "{bad:?}");
        }
    }
}
