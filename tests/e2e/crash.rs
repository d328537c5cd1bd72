//! Crash safety: a child process drives the lifecycle in a loop and is killed with SIGKILL at
//! arbitrary moments (mid-import, mid-transaction, mid-promotion). After every kill the data
//! directory is reopened and must be in a state that existed before or after a step: the audit
//! chain verifies, no promotion is half-done, at most one version is active and it is the
//! model's `active`, every recorded version has its complete store directory, nothing is left in
//! staging, and every step the child reported as committed is still there.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use airlock_config::{ApprovalMode, ByteSize, Config};
use airlock_tests::{bin, fixtures};
use airlock_updater::{Updater, VersionState};

fn check(dir: &std::path::Path, committed: &[String]) -> u64 {
    let mut c = Config::default();
    c.paths.data_dir = dir.join("data");
    c.bundles.reserve_free_space = ByteSize(0);
    c.approval.mode = ApprovalMode::UnattendedDev;
    let u = Updater::open(&c).expect("reopen after SIGKILL");
    let r = u.registry();
    r.verify_audit().expect("audit chain intact after SIGKILL");
    assert!(
        fixtures::snapshot(&u.layout().staging()).is_empty(),
        "staging cleaned"
    );
    let Some(m) = r.model("crash").expect("db") else {
        assert!(
            committed.is_empty(),
            "child reported {committed:?} but nothing is recorded"
        );
        return 0;
    };
    assert!(m.promoting.is_none(), "no half-done promotion");
    let active: Vec<_> = m
        .versions
        .values()
        .filter(|v| v.state == VersionState::Active)
        .collect();
    assert!(active.len() <= 1, "{active:?}");
    assert_eq!(active.first().map(|v| v.version.clone()), m.active);
    for v in m.versions.values() {
        let (manifest, dir) = u
            .stored_manifest("crash", &v.version)
            .expect("stored manifest");
        for f in &manifest.files {
            let meta = std::fs::metadata(dir.join(f.path.as_str())).expect("payload file present");
            assert_eq!(meta.len(), f.size);
        }
    }
    let stored = std::fs::read_dir(u.layout().store())
        .expect("store")
        .count();
    assert_eq!(stored, m.versions.len(), "no orphan store directories");
    // Every step the child saw committed is durable.
    for line in committed {
        let (what, ver) = line.rsplit_once(' ').expect("line");
        let ver = semver::Version::parse(ver).expect("version");
        let rec = m
            .versions
            .get(&ver)
            .unwrap_or_else(|| panic!("{line}: version lost"));
        if what == "active" {
            assert!(
                matches!(rec.state, VersionState::Active | VersionState::Retired),
                "{line}: {:?}",
                rec.state
            );
        }
    }
    m.versions.keys().map(|v| v.minor).max().unwrap_or(0)
}

#[test]
fn sigkill_at_any_moment_leaves_a_consistent_registry() {
    let dir = tempfile::tempdir().expect("tmp");
    let root = dir.path().join("root.json");
    std::fs::write(&root, fixtures::to_json(&fixtures::trust_root_v1())).expect("root");
    let mut committed: Vec<String> = Vec::new();
    let mut next_minor = 0u64;
    // Kill after varying delays so the kills land in different steps.
    for round in 0..12u64 {
        let mut child = Command::new(bin("airlock-crash-child"))
            .args([
                dir.path().join("data").to_str().expect("p"),
                root.to_str().expect("p"),
                &next_minor.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("stdout");
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<_>>()
        });
        let delay = Duration::from_millis(30 + (round * 37) % 170);
        let start = Instant::now();
        while start.elapsed() < delay {
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        let lines = reader.join().expect("reader");
        committed.extend(
            lines
                .into_iter()
                .filter(|l| l.starts_with("imported") || l.starts_with("active")),
        );
        next_minor = check(dir.path(), &committed) + 1;
    }
    eprintln!(
        "{} committed steps across 12 kills; last: {:?}",
        committed.len(),
        committed.last()
    );
    assert!(
        committed.len() >= 3,
        "the child made progress between kills: {committed:?}"
    );
}
