//! Metrics (SPEC §10): the names, and one-line helpers for the call sites.
//!
//! Recorded through the `metrics` facade and rendered in the Prometheus text
//! format by `metrics-exporter-prometheus`, served on `/metrics` by
//! [`crate::admin::endpoint`]. The recorder is installed by `schleuse run`
//! when `[admin] enabled`; otherwise (admin commands, unit tests, endpoint
//! off) every helper here is a no-op.
//!
//! Conventions: every name starts with `schleuse_`, counters end in
//! `_total`, durations are seconds; label values are short and stable, so
//! dashboards and alerts survive wording changes of the SMTP replies.
//! Known label values start at 0, so `rate()` sees the first increment.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `smtp_sessions_total` | counter | |
//! | `smtp_tls_handshakes_total` | counter | `result`: ok, failed, timeout |
//! | `smtp_auth_failures_total` | counter | |
//! | `messages_accepted_total` | counter | |
//! | `messages_rejected_total` | counter | `reason`: see [`REJECT_REASONS`] |
//! | `delivery_attempts_total` | counter | `result`: delivered, deferred, bounced |
//! | `messages_relayed_total` | counter | |
//! | `messages_deferred_total` | counter | |
//! | `messages_bounced_total` | counter | |
//! | `dsn_sent_total` | counter | |
//! | `upstream_latency_seconds` | histogram | |
//! | `queue_messages` | gauge | `state`: queued, held |
//! | `queue_oldest_age_seconds` | gauge | |
//! | `upstream_breaker_open` | gauge | |
//! | `delivery_unrecorded_outcomes` | gauge | |
//! | `dkim_signatures_total` | counter | `result`: signed, unsigned |
//! | `blocklist_listed` | gauge | `list`, `target` (IP or domain) |
//! | `blocklist_checks_total` | counter | `result`: listed, clear, unknown |
//! | `rcpt_suppressed_total` | counter | |
//! | `suppressions_added_total` | counter | `source`: upstream, dsn, mailjet, admin |
//! | `relay_events_total` | counter | `event`: see [`RELAY_EVENT_KINDS`] |
//! | `auth_bans_total` | counter | |
//! | `auth_bans_active` | gauge | |
//! | `smtp_banned_connections_total` | counter | |
//! | `smtp_proxy_refused_total` | counter | `reason`: see [`PROXY_REFUSAL_REASONS`] |
//! | `anomaly_holds_total` | counter | `account` |
//! | `relay_events_last_received_timestamp_seconds` | gauge | |
//! | `relay_events_silent` | gauge | |
//! | `delivery_account_paused` | gauge | |
//! | `delivery_account_pauses_total` | counter | `cause`: connect, system_sender, pattern, same_reply |
//! | `delivery_account_probes_total` | counter | `result`: accepted, refused, failed |
//! | `delivery_refusals_held_total` | counter | `why`: account_wide, unconfirmed |
//!
//! The last four live in `crate::delivery::account`.

use std::sync::OnceLock;
use std::time::Duration;

use ::metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

use crate::reply::Reply;
use crate::store::{QueueStats, now_ms};

pub const SMTP_SESSIONS: &str = "schleuse_smtp_sessions_total";
pub const SMTP_TLS_HANDSHAKES: &str = "schleuse_smtp_tls_handshakes_total";
pub const SMTP_AUTH_FAILURES: &str = "schleuse_smtp_auth_failures_total";
pub const MESSAGES_ACCEPTED: &str = "schleuse_messages_accepted_total";
pub const MESSAGES_REJECTED: &str = "schleuse_messages_rejected_total";
pub const DELIVERY_ATTEMPTS: &str = "schleuse_delivery_attempts_total";
pub const MESSAGES_RELAYED: &str = "schleuse_messages_relayed_total";
pub const MESSAGES_DEFERRED: &str = "schleuse_messages_deferred_total";
pub const MESSAGES_BOUNCED: &str = "schleuse_messages_bounced_total";
pub const DSN_SENT: &str = "schleuse_dsn_sent_total";
pub const UPSTREAM_LATENCY: &str = "schleuse_upstream_latency_seconds";
pub const QUEUE_MESSAGES: &str = "schleuse_queue_messages";
pub const QUEUE_OLDEST_AGE: &str = "schleuse_queue_oldest_age_seconds";
pub const UPSTREAM_BREAKER_OPEN: &str = "schleuse_upstream_breaker_open";
pub const UNRECORDED_OUTCOMES: &str = "schleuse_delivery_unrecorded_outcomes";
pub const DKIM_SIGNATURES: &str = "schleuse_dkim_signatures_total";
pub const DOCUMENTS_STORED: &str = "schleuse_documents_stored_total";
pub const DOCUMENTS_PURGED: &str = "schleuse_documents_purged_total";
pub const LINK_DOWNLOADS: &str = "schleuse_link_downloads_total";
pub const OLDEST_RECORD_AGE: &str = "schleuse_oldest_record_age_seconds";
pub const AUTH_BANS: &str = "schleuse_auth_bans_total";
pub const AUTH_BANS_ACTIVE: &str = "schleuse_auth_bans_active";
pub const BANNED_CONNECTIONS: &str = "schleuse_smtp_banned_connections_total";
pub const PROXY_REFUSED: &str = "schleuse_smtp_proxy_refused_total";
pub const SESSIONS_CUT: &str = "schleuse_smtp_sessions_cut_total";
pub const ANOMALY_HOLDS: &str = "schleuse_anomaly_holds_total";

