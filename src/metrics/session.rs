//! Metrics of the SMTP side: sessions, TLS, AUTH and bans, the PROXY
//! header, accepted and refused messages, DKIM, the anomaly hold.

use ::metrics::{counter, gauge};

use crate::reply::Reply;

pub const SMTP_SESSIONS: &str = "schleuse_smtp_sessions_total";
pub const SMTP_TLS_HANDSHAKES: &str = "schleuse_smtp_tls_handshakes_total";
pub const SMTP_AUTH_FAILURES: &str = "schleuse_smtp_auth_failures_total";
pub const MESSAGES_ACCEPTED: &str = "schleuse_messages_accepted_total";
pub const MESSAGES_REJECTED: &str = "schleuse_messages_rejected_total";
pub const DKIM_SIGNATURES: &str = "schleuse_dkim_signatures_total";
pub const AUTH_BANS: &str = "schleuse_auth_bans_total";
pub const AUTH_BANS_ACTIVE: &str = "schleuse_auth_bans_active";
pub const BANNED_CONNECTIONS: &str = "schleuse_smtp_banned_connections_total";
pub const PROXY_REFUSED: &str = "schleuse_smtp_proxy_refused_total";
pub const SESSIONS_CUT: &str = "schleuse_smtp_sessions_cut_total";
pub const ANOMALY_HOLDS: &str = "schleuse_anomaly_holds_total";

/// Every `reason` of [`MESSAGES_REJECTED`]; see [`Reply::rejection_reason`].
pub const REJECT_REASONS: [&str; 15] = [
    "auth_required",
    "sender_denied",
    "from_denied",
    "too_big",
    "too_many_rcpts",
    "bare_line_ending",
    "no_from",
    "storage",
    "dkim",
    "documents",
    "pii",
    "rule",
    "ip_rate",
    "account_quota",
    "other",
];

/// Every `reason` of [`PROXY_REFUSED`] (see [`ProxyRefusal`]).
pub const PROXY_REFUSAL_REASONS: [&str; 3] = ["untrusted", "invalid", "timeout"];

/// The `reason` labels of [`SESSIONS_CUT`].
pub const CUT_REASONS: [&str; 4] = [
    "command_timeout",
    "auth_deadline",
    "session_deadline",
    "shed",
];

/// The result of a TLS handshake, for [`SMTP_TLS_HANDSHAKES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    Ok,
    Failed,
    Timeout,
}

/// Why a `proxy_protocol` listener closed a connection, for [`PROXY_REFUSED`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyRefusal {
    /// The socket peer is not in `proxy_trusted`.
    Untrusted,
    /// Its first bytes are no acceptable PROXY v2 header.
    Invalid,
    /// The header did not arrive within `timeouts.tls_handshake`.
    Timeout,
}

pub fn session() {
    counter!(SMTP_SESSIONS).increment(1);
}

pub fn tls_handshake(result: Handshake) {
    let r = match result {
        Handshake::Ok => "ok",
        Handshake::Failed => "failed",
        Handshake::Timeout => "timeout",
    };
    counter!(SMTP_TLS_HANDSHAKES, "result" => r).increment(1);
}

pub fn auth_failure() {
    counter!(SMTP_AUTH_FAILURES).increment(1);
}

/// A client IP banned after repeated failed logins.
pub fn auth_ban() {
    counter!(AUTH_BANS).increment(1);
}

pub fn bans_active(n: usize) {
    gauge!(AUTH_BANS_ACTIVE).set(n as f64);
}

/// A message held by the anomaly hold (`crate::anomaly`).
pub fn anomaly_hold(account: &str) {
    counter!(ANOMALY_HOLDS, "account" => account.to_string()).increment(1);
}

/// A connection (or AUTH) refused because its IP is banned.
pub fn banned_connection() {
    counter!(BANNED_CONNECTIONS).increment(1);
}

/// A session closed by a deadline or shed (one of [`CUT_REASONS`]).
pub fn session_cut(reason: &'static str) {
    counter!(SESSIONS_CUT, "reason" => reason).increment(1);
}

/// A connection refused on a `proxy_protocol` listener.
pub fn proxy_refused(reason: ProxyRefusal) {
    let r = match reason {
        ProxyRefusal::Untrusted => "untrusted",
        ProxyRefusal::Invalid => "invalid",
        ProxyRefusal::Timeout => "timeout",
    };
    counter!(PROXY_REFUSED, "reason" => r).increment(1);
}

pub fn accepted() {
    counter!(MESSAGES_ACCEPTED).increment(1);
}

/// One refusal; the reason label comes from the reply.
pub fn rejected(reply: &Reply) {
    counter!(MESSAGES_REJECTED, "reason" => reply.rejection_reason()).increment(1);
}

/// One refusal by a stage whose replies vary: `documents` (attachments
/// refused, signed mail that would need changing, a bad control header, the
/// document store), `pii` (personal data in the text) or `rule` (a relay
/// rule or category switch).
pub fn rejected_stage(stage: &'static str) {
    counter!(MESSAGES_REJECTED, "reason" => stage).increment(1);
}

/// Whether an accepted message was DKIM-signed.
pub fn dkim(signed: bool) {
    let r = if signed { "signed" } else { "unsigned" };
    counter!(DKIM_SIGNATURES, "result" => r).increment(1);
}
