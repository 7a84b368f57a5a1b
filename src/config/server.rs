//! `sending`, `[server]`, `[tls]`, `[accounts]` and `[log]`: the gateway's
//! switch, its name and data directory, its certificate, where the accounts
//! live, and how it logs.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::values::{duration, expand, expand_path};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sending {
    #[default]
    Enabled,
    /// Accept and queue, but hold everything until an admin releases it.
    Paused,
    /// Refuse new mail with a temporary error.
    Disabled,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// Name used in the greeting, `Received:` and DSNs.
    #[serde(deserialize_with = "expand")]
    pub hostname: String,
    /// Queue database, outbox and (later) the document store.
    #[serde(deserialize_with = "expand_path")]
    pub data_dir: PathBuf,
    /// How long SIGTERM waits for sessions and deliveries in flight.
    #[serde(deserialize_with = "duration")]
    pub shutdown_grace: Duration,
}

impl Default for Server {
    fn default() -> Self {
        Self {
            hostname: "localhost".into(),
            data_dir: "var".into(),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    /// PEM certificate chain; generated self-signed on first start if absent.
    #[serde(deserialize_with = "expand_path")]
    pub cert: PathBuf,
    #[serde(deserialize_with = "expand_path")]
    pub key: PathBuf,
}

impl Default for Tls {
    fn default() -> Self {
        Self {
            cert: "certs/server.crt".into(),
            key: "certs/server.key".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccountsSection {
    #[serde(deserialize_with = "expand_path")]
    pub file: PathBuf,
}

impl Default for AccountsSection {
    fn default() -> Self {
        Self {
            file: "conf/accounts.toml".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `schleuse=debug`.
    pub level: String,
}

impl Default for Log {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            level: "info".into(),
        }
    }
}

impl Server {
    pub(super) fn check(&self) -> Result<(), (&'static str, String)> {
        if self.hostname.trim().is_empty() {
            return Err(("server.hostname", "must not be empty".into()));
        }
        Ok(())
    }
}

impl Log {
    pub(super) fn check(&self) -> Result<(), (&'static str, String)> {
        if tracing_subscriber::EnvFilter::try_new(&self.level).is_err() {
            return Err(("log.level", format!("not a valid filter: {}", self.level)));
        }
        Ok(())
    }
}
