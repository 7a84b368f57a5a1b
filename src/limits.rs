//! Limits and AUTH bans (SPEC §5, §6): per client IP, per account, and
//! after repeated failed logins.
//!
//! Config keys (`[limits]`): `ip_messages_per_minute`,
//! `account_messages_per_hour`, `account_messages_per_day`,
//! `account_recipients_per_day`, `auth_failures`, `auth_failure_window`,
//! `auth_ban_time`; an account entry may override the account quotas with
//! `messages_per_hour`, `messages_per_day` and `recipients_per_day`. A
//! limit of 0 is no limit. Every refusal names the limit and carries a
//! retry hint (`try again after <UTC time> (in N minutes)`).
//!
//! | limit | checked at | answer | state |
//! |---|---|---|---|
//! | messages per IP and minute | MAIL | `450 4.7.1` | memory (governor) |
//! | messages per account and hour / day | MAIL | `450 4.7.1` | store |
//! | recipients per account and day | RCPT | `450 4.7.1` | store |
//! | AUTH failures per IP | greeting, AUTH | `421 4.7.0`, closes | memory + store |
//!
//! - **Per IP, messages per minute**: a keyed GCRA limiter from `governor`
//!   (burst N, then one more every 60/N s), taken when a MAIL is otherwise
//!   accepted. It lives in memory only: a restart forgets at most a minute.
//! - **Per account**: fixed windows (the clock hour, the UTC day) kept as
//!   counter rows in the store (`limit_counters`, key
//!   `acct-msg-h:<account>:<window number>` and likewise `acct-msg-d`,
//!   `acct-rcpt-d`). An accepted message adds to them in the same
//!   transaction that stores it, so every accepted message counts, across
//!   restarts. A refusal's retry time is the end of the window. Fixed
//!   windows have the usual boundary effect: up to twice the limit can pass
//!   around a window boundary (N at 10:59, N more at 11:00). The check at
//!   MAIL/RCPT reads the counters before the message is committed, so
//!   sessions submitting at the same moment may together pass a limit by at
//!   most their number. Only messages accepted with `250` count (refused
//!   ones, bounce reports taken in and the gateway's own notices do not).
//! - **AUTH bans**: failed logins per IP are counted in memory within
//!   `auth_failure_window`; the `auth_failures`-th one (still answered
//!   `535` after the failure delay) bans the IP for `auth_ban_time`. The ban
//!   is a row in the store (`bans`), so it survives a restart; a banned
//!   client gets `421 4.7.0` at the greeting (and at AUTH on an open
//!   session) and is disconnected. Failures short of a ban are forgotten on
//!   restart. Bans are logged (warn) and counted in the metrics; ended
//!   windows and bans are purged in the retention round.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, UNIX_EPOCH};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::accounts::Account;
use crate::config::Limits;
use crate::reply::Reply;
// The counter keys are the store's (the anomaly hold reads them too).
use crate::store::limits::Counter;
pub use crate::store::limits::Kind;

/// The in-memory part: the per-IP message rate and the failed logins.
#[derive(Default)]
pub struct State {
    /// The limiter and the rate it was built for (rebuilt on a change).
    ip_rate: Mutex<Option<(u32, Arc<DefaultKeyedRateLimiter<IpAddr>>)>>,
    auth_failures: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
    /// Alerts raised and baselines read by the anomaly hold.
    pub anomaly: crate::anomaly::State,
}

