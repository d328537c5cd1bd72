//! The lifecycle registry end to end on a real sled database and store: validation with the
//! contract validator, approval policies, promotion intent, rollback rules, crash recovery of
//! an interrupted promotion, the audit chain under tampering, the offline time floor, and
//! listing bundles on media.

use std::path::Path;

use airlock_config::{ApprovalMode, ByteSize, Config};
use airlock_tests::fixtures::{self, compress, tar_bytes, Fixture, Keys};
use airlock_updater::registry::ApprovalPolicy;
use airlock_updater::validate::ContractValidator;
use airlock_updater::{Actor, Updater, VersionState};
use semver::Version;
use tempfile::TempDir;

fn open(dir: &Path, mode: ApprovalMode, approvers: Option<u32>) -> Updater {
    let mut c = Config::default();
    c.paths.data_dir = dir.join("data");
    c.paths.initial_trust_root = dir.join("root.json");
    c.bundles.reserve_free_space = ByteSize(0);
    c.approval.mode = mode;
    c.approval.approvers = approvers;
    let u = Updater::open(&c).expect("open");
    let root = dir.join("root.json");
    std::fs::write(&root, fixtures::to_json(&fixtures::trust_root_v1())).expect("root");
    u.install_initial_trust_root(&root).expect("install");
    u
}

fn actor(s: &str) -> Actor {
    Actor::new(s).expect("actor")
}

fn v(s: &str) -> Version {
    Version::parse(s).expect("semver")
}

/// Imports and validates `version` of `demo` as `importer`.
fn staged_and_validated(u: &Updater, version: &str) -> VersionState {
    u.import(
        &Fixture::demo("demo", version).good_bundle()[..],
        "test",
        &actor("alice"),
    )
    .expect("import");
    let (report, state) = u
        .validate("demo", &v(version), &ContractValidator, &Actor::system())
        .expect("validate");
    assert!(report.passed, "{report:?}");
    state
}

fn promote(u: &Updater, version: &str, who: &str) {
    let now = u.now().expect("now");
    u.registry()
        .begin_promotion(now, "demo", &v(version), &actor(who))
        .expect("begin");
    u.registry()
        .complete_promotion(now, "demo", &actor(who))
        .expect("complete");
}

fn state(u: &Updater, version: &str) -> VersionState {
    u.registry()
        .model("demo")
        .expect("db")
        .expect("model")
        .versions[&v(version)]
        .state
}

#[test]
fn two_approvers_never_the_importer_then_promote_and_roll_back() {
    let dir = TempDir::new().expect("tmp");
    let u = open(dir.path(), ApprovalMode::Approvers, Some(2));
    assert_eq!(u.registry().policy(), ApprovalPolicy::Approvers(2));
    assert_eq!(staged_and_validated(&u, "1.0.0"), VersionState::Validated);
    let r = u.registry();
    let now = u.now().expect("now");
    // Not yet approved: cannot be promoted.
    assert_eq!(
        r.begin_promotion(now, "demo", &v("1.0.0"), &actor("ops"))
            .expect_err("unapproved")
            .kind(),
        "illegal_transition"
    );
    assert_eq!(
        r.approve(now, "demo", &v("1.0.0"), &actor("alice"), None, None)
            .expect_err("importer")
            .kind(),
        "self_approval"
    );
    assert_eq!(
        r.approve(
            now,
            "demo",
            &v("1.0.0"),
            &actor("bob"),
            Some("looks good"),
            None
        )
        .expect("bob"),
        VersionState::Validated
    );
    assert_eq!(
        r.approve(now, "demo", &v("1.0.0"), &actor("bob"), None, None)
            .expect_err("twice")
            .kind(),
        "duplicate_approval"
    );
    assert_eq!(
        r.approve(now, "demo", &v("1.0.0"), &actor("carol"), None, None)
            .expect("carol"),
        VersionState::Approved
    );
    promote(&u, "1.0.0", "ops");
    assert_eq!(state(&u, "1.0.0"), VersionState::Active);

    // 1.1.0 through the same path; promoting it retires 1.0.0.
    staged_and_validated(&u, "1.1.0");
    r.approve(now, "demo", &v("1.1.0"), &actor("bob"), None, None)
        .expect("bob");
    r.approve(now, "demo", &v("1.1.0"), &actor("carol"), None, None)
        .expect("carol");
    promote(&u, "1.1.0", "ops");
    assert_eq!(state(&u, "1.0.0"), VersionState::Retired);
    assert_eq!(state(&u, "1.1.0"), VersionState::Active);

    // Rollback goes to the approved, retired 1.0.0 in one step.
    assert_eq!(
        r.rollback(now, "demo", None, &actor("ops"), None)
            .expect("rollback"),
        v("1.0.0")
    );
    assert_eq!(state(&u, "1.0.0"), VersionState::Active);
    assert_eq!(state(&u, "1.1.0"), VersionState::Retired);
    let m = r.model("demo").expect("db").expect("model");
    assert_eq!(m.active, Some(v("1.0.0")));
    assert_eq!(
        m.versions
            .values()
            .filter(|x| x.state == VersionState::Active)
            .count(),
        1
    );

    // A rejected or never-approved version can never become active through rollback.
    staged_and_validated(&u, "1.2.0");
    r.reject(
        now,
        "demo",
        &v("1.2.0"),
        &actor("bob"),
        Some("accuracy regression"),
    )
    .expect("reject");
    assert_eq!(
        r.rollback(now, "demo", Some(&v("1.2.0")), &actor("ops"), None)
            .expect_err("rejected")
            .kind(),
        "illegal_transition"
    );
    assert_eq!(
        r.approve(now, "demo", &v("1.2.0"), &actor("carol"), None, None)
            .expect_err("rejected")
            .kind(),
        "illegal_transition"
    );

    // Every step is in the chained audit log with who did it.
    let audit = r.audit_records(0, 1000).expect("audit");
    let actions: Vec<&str> = audit.iter().map(|a| a.action.as_str()).collect();
    for a in [
        "import",
        "validate",
        "approve",
        "promote_begin",
        "promote",
        "rollback",
        "reject",
    ] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
    assert!(audit
        .iter()
        .any(|a| a.action == "approve" && a.actor == "carol"));
    r.verify_audit().expect("chain verifies");
}

