//! The end-to-end tests: one test binary (linked once) with a module per area. Each test starts
//! the real binaries (`airlockd`, `airlockctl`, `airlock-sign`) and talks to them as users and
//! clients do; nextest runs every test in its own process.
#![allow(clippy::unwrap_used)]

mod admin;
mod auth;
mod crash;
mod daemon_dev;
mod dbus;
mod failover;
mod faults;
mod grpc;
mod hardening;
mod image;
mod image_lock;
mod lifecycle;
mod lifecycle_crash;
mod privileges;
mod promotion;
mod refusals;
mod serving;
mod sign_cli;
mod systemd;
mod telemetry;
mod unit_files;
mod usb;
