//! `airlock-serve-bench`: the serving benchmark. In one run, with the same ONNX Runtime library
//! and models, it measures raw in-process ONNX Runtime and the real `airlockd` fed over HTTP
//! (keep-alive, binary tensor extension, fixed concurrency) by its own load generator, for a
//! compute-bound model (4 × 1024×1024 MatMul+ReLU) and a tiny one (16→16 MatMul+ReLU, x [4,16]).
//! Prints a table and writes it into `docs/PERFORMANCE.md` between `<!-- bench:serve -->` markers.
//! It also measures airlockd's CPU per request (`/proc/PID/stat`) under wrk (HTTP) and h2load (gRPC)
//! at 1, 8 and 64 connections, and the compute-bound model under wrk (`<!-- bench:cpu -->`).
//! Usage: `airlock-serve-bench [--seconds N] [--airlockd PATH] [--no-doc] [--cpu-only]` (run from the repo root);
//! for tuning, `--only MODEL` measures one model's rows and `--mlp-settings 'k = v;…'` replaces the
//! compute-bound model's `[models."bench-mlp"]` settings (neither writes the document).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use airlock_tests::bench::{cpu_of, ort_library, write_block};
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

/// A child's CPU time, read every 20 ms until it exits (the last reading, taken just before it
/// is reaped by `wait_with_output`, arrives on the channel).
fn watch_cpu(pid: u32) -> std::sync::mpsc::Receiver<Duration> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut last = Duration::ZERO;
        while let Ok(t) = cpu_of(pid) {
            last = t;
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = tx.send(last);
    });
    rx
}

/// `inference_count` of `model` (what the engine really answered), from its statistics.
fn answered(addr: &str, model: &str) -> anyhow::Result<u64> {
    let (_, _, body) =
        airlock_tests::http(addr, "GET", &format!("/v2/models/{model}/stats"), &[], b"");
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    v["model_stats"][0]["inference_count"]
        .as_u64()
        .context("inference_count")
}

/// The tiny model's request as wrk (HTTP, binary extension) and h2load (gRPC, one length-prefixed
/// `ModelInferRequest` with raw contents) send it: (wrk Lua script, gRPC body file).
fn cpu_bodies(dir: &Path, m: &BenchModel) -> anyhow::Result<(PathBuf, PathBuf)> {
    let raw: Vec<u8> = vec![0.5f32; (m.rows as i64 * m.in_dim) as usize]
        .iter()
        .flat_map(|f| f.to_le_bytes())
        .collect();
    let head = serde_json::to_vec(&serde_json::json!({
        "inputs": [{ "name": "x", "datatype": "FP32", "shape": [m.rows, m.in_dim], "parameters": { "binary_data_size": raw.len() } }],
        "outputs": [{ "name": "y", "parameters": { "binary_data": true } }],
    }))?;
    let body = dir.join(format!("{}.http", m.name));
    std::fs::write(&body, [head.clone(), raw.clone()].concat())?;
    let lua = dir.join(format!("{}.lua", m.name));
    std::fs::write(
        &lua,
        format!(
            "local f = io.open(\"{}\", \"rb\")\nwrk.method = \"POST\"\nwrk.body = f:read(\"*a\")\nf:close()\n\
             wrk.headers[\"Inference-Header-Content-Length\"] = \"{}\"\nwrk.headers[\"Content-Type\"] = \"application/octet-stream\"\n",
            body.display(),
            head.len()
        ),
    )?;
    // ModelInferRequest { model_name = 1, inputs = 5 { name = 1, datatype = 2, shape = 3 }, raw_input_contents = 7 }.
    fn varint(out: &mut Vec<u8>, mut n: u64) {
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(b);
                break;
            }
            out.push(b | 0x80);
        }
    }
    fn field(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
        out.push(tag << 3 | 2);
        varint(out, bytes.len() as u64);
        out.extend_from_slice(bytes);
    }
    let mut input = Vec::new();
    field(&mut input, 1, b"x");
    field(&mut input, 2, b"FP32");
    let mut shape = Vec::new();
    for d in [m.rows, m.in_dim as u64] {
        varint(&mut shape, d);
    }
    field(&mut input, 3, &shape);
    let mut msg = Vec::new();
    field(&mut msg, 1, m.name.as_bytes());
    field(&mut msg, 5, &input);
    field(&mut msg, 7, &raw);
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    framed.extend_from_slice(&msg);
    let grpc = dir.join(format!("{}.grpc", m.name));
    std::fs::write(&grpc, framed)?;
    Ok((lua, grpc))
}

