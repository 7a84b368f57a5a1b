//! Metrics of delivery: attempts and their outcomes, the queue, the
//! upstream (latency, breaker), kept outcomes, egress rotation and domain
//! caps, the blocklist watch, the account pause.

use std::time::Duration;

use ::metrics::{counter, describe_counter, describe_gauge, gauge, histogram};

use crate::store::{QueueStats, now_ms};

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

/// Bucket bounds of [`UPSTREAM_LATENCY`]: a relay transaction takes tens of
/// milliseconds on a good day and the whole upstream timeout on a bad one.
pub(super) const LATENCY_BUCKETS: [f64; 11] =
    [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

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

pub(super) fn blocklist_register() {
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

pub const EGRESS_IN_ROTATION: &str = "schleuse_egress_in_rotation";
pub const EGRESS_MESSAGES: &str = "schleuse_egress_messages_total";
pub const DOMAIN_CAP_DEFERRED: &str = "schleuse_domain_cap_deferred_total";

pub(super) fn outbound_register() {
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

pub const ACCOUNT_PAUSED: &str = "schleuse_delivery_account_paused";
pub const ACCOUNT_PAUSES: &str = "schleuse_delivery_account_pauses_total";
pub const ACCOUNT_PROBES: &str = "schleuse_delivery_account_probes_total";
pub const REFUSALS_HELD: &str = "schleuse_delivery_refusals_held_total";

/// Every `cause` of [`ACCOUNT_PAUSES`] (`crate::delivery::account::detect::Cause`).
pub const ACCOUNT_PAUSE_CAUSES: [&str; 4] = ["connect", "system_sender", "pattern", "same_reply"];

/// The account pause (`crate::delivery::account`).
pub(super) fn account_pause_register() {
    describe_gauge!(
        ACCOUNT_PAUSED,
        "1 while delivery is paused because the upstream refuses the account ([delivery.account_pause])."
    );
    describe_counter!(
        ACCOUNT_PAUSES,
        "Pauses for an account-wide upstream refusal, by cause."
    );
    describe_counter!(
        ACCOUNT_PROBES,
        "Message-less probes of the upstream while paused, by result."
    );
    describe_counter!(
        REFUSALS_HELD,
        "Upstream refusals kept pending instead of bounced: account_wide (delivery paused) or unconfirmed (held once)."
    );
    gauge!(ACCOUNT_PAUSED).set(0.0);
    for c in ACCOUNT_PAUSE_CAUSES {
        counter!(ACCOUNT_PAUSES, "cause" => c).increment(0);
    }
    for r in ["accepted", "refused", "failed"] {
        counter!(ACCOUNT_PROBES, "result" => r).increment(0);
    }
    for w in ["account_wide", "unconfirmed"] {
        counter!(REFUSALS_HELD, "why" => w).increment(0);
    }
}