/// Every `outcome` of [`LINK_DOWNLOADS`] (`crate::links::DownloadOutcome`).
pub const DOWNLOAD_OUTCOMES: [&str; 4] = ["downloaded", "wrong_password", "rate_limited", "gone"];

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

/// Bucket bounds of [`UPSTREAM_LATENCY`]: a relay transaction takes tens of
/// milliseconds on a good day and the whole upstream timeout on a bad one.
const LATENCY_BUCKETS: [f64; 11] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

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

/// The outcome of one delivery attempt of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// Every recipient is done and none failed.
    Delivered,
    /// Some recipient is still pending.
    Deferred,
    /// Nothing is pending and some recipient failed.
    Bounced,
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder (once; later calls return the same
/// handle) and registers every metric at zero.
pub fn install() -> Result<PrometheusHandle, BuildError> {
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(UPSTREAM_LATENCY.into()), &LATENCY_BUCKETS)?
        .install_recorder()?;
    describe();
    zero();
    blocklist_register();
    suppression_register();
    outbound_register();
    liveness_register();
    crate::delivery::account::register_metrics();
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// The installed recorder's handle, if any.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE.get()
}

fn describe() {
    describe_counter!(
        SMTP_SESSIONS,
        "SMTP connections accepted within the connection limits."
    );
    describe_counter!(
        SMTP_TLS_HANDSHAKES,
        "TLS handshakes (implicit TLS and STARTTLS) by result."
    );
    describe_counter!(
        SMTP_AUTH_FAILURES,
        "AUTH attempts with a wrong name or password."
    );
    describe_counter!(
        MESSAGES_ACCEPTED,
        "Messages stored durably and answered 250."
    );
    describe_counter!(
        MESSAGES_REJECTED,
        "Refusals of MAIL, RCPT (one per refused recipient) or the message, by reason."
    );
    describe_counter!(
        DELIVERY_ATTEMPTS,
        "Delivery attempts per message, by outcome."
    );
    describe_counter!(
        MESSAGES_RELAYED,
        "Messages delivered to every recipient (relayed, or written to the outbox)."
    );
    describe_counter!(
        MESSAGES_DEFERRED,
        "Messages whose first delivery attempt left recipients pending (once per message)."
    );
    describe_counter!(
        MESSAGES_BOUNCED,
        "Messages finished with at least one failed recipient."
    );
    describe_counter!(
        DSN_SENT,
        "Bounce notices (DSNs) queued for the envelope sender."
    );
    describe_histogram!(
        UPSTREAM_LATENCY,
        ::metrics::Unit::Seconds,
        "Duration of one relay transaction (MAIL to the end of DATA) with the upstream."
    );
    describe_gauge!(QUEUE_MESSAGES, "Messages in the queue, by state.");
    describe_gauge!(
        QUEUE_OLDEST_AGE,
        "Age of the oldest queued (not held) message; 0 when none is queued."
    );
    describe_gauge!(
        UPSTREAM_BREAKER_OPEN,
        "1 while delivery is paused because the upstream was unusable."
    );
    describe_gauge!(
        UNRECORDED_OUTCOMES,
        "Delivery outcomes the store could not record yet; delivery is paused while > 0."
    );
    describe_counter!(
        DKIM_SIGNATURES,
        "Messages DKIM-signed, or passed on unsigned (no key for the From: domain)."
    );
    describe_counter!(
        DOCUMENTS_STORED,
        "Attachments taken out of messages and stored encrypted behind a link."
    );
    describe_counter!(
        DOCUMENTS_PURGED,
        "Stored documents deleted, by reason (expired, orphan)."
    );
    describe_gauge!(
        OLDEST_RECORD_AGE,
        "Age of the oldest delivery-log or download-log record held (retention)."
    );
    describe_counter!(
        AUTH_BANS,
        "Client IPs banned after repeated failed logins ([limits] auth_failures)."
    );
    describe_gauge!(AUTH_BANS_ACTIVE, "Client IPs banned right now.");
    describe_counter!(
        BANNED_CONNECTIONS,
        "Connections and AUTH attempts refused with 421 because the client IP is banned."
    );
    describe_counter!(
        SESSIONS_CUT,
        "SMTP sessions closed with 421 by a deadline ([timeouts] command, auth, session) or shed for a newcomer, by reason."
    );
    describe_counter!(
        PROXY_REFUSED,
        "Connections closed without a greeting on a proxy_protocol listener, by reason."
    );
    describe_counter!(
        ANOMALY_HOLDS,
        "Messages held because their account sent far above its baseline ([reputation] anomaly_hold)."
    );
    describe_counter!(
        LINK_DOWNLOADS,
        "Download attempts on the link service, by outcome."
    );
}

