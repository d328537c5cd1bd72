//! `airlockctl`: the operator's CLI over airlockd's admin API, a typed client of `airlock-api`.
//! On the appliance it talks over the Unix socket (who you are is your uid and groups;
//! `[admin.roles]` decides what you may do); from elsewhere over HTTPS with a token
//! (`--url`, `--token-file`, `--ca` or `--fingerprint`; the token's `admin:ROLE` scopes decide).
//! Tables for people, `--json` (the API's answer as it came) for scripts. Exit codes: 0 ok, 1
//! refused by the daemon, 2 usage or connection problem.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use airlock_api::{self as api, paths};
use clap::{Parser, Subcommand};
use serde_json::Value;

mod client;
mod telemetry;

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
    /// Talk to airlockd over HTTPS instead (`https://HOST:PORT`, its TLS listener), as the
    /// token in --token-file: for another machine or a fleet.
    #[arg(long, env = "AIRLOCK_URL", global = true)]
    url: Option<String>,
    /// With --url: a file holding the token (`al_…`, with an admin:ROLE scope); only its owner
    /// may read it (mode 0600).
    #[arg(long, env = "AIRLOCK_TOKEN_FILE", global = true, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// With --url: trust this PEM CA or certificate for the appliance.
    #[arg(long, global = true, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// With --url: trust exactly the certificate with this SHA-256 (as airlockd logs it at
    /// start: `TLS certificate loaded sha256=…`).
    #[arg(long, global = true, value_name = "SHA256")]
    fingerprint: Option<String>,
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
    /// The appliance's own metric history (the local telemetry store).
    #[command(subcommand)]
    Telemetry(TelemetryCmd),
    /// A live view: models with req/s, p99, queue and errors; GPUs with utilisation, memory,
    /// temperature and power. Refreshes until interrupted (Ctrl-C).
    Top {
        /// Seconds between refreshes (the averages cover at least the last 5 seconds).
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=3600))]
        interval: u64,
        /// Print one view and exit.
        #[arg(long)]
        once: bool,
    },
}

