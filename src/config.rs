//! Configuration: one TOML file (SPEC §4), validated before anything starts.
//!
//! - Secrets and host names may be written `${ENV_VAR}`; the variable is read
//!   when the file is loaded, and a missing variable is an error naming the key.
//! - Durations are written `30s`, `15m`, `14d`; sizes `25MB` (see [`parse_size`]).
//! - Unknown keys are errors: a typo must never silently fall back to a default.
//! - Relative paths are relative to the working directory (the repository in
//!   development, `StateDirectory` under systemd, where absolute paths are used).
//!
//! Every default below appears, commented, in `conf/schleuse.toml`.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

mod values;
use values::{
    LENIENT_ENV, duration, durations, expand, expand_opt, expand_opt_path, expand_path, size,
};
pub use values::{expand_env, is_loopback_host, parse_duration, parse_size, plausible_recipient};
mod attachments;
pub use attachments::{AttachmentMode, Attachments, Language, LinkPassword, SignedPolicy};
mod suppression;
pub use suppression::{MailjetRule, Suppression};
mod reputation;
pub use reputation::{Reputation, dns_name};
mod documents;
pub use documents::{DocumentBackend, Documents};
mod outbound;
pub use outbound::{DomainLimit, Egress};
mod store;
pub use store::{StoreBackend, StoreSection, parse_postgres_url};
mod account_pause;
pub use account_pause::AccountPause;

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
    pub categories: crate::policy::rules::Categories,
    /// Relay rules (SPEC §8), in order: the first match decides.
    #[serde(default, rename = "rule")]
    pub rules: Vec<crate::policy::rules::Rule>,
    /// Where the configuration came from; `None` for the built-in default.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerTls {
    Starttls,
    Implicit,
    /// Plain text; only allowed on loopback addresses.
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    pub bind: SocketAddr,
    pub tls: ListenerTls,
    /// Clients from these networks are treated as `account` without AUTH.
    #[serde(default)]
    pub trusted_networks: Vec<IpNet>,
    /// The account whose identity trusted clients get.
    #[serde(default)]
    pub account: Option<String>,
    /// Every connection starts with a PROXY protocol v2 header (behind a
    /// TCP load balancer such as HAProxy); its source address is then the
    /// client's for bans, limits, `trusted_networks`, logs and `Received:`.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// Socket addresses allowed to send that header; connections from
    /// anywhere else are refused, since the header could claim any client.
    #[serde(default)]
    pub proxy_trusted: Vec<IpNet>,
}

