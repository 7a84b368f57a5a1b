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
//! The names and helpers live by area: `session`, `delivery` (with the
//! blocklist watch and the account pause), `links`, `suppression`;
//! everything is re-exported here, so call sites name `crate::metrics::…`.
//! A leaf: it imports nothing above the store.

use std::sync::OnceLock;

use ::metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

use crate::store::QueueStats;

mod delivery;
mod links;
mod session;
mod suppression;

pub use delivery::*;
pub use links::*;
pub use session::*;
pub use suppression::*;

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
    account_pause_register();
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
