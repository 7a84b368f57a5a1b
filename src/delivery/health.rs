//! Delivery's health as others see it: when the upstream last answered
//! ([`Contact`], for `/readyz` and the admin endpoint's probe) and the hold
//! the blocklist watch can put on all delivery ([`Pause`]); with the kept
//! outcomes, the egress rotation and the account pause they make up
//! [`Handles`], the part of delivery's state others read or set. Built by
//! `crate::server` and handed to delivery, the admin endpoint and the
//! blocklist watch (not kept in `crate::state::Shared`, which delivery
//! itself imports).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::account::AccountPause;
use super::egress::Rotation;
use super::unrecorded::Unrecorded;

/// Delivery's state shared with the rest of the process.
#[derive(Default)]
pub struct Handles {
    /// When the upstream last answered (relay mode), for `/readyz`.
    pub upstream_contact: Contact,
    /// Set by the blocklist watch to hold all delivery.
    pub delivery_pause: Pause,
    /// Delivery outcomes the store refused; delivery pauses while any wait.
    pub unrecorded: Unrecorded,
    /// Egress source addresses in use and out (`[[upstream.egress]]`).
    pub egress: Rotation,
    /// Delivery paused for an account-wide upstream refusal.
    pub account_pause: AccountPause,
}

/// When the upstream last answered, from a delivery transaction or the
/// admin endpoint's probe; `/readyz` in relay mode asks [`Contact::within`].
#[derive(Default)]
pub struct Contact {
    inner: Mutex<ContactState>,
}

#[derive(Default)]
struct ContactState {
    last_ok: Option<Instant>,
    /// Why the last attempt to reach it failed, for `/readyz`'s answer.
    last_error: Option<String>,
}

impl Contact {
    pub fn ok(&self) {
        if let Ok(mut c) = self.inner.lock() {
            c.last_ok = Some(Instant::now());
            c.last_error = None;
        }
    }

    pub fn failed(&self, why: &str) {
        if let Ok(mut c) = self.inner.lock() {
            c.last_error = Some(why.to_string());
        }
    }

    /// Whether the upstream answered within `window`; otherwise the last
    /// error seen, if any.
    pub fn within(&self, window: Duration) -> Result<(), Option<String>> {
        let Ok(c) = self.inner.lock() else {
            return Err(None);
        };
        match c.last_ok {
            Some(t) if t.elapsed() <= window => Ok(()),
            _ => Err(c.last_error.clone()),
        }
    }

    /// Time since the last answer; `None` if there was none yet.
    pub fn age(&self) -> Option<Duration> {
        self.inner.lock().ok()?.last_ok.map(|t| t.elapsed())
    }
}

/// Delivery held from outside the scheduler (the blocklist watch,
/// `crate::reputation`): while set, nothing is dispatched and messages stay
/// queued and due, in their place. Unlike the circuit breaker it says
/// nothing about the upstream; whoever set it clears it.
pub struct Pause(watch::Sender<bool>);

impl Default for Pause {
    fn default() -> Self {
        Self(watch::channel(false).0)
    }
}

impl Pause {
    /// Sets or clears it; true when that changed something.
    pub fn set(&self, paused: bool) -> bool {
        self.0
            .send_if_modified(|p| std::mem::replace(p, paused) != paused)
    }

    pub fn is_set(&self) -> bool {
        *self.0.borrow()
    }

    /// For the scheduler, to wait until it is cleared.
    pub(super) fn subscribe(&self) -> watch::Receiver<bool> {
        self.0.subscribe()
    }
}
