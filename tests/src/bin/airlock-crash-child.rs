//! Test helper for `tests/crash.rs`: drives an appliance data directory through the lifecycle in
//! an endless loop (import, validate, promote, roll back, promote again) and prints one line per
//! committed step, so the test can `kill -9` it at an arbitrary moment and check what survives.
//! Usage: `airlock-crash-child DATA_DIR ROOT_JSON START_MINOR`.

use std::io::Write;

use airlock_config::{ApprovalMode, ByteSize, Config};
use airlock_tests::fixtures::Fixture;
use airlock_updater::validate::ContractValidator;
use airlock_updater::{Actor, Updater};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let mut c = Config::default();
    c.paths.data_dir = args[1].clone().into();
    c.bundles.reserve_free_space = ByteSize(0);
    c.approval.mode = ApprovalMode::UnattendedDev;
    let u = Updater::open(&c)?;
    u.install_initial_trust_root(std::path::Path::new(&args[2]))?;
    let mut minor: u64 = args[3].parse()?;
    let ops = Actor::new("ops")?;
    let out = std::io::stdout();
    let say = |s: String| {
        let mut o = out.lock();
        let _ = writeln!(o, "{s}");
        let _ = o.flush();
    };
    loop {
        let version = semver::Version::new(1, minor, 0);
        let bundle = Fixture::demo("crash", &version.to_string()).good_bundle();
        u.import(&bundle[..], "crash-test", &ops)?;
        say(format!("imported {version}"));
        u.validate("crash", &version, &ContractValidator, &Actor::system())?;
        say(format!("approved {version}"));
        let r = u.registry();
        r.begin_promotion(u.now()?, "crash", &version, &ops)?;
        say(format!("promoting {version}"));
        r.complete_promotion(u.now()?, "crash", &ops)?;
        say(format!("active {version}"));
        if minor % 3 == 2 {
            let back = r.rollback(u.now()?, "crash", None, &ops, None)?;
            say(format!("rolled back to {back}"));
            let again = r.rollback(u.now()?, "crash", Some(&version), &ops, None)?;
            say(format!("rolled forward to {again}"));
        }
        minor += 1;
    }
}