#[derive(Subcommand)]
enum TelemetryCmd {
    /// The stored series (name, labels, kind, unit) and the store's state and size per tier.
    Series {
        /// Only series matching this selector (`name`, `prefix*`, `name{label="value"}`).
        #[arg(long = "match", value_name = "SELECTOR")]
        selector: Option<String>,
    },
    /// Request traces, newest first: the last N, every failed one and every slow one
    /// (`[telemetry] slow_trace`), with their spans.
    Traces {
        /// One trace (32 hex digits: a client's traceparent trace id, or the one airlockd made
        /// and returned).
        #[arg(long)]
        trace_id: Option<String>,
        /// Only this model's.
        #[arg(long)]
        model: Option<String>,
        /// `ok` or `error`.
        #[arg(long)]
        status: Option<String>,
        /// Since (Unix seconds, RFC 3339, or relative: `-1h`).
        #[arg(long, default_value = "-1h", allow_hyphen_values = true)]
        since: String,
        /// Only those at least this long.
        #[arg(long)]
        min_duration_ms: Option<u64>,
        /// At most this many (1 to 1000).
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// The history of the series a selector matches (at most 64), in at most --points
    /// buckets each with min / avg / max (for counters: rate, peak rate, increase).
    Query {
        /// `name`, `prefix*` or `name{label="value",…}`.
        series: String,
        /// Start: Unix seconds, RFC 3339, or relative (`-1h`, `-7d`, `-1y`).
        #[arg(long, default_value = "-1h", allow_hyphen_values = true)]
        from: String,
        /// End (exclusive), as --from, or `now`.
        #[arg(long, default_value = "now", allow_hyphen_values = true)]
        to: String,
        /// At most this many buckets per series (1 to 2000).
        #[arg(long, default_value_t = 60)]
        points: u32,
    },
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

use client::{typed, Client, Fail};

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
fn upload(client: &Client, path: &Path) -> Result<Value, Fail> {
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
    let tty = std::io::stderr().is_terminal();
    let mut last = Instant::now();
    let mut shown = false;
    let r = client.stream("/api/v1/bundles", &mut f, total, &mut |sent| {
        if tty && (sent == total || last.elapsed() > Duration::from_millis(100)) {
            bar(sent, total, "importing");
            last = Instant::now();
            shown = true;
        }
    });
    if shown {
        eprintln!();
    }
    r.map_err(|e| match e {
        Fail::Connection(m) => Fail::Connection(format!("{}: {m}", path.display())),
        refused => refused,
    })
}

fn dash(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("-")
}

fn print_report(v: &api::VersionDetail) {
    let Some(r) = &v.validation else {
        println!("validation: not run yet");
        return;
    };
    println!(
        "validation: {} on {} ({}), report sha256 {}",
        if r.passed { "PASSED" } else { "FAILED" },
        dash(&r.provider),
        r.engine,
        dash(&v.validation_sha256)
    );
    let sci = |x: Option<f64>| x.map(|x| format!("{x:.2e}")).unwrap_or("-".into());
    for c in &r.cases {
        println!(
            "  {:<4} {:<20} max abs {:<10} max rel {:<10} {}",
            if c.passed { "ok" } else { "FAIL" },
            c.name,
            sci(c.max_abs_error),
            sci(c.max_rel_error),
            c.detail
        );
    }
    for n in &r.notes {
        println!("  note: {n}");
    }
}

fn print_version(v: &api::VersionDetail) {
    let sv = &v.summary;
    println!(
        "{} {}: {}",
        v.model,
        sv.version,
        sv.state.to_string().to_uppercase()
    );
    println!("  manifest sha256 {}", sv.manifest_sha256);
    println!(
        "  imported by {} at {} from {}",
        sv.imported_by, sv.imported_at, sv.source
    );
    for a in &sv.approvals {
        println!(
            "  approved by {} at {}{}",
            a.by,
            a.at,
            a.comment
                .as_deref()
                .map(|c| format!(": {c}"))
                .unwrap_or_default()
        );
    }
    if let Some(c) = &sv.contract_change {
        println!("  CONTRACT CHANGE: {c}");
    }
    print_report(v);
    if let Some(h) = &v.history {
        println!("history:");
        for e in h {
            println!(
                "  #{:<5} {} {:<16} {}",
                e.seq.to_string(),
                e.time,
                e.action,
                e.actor
            );
        }
    }
}

fn versions_table<'a>(
    rows: impl Iterator<Item = (Option<&'a str>, &'a api::VersionSummary)>,
    with_model: bool,
) {
    if with_model {
        print!("{:<20} ", "MODEL");
    }
    println!(
        "{:<12} {:<18} {:<10} {:<24} {:<22} APPROVALS",
        "VERSION", "STATE", "VALIDATED", "IMPORTED BY", "IMPORTED AT"
    );
    for (model, v) in rows {
        if with_model {
            print!("{:<20} ", model.unwrap_or("-"));
        }
        let validated = match v.validation_passed {
            Some(true) => "passed",
            Some(false) => "FAILED",
            None => "-",
        };
        println!(
            "{:<12} {:<18} {:<10} {:<24} {:<22} {}",
            v.version,
            v.state.to_string(),
            validated,
            v.imported_by,
            v.imported_at,
            v.approvals.len()
        );
    }
}

/// One row per model: the list gives counts, one model's record its versions (`awaiting`
/// is then counted here).
fn models_table<'a>(models: impl Iterator<Item = (&'a api::ModelHead, usize, usize)>) {
    println!(
        "{:<20} {:<10} {:<8} {:<9} {:<10} {:<9} ROLLBACK TO",
        "MODEL", "ACTIVE", "READY", "PROVIDER", "VERSIONS", "AWAITING"
    );
    for (m, versions, awaiting) in models {
        let serving = m.serving.as_ref();
        println!(
            "{:<20} {:<10} {:<8} {:<9} {:<10} {:<9} {}",
            m.name,
            dash(&m.active),
            match serving.map(|s| s.ready) {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "-",
            },
            serving.map_or("-", |s| s.provider.as_str()),
            versions,
            awaiting,
            dash(&m.rollback_target)
        );
        if let Some(d) = serving.and_then(|s| s.degraded.as_deref()) {
            println!("  DEGRADED: {d}");
        }
        if let Some(u) = &m.unavailable {
            println!("  UNAVAILABLE: {} {}", u.version, u.reason);
        }
    }
}

fn summaries(
    models: &[api::ModelSummary],
) -> impl Iterator<Item = (&api::ModelHead, usize, usize)> {
    models
        .iter()
        .map(|m| (&m.head, m.versions, m.awaiting_approval))
}

