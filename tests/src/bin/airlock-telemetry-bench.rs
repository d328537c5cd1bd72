//! `airlock-telemetry-bench`: the local telemetry store's figures. In process, a time-warped
//! sample generator (the daemon's real series set for two models: counters with noisy rates,
//! latency percentiles, queue depths, process and host gauges) feeds the real store: 7 days at
//! one sample per series per second, then to a year at one per minute (tiers 1 and 2 still get
//! every slot; tier 0 keeps only its last hour anyway). It reports the disk after 7 days and
//! after a year against the budget, bytes per stored sample per tier, the store's CPU per
//! second at steady state, and query times for 1 h / 7 d / 1 y windows at 2000 points. Then
//! the real `airlockd` (release) serves demo-iris under wrk with `[telemetry] enabled` off and
//! on, alternating, for the serving overhead (throughput and airlockd CPU per request).
//! Prints the tables and writes them into `docs/PERFORMANCE.md` (`<!-- bench:telemetry -->`).
//! Usage: `airlock-telemetry-bench [--seconds N] [--rounds N] [--no-doc] [--store-only]`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use airlock_telemetry::{Kind, Selector, SeriesDef, Store};
use airlock_tests::bench::{cpu_of, ort_library, write_block};
use anyhow::{bail, Context};

/// A deterministic noise source (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in [0, n).
    fn below(&mut self, n: u64) -> i64 {
        (self.next() % n.max(1)) as i64
    }
}

/// The series set and how each moves.
enum Gen {
    /// A counter's increase per second around `rate` (± `jitter`).
    Rate { rate: i64, jitter: u64 },
    /// A gauge around `level` (± `jitter`).
    Level { level: i64, jitter: u64 },
    /// A gauge that walks slowly.
    Walk { value: i64, step: u64 },
    /// A constant.
    Flat(i64),
}

fn series_set() -> Vec<(SeriesDef, Gen)> {
    let mut out = Vec::new();
    for model in ["iris", "resnet"] {
        let m =
            |name: &str, kind, unit: &str| SeriesDef::new(name, kind, unit).label("model", model);
        let ok = SeriesDef::new("airlock_inference_requests_total", Kind::Counter, "")
            .label("model", model)
            .label("version", "1.2.0")
            .label("outcome", "success");
        out.push((
            ok,
            Gen::Rate {
                rate: 120,
                jitter: 40,
            },
        ));
        let bad = SeriesDef::new("airlock_inference_requests_total", Kind::Counter, "")
            .label("model", model)
            .label("version", "1.2.0")
            .label("outcome", "bad_request");
        out.push((bad, Gen::Rate { rate: 0, jitter: 2 }));
        for h in ["request", "queue", "compute"] {
            let base = format!("airlock_{h}_duration_seconds");
            out.push((
                m(&format!("{base}_count"), Kind::Counter, ""),
                Gen::Rate {
                    rate: 120,
                    jitter: 40,
                },
            ));
            out.push((
                m(&format!("{base}_sum"), Kind::Counter, "us"),
                Gen::Rate {
                    rate: 96_000,
                    jitter: 30_000,
                },
            ));
            out.push((
                m(&format!("{base}_p50"), Kind::Gauge, "us"),
                Gen::Level {
                    level: 700,
                    jitter: 150,
                },
            ));
            out.push((
                m(&format!("{base}_p99"), Kind::Gauge, "us"),
                Gen::Level {
                    level: 2400,
                    jitter: 900,
                },
            ));
        }
        out.push((
            m("airlock_batch_size_count", Kind::Counter, ""),
            Gen::Rate {
                rate: 120,
                jitter: 40,
            },
        ));
        out.push((
            m("airlock_batch_size_sum", Kind::Counter, ""),
            Gen::Rate {
                rate: 300,
                jitter: 100,
            },
        ));
        out.push((
            m("airlock_batch_size_p50", Kind::Gauge, ""),
            Gen::Level {
                level: 2,
                jitter: 2,
            },
        ));
        out.push((
            m("airlock_batch_size_p99", Kind::Gauge, ""),
            Gen::Level {
                level: 6,
                jitter: 3,
            },
        ));
        out.push((
            m("airlock_in_flight_requests", Kind::Gauge, ""),
            Gen::Level {
                level: 2,
                jitter: 4,
            },
        ));
        out.push((
            m("airlock_queue_depth", Kind::Gauge, ""),
            Gen::Level {
                level: 1,
                jitter: 3,
            },
        ));
        out.push((m("airlock_session_rebuilds", Kind::Gauge, ""), Gen::Flat(0)));
        out.push((
            m("airlock_model_info", Kind::Gauge, "")
                .label("version", "1.2.0")
                .label("provider", "cuda")
                .label("degraded", "false"),
            Gen::Flat(1),
        ));
    }
    let g = |n: &str, unit: &str| SeriesDef::new(n, Kind::Gauge, unit);
    out.push((
        SeriesDef::new("airlock_process_cpu", Kind::Counter, "us"),
        Gen::Rate {
            rate: 180_000,
            jitter: 60_000,
        },
    ));
    out.push((
        g("airlock_process_resident_memory", "bytes"),
        Gen::Walk {
            value: 900 << 20,
            step: 1 << 16,
        },
    ));
    out.push((
        g("airlock_process_open_fds", ""),
        Gen::Level {
            level: 60,
            jitter: 10,
        },
    ));
    out.push((g("airlock_process_threads", ""), Gen::Flat(24)));
    out.push((
        g("airlock_host_cpu_busy", "percent"),
        Gen::Level {
            level: 35,
            jitter: 20,
        },
    ));
    out.push((
        g("airlock_host_memory_total", "bytes"),
        Gen::Flat(256 << 30),
    ));
    out.push((
        g("airlock_host_memory_available", "bytes"),
        Gen::Walk {
            value: 200 << 30,
            step: 1 << 20,
        },
    ));
    out.push((
        g("airlock_host_data_dir_free", "bytes"),
        Gen::Walk {
            value: 800 << 30,
            step: 1 << 12,
        },
    ));
    out.push((
        g("airlock_host_load1", "1/100"),
        Gen::Level {
            level: 250,
            jitter: 120,
        },
    ));
    for t in [
        "paused",
        "damaged_segments",
        "damaged_chunks",
        "write_errors",
        "dropped_samples",
        "budget_deletions",
    ] {
        out.push((g(&format!("airlock_telemetry_{t}"), ""), Gen::Flat(0)));
    }
    out.push((
        g("airlock_telemetry_bytes", "bytes"),
        Gen::Walk {
            value: 50 << 20,
            step: 1 << 10,
        },
    ));
    out.push((
        g("airlock_telemetry_max_bytes", "bytes"),
        Gen::Flat(1 << 30),
    ));
    out
}

