//! Configuration: one TOML file (SPEC §4), validated before anything starts.
//!
//! - Secrets and host names may be written `${ENV_VAR}`; the variable is read
//!   when the file is loaded, and a missing variable is an error naming the key.
//! - Durations are written `30s`, `15m`, `14d`; sizes `25MB` (see [`parse_size`]).
//! - Unknown keys are errors: a typo must never silently fall back to a default.
//! - Relative paths are relative to the working directory (the repository in
//!   development, `StateDirectory` under systemd, where absolute paths are used).
//!
//! Each section has its own file with its defaults and its `check()`;
//! [`Config::validate`] runs the checks in the order of `conf/schleuse.toml`,
//! where every default appears, commented. Config is the bottom layer: it
//! imports nothing from the rest of the crate, so the types a key is written
//! in (the rule syntax, [`Language`]) live here and the stages import them.

use std::path::{Path, PathBuf};

use serde::Deserialize;

mod values;
use values::LENIENT_ENV;
pub use values::{expand_env, is_loopback_host, parse_duration, parse_size, plausible_recipient};
mod server;
pub use server::{AccountsSection, Log, LogFormat, Sending, Server, Tls};
mod store;
pub use store::{StoreBackend, StoreSection, parse_postgres_url};
mod listener;
use listener::default_listeners;
pub use listener::{Listener, ListenerTls};
mod upstream;
pub use upstream::{Upstream, UpstreamMode, UpstreamTls};
mod outbound;
pub use outbound::{DomainLimit, Egress};
mod delivery;
pub use delivery::Delivery;
mod account_pause;
pub use account_pause::AccountPause;
mod limits;
pub use limits::{Limits, Timeouts};
mod privacy;
pub use privacy::{LogRecipients, PiiPolicy, Privacy, ReceivedHeader, Retention};
mod sender;
pub use sender::{FromMode, MissingKey, ReplyToMode, SenderSection};
mod attachments;
pub use attachments::{AttachmentMode, Attachments, Language, LinkPassword, SignedPolicy};
mod documents;
pub use documents::{DocumentBackend, Documents};
mod dkim;
pub use dkim::{DkimKey, Dns};
mod reputation;
pub use reputation::{Reputation, dns_name};
mod admin;
pub use admin::Admin;
mod suppression;
pub use suppression::{MailjetRule, Suppression};
pub mod rules;

/// A configuration problem, always naming the file and, where known, the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {cause}")]
    Read {
        file: PathBuf,
        cause: std::io::Error,
    },
    #[error("{file}:{line}: {key}: {reason}")]
    Parse {
        file: PathBuf,
        line: usize,
        key: String,
        reason: String,
    },
    #[error("{file}: {key}: {reason}")]
    Invalid {
        file: PathBuf,
        key: String,
        reason: String,
    },
}

