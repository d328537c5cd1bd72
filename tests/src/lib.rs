//! Test support for airlock's end-to-end tests: deterministic keys and trust roots, the demo
//! model with golden vectors, a raw bundle writer that can produce every malformed or hostile
//! bundle the reader must refuse, and helpers to run the real binaries.
//!
//! Invariant: fixtures are generated in code at test time; nothing here fakes a component — the
//! bundles are real zstd/tar streams and the keys real Ed25519 keys.
#![deny(missing_docs)]

pub mod fixtures;

use std::path::PathBuf;
use std::process::Command;

/// The path of a workspace binary, building it if it is not there yet.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .to_path_buf();
    let path = dir.join(name);
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--bin", name])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build --bin {name} failed");
    }
    path
}

/// Runs a binary and returns (exit code, stdout, stderr).
pub fn run(name: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin(name))
        .args(args)
        .output()
        .expect("spawn binary");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A running `airlockd --dev` on an ephemeral loopback port, in its own scratch directory.
/// Its log is collected (for the no-secrets checks); dropping it stops the daemon with SIGTERM.
pub struct DevServer {
    child: std::process::Child,
    /// `IP:PORT` it listens on.
    pub addr: String,
    /// `IP:PORT` its gRPC listener is on (`off` when it serves none).
    pub grpc: String,
    /// The scratch directory (holds `airlock-dev/`).
    pub dir: tempfile::TempDir,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl DevServer {
    /// Starts `airlockd --dev` with an optional config file body and extra environment.
    pub fn start(config: Option<&str>, env: &[(&str, &str)]) -> DevServer {
        let dir = tempfile::tempdir().expect("tmp");
        let mut args = vec!["--dev".to_string(), "--listen".into(), "127.0.0.1:0".into()];
        if let Some(c) = config {
            let p = dir.path().join("airlockd.toml");
            std::fs::write(&p, c).expect("write config");
            args.extend(["--config".to_string(), p.display().to_string()]);
        }
        Self::spawn(dir, &args, env)
    }

    /// Starts `airlockd ARGS` in `dir` and waits until it serves. Unless ARGS name one, the
    /// gRPC listener is on an ephemeral loopback port (tests run side by side).
    pub fn spawn(dir: tempfile::TempDir, args: &[String], env: &[(&str, &str)]) -> DevServer {
        use std::io::BufRead;
        let mut cmd = Command::new(bin("airlockd"));
        cmd.args(args).current_dir(dir.path());
        if !args.iter().any(|a| a == "--grpc-listen") {
            cmd.args(["--grpc-listen", "127.0.0.1:0"]);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn airlockd");
        let stderr = child.stderr.take().expect("stderr");
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                // Logged first, so that a test that saw "ready" also finds the line in log().
                let field = |key: &str| {
                    line.split(key)
                        .nth(1)
                        .map(|a| a.split_whitespace().next().unwrap_or("").to_string())
                };
                let addr = field(" listen=")
                    .filter(|_| line.contains("ready: serving"))
                    .map(|a| (a, field(" grpc=").unwrap_or_else(|| "off".into())));
                sink.lock().expect("log").push(line);
                if let Some(addr) = addr {
                    let _ = tx.send(addr);
                }
            }
        });
        let (addr, grpc) = match rx.recv_timeout(std::time::Duration::from_secs(60)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "airlockd --dev did not become ready: {:?}",
                    log.lock().expect("log")
                );
            }
        };
        DevServer {
            child,
            addr,
            grpc,
            dir,
            log,
        }
    }

    /// Everything the daemon logged so far.
    pub fn log(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }

    /// The daemon's process id (for signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Kills the daemon with SIGKILL (a crash or power cut) and hands back its directory, so
    /// that the next daemon can start over the same state.
    pub fn kill(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tmp"))
    }

    /// Stops the daemon with SIGTERM and returns whether it exited cleanly.
    pub fn stop(mut self) -> bool {
        self.terminate()
    }

    /// Stops the daemon with SIGTERM; whether it exited cleanly, and everything it logged.
    pub fn stop_with_log(mut self) -> (bool, String) {
        let clean = self.terminate();
        // The log reader ends with the process's stderr; give it a moment to take the rest.
        std::thread::sleep(std::time::Duration::from_millis(200));
        (clean, self.log())
    }

    fn terminate(&mut self) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_secs(20) {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
    }
}

