//! `airlock-sign` as the release team uses it: keygen, trust init/sign/rotate/verify, bundle
//! create/sign/verify/inspect, run as the real binary in a scratch directory.

use std::path::Path;

use airlock_tests::{fixtures, run};

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn ok(args: &[&str]) -> String {
    let (code, out, err) = run("airlock-sign", args);
    assert_eq!(code, 0, "airlock-sign {args:?} failed: {out}{err}");
    out
}

fn private_hex(path: &Path) -> String {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).expect("key")).expect("json");
    v["private_key"].as_str().expect("hex").to_string()
}

#[test]
fn release_workflow_from_keygen_to_verified_bundle() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let k = |n: &str| d.join(n);
    let mut outputs = String::new();
    for name in ["root1", "root2", "bundle1", "bundle2", "bundle3"] {
        let out = ok(&["keygen", "--out", &s(&k(name))]);
        let keyid = out
            .lines()
            .find(|l| l.starts_with("key id:"))
            .expect("key id line");
        let pubfile: serde_json::Value =
            serde_json::from_slice(&std::fs::read(k(&format!("{name}.pub"))).expect("pub"))
                .expect("json");
        assert!(keyid.ends_with(pubfile["keyid"].as_str().expect("keyid")));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(k(name))
                .expect("meta")
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
        outputs.push_str(&out);
    }
    // keygen never overwrites.
    let (code, _, err) = run("airlock-sign", &["keygen", "--out", &s(&k("root1"))]);
    assert_eq!(code, 2, "{err}");

    // A 2-of-2 root, 2-of-3 bundle role, signed by the two root holders separately.
    let root = k("root.json");
    outputs += &ok(&[
        "trust",
        "init",
        "--out",
        &s(&root),
        "--root-key",
        &s(&k("root1.pub")),
        "--root-key",
        &s(&k("root2.pub")),
        "--root-threshold",
        "2",
        "--bundle-key",
        &s(&k("bundle1.pub")),
        "--bundle-key",
        &s(&k("bundle2.pub")),
        "--bundle-key",
        &s(&k("bundle3.pub")),
        "--bundle-threshold",
        "2",
        "--sign",
        &s(&k("root1")),
    ]);
    assert!(outputs.contains("own root threshold: not yet"), "{outputs}");
    let (code, _, err) = run("airlock-sign", &["trust", "verify", &s(&root)]);
    assert_eq!(code, 1, "one of two root signatures: {err}");
    outputs += &ok(&[
        "trust",
        "sign",
        "--root",
        &s(&root),
        "--key",
        &s(&k("root2")),
    ]);
    outputs += &ok(&["trust", "verify", &s(&root)]);

    // Bundle from a model directory as a model team hands it over.
    let model = fixtures::write_model_dir(&d.join("handover"));
    let out_dir = d.join("out");
    std::fs::create_dir(&out_dir).expect("mkdir");
    outputs += &ok(&[
        "bundle",
        "create",
        "--model",
        &s(&model),
        "--vectors",
        &s(&d.join("handover/vectors")),
        "--name",
        "iris",
        "--version",
        "1.2.0",
        "--out",
        &s(&out_dir),
        "--key",
        &s(&k("bundle1")),
        "--execution-provider",
        "cuda",
        "--min-compute-capability",
        "8.0",
        "--gpu-memory-mib",
        "512",
        "--min-onnxruntime",
        "1.20.0",
    ]);
    let bundle = out_dir.join("iris-1.2.0.airlock");
    assert!(bundle.is_file());
    let (code, _, err) = run(
        "airlock-sign",
        &["bundle", "verify", &s(&bundle), "--trust", &s(&root)],
    );
    assert_eq!(code, 1);
    assert!(err.contains("threshold_not_met"), "{err}");
    outputs += &ok(&["bundle", "sign", &s(&bundle), "--key", &s(&k("bundle2"))]);
    let verified = ok(&[
        "bundle",
        "verify",
        &s(&bundle),
        "--trust",
        &s(&root),
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&verified).expect("json");
    assert_eq!(v["ok"], true);
    assert_eq!(v["signers"].as_array().expect("signers").len(), 2);
    outputs += &verified;

    let inspect = ok(&["bundle", "inspect", &s(&bundle)]);
    assert!(inspect.contains("iris 1.2.0"), "{inspect}");
    assert!(inspect.contains("x float32[batch, 4]"), "{inspect}");
    assert!(inspect.contains("y float32[batch, 3]"), "{inspect}");
    assert!(inspect.contains("compute capability 8.0"), "{inspect}");
    let json = ok(&["bundle", "inspect", &s(&bundle), "--json"]);
    let m: serde_json::Value = serde_json::from_str(&json).expect("manifest json");
    assert_eq!(m["model"]["name"], "iris");
    assert_eq!(m["vectors"][0]["inputs"]["x"], "vectors/case-1/in0.npy");
    outputs += &inspect;

    // Rotation: revoke bundle1, signed by both root keys: accepted as a successor of v1.
    let root2 = k("root-v2.json");
    outputs += &ok(&[
        "trust",
        "rotate",
        "--current",
        &s(&root),
        "--out",
        &s(&root2),
        "--revoke-key",
        &s(&k("bundle1.pub")),
        "--sign",
        &s(&k("root1")),
        "--sign",
        &s(&k("root2")),
    ]);
    outputs += &ok(&["trust", "verify", &s(&root2), "--current", &s(&root)]);
    let (code, _, err) = run(
        "airlock-sign",
        &["bundle", "verify", &s(&bundle), "--trust", &s(&root2)],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("revoked_key"),
        "a bundle signed by a revoked key: {err}"
    );

    // No private key ever appears in anything the tool printed.
    for name in ["root1", "root2", "bundle1", "bundle2", "bundle3"] {
        assert!(
            !outputs.contains(&private_hex(&k(name))),
            "{name}'s private key was printed"
        );
    }
}