/// The whole gateway configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The big switch: `enabled`, `paused` (accept and hold) or `disabled` (421).
    #[serde(default)]
    pub sending: Sending,
    #[serde(default)]
    pub server: Server,
    #[serde(default = "default_listeners", rename = "listener")]
    pub listeners: Vec<Listener>,
    #[serde(default)]
    pub tls: Tls,
    #[serde(default)]
    pub accounts: AccountsSection,
    #[serde(default)]
    pub upstream: Upstream,
    #[serde(default)]
    pub delivery: Delivery,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub privacy: Privacy,
    #[serde(default)]
    pub sender: SenderSection,
    #[serde(default)]
    pub attachments: Attachments,
    /// Where the encrypted documents live: local files or an S3 bucket.
    #[serde(default)]
    pub documents: Documents,
    #[serde(default)]
    pub retention: Retention,
    /// Hard bounces and the Mailjet event webhook (SPEC §6).
    #[serde(default)]
    pub suppression: Suppression,
    /// DKIM keys; two entries for one domain (Ed25519 and RSA) sign twice.
    #[serde(default, rename = "dkim")]
    pub dkim: Vec<DkimKey>,
    #[serde(default)]
    pub dns: Dns,
    /// The blocklist watch (SPEC §6).
    #[serde(default)]
    pub reputation: Reputation,
    /// Where the queue and the logs live: embedded or PostgreSQL (SPEC §11).
    #[serde(default)]
    pub store: StoreSection,
    #[serde(default)]
    pub log: Log,
    #[serde(default)]
    pub admin: Admin,
    /// Per-category switches (SPEC §8): `[categories] disabled = [...]`.
    #[serde(default)]
    pub categories: rules::Categories,
    /// Relay rules (SPEC §8), in order: the first match decides.
    #[serde(default, rename = "rule")]
    pub rules: Vec<rules::Rule>,
    /// Where the configuration came from; `None` for the built-in default.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            sending: Sending::Enabled,
            server: Server::default(),
            listeners: default_listeners(),
            tls: Tls::default(),
            accounts: AccountsSection::default(),
            upstream: Upstream::default(),
            delivery: Delivery::default(),
            limits: Limits::default(),
            timeouts: Timeouts::default(),
            privacy: Privacy::default(),
            sender: SenderSection::default(),
            attachments: Attachments::default(),
            documents: Documents::default(),
            retention: Retention::default(),
            suppression: Suppression::default(),
            dkim: Vec::new(),
            dns: Dns::default(),
            reputation: Reputation::default(),
            store: StoreSection::default(),
            log: Log::default(),
            admin: Admin::default(),
            categories: Default::default(),
            rules: Vec::new(),
            source: None,
        }
    }
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            file: path.to_owned(),
            cause,
        })?;
        let mut config = Self::parse(&text, path)?;
        config.source = Some(path.to_owned());
        config.validate()?;
        Ok(config)
    }

    /// For the admin commands, which use only the accounts file and the
    /// queue: an unset `${VAR}` (typically the relay credentials, which live
    /// in the service's environment, not the admin's shell) reads as empty
    /// instead of failing.
    pub fn load_for_admin(path: &Path) -> Result<Config, ConfigError> {
        LENIENT_ENV.with(|l| l.set(true));
        let result = Self::load(path);
        LENIENT_ENV.with(|l| l.set(false));
        result
    }

    /// The built-in default (no config file), validated like any other.
    pub fn builtin() -> Config {
        Config::default()
    }

    /// The file name errors are reported against.
    pub fn file_name(&self) -> PathBuf {
        self.source
            .clone()
            .unwrap_or_else(|| PathBuf::from("(built-in default)"))
    }

    pub(crate) fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let parse_error = |key: String, err: &toml::de::Error| ConfigError::Parse {
            file: path.to_owned(),
            line: err
                .span()
                .map(|span| line_of(text, span.start))
                .unwrap_or(1),
            key: if key.is_empty() || key == "." {
                "(document)".into()
            } else {
                key
            },
            reason: err.message().trim().to_string(),
        };
        let de = toml::Deserializer::parse(text).map_err(|e| parse_error(String::new(), &e))?;
        serde_path_to_error::deserialize(de)
            .map_err(|e| parse_error(e.path().to_string(), e.inner()))
    }

    fn invalid(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.file_name(),
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// Checks what the types alone cannot express: every section, in the
    /// order of `conf/schleuse.toml`; the first problem found is the error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check_sections()
            .map_err(|(key, reason)| self.invalid(&key, reason))
    }

    fn check_sections(&self) -> Result<(), (String, String)> {
        keyed(self.server.check())?;
        keyed(self.store.check())?;
        keyed(listener::check(&self.listeners))?;
        keyed(self.upstream.check())?;
        keyed(self.delivery.check())?;
        keyed(self.limits.check())?;
        keyed(self.timeouts.check())?;
        keyed(self.privacy.check())?;
        keyed(self.retention.check())?;
        keyed(self.sender.check())?;
        keyed(self.attachments.check())?;
        keyed(self.documents.check())?;
        keyed(dkim::check(&self.dkim))?;
        keyed(self.reputation.check())?;
        keyed(self.log.check())?;
        keyed(self.admin.check())?;
        keyed(self.suppression.check(self.admin.enabled))?;
        keyed(rules::check(
            &self.rules,
            &self.categories,
            &self.attachments,
        ))?;
        Ok(())
    }
}

