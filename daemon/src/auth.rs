//! Who may do what — the only code that decides it, for every front end (HTTP, gRPC, D-Bus,
//! the admin socket): identities from peer credentials (uid, gid and the group database mapped
//! through `[admin.roles]`) or from bearer tokens (`admin:ROLE` scopes), roles, the check that
//! names the missing role, and the token records tokens are verified against.
//!
//! Invariant: a token's secret is compared in constant time against its hash and never logged
//! or echoed; a refusal never says why a token failed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use airlock_config::Role;
use airlock_updater::tokens::{Scope, TokenRecord};
use airlock_updater::{Actor, Updater};
use arc_swap::ArcSwap;

/// The hashed token records every front end checks bearer tokens against, read from the
/// registry at start and refreshed from it after every token change and on SIGHUP (one path:
/// [`Tokens::refresh`]).
pub struct Tokens {
    records: ArcSwap<BTreeMap<String, Arc<TokenRecord>>>,
    updater: Arc<Updater>,
}

impl Tokens {
    /// Loads the records from the registry.
    pub fn load(updater: Arc<Updater>) -> Result<Arc<Tokens>, airlock_updater::Error> {
        let t = Tokens {
            records: ArcSwap::from_pointee(BTreeMap::new()),
            updater,
        };
        t.refresh()?;
        Ok(Arc::new(t))
    }

    /// Reads the records again from the registry (after a change, on SIGHUP).
    pub fn refresh(&self) -> Result<(), airlock_updater::Error> {
        let all = self.updater.registry().tokens()?;
        self.records.store(Arc::new(
            all.into_iter().map(|(k, v)| (k, Arc::new(v))).collect(),
        ));
        Ok(())
    }

    /// The record of a presented bearer token (`Authorization: Bearer …` or gRPC's
    /// `authorization` metadata, the scheme included), if it is valid now. Unknown, malformed,
    /// revoked and expired tokens look the same to the caller.
    pub fn authenticate(&self, authorization: Option<&str>) -> Option<Arc<TokenRecord>> {
        let presented = authorization?.strip_prefix("Bearer ")?.trim();
        let (id, secret) = airlock_updater::tokens::split_token(presented)?;
        let rec = self.records.load().get(id)?.clone();
        airlock_updater::tokens::verify_secret(&rec, secret, unix_now()).then_some(rec)
    }
}

/// The caller of a serving route or RPC: the token it presented (`None` in `--dev`, where
/// nothing is authenticated). Listings filter by it: a token sees the models it may call.
#[derive(Clone)]
pub struct Caller(pub Option<Arc<TokenRecord>>);

impl Caller {
    /// Whether this caller may see (and call) `model`.
    pub fn may_use(&self, model: &str) -> bool {
        self.0
            .as_ref()
            .is_none_or(|r| r.grants(&Scope::Model(model.to_string())))
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Who is calling, and what they may do.
#[derive(Debug, Clone)]
pub struct Identity {
    /// As recorded in the audit log (`uid:1000(alice)`, `token:ID(NAME)`).
    pub actor: Actor,
    /// Roles held.
    pub roles: BTreeSet<Role>,
}

impl Identity {
    fn may(&self, needed: Role) -> bool {
        self.roles.contains(&Role::Admin)
            || self.roles.contains(&needed)
            || (needed == Role::Viewer && !self.roles.is_empty())
    }
}

/// Roles a token's scopes grant on the TLS listener.
pub fn token_identity(rec: &TokenRecord) -> Option<Identity> {
    let roles: BTreeSet<Role> = rec
        .scopes
        .iter()
        .filter_map(|s| match s {
            Scope::Admin(r) => Some(*r),
            _ => None,
        })
        .collect();
    let actor = Actor::new(&format!("token:{}({})", rec.id, rec.name)).ok()?;
    (!roles.is_empty()).then_some(Identity { actor, roles })
}

/// The local user and group databases (`/etc/passwd`, `/etc/group`), as the appliance has them.
fn user_name(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
}

fn group_name(gid: u32) -> Option<String> {
    nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
        .ok()
        .flatten()
        .map(|g| g.name)
}

/// The identity of a socket peer: roles from `[admin.roles]` by uid, gid, group id and name.
pub fn peer_identity(table: &BTreeMap<String, Role>, uid: u32, gid: u32) -> Identity {
    identity_of(table, uid, &[gid])
}

/// The identity of a local user: roles by uid, by any of `gids` (the first is the primary one,
/// as the kernel reported it with the connection), and by the user's groups in the group
/// database. A process's supplementary groups are not read from `/proc/PID` after the fact: by
/// then the PID may belong to another process (and the unit's ProtectProc=invisible hides it).
/// Over D-Bus, `gids` are the bus's record of the caller's groups, taken at its connection.
pub fn identity_of(table: &BTreeMap<String, Role>, uid: u32, known_gids: &[u32]) -> Identity {
    let gid = known_gids.first().copied().unwrap_or(u32::MAX);
    let mut gids = known_gids.to_vec();
    if let Some(name) = user_name(uid).and_then(|n| std::ffi::CString::new(n).ok()) {
        if let Ok(list) = nix::unistd::getgrouplist(&name, nix::unistd::Gid::from_raw(gid)) {
            gids.extend(list.into_iter().map(|g| g.as_raw()));
        }
    }
    gids.sort_unstable();
    gids.dedup();
    let mut keys = vec![format!("uid:{uid}")];
    for g in &gids {
        keys.push(format!("gid:{g}"));
        keys.extend(group_name(*g).map(|n| format!("group:{n}")));
    }
    let roles = keys.iter().filter_map(|k| table.get(k).copied()).collect();
    let name = match user_name(uid) {
        Some(n) => format!("uid:{uid}({n})"),
        None => format!("uid:{uid}"),
    };
    Identity {
        actor: Actor::new(&name).unwrap_or_else(|_| Actor::system()),
        roles,
    }
}

/// `Err(why)` when `who` lacks the role `needed` for `what` (the message names the role).
pub fn permitted(who: &Identity, needed: Role, what: &str) -> Result<(), String> {
    if who.may(needed) {
        return Ok(());
    }
    let held = if who.roles.is_empty() {
        "no role".to_string()
    } else {
        who.roles
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(format!(
        "{} ({held}) may not {what}: that needs the {} role",
        who.actor,
        needed.as_str()
    ))
}
