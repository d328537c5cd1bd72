//! `airlockctl`: the operator's CLI over airlockd's admin API on the Unix socket (who you are is
//! your uid and groups; `[admin.roles]` decides what you may do). Tables for people, `--json`
//! for scripts. Exit codes: 0 ok, 1 refused by the daemon, 2 usage or connection problem.

use std::io::{IsTerminal, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use serde_json::{json, Value};

/// `println!` that ends the process quietly, as a SIGPIPE would (status 141), when stdout is a
/// closed pipe (`airlockctl audit list | head`), instead of panicking.
macro_rules! println {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($t)*) {
            stdout_failed(e)
        }
    }};
}

/// `print!`, the same way.
macro_rules! print {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = write!(std::io::stdout(), $($t)*) {
            stdout_failed(e)
        }
    }};
}

fn stdout_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(141);
    }
    eprintln!("airlockctl: cannot write to stdout: {e}");
    std::process::exit(1);
}

#[derive(Parser)]
#[command(
    name = "airlockctl",
    version,
    about = "Operate an airlock appliance through airlockd's admin API",
    after_help = "Exit codes: 0 ok, 1 refused by airlockd (the reason is printed), 2 usage or connection problem."
)]
struct Cli {
    /// The admin socket.
    #[arg(
        long,
        env = "AIRLOCK_ADMIN_SOCKET",
        default_value = "/run/airlock/admin.sock"
    )]
    socket: PathBuf,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The appliance at a glance: models, what awaits approval, trust root, audit chain.
    Status,
    /// Who airlockd thinks you are, and your roles.
    Whoami,
    /// Models and their versions.
    #[command(subcommand)]
    Models(ModelsCmd),
    /// Bundles: import, inspect, approve, reject.
    #[command(subcommand)]
    Bundle(BundleCmd),
    /// Put versions into and out of service.
    #[command(subcommand)]
    Model(ModelCmd),
    /// The trust root.
    #[command(subcommand)]
    Trust(TrustCmd),
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// API tokens for the inference API, /metrics and the admin API over TLS.
    #[command(subcommand)]
    Token(TokenCmd),
    /// The trusted time: the system clock and the time floor expiry is judged against.
    #[command(subcommand)]
    Time(TimeCmd),
}

#[derive(Subcommand)]
enum TimeCmd {
    /// The system clock, the time floor, and whether the clock is behind it.
    Show,
    /// Say the system clock is right: the time floor returns to it (admin; audited). For a
    /// floor a clock that once ran ahead left behind.
    ResetFloor,
}

#[derive(Subcommand)]
enum ModelsCmd {
    /// Every model: active version, versions, awaiting approval.
    List,
    /// One model with all its versions.
    Show {
        /// The model.
        name: String,
    },
}