#[test]
fn unattended_dev_policy_approves_automatically_and_says_so() {
    let dir = TempDir::new().expect("tmp");
    let u = open(dir.path(), ApprovalMode::UnattendedDev, None);
    assert_eq!(staged_and_validated(&u, "1.0.0"), VersionState::Approved);
    let audit = u.registry().audit_records(0, 100).expect("audit");
    let auto = audit
        .iter()
        .find(|a| a.action == "approve")
        .expect("approval recorded");
    assert_eq!(auto.actor, "policy:unattended-dev");
    assert_eq!(auto.detail["automatic"], true);
}

#[test]
fn validation_failure_blocks_the_version() {
    let dir = TempDir::new().expect("tmp");
    let u = open(dir.path(), ApprovalMode::Approvers, Some(1));
    // Expected output with the wrong number of classes: the contract check fails it.
    let mut f = Fixture::demo("demo", "1.0.0");
    f.files[2].data = airlock_signing::npy::encode(
        airlock_signing::manifest::DType::Float32,
        0,
        &[2, 5],
        &[0u8; 40],
    )
    .expect("npy");
    f.sync_files();
    let bytes = compress(
        &tar_bytes(&f.entries(&f.sign(&[Keys::bundle(1), Keys::bundle(2)]))),
        3,
    );
    u.import(&bytes[..], "test", &actor("alice"))
        .expect("import");
    let (report, st) = u
        .validate("demo", &v("1.0.0"), &ContractValidator, &Actor::system())
        .expect("validate");
    assert!(!report.passed);
    assert!(
        report.cases[0].detail.contains("dimension 1"),
        "{:?}",
        report.cases
    );
    assert_eq!(st, VersionState::ValidationFailed);
    let now = u.now().expect("now");
    assert_eq!(
        u.registry()
            .approve(now, "demo", &v("1.0.0"), &actor("bob"), None, None)
            .expect_err("failed")
            .kind(),
        "illegal_transition"
    );
    // Validating twice is not a legal transition either.
    assert_eq!(
        u.validate("demo", &v("1.0.0"), &ContractValidator, &Actor::system())
            .expect_err("twice")
            .kind(),
        "illegal_transition"
    );
}

