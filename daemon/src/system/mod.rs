//! The daemon's adapters to the operating system: systemd's notify protocol, the D-Bus
//! interface, removable media through UDisks2, least privilege at start, TLS and logging.
//! They use the lifecycle, auth and events; nothing here knows HTTP or gRPC.

pub mod dbus;
pub mod logging;
pub mod privileges;
pub mod systemd;
pub mod tls;
pub mod usb;