/// A raw HTTP/1.1 exchange over a fresh connection (`Connection: close`): what clients really
/// send, byte for byte. Returns (status, lower-cased headers, body).
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .expect("timeout");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("write head");
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_response(&raw)
}

/// Parses a complete HTTP/1.1 response (Content-Length or chunked body).
pub fn parse_response(raw: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        let mut out = Vec::new();
        let mut rest = &body[..];
        while let Some(p) = rest.windows(2).position(|w| w == b"\r\n") {
            let n =
                usize::from_str_radix(String::from_utf8_lossy(&rest[..p]).trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.extend_from_slice(&rest[p + 2..p + 2 + n]);
            rest = &rest[p + 2 + n + 2..];
        }
        body = out;
    }
    (status, headers, body)
}

/// The value of a header in a parsed response.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The Python interpreter of the test virtual environment that `scripts/setup.sh` creates.
pub fn venv_python() -> PathBuf {
    setup_file("venv/bin/python")
}

/// A file `scripts/setup.sh` put under `$XDG_CACHE_HOME/airlock` (default `~/.cache`).
fn setup_file(rel: &str) -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache"));
    let p = base.join("airlock").join(rel);
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup.sh (the test command does)",
        p.display()
    );
    p
}

/// The ONNX Runtime library `scripts/setup.sh` unpacked into the per-user cache.
pub fn ort_library() -> PathBuf {
    setup_file("onnxruntime/1.31.1/libonnxruntime.so.1.31.1")
}

