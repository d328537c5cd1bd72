//! The D-Bus interface on a real `dbus-daemon` (a private bus with the system bus's default
//! policy plus the shipped `packaging/org.airlock.Daemon1.conf`, started by the test): properties,
//! lifecycle methods authorised by the caller's uid (callers are real uids via `setpriv`), and
//! the signals, read with `dbus-monitor`. And without any bus: one warning, serving goes on.

// In tests a panic is the failure report; unwrapping is the assertion.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use airlock_tests::{
    iris_answer, iris_bundle, iris_infer, private_system_bus, wait_until, Bus, DevServer,
};

/// `busctl` against the bus as `uid` (None: as this process).
fn busctl(bus: &Bus, uid: Option<u32>, args: &[&str]) -> (bool, String) {
    let mut cmd = match uid {
        Some(u) => {
            let mut c = Command::new("setpriv");
            c.args([
                format!("--reuid={u}"),
                format!("--regid={u}"),
                "--clear-groups".into(),
                "busctl".into(),
            ]);
            c
        }
        None => Command::new("busctl"),
    };
    let out = cmd
        .arg(format!("--address={}", bus.address))
        .args(args)
        .output()
        .expect("busctl");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

const OBJ: [&str; 3] = [
    "org.airlock.Daemon1",
    "/org/airlock/Daemon1",
    "org.airlock.Daemon1",
];

fn call(bus: &Bus, uid: Option<u32>, method: &str, sig: &str, args: &[&str]) -> (bool, String) {
    let mut a = vec!["call", OBJ[0], OBJ[1], OBJ[2], method, sig];
    a.extend_from_slice(args);
    busctl(bus, uid, &a)
}

#[test]
fn the_interface_serves_properties_methods_by_role_and_signals() {
    let bus = private_system_bus("");
    let s = DevServer::start(None, &[("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)]);
    wait_until("the name on the bus", || {
        s.log().contains("D-Bus interface exported")
    });
    // Signals, as an operator's tool would follow them.
    let mut monitor = Command::new("dbus-monitor")
        .args([
            "--address",
            &bus.address,
            "type='signal',interface='org.airlock.Daemon1'",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("dbus-monitor");
    let seen = Arc::new(Mutex::new(String::new()));
    {
        let (mut out, seen) = (monitor.stdout.take().unwrap(), seen.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
    }
    std::thread::sleep(Duration::from_millis(300));
    let (ok, out) = busctl(
        &bus,
        None,
        &["get-property", OBJ[0], OBJ[1], OBJ[2], "ActiveModels"],
    );
    assert!(ok && out.contains("\"demo-iris\" \"1.0.0\""), "{out}");
    let (ok, out) = busctl(
        &bus,
        Some(65534),
        &["get-property", OBJ[0], OBJ[1], OBJ[2], "Version"],
    );
    assert!(
        ok && out.contains(env!("CARGO_PKG_VERSION")),
        "anyone may read: {out}"
    );
    // Import through D-Bus (root is admin in --dev); the dev policy approves after validation.
    let dd = s.dir.path().join("airlock-dev");
    let b = iris_bundle(&dd, "1.1.0", 1.1, 0.0).unwrap();
    // A path that is not on media airlockd offers: refused, whatever it is (the daemon never
    // opens a caller's path with its own privileges).
    for p in [
        b.display().to_string(),
        "/etc/shadow".into(),
        "/nonexistent".into(),
    ] {
        let (ok, out) = call(&bus, None, "ImportPath", "s", &[&p]);
        assert!(!ok && out.contains("Access denied"), "{p}: {out}");
    }
    // The caller's own file, by descriptor (a zbus client, as a UI on the appliance would be).
    let file = std::fs::File::open(&b).expect("bundle");
    let answer = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            let conn = zbus::connection::Builder::address(bus.address.as_str())?
                .build()
                .await?;
            let reply = conn
                .call_method(
                    Some("org.airlock.Daemon1"),
                    "/org/airlock/Daemon1",
                    Some("org.airlock.Daemon1"),
                    "ImportFd",
                    &(zbus::zvariant::Fd::from(&file),),
                )
                .await?;
            reply.body().deserialize::<(String, String)>()
        })
        .expect("ImportFd");
    assert_eq!(answer, ("demo-iris".to_string(), "1.1.0".to_string()));
    wait_until("ValidationFinished", || {
        seen.lock().unwrap().contains("member=ValidationFinished")
    });
    // Another uid, without a role: refused, naming the role.
    // (dbus-send prints the error's message; busctl prints only its errno text.)
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "dbus-send",
        ])
        .arg(format!("--bus={}", bus.address))
        .args([
            "--print-reply",
            "--dest=org.airlock.Daemon1",
            "/org/airlock/Daemon1",
        ])
        .args([
            "org.airlock.Daemon1.Promote",
            "string:demo-iris",
            "string:1.1.0",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("org.freedesktop.DBus.Error.AccessDenied")
            && err.contains("uid:65534(nobody) (no role) may not promote versions: that needs the operator role"),
        "{err}"
    );
    let (ok, out) = call(&bus, None, "Promote", "ss", &["demo-iris", "1.1.0"]);
    assert!(ok, "{out}");
    assert_eq!(iris_infer(&s.addr, "").2, iris_answer(1.1));
    let (ok, out) = call(
        &bus,
        None,
        "Rollback",
        "ss",
        &["demo-iris", "drill over D-Bus"],
    );
    assert!(ok && out.contains("\"1.0.0\""), "{out}");
    let (ok, out) = call(&bus, None, "Promote", "ss", &["demo-iris", "not-a-version"]);
    assert!(!ok && out.contains("is not a version"), "{out}");
    // Every failure has its own error name and keeps its kind (as the HTTP bodies do).
    let send = |version: &str| {
        let out = Command::new("dbus-send")
            .arg(format!("--bus={}", bus.address))
            .args([
                "--print-reply",
                "--dest=org.airlock.Daemon1",
                "/org/airlock/Daemon1",
                "org.airlock.Daemon1.Promote",
                "string:demo-iris",
            ])
            .arg(format!("string:{version}"))
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = send("9.9.9");
    assert!(
        err.contains("org.airlock.Error.NotFound: unknown_version: demo-iris has no version 9.9.9"),
        "{err}"
    );
    let err = send("1.1.0");
    assert!(
        err.contains("org.airlock.Error.Conflict: "),
        "promoting a retired version over D-Bus: {err}"
    );
    wait_until("ModelRolledBack", || {
        seen.lock().unwrap().contains("member=ModelRolledBack")
    });
    let all = seen.lock().unwrap().clone();
    for m in [
        "BundleStaged",
        "ValidationFinished",
        "ModelPromoted",
        "ModelRolledBack",
    ] {
        assert!(all.contains(&format!("member={m}")), "{m} in {all}");
    }
    assert!(all.contains("drill over D-Bus"), "{all}");
    let _ = monitor.kill();
    let _ = monitor.wait();
    assert!(s.stop());
}

#[test]
fn without_a_system_bus_the_daemon_warns_once_and_serves() {
    let s = DevServer::start(
        None,
        &[("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/bus")],
    );
    assert_eq!(iris_infer(&s.addr, "").0, 200);
    wait_until("the warning", || s.log().contains("no system D-Bus"));
    assert_eq!(s.log().matches("no system D-Bus").count(), 1, "{}", s.log());
    assert!(s.stop());
}