impl State {
    /// Takes one message from `ip`'s per-minute budget, or tells how long
    /// until there is one.
    pub fn ip_message(&self, limits: &Limits, ip: IpAddr) -> Result<(), Duration> {
        let Some(per_minute) = NonZeroU32::new(limits.ip_messages_per_minute) else {
            return Ok(());
        };
        let limiter = {
            let mut slot = self.ip_rate.lock().unwrap_or_else(PoisonError::into_inner);
            match &*slot {
                Some((n, l)) if *n == per_minute.get() => Arc::clone(l),
                _ => {
                    let l = Arc::new(RateLimiter::keyed(Quota::per_minute(per_minute)));
                    *slot = Some((per_minute.get(), Arc::clone(&l)));
                    l
                }
            }
        };
        limiter
            .check_key(&ip)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Records a failed login; `true` when it is the one that bans `ip`.
    pub fn auth_failed(&self, limits: &Limits, ip: IpAddr) -> bool {
        if limits.auth_failures == 0 {
            return false;
        }
        let now = Instant::now();
        let mut map = self
            .auth_failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let times = map.entry(ip).or_default();
        times.retain(|t| now.duration_since(*t) < limits.auth_failure_window);
        times.push_back(now);
        if times.len() >= limits.auth_failures as usize {
            map.remove(&ip);
            return true;
        }
        false
    }

    /// Forgets failures outside the window and idle limiter keys.
    pub fn housekeeping(&self, limits: &Limits) {
        let now = Instant::now();
        self.auth_failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, times| {
                times.retain(|t| now.duration_since(*t) < limits.auth_failure_window);
                !times.is_empty()
            });
        if let Some((_, l)) = &*self.ip_rate.lock().unwrap_or_else(PoisonError::into_inner) {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

/// An account's quotas after its own overrides (0: no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    pub messages_per_hour: u32,
    pub messages_per_day: u32,
    pub recipients_per_day: u32,
}

impl Quotas {
    pub fn of(limits: &Limits, account: &Account) -> Quotas {
        Quotas {
            messages_per_hour: account
                .messages_per_hour
                .unwrap_or(limits.account_messages_per_hour),
            messages_per_day: account
                .messages_per_day
                .unwrap_or(limits.account_messages_per_day),
            recipients_per_day: account
                .recipients_per_day
                .unwrap_or(limits.account_recipients_per_day),
        }
    }
}

/// What an accepted message with `recipients` adds to the account's counters.
pub fn counters(account: &str, recipients: usize, now: i64) -> Vec<Counter> {
    [
        (Kind::MessagesHour, 1),
        (Kind::MessagesDay, 1),
        (Kind::RecipientsDay, recipients as u64),
    ]
    .into_iter()
    .map(|(kind, add)| {
        let (key, until) = kind.key(account, now);
        Counter { key, until, add }
    })
    .collect()
}

/// `2025-03-01T11:00:00Z (in 12 minutes)`.
pub fn retry_hint(at_ms: i64, now_ms: i64) -> String {
    // Rounded up to whole seconds, so the time named is never too early.
    let at = UNIX_EPOCH + Duration::from_secs((at_ms.max(0) as u64).div_ceil(1000));
    let secs = ((at_ms - now_ms).max(0) as u64).div_ceil(1000);
    format!(
        "{} (in {})",
        humantime::format_rfc3339_seconds(at),
        in_words(secs)
    )
}

fn in_words(secs: u64) -> String {
    let plural = |n: u64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    match secs {
        s if s < 120 => plural(s.max(1), "second"),
        s if s < 2 * 3600 => plural(s.div_ceil(60), "minute"),
        s => plural(s.div_ceil(3600), "hour"),
    }
}

/// `421 4.7.0` for a banned client; the connection closes after it.
pub fn banned_reply(ip: IpAddr, until: i64, now: i64) -> Reply {
    Reply::owned(
        421,
        [4, 7, 0],
        format!(
            "Too many failed logins from {ip}; try again after {}",
            retry_hint(until, now)
        ),
    )
}

/// `450 4.7.1` for a client over its per-minute message rate.
pub fn ip_rate_reply(ip: IpAddr, per_minute: u32, wait: Duration, now: i64) -> Reply {
    let at = now + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX / 2);
    Reply::owned(
        450,
        [4, 7, 1],
        format!(
            "Too many messages from {ip} (limit {per_minute} per minute); try again after {}",
            retry_hint(at, now)
        ),
    )
}

/// `450 4.7.1` for an account at one of its quotas.
pub fn quota_reply(account: &str, kind: Kind, limit: u32, now: i64) -> Reply {
    let (_, until) = kind.key(account, now);
    let what = match kind {
        Kind::MessagesHour => "hourly limit of {} messages",
        Kind::MessagesDay => "daily limit of {} messages",
        Kind::RecipientsDay => "daily limit of {} recipients",
    }
    .replace("{}", &limit.to_string());
    Reply::owned(
        450,
        [4, 7, 1],
        format!(
            "Account {account} has reached its {what}; try again after {}",
            retry_hint(until, now)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR_MS: i64 = 3_600_000;

    #[test]
    fn counters_of_a_message() {
        let now = 10 * HOUR_MS + 5;
        let c = counters("via", 3, now);
        assert_eq!(c.len(), 3);
        assert_eq!(c[2].add, 3);
    }

    #[test]
    fn hints_name_a_time_and_a_span() {
        assert_eq!(
            retry_hint(61_000, 1_000),
            "1970-01-01T00:01:01Z (in 60 seconds)"
        );
        assert_eq!(
            retry_hint(HOUR_MS, 0),
            "1970-01-01T01:00:00Z (in 60 minutes)"
        );
        assert_eq!(
            retry_hint(1_500, 1_000),
            "1970-01-01T00:00:02Z (in 1 second)"
        );
        let r = quota_reply("via", Kind::MessagesHour, 3, 1_000);
        assert_eq!((r.code, r.esc), (450, [4, 7, 1]));
        assert!(r.text.contains("hourly limit of 3 messages"), "{}", r.text);
    }

    #[test]
    fn accounts_override_the_defaults() {
        let limits = Limits::default();
        let account = Account {
            messages_per_hour: Some(7),
            ..Account::default()
        };
        let q = Quotas::of(&limits, &account);
        assert_eq!(q.messages_per_hour, 7);
        assert_eq!(q.messages_per_day, limits.account_messages_per_day);
    }

    #[test]
    fn auth_failures_ban_at_the_configured_count() {
        let limits = Limits {
            auth_failures: 3,
            ..Limits::default()
        };
        let state = State::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(!state.auth_failed(&limits, ip));
        assert!(!state.auth_failed(&limits, ip));
        assert!(state.auth_failed(&limits, ip));
        assert!(!state.auth_failed(&limits, ip), "counting starts over");
    }

    #[test]
    fn ip_rate_allows_the_burst_then_refuses() {
        let limits = Limits {
            ip_messages_per_minute: 2,
            ..Limits::default()
        };
        let state = State::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(state.ip_message(&limits, ip).is_ok());
        assert!(state.ip_message(&limits, ip).is_ok());
        let wait = state.ip_message(&limits, ip).unwrap_err();
        assert!(wait > Duration::from_secs(20) && wait <= Duration::from_secs(30));
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(state.ip_message(&limits, other).is_ok());
    }
}