fn zero() {
    for c in [
        SMTP_SESSIONS,
        SMTP_AUTH_FAILURES,
        MESSAGES_ACCEPTED,
        MESSAGES_RELAYED,
        MESSAGES_DEFERRED,
        MESSAGES_BOUNCED,
        DSN_SENT,
        DOCUMENTS_STORED,
        AUTH_BANS,
        BANNED_CONNECTIONS,
    ] {
        counter!(c).increment(0);
    }
    gauge!(AUTH_BANS_ACTIVE).set(0.0);
    for o in DOWNLOAD_OUTCOMES {
        counter!(LINK_DOWNLOADS, "outcome" => o).increment(0);
    }
    for r in ["expired", "orphan"] {
        counter!(DOCUMENTS_PURGED, "reason" => r).increment(0);
    }
    for r in ["ok", "failed", "timeout"] {
        counter!(SMTP_TLS_HANDSHAKES, "result" => r).increment(0);
    }
    for r in PROXY_REFUSAL_REASONS {
        counter!(PROXY_REFUSED, "reason" => r).increment(0);
    }
    for r in CUT_REASONS {
        counter!(SESSIONS_CUT, "reason" => r).increment(0);
    }
    for r in REJECT_REASONS {
        counter!(MESSAGES_REJECTED, "reason" => r).increment(0);
    }
    for r in ["delivered", "deferred", "bounced"] {
        counter!(DELIVERY_ATTEMPTS, "result" => r).increment(0);
    }
    for r in ["signed", "unsigned"] {
        counter!(DKIM_SIGNATURES, "result" => r).increment(0);
    }
    queue(&QueueStats::default());
    breaker_open(false);
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

/// Documents sealed for one accepted message.
pub fn documents_stored(n: usize) {
    counter!(DOCUMENTS_STORED).increment(n as u64);
}

pub fn documents_purged(expired: usize, orphans: usize) {
    counter!(DOCUMENTS_PURGED, "reason" => "expired").increment(expired as u64);
    counter!(DOCUMENTS_PURGED, "reason" => "orphan").increment(orphans as u64);
}

/// The age of the oldest record held, from its write time (Unix ms).
pub fn oldest_record(at: Option<i64>) {
    let age_ms = at.map_or(0, |at| now_ms().saturating_sub(at).max(0));
    gauge!(OLDEST_RECORD_AGE).set(age_ms as f64 / 1000.0);
}

pub fn link_download(outcome: &'static str) {
    counter!(LINK_DOWNLOADS, "outcome" => outcome).increment(1);
}

/// One delivery attempt of a message that had `attempts` before it.
pub fn attempt(result: Attempt, attempts: u32) {
    let r = match result {
        Attempt::Delivered => {
            counter!(MESSAGES_RELAYED).increment(1);
            "delivered"
        }
        Attempt::Bounced => {
            counter!(MESSAGES_BOUNCED).increment(1);
            "bounced"
        }
        Attempt::Deferred => {
            if attempts == 0 {
                counter!(MESSAGES_DEFERRED).increment(1);
            }
            "deferred"
        }
    };
    counter!(DELIVERY_ATTEMPTS, "result" => r).increment(1);
}

pub fn dsn_sent() {
    counter!(DSN_SENT).increment(1);
}

pub fn upstream_latency(took: Duration) {
    histogram!(UPSTREAM_LATENCY).record(took.as_secs_f64());
}

/// Outcomes kept because the store refused them (`crate::delivery::unrecorded`).
pub fn unrecorded(n: usize) {
    gauge!(UNRECORDED_OUTCOMES).set(n as f64);
}

pub fn breaker_open(open: bool) {
    gauge!(UPSTREAM_BREAKER_OPEN).set(if open { 1.0 } else { 0.0 });
}

/// Whether an accepted message was DKIM-signed.
pub fn dkim(signed: bool) {
    let r = if signed { "signed" } else { "unsigned" };
    counter!(DKIM_SIGNATURES, "result" => r).increment(1);
}

/// Sets the queue gauges from a fresh [`QueueStats`].
pub fn queue(stats: &QueueStats) {
    gauge!(QUEUE_MESSAGES, "state" => "queued").set(stats.queued as f64);
    gauge!(QUEUE_MESSAGES, "state" => "held").set(stats.held as f64);
    let age_ms = stats
        .oldest_queued_at
        .map_or(0, |at| now_ms().saturating_sub(at).max(0));
    gauge!(QUEUE_OLDEST_AGE).set(age_ms as f64 / 1000.0);
}

pub const BLOCKLIST_LISTED: &str = "schleuse_blocklist_listed";
pub const BLOCKLIST_CHECKS: &str = "schleuse_blocklist_checks_total";

fn blocklist_register() {
    describe_gauge!(
        BLOCKLIST_LISTED,
        "1 while the egress IP or sending domain `target` is listed on blocklist `list`."
    );
    describe_counter!(
        BLOCKLIST_CHECKS,
        "Blocklist lookups by result (unknown: no usable answer, never counted as listed)."
    );
    for r in ["listed", "clear", "unknown"] {
        counter!(BLOCKLIST_CHECKS, "result" => r).increment(0);
    }
}

/// One blocklist lookup: `listed`, `clear` or `unknown`.
pub fn blocklist_check(result: &'static str) {
    counter!(BLOCKLIST_CHECKS, "result" => result).increment(1);
}

pub fn blocklist_listed(list: &str, target: &str, listed: bool) {
    gauge!(BLOCKLIST_LISTED, "list" => list.to_string(), "target" => target.to_string())
        .set(if listed { 1.0 } else { 0.0 });
}

pub const RCPT_SUPPRESSED: &str = "schleuse_rcpt_suppressed_total";
pub const SUPPRESSIONS_ADDED: &str = "schleuse_suppressions_added_total";
pub const RELAY_EVENTS: &str = "schleuse_relay_events_total";

/// Every `event` of [`RELAY_EVENTS`] (Mailjet's names; anything else is `other`).
pub const RELAY_EVENT_KINDS: [&str; 8] = [
    "sent", "open", "click", "bounce", "blocked", "spam", "unsub", "other",
];

fn suppression_register() {
    describe_counter!(
        RCPT_SUPPRESSED,
        "RCPT TO refused (550 5.1.1) because the address is on the suppression list."
    );
    describe_counter!(
        SUPPRESSIONS_ADDED,
        "Suppression-list entries added or renewed, by source."
    );
    describe_counter!(
        RELAY_EVENTS,
        "Delivery events received from the relay's webhook (new ones only), by event."
    );
    counter!(RCPT_SUPPRESSED).increment(0);
    counter!(MESSAGES_REJECTED, "reason" => "suppressed").increment(0);
    for s in ["upstream", "dsn", "mailjet", "admin"] {
        counter!(SUPPRESSIONS_ADDED, "source" => s).increment(0);
    }
    for e in RELAY_EVENT_KINDS {
        counter!(RELAY_EVENTS, "event" => e).increment(0);
    }
}

/// One RCPT refused for a suppressed address (also a rejection, reason
/// `suppressed`).
pub fn rcpt_suppressed() {
    counter!(RCPT_SUPPRESSED).increment(1);
    counter!(MESSAGES_REJECTED, "reason" => "suppressed").increment(1);
}

pub fn suppression_added(source: &'static str) {
    counter!(SUPPRESSIONS_ADDED, "source" => source).increment(1);
}

pub fn relay_event(kind: &str) {
    let kind = RELAY_EVENT_KINDS
        .iter()
        .find(|k| **k == kind)
        .copied()
        .unwrap_or("other");
    counter!(RELAY_EVENTS, "event" => kind).increment(1);
}

pub const EGRESS_IN_ROTATION: &str = "schleuse_egress_in_rotation";
pub const EGRESS_MESSAGES: &str = "schleuse_egress_messages_total";
pub const DOMAIN_CAP_DEFERRED: &str = "schleuse_domain_cap_deferred_total";

fn outbound_register() {
    describe_gauge!(
        EGRESS_IN_ROTATION,
        "1 while an egress source address is used for upstream connections, 0 while a blocklist listing keeps it out."
    );
    describe_counter!(
        EGRESS_MESSAGES,
        "Messages handed to the upstream, by egress source address."
    );
    describe_counter!(
        DOMAIN_CAP_DEFERRED,
        "Recipients held back by a per-domain rate cap ([[delivery.domain_limit]])."
    );
    counter!(DOMAIN_CAP_DEFERRED).increment(0);
}

pub fn egress_in_rotation(address: std::net::IpAddr, yes: bool) {
    gauge!(EGRESS_IN_ROTATION, "address" => address.to_string()).set(if yes { 1.0 } else { 0.0 });
}

pub fn egress_message(address: std::net::IpAddr) {
    counter!(EGRESS_MESSAGES, "address" => address.to_string()).increment(1);
}

pub fn domain_cap_deferred(n: usize) {
    counter!(DOMAIN_CAP_DEFERRED).increment(n as u64);
}

pub const RELAY_EVENTS_LAST_RECEIVED: &str =
    "schleuse_relay_events_last_received_timestamp_seconds";
pub const RELAY_EVENTS_SILENT: &str = "schleuse_relay_events_silent";

fn liveness_register() {
    describe_gauge!(
        RELAY_EVENTS_LAST_RECEIVED,
        "When the newest Mailjet event held by the store arrived (Unix time; 0: none)."
    );
    describe_gauge!(
        RELAY_EVENTS_SILENT,
        "1 while relayed mail has produced no Mailjet event for [suppression] webhook_silence_alert."
    );
    gauge!(RELAY_EVENTS_SILENT).set(0.0);
}

/// The newest relay event the store holds (`crate::suppression::liveness`).
pub fn relay_events_last_received(at_ms: Option<i64>) {
    gauge!(RELAY_EVENTS_LAST_RECEIVED).set(at_ms.unwrap_or(0) as f64 / 1000.0);
}

/// The webhook liveness alert (`crate::suppression::liveness`).
pub fn relay_events_silent(silent: bool) {
    gauge!(RELAY_EVENTS_SILENT).set(if silent { 1.0 } else { 0.0 });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let counters = [
            SMTP_SESSIONS,
            SMTP_TLS_HANDSHAKES,
            SMTP_AUTH_FAILURES,
            MESSAGES_ACCEPTED,
            MESSAGES_REJECTED,
            DELIVERY_ATTEMPTS,
            MESSAGES_RELAYED,
            MESSAGES_DEFERRED,
            MESSAGES_BOUNCED,
            DSN_SENT,
            DKIM_SIGNATURES,
            DOCUMENTS_STORED,
            DOCUMENTS_PURGED,
            LINK_DOWNLOADS,
            BLOCKLIST_CHECKS,
            AUTH_BANS,
            BANNED_CONNECTIONS,
            PROXY_REFUSED,
        ];
        for name in counters {
            assert!(
                name.starts_with("schleuse_") && name.ends_with("_total"),
                "{name}"
            );
        }
        for name in [
            UPSTREAM_LATENCY,
            QUEUE_MESSAGES,
            QUEUE_OLDEST_AGE,
            UPSTREAM_BREAKER_OPEN,
            UNRECORDED_OUTCOMES,
            OLDEST_RECORD_AGE,
            BLOCKLIST_LISTED,
            AUTH_BANS_ACTIVE,
            RELAY_EVENTS_LAST_RECEIVED,
            RELAY_EVENTS_SILENT,
        ] {
            assert!(
                name.starts_with("schleuse_") && !name.ends_with("_total"),
                "{name}"
            );
        }
    }
}
