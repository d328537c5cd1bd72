//! The image's Debian package lock (issue 11): `image/lock.sh`, the part of `image/build.sh` that
//! applies `image/packages.lock`, against a Debian mirror this test makes and moves itself: tiny
//! packages built with `dpkg-deb`, indexed with `apt-ftparchive`, served over HTTP on loopback.
//! The root is bootstrapped by the real mmdebstrap and apt (`--variant=extract`: the packages are
//! resolved, downloaded and unpacked, no maintainer scripts), so what is checked is what the
//! build really installs. Nothing here depends on the state of Debian's own mirror.
//!
//! The mirror at lock time (`v1`), then after it moved (`v2`):
//!
//! | package       | v1                         | v2                                      |
//! |---------------|----------------------------|-----------------------------------------|
//! | `kmeta`       | 1.0, `kabi-1 (= 1.0)`      | 2.0 only, `kabi-2 (= 2.0)` (a new name) |
//! | `kabi-1`      | 1.0                        | 1.0 (still there, as on Debian)         |
//! | `app`         | 1.0, `libfoo (>= 1.0), util, data` | 2.0 only, also `data (>= 1:2.0)` |
//! | `data` (all)  | 1:1.0 (an epoch)           | 1:2.0 only                              |
//! | `viewer`      | 1.0, `libfoo`              | 2.0 only, `libfoo (>= 2.0)` (shares app's) |
//! | `editor`      | 1.0, `libalt`              | 2.0 only, `libnone \| libalt (>= 2.0)`  |
//! | `libalt`      | 1.0                        | 1.0 and 2.0                             |
//! | `libfoo`      | 1.0                        | 1.0 and 2.0                             |
//! | `util`        | 1.0                        | 1.0 and 1.1                             |
//! | `tool`        | 1.0, `gone`                | 1.1 only, no dependency                 |
//! | `gone`        | 1.0                        | — (vanished entirely)                   |
//! | `libbar`      | 1.0, `libbar-data (= 1.0)` | 1.0 and 1.1 (`libbar-data (= 1.1)`)     |
//! | `libbar-data` | 1.0                        | 1.1 only                                |
//! | `extra`       | 1.0, `libextra, util`      | unchanged (optional: locked, not installed) |
//! | `libextra`    | 1.0                        | unchanged                               |
//!
//! The kernel case is `kmeta`/`kabi-*` (Debian's `linux-image-amd64` and its ABI package): a
//! build that swaps the one gone package alone (the old `--lock prefer`) hands mmdebstrap an
//! unsatisfiable set and fails here.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const INCLUDE: &str = "--include=kmeta,app,tool,libbar,viewer,editor";
/// Locked like the rest, installed only by some builds (as openssh-server is with `--ssh-key`).
const OPTIONAL: &str = "extra";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn sh(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn sha256(path: &Path) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(
        std::fs::read(path).expect("read .deb"),
    ))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `data` is `Architecture: all`, the rest amd64.
fn arch(name: &str) -> &'static str {
    if name == "data" {
        "all"
    } else {
        "amd64"
    }
}

/// How a build names its mirror: a deb822 `.sources` file over HTTP, or a one-line `file:` URI
/// (which apt would not copy into the root's cache: lock.sh makes it `copy:`).
#[derive(Clone, Copy)]
enum Sources {
    Deb822,
    File,
}

/// A Debian mirror on loopback whose content the test replaces: `dir/<state>/` holds a flat
/// repository (`deb [trusted=yes] http://127.0.0.1:PORT/current ./`), `current` links to one.
struct Mirror {
    dir: tempfile::TempDir,
    server: Child,
    port: u16,
}

