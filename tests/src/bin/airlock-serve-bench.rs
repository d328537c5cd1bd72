//! `airlock-serve-bench`: the serving benchmark. In one run, with the same ONNX Runtime library
//! and models, it measures raw in-process ONNX Runtime and the real `airlockd` fed over HTTP
//! (keep-alive, binary tensor extension, fixed concurrency) by its own load generator, for a
//! compute-bound model (4 × 1024×1024 MatMul+ReLU) and a tiny one (16→16 MatMul+ReLU, x [4,16]).
//! Prints a table and writes it into `docs/PERFORMANCE.md` between `<!-- bench:serve -->` markers.
//! Usage: `airlock-serve-bench [--seconds N] [--airlockd PATH] [--no-doc]` (run from the repo root);
//! for tuning, `--only MODEL` measures one model's rows and `--mlp-settings 'k = v;…'` replaces the
//! compute-bound model's `[models."bench-mlp"]` settings (neither writes the document).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

struct BenchModel {
    name: &'static str,
    in_dim: i64,
    widths: &'static [i64],
    rows: u64,
    raw_batch: u64,
    concurrency: &'static [usize],
}

impl BenchModel {
    /// Bytes of one binary-extension inference request as `load` sends it (headers included).
    fn request_len(&self) -> usize {
        300 + (self.rows as i64 * self.in_dim) as usize * 4
    }
    /// Bytes of the answer (headers, JSON header, binary output), roughly.
    fn response_len(&self) -> usize {
        400 + (self.rows as i64 * self.widths[self.widths.len() - 1]) as usize * 4
    }
}

/// `[models."bench-mlp"]` settings (`--mlp-settings` replaces them; `;` separates lines).
const MLP_SETTINGS: &str = "instances = 2\nintra_op_threads = 1\nmax_batch_size = 32\npreferred_batch_sizes = [16]\nmax_queue_delay = \"3ms\"";

const MODELS: [BenchModel; 2] = [
    BenchModel {
        name: "bench-mlp",
        in_dim: 1024,
        widths: &[1024, 1024, 1024, 1024],
        rows: 1,
        raw_batch: 32,
        concurrency: &[32],
    },
    BenchModel {
        name: "bench-tiny",
        in_dim: 16,
        widths: &[16],
        rows: 4,
        raw_batch: 4,
        concurrency: &[1, 8],
    },
];

fn ort_library() -> anyhow::Result<PathBuf> {
    let explicit = std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from);
    let home = PathBuf::from(std::env::var_os("HOME").context("HOME")?);
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or(home.join(".cache"));
    for p in explicit.into_iter().chain([
        PathBuf::from("/usr/lib/airlock/libonnxruntime.so"),
        cache.join("airlock/onnxruntime/1.31.1/libonnxruntime.so.1.31.1"),
    ]) {
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("ONNX Runtime not found: run scripts/setup.sh or set ORT_DYLIB_PATH")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted
        .get(((sorted.len().saturating_sub(1)) as f64 * p).round() as usize)
        .copied()
        .unwrap_or_default()
}

/// Raw ONNX Runtime in this process: (runs/s, p50, p99) at `batch` rows.
fn raw_ort(
    env: &ort::environment::Environment,
    model: &Path,
    in_dim: i64,
    batch: u64,
    secs: f64,
    threads: usize,
) -> anyhow::Result<(f64, Duration, Duration)> {
    let mut s = ort::session::Session::builder(env)?
        .with_intra_threads(threads)
        .map_err(ort::Error::<()>::from)?
        .commit_from_file(model)?;
    let data = vec![0.5f32; (batch as i64 * in_dim) as usize];
    let mut lat = Vec::new();
    let end = Instant::now() + Duration::from_secs_f64(secs);
    for _ in 0..5 {
        s.run(vec![(
            "x",
            ort::value::Tensor::from_array((vec![batch as i64, in_dim], data.clone()))?,
        )])?;
    }
    let start = Instant::now();
    while Instant::now() < end {
        let t = Instant::now();
        let input = ort::value::Tensor::from_array((vec![batch as i64, in_dim], data.clone()))?;
        let out = s.run(vec![("x", input)])?;
        let (_, y) = out["y"].try_extract_tensor::<f32>()?;
        std::hint::black_box(y);
        lat.push(t.elapsed());
    }
    let n = lat.len() as f64 / start.elapsed().as_secs_f64();
    lat.sort();
    Ok((n, percentile(&lat, 0.5), percentile(&lat, 0.99)))
}

