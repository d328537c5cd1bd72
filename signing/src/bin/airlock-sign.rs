//! `airlock-sign`: the release team's tool — keys, trust roots, and bundles (create, sign,
//! verify, inspect). Exit codes: 0 success, 1 the bundle or root was refused, 2 usage or I/O.
//!
//! Invariant: no private key material is ever printed; `bundle verify` writes nothing.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use airlock_config::ExpiryEnforcement;
use airlock_signing::manifest::{ExecutionProvider, Hardware, Limits, ModelName};
use airlock_signing::reader::{
    read_bundle, PayloadSink, ReadError, SignaturePolicy, VerifiedManifest,
};
use airlock_signing::trust::{sign_root, RoleKeys, RootBuilder, TrustRootFile};
use airlock_signing::writer::{add_signatures, plan, write_plan, CreateOptions};
use airlock_signing::{keys, Error, ExpiryCheck, KeyId, PrivateKey, Role, TrustRoot};
use anyhow::{anyhow, bail, Context};
use clap::{Args, Parser, Subcommand};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

#[derive(Parser)]
#[command(
    name = "airlock-sign",
    version,
    about = "Keys, trust roots and signed model bundles for airlock appliances"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate an Ed25519 key: KEY (private, mode 0600) and KEY.pub; prints the key id.
    Keygen {
        /// Where to write the private key (refuses to overwrite).
        #[arg(long)]
        out: PathBuf,
    },
    /// Trust roots: create, rotate, sign, verify.
    #[command(subcommand)]
    Trust(TrustCmd),
    /// Bundles: create, sign, verify, inspect.
    #[command(subcommand)]
    Bundle(BundleCmd),
}

#[derive(Subcommand)]
enum TrustCmd {
    /// Create trust root version 1.
    Init {
        /// Output file (refuses to overwrite).
        #[arg(long)]
        out: PathBuf,
        /// A key file (public or private) for the root role; repeat for several.
        #[arg(long = "root-key", required = true)]
        root_keys: Vec<PathBuf>,
        /// Root signatures needed to rotate.
        #[arg(long, default_value_t = 1)]
        root_threshold: u32,
        /// A key file for the bundle role (signs manifests); repeat for several.
        #[arg(long = "bundle-key", required = true)]
        bundle_keys: Vec<PathBuf>,
        /// Bundle signatures needed to import a bundle.
        #[arg(long, default_value_t = 1)]
        bundle_threshold: u32,
        /// A key file for the approver role (signed approvals); repeat for several.
        #[arg(long = "approver-key")]
        approver_keys: Vec<PathBuf>,
        /// Approver signatures needed for a signed approval.
        #[arg(long, default_value_t = 1)]
        approver_threshold: u32,
        /// Expiry: a duration from now (`365d`) or an RFC 3339 time.
        #[arg(long, default_value = "365d")]
        expires: String,
        /// Private root key(s) to sign with now (others can add theirs with `trust sign`).
        #[arg(long = "sign")]
        sign: Vec<PathBuf>,
    },
    /// Make version n+1 of a trust root. Dropped keys are revoked. It must then be signed by a
    /// threshold of the current root keys AND of the new root keys.
    Rotate {
        /// The current root.json.
        #[arg(long)]
        current: PathBuf,
        /// Output file (refuses to overwrite).
        #[arg(long)]
        out: PathBuf,
        /// Add a key to a role: ROLE=KEYFILE (role: root, bundle, approver).
        #[arg(long = "add-key")]
        add: Vec<String>,
        /// Drop and revoke a key: a key file or a key id.
        #[arg(long = "revoke-key")]
        revoke: Vec<String>,
        /// Set a threshold: ROLE=N.
        #[arg(long = "threshold")]
        thresholds: Vec<String>,
        /// Expiry of the new version.
        #[arg(long, default_value = "365d")]
        expires: String,
        /// Private root key(s) (current and/or new) to sign with now.
        #[arg(long = "sign")]
        sign: Vec<PathBuf>,
    },
    /// Add a root-role signature to a root.json (in place).
    Sign {
        /// The root.json.
        #[arg(long)]
        root: PathBuf,
        /// Private key to sign with.
        #[arg(long)]
        key: PathBuf,
    },
    /// Check a root's self-signatures and, with --current, that it is an acceptable rotation.
    Verify {
        /// The root.json to check.
        root: PathBuf,
        /// The root it should succeed.
        #[arg(long)]
        current: Option<PathBuf>,
    },
}

