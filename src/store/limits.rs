//! Limit counters and AUTH bans as the store keeps them (SPEC §6); the
//! policy lives in `crate::limits`.

use serde::Serialize;

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