/// Polls a freshly imported version until validation has finished.
fn watch(client: &Client, model: &str, version: &str) -> Result<Value, Fail> {
    let tty = std::io::stderr().is_terminal();
    let start = Instant::now();
    let spin = ['|', '/', '-', '\\'];
    let mut i = 0;
    loop {
        let v = client.get(&paths::version(model, version))?;
        let d: api::VersionDetail = typed(&v)?;
        if d.summary.state != api::VersionState::Staged {
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

fn client(cli: &Cli) -> Result<Client, Fail> {
    match &cli.url {
        // On the socket you are your uid: --token-file, --ca and --fingerprint (which may come
        // from the environment) do not apply.
        None => Ok(Client::Unix(cli.socket.clone())),
        Some(url) => Client::https(&client::HttpsOptions {
            url,
            token_file: cli.token_file.as_deref(),
            ca: cli.ca.as_deref(),
            fingerprint: cli.fingerprint.as_deref(),
        }),
    }
}

fn run(cli: &Cli) -> Result<(), Fail> {
    let c = client(cli)?;
    // With --json the API's answer is printed as it came; else it is read as the API's type
    // and drawn for people.
    let out = |v: &Value| {
        if cli.json {
            println!("{v}");
        }
        !cli.json
    };
    match &cli.cmd {
        Cmd::Status => {
            let v = c.get("/api/v1/status")?;
            if out(&v) {
                let st: api::Status = typed(&v)?;
                println!(
                    "airlockd {} (pid {}); you are {} ({})",
                    st.daemon.version,
                    st.daemon.pid,
                    st.you.actor,
                    st.you.roles.join(", ")
                );
                println!(
                    "trust root version {}; audit chain: {}",
                    st.trust_root_version,
                    if st.audit.verified {
                        format!("verified ({} records)", st.audit.records.unwrap_or(0))
                    } else {
                        format!("BROKEN: {}", dash(&st.audit.error))
                    }
                );
                for x in &st.validating {
                    println!("validating: {} {}", x.model, x.version);
                }
                println!();
                models_table(summaries(&st.models));
            }
        }
        Cmd::Whoami => {
            let v = c.get("/api/v1/whoami")?;
            if out(&v) {
                let w: api::Whoami = typed(&v)?;
                println!("{} ({})", w.actor, w.roles.join(", "));
            }
        }
        Cmd::Models(ModelsCmd::List) => {
            let v = c.get("/api/v1/models")?;
            if out(&v) {
                let l: api::ModelList = typed(&v)?;
                models_table(summaries(&l.models));
            }
        }
        Cmd::Models(ModelsCmd::Show { name }) => {
            let v = c.get(&paths::model(name))?;
            if out(&v) {
                let m: api::ModelDetail = typed(&v)?;
                let awaiting = m
                    .versions
                    .iter()
                    .filter(|v| v.state == api::VersionState::Validated)
                    .count();
                models_table(std::iter::once((&m.head, m.versions.len(), awaiting)));
                if let Some(p) = &m.head.promoting {
                    println!("PROMOTION IN PROGRESS to {}", p.to);
                }
                println!();
                versions_table(m.versions.iter().map(|v| (None, v)), false);
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
                let Some(abs) = abs.to_str() else {
                    return Err(Fail::Connection(format!(
                        "{} is not UTF-8 (no bundle airlockd offers is)",
                        abs.display()
                    )));
                };
                c.call(
                    "POST",
                    "/api/v1/bundles/import",
                    Some(&api::ImportPath { path: abs.into() }),
                )?
            } else {
                upload(&c, path)?
            };
            let i: api::Imported = typed(&v)?;
            let (m, ver) = (&i.model, &i.version);
            if i.repaired {
                if out(&v) {
                    println!(
                        "repaired the stored files of {m} {ver} from the same signed bundle (manifest sha256 {}); its state is unchanged",
                        i.manifest_sha256
                    );
                }
                return Ok(());
            }
            if !*w {
                if out(&v) {
                    println!(
                        "imported {m} {ver} (manifest sha256 {}); validation is running: airlockctl bundle show {m} {ver}",
                        i.manifest_sha256
                    );
                }
                return Ok(());
            }
            if !cli.json {
                println!("imported {m} {ver} (manifest sha256 {})", i.manifest_sha256);
            }
            let done = watch(&c, m, ver)?;
            let d: api::VersionDetail = typed(&done)?;
            if out(&done) {
                print_version(&d);
            }
            if d.summary.state == api::VersionState::ValidationFailed {
                return Err(Fail::Refused(format!("{m} {ver} failed validation")));
            }
        }
        Cmd::Bundle(BundleCmd::Media) => {
            let v = c.get("/api/v1/media")?;
            if out(&v) {
                let l: api::MediaList = typed(&v)?;
                if l.media.is_empty() {
                    println!("no removable medium with bundles");
                }
                for m in &l.media {
                    println!(
                        "{} ({}) mounted read-only at {}{}",
                        m.device,
                        m.label,
                        m.mount,
                        if m.truncated {
                            " (listing truncated)"
                        } else {
                            ""
                        }
                    );
                    for b in &m.bundles {
                        println!("  {}  {} bytes", b.path, b.size);
                    }
                }
            }
        }
        Cmd::Bundle(BundleCmd::List) => {
            let v = c.get("/api/v1/bundles")?;
            if out(&v) {
                let l: api::BundleList = typed(&v)?;
                versions_table(
                    l.bundles
                        .iter()
                        .map(|b| (Some(b.model.as_str()), &b.summary)),
                    true,
                );
            }
        }
        Cmd::Bundle(BundleCmd::Show { model, version }) => {
            let v = c.get(&paths::version(model, version))?;
            if out(&v) {
                print_version(&typed(&v)?);
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
                None => None,
                Some(file) => {
                    // Sign what the daemon shows: the manifest and the report produced here.
                    let shown: api::VersionDetail =
                        typed(&c.get(&paths::version(model, version))?)?;
                    // The digest airlockd took when the report was produced (what it verifies
                    // the signature against); recomputing it from the JSON shown could differ
                    // in a float's last bit.
                    let (Some(_), Some(digest)) = (&shown.validation, &shown.validation_sha256)
                    else {
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
                        &shown.summary.manifest_sha256,
                        digest,
                    );
                    let sig = key.sign(airlock_signing::SigningContext::Approval, &payload);
                    Some(
                        serde_json::to_value(sig)
                            .and_then(serde_json::from_value::<api::SignatureHex>)
                            .map_err(|e| {
                                Fail::Connection(format!("cannot encode the signature: {e}"))
                            })?,
                    )
                }
            };
            let v = c.call(
                "POST",
                &format!("{}/approve", paths::version(model, version)),
                Some(&api::ApproveRequest {
                    comment: comment.clone(),
                    acknowledge_contract_change: *acknowledge_contract_change,
                    signature,
                }),
            )?;
            if out(&v) {
                let a: api::Approved = typed(&v)?;
                println!(
                    "{model} {version}: approval by {} recorded; state {}",
                    a.approved_by, a.state
                );
            }
        }
        Cmd::Bundle(BundleCmd::Reject {
            model,
            version,
            reason,
        }) => {
            let v = c.call(
                "POST",
                &format!("{}/reject", paths::version(model, version)),
                Some(&api::RejectRequest {
                    reason: reason.clone(),
                }),
            )?;
            if out(&v) {
                let _: api::Rejected = typed(&v)?;
                println!("{model} {version}: rejected");
            }
        }
        Cmd::Model(ModelCmd::Promote { name, version }) => {
            let v = c.call(
                "POST",
                &format!("{}/promote", paths::model(name)),
                Some(&api::PromoteRequest {
                    version: version.clone(),
                }),
            )?;
            if out(&v) {
                let a: api::Active = typed(&v)?;
                println!("{name}: {} is active", a.active);
            }
        }
        Cmd::Model(ModelCmd::Rollback { name, to, reason }) => {
            let v = c.call(
                "POST",
                &format!("{}/rollback", paths::model(name)),
                Some(&api::RollbackRequest {
                    version: to.clone(),
                    reason: reason.clone(),
                }),
            )?;
            if out(&v) {
                let a: api::Active = typed(&v)?;
                println!("{name}: rolled back; {} is active", a.active);
            }
        }
        Cmd::Trust(TrustCmd::Show) => {
            let v = c.get("/api/v1/trust")?;
            if out(&v) {
                let t: api::TrustRoot = typed(&v)?;
                let r = &t.root;
                println!(
                    "trust root version {}, expires {}",
                    t.version,
                    r["expires"].as_str().unwrap_or("-")
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
                TimeCmd::Show => c.get("/api/v1/time")?,
                TimeCmd::ResetFloor => c.call::<()>("POST", "/api/v1/time/reset-floor", None)?,
            };
            if out(&v) {
                let t: api::TimeInfo = typed(&v)?;
                println!("system clock  {}", t.system);
                println!("time floor    {}", t.floor);
                println!("trusted time  {}", t.trusted);
                if let Some(b) = t.clock_behind_floor_s {
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
            let v = c.call_raw("POST", "/api/v1/trust", "application/json", &bytes)?;
            if out(&v) {
                let t: api::TrustRoot = typed(&v)?;
                println!("trust root version {} installed", t.version);
            }
        }
        Cmd::Audit(AuditCmd::List { from, limit }) => {
            let v = c.get(&format!("/api/v1/audit?from={from}&limit={limit}"))?;
            if out(&v) {
                let l: api::AuditRecords = typed(&v)?;
                println!(
                    "{:<6} {:<28} {:<18} {:<28} {:<22} DETAIL",
                    "SEQ", "TIME", "ACTION", "ACTOR", "MODEL"
                );
                for r in &l.records {
                    let target = match (&r.model, &r.version) {
                        (Some(m), Some(v)) => format!("{m} {v}"),
                        (Some(m), None) => m.clone(),
                        _ => "-".into(),
                    };
                    println!(
                        "{:<6} {:<28} {:<18} {:<28} {:<22} {}",
                        r.seq.to_string(),
                        r.time,
                        r.action,
                        r.actor,
                        target,
                        r.detail
                    );
                }
            }
        }
        Cmd::Telemetry(TelemetryCmd::Series { selector }) => {
            let path = match selector {
                Some(s) => format!("/api/v1/telemetry/series?match={}", paths::segment(s)),
                None => "/api/v1/telemetry/series".into(),
            };
            let v = c.get(&path)?;
            if out(&v) {
                telemetry::print_catalog(&typed(&v)?);
            }
        }
        Cmd::Telemetry(TelemetryCmd::Query {
            series,
            from,
            to,
            points,
        }) => {
            let v = c.get(&paths::telemetry_query(series, from, to, *points))?;
            if out(&v) {
                telemetry::print_answer(&typed(&v)?);
            }
        }
        Cmd::Telemetry(TelemetryCmd::Traces {
            trace_id,
            model,
            status,
            since,
            min_duration_ms,
            limit,
        }) => {
            let mut q = format!("from={}&limit={limit}", paths::segment(since));
            for (k, v) in [("trace_id", trace_id), ("model", model), ("status", status)] {
                if let Some(v) = v {
                    q.push_str(&format!("&{k}={}", paths::segment(v)));
                }
            }
            if let Some(ms) = min_duration_ms {
                q.push_str(&format!("&min_duration_ms={ms}"));
            }
            let v = c.get(&format!("/api/v1/telemetry/traces?{q}"))?;
            if out(&v) {
                telemetry::print_traces(&typed(&v)?, trace_id.is_some());
            }
        }
        Cmd::Top { interval, once } => {
            telemetry::top(&c, Duration::from_secs(*interval), *once)?;
        }
        Cmd::Audit(AuditCmd::Verify) => {
            let v = c.get("/api/v1/audit/verify")?;
            if out(&v) {
                let a: api::AuditVerified = typed(&v)?;
                println!("audit chain verified: {} records", a.records);
            }
        }
        Cmd::Token(TokenCmd::Create { name, scopes }) => {
            let v = c.call(
                "POST",
                "/api/v1/tokens",
                Some(&api::NewTokenRequest {
                    name: name.clone(),
                    scopes: scopes.clone(),
                }),
            )?;
            if out(&v) {
                let t: api::TokenSecret = typed(&v)?;
                println!(
                    "token {} ({}) created for {}",
                    t.info.id,
                    t.info.name,
                    t.info.scopes.join(", ")
                );
                println!("{}", t.token);
                eprintln!("store it now: it cannot be shown again");
            }
        }
        Cmd::Token(TokenCmd::List) => {
            let v = c.get("/api/v1/tokens")?;
            if out(&v) {
                let l: api::TokenList = typed(&v)?;
                println!(
                    "{:<18} {:<20} {:<30} {:<22} REVOKED",
                    "ID", "NAME", "SCOPES", "CREATED"
                );
                for t in &l.tokens {
                    println!(
                        "{:<18} {:<20} {:<30} {:<22} {}",
                        t.id,
                        t.name,
                        t.scopes.join(","),
                        t.created_at,
                        dash(&t.revoked_at)
                    );
                }
            }
        }
        Cmd::Token(TokenCmd::Rotate { id }) => {
            let v = c.call::<()>("POST", &format!("{}/rotate", paths::token(id)), None)?;
            if out(&v) {
                let t: api::TokenSecret = typed(&v)?;
                println!(
                    "token {id} ({}) rotated; the previous secret keeps working for {} s",
                    t.info.name,
                    t.previous_valid_for_s.unwrap_or(0)
                );
                println!("{}", t.token);
                eprintln!("store it now: it cannot be shown again");
            }
        }
        Cmd::Token(TokenCmd::Revoke { id }) => {
            let v = c.call::<()>("DELETE", &paths::token(id), None)?;
            if out(&v) {
                let _: api::Token = typed(&v)?;
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