#[derive(Args)]
struct ExpiryArgs {
    /// The appliance's airlockd.toml: verify under its `[bundles]` limits and `[time]` policy.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Expiry enforcement: strict, grace or warn (default: the config's, else strict).
    #[arg(long)]
    enforcement: Option<String>,
    /// Grace window for --enforcement grace (e.g. `7d`; default: the config's, else 0s).
    #[arg(long)]
    grace: Option<String>,
}

#[derive(Args)]
struct CreateArgs {
    /// The .onnx file; external data it references is picked up from beside it.
    #[arg(long)]
    model: PathBuf,
    /// Extra external-data files.
    #[arg(long = "external-data")]
    external_data: Vec<PathBuf>,
    /// Golden vectors: DIR/<case>/inputs/<tensor>.npy and DIR/<case>/expected/<tensor>.npy.
    #[arg(long)]
    vectors: Option<PathBuf>,
    /// Model name.
    #[arg(long)]
    name: String,
    /// Model version (semver).
    #[arg(long)]
    version: String,
    /// Output file or directory (default: the current directory).
    #[arg(long, default_value = ".")]
    out: PathBuf,
    /// Private bundle key(s) to sign with now (others can add theirs with `bundle sign`).
    #[arg(long = "key")]
    keys: Vec<PathBuf>,
    /// Expiry: a duration from now (`90d`) or an RFC 3339 time.
    #[arg(long, default_value = "180d")]
    expires: String,
    /// Execution provider: cpu, cuda or any.
    #[arg(long, default_value = "any")]
    execution_provider: String,
    /// Minimum CUDA compute capability (e.g. 8.0).
    #[arg(long)]
    min_compute_capability: Option<String>,
    /// GPU memory budget in MiB.
    #[arg(long)]
    gpu_memory_mib: Option<u64>,
    /// Minimum ONNX Runtime version.
    #[arg(long)]
    min_onnxruntime: Option<String>,
    /// Minimum airlock version (default: this one).
    #[arg(long)]
    min_airlock_version: Option<String>,
    /// Relative tolerance for the vectors.
    #[arg(long, default_value_t = 1e-4)]
    rtol: f64,
    /// Absolute tolerance for the vectors.
    #[arg(long, default_value_t = 1e-5)]
    atol: f64,
    /// zstd level.
    #[arg(long, default_value_t = 3)]
    level: i32,
}

#[derive(Subcommand)]
enum BundleCmd {
    /// Build NAME-VERSION.airlock from an .onnx model and a vectors directory.
    Create(Box<CreateArgs>),
    /// Add signatures to a bundle (verifying every payload digest while copying).
    Sign {
        /// The bundle.
        bundle: PathBuf,
        /// Private key(s) to sign with.
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        /// Output (default: replace the bundle).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Perform every check the appliance's importer performs; writes nothing.
    Verify {
        /// The bundle.
        bundle: PathBuf,
        /// The trust root to verify against.
        #[arg(long)]
        trust: PathBuf,
        #[command(flatten)]
        expiry: ExpiryArgs,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a bundle's manifest and signers (no trust decision).
    Inspect {
        /// The bundle.
        bundle: PathBuf,
        /// Print the manifest as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// A refusal (exit 1), as opposed to a usage or I/O problem (exit 2).
struct Refused(Error);

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(Refused(inner)) = e.downcast_ref::<Refused>() {
                eprintln!("airlock-sign: refused ({}): {inner}", inner.kind());
                return ExitCode::from(1);
            }
            eprintln!("airlock-sign: {e:#}");
            ExitCode::from(2)
        }
    }
}

impl std::fmt::Debug for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}
impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}
impl std::error::Error for Refused {}

/// Bundle and trust errors are refusals; I/O and key-file errors are not.
fn refusal(e: Error) -> anyhow::Error {
    match e {
        Error::Io(_) | Error::KeyFile { .. } | Error::Input(_) => anyhow!(e),
        other => anyhow!(Refused(other)),
    }
}

