//! `airlock-bench`: the import benchmark of the bundle issue. Builds a signed bundle of the
//! requested size (default 2 GiB, incompressible-ish float weights), then in the same run and on
//! the same file times (a) `zstd -dc FILE | tee OUT | sha256sum; sync` and (b) a real import
//! (verify signatures, hash, write, fsync, rename into the store, record in sled) in a child
//! process whose peak RSS (VmHWM) it reports. Prints a table and writes it into
//! `docs/PERFORMANCE.md` between `<!-- bench:import -->` markers. Timing lives here, not in tests.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use airlock_config::{ByteSize, Config};
use airlock_signing::keys::{Sha256Digest, SigningContext};
use airlock_signing::manifest::{BundlePath, FileEntry, FileRole};
use airlock_signing::reader::SignatureFile;
use airlock_signing::writer::{manifest_json, BundleWriter};
use airlock_tests::fixtures::{self, Fixture, Keys};
use airlock_updater::{Actor, Updater};
use anyhow::{bail, Context};
use sha2::Digest as _;

/// Deterministic pseudo-random float32 weights (values in [-1, 1)), like a model's tensors.
struct Weights {
    state: u64,
    left: u64,
}

impl Read for Weights {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize & !3;
        let n = if n == 0 {
            (buf.len() as u64).min(self.left) as usize
        } else {
            n
        };
        for chunk in buf[..n].chunks_mut(4) {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            let v = (self.state >> 40) as f32 / (1u64 << 23) as f32 - 1.0;
            let b = v.to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn weights(size: u64) -> Weights {
    Weights {
        state: 0x2545_F491_4F6C_DD1D,
        left: size,
    }
}

fn build_bundle(dir: &Path, size: u64) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("bench-{size}.airlock"));
    if path.exists() {
        return Ok(path);
    }
    eprintln!(
        "building a {} bundle at {} ...",
        ByteSize(size),
        path.display()
    );
    let mut fx = Fixture::demo("bench", "1.0.0");
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut weights(size), &mut h)?;
    let entry = FileEntry {
        path: BundlePath::parse(b"model/weights.bin").map_err(anyhow::Error::msg)?,
        size,
        sha256: Sha256Digest(h.finalize().into()),
        role: FileRole::ExternalData,
    };
    fx.manifest.files.push(entry.clone());
    let m = manifest_json(&fx.manifest);
    let sigs = SignatureFile {
        signatures: [Keys::bundle(1), Keys::bundle(2)]
            .iter()
            .map(|k| k.sign(SigningContext::Manifest, &m))
            .collect(),
    };
    airlock_signing::writer::write_atomically(&path, |w| {
        let mut bw = BundleWriter::new(w, &m, &sigs, 3)?;
        for f in &fx.files {
            bw.add(
                &BundlePath::parse(f.path.as_bytes())
                    .map_err(|e| airlock_signing::Error::Input(e.to_string()))?,
                f.data.len() as u64,
                &f.data[..],
            )?;
        }
        bw.add(&entry.path, size, weights(size))?;
        bw.finish()?;
        Ok(())
    })?;
    Ok(path)
}

/// Child mode: import one bundle into a fresh data dir; print seconds and VmHWM (KiB).
fn child(data: &Path, root: &Path, bundle: &Path) -> anyhow::Result<()> {
    let mut c = Config::default();
    c.paths.data_dir = data.to_path_buf();
    c.bundles.reserve_free_space = ByteSize(0);
    let start = Instant::now();
    let u = Updater::open(&c)?;
    u.install_initial_trust_root(root)?;
    u.import_file(bundle, &Actor::new("bench")?)?;
    let secs = start.elapsed().as_secs_f64();
    let status = std::fs::read_to_string("/proc/self/status")?;
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0);
    println!("{secs} {hwm}");
    Ok(())
}

fn time_pipeline(bundle: &Path, out: &Path) -> anyhow::Result<f64> {
    let start = Instant::now();
    let st = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; zstd -q -dc '{}' | tee '{}' | sha256sum >/dev/null; sync",
            bundle.display(),
            out.display()
        ))
        .status()
        .context("running the zstd | tee | sha256sum pipeline (install zstd)")?;
    if !st.success() {
        bail!("the baseline pipeline failed");
    }
    Ok(start.elapsed().as_secs_f64())
}

