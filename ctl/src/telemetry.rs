//! `airlockctl telemetry …` and `airlockctl top`: the local telemetry store's history as tables,
//! and a live view refreshed like `top` / `nvidia-smi`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use airlock_api::{self as api, paths};

use crate::client::{typed, Client, Fail};

/// A value in its unit, for people.
pub fn human(v: f64, unit: &str) -> String {
    match unit {
        "us" => {
            if v.abs() >= 1e6 {
                format!("{:.2} s", v / 1e6)
            } else if v.abs() >= 1e3 {
                format!("{:.2} ms", v / 1e3)
            } else {
                format!("{v:.0} µs")
            }
        }
        "bytes" => {
            let mut x = v;
            for u in ["B", "KiB", "MiB", "GiB", "TiB"] {
                if x.abs() < 1024.0 || u == "TiB" {
                    return if u == "B" {
                        format!("{x:.0} B")
                    } else {
                        format!("{x:.1} {u}")
                    };
                }
                x /= 1024.0;
            }
            unreachable!("TiB returns")
        }
        "percent" => format!("{v:.0} %"),
        "1/100" => format!("{:.2}", v / 100.0),
        "celsius" => format!("{v:.0} °C"),
        "mW" => format!("{:.1} W", v / 1000.0),
        "mJ" => format!("{:.1} J", v / 1000.0),
        "MHz" => format!("{v:.0} MHz"),
        "" => {
            if v.fract() == 0.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.2}")
            }
        }
        u => format!("{v:.2} {u}"),
    }
}

/// A series as `name{k="v",…}`.
pub fn key(s: &api::TelemetrySeries) -> String {
    let mut k = s.name.clone();
    if !s.labels.is_empty() {
        let l: Vec<String> = s.labels.iter().map(|(a, b)| format!("{a}={b:?}")).collect();
        let _ = write!(k, "{{{}}}", l.join(","));
    }
    k
}

