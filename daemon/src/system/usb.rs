//! Bundles on USB sticks, found through UDisks2 on the system bus: when a removable filesystem
//! appears (`InterfacesAdded` on UDisks2's object manager, and a rescan every few seconds for
//! mount changes), airlockd asks UDisks2 to mount it read-only if it is not mounted
//! (`ro,nosuid,nodev,noexec`; never writable, and only with `[media] mount`), lists the
//! `*.airlock` files on it with `airlock_updater::media::list_bundles` (read-only, no symlinks,
//! depth and entry limits), and publishes them as "available on media": the admin API
//! (`GET /api/v1/media`), the D-Bus signal `BundlesAvailable`, the log. It imports them only when
//! an operator asks, or automatically to `staged` with `[media] auto_stage` (validation follows;
//! approval stays with people). A medium that vanishes mid-import fails that import cleanly (the
//! updater leaves nothing staged).
//!
//! Invariant: nothing here writes to a medium or trusts anything on it; a bundle from a medium
//! goes through exactly the same verification as any other.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use airlock_config::Media;
use airlock_updater::media::{list_bundles, MediaLimits};
use airlock_updater::Actor;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;
use zbus::fdo::{ManagedObjects, ObjectManagerProxy};
use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};

use crate::events::{Event, Medium};
use crate::lifecycle::Lifecycle;

const UDISKS: &str = "org.freedesktop.UDisks2";
const FS: &str = "org.freedesktop.UDisks2.Filesystem";
const BLOCK: &str = "org.freedesktop.UDisks2.Block";
const DRIVE: &str = "org.freedesktop.UDisks2.Drive";
/// The only mount options airlockd ever asks for.
pub const MOUNT_OPTIONS: &str = "ro,nosuid,nodev,noexec";

fn prop<'a>(
    objects: &'a ManagedObjects,
    path: &OwnedObjectPath,
    iface: &str,
    name: &str,
) -> Option<&'a OwnedValue> {
    objects
        .get(path)?
        .iter()
        .find(|(i, _)| i.as_str() == iface)?
        .1
        .get(name)
}

fn as_bool(v: Option<&OwnedValue>) -> bool {
    matches!(v.map(|v| &**v), Some(Value::Bool(true)))
}

fn as_string(v: Option<&OwnedValue>) -> String {
    match v.map(|v| &**v) {
        Some(Value::Str(s)) => s.to_string(),
        _ => String::new(),
    }
}

/// A NUL-terminated byte string (`ay`), as UDisks2 gives device and mount paths.
fn bytes_string(v: &Value<'_>) -> Option<String> {
    let Value::Array(a) = v else { return None };
    let bytes: Vec<u8> = a
        .iter()
        .filter_map(|b| match b {
            Value::U8(b) => Some(*b),
            _ => None,
        })
        .take_while(|b| *b != 0)
        .collect();
    String::from_utf8(bytes).ok()
}

fn mount_points(v: Option<&OwnedValue>) -> Vec<PathBuf> {
    match v.map(|v| &**v) {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(bytes_string)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .collect(),
        _ => vec![],
    }
}

/// Removable filesystems: (object path, device, label, mount points).
fn removable(objects: &ManagedObjects) -> Vec<(OwnedObjectPath, String, String, Vec<PathBuf>)> {
    let mut out = Vec::new();
    for (path, ifaces) in objects {
        if !ifaces.keys().any(|i| i.as_str() == FS) {
            continue;
        }
        let drive = match prop(objects, path, BLOCK, "Drive").map(|v| &**v) {
            Some(Value::ObjectPath(p)) => OwnedObjectPath::from(p.clone()),
            _ => continue,
        };
        let is_removable = as_bool(prop(objects, &drive, DRIVE, "Removable"))
            || as_bool(prop(objects, &drive, DRIVE, "MediaRemovable"))
            || as_string(prop(objects, &drive, DRIVE, "ConnectionBus")) == "usb";
        if !is_removable || as_bool(prop(objects, path, BLOCK, "HintSystem")) {
            continue;
        }
        let device = prop(objects, path, BLOCK, "Device")
            .and_then(|v| bytes_string(v))
            .unwrap_or_default();
        let label = as_string(prop(objects, path, BLOCK, "IdLabel"));
        out.push((
            path.clone(),
            device,
            label,
            mount_points(prop(objects, path, FS, "MountPoints")),
        ));
    }
    out
}

