//! The daemon's side of the local telemetry store (`airlock-telemetry`): the sampler thread
//! that records, once a second, every series `/metrics` renders (read back from the same
//! OpenMetrics text, so that there is no second list of them) plus the process's and the
//! host's, and the handle through which the admin API queries the store.
//!
//! Counters are recorded as their increase per second (the store keeps increases exactly across
//! tiers); histograms as their `_count` and `_sum` increases and their p50 and p99 over the last
//! second (from the bucket increases, as `histogram_quantile` computes them); `_seconds` values
//! in microseconds, everything else as the integer it is.
//!
//! Invariants: nothing here runs on the inference path or on the runtime's threads; a store that
//! cannot write pauses history (one warning, `airlock_telemetry_paused 1`), never the daemon; the
//! store's lock is held for one record or one query, never across a render or a file walk.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use airlock_engine::Models;
use airlock_telemetry::openmetrics::{self, Family};
use airlock_telemetry::{Kind, SeriesDef, Store};

use crate::metrics::{Metrics, StoreGauges};

/// Where the store is.
enum Slot {
    /// `[telemetry] enabled = false`.
    Off,
    /// Being opened (reading the segments) on the sampler thread.
    Opening,
    /// Could not be opened (the reason); retried every minute.
    Failed(String),
    /// Open.
    Open(Box<Store>),
}

/// The store as the admin API sees it.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    /// Turned off in the configuration.
    #[error("telemetry is turned off ([telemetry] enabled = false)")]
    Off,
    /// Opening.
    #[error("the telemetry store is being opened; try again in a few seconds")]
    Opening,
    /// Could not be opened.
    #[error("the telemetry store could not be opened: {0}")]
    Failed(String),
}

/// The telemetry store and its sampler.
pub struct Telemetry {
    slot: Mutex<Slot>,
    stopping: Mutex<bool>,
    wake: Condvar,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// A debug-build hook for tests of long spans (`AIRLOCK_TELEMETRY_WARP=N`): the sampler's clock
/// runs N times as fast from the moment it starts (or from the store's newest sample, if that
/// is later), so that pages close within seconds. Release builds ignore it.
fn warp() -> u64 {
    if !cfg!(debug_assertions) {
        return 1;
    }
    std::env::var("AIRLOCK_TELEMETRY_WARP")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|n| (1..=100_000).contains(n))
        .unwrap_or(1)
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

impl Telemetry {
    /// Starts the sampler (which opens the store first), or a handle that answers "off".
    pub fn start(
        config: &airlock_config::Config,
        metrics: Arc<Metrics>,
        models: Arc<Models>,
    ) -> Arc<Telemetry> {
        let t = Telemetry::off();
        if !config.telemetry.enabled {
            tracing::info!("telemetry history is off ([telemetry] enabled = false)");
            return t;
        }
        *t.slot() = Slot::Opening;
        let opts =
            airlock_telemetry::Options::from_config(&config.telemetry, &config.paths.data_dir);
        let data_dir = config.paths.data_dir.clone();
        let me = t.clone();
        let spawned = std::thread::Builder::new()
            .name("airlock-telemetry".into())
            .spawn(move || me.run(opts, data_dir, metrics, models));
        match spawned {
            Ok(h) => *t.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(h),
            Err(e) => {
                tracing::warn!(error = %e, "telemetry: cannot start the sampler thread; no history is recorded");
                *t.slot() = Slot::Failed(format!("no sampler thread: {e}"));
            }
        }
        t
    }

    /// A handle that answers "off" (for `--once`).
    pub fn off() -> Arc<Telemetry> {
        Arc::new(Telemetry {
            slot: Mutex::new(Slot::Off),
            stopping: Mutex::new(false),
            wake: Condvar::new(),
            thread: Mutex::new(None),
        })
    }