/// One CPU row: `tool` (wrk or h2load) at `c` connections for `secs` against airlockd `pid`;
/// (requests the engine answered, their rate, airlockd CPU per request, the client's CPU per
/// request). `pinned`: airlockd's threads on the last core and the client on core 0 for the
/// run (on two cores, sharing them inflates both sides' CPU by cache and preemption: the
/// unpinned figure is what a co-located client costs, the pinned one what the server does).
#[allow(clippy::too_many_arguments)]
fn cpu_row(
    pid: u32,
    http_addr: &str,
    grpc_addr: &str,
    m: &BenchModel,
    lua: &Path,
    grpc_body: &Path,
    grpc: bool,
    c: usize,
    secs: f64,
    pinned: Option<usize>,
) -> anyhow::Result<(u64, f64, Duration, Duration)> {
    let threads = if pinned.is_some() { 1 } else { c.min(2) }.to_string();
    let tool = |name: &str| match pinned {
        Some(_) => {
            let mut cmd = Command::new("taskset");
            cmd.args(["-c", "0", name]);
            cmd
        }
        None => Command::new(name),
    };
    let mut cmd = if grpc {
        let mut cmd = tool("h2load");
        cmd.args(["-c", &c.to_string(), "-m", "1", "-t", &threads, "-D"])
            .arg(format!("{}", secs.ceil() as u64))
            .arg("-d")
            .arg(grpc_body)
            .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
            .arg(format!(
                "http://{grpc_addr}/inference.GRPCInferenceService/ModelInfer"
            ));
        cmd
    } else {
        let mut cmd = tool("wrk");
        cmd.args(["-c", &c.to_string(), "-t", &threads, "-d"])
            .arg(format!("{}s", secs.ceil() as u64))
            .arg("-s")
            .arg(lua)
            .arg(format!("http://{http_addr}/v2/models/{}/infer", m.name));
        cmd
    };
    // airlockd's affinity is restored whatever the run's outcome (to every core, as the bench
    // started it).
    if let Some(cores) = pinned {
        pin(pid, &(cores - 1).to_string())?;
    }
    let mut run = || -> anyhow::Result<_> {
        let before = answered(http_addr, m.name)?;
        let cpu0 = cpu_of(pid)?;
        let start = Instant::now();
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("wrk / h2load (apt install wrk nghttp2-client)")?;
        let rx = watch_cpu(child.id());
        let out = child.wait_with_output()?;
        let elapsed = start.elapsed();
        let cpu = cpu_of(pid)? - cpu0;
        let after = answered(http_addr, m.name)?;
        Ok((out, elapsed, cpu, before, after, rx))
    };
    let result = run();
    if let Some(cores) = pinned {
        pin(pid, &format!("0-{}", cores - 1))?;
    }
    let (out, elapsed, cpu, before, after, rx) = result?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr));
    }
    let n = after - before;
    let client_cpu = rx.recv_timeout(Duration::from_secs(2)).unwrap_or_default();
    let per = |d: Duration| d / (n.max(1) as u32);
    Ok((
        n,
        n as f64 / elapsed.as_secs_f64(),
        per(cpu),
        per(client_cpu),
    ))
}

