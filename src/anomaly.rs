//! Anomaly hold (SPEC §6): an account whose volume jumps far above its own
//! recent baseline gets its further mail held (accepted with `250`, kept in
//! the queue, not delivered) until an admin runs `schleuse queue release`.
//!
//! Config (`[reputation]`): `anomaly_hold`, `anomaly_factor`,
//! `anomaly_window`, `anomaly_baseline`, `anomaly_min_messages`.
//!
//! - **Data**: the account's hourly message counters (`acct-msg-h:<account>:
//!   <hour#>`, `crate::limits`), written with every accepted message. The
//!   retention round keeps the ended hourly buckets for `anomaly_baseline`
//!   while the hold is on.
//! - **Whole hours**: both periods are rounded up to whole clock hours
//!   (`anomaly_window = "30m"` is the current clock hour). The current
//!   window is the last W hour buckets, the current hour included; the
//!   baseline is the B − W hours before it, as an average per window:
//!   `sum × W / (B − W)`. Hours before the account's first message count as
//!   0 (a new account has a low baseline; `anomaly_min_messages` guards it).
//! - **Rule**: with this message counted, held when
//!   `current ≥ anomaly_min_messages` and `current > factor × max(baseline, 1)`.
//! - **Alert**: one `error` log line per account and window (in memory: a
//!   restart may raise it once more), and `schleuse_anomaly_holds_total{account}`
//!   counts every held message.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use crate::config::Reputation;
use crate::store::Store;
use crate::store::limits::Kind;

const HOUR_MS: i64 = 3_600_000;

/// The average per window of `past_sum` messages over `baseline_h − window_h` hours.
pub fn baseline(past_sum: u64, window_h: i64, baseline_h: i64) -> f64 {
    let span = (baseline_h - window_h).max(1);
    past_sum as f64 * window_h as f64 / span as f64
}

/// The hold rule.
pub fn exceeds(current: u64, baseline: f64, factor: f64, min_messages: u64) -> bool {
    current >= min_messages && current as f64 > factor * baseline.max(1.0)
}

/// The hour numbers of the current window and of the baseline before it.
fn periods(now: i64, window_h: i64, baseline_h: i64) -> (Vec<i64>, Vec<i64>) {
    let hour = now.div_euclid(HOUR_MS);
    let first = hour - window_h + 1;
    let current = (first..=hour).collect();
    let past = (hour - baseline_h + 1..first).collect();
    (current, past)
}

fn key(account: &str, hour: i64) -> String {
    Kind::MessagesHour.key(account, hour * HOUR_MS).0
}

/// Alerts raised and baselines read (both per account, in memory).
#[derive(Default)]
pub struct State {
    /// Account → the hour of its last alert.
    alerted: Mutex<HashMap<String, i64>>,
    /// Account → (hour, W, B, sum of the baseline buckets): ended hours do
    /// not change, so they are read once per hour.
    past: Mutex<HashMap<String, (i64, i64, i64, u64)>>,
}

/// A held message's reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Anomaly {
    pub current: u64,
    pub baseline: f64,
    pub window_h: i64,
}

impl Anomaly {
    /// `anomaly: 60 in 1h vs baseline 2.5`.
    pub fn note(&self) -> String {
        format!(
            "anomaly: {} in {}h vs baseline {:.1}",
            self.current, self.window_h, self.baseline
        )
    }
}

impl State {
    /// Whether `account`'s message at `now` (not yet counted) is held; logs
    /// the alert the first time in a window. A store error holds nothing.
    pub async fn check(
        &self,
        store: &dyn Store,
        cfg: &Reputation,
        account: &str,
        now: i64,
    ) -> Option<Anomaly> {
        if !cfg.anomaly_hold {
            return None;
        }
        let (w, b) = cfg.anomaly_hours();
        let hour = now.div_euclid(HOUR_MS);
        let (current_h, past_h) = periods(now, w, b);
        // Keys name their window, so ended ones are read too (`now` = MIN).
        let current: u64 = match store
            .counters(
                current_h.iter().map(|h| key(account, *h)).collect(),
                i64::MIN,
            )
            .await
        {
            Ok(c) => c.iter().sum::<u64>() + 1,
            Err(e) => {
                tracing::error!(error = %e, "anomaly check: cannot read the account's counters");
                return None;
            }
        };
        if current < cfg.anomaly_min_messages {
            return None;
        }
        let cached = self
            .past
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(account)
            .copied()
            .filter(|&(h, cw, cb, _)| (h, cw, cb) == (hour, w, b));
        let past_sum = match cached {
            Some((.., sum)) => sum,
            None => match store
                .counters(past_h.iter().map(|h| key(account, *h)).collect(), i64::MIN)
                .await
            {
                Ok(c) => {
                    let sum = c.iter().sum();
                    self.past
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(account.to_string(), (hour, w, b, sum));
                    sum
                }
                Err(e) => {
                    tracing::error!(error = %e, "anomaly check: cannot read the account's counters");
                    return None;
                }
            },
        };
        let base = baseline(past_sum, w, b);
        if !exceeds(current, base, cfg.anomaly_factor, cfg.anomaly_min_messages) {
            return None;
        }
        let found = Anomaly {
            current,
            baseline: base,
            window_h: w,
        };
        crate::metrics::anomaly_hold(account);
        let first = {
            let mut alerted = self.alerted.lock().unwrap_or_else(PoisonError::into_inner);
            match alerted.get(account) {
                Some(&at) if hour < at + w => false,
                _ => {
                    alerted.insert(account.to_string(), hour);
                    true
                }
            }
        };
        if first {
            tracing::error!(
                account,
                current,
                baseline = format!("{base:.1}"),
                window_hours = w,
                factor = cfg.anomaly_factor,
                "anomaly hold: account sends far above its baseline; its further mail is held \
                 until released (schleuse queue release)"
            );
        }
        Some(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baseline_is_the_average_per_window_before_the_current_one() {
        // 1h window, 7d baseline: 167 past hours.
        assert!((baseline(334, 1, 168) - 2.0).abs() < 1e-9);
        // 2h window, 10h baseline: 8 past hours with 40 messages → 10 per 2h.
        assert!((baseline(40, 2, 10) - 10.0).abs() < 1e-9);
        assert_eq!(baseline(0, 1, 168), 0.0);
        let (current, past) = periods(10 * HOUR_MS + 5, 2, 5);
        assert_eq!(current, vec![9, 10]);
        assert_eq!(past, vec![6, 7, 8]);
    }

    #[test]
    fn rule() {
        // A quiet account: 10 is 5× its baseline of 2, but under the minimum.
        assert!(!exceeds(10, 2.0, 5.0, 50));
        assert!(exceeds(60, 2.0, 5.0, 50));
        assert!(!exceeds(60, 20.0, 5.0, 50));
        // No history: max(baseline, 1).
        assert!(exceeds(5, 0.0, 2.0, 5));
        assert!(!exceeds(4, 0.0, 2.0, 5));
        assert!(!exceeds(2, 0.0, 2.0, 1));
        assert!(exceeds(3, 0.0, 2.0, 1));
    }
}
