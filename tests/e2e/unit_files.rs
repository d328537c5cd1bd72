//! The systemd unit files in `packaging/`: `systemd-analyze verify` accepts them (with the
//! binary path pointed at the binary this build made, the only change), and `systemd-analyze
//! security --offline=true` scores their exposure at or below 2.0 (the figures are recorded in
//! `docs/security.md`).

use std::process::Command;

fn exposure(out: &str, unit: &str) -> f64 {
    let marker = format!("Overall exposure level for {unit}: ");
    out.lines()
        .find_map(|l| l.split(&marker).nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level for {unit} in:\n{out}"))
}

#[test]
fn unit_files_verify_and_score_at_most_2() {
    let dir = tempfile::tempdir().expect("tmp");
    let airlockd = airlock_tests::bin("airlockd");
    let packaging = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging");
    for (unit, limit) in [("airlockd.service", 2.0), ("airlockd-gpu.service", 2.0)] {
        let text = std::fs::read_to_string(packaging.join(unit)).expect("unit file");
        assert!(text.contains("ExecStart=/usr/bin/airlockd "), "{unit}");
        // The descriptor limit is set, and above the default connection caps plus what the
        // daemon keeps for itself (airlockd's limits::FD_RESERVE).
        let defaults = airlock_config::Config::default();
        let needed = u64::from(defaults.server.max_connections)
            + u64::from(defaults.admin.max_connections)
            + 256;
        let nofile: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("LimitNOFILE="))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{unit} sets no LimitNOFILE="));
        assert!(nofile >= needed, "{unit}: LimitNOFILE={nofile} < {needed}");
        let path = dir.path().join(unit);
        std::fs::write(
            &path,
            text.replace("/usr/bin/airlockd", &airlockd.display().to_string()),
        )
        .expect("write");
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&path)
            .output()
            .expect("systemd-analyze (Debian package systemd)");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && err.trim().is_empty(),
            "{unit}: {err}"
        );
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(&path)
            .output()
            .expect("systemd-analyze");
        let text = String::from_utf8_lossy(&out.stdout);
        let score = exposure(&text, unit);
        assert!(
            score <= limit,
            "{unit}: exposure {score} > {limit}:\n{text}"
        );
    }
}