fn sample(gens: &mut [(SeriesDef, Gen)], rng: &mut Rng) -> Vec<i64> {
    gens.iter_mut()
        .map(|(_, g)| match g {
            Gen::Rate { rate, jitter } => {
                (*rate + rng.below(2 * *jitter + 1) - *jitter as i64).max(0)
            }
            Gen::Level { level, jitter } => {
                (*level + rng.below(2 * *jitter + 1) - *jitter as i64).max(0)
            }
            Gen::Walk { value, step } => {
                *value = (*value + rng.below(2 * *step + 1) - *step as i64).max(0);
                *value
            }
            Gen::Flat(v) => *v,
        })
        .collect()
}

/// This thread's CPU time (`/proc/thread-self/schedstat`: nanoseconds on a CPU).
fn thread_cpu() -> Duration {
    let ns = std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0);
    Duration::from_nanos(ns)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn query_ms(
    store: &mut Store,
    sel: &str,
    from: u64,
    to: u64,
) -> anyhow::Result<(f64, usize, usize)> {
    let sel = Selector::parse(sel).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut times = Vec::new();
    let mut shape = (0, 0);
    for _ in 0..7 {
        let t = Instant::now();
        let r = store.query(&sel, from, to, 2000)?;
        times.push(t.elapsed());
        shape = (
            r.first().map_or(0, |r| r.tier),
            r.iter().map(|r| r.points.len()).max().unwrap_or(0),
        );
    }
    Ok((median(times).as_secs_f64() * 1e3, shape.0, shape.1))
}

fn tier_rows(store: &Store) -> Vec<String> {
    store
        .health()
        .tiers
        .iter()
        .enumerate()
        .map(|(k, t)| {
            format!(
                "tier {k} (every {} s, kept {} h): {} segments, {:.1} KiB, {:.3} B per stored sample",
                t.step,
                t.keep / 3600,
                t.segments,
                t.bytes as f64 / 1024.0,
                t.bytes as f64 / t.slots.max(1) as f64
            )
        })
        .collect()
}

