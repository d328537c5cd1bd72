//! One test per refusal: each hostile or broken bundle is generated in code, imported into a
//! real appliance data directory (real sled, real files), and must fail with the exact error
//! kind, leave staging and store unchanged, leave an `import_refused` audit record, and be
//! refused by `airlock-sign bundle verify` too.

use std::path::PathBuf;

use airlock_config::{ByteSize, Config, ExpiryEnforcement};
use airlock_signing::keys::PrivateKey;
use airlock_signing::trust::{sign_root, Role, RootBuilder, TrustRootFile};
use airlock_tests::fixtures::{
    self, compress, compress_with_window, tar_bytes, Fixture, Keys, RawEntry,
};
use airlock_updater::{Actor, Updater};
use tar::EntryType;
use tempfile::TempDir;
use time::macros::datetime;

struct Appliance {
    dir: TempDir,
    updater: Updater,
    root_file: PathBuf,
    config_file: PathBuf,
}

impl Appliance {
    fn new() -> Self {
        Self::with(|_| {}, &fixtures::trust_root_v1())
    }

    fn with(edit: impl FnOnce(&mut Config), root: &TrustRootFile) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config::default();
        config.paths.data_dir = dir.path().join("data");
        config.bundles.reserve_free_space = ByteSize(0);
        config.time.enforcement = ExpiryEnforcement::Strict;
        edit(&mut config);
        let root_file = dir.path().join("root.json");
        std::fs::write(&root_file, fixtures::to_json(root)).expect("write root");
        let config_file = dir.path().join("airlockd.toml");
        std::fs::write(&config_file, config.to_toml()).expect("write config");
        let updater = Updater::open(&config).expect("open updater");
        updater
            .install_initial_trust_root(&root_file)
            .expect("install root");
        Appliance {
            dir,
            updater,
            root_file,
            config_file,
        }
    }

    fn state(&self) -> (fixtures::Snapshot, fixtures::Snapshot) {
        let l = self.updater.layout();
        (
            fixtures::snapshot(&l.staging()),
            fixtures::snapshot(&l.store()),
        )
    }

    fn import(&self, bytes: &[u8]) -> airlock_updater::Result<airlock_updater::Imported> {
        self.updater.import(
            bytes,
            "test",
            &Actor::new("uid:1000(importer)").expect("actor"),
        )
    }

    /// The whole refusal contract for one bundle.
    fn refuses(&self, bytes: &[u8], kind: &str) {
        let before = self.state();
        let audit_before = self
            .updater
            .registry()
            .audit_records(0, usize::MAX)
            .expect("audit")
            .len();
        let err = self.import(bytes).expect_err("the bundle must be refused");
        assert_eq!(err.kind(), kind, "wrong refusal: {err}");
        assert_eq!(
            self.state(),
            before,
            "staging or store changed after refusing: {err}"
        );
        assert!(self.state().0.is_empty(), "staging is empty");
        let audit = self
            .updater
            .registry()
            .audit_records(0, usize::MAX)
            .expect("audit");
        assert_eq!(audit.len(), audit_before + 1, "exactly one audit record");
        let last = audit.last().expect("record");
        assert_eq!(last.action, "import_refused");
        assert_eq!(last.detail["error"], kind);
        self.updater
            .registry()
            .verify_audit()
            .expect("audit chain intact");
        self.verify_cli(bytes, Some(kind));
    }

    /// Runs `airlock-sign bundle verify` on the bytes: `Some(kind)` expects that refusal.
    fn verify_cli(&self, bytes: &[u8], kind: Option<&str>) {
        let file = self.dir.path().join("candidate.airlock");
        std::fs::write(&file, bytes).expect("write bundle");
        let before = fixtures::snapshot(self.dir.path());
        let (code, out, err) = airlock_tests::run(
            "airlock-sign",
            &[
                "bundle",
                "verify",
                file.to_str().expect("utf8"),
                "--trust",
                self.root_file.to_str().expect("utf8"),
                "--config",
                self.config_file.to_str().expect("utf8"),
            ],
        );
        assert_eq!(
            fixtures::snapshot(self.dir.path()),
            before,
            "bundle verify wrote something"
        );
        match kind {
            Some(k) => {
                assert_eq!(code, 1, "verify must refuse ({k}): {out}{err}");
                assert!(
                    err.contains(&format!("refused ({k})")),
                    "verify names {k}: {err}"
                );
            }
            None => assert_eq!(code, 0, "verify must accept: {out}{err}"),
        }
    }
}