/// A section check's (key, reason), whether its keys are fixed or built.
fn keyed<K: Into<String>>(checked: Result<(), (K, String)>) -> Result<(), (String, String)> {
    checked.map_err(|(key, reason)| (key.into(), reason))
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let mut c = Config::parse(text, Path::new("test.toml"))?;
        c.source = Some("test.toml".into());
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn builtin_default_is_valid() {
        Config::builtin()
            .validate()
            .expect("default config validates");
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let err = parse("[upstream]\nmode = \"outbox\"\nprot = 25\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("test.toml:3: upstream"), "{msg}");
        assert!(msg.contains("prot"), "{msg}");
    }

    #[test]
    fn bad_duration_names_key() {
        let err = parse("[delivery]\nmax_age = \"forever\"\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("delivery.max_age"), "{msg}");
    }

    #[test]
    fn env_expansion() {
        // SAFETY: tests in this module do not read this variable concurrently.
        unsafe { std::env::set_var("SCHLEUSE_TEST_SECRET", "s3cr3t") };
        assert_eq!(
            expand_env("a-${SCHLEUSE_TEST_SECRET}-b").as_deref(),
            Ok("a-s3cr3t-b")
        );
        let err = expand_env("${SCHLEUSE_SURELY_UNSET_VAR}").unwrap_err();
        assert!(err.contains("SCHLEUSE_SURELY_UNSET_VAR"));
        let err = parse("[upstream]\nusername = \"${SCHLEUSE_SURELY_UNSET_VAR}\"\n").unwrap_err();
        assert!(err.to_string().contains("upstream.username"), "{err}");
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "[upstream]\nusername = \"${SCHLEUSE_SURELY_UNSET_VAR}\"\npassword = \"${SCHLEUSE_SURELY_UNSET_VAR}\"\n",
        )
        .expect("write");
        assert!(Config::load(&file).is_err());
        Config::load_for_admin(&file).expect("admin commands tolerate unset secrets");
    }

    #[test]
    fn plaintext_listener_must_be_loopback() {
        let err = parse("[[listener]]\nbind = \"0.0.0.0:25\"\ntls = \"none\"\n").unwrap_err();
        assert!(err.to_string().contains("listener[0].tls"), "{err}");
    }

    #[test]
    fn proxy_protocol_needs_trusted_proxies() {
        let base = "[[listener]]\nbind = \"127.0.0.1:2525\"\ntls = \"starttls\"\n";
        let err = parse(&format!("{base}proxy_protocol = true\n")).unwrap_err();
        assert!(
            err.to_string().contains("listener[0].proxy_trusted"),
            "{err}"
        );
        let err = parse(&format!("{base}proxy_trusted = [\"10.0.0.0/8\"]\n")).unwrap_err();
        assert!(
            err.to_string().contains("listener[0].proxy_trusted"),
            "{err}"
        );
        let c = parse(&format!(
            "{base}proxy_protocol = true\nproxy_trusted = [\"10.0.0.5/32\"]\n"
        ))
        .expect("proxy listener");
        assert!(c.listeners[0].proxy_protocol);
        assert!(!Config::builtin().listeners[0].proxy_protocol);
    }

    #[test]
    fn residency_refuses_unlisted_upstream() {
        let err = parse(
            "[upstream]\nmode = \"relay\"\nhost = \"smtp.example.com\"\nusername = \"u\"\npassword = \"p\"\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("allowed_hosts"), "{err}");
        parse("[upstream]\nmode = \"relay\"\nhost = \"127.0.0.1\"\nport = 2600\ntls = \"none\"\n")
            .expect("loopback upstream without TLS is fine");
    }

    #[test]
    fn shipped_config_states_the_admin_defaults() {
        let c = parse(include_str!("../conf/schleuse.toml")).expect("conf/schleuse.toml");
        let d = Admin::default();
        assert_eq!(c.admin.listen_addr(), d.listen_addr());
        assert_eq!(c.admin.upstream_check_interval, d.upstream_check_interval);
        assert!(c.admin.username.is_none() && c.admin.password.is_none());
    }

    #[test]
    fn admin_defaults_and_disabling() {
        let c = parse("").expect("empty config");
        assert_eq!(
            c.admin.listen_addr(),
            Some(SocketAddr::from(([127, 0, 0, 1], 9025)))
        );
        assert_eq!(c.admin.upstream_check_interval, Duration::from_secs(60));
        let c = parse("[admin]\nenabled = false\nbind = \"0.0.0.0:9025\"\n")
            .expect("a disabled endpoint needs no auth");
        assert_eq!(c.admin.listen_addr(), None);
    }

    #[test]
    fn admin_off_loopback_needs_basic_auth() {
        let err = parse("[admin]\nbind = \"0.0.0.0:9025\"\n").unwrap_err();
        assert!(err.to_string().contains("admin.bind"), "{err}");
        // SAFETY: tests in this module do not read this variable concurrently.
        unsafe { std::env::set_var("SCHLEUSE_TEST_ADMIN_PW", "pw") };
        let c = parse(
            "[admin]\nbind = \"[::]:9025\"\nusername = \"prom\"\npassword = \"${SCHLEUSE_TEST_ADMIN_PW}\"\n",
        )
        .expect("basic auth makes a public bind fine");
        assert_eq!(c.admin.password.as_deref(), Some("pw"));
    }

    #[test]
    fn admin_credentials_together_and_interval() {
        let err = parse("[admin]\nusername = \"prom\"\n").unwrap_err();
        assert!(err.to_string().contains("admin.password"), "{err}");
        let err = parse("[admin]\nusername = \"prom\"\npassword = \"\"\n").unwrap_err();
        assert!(err.to_string().contains("must not be empty"), "{err}");
        let err = parse("[admin]\nupstream_check_interval = \"0s\"\n").unwrap_err();
        assert!(
            err.to_string().contains("admin.upstream_check_interval"),
            "{err}"
        );
        let err = parse("[admin]\nbind = \"localhost:9025\"\n").unwrap_err();
        assert!(err.to_string().contains("admin.bind"), "{err}");
    }
}