/// A fresh scratch directory in which `airlockd --dev --once` bootstrapped a dev appliance
/// (dev trust root, the demo model validated with the default CPU settings and active).
pub fn bootstrapped_dev_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tmp");
    let out = Command::new(bin("airlockd"))
        .args(["--dev", "--once"])
        .current_dir(dir.path())
        .output()
        .expect("bootstrap");
    assert!(
        out.status.success(),
        "airlockd --dev --once failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// Brings a model into a dev appliance's data dir (as `airlockd --dev --once` left it) through
/// the real pipeline: a bundle signed with the dev bundle key, imported, validated against its
/// contract, approved by the unattended-dev policy, promoted. The daemon must not be running.
pub fn install_dev_model(
    data_dir: &std::path::Path,
    name: &str,
    model_onnx: &[u8],
) -> anyhow::Result<()> {
    use airlock_signing::manifest::ModelName;
    use airlock_signing::writer::{plan, write_plan, CreateOptions};
    let key = airlock_signing::PrivateKey::read(&data_dir.join("dev/dev-bundle.key"))?;
    let mut c = airlock_config::Config::default();
    c.paths.data_dir = data_dir.to_path_buf();
    c.paths.initial_trust_root = data_dir.join("dev/root.json");
    c.approval.mode = airlock_config::ApprovalMode::UnattendedDev;
    c.bundles.reserve_free_space = airlock_config::ByteSize(0);
    let u = airlock_updater::Updater::open(&c)?;
    if u.registry().model(name)?.and_then(|m| m.active).is_some() {
        return Ok(());
    }
    let src = data_dir.join("src").join(name);
    std::fs::create_dir_all(&src)?;
    std::fs::write(src.join("model.onnx"), model_onnx)?;
    let opts = CreateOptions::new(
        ModelName::parse(name).map_err(anyhow::Error::msg)?,
        semver::Version::new(1, 0, 0),
        time::Duration::days(30),
    )?;
    let p = plan(&src.join("model.onnx"), &[], None, &opts)?;
    let bundle = src.join(p.manifest.bundle_file_name());
    write_plan(&p, std::slice::from_ref(&key), &bundle, 3)?;
    let me = airlock_updater::Actor::new("test")?;
    u.import_file(&bundle, &me)?;
    let v = semver::Version::new(1, 0, 0);
    u.validate(
        name,
        &v,
        &airlock_updater::validate::ContractValidator,
        &airlock_updater::Actor::system(),
    )?;
    u.registry().begin_promotion(u.now()?, name, &v, &me)?;
    u.registry().complete_promotion(u.now()?, name, &me)?;
    Ok(())
}

/// The first output of the iris bundles below for `value` (what a version answers).
pub fn iris_answer(value: f32) -> f32 {
    airlock_signing::onnx::linear_classifier_eval(
        &[0f32; 12],
        &[value, 0.0, 0.0],
        &[5.1, 3.5, 1.4, 0.2],
    )[0]
}

/// A signed bundle of `demo-iris` VERSION that answers [`iris_answer`]`(value)` (zero weights,
/// bias `[value, 0, 0]`, softmax), with one golden vector; `off_by` shifts the expected outputs (a model that misses
/// its golden vectors when it exceeds the tolerance). Signed with the dev bundle key of the dev
/// appliance at `data_dir`; written under `data_dir/../bundles/`.
pub fn iris_bundle(
    data_dir: &std::path::Path,
    version: &str,
    value: f32,
    off_by: f32,
) -> anyhow::Result<PathBuf> {
    use airlock_signing::manifest::{DType, ModelName};
    use airlock_signing::onnx::{linear_classifier, linear_classifier_eval};
    use airlock_signing::writer::{plan, write_plan, CreateOptions};
    let key = airlock_signing::PrivateKey::read(&data_dir.join("dev/dev-bundle.key"))?;
    let (w, b) = ([0f32; 12], [value, 0.0, 0.0]);
    let x = [5.1f32, 3.5, 1.4, 0.2];
    let y: Vec<f32> = linear_classifier_eval(&w, &b, &x)
        .into_iter()
        .map(|v| v + off_by)
        .collect();
    let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let root = data_dir
        .parent()
        .unwrap_or(data_dir)
        .join("bundles")
        .join(format!("src-{version}-{off_by}"));
    std::fs::create_dir_all(root.join("vectors/case-1/inputs"))?;
    std::fs::create_dir_all(root.join("vectors/case-1/expected"))?;
    std::fs::write(root.join("model.onnx"), linear_classifier(&w, &b))?;
    std::fs::write(
        root.join("vectors/case-1/inputs/x.npy"),
        airlock_signing::npy::encode(DType::Float32, 0, &[1, 4], &f32s(&x))?,
    )?;
    std::fs::write(
        root.join("vectors/case-1/expected/y.npy"),
        airlock_signing::npy::encode(DType::Float32, 0, &[1, 3], &f32s(&y))?,
    )?;
    let opts = CreateOptions::new(
        ModelName::parse("demo-iris").map_err(anyhow::Error::msg)?,
        semver::Version::parse(version)?,
        time::Duration::days(30),
    )?;
    let p = plan(
        &root.join("model.onnx"),
        &[],
        Some(&root.join("vectors")),
        &opts,
    )?;
    let bundle = root.join(p.manifest.bundle_file_name());
    write_plan(&p, std::slice::from_ref(&key), &bundle, 3)?;
    Ok(bundle)
}

/// Runs `airlockctl --socket SOCKET ARGS` as `uid` (its own group, no supplementary groups;
/// `None`: as this process). Returns (exit code, stdout, stderr).
pub fn airlockctl_as(
    uid: Option<u32>,
    socket: &std::path::Path,
    args: &[&str],
) -> (i32, String, String) {
    let mut cmd = match uid {
        Some(u) => {
            let mut c = Command::new("setpriv");
            c.args([
                format!("--reuid={u}"),
                format!("--regid={u}"),
                "--clear-groups".into(),
            ])
            .arg(bin("airlockctl"));
            c
        }
        None => Command::new(bin("airlockctl")),
    };
    let out = cmd
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("run airlockctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A production-mode daemon over a data dir that `--dev --once` bootstrapped (the demo
/// classifier, demo-iris 1.0.0, active), with `[admin.roles]` from `roles`
/// (`("uid:1001", "operator")`), `approval` as the `[approval]` section's body (e.g.
/// `mode = "approvers"\napprovers = 2`), the admin socket world-
/// connectable (roles decide), and `extra` TOML appended. Returns the server, the socket and
/// an inference token (scope `model:*`, created through the socket as root).
pub fn production_server(
    roles: &[(&str, &str)],
    approval: &str,
    extra: &str,
    env: &[(&str, &str)],
) -> (DevServer, PathBuf, String) {
    production_server_with(roles, approval, extra, "", "", env)
}

/// [`production_server`] with more keys for `[server]` and `[admin]` (TOML lines).
pub fn production_server_with(
    roles: &[(&str, &str)],
    approval: &str,
    extra: &str,
    server: &str,
    admin: &str,
    env: &[(&str, &str)],
) -> (DevServer, PathBuf, String) {
    production_server_in(
        bootstrapped_dev_dir(),
        roles,
        approval,
        extra,
        server,
        admin,
        env,
    )
}

/// [`production_server_with`] over `dir`, a scratch directory that holds a data dir
/// `airlock-dev/` as [`bootstrapped_dev_dir`] made it (and the test changed since).
pub fn production_server_in(
    dir: tempfile::TempDir,
    roles: &[(&str, &str)],
    approval: &str,
    extra: &str,
    server: &str,
    admin: &str,
    env: &[(&str, &str)],
) -> (DevServer, PathBuf, String) {
    // Other uids must reach the socket: the scratch dir is 0700 by default.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let d = dir.path().display().to_string();
    let socket = dir.path().join("run/admin.sock");
    let table: String = roles
        .iter()
        .map(|(k, v)| format!("\"{k}\" = \"{v}\"\n"))
        .collect();
    let config = format!(
        "[paths]\ndata_dir = \"{d}/airlock-dev\"\ninitial_trust_root = \"{d}/airlock-dev/dev/root.json\"\n\
         [approval]\n{approval}\n\
         [server]\nlisten = \"127.0.0.1:0\"\ntls = false\n{server}\n[grpc]\nlisten = \"127.0.0.1:0\"\n[logging]\ndir = \"{d}/logs\"\n\
         [bundles]\nreserve_free_space = \"1MiB\"\n\
         [daemon]\nallow_root = true\n{extra}\n\
         [admin]\nsocket = \"{}\"\nsocket_mode = 0o666\n{admin}\n[admin.roles]\n{table}",
        socket.display()
    );
    std::fs::write(dir.path().join("prod.toml"), config).expect("config");
    let args = vec!["--config".to_string(), format!("{d}/prod.toml")];
    let server = DevServer::spawn(dir, &args, env);
    let (code, out, err) = airlockctl_as(
        None,
        &socket,
        &[
            "--json", "token", "create", "--name", "tests", "--scope", "model:*",
        ],
    );
    assert_eq!(code, 0, "token create: {err}");
    let token = serde_json::from_str::<serde_json::Value>(&out).expect("json")["token"]
        .as_str()
        .expect("token")
        .to_string();
    (server, socket, token)
}

/// The audit records (the first 1000, oldest first), read as root through
/// `airlockctl --json audit list`.
pub fn audit_log(socket: &std::path::Path) -> Vec<serde_json::Value> {
    let (code, out, err) = airlockctl_as(
        None,
        socket,
        &["--json", "audit", "list", "--limit", "1000"],
    );
    assert_eq!(code, 0, "audit list: {err}");
    serde_json::from_str::<serde_json::Value>(&out).expect("json")["records"]
        .as_array()
        .expect("records")
        .clone()
}

/// Restarts a production daemon (as [`production_server`] configured it) over `dir`.
pub fn restart_production(dir: tempfile::TempDir, env: &[(&str, &str)]) -> DevServer {
    let args = vec![
        "--config".to_string(),
        dir.path().join("prod.toml").display().to_string(),
    ];
    DevServer::spawn(dir, &args, env)
}

/// `POST /v2/models/demo-iris/infer` with one row (`token`: a bearer token, `""` for none); returns (status, model_version, first output
/// value) — the iris bundles above answer their `value` everywhere.
pub fn iris_infer(addr: &str, token: &str) -> (u16, String, f32) {
    let body =
        br#"{"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"data":[5.1,3.5,1.4,0.2]}]}"#;
    let auth = format!("Bearer {token}");
    let headers: &[(&str, &str)] = if token.is_empty() {
        &[]
    } else {
        &[("Authorization", auth.as_str())]
    };
    let Ok((status, _, resp)) = std::panic::catch_unwind(|| {
        http(addr, "POST", "/v2/models/demo-iris/infer", headers, body)
    }) else {
        return (0, String::new(), f32::NAN);
    };
    let v: serde_json::Value = serde_json::from_slice(&resp).unwrap_or_default();
    (
        status,
        v["model_version"].as_str().unwrap_or("").to_string(),
        v["outputs"][0]["data"][0].as_f64().unwrap_or(f64::NAN) as f32,
    )
}

/// A signed bundle of `demo-iris` VERSION around `model` (no golden vectors; `cuda`: its manifest
/// requires the CUDA execution provider), signed with the dev bundle key of the dev appliance at
/// `data_dir`, written under `data_dir/../bundles/`.
pub fn model_bundle(
    data_dir: &std::path::Path,
    version: &str,
    model: &[u8],
    cuda: bool,
) -> anyhow::Result<PathBuf> {
    named_model_bundle(data_dir, "demo-iris", version, model, cuda)
}

/// [`model_bundle`] for a model called `name`.
pub fn named_model_bundle(
    data_dir: &std::path::Path,
    name: &str,
    version: &str,
    model: &[u8],
    cuda: bool,
) -> anyhow::Result<PathBuf> {
    let root = data_dir
        .parent()
        .unwrap_or(data_dir)
        .join("bundles")
        .join(format!("model-{name}-{version}"));
    std::fs::create_dir_all(&root)?;
    std::fs::write(root.join("model.onnx"), model)?;
    dev_signed_bundle(data_dir, name, version, &root, |opts| {
        if cuda {
            opts.hardware.execution_provider = airlock_signing::manifest::ExecutionProvider::Cuda;
        }
    })
}

/// Builds and signs, with the dev bundle key of the dev appliance at `data_dir`, the bundle of
/// `name` `version` from `root/model.onnx` (and `root/vectors/` when it exists), valid 30 days
/// unless `edit` changes the options; written into `root`.
pub fn dev_signed_bundle(
    data_dir: &std::path::Path,
    name: &str,
    version: &str,
    root: &std::path::Path,
    edit: impl FnOnce(&mut airlock_signing::writer::CreateOptions),
) -> anyhow::Result<PathBuf> {
    use airlock_signing::manifest::ModelName;
    use airlock_signing::writer::{plan, write_plan, CreateOptions};
    let key = airlock_signing::PrivateKey::read(&data_dir.join("dev/dev-bundle.key"))?;
    let mut opts = CreateOptions::new(
        ModelName::parse(name).map_err(anyhow::Error::msg)?,
        semver::Version::parse(version)?,
        time::Duration::days(30),
    )?;
    edit(&mut opts);
    let vectors = root.join("vectors");
    let p = plan(
        &root.join("model.onnx"),
        &[],
        vectors.is_dir().then_some(vectors.as_path()),
        &opts,
    )?;
    let bundle = root.join(p.manifest.bundle_file_name());
    write_plan(&p, std::slice::from_ref(&key), &bundle, 3)?;
    Ok(bundle)
}

/// A private `dbus-daemon` with the system bus's default-deny policy and the shipped airlock
/// policy (`packaging/org.airlock.Daemon1.conf`); stopped when dropped.
pub struct Bus {
    child: std::process::Child,
    /// The bus address (`unix:path=…`), for `DBUS_SYSTEM_BUS_ADDRESS` and `--address`.
    pub address: String,
    _dir: tempfile::TempDir,
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `extra` is more policy XML inside `<busconfig>` (e.g. who may own a stand-in's name).
pub fn private_system_bus(extra: &str) -> Bus {
    let dir = tempfile::tempdir().expect("bus set-up");
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("bus set-up");
    let policy = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../packaging/org.airlock.Daemon1.conf");
    let sock = dir.path().join("system_bus_socket");
    let conf = dir.path().join("bus.conf");
    std::fs::write(
        &conf,
        format!(
            r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN" "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Monitoring"/>
  </policy>
  <include>{}</include>
  {extra}
</busconfig>
"#,
            sock.display(),
            policy.display()
        ),
    )
    .expect("bus set-up");
    let child = std::process::Command::new("dbus-daemon")
        .arg(format!("--config-file={}", conf.display()))
        .arg("--nofork")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("dbus-daemon (Debian package dbus)");
    let start = std::time::Instant::now();
    while !sock.exists() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "the bus never came up"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Bus {
        child,
        address: format!("unix:path={}", sock.display()),
        _dir: dir,
    }
}

/// Lets other uids read a bundle made under a scratch directory (`…/bundles/<src>/FILE`): the
/// file 0644 and its two parent directories 0755. Returns the path as a string for argv.
pub fn world_readable(file: &std::path::Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let dir = file.parent().expect("a bundle's directory");
    for (p, mode) in [
        (dir.parent().expect("bundles/"), 0o755),
        (dir, 0o755),
        (file, 0o644),
    ] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    file.display().to_string()
}

/// Polls `f` every 20 ms until it holds; fails after 20 s naming `what`.
pub fn wait_until(what: &str, f: impl Fn() -> bool) {
    let start = std::time::Instant::now();
    while !f() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// What the bench commands share (`airlock-serve-bench`, `airlock-telemetry-bench`).
pub mod bench {
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use anyhow::{bail, Context};

    /// The ONNX Runtime library: `ORT_DYLIB_PATH`, the image's, or the one `scripts/setup.sh`
    /// unpacked.
    pub fn ort_library() -> anyhow::Result<PathBuf> {
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

    /// A process's CPU time (user + system) from `/proc/PID/stat`.
    pub fn cpu_of(pid: u32) -> anyhow::Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // The command name may hold spaces: the fields start after its closing parenthesis.
        let rest = stat.rsplit_once(')').context("/proc/PID/stat")?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
        Ok(Duration::from_millis(ticks * 10))
    }

    /// Replaces the text between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->` in `doc`
    /// (appends the block when it is not there yet).
    pub fn write_block(doc: &Path, name: &str, table: &str) -> anyhow::Result<()> {
        let text = std::fs::read_to_string(doc).unwrap_or_default();
        let (start, end) = (
            format!("<!-- bench:{name} -->"),
            format!("<!-- /bench:{name} -->"),
        );
        let new = match (text.find(&start), text.find(&end)) {
            (Some(s), Some(e)) => format!("{}{start}\n{table}{}", &text[..s], &text[e..]),
            _ => format!("{text}\n{start}\n{table}{end}\n"),
        };
        std::fs::write(doc, new)?;
        eprintln!("wrote {} ({name})", doc.display());
        Ok(())
    }
}
