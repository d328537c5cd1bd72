//! The unit under a real systemd: `image/build.sh` makes a minimal Debian 12 root filesystem
//! with airlockd, its hardened unit, the D-Bus policy, ONNX Runtime and the demo model, and
//! `image/boot-test.sh` boots it in QEMU (TCG, direct kernel boot). Its self-test unit reports
//! on the serial console that airlockd reached READY=1 under the full hardening, runs as the
//! `airlock` user, and answered a demo inference; then the VM powers off.

use std::process::Command;

#[test]
fn the_image_boots_and_airlockd_serves_under_its_hardened_unit() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = tempfile::tempdir().expect("tmp");
    let airlockd = airlock_tests::bin("airlockd");
    airlock_tests::bin("airlockctl");
    let bindir = airlockd.parent().expect("bin dir");
    let ort = airlock_tests::ort_library();
    let st = Command::new(repo.join("image/build.sh"))
        .arg(out.path())
        .arg(bindir)
        .arg(&ort)
        .status()
        .expect("image/build.sh (tools: image/tools.sh, run by scripts/setup.sh)");
    assert!(st.success(), "image build failed");
    let r = Command::new(repo.join("image/boot-test.sh"))
        .arg(out.path())
        .arg("480")
        .output()
        .expect("image/boot-test.sh");
    let said = String::from_utf8_lossy(&r.stdout);
    let serial = std::fs::read_to_string(out.path().join("serial.log")).unwrap_or_default();
    assert!(
        r.status.success() && said.contains("AIRLOCK-SELFTEST PASS user=airlock"),
        "{said}\n--- serial console (tail) ---\n{}",
        &serial[serial.len().saturating_sub(4000)..]
    );
    assert!(said.contains("status=\"serving 1 model"), "{said}");
}
