//! `[store]`: where the queue, the delivery log, links, limits and the
//! suppression list live (SPEC §11).
//!
//! - `backend = "embedded"` (the default): one SQLite file under
//!   `server.data_dir`; one gateway process.
//! - `backend = "postgres"`: a PostgreSQL database shared by several
//!   instances (`crate::store::postgres`). `url` is a libpq-style URL or
//!   key=value string, usually `"${DATABASE_URL}"`: an unset variable is an
//!   error naming it, also for the admin commands, which need the database
//!   as much as the gateway does. A host other than loopback or a Unix
//!   socket needs `sslmode=require` (TLS through rustls, certificate and
//!   host name verified against the WebPKI roots plus `ca_file`).
//!
//! `pool_size` caps the connections one instance keeps open; `lease_time`
//! is how long a message an instance took for delivery stays its own
//! without renewal, i.e. how soon another instance takes over the messages
//! of one that died.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use tokio_postgres::config::{Host, SslMode};

use super::values::{duration, expand_env, expand_opt_path, is_loopback_host};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// SQLite in `server.data_dir`.
    #[default]
    Embedded,
    /// A shared PostgreSQL database.
    Postgres,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    pub backend: StoreBackend,
    /// As written: `${VAR}` references are expanded by [`Self::url`], so a
    /// missing variable is reported (by name) only when the backend needs it.
    #[serde(rename = "url")]
    pub url_template: String,
    /// Connections kept open at most by one instance.
    pub pool_size: usize,
    /// How long a leased message stays with its instance unless renewed.
    #[serde(deserialize_with = "duration")]
    pub lease_time: Duration,
    /// Extra CA certificates (PEM) for the database's TLS certificate.
    #[serde(deserialize_with = "expand_opt_path")]
    pub ca_file: Option<PathBuf>,
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            backend: StoreBackend::Embedded,
            url_template: String::new(),
            pool_size: 10,
            lease_time: Duration::from_secs(120),
            ca_file: None,
        }
    }
}

impl StoreSection {
    /// The URL with every `${NAME}` replaced; an unset variable is an error
    /// naming it (never lenient: without it there is no database).
    pub fn url(&self) -> Result<String, String> {
        let mut rest = self.url_template.as_str();
        while let Some(start) = rest.find("${") {
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                break;
            };
            let name = &after[..end];
            if !name.is_empty() && std::env::var_os(name).is_none() {
                return Err(format!("environment variable {name} is not set"));
            }
            rest = &after[end + 1..];
        }
        expand_env(&self.url_template)
    }

    pub(super) fn check(&self) -> Result<(), (&'static str, String)> {
        if self.backend != StoreBackend::Postgres {
            return Ok(());
        }
        let url = self.url().map_err(|e| ("store.url", e))?;
        parse_postgres_url(&url).map_err(|e| ("store.url", e))?;
        if self.pool_size == 0 {
            return Err(("store.pool_size", "must be at least 1".into()));
        }
        if self.lease_time < Duration::from_secs(1) {
            return Err(("store.lease_time", "must be at least 1s".into()));
        }
        if let Some(ca) = &self.ca_file
            && let Err(e) = std::fs::metadata(ca)
        {
            return Err(("store.ca_file", format!("{}: {e}", ca.display())));
        }
        Ok(())
    }
}

/// Parses the URL and checks what `[store] url` must satisfy: a database
/// reached over the network must be reached with TLS (as for the upstream,
/// plaintext only on loopback or a Unix socket).
pub fn parse_postgres_url(url: &str) -> Result<tokio_postgres::Config, String> {
    if url.trim().is_empty() {
        return Err("is empty; the postgres backend needs a URL such as \
                    postgresql://schleuse@db.example/schleuse?sslmode=require"
            .into());
    }
    // The parse error never quotes the URL, which may hold a password.
    let config: tokio_postgres::Config = url
        .parse()
        .map_err(|e: tokio_postgres::Error| format!("not a PostgreSQL URL ({e})"))?;
    if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
        return Err("names no host (add one, or host=/run/postgresql for a socket)".into());
    }
    if config.get_ssl_mode() != SslMode::Require {
        let remote = config.get_hosts().iter().find_map(|h| match h {
            Host::Tcp(name) if !is_loopback_host(name) => Some(name.clone()),
            _ => None,
        });
        let remote = remote.or_else(|| {
            config
                .get_hostaddrs()
                .iter()
                .find(|ip| !ip.is_loopback())
                .map(|ip| ip.to_string())
        });
        if let Some(host) = remote {
            return Err(format!(
                "{host} is not a loopback address: add sslmode=require (the connection \
                 carries message content and credentials)"
            ));
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn postgres(url: &str) -> StoreSection {
        StoreSection {
            backend: StoreBackend::Postgres,
            url_template: url.into(),
            ..StoreSection::default()
        }
    }

    #[test]
    fn url_names_the_missing_variable_only_when_needed() {
        let s = postgres("${SCHLEUSE_SURELY_UNSET_DB_URL}");
        let (key, reason) = s.check().unwrap_err();
        assert_eq!(key, "store.url");
        assert!(reason.contains("SCHLEUSE_SURELY_UNSET_DB_URL"), "{reason}");
        let embedded = StoreSection {
            backend: StoreBackend::Embedded,
            ..s
        };
        assert!(embedded.check().is_ok());
    }

    #[test]
    fn remote_hosts_need_tls_and_keys_are_named() {
        let (key, reason) = postgres("postgresql://u@db.example/x").check().unwrap_err();
        assert_eq!(key, "store.url");
        assert!(reason.contains("sslmode=require"), "{reason}");
        assert!(
            postgres("postgresql://u@db.example/x?sslmode=require")
                .check()
                .is_ok()
        );
        let mut s = postgres("postgresql://u@127.0.0.1/x");
        s.pool_size = 0;
        assert_eq!(s.check().unwrap_err().0, "store.pool_size");
        s.pool_size = 2;
        s.lease_time = Duration::from_millis(10);
        assert_eq!(s.check().unwrap_err().0, "store.lease_time");
    }

    #[test]
    fn plaintext_only_to_loopback_or_a_socket() {
        for ok in [
            "postgresql://u@127.0.0.1/db",
            "postgresql://u@localhost:5433/db?sslmode=disable",
            "host=/run/postgresql dbname=db",
            "postgresql://u@db.example/db?sslmode=require",
        ] {
            assert!(parse_postgres_url(ok).is_ok(), "{ok}");
        }
        let err = parse_postgres_url("postgresql://u:secret@db.example/db").unwrap_err();
        assert!(
            err.contains("db.example") && err.contains("sslmode=require"),
            "{err}"
        );
        assert!(!err.contains("secret"), "{err}");
        let err = parse_postgres_url("postgresql://u@db.example/db?sslmode=prefer").unwrap_err();
        assert!(err.contains("sslmode=require"), "{err}");
        assert!(parse_postgres_url("").is_err());
        let err = parse_postgres_url("postgresql://u:secret@[::1/db").unwrap_err();
        assert!(!err.contains("secret"), "{err}");
    }
}