fn good_sigs(f: &Fixture) -> airlock_signing::reader::SignatureFile {
    f.sign(&[Keys::bundle(1), Keys::bundle(2)])
}

/// A bundle whose entries are the good ones edited by `edit`.
fn edited(edit: impl FnOnce(&mut Vec<RawEntry>)) -> Vec<u8> {
    let f = Fixture::demo("demo", "1.0.0");
    let mut e = f.entries(&good_sigs(&f));
    edit(&mut e);
    compress(&tar_bytes(&e), 3)
}

#[test]
fn a_good_bundle_imports_and_verifies() {
    let a = Appliance::new();
    let bytes = Fixture::demo("demo", "1.0.0").good_bundle();
    a.verify_cli(&bytes, None);
    let imported = a.import(&bytes).expect("import");
    assert!(imported.dir.join("model/model.onnx").is_file());
    assert!(imported.dir.join("manifest.json").is_file());
    assert!(a.state().0.is_empty(), "staging is empty after success");
    let m = a
        .updater
        .registry()
        .model("demo")
        .expect("db")
        .expect("model");
    assert_eq!(m.versions.len(), 1);
    assert_eq!(m.highest_seen, semver::Version::new(1, 0, 0));
}

#[test]
fn absolute_path() {
    Appliance::new().refuses(
        &edited(|e| e.push(RawEntry::file("/etc/airlock-evil", b"x".to_vec()))),
        "absolute_path",
    );
}

#[test]
fn dot_dot_path_that_naive_tar_would_extract_outside() {
    let a = Appliance::new();
    let outside = a.dir.path().join("escaped");
    a.refuses(
        &edited(|e| e.insert(2, RawEntry::file("../../../escaped", b"pwned".to_vec()))),
        "path_traversal",
    );
    assert!(!outside.exists());
    a.refuses(
        &edited(|e| e.push(RawEntry::file("model/../../x", b"x".to_vec()))),
        "path_traversal",
    );
}

#[test]
fn nul_in_path() {
    Appliance::new().refuses(
        &edited(|e| e[2].name = b"model/model.onnx\0../../evil".to_vec()),
        "nul_in_path",
    );
}

#[test]
fn path_not_in_manifest_extra_file() {
    Appliance::new().refuses(
        &edited(|e| e.push(RawEntry::file("model/extra.bin", b"surprise".to_vec()))),
        "not_in_manifest",
    );
}

#[test]
fn symlink_entry_and_write_through_it() {
    let a = Appliance::new();
    a.refuses(
        &edited(|e| {
            let mut l = RawEntry::special("model/link", EntryType::Symlink);
            l.link = Some(b"/tmp".to_vec());
            e.insert(2, l);
            e.insert(3, RawEntry::file("model/link/evil", b"x".to_vec()));
        }),
        "forbidden_entry_type",
    );
}

#[test]
fn hardlink_entry() {
    Appliance::new().refuses(
        &edited(|e| {
            let mut l = RawEntry::special("model/model.onnx", EntryType::Link);
            l.link = Some(b"/etc/shadow".to_vec());
            e[2] = l;
        }),
        "forbidden_entry_type",
    );
}

#[test]
fn device_fifo_and_directory_entries() {
    let a = Appliance::new();
    for kind in [
        EntryType::Char,
        EntryType::Block,
        EntryType::Fifo,
        EntryType::Directory,
    ] {
        a.refuses(
            &edited(|e| e.insert(2, RawEntry::special("model/dev", kind))),
            "forbidden_entry_type",
        );
    }
}

#[test]
fn pax_and_gnu_extension_headers() {
    let a = Appliance::new();
    for kind in [EntryType::XHeader, EntryType::GNULongName] {
        let mut x = RawEntry::special("././@LongLink", kind);
        x.data = b"30 path=../../../../etc/passwd\n".to_vec();
        a.refuses(&edited(|e| e.insert(2, x.clone())), "forbidden_entry_type");
    }
}