#[derive(Subcommand)]
enum BundleCmd {
    /// Import a bundle: this command opens the file (your permissions apply) and streams it to
    /// airlockd; with --on-appliance, PATH is a bundle on removable media airlockd offers
    /// (`bundle media`), which airlockd reads itself. Validation starts right after.
    Import {
        /// The bundle file.
        path: PathBuf,
        /// PATH is a bundle airlockd offers on removable media it mounted (`bundle media`).
        #[arg(long)]
        on_appliance: bool,
        /// Wait for validation and show its report.
        #[arg(long)]
        watch: bool,
    },
    /// Every imported version of every model.
    List,
    /// Bundles on removable media airlockd has found (import one with
    /// `bundle import PATH --on-appliance`).
    Media,
    /// One version: state, approvals, validation report, history.
    Show {
        /// The model.
        model: String,
        /// The version.
        version: String,
    },
    /// Approve a validated version (never your own import).
    Approve {
        /// The model.
        model: String,
        /// The version.
        version: String,
        /// A comment for the audit log.
        #[arg(long)]
        comment: Option<String>,
        /// Approve although the I/O contract differs from the active version's.
        #[arg(long)]
        acknowledge_contract_change: bool,
        /// Sign the approval with this approver key (`airlock-sign keygen`; enrolled in the
        /// trust root's approver role): it covers the manifest's and the validation report's
        /// SHA-256. Required when the appliance's policy is "signed".
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
    },
    /// Reject a version that never served.
    Reject {
        /// The model.
        model: String,
        /// The version.
        version: String,
        /// Why, for the audit log.
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Subcommand)]
enum ModelCmd {
    /// Put an approved version into service (zero dropped requests).
    Promote {
        /// The model.
        name: String,
        /// The version.
        version: String,
    },
    /// Return to the version that served before (the most recently retired one approved here;
    /// rolling back twice returns to where you started), or --to VERSION.
    Rollback {
        /// The model.
        name: String,
        /// A specific retired version.
        #[arg(long)]
        to: Option<String>,
        /// Why, for the audit log.
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Subcommand)]
enum TrustCmd {
    /// The current trust root: version, expiry, roles and keys.
    Show,
    /// Install a rotated root.json (accepted only if the current root's rules allow it).
    Import {
        /// The new root.json.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Audit records, oldest first.
    List {
        /// First sequence number.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// At most this many records.
        #[arg(long, default_value_t = 50)]
        limit: u64,
    },
    /// Verify the hash chain of the whole log.
    Verify,
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Create a token; it is printed once and cannot be shown again.
    Create {
        /// A name for people (who or what uses it).
        #[arg(long)]
        name: String,
        /// model:NAME, model:*, metrics or admin:ROLE; repeat for several.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token at once.
    Revoke {
        /// The token's id.
        id: String,
    },
    /// Give a token a new secret (printed once); the old one keeps working for
    /// `[server] token_overlap` so that clients can switch without failing requests.
    Rotate {
        /// The token's id.
        id: String,
    },
}

/// A failure: refused by the daemon (exit 1) or could not talk to it (exit 2).
enum Fail {
    Refused(String),
    Connection(String),
}

fn connect(socket: &Path) -> Result<UnixStream, Fail> {
    UnixStream::connect(socket).map_err(|e| {
        Fail::Connection(format!(
            "cannot connect to {} ({e}); is airlockd running, and may you use its socket?",
            socket.display()
        ))
    })
}

fn read_response(mut s: UnixStream) -> Result<(u16, Value), Fail> {
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .map_err(|e| Fail::Connection(e.to_string()))?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or(Fail::Connection("incomplete response from airlockd".into()))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or(Fail::Connection("malformed response from airlockd".into()))?;
    let value = serde_json::from_slice(&raw[split + 4..]).unwrap_or(Value::Null);
    Ok((status, value))
}

fn ok(status: u16, v: Value) -> Result<Value, Fail> {
    if (200..300).contains(&status) {
        Ok(v)
    } else {
        Err(Fail::Refused(format!(
            "refused ({status}): {}",
            v["error"].as_str().unwrap_or("no reason given")
        )))
    }
}

fn call(socket: &Path, method: &str, path: &str, body: Option<&Value>) -> Result<Value, Fail> {
    let mut s = connect(socket)?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: airlockd\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let written = s.write_all(req.as_bytes());
    answer(s, written)
}

/// The daemon's answer; when writing the request failed (it may refuse before reading the
/// body, and close), the answer is still read: it says why.
fn answer(s: UnixStream, written: std::io::Result<()>) -> Result<Value, Fail> {
    match read_response(s) {
        Ok((status, v)) => ok(status, v),
        Err(e) => Err(match written {
            Err(w) => Fail::Connection(w.to_string()),
            Ok(()) => e,
        }),
    }
}

/// A request whose body is sent byte for byte (e.g. a signed file that must not be re-encoded).
fn call_raw(socket: &Path, method: &str, path: &str, body: &[u8]) -> Result<Value, Fail> {
    let mut s = connect(socket)?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: airlockd\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let written = s
        .write_all(head.as_bytes())
        .and_then(|()| s.write_all(body));
    answer(s, written)
}

fn bar(done: u64, total: u64, what: &str) {
    let width = 30;
    let filled = (done * width).checked_div(total).unwrap_or(width) as usize;
    eprint!(
        "\r{what} [{}{}] {:>5.1}% {:>8.1} MiB",
        "#".repeat(filled),
        " ".repeat(width as usize - filled),
        done as f64 * 100.0 / total.max(1) as f64,
        done as f64 / (1 << 20) as f64
    );
}

/// Streams `path` as the request body, with a progress bar on a terminal. The file is opened
/// here, with the caller's own permissions (airlockd never opens a caller's path), must be a
/// regular file, and is sent exactly as long as it was when the upload began: a file that
/// shrinks meanwhile ends the upload with an error (airlockd then drops the partial import).
fn upload(socket: &Path, path: &Path) -> Result<Value, Fail> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| Fail::Connection(format!("cannot open {}: {e}", path.display())))?;
    let meta = f.metadata().map_err(|e| Fail::Connection(e.to_string()))?;
    if !meta.file_type().is_file() {
        return Err(Fail::Connection(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    let total = meta.len();
    let mut s = connect(socket)?;
    // A daemon that stops reading (or never answers) does not hang the client forever.
    let _ = s.set_write_timeout(Some(Duration::from_secs(60)));
    let _ = s.set_read_timeout(Some(Duration::from_secs(600)));
    let head = format!(
        "POST /api/v1/bundles HTTP/1.1\r\nHost: airlockd\r\nConnection: close\r\nContent-Type: application/octet-stream\r\nContent-Length: {total}\r\n\r\n"
    );
    let tty = std::io::stderr().is_terminal();
    let mut sent = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    let written = (|| -> std::io::Result<()> {
        s.write_all(head.as_bytes())?;
        let mut last = Instant::now();
        while sent < total {
            let want = buf.len().min((total - sent) as usize);
            let n = f.read(&mut buf[..want])?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("{} shrank while it was sent", path.display()),
                ));
            }
            s.write_all(&buf[..n])?;
            sent += n as u64;
            if tty && last.elapsed() > Duration::from_millis(100) {
                bar(sent, total, "importing");
                last = Instant::now();
            }
        }
        Ok(())
    })();
    if tty {
        bar(sent, total, "importing");
        eprintln!();
    }
    if let Err(e) = &written {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            // Closing the connection cuts the body off: airlockd refuses the partial upload.
            drop(s);
            return Err(Fail::Connection(format!(
                "the upload stopped after {sent} of {total} bytes: {e}"
            )));
        }
    }
    // airlockd may refuse before reading everything (a bad signature, no permission): its
    // answer says why, so read it even when writing failed.
    match read_response(s) {
        Ok((status, v)) => ok(status, v),
        Err(e) => match written {
            Err(w) => Err(Fail::Connection(format!(
                "the upload failed after {sent} of {total} bytes: {w}"
            ))),
            Ok(()) => Err(e),
        },
    }
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or("-")
}