    fn slot(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the open store.
    pub fn with_store<T>(&self, f: impl FnOnce(&mut Store) -> T) -> Result<T, Unavailable> {
        match &mut *self.slot() {
            Slot::Off => Err(Unavailable::Off),
            Slot::Opening => Err(Unavailable::Opening),
            Slot::Failed(why) => Err(Unavailable::Failed(why.clone())),
            Slot::Open(s) => Ok(f(s)),
        }
    }

    /// Stops the sampler and writes the journal (what was sampled since its last write).
    pub fn stop(&self) {
        *self.stopping.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.wake.notify_all();
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }

    /// Sleeps until `deadline` (time since the epoch) or until told to stop; true when stopping.
    fn sleep_until(&self, deadline: Duration) -> bool {
        let mut stopping = self.stopping.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if *stopping {
                return true;
            }
            let now = unix_now();
            if now >= deadline {
                return false;
            }
            stopping = self
                .wake
                .wait_timeout(stopping, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn run(
        &self,
        opts: airlock_telemetry::Options,
        data_dir: PathBuf,
        metrics: Arc<Metrics>,
        models: Arc<Models>,
    ) {
        let dir = opts.dir.clone();
        loop {
            match Store::open(opts.clone()) {
                Ok(mut s) => {
                    s.set_fault(Box::new(airlock_updater::fault_point));
                    let h = s.health();
                    tracing::info!(
                        dir = %dir.display(),
                        series = h.series,
                        bytes = h.bytes_used,
                        max_bytes = h.max_bytes,
                        "telemetry store open"
                    );
                    *self.slot() = Slot::Open(Box::new(s));
                    break;
                }
                Err(e) => {
                    let first = !matches!(*self.slot(), Slot::Failed(_));
                    if first {
                        tracing::warn!(error = %e, "telemetry: the store cannot be opened; no history is recorded (inference is unaffected); retrying every minute");
                    }
                    metrics.set_store(&StoreGauges {
                        paused: true,
                        max_bytes: opts.max_bytes,
                        ..Default::default()
                    });
                    *self.slot() = Slot::Failed(e.to_string());
                    if self.sleep_until(unix_now() + Duration::from_secs(60)) {
                        return;
                    }
                }
            }
        }
        let warp = warp();
        let start = unix_now().as_secs();
        // A warped clock goes on from the store's newest sample (a restarted test daemon).
        let base = match &*self.slot() {
            Slot::Open(s) if warp > 1 => s.last_time().map_or(start, |t| t.max(start) + 1),
            _ => start,
        };
        let mut sampler = Sampler::new(data_dir);
        let mut ids: HashMap<String, u32> = HashMap::new();
        let mut batch: Vec<(u32, i64)> = Vec::new();
        loop {
            // Each whole second (of the warped clock when a test warps it).
            let real = unix_now();
            let next = Duration::from_secs(real.as_secs() + 1) + Duration::from_millis(2);
            if self.sleep_until(next) {
                break;
            }
            let real = unix_now().as_secs();
            let ts = base + (real - start) * warp;
            let text = metrics.render(&models);
            let mut samples = Vec::with_capacity(128);
            sampler.metrics(&text, &mut samples);
            sampler.process(&mut samples);
            sampler.host(&mut samples);
            let gauges = {
                let mut slot = self.slot();
                let Slot::Open(store) = &mut *slot else {
                    break;
                };
                batch.clear();
                for (def, v) in &samples {
                    let key = def.key();
                    let id = match ids.get(&key) {
                        Some(id) => Some(*id),
                        None => store.series_id(def).inspect(|id| {
                            ids.insert(key, *id);
                        }),
                    };
                    if let Some(id) = id {
                        batch.push((id, *v));
                    }
                }
                store.record(ts, &batch);
                gauges(&store.health())
            };
            metrics.set_store(&gauges);
        }
        if let Slot::Open(store) = &mut *self.slot() {
            store.flush_journal();
        }
    }
}

fn gauges(h: &airlock_telemetry::Health) -> StoreGauges {
    StoreGauges {
        paused: h.paused.is_some(),
        bytes: h.bytes_used,
        max_bytes: h.max_bytes,
        damaged_segments: h.damaged_segments,
        damaged_chunks: h.damaged_chunks,
        write_errors: h.write_errors,
        dropped_samples: h.dropped_samples,
        budget_deletions: h.budget_deletions,
    }
}

type Labels = BTreeMap<String, String>;

/// How a `/metrics` family's values become stored integers.
fn scale_of(family: &str) -> (f64, &'static str) {
    if family.ends_with("_seconds") {
        (1e6, "us")
    } else if family.ends_with("_bytes") {
        (1.0, "bytes")
    } else {
        (1.0, "")
    }
}

fn int(v: f64) -> i64 {
    // `as` saturates and maps NaN to 0.
    v.round() as i64
}

/// Turns readings into samples: counters into increases (reset-aware), histograms into
/// increases and percentiles. Holds the previous readings.
pub struct Sampler {
    counters: HashMap<String, i64>,
    buckets: HashMap<String, Vec<(f64, f64)>>,
    host_cpu: Option<(u64, u64)>,
    data_dir: PathBuf,
}

impl Sampler {
    /// A sampler with no previous readings (every counter of this process started at 0).
    pub fn new(data_dir: PathBuf) -> Sampler {
        Sampler {
            counters: HashMap::new(),
            buckets: HashMap::new(),
            host_cpu: None,
            data_dir,
        }
    }

    /// The increase of a cumulative counter since its last reading. Its first reading counts
    /// whole (the daemon's counters start at 0 with the process); one that went down was reset
    /// and counts what it shows now.
    fn increase(&mut self, def: &SeriesDef, now: i64) -> i64 {
        let key = def.key();
        let before = self.counters.insert(key, now);
        match before {
            Some(b) if now >= b => now - b,
            _ => now,
        }
    }

    /// The samples of the `/metrics` text.
    pub fn metrics(&mut self, text: &str, out: &mut Vec<(SeriesDef, i64)>) {
        for f in openmetrics::parse(text) {
            match f.kind.as_str() {
                "counter" => self.counter(&f, out),
                "gauge" => {
                    let (scale, unit) = scale_of(&f.name);
                    for s in &f.samples {
                        let def = series(&s.name, &s.labels, Kind::Gauge, unit);
                        out.push((def, int(s.value * scale)));
                    }
                }
                "histogram" => self.histogram(&f, out),
                _ => {}
            }
        }
    }

    fn counter(&mut self, f: &Family, out: &mut Vec<(SeriesDef, i64)>) {
        let (scale, unit) = scale_of(&f.name);
        for s in f.samples.iter().filter(|s| s.name.ends_with("_total")) {
            let def = series(&s.name, &s.labels, Kind::Counter, unit);
            let d = self.increase(&def, int(s.value * scale));
            out.push((def, d));
        }
    }

    fn histogram(&mut self, f: &Family, out: &mut Vec<(SeriesDef, i64)>) {
        let (scale, unit) = scale_of(&f.name);
        // One histogram per label set (without `le`).
        let mut by_labels: BTreeMap<String, (Labels, Vec<(f64, f64)>)> = BTreeMap::new();
        for s in &f.samples {
            if let Some(suffix) = s.name.strip_prefix(f.name.as_str()) {
                match suffix {
                    "_count" => {
                        let def = series(&s.name, &s.labels, Kind::Counter, "");
                        let d = self.increase(&def, int(s.value));
                        out.push((def, d));
                    }
                    "_sum" => {
                        let def = series(&s.name, &s.labels, Kind::Counter, unit);
                        let d = self.increase(&def, int(s.value * scale));
                        out.push((def, d));
                    }
                    "_bucket" => {
                        let mut labels = s.labels.clone();
                        let Some(le) = labels.remove("le") else {
                            continue;
                        };
                        let le = if le == "+Inf" {
                            f64::INFINITY
                        } else {
                            match le.parse::<f64>() {
                                Ok(v) => v,
                                Err(_) => continue,
                            }
                        };
                        let key = series(&f.name, &labels, Kind::Gauge, "").key();
                        by_labels
                            .entry(key)
                            .or_insert_with(|| (labels, Vec::new()))
                            .1
                            .push((le, s.value));
                    }
                    _ => {}
                }
            }
        }
        for (key, (labels, mut now)) in by_labels {
            now.sort_by(|a, b| a.0.total_cmp(&b.0));
            let before = self.buckets.get(&key).map(Vec::as_slice).unwrap_or(&[]);
            for (q, name) in [(0.5, "_p50"), (0.99, "_p99")] {
                if let Some(v) = openmetrics::quantile(q, before, &now) {
                    let def = series(&format!("{}{name}", f.name), &labels, Kind::Gauge, unit);
                    out.push((def, int(v * scale)));
                }
            }
            self.buckets.insert(key, now);
        }
    }

    /// The process's own series: CPU time, resident memory, open files, threads.
    pub fn process(&mut self, out: &mut Vec<(SeriesDef, i64)>) {
        if let Some(p) = read_proc_stat() {
            let cpu = SeriesDef::new("airlock_process_cpu", Kind::Counter, "us");
            let d = self.increase(&cpu, p.cpu_us);
            out.push((cpu, d));
            out.push((
                SeriesDef::new("airlock_process_threads", Kind::Gauge, ""),
                p.threads,
            ));
            out.push((
                SeriesDef::new("airlock_process_resident_memory", Kind::Gauge, "bytes"),
                p.rss_bytes,
            ));
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            out.push((
                SeriesDef::new("airlock_process_open_fds", Kind::Gauge, ""),
                fds.count() as i64,
            ));
        }
    }

    /// The host's series: CPU busy (percent), memory, free space on the data directory, load.
    pub fn host(&mut self, out: &mut Vec<(SeriesDef, i64)>) {
        if let Some((busy, total)) = read_host_cpu() {
            if let Some((b0, t0)) = self.host_cpu {
                if total > t0 {
                    let pct = (busy.saturating_sub(b0) as f64) * 100.0 / (total - t0) as f64;
                    out.push((
                        SeriesDef::new("airlock_host_cpu_busy", Kind::Gauge, "percent"),
                        int(pct),
                    ));
                }
            }
            self.host_cpu = Some((busy, total));
        }
        if let Ok(m) = std::fs::read_to_string("/proc/meminfo") {
            for (field, name) in [
                ("MemTotal:", "airlock_host_memory_total"),
                ("MemAvailable:", "airlock_host_memory_available"),
            ] {
                if let Some(kb) = meminfo(&m, field) {
                    out.push((
                        SeriesDef::new(name, Kind::Gauge, "bytes"),
                        kb.saturating_mul(1024),
                    ));
                }
            }
        }
        if let Some(free) = free_bytes(&self.data_dir) {
            out.push((
                SeriesDef::new("airlock_host_data_dir_free", Kind::Gauge, "bytes"),
                free,
            ));
        }
        if let Some(load) = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|l| l.split_whitespace().next()?.parse::<f64>().ok())
        {
            out.push((
                SeriesDef::new("airlock_host_load1", Kind::Gauge, "1/100"),
                int(load * 100.0),
            ));
        }
    }
}

fn series(name: &str, labels: &Labels, kind: Kind, unit: &str) -> SeriesDef {
    SeriesDef {
        labels: labels.clone(),
        ..SeriesDef::new(name, kind, unit)
    }
}

struct ProcStat {
    cpu_us: i64,
    threads: i64,
    rss_bytes: i64,
}

/// `/proc/self/stat`: user and system time (clock ticks), threads, resident pages.
fn read_proc_stat() -> Option<ProcStat> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may contain anything.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state): field N is f[N - 3].
    let num = |n: usize| f.get(n - 3).and_then(|v| v.parse::<i64>().ok());
    let ticks = num(14)?.saturating_add(num(15)?);
    let (hz, page) = *SYSCONF;
    Some(ProcStat {
        cpu_us: ticks.saturating_mul(1_000_000) / hz,
        threads: num(20)?,
        rss_bytes: num(24)?.saturating_mul(page),
    })
}

/// Clock ticks per second and the page size.
static SYSCONF: std::sync::LazyLock<(i64, i64)> = std::sync::LazyLock::new(|| {
    use nix::unistd::{sysconf, SysconfVar};
    let get = |v, d| sysconf(v).ok().flatten().filter(|n| *n > 0).unwrap_or(d) as i64;
    (
        get(SysconfVar::CLK_TCK, 100),
        get(SysconfVar::PAGE_SIZE, 4096),
    )
});

/// `/proc/stat`'s first line: (busy, total) jiffies, busy = everything but idle and iowait.
fn read_host_cpu() -> Option<(u64, u64)> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let line = s.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

fn meminfo(text: &str, field: &str) -> Option<i64> {
    text.lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn free_bytes(dir: &Path) -> Option<i64> {
    let s = nix::sys::statvfs::statvfs(dir).ok()?;
    Some((s.blocks_available() as u64).saturating_mul(s.fragment_size() as u64) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(out: &[(SeriesDef, i64)], key: &str) -> Option<i64> {
        out.iter().find(|(d, _)| d.key() == key).map(|x| x.1)
    }

    const TEXT_1: &str = r#"# HELP airlock_inference_requests Inference requests.
# TYPE airlock_inference_requests counter
airlock_inference_requests_total{model="m",version="1.0.0",outcome="success"} 10
# TYPE airlock_queue_depth gauge
airlock_queue_depth{model="m"} 3
# TYPE airlock_request_duration_seconds histogram
airlock_request_duration_seconds_sum{model="m"} 0.010
airlock_request_duration_seconds_count{model="m"} 10
airlock_request_duration_seconds_bucket{le="0.001",model="m"} 5
airlock_request_duration_seconds_bucket{le="0.002",model="m"} 10
airlock_request_duration_seconds_bucket{le="+Inf",model="m"} 10
# EOF
"#;

    const TEXT_2: &str = r#"# TYPE airlock_inference_requests counter
airlock_inference_requests_total{model="m",version="1.0.0",outcome="success"} 30
# TYPE airlock_queue_depth gauge
airlock_queue_depth{model="m"} 0
# TYPE airlock_request_duration_seconds histogram
airlock_request_duration_seconds_sum{model="m"} 0.090
airlock_request_duration_seconds_count{model="m"} 30
airlock_request_duration_seconds_bucket{le="0.001",model="m"} 5
airlock_request_duration_seconds_bucket{le="0.002",model="m"} 10
airlock_request_duration_seconds_bucket{le="+Inf",model="m"} 30
# EOF
"#;

    #[test]
    fn counters_become_increases_histograms_percentiles_and_seconds_microseconds() {
        let mut s = Sampler::new(PathBuf::from("/"));
        let mut out = Vec::new();
        s.metrics(TEXT_1, &mut out);
        let req =
            r#"airlock_inference_requests_total{model="m",outcome="success",version="1.0.0"}"#;
        assert_eq!(value(&out, req), Some(10), "first reading counts whole");
        assert_eq!(value(&out, r#"airlock_queue_depth{model="m"}"#), Some(3));
        assert_eq!(
            value(&out, r#"airlock_request_duration_seconds_sum{model="m"}"#),
            Some(10_000),
            "seconds are stored in µs"
        );
        // 5 of 10 at or under 1 ms: the median is the bucket's top.
        assert_eq!(
            value(&out, r#"airlock_request_duration_seconds_p50{model="m"}"#),
            Some(1000)
        );
        let p99 = out
            .iter()
            .find(|(d, _)| d.name == "airlock_request_duration_seconds_p99")
            .expect("p99");
        assert_eq!((p99.0.kind, p99.0.unit.as_str()), (Kind::Gauge, "us"));
        assert!(
            !p99.0.labels.contains_key("le"),
            "le is not a label of the stored series"
        );

        let mut out = Vec::new();
        s.metrics(TEXT_2, &mut out);
        assert_eq!(value(&out, req), Some(20));
        assert_eq!(
            value(&out, r#"airlock_request_duration_seconds_count{model="m"}"#),
            Some(20)
        );
        assert_eq!(
            value(&out, r#"airlock_request_duration_seconds_sum{model="m"}"#),
            Some(80_000)
        );
        // The last second's 20 observations were all above 2 ms (in +Inf): the percentile is
        // the highest finite bound, not the whole history's.
        assert_eq!(
            value(&out, r#"airlock_request_duration_seconds_p50{model="m"}"#),
            Some(2000)
        );

        // A reset (the process behind the counter restarted) counts what is there now.
        let mut out = Vec::new();
        s.metrics(
            &TEXT_1.replace("} 10\n# TYPE airlock_queue", "} 4\n# TYPE airlock_queue"),
            &mut out,
        );
        assert_eq!(value(&out, req), Some(4));

        // A second with no observations has no percentile (a gap, not a zero).
        let mut out = Vec::new();
        s.metrics(
            TEXT_1
                .replace("} 10\n# TYPE airlock_queue", "} 4\n# TYPE airlock_queue")
                .as_str(),
            &mut out,
        );
        assert_eq!(
            value(&out, r#"airlock_request_duration_seconds_p50{model="m"}"#),
            None
        );
    }

    #[test]
    fn process_and_host_series_are_read() {
        let mut s = Sampler::new(std::env::temp_dir());
        let mut out = Vec::new();
        s.process(&mut out);
        s.host(&mut out);
        std::thread::sleep(Duration::from_millis(20));
        s.host(&mut out);
        for key in [
            "airlock_process_cpu",
            "airlock_process_threads",
            "airlock_process_resident_memory",
            "airlock_process_open_fds",
            "airlock_host_memory_total",
            "airlock_host_memory_available",
            "airlock_host_data_dir_free",
            "airlock_host_load1",
        ] {
            let v = value(&out, key).unwrap_or_else(|| panic!("{key} missing"));
            assert!(v >= 0, "{key} = {v}");
        }
        assert!(value(&out, "airlock_process_threads").expect("threads") >= 1);
        assert!(value(&out, "airlock_process_resident_memory").expect("rss") > 1 << 20);
    }
}