#[test]
fn duplicate_entry() {
    Appliance::new().refuses(&edited(|e| e.push(e[2].clone())), "duplicate_entry");
}

#[test]
fn missing_file() {
    Appliance::new().refuses(
        &edited(|e| {
            e.remove(3);
        }),
        "missing_file",
    );
}

#[test]
fn size_mismatch() {
    Appliance::new().refuses(
        &edited(|e| {
            e[2].data.extend_from_slice(b"tail");
        }),
        "size_mismatch",
    );
}

#[test]
fn digest_mismatch() {
    Appliance::new().refuses(
        &edited(|e| {
            let last = e[2].data.len() - 1;
            e[2].data[last] ^= 0x01;
        }),
        "digest_mismatch",
    );
}

#[test]
fn truncated_stream() {
    let a = Appliance::new();
    let good = Fixture::demo("demo", "1.0.0").good_bundle();
    for cut in [good.len() - 3, good.len() / 2, 40] {
        a.refuses(&good[..cut], "truncated");
    }
}

#[test]
fn trailing_data_after_the_archive() {
    let f = Fixture::demo("demo", "1.0.0");
    let mut tar = tar_bytes(&f.entries(&good_sigs(&f)));
    tar.extend_from_slice(b"hidden payload after the end marker");
    Appliance::new().refuses(&compress(&tar, 3), "trailing_data");
    let mut bytes = f.good_bundle();
    bytes.extend_from_slice(&compress(b"second frame", 3));
    Appliance::new().refuses(&bytes, "trailing_data");
}

#[test]
fn missing_manifest_or_signatures() {
    let a = Appliance::new();
    a.refuses(&edited(|e| e.swap(0, 1)), "missing_manifest");
    a.refuses(
        &edited(|e| {
            e.remove(1);
        }),
        "missing_signatures",
    );
    a.refuses(
        &compress(
            b"not a tar at all, just text padded out to a block"
                .repeat(20)
                .as_slice(),
            3,
        ),
        "malformed",
    );
}

#[test]
fn decompression_bomb_limits() {
    // A file larger than max_file_size, declared honestly in a validly signed manifest.
    let small = |c: &mut Config| c.bundles.max_file_size = ByteSize(100);
    let a = Appliance::with(small, &fixtures::trust_root_v1());
    a.refuses(
        &Fixture::demo("demo", "1.0.0").good_bundle(),
        "limit_exceeded",
    );

    // Zeros after the end marker: a bomb that is not an entry at all, stopped by the budget.
    let f = Fixture::demo("demo", "1.0.0");
    let mut tar = tar_bytes(&f.entries(&good_sigs(&f)));
    tar.resize(tar.len() + (8 << 20), 0);
    let budget_small = |c: &mut Config| {
        c.bundles.max_total_size = ByteSize(1 << 20);
        c.bundles.max_file_size = ByteSize(1 << 20);
        c.bundles.max_entries = 8;
    };
    let a = Appliance::with(budget_small, &fixtures::trust_root_v1());
    a.refuses(&compress(&tar, 19), "limit_exceeded");

    // A zstd window larger than the decoder may allocate.
    let tight = |c: &mut Config| c.bundles.max_zstd_window_log = 20;
    let a = Appliance::with(tight, &fixtures::trust_root_v1());
    let mut big = tar_bytes(&f.entries(&good_sigs(&f)));
    big.resize(big.len() + (4 << 20), 0);
    let bomb = compress_with_window(&big, 27);
    a.refuses(&bomb, "limit_exceeded");
    assert!(a
        .import(&bomb)
        .expect_err("window")
        .to_string()
        .contains("zstd window"));

    // A manifest larger than max_manifest_size.
    let tiny_manifest = |c: &mut Config| c.bundles.max_manifest_size = ByteSize(64);
    let a = Appliance::with(tiny_manifest, &fixtures::trust_root_v1());
    a.refuses(&f.good_bundle(), "limit_exceeded");
    assert!(a
        .import(&f.good_bundle())
        .expect_err("manifest")
        .to_string()
        .contains("manifest.json"));

    // More entries than max_entries.
    let few = |c: &mut Config| c.bundles.max_entries = 2;
    let a = Appliance::with(few, &fixtures::trust_root_v1());
    a.refuses(&f.good_bundle(), "limit_exceeded");
}