fn print_report(v: &Value) {
    let Some(r) = v.get("validation").filter(|r| !r.is_null()) else {
        println!("validation: not run yet");
        return;
    };
    println!(
        "validation: {} on {} ({}), report sha256 {}",
        if r["passed"].as_bool() == Some(true) {
            "PASSED"
        } else {
            "FAILED"
        },
        s(r, "provider"),
        s(r, "engine"),
        s(v, "validation_sha256")
    );
    for c in r["cases"].as_array().into_iter().flatten() {
        println!(
            "  {:<4} {:<20} max abs {:<10} max rel {:<10} {}",
            if c["passed"].as_bool() == Some(true) {
                "ok"
            } else {
                "FAIL"
            },
            s(c, "name"),
            c["max_abs_error"]
                .as_f64()
                .map(|x| format!("{x:.2e}"))
                .unwrap_or("-".into()),
            c["max_rel_error"]
                .as_f64()
                .map(|x| format!("{x:.2e}"))
                .unwrap_or("-".into()),
            s(c, "detail")
        );
    }
    for n in r["notes"].as_array().into_iter().flatten() {
        println!("  note: {}", n.as_str().unwrap_or(""));
    }
}

fn print_version(v: &Value) {
    println!(
        "{} {}: {}",
        s(v, "model"),
        s(v, "version"),
        s(v, "state").to_uppercase()
    );
    println!("  manifest sha256 {}", s(v, "manifest_sha256"));
    println!(
        "  imported by {} at {} from {}",
        s(v, "imported_by"),
        s(v, "imported_at"),
        s(v, "source")
    );
    for a in v["approvals"].as_array().into_iter().flatten() {
        println!(
            "  approved by {} at {}{}",
            s(a, "by"),
            s(a, "at"),
            a["comment"]
                .as_str()
                .map(|c| format!(": {c}"))
                .unwrap_or_default()
        );
    }
    if let Some(c) = v["contract_change"].as_str() {
        println!("  CONTRACT CHANGE: {c}");
    }
    print_report(v);
    if let Some(h) = v["history"].as_array() {
        println!("history:");
        for e in h {
            println!(
                "  #{:<5} {} {:<16} {}",
                e["seq"].to_string(),
                s(e, "time"),
                s(e, "action"),
                s(e, "actor")
            );
        }
    }
}