#[test]
fn interrupted_promotion_is_resolved_to_the_state_before_it() {
    let dir = TempDir::new().expect("tmp");
    {
        let u = open(dir.path(), ApprovalMode::UnattendedDev, None);
        staged_and_validated(&u, "1.0.0");
        promote(&u, "1.0.0", "ops");
        staged_and_validated(&u, "1.1.0");
        let now = u.now().expect("now");
        u.registry()
            .begin_promotion(now, "demo", &v("1.1.0"), &actor("ops"))
            .expect("begin");
        // A second promotion or a rollback while one is in flight is refused.
        assert_eq!(
            u.registry()
                .rollback(now, "demo", None, &actor("ops"), None)
                .expect_err("busy")
                .kind(),
            "conflict"
        );
        // The process "dies" here: the updater is dropped without completing.
    }
    let u = open(dir.path(), ApprovalMode::UnattendedDev, None);
    let m = u.registry().model("demo").expect("db").expect("model");
    assert!(m.promoting.is_none(), "the intent was resolved on open");
    assert_eq!(
        m.active,
        Some(v("1.0.0")),
        "the version active before the promotion still is"
    );
    assert_eq!(
        state(&u, "1.1.0"),
        VersionState::Approved,
        "and the new one can be promoted again"
    );
    let audit = u.registry().audit_records(0, 100).expect("audit");
    assert_eq!(audit.last().expect("record").action, "promote_aborted");
    promote(&u, "1.1.0", "ops");
    assert_eq!(state(&u, "1.1.0"), VersionState::Active);
}

#[test]
fn leftovers_of_an_interrupted_import_are_removed_on_open() {
    let dir = TempDir::new().expect("tmp");
    let u = open(dir.path(), ApprovalMode::UnattendedDev, None);
    let layout = u.layout().clone();
    drop(u);
    // What a kill -9 during an import leaves: a staging directory, and a store directory that
    // was renamed in but never recorded.
    std::fs::create_dir_all(layout.staging().join("import-dead/model")).expect("mkdir");
    std::fs::write(
        layout.staging().join("import-dead/model/.partial-0"),
        b"half",
    )
    .expect("write");
    std::fs::create_dir_all(layout.stored(&"ab".repeat(32))).expect("mkdir");
    let u = open(dir.path(), ApprovalMode::UnattendedDev, None);
    assert!(fixtures::snapshot(&layout.staging()).is_empty());
    assert!(fixtures::snapshot(&layout.store()).is_empty());
    // And a good import after that works.
    staged_and_validated(&u, "1.0.0");
}

#[test]
fn audit_chain_detects_edit_delete_reorder_and_truncation() {
    let dir = TempDir::new().expect("tmp");
    let u = open(dir.path(), ApprovalMode::UnattendedDev, None);
    staged_and_validated(&u, "1.0.0");
    promote(&u, "1.0.0", "ops");
    let r = u.registry();
    let n = r.verify_audit().expect("intact");
    assert!(n >= 5, "{n} records");
    let tree = r.audit_tree().expect("the audit tree");
    let key = |i: u64| i.to_be_bytes();
    let original: Vec<Vec<u8>> = (0..n)
        .map(|i| tree.get(key(i)).expect("get").expect("record").to_vec())
        .collect();
    let restore = || {
        tree.clear().expect("clear");
        for (i, b) in original.iter().enumerate() {
            tree.insert(key(i as u64), b.clone()).expect("insert");
        }
        r.verify_audit().expect("restored chain verifies");
    };

    // Edit: change who validated; the next record no longer links to it.
    let at = original
        .iter()
        .position(|b| String::from_utf8_lossy(b).contains("\"action\":\"validate\""))
        .expect("the validate record");
    let edited = String::from_utf8(original[at].clone())
        .expect("utf8")
        .replace("airlockd", "mallory");
    assert_ne!(edited.as_bytes(), &original[at][..]);
    tree.insert(key(at as u64), edited.as_bytes())
        .expect("insert");
    let next = at as u64 + 1;
    assert!(matches!(
        r.verify_audit(),
        Err(airlock_updater::Error::AuditChainBroken { seq, .. }) if seq == next
    ));
    restore();
    // Edit of the last record.
    let last = n - 1;
    let mut tail = original[last as usize].clone();
    let pos = tail.iter().position(|b| *b == b'"').expect("quote");
    tail.insert(pos, b' ');
    tree.insert(key(last), tail).expect("insert");
    assert_eq!(
        r.verify_audit().expect_err("edited tail").kind(),
        "audit_chain_broken"
    );
    restore();
    // Delete from the middle.
    tree.remove(key(1)).expect("remove");
    assert_eq!(
        r.verify_audit().expect_err("deleted").kind(),
        "audit_chain_broken"
    );
    restore();
    // Reorder two records.
    tree.insert(key(1), original[2].clone()).expect("insert");
    tree.insert(key(2), original[1].clone()).expect("insert");
    assert_eq!(
        r.verify_audit().expect_err("reordered").kind(),
        "audit_chain_broken"
    );
    restore();
    // Truncate the end.
    tree.remove(key(last)).expect("remove");
    let e = r.verify_audit().expect_err("truncated");
    assert!(e.to_string().contains("removed from the end"), "{e}");
    restore();
}

