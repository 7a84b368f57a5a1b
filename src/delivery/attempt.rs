//! One attempt for one message: its state read again, the pending
//! recipients checked against the suppression list and the domain caps,
//! the lease confirmed, then the message handed to a [`Courier`] (outbox
//! or relay); the outcome goes to [`super::outcome`].

use std::sync::Arc;
use std::time::Instant;

use super::breaker::Flow;
use super::courier::Courier;
use super::outcome::{Handled, Outcome, record};
use super::relay::RcptResult;
use super::{Engine, POLL, caps};
use crate::config::Config;
use crate::store::{MessageInfo, MessageState, RecipientState, Store, now_ms};

impl Engine {
    /// The domain caps of the running configuration (rebuilt on a change).
    fn caps(&self, config: &Config) -> Arc<caps::DomainCaps> {
        let limits = &config.delivery.domain_limit;
        let Ok(mut caps) = self.caps.lock() else {
            return Arc::new(caps::DomainCaps::new(limits));
        };
        if !caps.is_for(limits) {
            *caps = Arc::new(caps::DomainCaps::new(limits));
        }
        Arc::clone(&caps)
    }
}

/// One attempt for one message through `courier`, recorded in the store
/// (or kept until it can be).
pub(super) async fn deliver<C: Courier>(
    engine: &Engine,
    config: &Config,
    courier: &mut C,
    stale: MessageInfo,
) -> Handled {
    let shared = &engine.shared;
    let store = shared.queue.store();
    // The scheduler's copy may be out of date: another worker may have
    // finished this message after the list was read, or an admin held it.
    let msg = match store.get(&stale.id).await {
        Ok(Some(m))
            if m.state == MessageState::Queued
                && m.next_attempt <= now_ms()
                && m.attempts == stale.attempts =>
        {
            m
        }
        Ok(_) => return Handled::Done,
        Err(e) => {
            tracing::error!(queue_id = %stale.id, error = %e, "cannot read message state");
            return Handled::StoreFailed;
        }
    };
    if engine.handles.delivery_pause.is_set()
        || engine.handles.unrecorded.is_pausing()
        || (C::UPSTREAM && matches!(engine.flow(), Flow::Open(_)))
    {
        // Paused since it was dispatched: leave it due, in its place.
        return Handled::Done;
    }
    // Shared, not copied: the outbox writer runs on another thread.
    let content = match store.content(&msg.id).await {
        Ok(Some(c)) => Arc::new(c),
        // Deleted or finished meanwhile (admin action): nothing to do.
        Ok(None) => return Handled::Done,
        Err(e) => {
            tracing::error!(queue_id = %msg.id, error = %e, "cannot load message");
            return Handled::StoreFailed;
        }
    };
    let pending: Vec<String> = msg
        .recipients
        .iter()
        .filter(|r| r.state == RecipientState::Pending)
        .map(|r| r.address.clone())
        .collect();
    if pending.is_empty() {
        return Handled::Done;
    }
    let Ok((pending, suppressed)) = recheck_suppression(store.as_ref(), &msg.id, pending).await
    else {
        return Handled::StoreFailed;
    };
    let admission = engine.caps(config).admit(&pending);
    let cap_wait = admission.wait;
    if !admission.held.is_empty() {
        crate::metrics::domain_cap_deferred(admission.held.len());
    }
    if admission.now.is_empty() && suppressed.is_empty() {
        // Nothing may go yet: not an attempt, just a later turn.
        let wait = cap_wait.unwrap_or(POLL);
        let until = now_ms() + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX).max(1);
        if let Err(e) = store.postpone(&msg.id, msg.attempts, until).await {
            tracing::error!(queue_id = %msg.id, error = %e, "cannot postpone message");
            return Handled::StoreFailed;
        }
        tracing::debug!(queue_id = %msg.id, wait_ms = wait.as_millis() as u64, "held back by a domain rate cap");
        return Handled::Done;
    }
    let started = Instant::now();
    let mut results = Vec::with_capacity(msg.recipients.len());
    let mut keep_place = false;
    if !admission.now.is_empty() {
        engine
            .pacer
            .wait(config.delivery.max_messages_per_second)
            .await;
        // With a shared store another instance may have taken the message
        // over while this one waited (its lease ran out): then it is theirs.
        match store.confirm_lease(&msg.id).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(queue_id = %msg.id, "lease lost before sending: left to the instance that holds it");
                return Handled::Done;
            }
            Err(e) => {
                tracing::error!(queue_id = %msg.id, error = %e, "cannot confirm the lease");
                return Handled::StoreFailed;
            }
        }
        if engine.handles.unrecorded.is_pausing() {
            // Another worker's outcome could not be recorded while this one
            // waited for its turn: no new attempts until it is.
            return Handled::Done;
        }
        let Some(sent) = courier
            .send(engine, config, &msg, &admission.now, &content)
            .await
        else {
            // Shutdown came first (a relay waiting for a free egress
            // address): nothing was sent.
            return Handled::Done;
        };
        keep_place = sent.keep_place;
        match sent.usable {
            Some(Ok(())) => {
                engine.upstream_ok();
                if let Some(ip) = sent.egress {
                    crate::metrics::egress_message(ip);
                }
            }
            Some(Err(why)) => engine.upstream_failed(&why),
            None => {}
        }
        results = sent.results;
    }
    let local: Vec<String> = suppressed.iter().map(|(r, _)| r.clone()).collect();
    results.extend(suppressed);
    let held = admission.held.len();
    results.extend(
        admission
            .held
            .into_iter()
            .map(|(r, text)| (r, RcptResult::Temporary(text))),
    );
    let outcome = Outcome {
        results,
        locally_suppressed: local,
        held,
        cap_wait,
        keep_place,
    };
    record(engine, config, &msg, &content, outcome, started.elapsed()).await
}

/// Splits off the recipients put on the suppression list since the message
/// was queued; they fail with the same `550 5.1.1` the RCPT would now get.
/// `Err` when the list cannot be read (the caller tries again later).
async fn recheck_suppression(
    store: &dyn Store,
    id: &str,
    pending: Vec<String>,
) -> Result<(Vec<String>, Vec<(String, RcptResult)>), ()> {
    let now = now_ms();
    let mut send = Vec::with_capacity(pending.len());
    let mut refused = Vec::new();
    for rcpt in pending {
        match store.suppressed(&rcpt, now).await {
            Ok(None) => send.push(rcpt),
            Ok(Some(entry)) => {
                let reply = crate::suppression::refusal(&rcpt, &entry);
                tracing::info!(queue_id = %id, source = %entry.source, reason = %entry.reason, "recipient suppressed while queued: not sent");
                refused.push((
                    rcpt,
                    RcptResult::Permanent(format!("{}; not sent", reply.log_text())),
                ));
            }
            Err(e) => {
                tracing::error!(queue_id = %id, error = %e, "cannot read the suppression list");
                return Err(());
            }
        }
    }
    Ok((send, refused))
}
