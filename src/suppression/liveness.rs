//! Webhook liveness (SPEC §9): an alert when relayed mail stays unanswered.
//!
//! Mailjet takes nearly everything at SMTP time and reports bounces, blocks
//! and complaints later, by webhook ([`super::webhook`]). A webhook that
//! fails (a broken proxy, a changed password) is retried for 24 h and then
//! may be suspended, and Mailjet tells nobody: bounces would silently stop
//! reaching the county. So, in relay mode with `[suppression] webhook_path`
//! set, a small task asks the store about once a minute (more often for a
//! short window) whether a message was delivered more than
//! `webhook_silence_alert` (default 6 h, `"0s"` off) ago with no event
//! received since. It asks the store, not this process, because with
//! several instances an event may reach another instance than the one
//! that relayed.
//!
//! The alert is the gauge `schleuse_relay_events_silent` (0/1), next to
//! `schleuse_relay_events_last_received_timestamp_seconds`, and a warning in
//! the log when it starts, once an hour while it lasts, and a line when
//! events arrive again.
//!
//! Until the first event ever, only mail relayed since this process started
//! counts: deliveries written to the outbox before going live, or relayed
//! before the webhook was set up, say nothing about the webhook.

use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use crate::config::{Config, UpstreamMode};
use crate::state::Shared;
use crate::store::now_ms;
use crate::store::suppression::EventSilence;

/// How often a lasting silence is logged again.
const REMIND_EVERY: Duration = Duration::from_secs(3600);

/// Whether the alert applies under this configuration, and with which window.
fn window(config: &Config) -> Option<Duration> {
    let w = config.suppression.webhook_silence_alert;
    (config.upstream.mode == UpstreamMode::Relay
        && config.suppression.webhook_path.is_some()
        && !w.is_zero())
    .then_some(w)
}

/// Between two checks: a minute, or a quarter of a short window so the
/// alert is not late by much more than the window itself.
fn check_interval(window: Option<Duration>) -> Duration {
    window.map_or(Duration::from_secs(60), |w| {
        (w / 4).clamp(Duration::from_secs(1), Duration::from_secs(60))
    })
}

/// How long mail has gone unanswered, if longer than `window`.
pub fn silent_for(s: &EventSilence, now_ms: i64, window: Duration) -> Option<Duration> {
    let since = s.unanswered_since?;
    let age = Duration::from_millis(u64::try_from(now_ms.saturating_sub(since)).unwrap_or(0));
    (age > window).then_some(age)
}

/// What the log should say after a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tell {
    Started,
    StillSilent,
    Cleared,
}

/// The alert's state in this process: it logs on changes, and reminds
/// hourly instead of on every check.
#[derive(Debug, Default)]
pub struct Alarm {
    last_told: Option<Instant>,
}

impl Alarm {
    pub fn update(&mut self, silent: bool, now: Instant) -> Option<Tell> {
        match (self.last_told, silent) {
            (None, false) => None,
            (None, true) => {
                self.last_told = Some(now);
                Some(Tell::Started)
            }
            (Some(_), false) => {
                self.last_told = None;
                Some(Tell::Cleared)
            }
            (Some(told), true) if now.duration_since(told) >= REMIND_EVERY => {
                self.last_told = Some(now);
                Some(Tell::StillSilent)
            }
            (Some(_), true) => None,
        }
    }

    /// Switched off (reload): forget without announcing anything.
    fn reset(&mut self) {
        if self.last_told.take().is_some() {
            crate::metrics::relay_events_silent(false);
        }
    }
}

fn when(ms: Option<i64>) -> String {
    match ms.and_then(|ms| u64::try_from(ms).ok()) {
        Some(ms) => {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
        }
        None => "never".into(),
    }
}