fn parse_time(s: &str) -> anyhow::Result<OffsetDateTime> {
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t);
    }
    let d: airlock_config::HumanDuration = s.parse().map_err(|e: String| anyhow!(e))?;
    Ok(OffsetDateTime::now_utc() + d.get())
}

fn parse_role(s: &str) -> anyhow::Result<Role> {
    match s {
        "root" => Ok(Role::Root),
        "bundle" => Ok(Role::Bundle),
        "approver" => Ok(Role::Approver),
        _ => bail!("unknown role {s:?} (allowed: root, bundle, approver)"),
    }
}

fn read_keys(paths: &[PathBuf]) -> anyhow::Result<Vec<PrivateKey>> {
    paths
        .iter()
        .map(|p| PrivateKey::read(p).map_err(anyhow::Error::from))
        .collect()
}

fn root_bytes(file: &TrustRootFile) -> anyhow::Result<Vec<u8>> {
    let mut v = serde_json::to_vec_pretty(file)?;
    v.push(b'\n');
    Ok(v)
}

fn write_new(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("cannot create {} (it must not exist)", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Keygen { out } => {
            let key = PrivateKey::generate()?;
            let mut pub_path = out.clone().into_os_string();
            pub_path.push(".pub");
            let pub_path = PathBuf::from(pub_path);
            if pub_path.exists() {
                bail!(
                    "{} already exists; refusing to overwrite",
                    pub_path.display()
                );
            }
            key.write_new(&out)?;
            keys::write_public_key(&pub_path, &key.public())?;
            println!(
                "private key: {} (mode 0600; keep it offline)",
                out.display()
            );
            println!(
                "public key:  {} ({})",
                pub_path.display(),
                key.public().to_hex()
            );
            println!("key id:      {}", key.key_id());
            Ok(())
        }
        Cmd::Trust(t) => trust(t),
        Cmd::Bundle(b) => bundle(b),
    }
}

fn trust(cmd: TrustCmd) -> anyhow::Result<()> {
    match cmd {
        TrustCmd::Init {
            out,
            root_keys,
            root_threshold,
            bundle_keys,
            bundle_threshold,
            approver_keys,
            approver_threshold,
            expires,
            sign,
        } => {
            let mut b = RootBuilder::new(parse_time(&expires)?);
            for (role, files, threshold) in [
                (Role::Root, &root_keys, root_threshold),
                (Role::Bundle, &bundle_keys, bundle_threshold),
                (Role::Approver, &approver_keys, approver_threshold),
            ] {
                for f in files {
                    b.add_key(role, keys::read_public_key(f)?);
                }
                if !files.is_empty() {
                    b.threshold(role, threshold);
                }
            }
            let file = b.signed(&read_keys(&sign)?).map_err(refusal)?;
            write_new(&out, &root_bytes(&file)?)?;
            println!(
                "wrote {} (version 1, {} key(s))",
                out.display(),
                file.signed.keys.len()
            );
            report_root_signatures(&file, None)
        }
        TrustCmd::Rotate {
            current,
            out,
            add,
            revoke,
            thresholds,
            expires,
            sign,
        } => {
            let cur = TrustRoot::read(&current).map_err(refusal)?;
            let mut b = RootBuilder::rotate_from(&cur, parse_time(&expires)?);
            for spec in &revoke {
                let id = match KeyId::from_hex(spec) {
                    Some(id) => id,
                    None => keys::read_public_key(Path::new(spec))?.key_id(),
                };
                if !cur.body().keys.contains_key(&id) {
                    bail!("--revoke-key {spec}: key {id} is not in the current root");
                }
                b.revoke_key(id);
            }
            for spec in &add {
                let (role, path) = spec
                    .split_once('=')
                    .ok_or_else(|| anyhow!("--add-key wants ROLE=KEYFILE"))?;
                b.add_key(parse_role(role)?, keys::read_public_key(Path::new(path))?);
            }
            for spec in &thresholds {
                let (role, n) = spec
                    .split_once('=')
                    .ok_or_else(|| anyhow!("--threshold wants ROLE=N"))?;
                b.threshold(
                    parse_role(role)?,
                    n.parse().context("threshold must be a number")?,
                );
            }
            let file = b.signed(&read_keys(&sign)?).map_err(refusal)?;
            write_new(&out, &root_bytes(&file)?)?;
            println!("wrote {} (version {})", out.display(), file.signed.version);
            report_root_signatures(&file, Some(&cur))
        }
        TrustCmd::Sign { root, key } => {
            let text =
                std::fs::read(&root).with_context(|| format!("cannot read {}", root.display()))?;
            let mut file: TrustRootFile = serde_json::from_slice(&text)
                .map_err(|e| refusal(Error::InvalidTrustRoot(e.to_string())))?;
            sign_root(&mut file, &PrivateKey::read(&key)?)?;
            airlock_signing::writer::write_atomically(&root, |w| {
                use std::io::Write;
                w.write_all(&root_bytes(&file).map_err(|e| Error::Input(e.to_string()))?)?;
                Ok(())
            })?;
            println!(
                "signed {} ({} signature(s))",
                root.display(),
                file.signatures.len()
            );
            report_root_signatures(&file, None)
        }
        TrustCmd::Verify { root, current } => {
            let bytes =
                std::fs::read(&root).with_context(|| format!("cannot read {}", root.display()))?;
            let new = match current {
                Some(c) => {
                    let cur = TrustRoot::read(&c).map_err(refusal)?;
                    cur.accept_rotation(&bytes, &ExpiryCheck::strict_now())
                        .map_err(refusal)?
                }
                None => {
                    let r = TrustRoot::from_json(&bytes).map_err(refusal)?;
                    r.check_expiry(&ExpiryCheck::strict_now())
                        .map_err(refusal)?;
                    r
                }
            };
            print_root(&new);
            println!("OK");
            Ok(())
        }
    }
}