#[zbus::proxy(
    interface = "org.freedesktop.UDisks2.Filesystem",
    default_service = "org.freedesktop.UDisks2"
)]
trait Filesystem {
    fn mount(&self, options: HashMap<&str, Value<'_>>) -> zbus::Result<String>;
}

/// Watches UDisks2 until `shutdown`. Without a system bus or UDisks2: a debug line, nothing else
/// (the D-Bus module already warned about a missing bus).
pub async fn watch(lc: Arc<Lifecycle>, conf: Media, shutdown: CancellationToken) {
    if !conf.watch {
        return;
    }
    let Ok(conn) = zbus::Connection::system().await else {
        tracing::debug!("no system bus: removable media are not watched");
        return;
    };
    let om = match ObjectManagerProxy::builder(&conn)
        .destination(UDISKS)
        .and_then(|b| b.path("/org/freedesktop/UDisks2"))
    {
        Ok(b) => match b.build().await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch UDisks2");
                return;
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch UDisks2");
            return;
        }
    };
    let (Ok(mut added), Ok(mut removed)) = (
        om.receive_interfaces_added().await,
        om.receive_interfaces_removed().await,
    ) else {
        tracing::warn!("cannot subscribe to UDisks2's signals");
        return;
    };
    tracing::info!("watching UDisks2 for removable media");
    let mut tick = tokio::time::interval(Duration::from_secs(3));
    let mut warned = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = added.next() => {}
            _ = removed.next() => {}
            _ = tick.tick() => {}
        }
        match om.get_managed_objects().await {
            Ok(objects) => {
                warned = false;
                rescan(&conn, &lc, &conf, &objects).await;
            }
            Err(e) if !warned => {
                warned = true;
                tracing::debug!(error = %e, "UDisks2 is not answering; removable media are not watched");
                lc.media().lock().clear();
            }
            Err(_) => {}
        }
    }
}

async fn rescan(
    conn: &zbus::Connection,
    lc: &Arc<Lifecycle>,
    conf: &Media,
    objects: &ManagedObjects,
) {
    let mut present = BTreeMap::new();
    for (path, device, label, mounts) in removable(objects) {
        let mount = match mounts.into_iter().next() {
            Some(m) => m,
            None if conf.mount => {
                // Not mounted: ask UDisks2 for a read-only mount, and nothing else.
                let fs = match FilesystemProxy::builder(conn).path(path.clone()) {
                    Ok(b) => b.build().await,
                    Err(e) => Err(e),
                };
                let opts = HashMap::from([("options", Value::from(MOUNT_OPTIONS))]);
                match fs {
                    Ok(fs) => match fs.mount(opts).await {
                        Ok(m) => {
                            tracing::info!(device, mount = %m, "mounted removable medium read-only");
                            PathBuf::from(m)
                        }
                        Err(e) => {
                            tracing::warn!(device, error = %e, "cannot mount removable medium read-only");
                            continue;
                        }
                    },
                    Err(e) => {
                        tracing::warn!(device, error = %e, "UDisks2 filesystem object unusable");
                        continue;
                    }
                }
            }
            None => continue,
        };
        present.insert(path.to_string(), (device, label, mount));
    }
    let known: Vec<String> = lc.media().lock().keys().cloned().collect();
    for gone in known.iter().filter(|k| !present.contains_key(*k)) {
        if let Some(m) = lc.media().lock().remove(gone) {
            tracing::info!(device = %m.device, mount = %m.mount.display(), "removable medium gone");
        }
    }
    for (key, (device, label, mount)) in present {
        if known.contains(&key) {
            continue;
        }
        let limits = MediaLimits {
            max_depth: conf.max_depth as usize,
            max_entries: conf.max_entries as usize,
        };
        let m2 = mount.clone();
        let listing = match tokio::task::spawn_blocking(move || list_bundles(&m2, limits)).await {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => {
                tracing::warn!(device, mount = %mount.display(), error = %e, "cannot list the medium");
                continue;
            }
            Err(_) => continue,
        };
        tracing::info!(device, label, mount = %mount.display(), bundles = listing.bundles.len(), truncated = listing.truncated, "removable medium with bundles");
        let files: Vec<String> = listing
            .bundles
            .iter()
            .map(|b| b.path.display().to_string())
            .collect();
        lc.media().lock().insert(
            key,
            Medium {
                device: device.clone(),
                label,
                mount: mount.clone(),
                listing,
            },
        );
        let _ = lc.events().send(Event::MediaBundles {
            mount: mount.display().to_string(),
            bundles: files.clone(),
        });
        if conf.auto_stage {
            let lc = lc.clone();
            tokio::task::spawn_blocking(move || {
                let actor = Actor::new("airlockd:media").unwrap_or_else(|_| Actor::system());
                for f in files {
                    match lc.import_offered(std::path::Path::new(&f), &actor) {
                        Ok(v) => {
                            tracing::info!(file = %f, model = %v.model, version = %v.version, "staged from removable medium")
                        }
                        Err(e) => {
                            tracing::warn!(file = %f, error = %e, "not staged from removable medium")
                        }
                    }
                }
            });
        }
    }
}