/// One check: metrics always, the log when [`Alarm`] says so.
async fn check(shared: &Shared, alarm: &mut Alarm, window: Duration, started_ms: i64) {
    let silence = match shared.queue.store().event_silence(started_ms).await {
        Ok(s) => s,
        Err(e) => {
            // Nothing known: the alert stays as it was.
            tracing::warn!(error = %e, "webhook liveness: cannot read the store");
            return;
        }
    };
    let silent = silent_for(&silence, now_ms(), window);
    crate::metrics::relay_events_last_received(silence.last_event_at);
    crate::metrics::relay_events_silent(silent.is_some());
    tracing::debug!(silent = silent.is_some(), "webhook liveness checked");
    match alarm.update(silent.is_some(), Instant::now()) {
        Some(tell @ (Tell::Started | Tell::StillSilent)) => {
            let age = silent.unwrap_or_default();
            tracing::warn!(
                relayed_ago = %humantime::format_duration(Duration::from_secs(age.as_secs())),
                last_event = %when(silence.last_event_at),
                window = %humantime::format_duration(window),
                again = tell == Tell::StillSilent,
                "webhook silent: relayed mail has produced no Mailjet event; check the \
                 event webhook at Mailjet (it is suspended after 24 h of failures)"
            );
        }
        Some(Tell::Cleared) => {
            tracing::info!(
                last_event = %when(silence.last_event_at),
                "webhook: Mailjet events arrive again; silence alert cleared"
            );
        }
        None => {}
    }
}

/// Runs the check until shutdown. Always spawned: a reload may switch the
/// alert on or off.
pub fn spawn(shared: Arc<Shared>) {
    let mut stop = shared.shutdown_signal();
    let started_ms = now_ms();
    tokio::spawn(async move {
        let mut alarm = Alarm::default();
        loop {
            let w = window(&shared.config());
            match w {
                Some(w) => check(&shared, &mut alarm, w, started_ms).await,
                None => alarm.reset(),
            }
            tokio::select! {
                _ = tokio::time::sleep(check_interval(w)) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn silence_counts_from_the_first_unanswered_delivery() {
        let window = 6 * HOUR;
        let now = 100 * 3_600_000;
        let at = |hours_ago: i64| Some(now - hours_ago * 3_600_000);
        let quiet = EventSilence {
            last_event_at: at(10),
            unanswered_since: at(7),
        };
        assert_eq!(silent_for(&quiet, now, window), Some(7 * HOUR));
        let recent = EventSilence {
            unanswered_since: at(5),
            ..quiet
        };
        assert_eq!(silent_for(&recent, now, window), None);
        let answered = EventSilence {
            last_event_at: at(1),
            unanswered_since: None,
        };
        assert_eq!(silent_for(&answered, now, window), None);
        assert_eq!(silent_for(&EventSilence::default(), now, window), None);
    }

    #[test]
    fn the_log_speaks_on_changes_and_hourly() {
        let mut alarm = Alarm::default();
        let t0 = Instant::now();
        assert_eq!(alarm.update(false, t0), None);
        assert_eq!(alarm.update(true, t0), Some(Tell::Started));
        assert_eq!(alarm.update(true, t0 + Duration::from_secs(60)), None);
        assert_eq!(alarm.update(true, t0 + HOUR), Some(Tell::StillSilent));
        assert_eq!(
            alarm.update(true, t0 + HOUR + Duration::from_secs(60)),
            None
        );
        assert_eq!(alarm.update(false, t0 + 2 * HOUR), Some(Tell::Cleared));
        assert_eq!(alarm.update(false, t0 + 3 * HOUR), None);
    }

    #[test]
    fn checks_come_often_enough_for_the_window() {
        assert_eq!(check_interval(None), Duration::from_secs(60));
        assert_eq!(check_interval(Some(6 * HOUR)), Duration::from_secs(60));
        assert_eq!(
            check_interval(Some(Duration::from_secs(20))),
            Duration::from_secs(5)
        );
        assert_eq!(
            check_interval(Some(Duration::from_secs(2))),
            Duration::from_secs(1)
        );
    }
}