#[test]
fn huge_declared_file_refused_before_reading() {
    // The manifest declares 1 TiB (above the default per-file limit of 64 GiB): refused from the
    // manifest alone, before a payload byte is read. `bundle verify` runs with the default limits.
    let mut f = Fixture::demo("demo", "1.0.0");
    f.manifest.files[0].size = 1 << 40;
    let bytes = compress(&tar_bytes(&f.entries(&good_sigs(&f))), 3);
    Appliance::new().refuses(&bytes, "limit_exceeded");
}

#[test]
fn wrong_key() {
    let f = Fixture::demo("demo", "1.0.0");
    let bytes = compress(&tar_bytes(&f.entries(&f.sign(&[Keys::stranger()]))), 3);
    Appliance::new().refuses(&bytes, "unknown_key");
    // A root key is known, but not in the bundle role.
    let bytes = compress(
        &tar_bytes(&f.entries(&f.sign(&[Keys::root(1), Keys::root(2)]))),
        3,
    );
    Appliance::new().refuses(&bytes, "unknown_key");
}

#[test]
fn one_of_two_required_signatures() {
    let f = Fixture::demo("demo", "1.0.0");
    let bytes = compress(&tar_bytes(&f.entries(&f.sign(&[Keys::bundle(1)]))), 3);
    Appliance::new().refuses(&bytes, "threshold_not_met");
    let unsigned = compress(&tar_bytes(&f.entries(&f.sign(&[]))), 3);
    Appliance::new().refuses(&unsigned, "threshold_not_met");
}

#[test]
fn same_signature_twice_counts_once() {
    let f = Fixture::demo("demo", "1.0.0");
    let mut sigs = f.sign(&[Keys::bundle(1)]);
    sigs.signatures.push(sigs.signatures[0]);
    sigs.signatures.push(sigs.signatures[0]);
    Appliance::new().refuses(
        &compress(&tar_bytes(&f.entries(&sigs)), 3),
        "threshold_not_met",
    );
}

#[test]
fn manifest_edited_after_signing() {
    let f = Fixture::demo("demo", "1.0.0");
    let sigs = good_sigs(&f);
    let mut evil = f.clone();
    evil.manifest.hardware.gpu_memory_budget_mib = Some(1);
    // Old signatures over the old bytes.
    Appliance::new().refuses(
        &compress(&tar_bytes(&evil.entries(&sigs)), 3),
        "bad_signature",
    );
    // Re-signed by the attacker's own key.
    let resigned = evil.sign(&[Keys::stranger()]);
    Appliance::new().refuses(
        &compress(&tar_bytes(&evil.entries(&resigned)), 3),
        "unknown_key",
    );
    // Re-signed by one legitimate key (stolen) plus the attacker: still below the threshold.
    let partial = evil.sign(&[Keys::bundle(1), Keys::stranger()]);
    Appliance::new().refuses(
        &compress(&tar_bytes(&evil.entries(&partial)), 3),
        "unknown_key",
    );
}

#[test]
fn revoked_key() {
    let f = Fixture::demo("demo", "1.0.0");
    let bytes = compress(
        &tar_bytes(&f.entries(&f.sign(&[Keys::bundle(1), Keys::bundle(3)]))),
        3,
    );
    let a = Appliance::with(|_| {}, &fixtures::trust_root_v2_revoking_bundle_key_3());
    a.refuses(&bytes, "revoked_key");
    // Even with the threshold met by others, a revoked signer refuses the bundle.
    let bytes = compress(
        &tar_bytes(&f.entries(&f.sign(&[Keys::bundle(1), Keys::bundle(2), Keys::bundle(3)]))),
        3,
    );
    a.refuses(&bytes, "revoked_key");
}

#[test]
fn expired_manifest_and_expired_root() {
    let mut f = Fixture::demo("demo", "1.0.0");
    f.manifest.issued_at = datetime!(2025-01-01 00:00 UTC);
    f.manifest.expires_at = datetime!(2025-06-01 00:00 UTC);
    let bytes = compress(&tar_bytes(&f.entries(&good_sigs(&f))), 3);
    Appliance::new().refuses(&bytes, "expired");

    let mut root = fixtures::trust_root_v1();
    root.signed.expires = datetime!(2025-06-01 00:00 UTC);
    root.signatures.clear();
    sign_root(&mut root, &Keys::root(1)).expect("sign");
    sign_root(&mut root, &Keys::root(2)).expect("sign");
    let a = Appliance::with(|_| {}, &root);
    a.refuses(&Fixture::demo("demo", "1.0.0").good_bundle(), "expired");
}

