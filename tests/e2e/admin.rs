//! The model lifecycle through `airlockctl` and the admin API against the real daemon: the full
//! cycle import → validate → approve (by other identities) → promote → rollback, and every
//! refusal the issue lists (self-approval, double approval, promoting what is not approved,
//! rolling back with nothing to return to, a model that misses its golden vectors, a role
//! without the permission on both transports, an upload cut off half-way, a second import while
//! one runs). Other identities are real uids: `airlockctl` runs under `setpriv`.

// In tests a panic is the failure report; unwrapping is the assertion.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use airlock_tests::{airlockctl_as, iris_answer, iris_bundle, iris_infer, production_server};

const OPERATOR: u32 = 4101;
const APPROVER_A: u32 = 4102;
const APPROVER_B: u32 = 4103;
const VIEWER: u32 = 4104;

fn roles() -> Vec<(&'static str, &'static str)> {
    vec![
        ("uid:0", "admin"),
        ("uid:4101", "operator"),
        ("uid:4102", "approver"),
        ("uid:4103", "approver"),
        ("uid:4104", "viewer"),
    ]
}

/// Asserts an airlockctl outcome: exit code and a piece of its output.
#[track_caller]
fn expect(r: (i32, String, String), code: i32, needle: &str) -> String {
    let all = format!("{}{}", r.1, r.2);
    assert_eq!(r.0, code, "exit code; output: {all}");
    assert!(all.contains(needle), "expected {needle:?} in: {all}");
    r.1
}

fn data_dir(s: &airlock_tests::DevServer) -> std::path::PathBuf {
    s.dir.path().join("airlock-dev")
}