fn versions_table(rows: &[Value], with_model: bool) {
    if with_model {
        print!("{:<20} ", "MODEL");
    }
    println!(
        "{:<12} {:<18} {:<10} {:<24} {:<22} APPROVALS",
        "VERSION", "STATE", "VALIDATED", "IMPORTED BY", "IMPORTED AT"
    );
    for v in rows {
        if with_model {
            print!("{:<20} ", s(v, "model"));
        }
        let validated = match v["validation_passed"].as_bool() {
            Some(true) => "passed",
            Some(false) => "FAILED",
            None => "-",
        };
        println!(
            "{:<12} {:<18} {:<10} {:<24} {:<22} {}",
            s(v, "version"),
            s(v, "state"),
            validated,
            s(v, "imported_by"),
            s(v, "imported_at"),
            v["approvals"].as_array().map_or(0, |a| a.len())
        );
    }
}

fn models_table(models: &[Value]) {
    println!(
        "{:<20} {:<10} {:<8} {:<9} {:<10} {:<9} ROLLBACK TO",
        "MODEL", "ACTIVE", "READY", "PROVIDER", "VERSIONS", "AWAITING"
    );
    for m in models {
        let serving = &m["serving"];
        println!(
            "{:<20} {:<10} {:<8} {:<9} {:<10} {:<9} {}",
            s(m, "name"),
            s(m, "active"),
            match serving["ready"].as_bool() {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "-",
            },
            s(serving, "provider"),
            // The list has a count, one model's record the versions themselves.
            m["versions"]
                .as_array()
                .map_or_else(|| m["versions"].to_string(), |a| a.len().to_string()),
            m["awaiting_approval"].to_string(),
            s(m, "rollback_target")
        );
        if let Some(d) = serving["degraded"].as_str() {
            println!("  DEGRADED: {d}");
        }
        if let Some(r) = m["unavailable"]["reason"].as_str() {
            println!("  UNAVAILABLE: {} {r}", s(&m["unavailable"], "version"));
        }
    }
}

