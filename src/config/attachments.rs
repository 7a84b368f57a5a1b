//! `[attachments]`: documents become links (SPEC §7). Rules (§8) will be
//! able to override mode, password policy and maximum expiry per message.

use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::values::{duration, expand, size};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachmentMode {
    /// Take documents out, store them encrypted, put links in.
    Link,
    /// Relay attachments as they are (no link service needed).
    Keep,
    /// Refuse messages with attachments (`550 5.7.1`).
    Reject,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkPassword {
    /// No passwords; an `X-Schleuse-Link-Password` header is ignored.
    Off,
    /// The app may set one with `X-Schleuse-Link-Password`.
    Optional,
    /// Every document gets one: the app's, or a generated one that is sent
    /// to the staff member (never to the recipient).
    Required,
}

/// What to do with `multipart/signed` and encrypted messages, which cannot
/// be changed without breaking them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignedPolicy {
    /// Relay unchanged, attachments and all.
    Pass,
    /// Refuse with `554 5.7.1` when documents would have to come out.
    Reject,
}

/// Page and link-block language (`[attachments] language`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    #[default]
    De,
    En,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Attachments {
    pub mode: AttachmentMode,
    /// The base of every link: where the county's reverse proxy publishes
    /// the link service (`<public_url>/d/<token>`).
    #[serde(deserialize_with = "expand")]
    pub public_url: String,
    /// The link service's own listener (plain HTTP: TLS is the proxy's job).
    pub bind: SocketAddr,
    /// How long a link works unless the message asks for less.
    #[serde(deserialize_with = "duration")]
    pub expiry: Duration,
    /// The longest expiry `X-Schleuse-Link-Expiry` may ask for.
    #[serde(deserialize_with = "duration")]
    pub max_expiry: Duration,
    pub password: LinkPassword,
    /// Language of the link block in the message and of the link pages.
    pub language: Language,
    /// Inline images (e.g. a logo in the HTML) up to this size stay in the
    /// message; larger ones become documents.
    #[serde(deserialize_with = "size")]
    pub inline_image_max: u64,
    pub signed: SignedPolicy,
    /// Tell the staff member when a document is downloaded the first time.
    pub notify_first_download: bool,
    /// Put the client's IP address into the download log (off: GDPR data
    /// minimisation; the log keeps time, link and outcome).
    pub log_client_ip: bool,
    /// Peers whose `X-Forwarded-For` is believed (the reverse proxy).
    pub trusted_proxies: Vec<IpNet>,
    /// Wrong passwords per link from one client (IPv4 address, IPv6 /64):
    /// this many at once, then a wait of a minute, doubling with each
    /// further one (at most an hour). The page answers `429` meanwhile; a
    /// right password gives its attempt back (`crate::store::guesses`).
    pub password_attempts_per_link: u32,
    /// Wrong passwords per client an hour, across all links.
    pub password_attempts_per_ip: u32,
    /// Wrong passwords per link an hour from all clients together: the
    /// ceiling for a stranger with many addresses (never a lock: one more
    /// every hour / N).
    pub password_ceiling_per_link: u32,
    /// How often expired documents are deleted.
    #[serde(deserialize_with = "duration")]
    pub purge_interval: Duration,
}

impl Default for Attachments {
    fn default() -> Self {
        Self {
            mode: AttachmentMode::Link,
            public_url: "http://127.0.0.1:8025".into(),
            bind: SocketAddr::from(([127, 0, 0, 1], 8025)),
            expiry: Duration::from_secs(14 * 86_400),
            max_expiry: Duration::from_secs(30 * 86_400),
            password: LinkPassword::Optional,
            language: Language::De,
            inline_image_max: 100 * 1024,
            signed: SignedPolicy::Reject,
            notify_first_download: false,
            log_client_ip: false,
            trusted_proxies: ["127.0.0.1/32", "::1/128"]
                .iter()
                .filter_map(|n| n.parse().ok())
                .collect(),
            password_attempts_per_link: 5,
            password_attempts_per_ip: 20,
            password_ceiling_per_link: 20,
            purge_interval: Duration::from_secs(60),
        }
    }
}

impl Attachments {
    /// The link for a token.
    pub fn link_url(&self, token: &str) -> String {
        format!("{}/d/{token}", self.public_url.trim_end_matches('/'))
    }

    /// What is wrong, as (key, reason), if anything.
    pub(super) fn check(&self) -> Result<(), (&'static str, String)> {
        let url = self.public_url.trim();
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"));
        match rest {
            Some(r) if !r.is_empty() && !r.starts_with('/') => {}
            _ => {
                return Err((
                    "attachments.public_url",
                    format!("{url:?} is not an http:// or https:// URL"),
                ));
            }
        }
        if url.contains(['?', '#', ' ', '"', '<', '>']) {
            return Err((
                "attachments.public_url",
                "must be a plain base URL without query, fragment or spaces".into(),
            ));
        }
        if self.expiry.is_zero() {
            return Err(("attachments.expiry", "must be longer than zero".into()));
        }
        if self.max_expiry < self.expiry {
            return Err((
                "attachments.max_expiry",
                "must not be shorter than attachments.expiry".into(),
            ));
        }
        for (key, n) in [
            (
                "attachments.password_attempts_per_link",
                self.password_attempts_per_link,
            ),
            (
                "attachments.password_attempts_per_ip",
                self.password_attempts_per_ip,
            ),
            (
                "attachments.password_ceiling_per_link",
                self.password_ceiling_per_link,
            ),
        ] {
            if n == 0 {
                return Err((key, "attempt limits must be at least 1".into()));
            }
        }
        if self.purge_interval.is_zero() {
            return Err((
                "attachments.purge_interval",
                "must be longer than zero".into(),
            ));
        }
        Ok(())
    }
}