/// Each codec's bytes per stored sample on the same pages: 24 tier-0 pages (300 s) and 2 tier-1
/// pages (60 slots of 60 s each) of every series, from the generator.
fn codec_rows() -> String {
    use airlock_telemetry::{codec, Agg};
    let mut gens = series_set();
    let mut rng = Rng(0x1234_5678);
    let n = gens.len();
    // tier-0 pages: [series][slot]
    let mut t0: Vec<Vec<Vec<Agg>>> = vec![Vec::new(); n];
    let mut t1: Vec<Vec<Vec<Agg>>> = vec![Vec::new(); n];
    for _page in 0..24 {
        let mut page = vec![Vec::with_capacity(300); n];
        for _ in 0..300 {
            for (i, v) in sample(&mut gens, &mut rng).into_iter().enumerate() {
                page[i].push(Agg::one(v));
            }
        }
        for (i, p) in page.into_iter().enumerate() {
            t0[i].push(p);
        }
    }
    for _page in 0..2 {
        let mut page = vec![Vec::with_capacity(60); n];
        for _ in 0..60 {
            let mut slot = vec![Agg::default(); n];
            for _ in 0..60 {
                for (i, v) in sample(&mut gens, &mut rng).into_iter().enumerate() {
                    slot[i].merge(&Agg::one(v));
                }
            }
            for (i, a) in slot.into_iter().enumerate() {
                page[i].push(a);
            }
        }
        for (i, p) in page.into_iter().enumerate() {
            t1[i].push(p);
        }
    }
    let mut rows = String::from("Codecs on the same pages (bytes per stored sample; the store keeps the smallest per chunk):\n\n| pages | varints | zstd | pco | smallest of the three |\n|---|---|---|---|---|\n");
    for (label, pages) in [
        ("tier 0, 24 pages × 300 s", &t0),
        ("tier 1, 2 pages × 60 min", &t1),
    ] {
        let mut sums = [0usize; 4];
        let mut slots = 0usize;
        for series in pages.iter() {
            for page in series {
                slots += page.len();
                for (k, c) in [codec::RAW, codec::ZSTD, codec::PCO]
                    .into_iter()
                    .enumerate()
                {
                    sums[k] += codec::encode_with(c, page).map_or(usize::MAX / 64, |b| b.len());
                }
                sums[3] += codec::encode(page).1.len();
            }
        }
        let per = |b: usize| b as f64 / slots.max(1) as f64;
        rows.push_str(&format!(
            "| {label} | {:.3} | {:.3} | {:.3} | {:.3} |\n",
            per(sums[0]),
            per(sums[1]),
            per(sums[2]),
            per(sums[3])
        ));
    }
    rows
}