/// Says which thresholds a root's signatures meet so far (a root is signed by several people).
fn report_root_signatures(file: &TrustRootFile, current: Option<&TrustRoot>) -> anyhow::Result<()> {
    let canon = file.signed.canonical_bytes()?;
    let state = |r: Result<_, Error>| match r {
        Ok(_) => "met".to_string(),
        Err(e) => format!("not yet: {e}"),
    };
    println!(
        "own root threshold: {}",
        state(file.signed.count_signatures(
            Role::Root,
            airlock_signing::SigningContext::TrustRoot,
            &canon,
            &file.signatures
        ))
    );
    if let Some(cur) = current {
        println!(
            "current root (version {}) threshold: {}",
            cur.version(),
            state(cur.count_signatures(
                Role::Root,
                airlock_signing::SigningContext::TrustRoot,
                &canon,
                &file.signatures
            ))
        );
    }
    Ok(())
}

fn print_root(r: &TrustRoot) {
    let b = r.body();
    println!(
        "trust root version {} expires {}",
        b.version,
        airlock_signing::clock::rfc3339(b.expires)
    );
    for (role, RoleKeys { keyids, threshold }) in &b.roles {
        let ids: Vec<String> = keyids.iter().map(|k| k.short()).collect();
        println!(
            "  {role:<9} {threshold} of {}: {}",
            keyids.len(),
            ids.join(" ")
        );
    }
    if !b.revoked.is_empty() {
        let ids: Vec<String> = b.revoked.iter().map(|k| k.short()).collect();
        println!("  revoked   {}", ids.join(" "));
    }
}

/// Stops reading after the manifest: `bundle inspect` needs no payload.
struct HeaderOnly;

impl PayloadSink for HeaderOnly {
    type Error = ();
    fn begin(&mut self, _: &VerifiedManifest) -> Result<(), ()> {
        Err(())
    }
    fn file(
        &mut self,
        _: &airlock_signing::manifest::FileEntry,
        _: &mut dyn std::io::Read,
    ) -> Result<(), ()> {
        Err(())
    }
}

fn open(path: &Path) -> anyhow::Result<BufReader<File>> {
    Ok(BufReader::with_capacity(
        1 << 20,
        File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
    ))
}

