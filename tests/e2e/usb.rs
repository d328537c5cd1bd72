//! USB bundle detection through UDisks2: a stand-in UDisks2 service (the only stand-in the
//! tests use: the real one needs block devices; `src/bin/airlock-udisks-standin.rs`) on a
//! private system bus announces removable filesystems. airlockd mounts an unmounted one
//! read-only through it (the stand-in refuses anything writable), lists the bundles (not
//! following a symlink off the medium, not a fixed disk's), offers them without importing, imports
//! on request, forgets a medium when it goes, and with `auto_stage` stages what it finds. A
//! medium that vanishes mid-import fails that import cleanly with nothing left in staging.

// In tests a panic is the failure report; unwrapping is the assertion.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use airlock_tests::{
    airlockctl_as, bin, iris_bundle, private_system_bus, wait_until, Bus, DevServer,
};

struct StandIn {
    child: Child,
    to: ChildStdin,
    from: std::io::Lines<BufReader<ChildStdout>>,
}

impl StandIn {
    fn start(bus: &Bus) -> StandIn {
        let mut child = Command::new(bin("airlock-udisks-standin"))
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let to = child.stdin.take().unwrap();
        let mut from = BufReader::new(child.stdout.take().unwrap()).lines();
        assert_eq!(from.next().unwrap().unwrap(), "ready");
        StandIn { child, to, from }
    }
    fn say(&mut self, cmd: &str) -> String {
        writeln!(self.to, "{cmd}").unwrap();
        self.from.next().unwrap().unwrap()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const UDISKS_POLICY: &str = r#"<policy user="root"><allow own="org.freedesktop.UDisks2"/></policy>
  <policy context="default"><allow send_destination="org.freedesktop.UDisks2"/></policy>"#;

fn media(sock: &std::path::Path) -> serde_json::Value {
    let (code, out, err) = airlockctl_as(None, sock, &["--json", "bundle", "media"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn removable_media_are_mounted_read_only_listed_offered_and_imported_on_request() {
    let bus = private_system_bus(UDISKS_POLICY);
    let mut standin = StandIn::start(&bus);
    let s = DevServer::start(
        None,
        &[
            ("DBUS_SYSTEM_BUS_ADDRESS", &bus.address),
            ("AIRLOCK_FAULT_PAUSE", "import:1500"),
        ],
    );
    let dd = s.dir.path().join("airlock-dev");
    let sock = dd.join("admin.sock");
    wait_until("the watcher", || s.log().contains("watching UDisks2"));
    // A stick: one bundle at the top, one too deep, a symlink to a bundle elsewhere.
    let stick = s.dir.path().join("stick");
    let elsewhere = s.dir.path().join("elsewhere");
    std::fs::create_dir_all(stick.join("a/b/c/d/e")).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    let b110 = iris_bundle(&dd, "1.1.0", 1.1, 0.0).unwrap();
    std::fs::copy(&b110, stick.join("demo-iris-1.1.0.airlock")).unwrap();
    std::fs::copy(&b110, stick.join("a/b/c/d/e/too-deep.airlock")).unwrap();
    let b120 = iris_bundle(&dd, "1.2.0", 1.2, 0.0).unwrap();
    std::fs::copy(&b120, elsewhere.join("demo-iris-1.2.0.airlock")).unwrap();
    std::os::unix::fs::symlink(
        elsewhere.join("demo-iris-1.2.0.airlock"),
        stick.join("link.airlock"),
    )
    .unwrap();
    // A fixed disk with a bundle on it is not a removable medium.
    let fixed = s.dir.path().join("fixed");
    std::fs::create_dir_all(&fixed).unwrap();
    std::fs::copy(&b120, fixed.join("demo-iris-1.2.0.airlock")).unwrap();
    assert_eq!(
        standin.say(&format!("plug sdz1 {} mounted fixed", fixed.display())),
        "ok"
    );
    assert_eq!(
        standin.say(&format!(
            "plug sdy1 {} unmounted removable",
            stick.display()
        )),
        "ok"
    );
    wait_until("the medium", || {
        media(&sock)["media"]
            .as_array()
            .is_some_and(|m| !m.is_empty())
    });
    let m = media(&sock);
    let list = m["media"].as_array().unwrap();
    assert_eq!(list.len(), 1, "only the removable one: {m}");
    assert_eq!(list[0]["device"], "/dev/sdy1");
    let paths: Vec<&str> = list[0]["bundles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        vec![stick.join("demo-iris-1.1.0.airlock").display().to_string()],
        "{m}"
    );
    assert_eq!(
        list[0]["truncated"], true,
        "the too-deep directory is reported as not searched"
    );
    // Mounted read-only, and only that.
    let mounts = standin.say("mounts");
    assert_eq!(mounts, "mount sdy1 ro,nosuid,nodev,noexec", "{mounts}");
    // Offered, not imported.
    let (_, out, _) = airlockctl_as(None, &sock, &["--json", "models", "show", "demo-iris"]);
    assert!(
        !out.contains("1.1.0"),
        "nothing imported without an operator: {out}"
    );
    let (code, out, _) = airlockctl_as(None, &sock, &["bundle", "media"]);
    assert!(
        code == 0 && out.contains("/dev/sdy1 (SDY1) mounted read-only"),
        "{out}"
    );
    // The medium vanishes mid-import: that import fails cleanly.
    let p = paths[0].to_string();
    let sock2 = sock.clone();
    let import = std::thread::spawn(move || {
        airlockctl_as(None, &sock2, &["bundle", "import", &p, "--on-appliance"])
    });
    wait_until("the import to start", || {
        s.log().contains("fault point reached")
    });
    std::fs::write(paths[0], b"").unwrap(); // the data is gone under the reader
    assert_eq!(standin.say("unplug sdy1"), "ok");
    let (code, _, err) = import.join().unwrap();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("refused"), "{err}");
    assert_eq!(
        std::fs::read_dir(dd.join("staging")).unwrap().count(),
        0,
        "staging is clean"
    );
    wait_until("the medium to be forgotten", || {
        media(&sock)["media"]
            .as_array()
            .is_some_and(|m| m.is_empty())
    });
    // Plugged again (intact): imported on request, through the full pipeline.
    std::fs::copy(&b110, stick.join("demo-iris-1.1.0.airlock")).unwrap();
    assert_eq!(
        standin.say(&format!("plug sdy1 {} mounted removable", stick.display())),
        "ok"
    );
    wait_until("the medium again", || {
        media(&sock)["media"]
            .as_array()
            .is_some_and(|m| !m.is_empty())
    });
    let (code, out, err) = airlockctl_as(
        None,
        &sock,
        &["bundle", "import", paths[0], "--on-appliance", "--watch"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("APPROVED"), "{out}");
    assert!(s.stop());
}

#[test]
fn auto_stage_imports_what_a_medium_brings() {
    let bus = private_system_bus(UDISKS_POLICY);
    let mut standin = StandIn::start(&bus);
    let s = DevServer::start(
        Some("[media]\nauto_stage = true\n"),
        &[("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)],
    );
    let dd = s.dir.path().join("airlock-dev");
    let sock = dd.join("admin.sock");
    wait_until("the watcher", || s.log().contains("watching UDisks2"));
    let stick = s.dir.path().join("stick");
    std::fs::create_dir_all(&stick).unwrap();
    std::fs::copy(
        iris_bundle(&dd, "1.1.0", 1.1, 0.0).unwrap(),
        stick.join("demo-iris-1.1.0.airlock"),
    )
    .unwrap();
    assert_eq!(
        standin.say(&format!("plug sdx1 {} mounted removable", stick.display())),
        "ok"
    );
    wait_until("auto-staging", || {
        let (_, out, _) = airlockctl_as(None, &sock, &["--json", "models", "show", "demo-iris"]);
        out.contains("\"1.1.0\"")
    });
    let (_, out, _) = airlockctl_as(None, &sock, &["bundle", "show", "demo-iris", "1.1.0"]);
    assert!(out.contains("imported by airlockd:media"), "{out}");
    assert!(s.stop());
}