/// Unix seconds as RFC 3339 UTC (`2026-12-04T17:00:00Z`).
pub fn utc(t: u64) -> String {
    i64::try_from(t)
        .ok()
        .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

fn seconds(s: u64) -> String {
    match s {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// `telemetry series`.
pub fn print_catalog(c: &api::TelemetryCatalog) {
    let st = &c.store;
    println!(
        "store: {}{} — {} of {} used; {} damaged segment(s), {} write error(s), {} segment(s) deleted for the budget",
        st.state,
        st.reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default(),
        human(st.bytes_used as f64, "bytes"),
        human(st.max_bytes as f64, "bytes"),
        st.damaged_segments,
        st.write_errors,
        st.budget_deletions,
    );
    for (k, t) in st.tiers.iter().enumerate() {
        println!(
            "tier {k}: every {} for {}: {} segment(s), {}, {:.2} B per stored sample{}",
            seconds(t.step),
            seconds(t.keep),
            t.segments,
            human(t.bytes as f64, "bytes"),
            if t.slots > 0 {
                t.bytes as f64 / t.slots as f64
            } else {
                0.0
            },
            t.oldest
                .map(|o| format!(", since {}", utc(o)))
                .unwrap_or_default()
        );
    }
    println!("{:<8} {:<7} SERIES", "KIND", "UNIT");
    for s in &c.series {
        println!("{:<8} {:<7} {}", s.kind, s.unit, key(s));
    }
}

/// `telemetry query`.
pub fn print_answer(a: &api::TelemetryAnswer) {
    println!(
        "{} to {}: tier {}, {} per point",
        utc(a.from),
        utc(a.to),
        a.tier,
        seconds(a.step.max(1))
    );
    if a.series.is_empty() {
        println!("no series matched");
    }
    for s in &a.series {
        let counter = s.series.kind == "counter";
        println!();
        println!(
            "{} ({}{})",
            key(&s.series),
            s.series.kind,
            if s.series.unit.is_empty() {
                String::new()
            } else {
                format!(", {}", s.series.unit)
            }
        );
        if counter {
            println!(
                "{:<21} {:>12} {:>12} {:>14}",
                "TIME", "RATE/s", "PEAK/s", "INCREASE"
            );
        } else {
            println!("{:<21} {:>12} {:>12} {:>12}", "TIME", "MIN", "AVG", "MAX");
        }
        let u = s.series.unit.as_str();
        for p in &s.points {
            if counter {
                println!(
                    "{:<21} {:>12} {:>12} {:>14}",
                    utc(p.t),
                    human(p.avg, u),
                    human(p.max as f64, u),
                    human(p.sum as f64, u)
                );
            } else {
                println!(
                    "{:<21} {:>12} {:>12} {:>12}",
                    utc(p.t),
                    human(p.min as f64, u),
                    human(p.avg, u),
                    human(p.max as f64, u)
                );
            }
        }
    }
}

/// `telemetry traces`: one line per trace; with `spans`, each trace's spans as a waterfall.
pub fn print_traces(l: &api::TraceList, spans: bool) {
    println!(
        "{:<27} {:<32} {:<24} {:<5} {:>5} {:>10}",
        "START", "TRACE", "MODEL", "VIA", "CODE", "DURATION"
    );
    for t in &l.traces {
        let model = match (&t.model, &t.version) {
            (Some(m), Some(v)) => format!("{m} {v}"),
            _ => "-".into(),
        };
        println!(
            "{:<27} {:<32} {:<24} {:<5} {:>5} {:>10}",
            t.start,
            t.trace_id,
            model,
            t.transport,
            t.code,
            human(t.duration_us as f64, "us")
        );
        if spans {
            let total = t.duration_us.max(1) as f64;
            for s in &t.spans {
                let width = 40.0;
                let at = (s.start_us as f64 / total * width) as usize;
                let len = ((s.duration_us as f64 / total * width) as usize).max(1);
                println!(
                    "    {:<8} {:>10} {:>10}  {}{}{}",
                    s.name,
                    human(s.start_us as f64, "us"),
                    human(s.duration_us as f64, "us"),
                    " ".repeat(at.min(40)),
                    "#".repeat(len.min(40 - at.min(39))),
                    s.rows.map(|r| format!(" ({r} rows)")).unwrap_or_default()
                );
            }
        }
    }
    if l.traces.is_empty() {
        println!(
            "no trace matched ({} recorded since airlockd started)",
            l.recorded
        );
    }
}

/// One query's answer.
fn query(c: &Client, series: &str, from: &str, points: u32) -> Result<api::TelemetryAnswer, Fail> {
    typed(&c.get(&paths::telemetry_query(series, from, "now", points))?)
}

/// The mean of a series' values over the window (for a counter: its rate per second), `None`
/// when it has none.
fn window_mean(s: &api::TelemetrySeriesPoints) -> Option<f64> {
    let (sum, count) = s
        .points
        .iter()
        .fold((0i64, 0u32), |(s, c), p| (s + p.sum, c + p.count));
    (count > 0).then(|| sum as f64 / f64::from(count))
}

/// Per label value of `label`: the mean over the window (for a counter: per second) and the
/// newest bucket's mean.
fn by_label(a: &api::TelemetryAnswer, label: &str) -> BTreeMap<String, (f64, f64)> {
    let mut out: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for s in &a.series {
        let Some(v) = s.series.labels.get(label) else {
            continue;
        };
        let mean = window_mean(s).unwrap_or(0.0);
        let last = s.points.last().map_or(0.0, |p| p.avg);
        let e = out.entry(v.clone()).or_default();
        if s.series.kind == "counter" {
            // Rates of several series (outcomes, versions) add up.
            e.0 += mean;
            e.1 += last;
        } else {
            *e = (mean.max(e.0), last.max(e.1));
        }
    }
    out
}

fn frame(c: &Client, window: &str) -> Result<String, Fail> {
    let status: api::Status = typed(&c.get("/api/v1/status")?)?;
    let requests = query(c, "airlock_inference_requests_total", window, 1)?;
    let p99 = by_label(
        &query(c, "airlock_request_duration_seconds_p99", window, 1)?,
        "model",
    );
    let queue = by_label(&query(c, "airlock_queue_depth", window, 1)?, "model");
    let mut rps: BTreeMap<String, f64> = BTreeMap::new();
    let mut errs: BTreeMap<String, f64> = BTreeMap::new();
    for s in &requests.series {
        let (Some(m), Some(o)) = (s.series.labels.get("model"), s.series.labels.get("outcome"))
        else {
            continue;
        };
        let rate = window_mean(s).unwrap_or(0.0);
        *rps.entry(m.clone()).or_default() += rate;
        if o != "success" {
            *errs.entry(m.clone()).or_default() += rate;
        }
    }
    let mut out = String::new();
    let process = |name: &str| -> Result<Option<f64>, Fail> {
        let a = query(c, name, window, 1)?;
        Ok(a.series.first().and_then(window_mean))
    };
    let cpu = process("airlock_process_cpu")?;
    let rss = process("airlock_process_resident_memory")?;
    let host = process("airlock_host_cpu_busy")?;
    let _ = writeln!(
        out,
        "airlockd {} (pid {}) — CPU {} of one core, RSS {}, host CPU {} — averages over {}",
        status.daemon.version,
        status.daemon.pid,
        cpu.map_or("-".into(), |v| format!("{:.1} %", v / 1e4)),
        rss.map_or("-".into(), |v| human(v, "bytes")),
        host.map_or("-".into(), |v| human(v, "percent")),
        window.trim_start_matches('-'),
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<24} {:<12} {:<9} {:>9} {:>11} {:>7} {:>8}",
        "MODEL", "VERSION", "PROVIDER", "REQ/s", "P99", "QUEUE", "ERR/s"
    );
    for m in &status.models {
        let h = &m.head;
        let (version, provider) = match &h.serving {
            Some(s) => (
                s.version.clone(),
                if s.degraded.is_some() {
                    format!("{}!", s.provider)
                } else {
                    s.provider.clone()
                },
            ),
            None => ("-".into(), "-".into()),
        };
        let _ = writeln!(
            out,
            "{:<24} {:<12} {:<9} {:>9.1} {:>11} {:>7.0} {:>8.1}",
            h.name,
            version,
            provider,
            rps.get(&h.name).copied().unwrap_or(0.0),
            p99.get(&h.name).map_or("-".into(), |v| human(v.1, "us")),
            queue.get(&h.name).map_or(0.0, |v| v.1),
            errs.get(&h.name).copied().unwrap_or(0.0),
        );
    }
    let util = by_label(&query(c, "airlock_gpu_utilization", window, 1)?, "gpu");
    let _ = writeln!(out);
    if util.is_empty() {
        let _ = writeln!(out, "no GPU series (no NVML on this appliance, or no GPU)");
    } else {
        let used = by_label(&query(c, "airlock_gpu_memory_used", window, 1)?, "gpu");
        let total = by_label(&query(c, "airlock_gpu_memory_total", window, 1)?, "gpu");
        let temp = by_label(&query(c, "airlock_gpu_temperature", window, 1)?, "gpu");
        let power = by_label(&query(c, "airlock_gpu_power", window, 1)?, "gpu");
        let _ = writeln!(
            out,
            "{:<5} {:>6} {:>23} {:>7} {:>9}",
            "GPU", "UTIL", "MEMORY", "TEMP", "POWER"
        );
        for (gpu, u) in &util {
            let get = |m: &BTreeMap<String, (f64, f64)>| m.get(gpu).map(|v| v.1);
            let _ = writeln!(
                out,
                "{:<5} {:>6} {:>23} {:>7} {:>9}",
                gpu,
                human(u.1, "percent"),
                format!(
                    "{} / {}",
                    get(&used).map_or("-".into(), |v| human(v, "bytes")),
                    get(&total).map_or("-".into(), |v| human(v, "bytes"))
                ),
                get(&temp).map_or("-".into(), |v| human(v, "celsius")),
                get(&power).map_or("-".into(), |v| human(v, "mW")),
            );
        }
    }
    Ok(out)
}

/// `airlockctl top`: refreshes every `interval` until interrupted (or once).
pub fn top(c: &Client, interval: Duration, once: bool) -> Result<(), Fail> {
    let tty = std::io::stdout().is_terminal();
    // The averages cover the refresh interval, at least the last 5 seconds.
    let window = format!("-{}s", interval.as_secs().max(5));
    loop {
        let f = frame(c, &window)?;
        let mut out = std::io::stdout();
        let shown = if tty && !once {
            // Home and clear, then the frame: redrawn in place like top(1).
            write!(out, "\x1b[H\x1b[2J{f}").and_then(|()| out.flush())
        } else {
            write!(out, "{f}").and_then(|()| out.flush())
        };
        if let Err(e) = shown {
            crate::stdout_failed(e);
        }
        if once {
            return Ok(());
        }
        std::thread::sleep(interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_times_read_for_people() {
        assert_eq!(human(1500.0, "us"), "1.50 ms");
        assert_eq!(human(2_500_000.0, "us"), "2.50 s");
        assert_eq!(human(3.0 * 1024.0 * 1024.0, "bytes"), "3.0 MiB");
        assert_eq!(human(250_000.0, "mW"), "250.0 W");
        assert_eq!(human(123.0, "1/100"), "1.23");
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
    }
}