/// wrk's `--latency` percentile `pct` ("50%"), e.g. `   50%   61.00us`.
fn wrk_percentile(out: &str, pct: &str) -> Option<Duration> {
    let v = out
        .lines()
        .find_map(|l| l.trim().strip_prefix(pct))?
        .trim()
        .to_string();
    let (num, scale) = [("us", 1e-6), ("ms", 1e-3), ("s", 1.0)]
        .iter()
        .find_map(|(u, k)| v.strip_suffix(u).map(|n| (n.to_string(), *k)))?;
    Some(Duration::from_secs_f64(num.parse::<f64>().ok()? * scale))
}

/// What the load generator itself costs: the same tiny-model request from this bench's own
/// client (a blocking thread per connection, in this process) and from wrk (one epoll thread),
/// against the same airlockd: (client, connections, req/s, p50, client CPU / request, airlockd
/// CPU / request).
fn client_rows(
    pid: u32,
    addr: &str,
    m: &BenchModel,
    lua: &Path,
    secs: f64,
) -> anyhow::Result<Vec<String>> {
    let mut rows = Vec::new();
    let me = std::process::id();
    for c in [1usize, 8] {
        let (before, cpu0, me0) = (answered(addr, m.name)?, cpu_of(pid)?, cpu_of(me)?);
        let (rps, p50, _) = load(addr, m, c, secs, false)?;
        let (cpu, mine) = (cpu_of(pid)? - cpu0, cpu_of(me)? - me0);
        let n = answered(addr, m.name)? - before;
        let per = |d: Duration| d.as_secs_f64() * 1e6 / n.max(1) as f64;
        rows.push(format!(
            "| this bench's client (a blocking thread per connection) | {c} | {rps:.0} | {:.0} µs | {:.1} µs | {:.1} µs |",
            p50.as_secs_f64() * 1e6,
            per(mine),
            per(cpu)
        ));
        let (before, cpu0) = (answered(addr, m.name)?, cpu_of(pid)?);
        let start = Instant::now();
        let child = Command::new("wrk")
            .args(["--latency", "-t1", "-c", &c.to_string(), "-d"])
            .arg(format!("{}s", secs.ceil() as u64))
            .arg("-s")
            .arg(lua)
            .arg(format!("http://{addr}/v2/models/{}/infer", m.name))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("wrk (apt install wrk)")?;
        let rx = watch_cpu(child.id());
        let out = child.wait_with_output()?;
        let elapsed = start.elapsed();
        let cpu = cpu_of(pid)? - cpu0;
        let n = answered(addr, m.name)? - before;
        let text = String::from_utf8_lossy(&out.stdout);
        let p50 = wrk_percentile(&text, "50%").context("wrk --latency: no 50% line")?;
        let wrk_cpu = rx.recv_timeout(Duration::from_secs(2)).unwrap_or_default();
        let per = |d: Duration| d.as_secs_f64() * 1e6 / n.max(1) as f64;
        rows.push(format!(
            "| wrk (one epoll thread) | {c} | {:.0} | {:.0} µs | {:.1} µs | {:.1} µs |",
            n as f64 / elapsed.as_secs_f64(),
            p50.as_secs_f64() * 1e6,
            per(wrk_cpu),
            per(cpu)
        ));
    }
    Ok(rows)
}

