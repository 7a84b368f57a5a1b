//! Shared harness for the integration tests: a temp dir per test, certificates
//! made with the `openssl` CLI, the Python upstream stand-in
//! (`tests/support/upstream.py`), the real `schleuse` binary, and small SMTP
//! clients (a raw/rustls one in Rust, smtplib and swaks as subprocesses).
//!
//! Everything binds to 127.0.0.1, every wait is bounded, and every process is
//! killed on drop. When a test panics, the gateway's and the upstream's logs
//! are printed (from `Drop`), so the failure report shows what they said.

#![allow(dead_code)]

pub mod dns;
pub mod haproxy;
pub mod postgres;
pub mod s3;

mod certs;
mod clients;
mod env;
mod gateway;
mod http;
mod messages;
mod process;
mod smtp;
mod upstream;

// Each test binary uses only part of the harness: a re-export it does not
// use is not a mistake.
#[allow(unused_imports)]
pub use certs::*;
#[allow(unused_imports)]
pub use clients::*;
#[allow(unused_imports)]
pub use env::*;
#[allow(unused_imports)]
pub use gateway::*;
#[allow(unused_imports)]
pub use http::*;
#[allow(unused_imports)]
pub use messages::*;
#[allow(unused_imports)]
pub use process::*;
#[allow(unused_imports)]
pub use smtp::*;
#[allow(unused_imports)]
pub use upstream::*;

use std::path::PathBuf;

/// Debian's Python, which has aiosmtpd (the pyenv one on PATH does not).
pub const PYTHON: &str = "/usr/bin/python3";
pub const BIN: &str = env!("CARGO_BIN_EXE_schleuse");

/// The account every test submits with unless it says otherwise.
pub const USER: &str = "app";
pub const PASSWORD: &str = "app-secret-Passw0rd";
/// Credentials the upstream stand-in requires from the gateway.
pub const RELAY_USER: &str = "relayuser";
pub const RELAY_PASSWORD: &str = "relaypass";

pub fn support_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support")
}