#[test]
fn expiry_modes_grace_and_warn_accept_with_an_audited_warning() {
    let mut f = Fixture::demo("demo", "1.0.0");
    let now = time::OffsetDateTime::now_utc();
    f.manifest.issued_at = now - time::Duration::days(30);
    f.manifest.expires_at = now - time::Duration::days(2);
    let bytes = compress(&tar_bytes(&f.entries(&good_sigs(&f))), 3);
    let grace = |c: &mut Config| {
        c.time.enforcement = ExpiryEnforcement::Grace;
        c.time.grace = "7d".parse().expect("duration");
    };
    let a = Appliance::with(grace, &fixtures::trust_root_v1());
    let imported = a.import(&bytes).expect("inside the grace window");
    assert_eq!(
        imported.verified.warnings.len(),
        1,
        "{:?}",
        imported.verified.warnings
    );
    let audit = a.updater.registry().audit_records(0, 100).expect("audit");
    let import = audit
        .iter()
        .find(|r| r.action == "import")
        .expect("the import record");
    assert!(import.detail["warnings"][0]
        .as_str()
        .expect("warning")
        .contains("grace"));

    let short = |c: &mut Config| {
        c.time.enforcement = ExpiryEnforcement::Grace;
        c.time.grace = "1d".parse().expect("duration");
    };
    let a = Appliance::with(short, &fixtures::trust_root_v1());
    assert_eq!(
        a.import(&bytes).expect_err("outside the window").kind(),
        "expired"
    );

    let warn = |c: &mut Config| c.time.enforcement = ExpiryEnforcement::Warn;
    let a = Appliance::with(warn, &fixtures::trust_root_v1());
    assert!(a
        .import(&bytes)
        .expect("warn mode accepts")
        .verified
        .warnings[0]
        .contains("warn"));
}

#[test]
fn replay_of_an_older_version_after_a_newer_one() {
    let a = Appliance::new();
    a.import(&Fixture::demo("demo", "1.1.0").good_bundle())
        .expect("1.1.0");
    // Only approval raises the floor: while 1.1.0 merely sits staged, 1.0.0 may come in.
    a.import(&Fixture::demo("demo", "1.0.0").good_bundle())
        .expect("1.0.0 while 1.1.0 is unapproved");
    let v = semver::Version::new(1, 1, 0);
    let system = Actor::system();
    a.updater
        .validate(
            "demo",
            &v,
            &airlock_updater::validate::ContractValidator,
            &system,
        )
        .expect("validate");
    a.updater
        .registry()
        .approve(
            a.updater.now().expect("now"),
            "demo",
            &v,
            &Actor::new("uid:1001(approver)").expect("actor"),
            None,
            None,
        )
        .expect("approve 1.1.0");
    assert_eq!(
        a.updater
            .registry()
            .model("demo")
            .expect("db")
            .expect("demo")
            .floor(),
        Some(&v)
    );
    let old = Fixture::demo("demo", "1.0.1").good_bundle();
    let before = a.state();
    let err = a.import(&old).expect_err("1.0.1 after 1.1.0 was approved");
    assert_eq!(err.kind(), "anti_rollback", "{err}");
    assert!(
        err.to_string().contains("approved on this appliance"),
        "{err}"
    );
    assert_eq!(a.state(), before);
    // The same version again is refused too: a release needs a new number.
    assert_eq!(
        a.import(&Fixture::demo("demo", "1.1.0").good_bundle())
            .expect_err("again")
            .kind(),
        "anti_rollback"
    );
    let err = a
        .import(&Fixture::demo("demo", "1.0.0").good_bundle())
        .expect_err("1.0.0 twice");
    assert_eq!(err.kind(), "anti_rollback", "{err}");
    // `bundle verify` has no appliance state: the old bundle itself is valid, so it passes there.
    a.verify_cli(&old, None);
    // Another model is independent.
    a.import(&Fixture::demo("other", "1.0.0").good_bundle())
        .expect("other model");
}