/// The store's figures (markdown).
fn store_bench(dir: &Path) -> anyhow::Result<String> {
    let _ = std::fs::remove_dir_all(dir);
    let config = airlock_config::Telemetry::default();
    let mut opts = airlock_telemetry::Options::from_config(&config, dir);
    opts.dir = dir.to_path_buf();
    let mut gens = series_set();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let t0: u64 = 1_767_225_600; // 2026-01-01T00:00:00Z
    let mut out = String::new();

    // Steady-state CPU with the real journal interval: one simulated hour.
    let mut steady = Store::open(opts.clone())?;
    let ids: Vec<u32> = gens
        .iter()
        .map(|(d, _)| steady.series_id(d).context("series"))
        .collect::<anyhow::Result<_>>()?;
    let n = ids.len();
    let cpu0 = thread_cpu();
    let wall0 = Instant::now();
    for s in 0..3600 {
        let v = sample(&mut gens, &mut rng);
        let batch: Vec<(u32, i64)> = ids.iter().copied().zip(v).collect();
        steady.record(t0 + s, &batch);
    }
    let steady_cpu = (thread_cpu() - cpu0) / 3600;
    let steady_wall = wall0.elapsed() / 3600;
    drop(steady);
    let _ = std::fs::remove_dir_all(dir);

    // 7 days at one sample per second (the journal written once a page: the simulation is not
    // waiting for 120 000 fsyncs; the steady-state row above pays them at the real interval).
    opts.flush_interval = 300;
    let mut store = Store::open(opts.clone())?;
    let ids: Vec<u32> = gens
        .iter()
        .map(|(d, _)| store.series_id(d).context("series"))
        .collect::<anyhow::Result<_>>()?;
    let week = 7 * 86_400;
    let cpu0 = thread_cpu();
    let mut samples = 0u64;
    for s in 0..week {
        let v = sample(&mut gens, &mut rng);
        let batch: Vec<(u32, i64)> = ids.iter().copied().zip(v).collect();
        store.record(t0 + s, &batch);
        samples += n as u64;
    }
    let week_cpu = thread_cpu() - cpu0;
    let h = store.health();
    let now = t0 + week;
    let mut q = Vec::new();
    for (label, from) in [("1 h", now - 3600), ("7 d", t0)] {
        for sel in [
            r#"airlock_request_duration_seconds_p99{model="iris"}"#,
            "airlock_request_duration_seconds_*",
        ] {
            let (ms, tier, pts) = query_ms(&mut store, sel, from, now)?;
            q.push(format!(
                "| after 7 d | {label} | `{sel}` | tier {tier} | {pts} | {ms:.2} ms |"
            ));
        }
    }
    let _ = std::fmt::Write::write_fmt(
        &mut out,
        format_args!(
            "Store (in process, release build, {n} series of the daemon's real set for two models; \
             `airlock-telemetry-bench`):\n\n\
             - steady state, journal every 5 s: **{:.1} µs CPU per second** of samples ({:.1} µs wall, fsyncs included)\n\
             - 7 simulated days at 1 s: {samples} samples in {:.1} s CPU ({:.0} ns per sample); **disk {:.2} MiB** of the {} MiB budget\n",
            steady_cpu.as_secs_f64() * 1e6,
            steady_wall.as_secs_f64() * 1e6,
            week_cpu.as_secs_f64(),
            week_cpu.as_secs_f64() * 1e9 / samples as f64,
            h.bytes_used as f64 / 1048576.0,
            h.max_bytes >> 20,
        ),
    );
    for r in tier_rows(&store) {
        out.push_str(&format!("  - after 7 d, {r}\n"));
    }

    // On to a year at one sample per minute.
    let year = 365 * 86_400;
    let mut s = week;
    while s < year {
        let v = sample(&mut gens, &mut rng);
        let batch: Vec<(u32, i64)> = ids.iter().copied().zip(v).collect();
        store.record(t0 + s, &batch);
        s += 60;
    }
    store.flush_journal();
    let h = store.health();
    let now = t0 + year - 60;
    out.push_str(&format!(
        "- a simulated year: **disk {:.2} MiB** of the {} MiB budget ({} segments deleted for the budget; retention deletes the rest)\n",
        h.bytes_used as f64 / 1048576.0,
        h.max_bytes >> 20,
        h.budget_deletions
    ));
    for r in tier_rows(&store) {
        out.push_str(&format!("  - after 1 y, {r}\n"));
    }
    for (label, from) in [("7 d", now - week), ("1 y", now - year + 3600)] {
        for sel in [
            r#"airlock_request_duration_seconds_p99{model="iris"}"#,
            "airlock_request_duration_seconds_*",
        ] {
            let (ms, tier, pts) = query_ms(&mut store, sel, from, now)?;
            q.push(format!(
                "| after 1 y | {label} | `{sel}` | tier {tier} | {pts} | {ms:.2} ms |"
            ));
        }
    }
    let on_disk: u64 = walk(dir);
    out.push_str(&format!(
        "- the directory holds {:.2} MiB (every file counted; the store says {:.2} MiB)\n\n",
        on_disk as f64 / 1048576.0,
        h.bytes_used as f64 / 1048576.0
    ));
    out.push_str(&codec_rows());
    out.push('\n');
    out.push_str("Queries at 2000 points (median of 7, files in the page cache):\n\n| store | window | series | tier | points per series | time |\n|---|---|---|---|---|---|\n");
    out.push_str(&q.join("\n"));
    out.push('\n');
    Ok(out)
}