#[test]
fn create_refuses_vectors_that_break_the_contract() {
    let dir = tempfile::tempdir().expect("tmp");
    let model = fixtures::write_model_dir(dir.path());
    let bad = airlock_signing::npy::encode(
        airlock_signing::manifest::DType::Int64,
        0,
        &[2, 4],
        &[0u8; 64],
    )
    .expect("npy");
    std::fs::write(dir.path().join("vectors/case-1/inputs/x.npy"), bad).expect("w");
    let (vectors, out) = (s(&dir.path().join("vectors")), s(dir.path()));
    let create = || {
        run(
            "airlock-sign",
            &[
                "bundle",
                "create",
                "--model",
                &s(&model),
                "--vectors",
                &vectors,
                "--name",
                "iris",
                "--version",
                "1.0.0",
                "--out",
                &out,
            ],
        )
    };
    let (code, _, err) = create();
    assert_eq!(code, 2);
    assert!(
        err.contains("x: element type is int64, the model wants float32"),
        "{err}"
    );
    fixtures::write_model_dir(dir.path());
    std::fs::write(dir.path().join("vectors/case-1/inputs/z.npy"), b"junk").expect("w");
    let (code, _, err) = create();
    assert_eq!(code, 2);
    assert!(err.contains("\"z\" is not an input of the model"), "{err}");
    assert!(
        !dir.path().join("iris-1.0.0.airlock").exists(),
        "nothing written on failure"
    );
}

#[test]
fn every_command_has_help() {
    for args in [
        vec!["--help"],
        vec!["keygen", "--help"],
        vec!["trust", "init", "--help"],
        vec!["trust", "rotate", "--help"],
        vec!["trust", "sign", "--help"],
        vec!["trust", "verify", "--help"],
        vec!["bundle", "create", "--help"],
        vec!["bundle", "sign", "--help"],
        vec!["bundle", "verify", "--help"],
        vec!["bundle", "inspect", "--help"],
    ] {
        let out = ok(&args);
        assert!(out.contains("Usage"), "{args:?}: {out}");
    }
    let (code, _, _) = run("airlock-sign", &["bundle", "frobnicate"]);
    assert_eq!(code, 2, "usage errors exit 2");
}