impl Mirror {
    fn new() -> Mirror {
        let dir = tempfile::tempdir().expect("tmp");
        let mut server = Command::new("python3")
            .args([
                "-u",
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                "0",
                "--directory",
            ])
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m http.server");
        let mut line = String::new();
        BufReader::new(server.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("http.server's first line");
        // "Serving HTTP on 127.0.0.1 port 40123 (http://127.0.0.1:40123/) ..."
        let port = line
            .split_whitespace()
            .skip_while(|w| *w != "port")
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        Mirror { dir, server, port }
    }

    fn state(&self, name: &str) -> PathBuf {
        let d = self.dir.path().join(name);
        std::fs::create_dir_all(&d).expect("mkdir");
        d
    }

    /// The file of `name` `version` in state `state`, as Debian names it.
    fn file(&self, state: &str, name: &str, version: &str) -> PathBuf {
        self.state(state).join(format!(
            "{name}_{}_{}.deb",
            version.replace(':', "%3a"),
            arch(name)
        ))
    }

    /// Builds `name` `version` in state `state`; `salt` changes its content only.
    fn deb(&self, state: &str, name: &str, version: &str, depends: &str, salt: &str) -> PathBuf {
        let src = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(src.path().join("DEBIAN")).expect("mkdir");
        std::fs::create_dir_all(src.path().join("usr/share/lock-test")).expect("mkdir");
        std::fs::write(
            src.path().join("usr/share/lock-test").join(name),
            format!("{name} {version}{salt}\n"),
        )
        .expect("payload");
        let mut control = format!(
            "Package: {name}\nVersion: {version}\nArchitecture: {}\nPriority: optional\nMaintainer: airlock tests <tests@airlock.invalid>\nDescription: lock test package\n",
            arch(name)
        );
        if !depends.is_empty() {
            control += &format!("Depends: {depends}\n");
        }
        std::fs::write(src.path().join("DEBIAN/control"), control).expect("control");
        let out = self.file(state, name, version);
        sh(Command::new("dpkg-deb")
            .args(["-Zgzip", "--root-owner-group", "--build"])
            .arg(src.path())
            .arg(&out)
            .stdout(Stdio::null()));
        out
    }

    /// Indexes state `state` and serves it. Like Debian's archive, whose override file can give
    /// a package another priority than its .deb says, the index makes `util` `important`.
    fn publish(&self, state: &str) {
        let d = self.state(state);
        let overrides = self.dir.path().join("override");
        std::fs::write(&overrides, "util important misc\n").expect("override");
        let packages = sh(Command::new("apt-ftparchive")
            .args(["packages", "."])
            .arg(&overrides)
            .current_dir(&d));
        std::fs::write(d.join("Packages"), packages.stdout).expect("Packages");
        let release = sh(Command::new("apt-ftparchive")
            .args([
                "-o",
                "APT::FTPArchive::Release::Suite=bookworm",
                "-o",
                "APT::FTPArchive::Release::Codename=bookworm",
                "release",
                ".",
            ])
            .current_dir(&d));
        std::fs::write(d.join("Release"), release.stdout).expect("Release");
        let link = self.dir.path().join("current");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(state, &link).expect("symlink");
    }

    /// The apt sources file a build is given as its mirror, in the form `kind` asks for.
    fn sources(&self, kind: Sources) -> PathBuf {
        let (file, text) = match kind {
            Sources::Deb822 => (
                "mirror.sources",
                format!(
                    "Types: deb\nURIs: http://127.0.0.1:{}/current\nSuites: ./\nTrusted: yes\n",
                    self.port
                ),
            ),
            Sources::File => (
                "mirror.list",
                format!(
                    "deb [trusted=yes] file://{}/current ./\n",
                    self.dir.path().display()
                ),
            ),
        };
        let f = self.dir.path().join(file);
        std::fs::write(&f, text).expect("sources");
        f
    }

    /// Builds `packages` (name, version, Depends) into state `state` and serves it.
    fn make(&self, state: &str, packages: &[(&str, &str, &str)]) {
        for (name, version, depends) in packages {
            self.deb(state, name, version, depends, "");
        }
        self.publish(state);
    }

    /// v1: the mirror when the lock was written.
    fn v1(&self) {
        self.make(
            "v1",
            &[
                ("kmeta", "1.0", "kabi-1 (= 1.0)"),
                ("kabi-1", "1.0", ""),
                ("app", "1.0", "libfoo (>= 1.0), util, data"),
                ("data", "1:1.0", ""),
                ("viewer", "1.0", "libfoo"),
                ("editor", "1.0", "libalt"),
                ("libalt", "1.0", ""),
                ("libfoo", "1.0", ""),
                ("util", "1.0", ""),
                ("tool", "1.0", "gone"),
                ("gone", "1.0", ""),
                ("libbar", "1.0", "libbar-data (= 1.0)"),
                ("libbar-data", "1.0", ""),
                ("extra", "1.0", "libextra, util"),
                ("libextra", "1.0", ""),
            ],
        );
    }
    /// v2: the mirror moved on (see the table at the top).
    fn v2(&self) {
        for kept in [
            "kabi-1", "libfoo", "util", "libbar", "libalt", "extra", "libextra",
        ] {
            std::fs::copy(self.file("v1", kept, "1.0"), self.file("v2", kept, "1.0"))
                .expect("copy");
        }
        self.make(
            "v2",
            &[
                ("kmeta", "2.0", "kabi-2 (= 2.0)"),
                ("kabi-2", "2.0", ""),
                ("app", "2.0", "libfoo (>= 2.0), util, data (>= 1:2.0)"),
                ("data", "1:2.0", ""),
                ("viewer", "2.0", "libfoo (>= 2.0)"),
                ("editor", "2.0", "libnone | libalt (>= 2.0)"),
                ("libalt", "2.0", ""),
                ("libfoo", "2.0", ""),
                ("util", "1.1", ""),
                ("tool", "1.1", ""),
                ("libbar", "1.1", "libbar-data (= 1.1)"),
                ("libbar-data", "1.1", ""),
            ],
        );
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// One build's worth of `image/lock.sh`: prepare (the lock, the cache, the mirror), then, if that
/// succeeded, bootstrap a root with mmdebstrap.
struct Build {
    ok: bool,
    /// The step that failed: "prepare" (nothing was built), "bootstrap" or "finish".
    failed_at: Option<&'static str>,
    /// What lock.sh said (stderr).
    said: String,
    root: PathBuf,
    work: PathBuf,
}

impl Build {
    /// The packages in the built root, by name: the version each one's payload file names.
    fn installed(&self) -> BTreeMap<String, String> {
        let d = self.root.join("usr/share/lock-test");
        std::fs::read_dir(&d)
            .map(|entries| {
                entries
                    .map(|e| {
                        let e = e.expect("entry");
                        let text = std::fs::read_to_string(e.path()).expect("payload");
                        let mut w = text.split_whitespace();
                        let name = w.next().expect("name").to_string();
                        (name, w.next().expect("version").to_string())
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The deviations lock.sh recorded (the manifest's `lock_deviations`), by package.
    fn deviations(&self) -> BTreeMap<String, serde_json::Value> {
        let text = std::fs::read_to_string(self.work.join("lock/deviations.json"))
            .expect("deviations.json");
        let v: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("deviations.json is not JSON ({e}): {text}"));
        v.as_array()
            .expect("an array")
            .iter()
            .map(|d| {
                (
                    d["package"].as_str().expect("package").to_string(),
                    d.clone(),
                )
            })
            .collect()
    }
}

fn build(
    mode: &str,
    lock: &Path,
    cache: &Path,
    mirror: &Mirror,
    sources: Sources,
    scratch: &Path,
) -> Build {
    let n = std::fs::read_dir(scratch).map(|d| d.count()).unwrap_or(0);
    let work = scratch.join(format!("work{n}"));
    let root = scratch.join(format!("root{n}"));
    let lock_sh = repo().join("image/lock.sh");
    let mut prepare = Command::new(&lock_sh);
    prepare
        .args(["prepare", "--mode", mode, "--lock"])
        .arg(lock)
        .arg("--cache")
        .arg(cache)
        .arg("--mirror")
        .arg(mirror.sources(sources))
        .arg("--work")
        .arg(&work);
    let mut bootstrap = Command::new(&lock_sh);
    bootstrap
        .args(["bootstrap", "--optional", OPTIONAL, "--work"])
        .arg(&work)
        .args(["--suite", "bookworm", "--target"])
        .arg(&root)
        .args(["--", "--quiet", "--variant=extract", INCLUDE]);
    // What image/build.sh does once the whole image is built: refresh's new lock goes in place.
    let mut finish = Command::new(&lock_sh);
    finish.args(["finish", "--work"]).arg(&work);
    let mut said = String::new();
    let mut failed_at = None;
    for (step, mut cmd) in [
        ("prepare", prepare),
        ("bootstrap", bootstrap),
        ("finish", finish),
    ] {
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("image/lock.sh {step}: {e}"));
        said += &String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            failed_at = Some(step);
            break;
        }
    }
    Build {
        ok: failed_at.is_none(),
        failed_at,
        said,
        root,
        work,
    }
}

/// The lock's lines by package: (version, SHA-256); each must name the archive's priority.
fn lock_lines(lock: &Path) -> BTreeMap<String, (String, String)> {
    std::fs::read_to_string(lock)
        .expect("the lock")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(
                f.len(),
                5,
                "a lock line is name version arch sha256 priority: {l}"
            );
            let priority = if f[0] == "util" {
                "important"
            } else {
                "optional"
            };
            assert_eq!(f[4], priority, "the archive's priority of {}", f[0]);
            (f[0].to_string(), (f[1].to_string(), f[3].to_string()))
        })
        .collect()
}

fn versions(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

#[test]
fn a_moved_mirror_prefer_builds_a_whole_closure_strict_names_every_gone_package_refresh_moves_the_lock(
) {
    let mirror = Mirror::new();
    mirror.v1();
    let scratch = tempfile::tempdir().expect("tmp");
    let lock = scratch.path().join("packages.lock");
    let builds = scratch.path().join("builds");
    std::fs::create_dir_all(&builds).expect("mkdir");
    let cold = |name: &str| scratch.path().join(format!("cache-{name}"));
    let run =
        |mode: &str, cache: &Path| build(mode, &lock, cache, &mirror, Sources::Deb822, &builds);

    // The lock, written by refresh from v1.
    let b = run("refresh", &cold("refresh1"));
    assert!(b.ok, "refresh on v1 failed:\n{}", b.said);
    let all_v1 = versions(&[
        ("kmeta", "1.0"),
        ("kabi-1", "1.0"),
        ("app", "1.0"),
        ("data", "1:1.0"),
        ("viewer", "1.0"),
        ("editor", "1.0"),
        ("libalt", "1.0"),
        ("libfoo", "1.0"),
        ("util", "1.0"),
        ("tool", "1.0"),
        ("gone", "1.0"),
        ("libbar", "1.0"),
        ("libbar-data", "1.0"),
    ]);
    let with_optional = |set: &BTreeMap<String, String>| {
        let mut set = set.clone();
        set.insert("extra".into(), "1.0".into());
        set.insert("libextra".into(), "1.0".into());
        set
    };
    let locked = lock_lines(&lock);
    assert_eq!(
        locked
            .iter()
            .map(|(n, (v, _))| (n.clone(), v.clone()))
            .collect::<BTreeMap<_, _>>(),
        with_optional(&all_v1),
        "the lock holds the installed set and the optional packages' closure"
    );
    for (name, (version, digest)) in &locked {
        let deb = mirror.file("v1", name, version);
        assert_eq!(digest, &sha256(&deb), "the lock's digest of {name}");
    }
    assert_eq!(b.installed(), all_v1);

    // strict on v1 from a cold cache: exactly the lock.
    let warm = cold("warm");
    let b = run("strict", &warm);
    assert!(b.ok, "strict on v1 failed:\n{}", b.said);
    // The local repository gives apt the archive's priorities (mmdebstrap's minbase selects by
    // them), not the .debs' own.
    let index = std::fs::read_to_string(b.work.join("lock/repo/Packages")).expect("the index");
    let util = index
        .split("\n\n")
        .find(|r| r.starts_with("Package: util\n"))
        .unwrap_or_else(|| panic!("no util in the local repository: {index}"));
    assert!(
        util.contains("\nPriority: important\n"),
        "the local repository lost the archive's priority: {util}"
    );
    assert_eq!(b.installed(), all_v1);
    assert!(b.deviations().is_empty(), "{:?}", b.deviations());

    // The mirror moves.
    mirror.v2();

    // strict, cold cache: fails in prepare (nothing built), naming every gone package and the
    // command that moves the lock.
    let b = run("strict", &cold("strict2"));
    assert_eq!(
        b.failed_at,
        Some("prepare"),
        "strict did not stop before building although locked packages are gone:\n{}",
        b.said
    );
    let gone = [
        "kmeta 1.0 (amd64)",
        "app 1.0 (amd64)",
        "data 1:1.0 (all)",
        "viewer 1.0 (amd64)",
        "editor 1.0 (amd64)",
        "tool 1.0 (amd64)",
        "gone 1.0 (amd64)",
        "libbar-data 1.0 (amd64)",
    ];
    let named: Vec<&str> = b
        .said
        .lines()
        .filter(|l| l.starts_with("  "))
        .map(str::trim)
        .collect();
    let mut expect = gone.to_vec();
    expect.sort();
    let mut got = named
        .iter()
        .copied()
        .filter(|l| l.ends_with(')'))
        .collect::<Vec<_>>();
    got.sort();
    assert_eq!(got, expect, "strict named:\n{}", b.said);
    assert!(
        b.said.contains("image/build.sh --lock refresh"),
        "strict does not say how to move the lock:\n{}",
        b.said
    );

    // strict with the cache of an earlier build: the mirror's move does not matter.
    let b = run("strict", &warm);
    assert!(b.ok, "strict with a warm cache failed:\n{}", b.said);
    assert_eq!(b.installed(), all_v1);

    // prefer, cold cache: the replacements with their whole closure, locked versions elsewhere.
    let b = run("prefer", &cold("prefer"));
    assert!(b.ok, "prefer on the moved mirror failed:\n{}", b.said);
    assert_eq!(
        b.installed(),
        versions(&[
            ("kmeta", "2.0"),
            ("kabi-2", "2.0"), // the replacement's new dependency came with it
            ("app", "2.0"),
            ("data", "1:2.0"),
            ("viewer", "2.0"),
            ("editor", "2.0"),
            ("libalt", "2.0"), // editor 2.0's second alternative needs it: released
            ("libfoo", "2.0"), // app 2.0 and viewer 2.0 need libfoo >= 2.0: released
            ("util", "1.0"), // still on the mirror at its locked version: kept, though 1.1 is there
            ("tool", "1.1"), // no longer needs `gone`, which is not installed
            ("libbar", "1.1"), // its locked version needs libbar-data 1.0, which is gone
            ("libbar-data", "1.1"),
        ]),
        "prefer built an inconsistent or needlessly moved set:\n{}",
        b.said
    );
    assert_eq!(
        b.said.matches("releasing libfoo from the lock").count(),
        1,
        "libfoo, needed newer by two replacements, is released once:\n{}",
        b.said
    );
    let dev = b.deviations();
    let expect: &[(&str, &str, &str, &str)] = &[
        ("kmeta", "1.0", "2.0", "gone from the mirror"),
        ("kabi-2", "-", "2.0", "not in the lock"),
        ("kabi-1", "1.0", "-", "not in the image"),
        ("app", "1.0", "2.0", "gone from the mirror"),
        ("data", "1:1.0", "1:2.0", "gone from the mirror"),
        ("viewer", "1.0", "2.0", "gone from the mirror"),
        ("editor", "1.0", "2.0", "gone from the mirror"),
        ("libalt", "1.0", "2.0", "released from the lock"),
        ("libfoo", "1.0", "2.0", "released from the lock"),
        ("tool", "1.0", "1.1", "gone from the mirror"),
        ("gone", "1.0", "-", "gone from the mirror"),
        ("libbar", "1.0", "1.1", "released from the lock"),
        ("libbar-data", "1.0", "1.1", "gone from the mirror"),
    ];
    let mut names: Vec<String> = expect.iter().map(|e| e.0.to_string()).collect();
    names.sort();
    assert_eq!(
        dev.keys().cloned().collect::<Vec<_>>(),
        names,
        "deviations: {dev:?}"
    );
    for (name, locked_v, built_v, why) in expect {
        let d = &dev[*name];
        assert_eq!(d["locked_version"], *locked_v, "{name}: {d}");
        assert_eq!(d["built_version"], *built_v, "{name}: {d}");
        assert!(
            d["reason"].as_str().is_some_and(|r| r.contains(why)),
            "{name}: {d}"
        );
        let digest = d["sha256"].as_str().expect("sha256");
        if *built_v == "-" {
            assert_eq!(digest, "-", "{name}: {d}");
        } else {
            let deb = mirror.file("v2", name, built_v);
            assert_eq!(digest, sha256(&deb), "{name}: the digest of the built .deb");
        }
        // Printed as well as recorded.
        assert!(
            b.said
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name)),
            "{name} is not in the printed deviations:\n{}",
            b.said
        );
    }

    // refresh: one coherent set from the moved mirror, and strict builds it without deviations.
    let b = run("refresh", &cold("refresh2"));
    assert!(b.ok, "refresh on v2 failed:\n{}", b.said);
    let all_v2 = versions(&[
        ("kmeta", "2.0"),
        ("kabi-2", "2.0"),
        ("app", "2.0"),
        ("data", "1:2.0"),
        ("viewer", "2.0"),
        ("editor", "2.0"),
        ("libalt", "2.0"),
        ("libfoo", "2.0"),
        ("util", "1.1"),
        ("tool", "1.1"),
        ("libbar", "1.1"),
        ("libbar-data", "1.1"),
    ]);
    let locked = lock_lines(&lock);
    assert_eq!(
        locked
            .iter()
            .map(|(n, (v, _))| (n.clone(), v.clone()))
            .collect::<BTreeMap<_, _>>(),
        with_optional(&all_v2),
        "the refreshed lock"
    );
    let b = run("strict", &cold("strict3"));
    assert!(b.ok, "strict on the refreshed lock failed:\n{}", b.said);
    assert_eq!(b.installed(), all_v2);
    assert!(b.deviations().is_empty(), "{:?}", b.deviations());
}

#[test]
fn a_corrupt_cached_deb_is_set_aside_and_fetched_again_and_other_content_at_a_locked_version_is_refused(
) {
    let mirror = Mirror::new();
    mirror.v1();
    let scratch = tempfile::tempdir().expect("tmp");
    let lock = scratch.path().join("packages.lock");
    let builds = scratch.path().join("builds");
    std::fs::create_dir_all(&builds).expect("mkdir");
    let cache = scratch.path().join("cache");
    // This time the mirror is a file: URI (lock.sh hands it to apt as copy:).
    let run = |mode: &str| build(mode, &lock, &cache, &mirror, Sources::File, &builds);
    let b = run("refresh");
    assert!(b.ok, "refresh failed:\n{}", b.said);
    assert_eq!(lock_lines(&lock).len(), 15, "the lock from a file: mirror");
    let (_, util_digest) = lock_lines(&lock)["util"].clone();
    let cached = cache.join(format!("debs/{util_digest}.deb"));
    assert!(cached.exists(), "refresh did not fill the digest cache");

    // A cached file whose content is not what the lock says: never used, set aside, fetched again.
    for mode in ["strict", "prefer"] {
        std::fs::write(&cached, b"not the locked util").expect("corrupt the cache");
        let b = run(mode);
        assert!(
            b.ok,
            "{mode} with a corrupt cache entry failed:\n{}",
            b.said
        );
        assert!(
            b.said.contains("the cached util 1.0 is corrupt"),
            "{mode} did not name the corrupt cache entry:\n{}",
            b.said
        );
        assert_eq!(
            sha256(&cached),
            util_digest,
            "{mode}: the cache was not healed"
        );
        assert_eq!(
            std::fs::read(cached.with_extension("deb.corrupt")).expect(".corrupt kept"),
            b"not the locked util"
        );
        assert_eq!(b.installed()["util"], "1.0");
        assert!(b.deviations().is_empty(), "{mode}: {:?}", b.deviations());
    }

    // The mirror serves other bytes under the locked version: strict and prefer refuse it before
    // building (that is tampering or corruption, not the mirror moving on); refresh takes it,
    // says so, and the lock changes only when the build finishes.
    std::fs::remove_file(&cached).expect("rm");
    let other = mirror.deb("v1", "util", "1.0", "", " rebuilt");
    mirror.publish("v1");
    let other_digest = sha256(&other);
    for mode in ["strict", "prefer"] {
        let b = run(mode);
        assert_eq!(
            b.failed_at,
            Some("prepare"),
            "{mode} accepted other content at a locked version:\n{}",
            b.said
        );
        assert!(
            b.said.contains(&format!(
                "util 1.0: the mirror's .deb has SHA-256 {other_digest}, the lock says {util_digest}"
            )),
            "{mode} did not name both digests:\n{}",
            b.said
        );
    }
    let b = run("refresh");
    assert!(b.ok, "refresh failed:\n{}", b.said);
    assert_eq!(lock_lines(&lock)["util"], ("1.0".to_string(), other_digest));
    assert!(
        b.said.contains("same version, other SHA-256") && b.said.contains("util"),
        "refresh did not point out the changed digest:\n{}",
        b.said
    );
}