fn time_import(dir: &Path, root: &Path, bundle: &Path) -> anyhow::Result<(f64, u64)> {
    let data = dir.join("data");
    let _ = std::fs::remove_dir_all(&data);
    let start = Instant::now();
    let out = Command::new(std::env::current_exe()?)
        .args([
            "child",
            &data.display().to_string(),
            &root.display().to_string(),
            &bundle.display().to_string(),
        ])
        .output()?;
    let wall = start.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("import failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace();
    let _inner: f64 = it.next().unwrap_or("0").parse()?;
    let hwm: u64 = it.next().unwrap_or("0").parse()?;
    std::fs::remove_dir_all(&data)?;
    Ok((wall, hwm))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("child") {
        return child(
            Path::new(&args[1]),
            Path::new(&args[2]),
            Path::new(&args[3]),
        );
    }
    let mut sizes = vec![2u64 << 30, 256 << 20];
    let mut runs = 3;
    let mut dir = PathBuf::from("target/bench");
    let mut doc = Some(PathBuf::from("docs/PERFORMANCE.md"));
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--size" => {
                let v: ByteSize =
                    toml::Value::String(it.next().context("--size VALUE")?.clone()).try_into()?;
                sizes = vec![v.0];
            }
            "--runs" => runs = it.next().context("--runs N")?.parse()?,
            "--dir" => dir = PathBuf::from(it.next().context("--dir DIR")?),
            "--no-doc" => doc = None,
            other => {
                bail!("unknown argument {other} (use --size 2GiB, --runs N, --dir DIR, --no-doc)")
            }
        }
    }
    std::fs::create_dir_all(&dir)?;
    let root = dir.join("root.json");
    std::fs::write(&root, fixtures::to_json(&fixtures::trust_root_v1()))?;
    let mut rows = Vec::new();
    for size in sizes {
        let bundle = build_bundle(&dir, size)?;
        let compressed = std::fs::metadata(&bundle)?.len();
        let (mut base, mut ours, mut hwm) = (vec![], vec![], 0u64);
        for i in 0..runs {
            eprintln!("run {}/{runs} for {} ...", i + 1, ByteSize(size));
            base.push(time_pipeline(&bundle, &dir.join("pipeline.out"))?);
            let _ = std::fs::remove_file(dir.join("pipeline.out"));
            let (t, h) = time_import(&dir, &root, &bundle)?;
            ours.push(t);
            hwm = hwm.max(h);
        }
        let (b, o) = (median(base), median(ours));
        let mib = size as f64 / (1u64 << 20) as f64;
        rows.push(format!(
            "| {} | {:.0} MiB | {:.2} s ({:.0} MiB/s) | {:.2} s ({:.0} MiB/s) | {:.2}× | {:.1} MiB |",
            ByteSize(size),
            compressed as f64 / (1u64 << 20) as f64,
            b,
            mib / b,
            o,
            mib / o,
            b / o,
            hwm as f64 / 1024.0
        ));
    }
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let table = format!(
        "Import of a signed bundle from a file (median of {runs} runs, warm page cache, same file for both; \
         {} cores, {cpu}; `scripts/bench.sh`, {}):\n\n\
         | payload | bundle on disk | `zstd -dc \\| tee \\| sha256sum; sync` | airlock import (verify + hash + write + fsync + store + registry) | ratio (goal ≥ 0.9×) | import peak RSS (goal < 64 MiB) |\n\
         |---|---|---|---|---|---|\n{}\n",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        time::OffsetDateTime::now_utc().date(),
        rows.join("\n")
    );
    println!("{table}");
    if let Some(doc) = doc {
        let text = std::fs::read_to_string(&doc).unwrap_or_default();
        let (start, end) = ("<!-- bench:import -->", "<!-- /bench:import -->");
        let new = match (text.find(start), text.find(end)) {
            (Some(s), Some(e)) => format!("{}{start}\n{table}{}", &text[..s], &text[e..]),
            _ => format!("{text}\n{start}\n{table}{end}\n"),
        };
        std::fs::File::create(&doc)?.write_all(new.as_bytes())?;
        eprintln!("wrote {}", doc.display());
    }
    Ok(())
}