#[test]
fn time_floor_survives_a_clock_at_1970() {
    let dir = TempDir::new().expect("tmp");
    let u = open(dir.path(), ApprovalMode::UnattendedDev, None);
    // Importing raises the floor to at least the bundle's signed issue time (at most
    // [time] max_clock_skew, 1 day, ahead of the clock: further ahead is refused).
    let mut f = Fixture::demo("demo", "1.0.0");
    let issued = time::OffsetDateTime::now_utc() + time::Duration::hours(12);
    f.manifest.issued_at = issued.replace_nanosecond(0).expect("ns");
    f.manifest.expires_at = issued + time::Duration::days(30);
    let bytes = compress(
        &tar_bytes(&f.entries(&f.sign(&[Keys::bundle(1), Keys::bundle(2)]))),
        3,
    );
    u.import(&bytes[..], "test", &actor("alice"))
        .expect("import a bundle issued in the future");
    let r = u.registry();
    assert!(r.time_floor().expect("floor") >= f.manifest.issued_at.unix_timestamp());
    // A clock that boots at 1970 does not make expired things valid again: "now" is the floor.
    let epoch = time::OffsetDateTime::UNIX_EPOCH;
    let now = r.trusted_now(epoch).expect("now");
    assert!(now >= f.manifest.issued_at, "{now}");
    // A bundle that expired before the floor is refused even though the system clock says 1970.
    let mut old = Fixture::demo("other", "1.0.0");
    old.manifest.issued_at = time::OffsetDateTime::now_utc() - time::Duration::days(10);
    old.manifest.expires_at = time::OffsetDateTime::now_utc() + time::Duration::hours(6);
    let bytes = compress(
        &tar_bytes(&old.entries(&old.sign(&[Keys::bundle(1), Keys::bundle(2)]))),
        3,
    );
    let mut c = Config::default();
    c.paths.data_dir = dir.path().join("data");
    c.paths.initial_trust_root = dir.path().join("root.json");
    c.time.enforcement = airlock_config::ExpiryEnforcement::Strict;
    c.bundles.reserve_free_space = ByteSize(0);
    drop(u);
    let u = Updater::open(&c).expect("reopen");
    assert_eq!(
        u.import(&bytes[..], "test", &actor("alice"))
            .expect_err("expired vs the floor")
            .kind(),
        "expired"
    );
    // The floor persisted across the reopen.
    assert!(u.registry().time_floor().expect("floor") >= issued.unix_timestamp());
}

#[test]
fn media_listing_is_read_only_bounded_and_skips_junk() {
    use airlock_updater::media::{list_bundles, MediaLimits};
    let dir = TempDir::new().expect("tmp");
    let m = dir.path();
    std::fs::create_dir_all(m.join("models/deep/a/b/c/d")).expect("mkdir");
    std::fs::write(m.join("demo-1.0.0.airlock"), b"x").expect("w");
    std::fs::write(m.join("._demo-1.0.0.airlock"), b"appledouble").expect("w");
    std::fs::write(m.join(".hidden.airlock"), b"x").expect("w");
    std::fs::write(m.join("models/OTHER-2.0.0.AIRLOCK"), b"xy").expect("w");
    std::fs::write(m.join("models/readme.txt"), b"x").expect("w");
    std::fs::write(m.join("models/deep/a/b/c/d/too-deep.airlock"), b"x").expect("w");
    std::os::unix::fs::symlink("/etc", m.join("models/link-off-the-medium")).expect("symlink");
    std::os::unix::fs::symlink(m.join("demo-1.0.0.airlock"), m.join("models/link.airlock"))
        .expect("symlink");
    // Read-only, as a mounted stick would be.
    use std::os::unix::fs::PermissionsExt;
    let before = fixtures::snapshot(m);
    let listing = list_bundles(m, MediaLimits::default()).expect("list");
    let names: Vec<String> = listing
        .bundles
        .iter()
        .map(|b| b.path.strip_prefix(m).expect("rel").display().to_string())
        .collect();
    assert_eq!(
        names,
        vec!["demo-1.0.0.airlock", "models/OTHER-2.0.0.AIRLOCK"]
    );
    assert_eq!(listing.bundles[1].size, 2);
    assert!(
        listing.truncated,
        "the too-deep file was beyond the depth limit"
    );
    assert_eq!(fixtures::snapshot(m), before, "listing wrote nothing");
    let few = list_bundles(
        m,
        MediaLimits {
            max_depth: 8,
            max_entries: 3,
        },
    )
    .expect("list");
    assert!(few.truncated);
    std::fs::set_permissions(m, std::fs::Permissions::from_mode(0o755)).expect("perm");
}
