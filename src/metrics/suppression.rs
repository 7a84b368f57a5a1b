//! Metrics of the suppression list, the relay's webhook events and their
//! liveness alert.

use ::metrics::{counter, describe_counter, describe_gauge, gauge};

use super::session::MESSAGES_REJECTED;

pub const RCPT_SUPPRESSED: &str = "schleuse_rcpt_suppressed_total";
pub const SUPPRESSIONS_ADDED: &str = "schleuse_suppressions_added_total";
pub const RELAY_EVENTS: &str = "schleuse_relay_events_total";

/// Every `event` of [`RELAY_EVENTS`] (Mailjet's names; anything else is `other`).
pub const RELAY_EVENT_KINDS: [&str; 8] = [
    "sent", "open", "click", "bounce", "blocked", "spam", "unsub", "other",
];

pub(super) fn suppression_register() {
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

pub const RELAY_EVENTS_LAST_RECEIVED: &str =
    "schleuse_relay_events_last_received_timestamp_seconds";
pub const RELAY_EVENTS_SILENT: &str = "schleuse_relay_events_silent";

pub(super) fn liveness_register() {
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
