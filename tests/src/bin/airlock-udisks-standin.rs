//! `airlock-udisks-standin`: the UDisks2 interfaces airlockd uses, on a test's private system
//! bus — the only stand-in the tests use, because the real UDisks2 needs real block devices.
//! It owns `org.freedesktop.UDisks2` and serves an object manager at `/org/freedesktop/UDisks2`
//! with drives (`Removable`, `ConnectionBus`), blocks (`Device`, `Drive`, `IdLabel`,
//! `HintSystem`) and filesystems (`MountPoints`, `Mount`). `Mount` refuses any options but a
//! read-only set and "mounts" by reporting the directory given at plug time.
//!
//! Commands on stdin, answered with `ok` or `error: …` on stdout:
//!   `plug NAME DIR mounted|unmounted removable|fixed`  a filesystem appears
//!   `unplug NAME`                                      it disappears
//!   `mounts`                                           `mount NAME OPTIONS` per Mount call so far

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use zbus::object_server::SignalEmitter;
use zbus::zvariant::{OwnedObjectPath, OwnedValue};
use zbus::{fdo, interface};

struct Drive {
    removable: bool,
}

#[interface(name = "org.freedesktop.UDisks2.Drive")]
impl Drive {
    #[zbus(property)]
    fn removable(&self) -> bool {
        self.removable
    }
    #[zbus(property)]
    fn media_removable(&self) -> bool {
        self.removable
    }
    #[zbus(property)]
    fn connection_bus(&self) -> String {
        if self.removable { "usb" } else { "" }.into()
    }
}

struct Block {
    device: String,
    drive: OwnedObjectPath,
    label: String,
}

fn nul_terminated(s: &str) -> Vec<u8> {
    let mut b = s.as_bytes().to_vec();
    b.push(0);
    b
}

#[interface(name = "org.freedesktop.UDisks2.Block")]
impl Block {
    #[zbus(property)]
    fn device(&self) -> Vec<u8> {
        nul_terminated(&self.device)
    }
    #[zbus(property)]
    fn drive(&self) -> OwnedObjectPath {
        self.drive.clone()
    }
    #[zbus(property)]
    fn id_label(&self) -> String {
        self.label.clone()
    }
    #[zbus(property)]
    fn hint_system(&self) -> bool {
        false
    }
}

struct Filesystem {
    name: String,
    dir: String,
    mounted: bool,
    log: Arc<Mutex<Vec<String>>>,
}

#[interface(name = "org.freedesktop.UDisks2.Filesystem")]
impl Filesystem {
    #[zbus(property)]
    fn mount_points(&self) -> Vec<Vec<u8>> {
        if self.mounted {
            vec![nul_terminated(&self.dir)]
        } else {
            vec![]
        }
    }

    async fn mount(
        &mut self,
        options: HashMap<String, OwnedValue>,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> fdo::Result<String> {
        let opts = options
            .get("options")
            .and_then(|v| String::try_from(v.clone()).ok())
            .unwrap_or_default();
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(format!("mount {} {opts}", self.name));
        if !opts.split(',').any(|o| o == "ro") {
            return Err(fdo::Error::AccessDenied(format!(
                "stand-in refuses a writable mount ({opts:?})"
            )));
        }
        self.mounted = true;
        let _ = self.mount_points_changed(&emitter).await;
        Ok(self.dir.clone())
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let conn = zbus::connection::Builder::system()?
        .name("org.freedesktop.UDisks2")?
        .serve_at("/org/freedesktop/UDisks2", fdo::ObjectManager)?
        .build()
        .await?;
    let log = Arc::new(Mutex::new(Vec::new()));
    println!("ready");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    while let Some(line) = rx.recv().await {
        let w: Vec<&str> = line.split_whitespace().collect();
        let answer = match w.as_slice() {
            ["plug", name, dir, mounted, kind] => {
                let drive = format!("/org/freedesktop/UDisks2/drives/{name}");
                let block = format!("/org/freedesktop/UDisks2/block_devices/{name}");
                let srv = conn.object_server();
                let r = async {
                    srv.at(
                        drive.as_str(),
                        Drive {
                            removable: *kind == "removable",
                        },
                    )
                    .await?;
                    srv.at(
                        block.as_str(),
                        Block {
                            device: format!("/dev/{name}"),
                            drive: OwnedObjectPath::try_from(drive.clone())?,
                            label: name.to_uppercase(),
                        },
                    )
                    .await?;
                    srv.at(
                        block.as_str(),
                        Filesystem {
                            name: name.to_string(),
                            dir: dir.to_string(),
                            mounted: *mounted == "mounted",
                            log: log.clone(),
                        },
                    )
                    .await?;
                    zbus::Result::Ok(())
                }
                .await;
                r.map(|()| "ok".to_string())
                    .unwrap_or_else(|e| format!("error: {e}"))
            }
            ["unplug", name] => {
                let srv = conn.object_server();
                let block = format!("/org/freedesktop/UDisks2/block_devices/{name}");
                let drive = format!("/org/freedesktop/UDisks2/drives/{name}");
                let _ = srv.remove::<Filesystem, _>(block.as_str()).await;
                let _ = srv.remove::<Block, _>(block.as_str()).await;
                let _ = srv.remove::<Drive, _>(drive.as_str()).await;
                "ok".to_string()
            }
            ["mounts"] => log.lock().unwrap_or_else(|p| p.into_inner()).join(";"),
            _ => format!("error: unknown command {line:?}"),
        };
        println!("{answer}");
    }
    Ok(())
}