/// One keep-alive client posting binary-extension requests until `end`; returns latencies.
fn client(
    addr: &str,
    path: &str,
    body: &[u8],
    header_len: usize,
    end: Instant,
) -> anyhow::Result<Vec<Duration>> {
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    // An empty body means a GET (the HTTP floor row), anything else an inference POST.
    let head = if body.is_empty() {
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n")
    } else {
        format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/octet-stream\r\nInference-Header-Content-Length: {header_len}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
    };
    let request = [head.as_bytes(), body].concat();
    let mut reader = BufReader::new(s.try_clone()?);
    let mut lat = Vec::new();
    let mut line = String::new();
    while Instant::now() < end {
        let t = Instant::now();
        s.write_all(&request)?;
        line.clear();
        reader.read_line(&mut line)?;
        if !line.starts_with("HTTP/1.1 200") {
            bail!("airlockd answered {line:?}");
        }
        let mut len = 0usize;
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse()?;
            }
        }
        let mut buf = vec![0u8; len];
        reader.read_exact(&mut buf)?;
        lat.push(t.elapsed());
    }
    Ok(lat)
}

/// The loopback floor under any HTTP server here: one client thread and one echo thread in this
/// process exchanging `req` and `resp` bytes over keep-alive TCP with `TCP_NODELAY`, no HTTP.
fn tcp_floor(req: usize, resp: usize, secs: f64) -> anyhow::Result<(f64, Duration, Duration)> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = l.accept()?;
        s.set_nodelay(true)?;
        let (mut inb, out) = (vec![0u8; req], vec![1u8; resp]);
        while s.read_exact(&mut inb).is_ok() {
            s.write_all(&out)?;
        }
        Ok(())
    });
    let mut c = TcpStream::connect(addr)?;
    c.set_nodelay(true)?;
    let (out, mut inb) = (vec![2u8; req], vec![0u8; resp]);
    let start = Instant::now();
    let mut lat = Vec::new();
    while start.elapsed().as_secs_f64() < secs {
        let t = Instant::now();
        c.write_all(&out)?;
        c.read_exact(&mut inb)?;
        lat.push(t.elapsed());
    }
    let rps = lat.len() as f64 / start.elapsed().as_secs_f64();
    lat.sort();
    Ok((rps, percentile(&lat, 0.5), percentile(&lat, 0.99)))
}

/// Pins every thread of process `pid` to `cpus` (a `taskset` list such as `0` or `0-1`).
fn pin(pid: u32, cpus: &str) -> anyhow::Result<()> {
    let st = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .stdout(Stdio::null())
        .status()
        .context("taskset (util-linux)")?;
    if !st.success() {
        bail!("taskset -a -p -c {cpus} {pid} failed");
    }
    Ok(())
}

fn load(
    addr: &str,
    model: &BenchModel,
    concurrency: usize,
    secs: f64,
    json: bool,
) -> anyhow::Result<(f64, Duration, Duration)> {
    let values = vec![0.5f32; (model.rows as i64 * model.in_dim) as usize];
    let raw: Vec<u8> = values.iter().flat_map(|f| f.to_le_bytes()).collect();
    let (head, body) = if json {
        // As perf_analyzer sends JSON: Inference-Header-Content-Length equal to the whole body.
        let b = serde_json::to_vec(&serde_json::json!({
            "inputs": [{ "name": "x", "datatype": "FP32", "shape": [model.rows, model.in_dim], "data": values }],
        }))?;
        (b.clone(), b)
    } else {
        let head = serde_json::to_vec(&serde_json::json!({
            "inputs": [{ "name": "x", "datatype": "FP32", "shape": [model.rows, model.in_dim], "parameters": { "binary_data_size": raw.len() } }],
            "outputs": [{ "name": "y", "parameters": { "binary_data": true } }],
        }))?;
        (head.clone(), [head, raw].concat())
    };
    let path = format!("/v2/models/{}/infer", model.name);
    // Warm-up.
    client(
        addr,
        &path,
        &body,
        head.len(),
        Instant::now() + Duration::from_millis(300),
    )?;
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let handles: Vec<_> = (0..concurrency)
        .map(|_| {
            let (addr, path, body, hl) = (addr.to_string(), path.clone(), body.clone(), head.len());
            std::thread::spawn(move || client(&addr, &path, &body, hl, end))
        })
        .collect();
    let mut lat = Vec::new();
    for h in handles {
        lat.extend(
            h.join()
                .map_err(|_| anyhow::anyhow!("client thread panicked"))??,
        );
    }
    let rps = lat.len() as f64 / start.elapsed().as_secs_f64();
    lat.sort();
    Ok((rps, percentile(&lat, 0.5), percentile(&lat, 0.99)))
}

