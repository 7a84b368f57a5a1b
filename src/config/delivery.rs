//! `[delivery]`: the retry schedule, how long a message may wait, and the
//! caps on upstream connections and rates; the per-domain caps and the
//! account pause have their own files (`outbound`, `account_pause`).

use std::time::Duration;

use serde::Deserialize;

use super::account_pause::AccountPause;
use super::outbound::{DomainLimit, check_domain_limits};
use super::values::{duration, durations};

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

impl Delivery {
    pub(super) fn check(&self) -> Result<(), (String, String)> {
        check_domain_limits(&self.domain_limit)?;
        self.account_pause.check()?;
        if self.retry_schedule.is_empty() {
            return Err((
                "delivery.retry_schedule".into(),
                "needs at least one interval".into(),
            ));
        }
        if let Some(short) = self
            .retry_schedule
            .iter()
            .find(|d| **d < Duration::from_secs(1))
        {
            return Err((
                "delivery.retry_schedule".into(),
                format!(
                    "{} is too short: each interval must be at least 1s (a shorter one retries in a tight loop)",
                    humantime::format_duration(*short)
                ),
            ));
        }
        if self.max_connections == 0 {
            return Err((
                "delivery.max_connections".into(),
                "must be at least 1".into(),
            ));
        }
        if self.max_messages_per_second == 0 {
            return Err((
                "delivery.max_messages_per_second".into(),
                "must be at least 1".into(),
            ));
        }
        Ok(())
    }
}