fn bundle(cmd: BundleCmd) -> anyhow::Result<()> {
    let limits = Limits::default();
    match cmd {
        BundleCmd::Create(args) => {
            let CreateArgs {
                model,
                external_data,
                vectors,
                name,
                version,
                out,
                keys,
                expires,
                execution_provider,
                min_compute_capability,
                gpu_memory_mib,
                min_onnxruntime,
                min_airlock_version,
                rtol,
                atol,
                level,
            } = *args;
            let execution_provider = match execution_provider.as_str() {
                "cpu" => ExecutionProvider::Cpu,
                "cuda" => ExecutionProvider::Cuda,
                "any" => ExecutionProvider::Any,
                other => bail!("--execution-provider {other:?}: allowed are cpu, cuda, any"),
            };
            let opts = CreateOptions {
                name: ModelName::parse(&name).map_err(|e| anyhow!(e))?,
                version: semver::Version::parse(&version)
                    .with_context(|| format!("--version {version:?} is not semver"))?,
                hardware: Hardware {
                    execution_provider,
                    min_compute_capability,
                    gpu_memory_budget_mib: gpu_memory_mib,
                    min_onnxruntime: min_onnxruntime
                        .map(|v| {
                            semver::Version::parse(&v)
                                .with_context(|| format!("--min-onnxruntime {v:?} is not semver"))
                        })
                        .transpose()?,
                },
                issued_at: OffsetDateTime::now_utc().replace_nanosecond(0)?,
                expires_at: parse_time(&expires)?.replace_nanosecond(0)?,
                min_airlock_version: match min_airlock_version {
                    Some(v) => semver::Version::parse(&v)?,
                    None => semver::Version::parse(env!("CARGO_PKG_VERSION"))?,
                },
                rtol,
                atol,
            };
            let keys = read_keys(&keys)?;
            let p = plan(&model, &external_data, vectors.as_deref(), &opts)?;
            let dest = if out.is_dir() {
                out.join(p.manifest.bundle_file_name())
            } else {
                out
            };
            let digest = write_plan(&p, &keys, &dest, level)?;
            println!(
                "wrote {} ({} files, {} payload bytes, {} vector case(s), {} signature(s))",
                dest.display(),
                p.manifest.files.len(),
                p.manifest.payload_size(),
                p.manifest.vectors.len(),
                keys.len()
            );
            println!("manifest sha256: {digest}");
            Ok(())
        }
        BundleCmd::Sign { bundle, keys, out } => {
            let keys = read_keys(&keys)?;
            let added: Vec<KeyId> = keys.iter().map(PrivateKey::key_id).collect();
            let dest = out.unwrap_or_else(|| bundle.clone());
            let v = add_signatures(&bundle, &dest, keys, &limits, 3).map_err(refusal)?;
            let mut signers: BTreeSet<KeyId> = v.signatures.iter().map(|s| s.keyid).collect();
            signers.extend(added.iter().copied());
            let ids: Vec<String> = added.iter().map(KeyId::short).collect();
            println!(
                "signed {} as {} ({} distinct signer(s) now)",
                dest.display(),
                ids.join(", "),
                signers.len()
            );
            Ok(())
        }
        BundleCmd::Verify {
            bundle,
            trust,
            expiry,
            json,
        } => {
            let root = TrustRoot::read(&trust).map_err(refusal)?;
            let config = match &expiry.config {
                Some(p) => airlock_config::load(p)?,
                None => airlock_config::Config {
                    time: airlock_config::TimeConfig {
                        enforcement: ExpiryEnforcement::Strict,
                        grace: airlock_config::HumanDuration::from_secs(0),
                        ..Default::default()
                    },
                    ..Default::default()
                },
            };
            let limits = Limits::from(&config.bundles);
            let enforcement = match expiry.enforcement.as_deref() {
                None => config.time.enforcement,
                Some("strict") => ExpiryEnforcement::Strict,
                Some("grace") => ExpiryEnforcement::Grace,
                Some("warn") => ExpiryEnforcement::Warn,
                Some(o) => bail!("--enforcement {o:?}: allowed are strict, grace, warn"),
            };
            let grace = match &expiry.grace {
                Some(g) => g.parse().map_err(|e: String| anyhow!(e))?,
                None => config.time.grace,
            };
            let policy = SignaturePolicy::TrustRoot {
                root: &root,
                expiry: ExpiryCheck {
                    now: OffsetDateTime::now_utc(),
                    enforcement,
                    grace: grace.get(),
                    // What an appliance with this configuration would accept.
                    latest_issue: time::Duration::try_from(config.time.max_clock_skew.get())
                        .ok()
                        .and_then(|d| OffsetDateTime::now_utc().checked_add(d)),
                },
            };
            let v = airlock_signing::verify_bundle(open(&bundle)?, &policy, &limits);
            match v {
                Ok(v) => {
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({
                                "ok": true,
                                "model": v.manifest.model.name.as_str(),
                                "version": v.manifest.model.version.to_string(),
                                "manifest_sha256": v.digest.to_hex(),
                                "signers": v.signers.iter().map(|k| k.to_string()).collect::<Vec<_>>(),
                                "warnings": v.warnings,
                            })
                        );
                    } else {
                        println!(
                            "OK {} {} — {} files, {} bytes, signed by {} of the bundle role ({})",
                            v.manifest.model.name,
                            v.manifest.model.version,
                            v.manifest.files.len(),
                            v.manifest.payload_size(),
                            v.signers.len(),
                            v.signers
                                .iter()
                                .map(|k| k.short())
                                .collect::<Vec<_>>()
                                .join(", ")
                        );
                        for w in &v.warnings {
                            println!("warning: {w}");
                        }
                    }
                    Ok(())
                }
                Err(e) => {
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({"ok": false, "error": e.kind(), "message": e.to_string()})
                        );
                    }
                    Err(refusal(e))
                }
            }
        }
        BundleCmd::Inspect { bundle, json } => {
            let mut header = None;
            struct Capture<'a>(&'a mut Option<VerifiedManifest>);
            impl PayloadSink for Capture<'_> {
                type Error = ();
                fn begin(&mut self, v: &VerifiedManifest) -> Result<(), ()> {
                    *self.0 = Some(v.clone());
                    HeaderOnly.begin(v)
                }
                fn file(
                    &mut self,
                    e: &airlock_signing::manifest::FileEntry,
                    d: &mut dyn std::io::Read,
                ) -> Result<(), ()> {
                    HeaderOnly.file(e, d)
                }
            }
            match read_bundle(
                open(&bundle)?,
                &SignaturePolicy::UnverifiedReleaseSide,
                &limits,
                &mut Capture(&mut header),
            ) {
                Ok(_) | Err(ReadError::Sink(())) => {}
                Err(ReadError::Bundle(e)) => return Err(refusal(e)),
            }
            let v = header.ok_or_else(|| anyhow!("no manifest read"))?;
            if json {
                println!("{}", String::from_utf8_lossy(&v.manifest_bytes));
                return Ok(());
            }
            let m = &v.manifest;
            println!(
                "bundle      {} (signatures NOT checked: use `bundle verify --trust`)",
                bundle.display()
            );
            println!("model       {} {}", m.model.name, m.model.version);
            println!("manifest    sha256 {}", v.digest);
            println!(
                "issued      {}",
                airlock_signing::clock::rfc3339(m.issued_at)
            );
            println!(
                "expires     {}",
                airlock_signing::clock::rfc3339(m.expires_at)
            );
            println!("airlock     >= {}", m.min_airlock_version);
            let h = &m.hardware;
            println!(
                "hardware    provider {:?}, compute capability {}, GPU memory {}, ONNX Runtime {}",
                h.execution_provider,
                h.min_compute_capability.as_deref().unwrap_or("any"),
                h.gpu_memory_budget_mib
                    .map(|m| format!("{m} MiB"))
                    .unwrap_or("unspecified".into()),
                h.min_onnxruntime
                    .as_ref()
                    .map(|v| format!(">= {v}"))
                    .unwrap_or("any".into())
            );
            for t in &m.contract.inputs {
                println!("input       {} {}", t.name, t.describe());
            }
            for t in &m.contract.outputs {
                println!("output      {} {}", t.name, t.describe());
            }
            for f in &m.files {
                println!(
                    "file        {:<40} {:>12} {} {:?}",
                    f.path, f.size, f.sha256, f.role
                );
            }
            for c in &m.vectors {
                println!(
                    "vector      {} ({} in, {} expected, rtol {}, atol {})",
                    c.name,
                    c.inputs.len(),
                    c.expected.len(),
                    c.rtol,
                    c.atol
                );
            }
            for s in &v.signatures {
                println!("signature   {}", s.keyid);
            }
            Ok(())
        }
    }
}
