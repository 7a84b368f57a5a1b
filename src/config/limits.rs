//! `[limits]` and `[timeouts]`: how big, how many and how long, per
//! message, client, account and session.

use std::time::Duration;

use serde::Deserialize;

use super::values::{duration, size};

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

impl Limits {
    pub(super) fn check(&self) -> Result<(), (&'static str, String)> {
        if self.max_message_size < 1024 {
            return Err(("limits.max_message_size", "must be at least 1KB".into()));
        }
        for (key, v) in [
            (
                "limits.max_recipients_per_message",
                self.max_recipients_per_message,
            ),
            ("limits.max_connections", self.max_connections),
            ("limits.max_connections_per_ip", self.max_connections_per_ip),
            (
                "limits.max_unauthenticated_connections",
                self.max_unauthenticated_connections,
            ),
        ] {
            if v == 0 {
                return Err((key, "must be at least 1".into()));
            }
        }
        for (key, d) in [
            ("limits.auth_failure_window", self.auth_failure_window),
            ("limits.auth_ban_time", self.auth_ban_time),
        ] {
            if d < Duration::from_secs(1) {
                return Err((key, "must be at least 1s".into()));
            }
        }
        Ok(())
    }
}

impl Timeouts {
    pub(super) fn check(&self) -> Result<(), (&'static str, String)> {
        for (key, d) in [
            ("timeouts.command", self.command),
            ("timeouts.auth", self.auth),
            ("timeouts.session", self.session),
        ] {
            if d < Duration::from_secs(1) {
                return Err((key, "must be at least 1s".into()));
            }
        }
        Ok(())
    }
}