#[test]
fn full_cycle_from_airlockctl_with_separate_identities() {
    let (s, sock, tok) =
        production_server(&roles(), "mode = \"approvers\"\napprovers = 2", "", &[]);
    let ctl = |uid, args: &[&str]| airlockctl_as(uid, &sock, args);
    let (st, v, original) = iris_infer(&s.addr, &tok);
    assert_eq!((st, v.as_str()), (200, "1.0.0"));

    expect(ctl(Some(VIEWER), &["whoami"]), 0, "viewer");
    expect(ctl(Some(4999), &["status"]), 1, "no role");
    // Nothing to roll back to yet.
    expect(
        ctl(Some(OPERATOR), &["model", "rollback", "demo-iris"]),
        1,
        "no retired version",
    );

    // Import as the operator, watching validation on this machine.
    let b110 = iris_bundle(&data_dir(&s), "1.1.0", 1.1, 0.0).expect("bundle");
    // The operator reads it as its own uid.
    let b = airlock_tests::world_readable(&b110);
    expect(
        ctl(Some(VIEWER), &["bundle", "import", &b]),
        1,
        "needs the operator role",
    );
    let out = expect(
        ctl(Some(OPERATOR), &["bundle", "import", &b, "--watch"]),
        0,
        "VALIDATED",
    );
    assert!(out.contains("PASSED on cpu"), "{out}");
    // Not approved yet: cannot be promoted.
    expect(
        ctl(Some(OPERATOR), &["model", "promote", "demo-iris", "1.1.0"]),
        1,
        "only approved versions can be promoted",
    );
    // Four eyes: the importer cannot approve; a viewer cannot; the same approver not twice.
    expect(
        ctl(Some(OPERATOR), &["bundle", "approve", "demo-iris", "1.1.0"]),
        1,
        "needs the approver role",
    );
    expect(
        ctl(None, &["bundle", "approve", "demo-iris", "1.1.0"]),
        0,
        "state validated",
    );
    let (code, _, err) = ctl(None, &["bundle", "approve", "demo-iris", "1.1.0"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("has already approved"), "{err}");
    expect(
        ctl(
            Some(APPROVER_A),
            &[
                "bundle",
                "approve",
                "demo-iris",
                "1.1.0",
                "--comment",
                "checked on rack 4",
            ],
        ),
        0,
        "state approved",
    );
    expect(
        ctl(
            Some(APPROVER_B),
            &["bundle", "approve", "demo-iris", "1.1.0"],
        ),
        1,
        "only validated versions can be approved",
    );
    // Promote, and the new version answers.
    expect(
        ctl(Some(OPERATOR), &["model", "promote", "demo-iris", "1.1.0"]),
        0,
        "1.1.0 is active",
    );
    assert_eq!(
        iris_infer(&s.addr, &tok),
        (200, "1.1.0".to_string(), iris_answer(1.1))
    );
    let listed = expect(ctl(Some(VIEWER), &["models", "list"]), 0, "demo-iris");
    assert!(
        listed.contains("1.1.0") && listed.contains("1.0.0"),
        "rollback target shown: {listed}"
    );
    // Roll back: the previous version answers again.
    expect(
        ctl(
            Some(OPERATOR),
            &["model", "rollback", "demo-iris", "--reason", "drill"],
        ),
        0,
        "1.0.0 is active",
    );
    assert_eq!(
        iris_infer(&s.addr, &tok),
        (200, "1.0.0".to_string(), original)
    );

    // A model that misses its golden vectors fails validation and cannot be approved.
    let bad = iris_bundle(&data_dir(&s), "1.2.0", 1.2, 0.5).expect("bundle");
    let bad = bad.display().to_string();
    let out = expect(
        ctl(None, &["bundle", "import", &bad, "--watch"]),
        1,
        "failed validation",
    );
    assert!(out.contains("FAIL") && out.contains("case-1"), "{out}");
    expect(
        ctl(
            Some(APPROVER_A),
            &["bundle", "approve", "demo-iris", "1.2.0"],
        ),
        1,
        "validation_failed",
    );
    expect(
        ctl(Some(OPERATOR), &["model", "promote", "demo-iris", "1.2.0"]),
        1,
        "only approved versions",
    );
    expect(
        ctl(
            Some(APPROVER_A),
            &[
                "bundle",
                "reject",
                "demo-iris",
                "1.2.0",
                "--reason",
                "wrong outputs",
            ],
        ),
        0,
        "rejected",
    );
    expect(
        ctl(Some(OPERATOR), &["model", "promote", "demo-iris", "1.2.0"]),
        1,
        "is rejected",
    );

    // The record: history, audit chain, JSON for scripts.
    let shown = expect(
        ctl(Some(VIEWER), &["bundle", "show", "demo-iris", "1.1.0"]),
        0,
        "checked on rack 4",
    );
    assert!(
        shown.contains("uid:4102") && shown.contains("promote"),
        "{shown}"
    );
    expect(
        ctl(Some(VIEWER), &["audit", "verify"]),
        0,
        "audit chain verified",
    );
    let audit = expect(
        ctl(
            Some(VIEWER),
            &["--json", "audit", "list", "--limit", "1000"],
        ),
        0,
        "promote",
    );
    let v: serde_json::Value = serde_json::from_str(&audit).expect("json");
    let actions: Vec<&str> = v["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["action"].as_str())
        .collect();
    for a in [
        "import",
        "validate",
        "approve",
        "promote_begin",
        "promote",
        "rollback",
        "reject",
    ] {
        assert!(actions.contains(&a), "{a} in {actions:?}");
    }
    // The report digest shown to approvers is the one the audit record names.
    let audited = v["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["action"] == "validate" && r["version"] == "1.1.0")
        .map(|r| r["detail"]["report_sha256"].clone())
        .unwrap();
    let shown = expect(
        ctl(
            Some(VIEWER),
            &["--json", "bundle", "show", "demo-iris", "1.1.0"],
        ),
        0,
        "validation_sha256",
    );
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["validation_sha256"], audited);
    expect(ctl(Some(VIEWER), &["trust", "show"]), 0, "bundle");
    assert!(s.stop(), "clean stop");
}

/// Every admin endpoint refuses a role without the permission, on the socket and over TCP
/// with a token (whose admin:viewer scope is its only role); model-only tokens get nothing.
#[test]
fn every_admin_endpoint_checks_the_role_on_both_transports() {
    let (s, sock, _) = production_server(&roles(), "mode = \"approvers\"", "", &[]);
    let mutating: &[(&str, &str, &str)] = &[
        ("POST", "/api/v1/bundles", "operator"),
        ("POST", "/api/v1/bundles/import", "operator"),
        (
            "POST",
            "/api/v1/models/demo-iris/versions/1.0.0/approve",
            "approver",
        ),
        (
            "POST",
            "/api/v1/models/demo-iris/versions/1.0.0/reject",
            "approver",
        ),
        ("POST", "/api/v1/models/demo-iris/promote", "operator"),
        ("POST", "/api/v1/models/demo-iris/rollback", "operator"),
        ("POST", "/api/v1/trust", "admin"),
        ("GET", "/api/v1/tokens", "admin"),
        ("POST", "/api/v1/tokens", "admin"),
        ("DELETE", "/api/v1/tokens/0123456789abcdef", "admin"),
    ];
    let reading = [
        "/api/v1/status",
        "/api/v1/models",
        "/api/v1/models/demo-iris",
        "/api/v1/models/demo-iris/versions/1.0.0",
        "/api/v1/bundles",
        "/api/v1/trust",
        "/api/v1/audit",
        "/api/v1/audit/verify",
    ];
    // Socket, as the viewer uid: reads work, every change is 403 naming the role needed.
    let as_viewer = |method: &str, path: &str| -> (u16, String) {
        let out = std::process::Command::new("setpriv")
            .args([
                &format!("--reuid={VIEWER}"),
                &format!("--regid={VIEWER}"),
                "--clear-groups",
                "curl",
                "-s",
                "-w",
                "\n%{http_code}",
                "--unix-socket",
            ])
            .arg(&sock)
            .args(["-X", method, "-d", "{}", &format!("http://airlockd{path}")])
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    };
    for (m, p, role) in mutating {
        let (code, body) = as_viewer(m, p);
        assert_eq!(code, 403, "{m} {p}: {body}");
        assert!(
            body.contains(&format!("needs the {role} role")),
            "{m} {p}: {body}"
        );
    }
    for p in reading {
        let (code, body) = as_viewer("GET", p);
        assert_eq!(code, 200, "{p}: {body}");
    }
    // TCP with tokens: admin:viewer reads and is refused changes; model:* gets no admin API.
    let (code, out, err) = airlockctl_as(
        None,
        &sock,
        &[
            "--json",
            "token",
            "create",
            "--name",
            "ro",
            "--scope",
            "admin:viewer",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let viewer_token = serde_json::from_str::<serde_json::Value>(&out).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, out, _) = airlockctl_as(
        None,
        &sock,
        &[
            "--json", "token", "create", "--name", "m", "--scope", "model:*",
        ],
    );
    let model_token = serde_json::from_str::<serde_json::Value>(&out).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let auth = |t: &str| format!("Bearer {t}");
    for (m, p, role) in mutating {
        let a = auth(&viewer_token);
        let (st, _, body) = airlock_tests::http(&s.addr, m, p, &[("Authorization", &a)], b"{}");
        let body = String::from_utf8_lossy(&body);
        assert_eq!(st, 403, "{m} {p}: {body}");
        assert!(body.contains(&format!("needs the {role} role")), "{body}");
        let a = auth(&model_token);
        let (st, _, _) = airlock_tests::http(&s.addr, m, p, &[("Authorization", &a)], b"{}");
        assert_eq!(st, 403, "model token on {m} {p}");
        let (st, _, _) = airlock_tests::http(&s.addr, m, p, &[], b"{}");
        assert_eq!(st, 401, "no token on {m} {p}");
    }
    for p in reading {
        let a = auth(&viewer_token);
        let (st, _, body) = airlock_tests::http(&s.addr, "GET", p, &[("Authorization", &a)], b"");
        assert_eq!(st, 200, "{p}: {}", String::from_utf8_lossy(&body));
        let a = auth(&model_token);
        let (st, _, _) = airlock_tests::http(&s.addr, "GET", p, &[("Authorization", &a)], b"");
        assert_eq!(st, 403, "model token on {p}");
    }
    let log = s.log();
    assert!(
        !log.contains(&viewer_token[20..]) && !log.contains(&model_token[20..]),
        "no token secret in the log"
    );
    assert!(s.stop());
}

/// Sends the head of an upload and only half of the bundle, then closes.
fn cut_off_upload(sock: &Path, bundle: &[u8]) -> String {
    let mut c = UnixStream::connect(sock).expect("connect");
    write!(
        c,
        "POST /api/v1/bundles HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
        bundle.len()
    )
    .unwrap();
    c.write_all(&bundle[..bundle.len() / 2]).unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    out
}

#[test]
fn a_cut_off_upload_and_a_concurrent_import_leave_nothing_behind() {
    let (s, sock, tok) = production_server(
        &roles(),
        "mode = \"approvers\"",
        "",
        &[("AIRLOCK_FAULT_PAUSE", "import:2500")],
    );
    let dd = data_dir(&s);
    let bundle = std::fs::read(iris_bundle(&dd, "1.1.0", 1.1, 0.0).unwrap()).unwrap();
    let answer = cut_off_upload(&sock, &bundle);
    // A transport failure, the client's: 400 with its own kind, never "malformed".
    assert!(answer.contains(" 400 "), "{answer}");
    assert!(
        answer.contains("\"kind\":\"transport\"") && answer.contains("cut off"),
        "{answer}"
    );
    let refused = airlock_tests::audit_log(&sock)
        .into_iter()
        .rfind(|r| r["action"] == "import_refused")
        .unwrap();
    assert_eq!(refused["detail"]["error"], "transport", "{refused}");
    assert_eq!(
        std::fs::read_dir(dd.join("staging")).unwrap().count(),
        0,
        "staging is empty"
    );
    let (_, out, _) = airlockctl_as(None, &sock, &["--json", "models", "show", "demo-iris"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["versions"].as_array().unwrap().len(),
        1,
        "no version recorded: {v}"
    );
    // A second import while one runs is refused at once; the first one completes.
    let path = iris_bundle(&dd, "1.1.0", 1.1, 0.0).unwrap();
    let p = path.display().to_string();
    let sock2 = sock.clone();
    let first = std::thread::spawn(move || airlockctl_as(None, &sock2, &["bundle", "import", &p]));
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let p = path.display().to_string();
    expect(
        airlockctl_as(None, &sock, &["bundle", "import", &p]),
        1,
        "another import is running",
    );
    expect(first.join().unwrap(), 0, "imported demo-iris 1.1.0");
    assert_eq!(iris_infer(&s.addr, &tok).1, "1.0.0", "serving undisturbed");
    assert!(s.stop());
}

/// The signed-approval policy: approver keys enrolled in a rotated trust root (imported with
/// airlockctl), approvals signed with `--key`, counted by distinct valid key against the role's
/// threshold; unsigned, stranger-signed and twice-signed approvals are refused.
#[test]
fn signed_approvals_count_distinct_approver_keys() {
    use airlock_signing::trust::{Role, RootBuilder};
    use airlock_signing::{PrivateKey, TrustRoot};
    let (s, sock, tok) = production_server(&roles(), "mode = \"signed\"", "", &[]);
    let ctl = |uid, args: &[&str]| airlockctl_as(uid, &sock, args);
    let dd = data_dir(&s);
    let keys = s.dir.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::set_permissions(&keys, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let key = |name: &str, owner: u32| {
        let k = PrivateKey::generate().unwrap();
        let p = keys.join(name);
        k.write_new(&p).unwrap();
        std::os::unix::fs::chown(&p, Some(owner), Some(owner)).unwrap();
        (k, p.display().to_string())
    };
    let (k1, k1_path) = key("alice.key", APPROVER_A);
    let (k2, k2_path) = key("bob.key", APPROVER_B);
    let (_, stranger_path) = key("stranger.key", APPROVER_B);
    // Rotate the trust root: two approver keys, threshold 2, signed by the (dev) root key.
    let current = TrustRoot::read(&dd.join("trust/root.json")).unwrap();
    let root_key = PrivateKey::read(&dd.join("dev/dev-root.key")).unwrap();
    let mut b = RootBuilder::rotate_from(
        &current,
        time::OffsetDateTime::now_utc() + time::Duration::days(365),
    );
    b.add_key(Role::Approver, k1.public())
        .add_key(Role::Approver, k2.public())
        .threshold(Role::Approver, 2);
    let rotated = keys.join("root-v2.json");
    std::fs::write(
        &rotated,
        serde_json::to_vec_pretty(&b.signed(&[root_key]).unwrap()).unwrap(),
    )
    .unwrap();
    std::fs::set_permissions(
        &rotated,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let r = rotated.display().to_string();
    expect(
        ctl(Some(OPERATOR), &["trust", "import", &r]),
        1,
        "needs the admin role",
    );
    expect(
        ctl(None, &["trust", "import", &r]),
        0,
        "trust root version 2 installed",
    );
    expect(
        ctl(Some(VIEWER), &["trust", "show"]),
        0,
        "approver  threshold 2 of 2",
    );

    let b = iris_bundle(&dd, "1.1.0", 1.1, 0.0).unwrap();
    let b = b.display().to_string();
    expect(
        ctl(None, &["bundle", "import", &b, "--watch"]),
        0,
        "VALIDATED",
    );
    let approve = |uid, extra: &[&str]| {
        let mut args = vec!["bundle", "approve", "demo-iris", "1.1.0"];
        args.extend_from_slice(extra);
        ctl(Some(uid), &args)
    };
    expect(
        approve(APPROVER_A, &[]),
        1,
        "needs an approver-role signature",
    );
    expect(
        approve(APPROVER_B, &["--key", &stranger_path]),
        1,
        "signature is not accepted",
    );
    expect(
        approve(APPROVER_A, &["--key", &k1_path]),
        0,
        "state validated",
    );
    // Alice's key in Bob's hands still counts once.
    let copied = keys.join("alice-copy.key");
    std::fs::copy(&k1_path, &copied).unwrap();
    std::os::unix::fs::chown(&copied, Some(APPROVER_B), Some(APPROVER_B)).unwrap();
    let copied = copied.display().to_string();
    expect(
        approve(APPROVER_B, &["--key", &copied]),
        1,
        "has already signed",
    );
    expect(
        ctl(Some(OPERATOR), &["model", "promote", "demo-iris", "1.1.0"]),
        1,
        "only approved versions",
    );
    expect(
        approve(APPROVER_B, &["--key", &k2_path]),
        0,
        "state approved",
    );
    expect(
        ctl(Some(OPERATOR), &["model", "promote", "demo-iris", "1.1.0"]),
        0,
        "1.1.0 is active",
    );
    assert_eq!(iris_infer(&s.addr, &tok).1, "1.1.0");

    // Whoever controls the state database cannot forge an approval: 1.2.0 is marked approved
    // directly in sled with a stranger's signature, and promotion refuses it.
    let b = iris_bundle(&dd, "1.2.0", 1.2, 0.0).unwrap();
    let b = b.display().to_string();
    expect(
        ctl(None, &["bundle", "import", &b, "--watch"]),
        0,
        "VALIDATED",
    );
    let log = s.log();
    let dir = s.kill();
    {
        let mut c = airlock_config::Config::default();
        c.paths.data_dir = dir.path().join("airlock-dev");
        c.approval.mode = airlock_config::ApprovalMode::Signed;
        let u = airlock_updater::Updater::open(&c).unwrap();
        let forged = PrivateKey::generate().unwrap().sign(
            airlock_signing::SigningContext::Approval,
            b"whatever the attacker likes",
        );
        let v = semver::Version::new(1, 2, 0);
        let state = u
            .registry()
            .approve(
                u.now().unwrap(),
                "demo-iris",
                &v,
                &airlock_updater::Actor::new("uid:4102").unwrap(),
                None,
                Some(airlock_updater::SignedApproval {
                    signature: forged,
                    threshold_met: true,
                }),
            )
            .unwrap();
        assert_eq!(state, airlock_updater::VersionState::Approved);
    }
    let s = airlock_tests::restart_production(dir, &[]);
    expect(
        ctl(Some(OPERATOR), &["model", "promote", "demo-iris", "1.2.0"]),
        1,
        "do not carry valid approver signatures",
    );
    assert_eq!(iris_infer(&s.addr, &tok).1, "1.1.0", "1.1.0 still serves");
    assert!(
        !log.contains("PRIVATE") && !log.contains(&hex_of(&keys.join("alice.key"))),
        "no key material in the log"
    );
    assert!(s.stop());
}

/// The key file's bytes as hex (to prove they never reach the log).
fn hex_of(p: &Path) -> String {
    std::fs::read(p)
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()[..32]
        .to_string()
}

/// Validation compares the contract with the active version's (approval must acknowledge a
/// change) and checks the manifest's hardware requirements against what this machine did.
#[test]
fn a_changed_contract_needs_acknowledgement_and_cuda_only_bundles_fail_on_cpu() {
    let (s, sock, _) = production_server(&roles(), "mode = \"approvers\"", "", &[]);
    let ctl = |uid, args: &[&str]| airlockctl_as(uid, &sock, args);
    let dd = data_dir(&s);
    // Five inputs instead of four.
    let wider = airlock_tests::model_bundle(
        &dd,
        "1.1.0",
        &airlock_signing::onnx::dense_relu(5, &[3], 7),
        false,
    )
    .unwrap();
    let out = expect(
        ctl(
            Some(OPERATOR),
            &[
                "bundle",
                "import",
                &airlock_tests::world_readable(&wider),
                "--watch",
            ],
        ),
        0,
        "CONTRACT CHANGE",
    );
    assert!(
        out.contains(
            "input 'x' changed from float32 float32[batch, 4] to float32 float32[batch, 5]"
        ) || out.contains("input 'x' changed"),
        "{out}"
    );
    expect(
        ctl(
            Some(APPROVER_A),
            &["bundle", "approve", "demo-iris", "1.1.0"],
        ),
        1,
        "clients may break",
    );
    expect(
        ctl(
            Some(APPROVER_A),
            &[
                "bundle",
                "approve",
                "demo-iris",
                "1.1.0",
                "--acknowledge-contract-change",
                "--comment",
                "clients updated",
            ],
        ),
        0,
        "state approved",
    );
    expect(
        ctl(Some(VIEWER), &["bundle", "show", "demo-iris", "1.1.0"]),
        0,
        "[contract change acknowledged] clients updated",
    );
    // A bundle that requires CUDA fails validation on this CPU-only machine, saying why.
    let cuda = airlock_tests::model_bundle(
        &dd,
        "1.2.0",
        &airlock_signing::onnx::linear_classifier(&[0.0; 12], &[0.0; 3]),
        true,
    )
    .unwrap();
    let out = expect(
        ctl(
            Some(OPERATOR),
            &[
                "bundle",
                "import",
                &airlock_tests::world_readable(&cuda),
                "--watch",
            ],
        ),
        1,
        "failed validation",
    );
    assert!(
        out.contains("requires the CUDA execution provider"),
        "{out}"
    );
    assert!(s.stop());
}