fn main() -> anyhow::Result<()> {
    let mut secs = 5.0;
    let mut airlockd = PathBuf::from("target/release/airlockd");
    let mut doc = Some(PathBuf::from("docs/PERFORMANCE.md"));
    let mut only: Option<String> = None;
    let mut cpu_only = false;
    let mut mlp_settings = MLP_SETTINGS.to_string();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => secs = it.next().context("--seconds N")?.parse()?,
            "--airlockd" => airlockd = PathBuf::from(it.next().context("--airlockd PATH")?),
            "--no-doc" => doc = None,
            "--only" => only = Some(it.next().context("--only MODEL")?.clone()),
            "--cpu-only" => cpu_only = true,
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
    let (addr, grpc_addr) = loop {
        let Some(Ok(l)) = lines.next() else {
            bail!("airlockd exited before it was ready")
        };
        if l.contains("ready: serving") {
            let field = |k: &str| {
                l.split(k)
                    .nth(1)
                    .unwrap_or("")
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_string()
            };
            break (field(" listen="), field(" grpc="));
        }
    };
    std::thread::spawn(move || for _ in lines.by_ref() {});
    // airlockd's CPU per request, read from /proc over a run of a C load generator (wrk for
    // HTTP/1.1, h2load for gRPC): the figure this noisy VM reproduces where latency does not.
    let mut cpu_rows = Vec::new();
    {
        let tiny = &MODELS[1];
        let (lua, grpc_body) = cpu_bodies(&dir, tiny)?;
        for grpc in [false, true] {
            for c in [1usize, 8, 64] {
                let run = |pinned| {
                    cpu_row(
                        child.id(),
                        &addr,
                        &grpc_addr,
                        tiny,
                        &lua,
                        &grpc_body,
                        grpc,
                        c,
                        secs,
                        pinned,
                    )
                };
                let (n, rps, per, client) = run(None)?;
                let pinned = if cores >= 2 {
                    let (_, _, p, _) = run(Some(cores))?;
                    format!("{:.1} µs", p.as_secs_f64() * 1e6)
                } else {
                    "–".into()
                };
                cpu_rows.push(format!(
                    "| {} | {} | {c} | {n} | {rps:.0} | {:.1} µs | {:.1} µs | {pinned} |",
                    tiny.name,
                    if grpc {
                        "gRPC (h2load)"
                    } else {
                        "HTTP/1.1, binary (wrk)"
                    },
                    per.as_secs_f64() * 1e6,
                    client.as_secs_f64() * 1e6
                ));
            }
        }
        let mlp = &MODELS[0];
        let (lua, grpc_body) = cpu_bodies(&dir, mlp)?;
        let (n, rps, per, client) = cpu_row(
            child.id(),
            &addr,
            &grpc_addr,
            mlp,
            &lua,
            &grpc_body,
            false,
            32,
            secs,
            None,
        )?;
        cpu_rows.push(format!(
            "| {} | HTTP/1.1, binary (wrk), 1 row per request | 32 | {n} | {rps:.0} rows/s | {:.1} µs | {:.1} µs | – |",
            mlp.name,
            per.as_secs_f64() * 1e6,
            client.as_secs_f64() * 1e6
        ));
    }
    let cpu_table = format!(
        "Server CPU per request (`scripts/bench.sh serve`, {secs} s per row, {cores} cores; requests counted by the engine's \
         statistics, CPU from `/proc/PID/stat` of airlockd and of the load generator; \
         pinned apart: the same run with airlockd's threads on the last core and a one-thread client on core 0; {}):\n\n\
         | model | protocol (client) | connections | answered | req/s | airlockd CPU / request | client CPU / request | airlockd CPU / request, pinned apart |\n|---|---|---|---|---|---|---|---|\n{}\n",
        time::OffsetDateTime::now_utc().date(),
        cpu_rows.join("\n")
    );
    println!("{cpu_table}");
    let client_table = {
        let tiny = &MODELS[1];
        let (lua, _) = cpu_bodies(&dir, tiny)?;
        format!(
            "What the load generator costs (`scripts/bench.sh serve`, {secs} s per row, {cores} cores, bench-tiny, \
             binary extension, the same airlockd; CPU from `/proc/PID/stat`, requests counted by the engine; {}):\n\n\
             | client | connections | req/s | p50 | client CPU / request | airlockd CPU / request |\n|---|---|---|---|---|---|\n{}\n",
            time::OffsetDateTime::now_utc().date(),
            client_rows(child.id(), &addr, tiny, &lua, secs)?.join("\n")
        )
    };
    println!("{client_table}");
    if cpu_only {
        if let Some(doc) = &doc {
            write_block(doc, "cpu", &cpu_table)?;
            write_block(doc, "client", &client_table)?;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let _ = child.wait();
        return Ok(());
    }
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
        write_block(&doc, "serve", &table)?;
        write_block(&doc, "cpu", &cpu_table)?;
        write_block(&doc, "client", &client_table)?;
    }
    Ok(())
}