/// Polls a freshly imported version until validation has finished.
fn watch(socket: &Path, model: &str, version: &str) -> Result<Value, Fail> {
    let tty = std::io::stderr().is_terminal();
    let start = Instant::now();
    let spin = ['|', '/', '-', '\\'];
    let mut i = 0;
    loop {
        let v = call(
            socket,
            "GET",
            &format!("/api/v1/models/{model}/versions/{version}"),
            None,
        )?;
        if v["state"] != "staged" {
            if tty {
                eprintln!(
                    "\rvalidating {model} {version}: done in {:.1} s   ",
                    start.elapsed().as_secs_f64()
                );
            }
            return Ok(v);
        }
        if tty {
            eprint!(
                "\rvalidating {model} {version} on this machine {} {:.0} s",
                spin[i % 4],
                start.elapsed().as_secs_f64()
            );
            i += 1;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn run(cli: &Cli) -> Result<(), Fail> {
    let sock = cli.socket.as_path();
    let out = |v: &Value| {
        if cli.json {
            println!("{v}");
        }
        !cli.json
    };
    match &cli.cmd {
        Cmd::Status => {
            let v = call(sock, "GET", "/api/v1/status", None)?;
            if out(&v) {
                println!(
                    "airlockd {} (pid {}); you are {} ({})",
                    s(&v["daemon"], "version"),
                    v["daemon"]["pid"],
                    s(&v["you"], "actor"),
                    v["you"]["roles"]
                        .as_array()
                        .map(|r| r
                            .iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(", "))
                        .unwrap_or_default()
                );
                println!(
                    "trust root version {}; audit chain: {}",
                    v["trust_root_version"],
                    if v["audit"]["verified"].as_bool() == Some(true) {
                        format!("verified ({} records)", v["audit"]["records"])
                    } else {
                        format!("BROKEN: {}", s(&v["audit"], "error"))
                    }
                );
                for x in v["validating"].as_array().into_iter().flatten() {
                    println!("validating: {} {}", s(x, "model"), s(x, "version"));
                }
                println!();
                models_table(v["models"].as_array().map(|a| a.as_slice()).unwrap_or(&[]));
            }
        }
        Cmd::Whoami => {
            let v = call(sock, "GET", "/api/v1/whoami", None)?;
            if out(&v) {
                println!("{} ({})", s(&v, "actor"), v["roles"]);
            }
        }
        Cmd::Models(ModelsCmd::List) => {
            let v = call(sock, "GET", "/api/v1/models", None)?;
            if out(&v) {
                models_table(v["models"].as_array().map(|a| a.as_slice()).unwrap_or(&[]));
            }
        }
        Cmd::Models(ModelsCmd::Show { name }) => {
            let v = call(sock, "GET", &format!("/api/v1/models/{name}"), None)?;
            if out(&v) {
                models_table(std::slice::from_ref(&v));
                if let Some(p) = v["promoting"].as_object() {
                    println!("PROMOTION IN PROGRESS to {}", p["to"]);
                }
                println!();
                versions_table(
                    v["versions"]
                        .as_array()
                        .map(|a| a.as_slice())
                        .unwrap_or(&[]),
                    false,
                );
            }
        }
        Cmd::Bundle(BundleCmd::Import {
            path,
            on_appliance,
            watch: w,
        }) => {
            let v = if *on_appliance {
                // As `bundle media` lists it (no symbolic links resolved here: airlockd
                // accepts only the paths it offers).
                let abs = std::path::absolute(path).unwrap_or(path.clone());
                call(
                    sock,
                    "POST",
                    "/api/v1/bundles/import",
                    Some(&json!({ "path": abs })),
                )?
            } else {
                upload(sock, path)?
            };
            let (m, ver) = (s(&v, "model").to_string(), s(&v, "version").to_string());
            if v["repaired"] == true {
                if out(&v) {
                    println!(
                        "repaired the stored files of {m} {ver} from the same signed bundle (manifest sha256 {}); its state is unchanged",
                        s(&v, "manifest_sha256")
                    );
                }
                return Ok(());
            }
            if !*w {
                if out(&v) {
                    println!(
                        "imported {m} {ver} (manifest sha256 {}); validation is running: airlockctl bundle show {m} {ver}",
                        s(&v, "manifest_sha256")
                    );
                }
                return Ok(());
            }
            if !cli.json {
                println!(
                    "imported {m} {ver} (manifest sha256 {})",
                    s(&v, "manifest_sha256")
                );
            }
            let done = watch(sock, &m, &ver)?;
            if out(&done) {
                print_version(&done);
            }
            if done["state"] == "validation_failed" {
                return Err(Fail::Refused(format!("{m} {ver} failed validation")));
            }
        }
        Cmd::Bundle(BundleCmd::Media) => {
            let v = call(sock, "GET", "/api/v1/media", None)?;
            if out(&v) {
                let media = v["media"].as_array().cloned().unwrap_or_default();
                if media.is_empty() {
                    println!("no removable medium with bundles");
                }
                for m in media {
                    println!(
                        "{} ({}) mounted read-only at {}{}",
                        s(&m, "device"),
                        s(&m, "label"),
                        s(&m, "mount"),
                        if m["truncated"] == true {
                            " (listing truncated)"
                        } else {
                            ""
                        }
                    );
                    for b in m["bundles"].as_array().into_iter().flatten() {
                        println!("  {}  {} bytes", s(b, "path"), b["size"]);
                    }
                }
            }
        }
        Cmd::Bundle(BundleCmd::List) => {
            let v = call(sock, "GET", "/api/v1/bundles", None)?;
            if out(&v) {
                versions_table(
                    v["bundles"].as_array().map(|a| a.as_slice()).unwrap_or(&[]),
                    true,
                );
            }
        }
        Cmd::Bundle(BundleCmd::Show { model, version }) => {
            let v = call(
                sock,
                "GET",
                &format!("/api/v1/models/{model}/versions/{version}"),
                None,
            )?;
            if out(&v) {
                print_version(&v);
            }
        }
        Cmd::Bundle(BundleCmd::Approve {
            model,
            version,
            comment,
            acknowledge_contract_change,
            key,
        }) => {
            let signature = match key {
                None => Value::Null,
                Some(file) => {
                    // Sign what the daemon shows: the manifest and the report produced here.
                    let shown = call(
                        sock,
                        "GET",
                        &format!("/api/v1/models/{model}/versions/{version}"),
                        None,
                    )?;
                    let Some(report) = shown["validation_sha256"].as_str() else {
                        return Err(Fail::Refused(format!(
                            "{model} {version} has no validation report to sign yet"
                        )));
                    };
                    let key = airlock_signing::PrivateKey::read(file).map_err(|e| {
                        Fail::Connection(format!("cannot read the key {}: {e}", file.display()))
                    })?;
                    let payload = airlock_signing::approval_payload(
                        model,
                        version,
                        s(&shown, "manifest_sha256"),
                        report,
                    );
                    serde_json::to_value(
                        key.sign(airlock_signing::SigningContext::Approval, &payload),
                    )
                    .unwrap_or(Value::Null)
                }
            };
            let v = call(
                sock,
                "POST",
                &format!("/api/v1/models/{model}/versions/{version}/approve"),
                Some(&json!({
                    "comment": comment,
                    "acknowledge_contract_change": acknowledge_contract_change,
                    "signature": signature,
                })),
            )?;
            if out(&v) {
                println!(
                    "{model} {version}: approval by {} recorded; state {}",
                    s(&v, "approved_by"),
                    s(&v, "state")
                );
            }
        }
        Cmd::Bundle(BundleCmd::Reject {
            model,
            version,
            reason,
        }) => {
            let v = call(
                sock,
                "POST",
                &format!("/api/v1/models/{model}/versions/{version}/reject"),
                Some(&json!({ "reason": reason })),
            )?;
            if out(&v) {
                println!("{model} {version}: rejected");
            }
        }
        Cmd::Model(ModelCmd::Promote { name, version }) => {
            let v = call(
                sock,
                "POST",
                &format!("/api/v1/models/{name}/promote"),
                Some(&json!({ "version": version })),
            )?;
            if out(&v) {
                println!("{name}: {} is active", s(&v, "active"));
            }
        }
        Cmd::Model(ModelCmd::Rollback { name, to, reason }) => {
            let v = call(
                sock,
                "POST",
                &format!("/api/v1/models/{name}/rollback"),
                Some(&json!({ "version": to, "reason": reason })),
            )?;
            if out(&v) {
                println!("{name}: rolled back; {} is active", s(&v, "active"));
            }
        }
        Cmd::Trust(TrustCmd::Show) => {
            let v = call(sock, "GET", "/api/v1/trust", None)?;
            if out(&v) {
                let r = &v["root"];
                println!(
                    "trust root version {}, expires {}",
                    v["version"],
                    s(r, "expires")
                );
                for (role, rk) in r["roles"].as_object().into_iter().flatten() {
                    let keys: Vec<&str> = rk["keyids"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .map(|k| &k[..k.len().min(12)])
                        .collect();
                    println!(
                        "  {role:<9} threshold {} of {}: {}",
                        rk["threshold"],
                        keys.len(),
                        keys.join(" ")
                    );
                }
                let revoked = r["revoked"].as_array().map_or(0, |a| a.len());
                println!("  revoked keys: {revoked}");
            }
        }
        Cmd::Time(cmd) => {
            let v = match cmd {
                TimeCmd::Show => call(sock, "GET", "/api/v1/time", None)?,
                TimeCmd::ResetFloor => call(sock, "POST", "/api/v1/time/reset-floor", None)?,
            };
            if out(&v) {
                println!("system clock  {}", s(&v, "system"));
                println!("time floor    {}", s(&v, "floor"));
                println!("trusted time  {}", s(&v, "trusted"));
                if let Some(b) = v["clock_behind_floor_s"].as_i64() {
                    println!(
                        "the clock is {b} s behind the floor: if it is right, `airlockctl time reset-floor`"
                    );
                }
            }
        }
        Cmd::Trust(TrustCmd::Import { file }) => {
            let bytes = std::fs::read(file)
                .map_err(|e| Fail::Connection(format!("cannot read {}: {e}", file.display())))?;
            // Sent as it is: the daemon stores the signed file byte for byte.
            let v = call_raw(sock, "POST", "/api/v1/trust", &bytes)?;
            if out(&v) {
                println!("trust root version {} installed", v["version"]);
            }
        }
        Cmd::Audit(AuditCmd::List { from, limit }) => {
            let v = call(
                sock,
                "GET",
                &format!("/api/v1/audit?from={from}&limit={limit}"),
                None,
            )?;
            if out(&v) {
                println!(
                    "{:<6} {:<28} {:<18} {:<28} {:<22} DETAIL",
                    "SEQ", "TIME", "ACTION", "ACTOR", "MODEL"
                );
                for r in v["records"].as_array().into_iter().flatten() {
                    let target = match (r["model"].as_str(), r["version"].as_str()) {
                        (Some(m), Some(v)) => format!("{m} {v}"),
                        (Some(m), None) => m.to_string(),
                        _ => "-".into(),
                    };
                    println!(
                        "{:<6} {:<28} {:<18} {:<28} {:<22} {}",
                        r["seq"].to_string(),
                        s(r, "time"),
                        s(r, "action"),
                        s(r, "actor"),
                        target,
                        r["detail"]
                    );
                }
            }
        }
        Cmd::Audit(AuditCmd::Verify) => {
            let v = call(sock, "GET", "/api/v1/audit/verify", None)?;
            if out(&v) {
                println!("audit chain verified: {} records", v["records"]);
            }
        }
        Cmd::Token(TokenCmd::Create { name, scopes }) => {
            let v = call(
                sock,
                "POST",
                "/api/v1/tokens",
                Some(&json!({ "name": name, "scopes": scopes })),
            )?;
            if out(&v) {
                println!(
                    "token {} ({}) created for {}",
                    s(&v, "id"),
                    s(&v, "name"),
                    v["scopes"]
                );
                println!("{}", s(&v, "token"));
                eprintln!("store it now: it cannot be shown again");
            }
        }
        Cmd::Token(TokenCmd::List) => {
            let v = call(sock, "GET", "/api/v1/tokens", None)?;
            if out(&v) {
                println!(
                    "{:<18} {:<20} {:<30} {:<22} REVOKED",
                    "ID", "NAME", "SCOPES", "CREATED"
                );
                for t in v["tokens"].as_array().into_iter().flatten() {
                    let scopes: Vec<&str> = t["scopes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    println!(
                        "{:<18} {:<20} {:<30} {:<22} {}",
                        s(t, "id"),
                        s(t, "name"),
                        scopes.join(","),
                        s(t, "created_at"),
                        t["revoked_at"].as_str().unwrap_or("-")
                    );
                }
            }
        }
        Cmd::Token(TokenCmd::Rotate { id }) => {
            let v = call(sock, "POST", &format!("/api/v1/tokens/{id}/rotate"), None)?;
            if out(&v) {
                println!(
                    "token {id} ({}) rotated; the previous secret keeps working for {} s",
                    s(&v, "name"),
                    v["previous_valid_for_s"]
                );
                println!("{}", s(&v, "token"));
                eprintln!("store it now: it cannot be shown again");
            }
        }
        Cmd::Token(TokenCmd::Revoke { id }) => {
            let v = call(sock, "DELETE", &format!("/api/v1/tokens/{id}"), None)?;
            if out(&v) {
                println!("token {id} revoked");
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail::Refused(m)) => {
            eprintln!("airlockctl: {m}");
            ExitCode::from(1)
        }
        Err(Fail::Connection(m)) => {
            eprintln!("airlockctl: {m}");
            ExitCode::from(2)
        }
    }
}