/// Brings the bench models into the dev appliance through the real pipeline (signed bundle,
/// import, validation, unattended-dev approval, promotion).
fn install_models(dir: &Path) -> anyhow::Result<()> {
    for m in &MODELS {
        airlock_tests::install_dev_model(
            &dir.join("airlock-dev"),
            m.name,
            &airlock_signing::onnx::dense_relu(m.in_dim, m.widths, 7),
        )?;
    }
    Ok(())
}

/// Where `install_dev_model` left a model's `.onnx` file.
fn model_file(dir: &Path, name: &str) -> PathBuf {
    dir.join("airlock-dev/src").join(name).join("model.onnx")
}

/// (sum, count) of the batch-size histogram of `model`, from `/metrics`.
fn mean_batch(addr: &str, model: &str) -> anyhow::Result<(f64, f64)> {
    let (_, _, body) = airlock_tests::http(addr, "GET", "/metrics", &[], b"");
    let text = String::from_utf8_lossy(&body);
    let find = |suffix: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("airlock_batch_size_{suffix}{{model=\"{model}\"}}")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok((find("sum"), find("count")))
}

/// Runs the KServe peer (the bench venv that `scripts/bench.sh serve` prepares) on the tiny model.
fn kserve_peer(
    dir: &Path,
    m: &BenchModel,
    secs: f64,
) -> anyhow::Result<Vec<(usize, f64, Duration, Duration)>> {
    let home = PathBuf::from(std::env::var_os("HOME").context("HOME")?);
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or(home.join(".cache"));
    let python = cache.join("airlock/bench-venv/bin/python");
    if !python.exists() {
        bail!(
            "{} is missing (scripts/bench.sh serve installs kserve there)",
            python.display()
        );
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/kserve_peer.py");
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut child = Command::new(python)
        .arg(script)
        .env("PEER_MODEL_NAME", m.name)
        .env("PEER_MODEL_PATH", model_file(dir, m.name))
        .env("PEER_HTTP_PORT", port.to_string())
        .env("PEER_GRPC_PORT", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let addr = format!("127.0.0.1:{port}");
    let start = Instant::now();
    let result = (|| {
        loop {
            if TcpStream::connect(&addr).is_ok()
                && airlock_tests::http(
                    &addr,
                    "GET",
                    &format!("/v2/models/{}/ready", m.name),
                    &[],
                    b"",
                )
                .0 == 200
            {
                break;
            }
            if start.elapsed() > Duration::from_secs(60) {
                bail!("the KServe peer did not become ready");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        m.concurrency
            .iter()
            .map(|&c| load(&addr, m, c, secs, true).map(|(r, a, b)| (c, r, a, b)))
            .collect()
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn main() -> anyhow::Result<()> {
    let mut secs = 5.0;
    let mut airlockd = PathBuf::from("target/release/airlockd");
    let mut doc = Some(PathBuf::from("docs/PERFORMANCE.md"));
    let mut only: Option<String> = None;
    let mut mlp_settings = MLP_SETTINGS.to_string();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => secs = it.next().context("--seconds N")?.parse()?,
            "--airlockd" => airlockd = PathBuf::from(it.next().context("--airlockd PATH")?),
            "--no-doc" => doc = None,
            "--only" => only = Some(it.next().context("--only MODEL")?.clone()),
            "--mlp-settings" => {
                mlp_settings = it
                    .next()
                    .context("--mlp-settings 'TOML'")?
                    .replace(';', "\n");
                doc = None;
            }
            o => bail!("unknown argument {o}"),
        }
    }
    let airlockd = std::fs::canonicalize(&airlockd)
        .with_context(|| format!("{} (build it: cargo build --release)", airlockd.display()))?;
    let lib = ort_library()?;
    let dir = std::fs::canonicalize("target")?.join("bench/serve");
    std::fs::create_dir_all(&dir)?;
    let st = Command::new(&airlockd)
        .args(["--dev", "--once"])
        .current_dir(&dir)
        .env("ORT_DYLIB_PATH", &lib)
        .stderr(Stdio::null())
        .status()?;
    if !st.success() {
        bail!("airlockd --dev --once failed");
    }
    install_models(&dir)?;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let config = dir.join("bench.toml");
    std::fs::write(
        &config,
        format!(
            "[serving]\nintra_op_threads = {cores}\nqueue_capacity = 4096\nwarmup_runs = 3\n\
             [models.\"bench-mlp\"]\n{mlp_settings}\n\
             [models.\"bench-tiny\"]\nmax_batch_size = 8\nintra_op_threads = 1\n"
        ),
    )?;
    let mut child = Command::new(&airlockd)
        .args([
            "--dev",
            "--listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
            "--config",
        ])
        .arg(&config)
        .current_dir(&dir)
        .env("ORT_DYLIB_PATH", &lib)
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()?;
    let mut lines = BufReader::new(child.stderr.take().context("stderr")?).lines();
    let addr = loop {
        let Some(Ok(l)) = lines.next() else {
            bail!("airlockd exited before it was ready")
        };
        if l.contains("ready: serving") {
            break l
                .split("listen=")
                .nth(1)
                .unwrap_or("")
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_string();
        }
    };
    std::thread::spawn(move || for _ in lines.by_ref() {});
    let env = ort::init_from(&lib)?.with_name("bench").build()?;
    let mut rows = Vec::new();
    let mut peer_rows: Vec<(usize, f64)> = Vec::new();
    let mut tiny_raw_p50 = Duration::ZERO;
    for m in MODELS
        .iter()
        .filter(|m| only.as_deref().is_none_or(|o| o == m.name))
    {
        let model = model_file(&dir, m.name);
        let (raw_rps, raw_p50, raw_p99) =
            raw_ort(&env, &model, m.in_dim, m.raw_batch, secs, cores)?;
        let raw_rows = raw_rps * m.raw_batch as f64;
        if m.name == MODELS[1].name {
            tiny_raw_p50 = raw_p50;
        }
        rows.push(format!(
            "| {} | raw ONNX Runtime, in process, batch {} | {:.0} runs/s = {:.0} rows/s | {:.0} µs | {:.0} µs | — |",
            m.name, m.raw_batch, raw_rps, raw_rows, raw_p50.as_secs_f64() * 1e6, raw_p99.as_secs_f64() * 1e6
        ));
        for &c in m.concurrency {
            let before = mean_batch(&addr, m.name)?;
            let (rps, p50, p99) = load(&addr, m, c, secs, false)?;
            let after = mean_batch(&addr, m.name)?;
            let batch = (after.0 - before.0) / (after.1 - before.1).max(1.0);
            let served_rows = rps * m.rows as f64;
            let vs = if m.raw_batch > m.rows {
                format!(
                    "{:.2}× raw batch-{} rows/s",
                    served_rows / raw_rows,
                    m.raw_batch
                )
            } else {
                format!(
                    "p50 overhead {:+.0} µs over raw",
                    (p50.as_secs_f64() - raw_p50.as_secs_f64()) * 1e6
                )
            };
            rows.push(format!(
                "| {} | airlockd over HTTP, {c} concurrent client(s), {} row(s)/request, binary; mean batch {batch:.1} rows | {:.0} req/s = {:.0} rows/s | {:.0} µs | {:.0} µs | {vs} |",
                m.name, m.rows, rps, served_rows, p50.as_secs_f64() * 1e6, p99.as_secs_f64() * 1e6
            ));
        }
    }
    if only.is_some() {
        println!("{}", rows.join("\n"));
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let _ = child.wait();
        return Ok(());
    }
    // The floor under every request: the same keep-alive client on GET /v2/health/live (routing,
    // tracing middleware, HTTP on loopback; no model).
    {
        let start = Instant::now();
        let mut lat = client(
            &addr,
            "/v2/health/live",
            b"",
            0,
            start + Duration::from_secs_f64(secs),
        )?;
        let rps = lat.len() as f64 / start.elapsed().as_secs_f64();
        lat.sort();
        rows.push(format!(
            "| (none) | airlockd HTTP floor: GET /v2/health/live, 1 client | {:.0} req/s | {:.0} µs | {:.0} µs | — |",
            rps,
            percentile(&lat, 0.5).as_secs_f64() * 1e6,
            percentile(&lat, 0.99).as_secs_f64() * 1e6
        ));
    }
    // JSON rows for airlockd and the KServe peer (same model, same body).
    let tiny = &MODELS[1];
    for &c in tiny.concurrency {
        let (rps, p50, p99) = load(&addr, tiny, c, secs, true)?;
        rows.push(format!(
            "| {} | airlockd over HTTP, {c} concurrent client(s), JSON | {:.0} req/s | {:.0} µs | {:.0} µs | — |",
            tiny.name, rps, p50.as_secs_f64() * 1e6, p99.as_secs_f64() * 1e6
        ));
        peer_rows.push((c, rps));
    }
    // What this VM charges for loopback round trips: the same exchange with no HTTP at all, and
    // the tiny model again with airlockd and the load generator on one vCPU, where no wake-up
    // crosses vCPUs (a cross-vCPU wake-up is what dominates the round trip on this VM).
    {
        let tiny = &MODELS[1];
        let (rps, p50, p99) = tcp_floor(tiny.request_len(), tiny.response_len(), secs)?;
        rows.push(format!(
            "| (none) | loopback TCP round trip, no HTTP: {} B out, {} B back, 1 client | {:.0} req/s | {:.0} µs | {:.0} µs | — |",
            tiny.request_len(), tiny.response_len(), rps, p50.as_secs_f64() * 1e6, p99.as_secs_f64() * 1e6
        ));
        let me = std::process::id();
        pin(child.id(), "0")?;
        pin(me, "0")?;
        let pinned = load(&addr, tiny, 1, secs, false);
        pin(child.id(), &format!("0-{}", cores - 1))?;
        pin(me, &format!("0-{}", cores - 1))?;
        let (rps, p50, p99) = pinned?;
        rows.push(format!(
            "| {} | airlockd over HTTP, 1 concurrent client, binary, airlockd and client pinned to one vCPU (`taskset`) | {:.0} req/s | {:.0} µs | {:.0} µs | p50 overhead {:+.0} µs over raw |",
            tiny.name, rps, p50.as_secs_f64() * 1e6, p99.as_secs_f64() * 1e6, (p50.as_secs_f64() - tiny_raw_p50.as_secs_f64()) * 1e6
        ));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    match kserve_peer(&dir, tiny, secs) {
        Ok(results) => {
            for ((c, rps, p50, p99), (_, ours)) in results.into_iter().zip(&peer_rows) {
                rows.push(format!(
                    "| {} | KServe 0.21 Python server + onnxruntime, {c} concurrent client(s), JSON | {:.0} req/s | {:.0} µs | {:.0} µs | airlockd (JSON) does {:.1}× its req/s |",
                    tiny.name, rps, p50.as_secs_f64() * 1e6, p99.as_secs_f64() * 1e6, ours / rps
                ));
            }
        }
        Err(e) => rows.push(format!(
            "| {} | KServe peer not measured: {e} | | | | |",
            tiny.name
        )),
    }
    let table = format!(
        "Serving (`scripts/bench.sh serve`, {} s per row, {cores} cores, CPU provider, ONNX Runtime from {}; the load \
         generator runs on the same cores as airlockd; {}):\n\n\
         | model | setup | throughput | p50 | p99 | comparison |\n|---|---|---|---|---|---|\n{}\n",
        secs,
        lib.display(),
        time::OffsetDateTime::now_utc().date(),
        rows.join("\n")
    );
    println!("{table}");
    if let Some(doc) = doc {
        let text = std::fs::read_to_string(&doc).unwrap_or_default();
        let (start, end) = ("<!-- bench:serve -->", "<!-- /bench:serve -->");
        let new = match (text.find(start), text.find(end)) {
            (Some(s), Some(e)) => format!("{}{start}\n{table}{}", &text[..s], &text[e..]),
            _ => format!("{text}\n{start}\n{table}{end}\n"),
        };
        std::fs::write(&doc, new)?;
        eprintln!("wrote {}", doc.display());
    }
    Ok(())
}