fn default_listeners() -> Vec<Listener> {
    vec![Listener {
        bind: SocketAddr::from(([127, 0, 0, 1], 2525)),
        tls: ListenerTls::Starttls,
        trusted_networks: Vec::new(),
        account: None,
        proxy_protocol: false,
        proxy_trusted: Vec::new(),
    }]
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Delivery {
    /// Wait before attempt 2, 3, …; after the last entry, every last interval.
    #[serde(deserialize_with = "durations")]
    pub retry_schedule: Vec<Duration>,
    /// After this, pending recipients bounce with a DSN.
    #[serde(deserialize_with = "duration")]
    pub max_age: Duration,
    /// Concurrent upstream connections.
    pub max_connections: usize,
    /// Upstream message rate cap across all connections.
    pub max_messages_per_second: u32,
    /// Rate caps per group of recipient domains (`[[delivery.domain_limit]]`).
    pub domain_limit: Vec<DomainLimit>,
    /// Account-wide upstream refusals pause instead of bouncing.
    pub account_pause: AccountPause,
}

impl Default for Delivery {
    fn default() -> Self {
        Self {
            retry_schedule: [60, 300, 900, 3600, 14400]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
            max_age: Duration::from_secs(5 * 86400),
            max_connections: 4,
            max_messages_per_second: 50,
            domain_limit: Vec::new(),
            account_pause: AccountPause::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    #[serde(deserialize_with = "size")]
    pub max_message_size: u64,
    pub max_recipients_per_message: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// Connections that have not logged in yet (trusted networks count as
    /// logged in). At this budget, or at `max_connections`, a new client
    /// sheds the oldest of them from the address holding the most, instead
    /// of being refused: idlers cannot lock legitimate clients out.
    pub max_unauthenticated_connections: usize,
    /// Protocol errors after which a session is dropped.
    pub max_errors_per_session: u32,
    /// Messages (MAIL FROM) per client IP and minute; 0: no limit.
    pub ip_messages_per_minute: u32,
    /// Messages per account and clock hour / UTC day; 0: no limit. An
    /// account entry may set its own (`messages_per_hour`, ...).
    pub account_messages_per_hour: u32,
    pub account_messages_per_day: u32,
    /// Recipients per account and UTC day; 0: no limit.
    pub account_recipients_per_day: u32,
    /// Failed AUTHs from one IP within `auth_failure_window` that ban the
    /// IP for `auth_ban_time`; 0: no bans.
    pub auth_failures: u32,
    #[serde(deserialize_with = "duration")]
    pub auth_failure_window: Duration,
    #[serde(deserialize_with = "duration")]
    pub auth_ban_time: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_size: 25 * 1024 * 1024,
            max_recipients_per_message: 50,
            max_connections: 500,
            max_connections_per_ip: 50,
            max_unauthenticated_connections: 100,
            max_errors_per_session: 10,
            ip_messages_per_minute: 120,
            account_messages_per_hour: 500,
            account_messages_per_day: 2000,
            account_recipients_per_day: 5000,
            auth_failures: 5,
            auth_failure_window: Duration::from_secs(600),
            auth_ban_time: Duration::from_secs(3600),
        }
    }
}

/// RFC 5321 §4.5.3.2 server timeouts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// Receiving one whole command line, from the moment the session waits
    /// for it (a deadline per line, like Postfix's
    /// `smtpd_per_record_deadline`, not per read).
    #[serde(deserialize_with = "duration")]
    pub command: Duration,
    /// From connect to a successful AUTH; trusted networks are exempt.
    #[serde(deserialize_with = "duration")]
    pub auth: Duration,
    /// The whole session, from connect, however busy.
    #[serde(deserialize_with = "duration")]
    pub session: Duration,
    /// Waiting for the next chunk of DATA.
    #[serde(deserialize_with = "duration")]
    pub data_block: Duration,
    /// The whole DATA phase (slow-client protection).
    #[serde(deserialize_with = "duration")]
    pub data_total: Duration,
    /// TLS handshake.
    #[serde(deserialize_with = "duration")]
    pub tls_handshake: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            command: Duration::from_secs(300),
            auth: Duration::from_secs(30),
            session: Duration::from_secs(3600),
            data_block: Duration::from_secs(180),
            data_total: Duration::from_secs(600),
            tls_handshake: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReceivedHeader {
    Full,
    #[default]
    Minimal,
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Privacy {
    /// `full` names the client's IP; `minimal` only the gateway; `none` adds none.
    pub received_header: ReceivedHeader,
    /// Header fields removed before relay. `X-Foo-*` matches a prefix. The
    /// gateway's own control headers (`X-Schleuse-*`, `X-VIA-*`) are always
    /// removed, listed here or not.
    pub remove_headers: Vec<String>,
    /// Mailjet open/click tracking. Off: `X-Mailjet-TrackOpen: 0` and
    /// `X-Mailjet-TrackClick: 0` are added, since tracking would hand the
    /// recipients' IPs and user agents to the relay.
    pub tracking: bool,
    /// Keep client-supplied `X-Mailjet-*` / `X-MJ-*` headers (dropped by
    /// default: they steer the relay, which is the gateway's job).
    pub allow_mailjet_headers: bool,
    /// How the delivery log keeps recipients once a message is final.
    pub log_recipients: LogRecipients,
    /// What a message whose text looks like it carries personal data
    /// (IBAN, phone, date of birth, address, tax id, health terms) gets.
    pub pii: PiiPolicy,
    /// Where the staff member's own signature starts (not scanned).
    pub signature_marker: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PiiPolicy {
    Off,
    /// Relay; note the categories in the log.
    Tag,
    /// Relay; tell the staff member which categories were found (never the
    /// data itself).
    Warn,
    /// Accept but hold for an admin (`schleuse queue release`).
    Hold,
    /// Refuse with `550 5.7.1`, naming the categories.
    Reject,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogRecipients {
    /// A keyed hash (HMAC, key in `data_dir/log.key`); `gdpr export` can
    /// still find an address, the database alone does not list them.
    Pseudonymised,
    Clear,
}

/// How long records are kept (SPEC §7); a background purge enforces it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    /// Delivery-log entries of final messages (times, account, sizes,
    /// per-recipient status and replies, documents).
    #[serde(deserialize_with = "duration")]
    pub delivery_log: Duration,
    /// The download log, and the tombstones that make expired or revoked
    /// links answer `410` rather than `404`.
    #[serde(deserialize_with = "duration")]
    pub downloads: Duration,
    /// How often the purge runs.
    #[serde(deserialize_with = "duration")]
    pub interval: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            delivery_log: Duration::from_secs(90 * 86_400),
            downloads: Duration::from_secs(90 * 86_400),
            interval: Duration::from_secs(3600),
        }
    }
}

impl Default for Privacy {
    fn default() -> Self {
        Self {
            received_header: ReceivedHeader::Minimal,
            remove_headers: [
                "X-Originating-IP",
                "X-PHP-Originating-Script",
                "X-Mailer",
                "User-Agent",
            ]
            .map(String::from)
            .to_vec(),
            tracking: false,
            allow_mailjet_headers: false,
            log_recipients: LogRecipients::Pseudonymised,
            pii: PiiPolicy::Warn,
            signature_marker: "-- ".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FromMode {
    /// Leave `From:` as the client sent it (it is still checked).
    Keep,
    /// `From:` becomes `system_address`, keeping the display name.
    Rewrite,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplyToMode {
    /// `Reply-To:` becomes the staff member's address.
    Account,
    /// Leave the client's `Reply-To:` alone.
    Keep,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MissingKey {
    /// Relay unsigned, with a warning in the log.
    Warn,
    /// Refuse the message (`554 5.7.0`).
    Refuse,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SenderSection {
    pub from: FromMode,
    /// The `From:` (and envelope sender) of rewritten mail; bounces come here.
    #[serde(deserialize_with = "expand")]
    pub system_address: String,
    pub reply_to: ReplyToMode,
    /// Send the staff member a copy of what was relayed (accounts may override).
    pub copy_to_sender: bool,
    /// A message whose `From:` domain has no `[[dkim]]` key.
    pub without_dkim_key: MissingKey,
}

impl Default for SenderSection {
    fn default() -> Self {
        Self {
            from: FromMode::Rewrite,
            system_address: "via@landkreis.example".into(),
            reply_to: ReplyToMode::Account,
            copy_to_sender: false,
            without_dkim_key: MissingKey::Warn,
        }
    }
}

/// One DKIM signing key (RFC 6376). The algorithm (Ed25519 or RSA) is the
/// key file's; the file is PKCS#8 PEM, as `schleuse dkim keygen` writes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkimKey {
    pub domain: String,
    pub selector: String,
    #[serde(deserialize_with = "expand_path")]
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Dns {
    /// Name servers for the gateway's own lookups (`dkim check`, blocklist
    /// watch); empty: the system's (`/etc/resolv.conf`).
    pub nameservers: Vec<SocketAddr>,
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
}

impl Default for Dns {
    fn default() -> Self {
        Self {
            nameservers: Vec::new(),
            timeout: Duration::from_secs(5),
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

/// The admin HTTP endpoint: `/metrics`, `/healthz`, `/readyz` (SPEC §10).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    /// `false` runs no endpoint (and records no metrics).
    pub enabled: bool,
    /// Loopback by default: the endpoint tells how much mail flows where.
    pub bind: SocketAddr,
    /// HTTP basic auth for every route; both or neither. Required when
    /// `bind` is not a loopback address.
    #[serde(deserialize_with = "expand_opt")]
    pub username: Option<String>,
    #[serde(deserialize_with = "expand_opt")]
    pub password: Option<String>,
    /// In relay mode `/readyz` needs an upstream contact (a delivery or a
    /// probe connection) this recent; the probe runs as often as needed.
    #[serde(deserialize_with = "duration")]
    pub upstream_check_interval: Duration,
}

impl Default for Admin {
    fn default() -> Self {
        Self {
            enabled: true,
            bind: SocketAddr::from(([127, 0, 0, 1], 9025)),
            username: None,
            password: None,
            upstream_check_interval: Duration::from_secs(60),
        }
    }
}

impl Admin {
    /// Where the endpoint listens; `None` when it is disabled.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.enabled.then_some(self.bind)
    }
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

    /// Checks what the types alone cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Err((key, reason)) = self.attachments.check() {
            return Err(self.invalid(key, reason));
        }
        if let Err((key, reason)) = self.documents.check() {
            return Err(self.invalid(key, reason));
        }
        if let Err((key, reason)) = self.reputation.check() {
            return Err(self.invalid(&key, reason));
        }
        if let Err((key, reason)) = outbound::check_domain_limits(&self.delivery.domain_limit)
            .and_then(|()| outbound::check_egress(&self.upstream.egress))
        {
            return Err(self.invalid(&key, reason));
        }
        if let Err((key, reason)) = self.delivery.account_pause.check() {
            return Err(self.invalid(&key, reason));
        }
        if let Err((key, reason)) = self.store.check() {
            return Err(self.invalid(key, reason));
        }
        if let Err((key, reason)) = self.suppression.check(self.admin.enabled) {
            return Err(self.invalid(key, reason));
        }
        if self.retention.interval.is_zero() {
            return Err(self.invalid("retention.interval", "must be longer than zero"));
        }
        if self.server.hostname.trim().is_empty() {
            return Err(self.invalid("server.hostname", "must not be empty"));
        }
        if self.listeners.is_empty() {
            return Err(self.invalid("listener", "at least one [[listener]] is needed"));
        }
        for (i, l) in self.listeners.iter().enumerate() {
            let key = format!("listener[{i}]");
            if l.tls == ListenerTls::None && !l.bind.ip().is_loopback() {
                return Err(self.invalid(
                    &format!("{key}.tls"),
                    format!(
                        "\"none\" is only allowed on a loopback address, not {}",
                        l.bind
                    ),
                ));
            }
            if !l.trusted_networks.is_empty() && l.account.is_none() {
                return Err(self.invalid(
                    &format!("{key}.account"),
                    "trusted_networks needs the account whose identity those clients get",
                ));
            }
            // A PROXY header is believed only from known proxies: without
            // the list, any client could claim any address.
            if l.proxy_protocol && l.proxy_trusted.is_empty() {
                return Err(self.invalid(
                    &format!("{key}.proxy_trusted"),
                    "proxy_protocol = true needs the addresses of the proxies allowed to send the header",
                ));
            }
            if !l.proxy_protocol && !l.proxy_trusted.is_empty() {
                return Err(self.invalid(
                    &format!("{key}.proxy_trusted"),
                    "has no effect without proxy_protocol = true",
                ));
            }
        }
        for (i, a) in self.listeners.iter().enumerate() {
            if self.listeners[..i].iter().any(|b| b.bind == a.bind) {
                return Err(self.invalid(
                    &format!("listener[{i}].bind"),
                    format!("{} is bound twice", a.bind),
                ));
            }
        }
        if self.upstream.mode == UpstreamMode::Relay {
            let up = &self.upstream;
            if up.host.trim().is_empty() {
                return Err(self.invalid("upstream.host", "relay mode needs a host"));
            }
            let loopback = is_loopback_host(&up.host);
            if up.tls == UpstreamTls::None && !loopback {
                return Err(self.invalid(
                    "upstream.tls",
                    format!(
                        "\"none\" is only allowed for a loopback upstream, not {}",
                        up.host
                    ),
                ));
            }
            if !loopback
                && !up
                    .allowed_hosts
                    .iter()
                    .any(|h| h.eq_ignore_ascii_case(&up.host))
            {
                return Err(self.invalid(
                    "upstream.host",
                    format!(
                        "{} is not in upstream.allowed_hosts (data residency); add it there to allow it",
                        up.host
                    ),
                ));
            }
            if up.username.is_some() != up.password.is_some() {
                return Err(self.invalid(
                    "upstream.password",
                    "username and password must be given together",
                ));
            }
            if !loopback && up.username.is_none() {
                return Err(self.invalid(
                    "upstream.username",
                    "a non-loopback upstream needs credentials",
                ));
            }
            if let Some(ca) = &up.ca_file
                && let Err(e) = std::fs::metadata(ca)
            {
                return Err(self.invalid("upstream.ca_file", format!("{}: {e}", ca.display())));
            }
        }
        if self.delivery.retry_schedule.is_empty() {
            return Err(self.invalid("delivery.retry_schedule", "needs at least one interval"));
        }
        if let Some(short) = self
            .delivery
            .retry_schedule
            .iter()
            .find(|d| **d < Duration::from_secs(1))
        {
            return Err(self.invalid(
                "delivery.retry_schedule",
                format!(
                    "{} is too short: each interval must be at least 1s (a shorter one retries in a tight loop)",
                    humantime::format_duration(*short)
                ),
            ));
        }
        if self.delivery.max_connections == 0 {
            return Err(self.invalid("delivery.max_connections", "must be at least 1"));
        }
        if self.delivery.max_messages_per_second == 0 {
            return Err(self.invalid("delivery.max_messages_per_second", "must be at least 1"));
        }
        if self.limits.max_message_size < 1024 {
            return Err(self.invalid("limits.max_message_size", "must be at least 1KB"));
        }
        if self.upstream.max_message_size < 1024 {
            return Err(self.invalid("upstream.max_message_size", "must be at least 1KB"));
        }
        for (key, v) in [
            (
                "limits.max_recipients_per_message",
                self.limits.max_recipients_per_message,
            ),
            ("limits.max_connections", self.limits.max_connections),
            (
                "limits.max_connections_per_ip",
                self.limits.max_connections_per_ip,
            ),
            (
                "limits.max_unauthenticated_connections",
                self.limits.max_unauthenticated_connections,
            ),
        ] {
            if v == 0 {
                return Err(self.invalid(key, "must be at least 1"));
            }
        }
        for (key, d) in [
            (
                "limits.auth_failure_window",
                self.limits.auth_failure_window,
            ),
            ("limits.auth_ban_time", self.limits.auth_ban_time),
            ("timeouts.command", self.timeouts.command),
            ("timeouts.auth", self.timeouts.auth),
            ("timeouts.session", self.timeouts.session),
        ] {
            if d < Duration::from_secs(1) {
                return Err(self.invalid(key, "must be at least 1s"));
            }
        }
        if !plausible_recipient(&self.sender.system_address) {
            return Err(self.invalid(
                "sender.system_address",
                format!(
                    "{:?} is not an address like via@landkreis.example",
                    self.sender.system_address
                ),
            ));
        }
        for (i, k) in self.dkim.iter().enumerate() {
            let key = format!("dkim[{i}]");
            if k.domain.trim().is_empty() || !k.domain.contains('.') {
                return Err(self.invalid(
                    &format!("{key}.domain"),
                    "needs a domain like landkreis.example",
                ));
            }
            if k.selector.trim().is_empty()
                || !k
                    .selector
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return Err(self.invalid(
                    &format!("{key}.selector"),
                    "letters, digits, '-', '_' and '.' only",
                ));
            }
            if self.dkim[..i].iter().any(|o| {
                o.domain.eq_ignore_ascii_case(&k.domain)
                    && o.selector.eq_ignore_ascii_case(&k.selector)
            }) {
                return Err(self.invalid(
                    &format!("{key}.selector"),
                    format!("{} is listed twice for {}", k.selector, k.domain),
                ));
            }
        }
        for (i, h) in self.privacy.remove_headers.iter().enumerate() {
            let name = h.strip_suffix('*').unwrap_or(h);
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
                return Err(self.invalid(
                    &format!("privacy.remove_headers[{i}]"),
                    format!("{h:?} is not a header name"),
                ));
            }
        }
        self.validate_admin()?;
        crate::policy::rules::check(&self.rules, &self.categories, &self.attachments)
            .map_err(|(key, reason)| self.invalid(&key, reason))?;
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(self.invalid(
                "log.level",
                format!("not a valid filter: {}", self.log.level),
            ));
        }
        Ok(())
    }

    /// `[admin]`: basic auth together, and required off loopback.
    fn validate_admin(&self) -> Result<(), ConfigError> {
        let admin = &self.admin;
        if admin.username.is_some() != admin.password.is_some() {
            return Err(self.invalid(
                "admin.password",
                "username and password must be given together",
            ));
        }
        // Admin commands read unset ${VAR}s as empty (see load_for_admin):
        // only a config the gateway will run with must have a real password.
        if !LENIENT_ENV.with(|l| l.get()) && admin.password.as_deref().is_some_and(str::is_empty) {
            return Err(self.invalid("admin.password", "must not be empty"));
        }
        if admin.enabled && !admin.bind.ip().is_loopback() && admin.username.is_none() {
            return Err(self.invalid(
                "admin.bind",
                format!(
                    "{} is not a loopback address: set admin.username and admin.password \
                     (basic auth) or bind to 127.0.0.1",
                    admin.bind
                ),
            ));
        }
        if admin.upstream_check_interval < Duration::from_secs(1) {
            return Err(self.invalid("admin.upstream_check_interval", "must be at least 1s"));
        }
        Ok(())
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

impl fmt::Display for UpstreamMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UpstreamMode::Relay => "relay",
            UpstreamMode::Outbox => "outbox",
        })
    }
}

#[cfg(test)]
mod tests {
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
