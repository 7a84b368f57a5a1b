//! The upstream's pace and health as the workers see them: the [`Pacer`]
//! spaces sends to `delivery.max_messages_per_second`, and the circuit
//! breaker pauses the whole queue when the upstream cannot be reached or
//! answers `421` (2 s, doubling up to 1 min), then lets one message probe.
//! [`Engine::flow`] also reports the account-wide pause
//! (`super::account`), which holds delivery the same way.

use std::time::{Duration, Instant};

use super::Engine;

/// Spaces sends evenly: at most `rate` per second across all workers.
pub(super) struct Pacer {
    next: tokio::sync::Mutex<Instant>,
}

impl Pacer {
    pub(super) fn new() -> Self {
        Self {
            next: tokio::sync::Mutex::new(Instant::now()),
        }
    }

    pub(super) async fn wait(&self, rate: u32) {
        let interval = Duration::from_secs(1) / rate.max(1);
        let slot = {
            let mut next = self.next.lock().await;
            let now = Instant::now();
            let slot = (*next).max(now);
            *next = slot + interval;
            slot
        };
        tokio::time::sleep_until(slot.into()).await;
    }
}

/// The upstream's health as the workers have seen it.
#[derive(Default)]
pub(super) struct Breaker {
    /// Consecutive attempts that found the upstream unusable.
    failures: u32,
    /// Paused until then; after it, one probe goes out.
    open_until: Option<Instant>,
}

pub(super) enum Flow {
    Closed,
    Open(Instant),
    /// Paused time is over: let one message through to test the upstream.
    Probe,
}

const BREAKER_MIN: Duration = Duration::from_secs(2);
const BREAKER_MAX: Duration = Duration::from_secs(60);

impl Engine {
    pub(super) fn flow(&self) -> Flow {
        // Held for an account-wide refusal: `account::watch` probes.
        if let Some(until) = self.handles.account_pause.held_until(Instant::now()) {
            return Flow::Open(until);
        }
        let Ok(b) = self.breaker.lock() else {
            return Flow::Closed;
        };
        match b.open_until {
            None => Flow::Closed,
            Some(t) if t > Instant::now() => Flow::Open(t),
            Some(_) => Flow::Probe,
        }
    }

    pub(super) fn upstream_failed(&self, why: &str) {
        self.handles.upstream_contact.failed(why);
        if let Ok(mut b) = self.breaker.lock() {
            // Workers that were already under way when it opened report the
            // same outage: count it once.
            if b.open_until.is_some_and(|t| t > Instant::now()) {
                return;
            }
            b.failures = b.failures.saturating_add(1);
            let pause = BREAKER_MIN
                .saturating_mul(1 << b.failures.min(16).saturating_sub(1))
                .min(BREAKER_MAX);
            b.open_until = Some(Instant::now() + pause);
            crate::metrics::breaker_open(true);
            tracing::warn!(pause = ?pause, failures = b.failures, reason = why, "upstream unusable: delivery paused");
        }
    }

    pub(super) fn upstream_ok(&self) {
        self.handles.upstream_contact.ok();
        if let Ok(mut b) = self.breaker.lock()
            && b.failures > 0
        {
            *b = Breaker::default();
            crate::metrics::breaker_open(false);
            tracing::info!("upstream usable again: delivery resumed");
        }
    }
}
