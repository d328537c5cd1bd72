//! Faults a datacenter produces, on the real daemon: a nearly full and a full data disk (small
//! tmpfs filesystems this test mounts and unmounts), a store file of one model removed or
//! truncated, a trust root deleted or replaced by an older one, a SIGKILL inside retention.
//! Each test names the invariant it holds: the appliance never loses its state or its other
//! models, and what it shows is what is on disk.

// In tests a panic is the failure report; unwrapping is the assertion.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use airlock_tests::{
    airlockctl_as, audit_log, bin, bootstrapped_dev_dir, http, iris_bundle, iris_infer,
    production_server, production_server_in, restart_production, wait_until, DevServer,
};
use serde_json::Value;

/// Root administers the appliance (the harness creates the tests' token as root).
const ROOT: &[(&str, &str)] = &[("uid:0", "admin")];

/// A small tmpfs mounted over `dir` (which it hides) for this test (no loop device needed);
/// unmounted when dropped.
pub(crate) struct Tmpfs(PathBuf);

impl Tmpfs {
    pub(crate) fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0750"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success(), "mount a tmpfs (the tests run as root)");
        Tmpfs(dir.to_path_buf())
    }

    fn available(&self) -> u64 {
        airlock_updater::store::available_space(&self.0).unwrap()
    }

    /// Fills the filesystem until `left` bytes (to the filesystem's block) are available:
    /// files `fill.N` at its root (a few rounds where a filesystem spends blocks on extents).
    pub(crate) fn leave(&self, left: u64) {
        self.unfill();
        for n in 0..64 {
            let avail = self.available();
            if avail <= left {
                return;
            }
            let mut size = avail - left;
            while size > 0 {
                let ok = Command::new("fallocate")
                    .args(["-l", &size.to_string()])
                    .arg(self.0.join(format!("fill.{n}")))
                    .stderr(std::process::Stdio::null())
                    .status()
                    .unwrap()
                    .success();
                if ok {
                    break;
                }
                size = size.saturating_sub(4096);
            }
            if size == 0 {
                return;
            }
        }
    }

    pub(crate) fn unfill(&self) {
        for e in std::fs::read_dir(&self.0).unwrap().flatten() {
            if e.file_name().to_string_lossy().starts_with("fill.") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A scratch directory as `bootstrapped_dev_dir` makes it, with its data dir `airlock-dev/`
/// moved onto a tmpfs of `size`.
fn dev_dir_on_tmpfs(size: &str) -> (tempfile::TempDir, Tmpfs) {
    let dir = bootstrapped_dev_dir();
    let data = dir.path().join("airlock-dev");
    let orig = dir.path().join("airlock-dev.orig");
    std::fs::rename(&data, &orig).unwrap();
    let fs = Tmpfs::mount(&data, size);
    let st = Command::new("cp")
        .args(["-a", "--sparse=always"])
        .arg(format!("{}/.", orig.display()))
        .arg(&data)
        .status()
        .unwrap();
    assert!(st.success(), "copy the data dir onto the tmpfs");
    std::fs::remove_dir_all(&orig).unwrap();
    (dir, fs)
}

/// A production configuration for `airlockd --once` over the data dir in `dir`.
fn once_config(dir: &Path, state_reserve: &str) -> PathBuf {
    let d = dir.display();
    let p = dir.join("once.toml");
    std::fs::write(
        &p,
        format!(
            "[paths]\ndata_dir = \"{d}/airlock-dev\"\ninitial_trust_root = \"{d}/airlock-dev/dev/root.json\"\n\
             [approval]\nmode = \"unattended-dev\"\n\
             [server]\nlisten = \"127.0.0.1:0\"\ntls = false\n[grpc]\nlisten = \"127.0.0.1:0\"\n[logging]\ndir = \"{d}/logs\"\n\
             [bundles]\nreserve_free_space = \"0B\"\n[state]\nreserve_free_space = \"{state_reserve}\"\n\
             [daemon]\nallow_root = true\n[admin]\nsocket = \"{d}/once.sock\"\n"
        ),
    )
    .unwrap();
    p
}

/// `airlockd --config CONFIG --once`: (success, stderr).
fn once(config: &Path) -> (bool, String) {
    let out = Command::new(bin("airlockd"))
        .arg("--config")
        .arg(config)
        .arg("--once")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn generating(state: &Path) -> Vec<String> {
    std::fs::read_dir(state)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".generating"))
        .collect()
}

/// Writes `n` audit records into the data dir's state (no daemon running), so that sled's log
/// moves into a fresh, partly written segment: the next open zeroes the rest of it, which is
/// where a nearly full disk bites.
fn grow_state(data: &Path, n: usize) {
    let r = airlock_updater::Registry::open(
        &data.join("state"),
        airlock_updater::ApprovalPolicy::UnattendedDev,
        0,
    )
    .unwrap();
    let now = time::OffsetDateTime::now_utc();
    for i in 0..n {
        r.audit_only(
            now,
            &[airlock_updater::AuditEntry {
                actor: "test".into(),
                action: "filler".into(),
                model: None,
                version: None,
                detail: serde_json::json!({ "i": i, "pad": "x".repeat(200) }),
            }],
        )
        .unwrap();
    }
}

fn audit_records(data: &Path) -> u64 {
    airlock_updater::Registry::open(
        &data.join("state"),
        airlock_updater::ApprovalPolicy::UnattendedDev,
        0,
    )
    .unwrap()
    .verify_audit()
    .unwrap()
}

#[test]
fn a_start_on_a_nearly_full_disk_never_leaves_the_state_database_unopenable() {
    let (dir, fs) = dev_dir_on_tmpfs("24m");
    let data = dir.path().join("airlock-dev");
    grow_state(&data, 1500);
    // The daemon writes a few changes and is killed (a crash, a power cut): its log runs past
    // sled's last snapshot, so the next start writes a new one.
    let (s, sock, _) = production_server_in(
        dir,
        ROOT,
        "mode = \"approvers\"",
        "[state]\nreserve_free_space = \"0B\"",
        "",
        "",
        &[],
    );
    for i in 0..3 {
        let name = format!("k{i}");
        assert_eq!(
            ctl(
                &sock,
                &["token", "create", "--name", &name, "--scope", "metrics"]
            )
            .0,
            0
        );
    }
    // (Counted by the daemon: opening the state here would close it cleanly, with a snapshot.)
    let records = chain_len(&sock);
    let dir = s.kill();
    // The state as it is now, holes kept, to start every attempt from the same bytes.
    let pristine = dir.path().join("state.pristine");
    let cp = |from: &Path, to: &Path| {
        let _ = std::fs::remove_dir_all(to);
        let st = Command::new("cp")
            .args(["-a", "--sparse=always"])
            .arg(from)
            .arg(to)
            .status()
            .unwrap();
        assert!(st.success());
    };
    cp(&data.join("state"), &pristine);
    // Without its snapshot (as a crash before sled's first one leaves it), so that the start
    // rebuilds it from the log and writes it: the step a nearly full disk interrupts.
    for e in std::fs::read_dir(&pristine).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with("snap.") {
            std::fs::remove_file(e.path()).unwrap();
        }
    }

    // 1. Without a reserve (the old behaviour's exposure): a start with `free` bytes left.
    // It may fail half-way (and leave `snap.*.generating`); once space is back, the next start
    // must open the intact state. Returns (the first start succeeded, it left a leftover).
    let bare = once_config(dir.path(), "0B");
    let attempt = |free: u64| -> (bool, bool, bool) {
        cp(&pristine, &data.join("state"));
        fs.leave(free);
        let (ok, err) = once(&bare);
        assert!(
            !err.contains("panicked"),
            "free {free} B: a clear error, not a panic: {err}"
        );
        let leftover = !generating(&data.join("state")).is_empty();
        let snapshot = std::fs::read_dir(data.join("state"))
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("snap."));
        fs.unfill();
        let (again, err) = once(&bare);
        assert!(
            again && err.contains("audit chain verified records="),
            "free {free} B, then space freed: the next start must open the intact state: {err}"
        );
        assert!(
            generating(&data.join("state")).is_empty(),
            "leftover removed"
        );
        (ok, leftover, snapshot)
    };
    // Free space from nothing up in 16 KiB steps until a start succeeds, noting the first
    // step at which the start got as far as its snapshot; then that step's 16 KiB in 1 KiB
    // steps (the filesystem's blocks are 4 KiB): the band in which sled's start fails right
    // after creating its snapshot file.
    let mut band = Vec::new();
    let (mut first_ok, mut first_snapshot) = (None, None);
    for free in (0..=256u64).map(|i| i * 16 * 1024) {
        let (ok, leftover, snapshot) = attempt(free);
        if leftover {
            band.push(free);
        }
        if snapshot && first_snapshot.is_none() {
            first_snapshot = Some(free);
        }
        if ok {
            first_ok = Some(free);
            break;
        }
    }
    let upper = first_snapshot.expect("a start gets as far as its snapshot with 4 MiB free");
    for free in (upper.saturating_sub(16 * 1024)..upper).step_by(1024) {
        if attempt(free).1 {
            band.push(free);
        }
    }
    assert!(first_ok.is_some(), "a start succeeds with 4 MiB free");
    assert!(
        !band.is_empty(),
        "the sweep must reach the band in which sled leaves an unfinished snapshot"
    );
    eprintln!("sled left an unfinished snapshot with {band:?} bytes free; starts succeed from {first_ok:?}");
    assert!(audit_records(&data) >= records, "nothing was lost");

    // 2. With the reserve: below it sled is not started at all, with a message that says how
    // much is needed, and the state is left byte for byte as it was.
    let guarded = once_config(dir.path(), "4MiB");
    cp(&pristine, &data.join("state"));
    let before = airlock_tests::fixtures::snapshot(&data.join("state"));
    for kib in [0u64, 488, 1024, 3 * 1024] {
        fs.leave(kib * 1024);
        let (ok, err) = once(&guarded);
        assert!(!ok, "free {kib} KiB: refused");
        assert!(
            err.contains("not enough free disk space to open the state database")
                && err.contains("needed")
                && err.contains("[state] reserve_free_space"),
            "{err}"
        );
        assert!(!err.contains("corrupt"), "{err}");
        assert_eq!(
            airlock_tests::fixtures::snapshot(&data.join("state")),
            before,
            "free {kib} KiB: the state is untouched"
        );
    }
    fs.unfill();
    let (ok, err) = once(&guarded);
    assert!(ok, "{err}");
}

