//! Limit counters and AUTH bans as the store keeps them (SPEC §6), and the
//! counter keys ([`Kind`]), which `crate::limits` writes and
//! `crate::anomaly` reads; the policy lives in `crate::limits`.

use serde::Serialize;

use super::{BoxFuture, StoreError};

/// One fixed-window counter to add to, committed with its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counter {
    /// e.g. `acct-msg-h:via:486521` (kind, account, window number).
    pub key: String,
    /// When the window ends (Unix milliseconds); the row is purged after.
    pub until: i64,
    pub add: u64,
}

/// A client IP refused at connect until `until` (Unix milliseconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ban {
    pub ip: String,
    pub created_at: i64,
    pub until: i64,
    pub reason: String,
}

/// Limits and AUTH bans (SPEC §6); see `crate::limits`.
pub trait LimitStore {
    /// The counts of fixed-window counters, in the order of `keys` (0 for
    /// none or an ended window).
    fn counters(
        &self,
        keys: Vec<String>,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<Vec<u64>, StoreError>>;

    /// Adds a ban (or lengthens an active one for the same IP).
    fn ban(&self, ban: Ban) -> BoxFuture<'_, Result<(), StoreError>>;

    /// The active ban of `ip`, if any.
    fn banned(&self, ip: &str, now_ms: i64) -> BoxFuture<'_, Result<Option<Ban>, StoreError>>;

    /// Active bans, longest-lasting first.
    fn bans(&self, now_ms: i64) -> BoxFuture<'_, Result<Vec<Ban>, StoreError>>;

    /// Lifts a ban; `false` if there was none.
    fn unban(&self, ip: &str) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// Deletes ended counter windows and bans; returns how many rows went.
    /// Hourly message counters are kept `keep_hourly_ms` after their end
    /// (the anomaly hold's baseline, `crate::anomaly`).
    fn purge_limits(
        &self,
        now_ms: i64,
        keep_hourly_ms: i64,
    ) -> BoxFuture<'_, Result<usize, StoreError>>;
}

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// A fixed window containing `now`: (its number, its end), both in ms.
fn window(now: i64, len: i64) -> (i64, i64) {
    let n = now.div_euclid(len);
    (n, (n + 1) * len)
}

/// Which counter: key prefix and window length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    MessagesHour,
    MessagesDay,
    RecipientsDay,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Kind::MessagesHour => "acct-msg-h",
            Kind::MessagesDay => "acct-msg-d",
            Kind::RecipientsDay => "acct-rcpt-d",
        }
    }

    fn len(self) -> i64 {
        match self {
            Kind::MessagesHour => HOUR_MS,
            Kind::MessagesDay | Kind::RecipientsDay => DAY_MS,
        }
    }

    /// The counter key for `account` at `now` and when its window ends.
    pub fn key(self, account: &str, now: i64) -> (String, i64) {
        let (n, until) = window(now, self.len());
        (format!("{}:{account}:{n}", self.prefix()), until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_and_keys() {
        let now = 10 * HOUR_MS + 5;
        assert_eq!(window(now, HOUR_MS), (10, 11 * HOUR_MS));
        assert_eq!(
            Kind::MessagesHour.key("via", now),
            ("acct-msg-h:via:10".to_string(), 11 * HOUR_MS)
        );
        assert_eq!(Kind::RecipientsDay.key("via", now).1, DAY_MS);
    }
}
