//! Fuzzes the admin API's request bodies (`airlockd::http::bodies`: approvals, rejections,
//! promotions, rollbacks, path imports, token requests), the trust root a `POST /trust` carries,
//! and token scopes. No input may panic; a refusal always says why.
#![no_main]

use airlockd::http::bodies;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let why = |r: Result<(), String>| {
        if let Err(e) = r {
            assert!(!e.is_empty());
        }
    };
    why(bodies::approve(data).map(|_| ()));
    why(bodies::reject(data).map(|_| ()));
    why(bodies::promote(data).map(|_| ()));
    why(bodies::rollback(data).map(|_| ()));
    why(bodies::import_path(data).map(|_| ()));
    why(bodies::token(data).map(|_| ()));
    let _ = airlock_signing::TrustRoot::from_json(data);
    if let Ok(s) = std::str::from_utf8(data) {
        why(airlock_updater::tokens::Scope::parse(s).map(|_| ()));
        why(bodies::version(s).map(|_| ()));
    }
});