fn walk(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => walk(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// The release airlockd, as an absolute path (the runs start it in their own directory).
fn airlockd() -> anyhow::Result<PathBuf> {
    std::fs::canonicalize("target/release/airlockd")
        .context("target/release/airlockd (cargo build --release -p airlockd)")
}

/// One serving run: (req/s, airlockd CPU µs per request) under wrk at `conns` connections.
fn serve_run(dir: &Path, telemetry: bool, secs: u64, conns: usize) -> anyhow::Result<(f64, f64)> {
    let config = dir.join("bench.toml");
    std::fs::write(
        &config,
        format!("[telemetry]\nenabled = {telemetry}\n[models.\"demo-iris\"]\nmax_batch_size = 8\n"),
    )?;
    let mut child = Command::new(airlockd()?)
        .args([
            "--dev",
            "--listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
            "--config",
        ])
        .arg(&config)
        .current_dir(dir)
        .env("ORT_DYLIB_PATH", ort_library()?)
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .context("target/release/airlockd (cargo build --release -p airlockd)")?;
    let mut lines = BufReader::new(child.stderr.take().context("stderr")?).lines();
    let addr = loop {
        let Some(Ok(l)) = lines.next() else {
            bail!("airlockd exited before it was ready")
        };
        if l.contains("ready: serving") {
            break l
                .split(" listen=")
                .nth(1)
                .and_then(|a| a.split_whitespace().next())
                .unwrap_or("")
                .to_string();
        }
    };
    std::thread::spawn(move || for _ in lines.by_ref() {});
    let lua = dir.join("iris.lua");
    std::fs::write(
        &lua,
        "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\n\
         wrk.body = '{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[1,4],\"data\":[5.1,3.5,1.4,0.2]}]}'\n",
    )?;
    let url = format!("http://{addr}/v2/models/demo-iris/infer");
    let wrk = |d: u64| {
        Command::new("wrk")
            .args([
                "-t1",
                "-c",
                &conns.to_string(),
                "-d",
                &format!("{d}s"),
                "-s",
            ])
            .arg(&lua)
            .arg(&url)
            .output()
    };
    wrk(2)?; // warm-up
    let cpu0 = cpu_of(child.id())?;
    let out = wrk(secs).context("wrk (apt install wrk)")?;
    let cpu = cpu_of(child.id())? - cpu0;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let n: f64 = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("wrk's request count")?;
    Ok((n / secs as f64, cpu.as_secs_f64() * 1e6 / n))
}

fn serve_bench(secs: u64, rounds: usize) -> anyhow::Result<String> {
    let dir = std::fs::canonicalize("target")?.join("bench/telemetry-serve");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let st = Command::new(airlockd()?)
        .args(["--dev", "--once"])
        .current_dir(&dir)
        .env("ORT_DYLIB_PATH", ort_library()?)
        .stderr(Stdio::null())
        .status()?;
    if !st.success() {
        bail!("airlockd --dev --once failed");
    }
    let conns = 8;
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        off.push(serve_run(&dir, false, secs, conns)?);
        on.push(serve_run(&dir, true, secs, conns)?);
    }
    let med = |v: &[(f64, f64)], i: usize| {
        let mut x: Vec<f64> = v.iter().map(|r| if i == 0 { r.0 } else { r.1 }).collect();
        x.sort_by(f64::total_cmp);
        x[x.len() / 2]
    };
    let (off_rps, on_rps) = (med(&off, 0), med(&on, 0));
    let (off_cpu, on_cpu) = (med(&off, 1), med(&on, 1));
    Ok(format!(
        "Serving with telemetry off and on (release airlockd --dev, demo-iris JSON requests, wrk -t1 -c{conns}, \
         {secs} s per run, {rounds} alternating rounds, medians; airlockd CPU from `/proc/PID/stat`):\n\n\
         | telemetry | req/s | airlockd CPU / request |\n|---|---|---|\n\
         | off | {off_rps:.0} | {off_cpu:.1} µs |\n| on | {on_rps:.0} | {on_cpu:.1} µs |\n\
         | **overhead** | **{:+.1} %** | **{:+.1} %** |\n\nEach run: {}\n",
        (off_rps - on_rps) / off_rps * 100.0,
        (on_cpu - off_cpu) / off_cpu * 100.0,
        off.iter()
            .zip(&on)
            .map(|(a, b)| format!("off {:.0}/s {:.1} µs, on {:.0}/s {:.1} µs", a.0, a.1, b.0, b.1))
            .collect::<Vec<_>>()
            .join("; ")
    ))
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut secs, mut rounds, mut doc, mut store_only) = (10u64, 3usize, true, false);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => secs = args.next().context("--seconds N")?.parse()?,
            "--rounds" => rounds = args.next().context("--rounds N")?.parse()?,
            "--no-doc" => doc = false,
            "--store-only" => store_only = true,
            o => bail!("unknown argument {o}"),
        }
    }
    let dir = std::fs::canonicalize("target")?.join("bench/telemetry-store");
    let mut text = format!(
        "Measured {} on this machine (2 vCPU VM, Debian 12).\n\n",
        time::OffsetDateTime::now_utc().date()
    );
    let store = store_bench(&dir)?;
    println!("{store}");
    text.push_str(&store);
    if !store_only {
        let serve = serve_bench(secs, rounds)?;
        println!("{serve}");
        text.push('\n');
        text.push_str(&serve);
    }
    if doc {
        write_block(Path::new("docs/PERFORMANCE.md"), "telemetry", &text)?;
    }
    Ok(())
}
