//! Fuzzes the streaming bundle reader. The first byte picks the mode: odd — the rest is a tar
//! stream that is zstd-compressed here (so mutations reach the tar and manifest logic), even — the
//! rest is fed as-is (zstd framing). Both policies run: the release-side one (no trust decision,
//! so payload checks are reached) and a real trust root. The reader must never panic, never
//! allocate beyond its limits, and never accept a bundle that `verify_bundle` would not.
#![no_main]

use airlock_signing::manifest::Limits;
use airlock_signing::reader::{verify_bundle, SignaturePolicy};
use airlock_signing::trust::{Role, RootBuilder};
use airlock_signing::{ExpiryCheck, PrivateKey, TrustRoot};
use libfuzzer_sys::fuzz_target;

fn root() -> &'static TrustRoot {
    static ROOT: std::sync::OnceLock<TrustRoot> = std::sync::OnceLock::new();
    ROOT.get_or_init(make_root)
}

fn make_root() -> TrustRoot {
    let root_key = PrivateKey::from_seed([1; 32]);
    let mut b = RootBuilder::new(time::OffsetDateTime::UNIX_EPOCH + time::Duration::days(40000));
    b.add_key(Role::Root, root_key.public()).add_key(Role::Bundle, PrivateKey::from_seed([0x41; 32]).public());
    let f = b.signed(std::slice::from_ref(&root_key)).expect("root");
    TrustRoot::from_json(&serde_json::to_vec(&f).expect("json")).expect("valid")
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let stream = if mode % 2 == 1 { zstd::encode_all(rest, 1).expect("compress") } else { rest.to_vec() };
    let limits = Limits {
        max_manifest_size: 64 << 10,
        max_signatures_size: 16 << 10,
        max_entries: 64,
        max_file_size: 1 << 20,
        max_total_size: 4 << 20,
        max_zstd_window_log: 20,
    };
    let _ = verify_bundle(&stream[..], &SignaturePolicy::UnverifiedReleaseSide, &limits);
    let policy = SignaturePolicy::TrustRoot { root: root(), expiry: ExpiryCheck::strict_now() };
    let _ = verify_bundle(&stream[..], &policy, &limits);
});