fn ctl(sock: &Path, args: &[&str]) -> (i32, String, String) {
    airlockctl_as(None, sock, args)
}

fn json_of(r: (i32, String, String)) -> Value {
    assert_eq!(r.0, 0, "{}{}", r.1, r.2);
    serde_json::from_str(&r.1).unwrap()
}

fn token_ids(sock: &Path) -> Vec<String> {
    json_of(ctl(sock, &["--json", "token", "list"]))["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect()
}

fn chain_len(sock: &Path) -> u64 {
    json_of(ctl(sock, &["--json", "audit", "verify"]))["records"]
        .as_u64()
        .unwrap()
}

#[test]
fn on_a_full_disk_a_change_is_refused_before_it_starts_or_not_shown_at_all() {
    let (dir, fs) = dev_dir_on_tmpfs("16m");
    let (s, sock, _) = production_server_in(
        dir,
        ROOT,
        "mode = \"approvers\"",
        "[state]\nreserve_free_space = \"2MiB\"",
        "",
        "",
        &[],
    );
    let tokens = token_ids(&sock);
    let records = chain_len(&sock);
    // Below the reserve: refused with 507 before anything is written.
    fs.leave(1 << 20);
    let (code, out, err) = ctl(
        &sock,
        &[
            "--json", "token", "create", "--name", "late", "--scope", "metrics",
        ],
    );
    assert_ne!(code, 0, "{out}");
    let all = format!("{out}{err}");
    assert!(
        all.contains("not enough free disk space to record this change") && all.contains("(507)"),
        "{all}"
    );
    assert_eq!(token_ids(&sock), tokens, "nothing shown");
    assert_eq!(chain_len(&sock), records, "nothing recorded");
    fs.unfill();
    let dir = s.kill();

    // No reserve: writes go on until sled's preallocated space is used up. Every create is
    // either acknowledged (and then on disk) or refused (and then shown nowhere).
    let cfg = dir.path().join("prod.toml");
    let body = std::fs::read_to_string(&cfg).unwrap().replace(
        "reserve_free_space = \"2MiB\"",
        "reserve_free_space = \"0B\"",
    );
    std::fs::write(&cfg, body).unwrap();
    let s = restart_production(dir, &[]);
    fs.leave(0);
    let mut acknowledged = token_ids(&sock);
    let mut refusal = None;
    for i in 0..3000 {
        let name = format!("t{i}");
        let r = ctl(
            &sock,
            &[
                "--json", "token", "create", "--name", &name, "--scope", "metrics",
            ],
        );
        if r.0 == 0 {
            let v: Value = serde_json::from_str(&r.1).unwrap();
            acknowledged.push(v["id"].as_str().unwrap().to_string());
        } else {
            refusal = Some(format!("{}{}", r.1, r.2));
            break;
        }
    }
    let refusal = refusal.expect("a full disk refuses a change at last");
    eprintln!(
        "refused after {} acknowledged creates: {refusal}",
        acknowledged.len()
    );
    assert!(
        refusal.contains("(503): the change was not recorded") || refusal.contains("(507)"),
        "{refusal}"
    );
    assert!(!refusal.contains("panicked"), "{refusal}");
    // While the disk is full the state is either shown as it is on disk or not at all.
    let (code, out, err) = ctl(&sock, &["--json", "token", "list"]);
    if code == 0 {
        let shown: Vec<String> = serde_json::from_str::<Value>(&out).unwrap()["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_string())
            .collect();
        let mut a = acknowledged.clone();
        a.sort();
        let mut b = shown;
        b.sort();
        assert_eq!(a, b, "shown while full = acknowledged");
    } else {
        assert!(
            format!("{out}{err}").contains("(503): the state database is not available"),
            "{out}{err}"
        );
    }
    // Space back: the running daemon shows exactly what was acknowledged, and so does a
    // restarted one (what it showed was on disk).
    fs.unfill();
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let acknowledged = sorted(acknowledged);
    wait_until("the state database reopened", || {
        ctl(&sock, &["--json", "token", "list"]).0 == 0
    });
    assert_eq!(sorted(token_ids(&sock)), acknowledged);
    let shown_chain = chain_len(&sock);
    let s = restart_production(s.kill(), &[]);
    assert_eq!(sorted(token_ids(&sock)), acknowledged, "after a restart");
    assert_eq!(chain_len(&sock), shown_chain, "the chain did not shrink");
    drop(s);
    drop(fs);
}

/// The store directory of a model's active version.
fn active_store(data: &Path, model: &str) -> PathBuf {
    let r = airlock_updater::Registry::open(
        &data.join("state"),
        airlock_updater::ApprovalPolicy::UnattendedDev,
        0,
    )
    .unwrap();
    let m = r.model(model).unwrap().unwrap();
    let v = &m.versions[m.active.as_ref().unwrap()];
    data.join("store").join(&v.manifest_digest)
}

fn get(s: &DevServer, path: &str) -> (u16, String) {
    let (code, _, body) = http(&s.addr, "GET", path, &[], b"");
    (code, String::from_utf8_lossy(&body).into_owned())
}

#[test]
fn one_damaged_store_file_takes_down_only_its_own_model() {
    let dir = bootstrapped_dev_dir();
    let data = dir.path().join("airlock-dev");
    airlock_tests::install_dev_model(
        &data,
        "second",
        &airlock_signing::onnx::linear_classifier(&[0f32; 12], &[2.0, 0.0, 0.0]),
    )
    .unwrap();
    // A removed model.onnx of one active version.
    let second = active_store(&data, "second");
    std::fs::remove_file(second.join("model/model.onnx")).unwrap();
    let (s, sock, tok) = production_server_in(
        dir,
        ROOT,
        "mode = \"approvers\"",
        "",
        "",
        "",
        &[("NO_COLOR", "1")],
    );
    let auth = format!("Bearer {tok}");
    let hdr = [("Authorization", auth.as_str())];
    assert_eq!(iris_infer(&s.addr, &tok).0, 200, "the intact model serves");
    let row =
        br#"{"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"data":[5.1,3.5,1.4,0.2]}]}"#;
    let (code, _, body) = http(&s.addr, "POST", "/v2/models/second/infer", &hdr, row);
    let body = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(code, 503, "{body}");
    // Clients learn that it is unavailable; the store paths and the cause are for operators.
    assert!(body.contains("'second' is unavailable"), "{body}");
    assert!(
        !body.contains("store/") && !body.contains("model.onnx"),
        "{body}"
    );
    let (code, _, _) = http(&s.addr, "GET", "/v2/models/second/ready", &hdr, b"");
    assert_eq!(code, 400, "not ready");
    let (code, _, _) = http(&s.addr, "GET", "/v2/models/demo-iris/ready", &hdr, b"");
    assert_eq!(code, 200, "ready");
    // The repository index lists it as unavailable, without the cause either.
    let (code, _, body) = http(&s.addr, "POST", "/v2/repository/index", &hdr, b"{}");
    let index: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(code, 200, "{index}");
    let second = index
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "second")
        .cloned()
        .unwrap();
    assert_eq!(second["state"], "UNAVAILABLE", "{index}");
    assert!(
        !index.to_string().contains("store/") && !index.to_string().contains("model.onnx"),
        "{index}"
    );
    assert_eq!(
        get(&s, "/v2/health/ready").0,
        400,
        "strict server readiness"
    );
    assert_eq!(get(&s, "/v2/health/live").0, 200, "alive");
    let scrape = json_of(ctl(
        &sock,
        &[
            "--json", "token", "create", "--name", "scrape", "--scope", "metrics",
        ],
    ));
    let scrape = format!("Bearer {}", scrape["token"].as_str().unwrap());
    let (_, _, metrics) = http(
        &s.addr,
        "GET",
        "/metrics",
        &[("Authorization", scrape.as_str())],
        b"",
    );
    let metrics = String::from_utf8_lossy(&metrics).into_owned();
    assert!(
        metrics.contains("airlock_model_unavailable{model=\"second\",version=\"1.0.0\"} 1"),
        "{metrics}"
    );
    let status = json_of(ctl(&sock, &["--json", "models", "show", "second"]));
    assert!(
        status["unavailable"]["reason"]
            .as_str()
            .unwrap()
            .contains("model.onnx"),
        "{status}"
    );
    let rec = audit_log(&sock)
        .into_iter()
        .find(|r| r["action"] == "model_unavailable")
        .expect("audited");
    assert_eq!(rec["model"], "second");
    assert!(
        rec["detail"]["reason"]
            .as_str()
            .unwrap()
            .contains("model.onnx"),
        "{rec}"
    );
    assert!(
        s.log().contains("model unavailable") && s.log().contains("model.onnx"),
        "logged naming the file"
    );
    // The operator imports the same signed bundle again: the files are repaired, the model
    // serves, the registry keeps its history.
    let bundle = std::fs::read_dir(data_of(&s).join("src/second"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "airlock"))
        .unwrap();
    let (code, out, err) = ctl(&sock, &["bundle", "import", bundle.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("repaired"), "{out}");
    let (code, _, body) = http(&s.addr, "POST", "/v2/models/second/infer", &hdr, row);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(get(&s, "/v2/health/ready").0, 200);
    // A flipped byte (same size: only a full read sees it) is repaired the same way.
    let m = json_of(ctl(&sock, &["--json", "models", "show", "second"]));
    let digest = m["versions"][0]["manifest_sha256"]
        .as_str()
        .unwrap()
        .to_string();
    let second = data_of(&s).join("store").join(digest);
    let mut bytes = std::fs::read(second.join("model/model.onnx")).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(second.join("model/model.onnx"), &bytes).unwrap();
    let (code, out, err) = ctl(&sock, &["bundle", "import", bundle.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("repaired"), "{out}");
    let (code, _, _) = http(&s.addr, "POST", "/v2/models/second/infer", &hdr, row);
    assert_eq!(code, 200);
    // A second import of an intact release is still refused.
    let (code, out, err) = ctl(&sock, &["bundle", "import", bundle.to_str().unwrap()]);
    assert_ne!(code, 0);
    let all = format!("{out}{err}");
    assert!(
        all.contains("anti-rollback") || all.contains("on this appliance already"),
        "{all}"
    );

    // A truncated manifest.json of the other model: named as such, never "state database".
    let dir = s.kill();
    let data = dir.path().join("airlock-dev");
    let iris = active_store(&data, "demo-iris");
    let manifest = std::fs::read(iris.join("manifest.json")).unwrap();
    std::fs::write(iris.join("manifest.json"), &manifest[..manifest.len() / 2]).unwrap();
    let s = restart_production(dir, &[]);
    let (code, _, body) = http(&s.addr, "POST", "/v2/models/demo-iris/infer", &hdr, row);
    let body = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(code, 503, "{body}");
    let m = json_of(ctl(&sock, &["--json", "models", "show", "demo-iris"]));
    let reason = m["unavailable"]["reason"].as_str().unwrap().to_string();
    assert!(
        reason.contains("manifest.json") && reason.contains("truncated or modified"),
        "{reason}"
    );
    assert!(!reason.contains("state database") && !s.log().contains("state database"));
    let (code, _, _) = http(&s.addr, "POST", "/v2/models/second/infer", &hdr, row);
    assert_eq!(code, 200, "the other model serves");
}

fn data_of(s: &DevServer) -> PathBuf {
    s.dir.path().join("airlock-dev")
}

#[test]
fn a_vanished_or_older_trust_root_is_restored_from_the_registry_never_the_initial_one() {
    use airlock_signing::trust::{Role, RootBuilder};
    use airlock_signing::{PrivateKey, TrustRoot};
    let (s, sock, _) = production_server(ROOT, "mode = \"approvers\"", "", &[]);
    let data = data_of(&s);
    let root_file = data.join("trust/root.json");
    let v1 = std::fs::read(&root_file).unwrap();
    // Version 2 revokes the dev bundle key (and trusts a new one).
    let current = TrustRoot::from_json(&v1).unwrap();
    let root_key = PrivateKey::read(&data.join("dev/dev-root.key")).unwrap();
    let bundle_key = PrivateKey::read(&data.join("dev/dev-bundle.key")).unwrap();
    let mut b = RootBuilder::rotate_from(
        &current,
        time::OffsetDateTime::now_utc() + time::Duration::days(365),
    );
    b.add_key(Role::Bundle, PrivateKey::generate().unwrap().public())
        .revoke_key(bundle_key.public().key_id());
    let v2_path = s.dir.path().join("root-v2.json");
    std::fs::write(
        &v2_path,
        serde_json::to_vec_pretty(&b.signed(&[root_key]).unwrap()).unwrap(),
    )
    .unwrap();
    let (code, out, err) = ctl(&sock, &["trust", "import", v2_path.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let v2 = std::fs::read(&root_file).unwrap();
    let bundle = iris_bundle(&data, "1.1.0", 1.1, 0.0).unwrap();
    let refused = |sock: &Path| {
        let (code, out, err) = ctl(sock, &["bundle", "import", bundle.to_str().unwrap()]);
        assert_ne!(code, 0, "a bundle signed with the revoked key: {out}");
        assert!(format!("{out}{err}").contains("revoked"), "{out}{err}");
    };
    refused(&sock);

    // Deleted: restored from the registry's copy (version 2), audited, warned.
    let dir = s.kill();
    std::fs::remove_file(dir.path().join("airlock-dev/trust/root.json")).unwrap();
    let s = restart_production(dir, &[]);
    assert_eq!(std::fs::read(&root_file).unwrap(), v2, "version 2 is back");
    assert!(
        s.log()
            .contains("trust root restored from the registry's copy (version 2)"),
        "{}",
        s.log()
    );
    refused(&sock);
    // Replaced by the older version 1: the same, and the file found is kept aside.
    let dir = s.kill();
    std::fs::write(dir.path().join("airlock-dev/trust/root.json"), &v1).unwrap();
    let s = restart_production(dir, &[]);
    assert_eq!(std::fs::read(&root_file).unwrap(), v2);
    assert!(s.log().contains("held version 1"), "{}", s.log());
    let kept: Vec<_> = std::fs::read_dir(data.join("trust"))
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("root.json.found-")
        })
        .collect();
    assert_eq!(kept.len(), 1);
    assert_eq!(std::fs::read(kept[0].path()).unwrap(), v1);
    refused(&sock);
    let audit = audit_log(&sock);
    let restored: Vec<&Value> = audit
        .iter()
        .filter(|r| r["action"] == "trust_root_restored")
        .collect();
    assert_eq!(restored.len(), 2, "{audit:?}");
    assert_eq!(restored[0]["detail"]["version"], 2);
    assert!(restored[1]["detail"]["reason"]
        .as_str()
        .unwrap()
        .contains("held version 1"));
    let (code, out, _) = ctl(&sock, &["trust", "show"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("version 2") || out.contains("version: 2"),
        "{out}"
    );

    // Whoever can write the state database cannot plant a root there: the recorded chain is
    // verified from the image's initial root at every use, and a start refuses one that is not.
    let dir = s.kill();
    let mut evil = RootBuilder::rotate_from(
        &TrustRoot::from_json(&v1).unwrap(),
        time::OffsetDateTime::now_utc() + time::Duration::days(365),
    );
    let mallory = PrivateKey::generate().unwrap();
    evil.add_key(Role::Root, mallory.public())
        .add_key(Role::Bundle, mallory.public())
        .threshold(Role::Root, 1);
    let planted = serde_json::to_vec_pretty(&evil.signed(&[mallory]).unwrap()).unwrap();
    {
        let r = airlock_updater::Registry::open(
            &dir.path().join("airlock-dev/state"),
            airlock_updater::ApprovalPolicy::Approvers(1),
            0,
        )
        .unwrap();
        r.record_trust_roots(
            time::OffsetDateTime::now_utc(),
            &[v1.clone(), planted.clone()],
            &[],
        )
        .unwrap();
    }
    std::fs::write(dir.path().join("airlock-dev/trust/root.json"), &planted).unwrap();
    let out = Command::new(bin("airlockd"))
        .arg("--config")
        .arg(dir.path().join("prod.toml"))
        .arg("--once")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("trust root refused") && err.contains("not a rotation of the one before it"),
        "{err}"
    );
}

#[test]
fn retention_runs_after_the_answer_and_a_kill_inside_it_is_finished_at_start() {
    // retain_versions = 1: after three promotions the oldest retired version is pruned (the
    // newer retired one is the rollback target). Retention pauses at "prune:marked" for 60 s.
    let (s, sock, tok) = production_server(
        ROOT,
        "mode = \"unattended-dev\"",
        "[lifecycle]\nretain_versions = 1",
        &[("AIRLOCK_FAULT_PAUSE", "prune:marked:60000")],
    );
    let data = data_of(&s);
    for (v, value) in [("1.1.0", 1.1f32), ("1.2.0", 1.2)] {
        let b = iris_bundle(&data, v, value, 0.0).unwrap();
        let (code, out, err) = ctl(&sock, &["bundle", "import", b.to_str().unwrap(), "--watch"]);
        assert_eq!(code, 0, "{out}{err}");
        let start = Instant::now();
        let (code, out, err) = ctl(&sock, &["model", "promote", "demo-iris", v]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the promotion is answered without waiting for retention"
        );
    }
    // 1.0.0 is marked removed; retention is paused before deleting its files.
    wait_until("retention reached its pause", || {
        s.log().contains("fault point reached") && s.log().contains("prune:marked")
    });
    let m = json_of(ctl(&sock, &["--json", "models", "show", "demo-iris"]));
    let old = m["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["version"] == "1.0.0")
        .cloned()
        .unwrap();
    assert_eq!(old["state"], "removed", "{m}");
    let old_dir = data
        .join("store")
        .join(old["manifest_sha256"].as_str().unwrap());
    assert!(old_dir.exists(), "killed before the files went");
    let dir = s.kill();
    let s = restart_production(dir, &[]);
    assert!(!old_dir.exists(), "start finished the retention");
    assert!(
        s.log()
            .contains("finished the retention of a removed version"),
        "{}",
        s.log()
    );
    assert_eq!(
        iris_infer(&s.addr, &tok),
        (200, "1.2.0".into(), airlock_tests::iris_answer(1.2)),
        "serving as before"
    );
}

#[test]
fn a_rollback_and_its_reason_are_one_record_and_audit_times_have_one_format() {
    let (s, sock, tok) = production_server(ROOT, "mode = \"unattended-dev\"", "", &[]);
    let data = data_of(&s);
    let b = iris_bundle(&data, "1.1.0", 1.1, 0.0).unwrap();
    let (code, out, err) = ctl(&sock, &["bundle", "import", b.to_str().unwrap(), "--watch"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(ctl(&sock, &["model", "promote", "demo-iris", "1.1.0"]).0, 0);
    let (code, out, err) = ctl(
        &sock,
        &["model", "rollback", "demo-iris", "--reason", "drill 42"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let records = audit_log(&sock);
    let rb = records.iter().find(|r| r["action"] == "rollback").unwrap();
    assert_eq!(rb["detail"]["reason"], "drill 42", "{rb}");
    assert!(
        !records.iter().any(|r| r["action"] == "rollback_reason"),
        "no second record"
    );
    // One format: RFC 3339, UTC, six fractional digits.
    for r in &records {
        let t = r["time"].as_str().unwrap();
        assert!(
            t.len() == 27
                && t.ends_with('Z')
                && t.as_bytes()[19] == b'.'
                && time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                    .is_ok(),
            "{t}"
        );
    }
    assert_eq!(iris_infer(&s.addr, &tok).0, 200);
}

#[test]
fn a_model_whose_active_files_are_damaged_can_be_rolled_back_and_fixed_by_a_new_release() {
    let (s, sock, tok) = production_server(ROOT, "mode = \"unattended-dev\"", "", &[]);
    let data = data_of(&s);
    let import = |v: &str, value: f32| {
        let b = iris_bundle(&data, v, value, 0.0).unwrap();
        let (code, out, err) = ctl(&sock, &["bundle", "import", b.to_str().unwrap(), "--watch"]);
        assert_eq!(code, 0, "{out}{err}");
        out
    };
    import("1.1.0", 1.1);
    assert_eq!(ctl(&sock, &["model", "promote", "demo-iris", "1.1.0"]).0, 0);
    // The active version's model file is cut short.
    let dir = s.kill();
    let store = active_store(&dir.path().join("airlock-dev"), "demo-iris");
    let model = store.join("model/model.onnx");
    let bytes = std::fs::read(&model).unwrap();
    std::fs::write(&model, &bytes[..bytes.len() - 10]).unwrap();
    let s = restart_production(dir, &[]);
    let (code, _, _) = iris_infer(&s.addr, &tok);
    assert_eq!(code, 503);
    let m = json_of(ctl(&sock, &["--json", "models", "show", "demo-iris"]));
    let reason = m["unavailable"]["reason"].as_str().unwrap().to_string();
    assert!(
        reason.contains("model/model.onnx") && reason.contains("the manifest says"),
        "{reason}"
    );
    // A new release can still be imported and validated: the contract comparison says why it
    // could not be made.
    let out = import("1.2.0", 1.2);
    assert!(
        out.contains("VALIDATED") || out.contains("APPROVED"),
        "{out}"
    );
    let v = json_of(ctl(
        &sock,
        &["--json", "bundle", "show", "demo-iris", "1.2.0"],
    ));
    assert!(
        v["validation"]["contract_change"]
            .as_str()
            .unwrap_or("")
            .contains("could not be compared"),
        "{v}"
    );
    // Roll back: the previous version serves at once.
    let (code, out, err) = ctl(&sock, &["model", "rollback", "demo-iris"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, version, _) = iris_infer(&s.addr, &tok);
    assert_eq!((code, version.as_str()), (200, "1.0.0"));
    assert!(
        json_of(ctl(&sock, &["--json", "models", "show", "demo-iris"]))["unavailable"].is_null()
    );
    // And the new release goes into service.
    assert_eq!(ctl(&sock, &["model", "promote", "demo-iris", "1.2.0"]).0, 0);
    assert_eq!(
        iris_infer(&s.addr, &tok),
        (200, "1.2.0".into(), airlock_tests::iris_answer(1.2))
    );
}

#[test]
fn a_change_whose_flush_reports_a_failure_yet_reached_the_disk_stands_everywhere() {
    // Every flush reports a failure after it wrote (`AIRLOCK_FAULT_FAIL=state:flush`): the
    // reload from disk finds each change recorded, so each is acknowledged, and the answer, the
    // running daemon (registry and serving) and a restarted one agree.
    let (s, sock, tok) = production_server(
        ROOT,
        "mode = \"unattended-dev\"",
        "",
        &[("AIRLOCK_FAULT_FAIL", "state:flush")],
    );
    let data = data_of(&s);
    let made = json_of(ctl(
        &sock,
        &[
            "--json", "token", "create", "--name", "late", "--scope", "metrics",
        ],
    ));
    let id = made["id"].as_str().unwrap().to_string();
    assert!(token_ids(&sock).contains(&id));
    let b = iris_bundle(&data, "1.1.0", 1.1, 0.0).unwrap();
    let (code, out, err) = ctl(&sock, &["bundle", "import", b.to_str().unwrap(), "--watch"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = ctl(&sock, &["model", "promote", "demo-iris", "1.1.0"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(iris_infer(&s.addr, &tok).1, "1.1.0");
    let (code, out, err) = ctl(&sock, &["model", "rollback", "demo-iris"]);
    assert_eq!(code, 0, "{out}{err}");
    let active = |sock: &Path| {
        json_of(ctl(sock, &["--json", "models", "show", "demo-iris"]))["active"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(iris_infer(&s.addr, &tok).1, "1.0.0", "serving follows");
    assert_eq!(active(&sock), "1.0.0", "the registry says the same");
    assert!(
        s.log()
            .contains("yet the reload from disk finds it recorded"),
        "{}",
        s.log()
    );
    let records = chain_len(&sock);
    let s = restart_production(s.kill(), &[]);
    assert!(token_ids(&sock).contains(&id), "on disk");
    assert_eq!(chain_len(&sock), records, "the chain as shown");
    assert_eq!(active(&sock), "1.0.0");
    assert_eq!(iris_infer(&s.addr, &tok).1, "1.0.0");
}
