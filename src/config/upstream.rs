//! `[upstream]`: where mail is relayed (or `outbox` mode, which relays
//! nothing), over which TLS, with which credentials, and the data residency
//! allow-list (SPEC §7) a relay host must be on.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::outbound::{Egress, check_egress};
use super::values::{duration, expand, expand_opt, expand_opt_path, is_loopback_host, size};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamMode {
    Relay,
    Outbox,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamTls {
    Starttls,
    Implicit,
    /// Only for a loopback upstream (a local Postfix, tests, benchmarks).
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Upstream {
    pub mode: UpstreamMode,
    #[serde(deserialize_with = "expand")]
    pub host: String,
    pub port: u16,
    pub tls: UpstreamTls,
    #[serde(deserialize_with = "expand_opt")]
    pub username: Option<String>,
    #[serde(deserialize_with = "expand_opt")]
    pub password: Option<String>,
    /// Extra CA certificate(s) to trust besides the public roots (private
    /// relays, tests).
    #[serde(deserialize_with = "expand_opt_path")]
    pub ca_file: Option<PathBuf>,
    /// Residency (SPEC §7): hosts the gateway may relay to. Loopback hosts are
    /// always allowed.
    pub allowed_hosts: Vec<String>,
    /// Per SMTP command (the DATA upload gets more by size, assuming at least
    /// 128 KiB/s); a stuck upstream must not stall the queue.
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    /// Source addresses to connect from, in rotation (`[[upstream.egress]]`);
    /// empty: the system picks.
    pub egress: Vec<Egress>,
    /// The largest message the upstream takes (Mailjet documents 15 MB). A
    /// message bigger than this *as it would be relayed* (after the
    /// attachments stage, DKIM and `Received:`) is refused at the end of
    /// `DATA`: the upstream would take it and bounce it later.
    #[serde(deserialize_with = "size")]
    pub max_message_size: u64,
}

impl Default for Upstream {
    fn default() -> Self {
        Self {
            mode: UpstreamMode::Outbox,
            host: "in-v3.mailjet.com".into(),
            port: 587,
            tls: UpstreamTls::Starttls,
            username: None,
            password: None,
            ca_file: None,
            allowed_hosts: vec!["in-v3.mailjet.com".into()],
            timeout: Duration::from_secs(60),
            egress: Vec::new(),
            max_message_size: 15 * 1024 * 1024,
        }
    }
}

impl fmt::Display for UpstreamMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UpstreamMode::Relay => "relay",
            UpstreamMode::Outbox => "outbox",
        })
    }
}

impl Upstream {
    pub(super) fn check(&self) -> Result<(), (String, String)> {
        check_egress(&self.egress)?;
        if self.mode == UpstreamMode::Relay {
            if self.host.trim().is_empty() {
                return Err(("upstream.host".into(), "relay mode needs a host".into()));
            }
            let loopback = is_loopback_host(&self.host);
            if self.tls == UpstreamTls::None && !loopback {
                return Err((
                    "upstream.tls".into(),
                    format!(
                        "\"none\" is only allowed for a loopback upstream, not {}",
                        self.host
                    ),
                ));
            }
            if !loopback
                && !self
                    .allowed_hosts
                    .iter()
                    .any(|h| h.eq_ignore_ascii_case(&self.host))
            {
                return Err((
                    "upstream.host".into(),
                    format!(
                        "{} is not in upstream.allowed_hosts (data residency); add it there to allow it",
                        self.host
                    ),
                ));
            }
            if self.username.is_some() != self.password.is_some() {
                return Err((
                    "upstream.password".into(),
                    "username and password must be given together".into(),
                ));
            }
            if !loopback && self.username.is_none() {
                return Err((
                    "upstream.username".into(),
                    "a non-loopback upstream needs credentials".into(),
                ));
            }
            if let Some(ca) = &self.ca_file
                && let Err(e) = std::fs::metadata(ca)
            {
                return Err(("upstream.ca_file".into(), format!("{}: {e}", ca.display())));
            }
        }
        if self.max_message_size < 1024 {
            return Err((
                "upstream.max_message_size".into(),
                "must be at least 1KB".into(),
            ));
        }
        Ok(())
    }
}
