//! Limit counters and AUTH bans as the store keeps them (SPEC §6); the
//! policy lives in `crate::limits`.

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