#[test]
fn declared_size_larger_than_free_space() {
    let huge_reserve = |c: &mut Config| c.bundles.reserve_free_space = ByteSize(u64::MAX / 2);
    let a = Appliance::with(huge_reserve, &fixtures::trust_root_v1());
    let before = a.state();
    let err = a
        .import(&Fixture::demo("demo", "1.0.0").good_bundle())
        .expect_err("no space");
    assert_eq!(err.kind(), "insufficient_space", "{err}");
    assert_eq!(a.state(), before);
    let audit = a.updater.registry().audit_records(0, 10).expect("audit");
    assert_eq!(
        audit.last().expect("record").detail["error"],
        "insufficient_space"
    );
}

#[test]
fn requires_newer_airlock() {
    let mut f = Fixture::demo("demo", "1.0.0");
    f.manifest.min_airlock_version = semver::Version::new(99, 0, 0);
    Appliance::new().refuses(
        &compress(&tar_bytes(&f.entries(&good_sigs(&f))), 3),
        "requires_newer_airlock",
    );
}

#[test]
fn manifest_that_breaks_its_own_rules() {
    let mut f = Fixture::demo("demo", "1.0.0");
    f.manifest.vectors[0]
        .inputs
        .insert("not_an_input".into(), f.manifest.files[1].path.clone());
    let a = Appliance::new();
    let bundle = |f: &Fixture| compress(&tar_bytes(&f.entries(&good_sigs(f))), 3);
    let mut dup = Fixture::demo("demo", "1.0.0");
    dup.manifest
        .contract
        .inputs
        .push(dup.manifest.contract.inputs[0].clone());
    a.refuses(&bundle(&dup), "invalid_manifest");
    let mut cc = Fixture::demo("demo", "1.0.0");
    cc.manifest.hardware.min_compute_capability = Some("eight".into());
    a.refuses(&bundle(&cc), "invalid_manifest");
    let mut dates = Fixture::demo("demo", "1.0.0");
    dates.manifest.expires_at = dates.manifest.issued_at;
    a.refuses(&bundle(&dates), "invalid_manifest");
    Appliance::new().refuses(
        &compress(&tar_bytes(&f.entries(&good_sigs(&f))), 3),
        "invalid_manifest",
    );
}

#[test]
fn root_rotation_signed_only_by_new_keys_is_refused() {
    let v1 = airlock_signing::TrustRoot::from_json(&fixtures::to_json(&fixtures::trust_root_v1()))
        .expect("v1");
    let new_root_keys: Vec<PrivateKey> = (7..=8).map(Keys::root).collect();
    let mut b = RootBuilder::rotate_from(&v1, datetime!(2036-01-01 00:00 UTC));
    for n in 1..=3 {
        b.revoke_key(Keys::root(n).key_id());
    }
    for k in &new_root_keys {
        b.add_key(Role::Root, k.public());
    }
    b.threshold(Role::Root, 2);
    let mut f = b.signed(&new_root_keys).expect("signed root");
    let candidate = fixtures::to_json(&f);
    let check = airlock_signing::ExpiryCheck::strict_now();
    let err = v1
        .accept_rotation(&candidate, &check)
        .expect_err("new keys only");
    assert_eq!(err.kind(), "rotation_refused", "{err}");
    // The same through the CLI.
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(
        dir.path().join("v1.json"),
        fixtures::to_json(&fixtures::trust_root_v1()),
    )
    .expect("w");
    std::fs::write(dir.path().join("v2.json"), &candidate).expect("w");
    let p = |n: &str| dir.path().join(n).display().to_string();
    let (code, _, err) = airlock_tests::run(
        "airlock-sign",
        &["trust", "verify", &p("v2.json"), "--current", &p("v1.json")],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("rotation_refused"), "{err}");
    // With two old root keys as well, it is accepted.
    sign_root(&mut f, &Keys::root(1)).expect("sign");
    sign_root(&mut f, &Keys::root(3)).expect("sign");
    let v2 = v1
        .accept_rotation(&fixtures::to_json(&f), &check)
        .expect("old and new thresholds");
    assert_eq!(v2.version(), 2);
}
