//! An attempt's outcome, recorded: temporary results turn permanent past
//! `delivery.max_age`, failures get a DSN to the sender (stored with the
//! attempt, in one transaction), `5.1.x` bounces go on the suppression
//! list, and the next attempt is set (retry schedule, domain cap, or the
//! message's place kept). An outcome the store refuses is kept
//! ([`super::unrecorded`]) and the recorder task offers it again until the
//! store takes it; delivery stays paused meanwhile, so no message is
//! relayed twice.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

use super::relay::RcptResult;
use super::unrecorded::{Kept, LogEvery};
use super::{Engine, POLL};
use crate::config::Config;
use crate::dsn;
use crate::store::{AttemptUpdate, MessageInfo, MessageState, NewMessage, RecipientState, now_ms};

/// How often kept outcomes are offered to the store again.
const RECORD_RETRY: Duration = Duration::from_secs(1);
/// How often a lasting failure to record is logged again.
const RECORD_LOG_EVERY: Duration = Duration::from_secs(60);

/// What became of one message handed to a worker.
pub(super) enum Handled {
    /// Attempted and recorded, or nothing to do: it may be dispatched again.
    Done,
    /// The store could not be read (or a pre-attempt write failed): nothing
    /// was sent; it stays out of dispatch for a while.
    StoreFailed,
    /// Attempted, but the outcome could not be recorded: it is kept in
    /// [`super::unrecorded`] and the message stays out of dispatch until the
    /// recorder has written it.
    Kept,
}

/// One attempt's results and what the gateway decided itself.
pub(super) struct Outcome {
    pub(super) results: Vec<(String, RcptResult)>,
    /// Failed because they are on the suppression list (not a new bounce).
    pub(super) locally_suppressed: Vec<String>,
    /// How many of the temporary results are recipients held back by a
    /// domain cap rather than deferred by the upstream.
    pub(super) held: usize,
    pub(super) cap_wait: Option<Duration>,
    /// Refused account-wide ([`super::account`]): pending recipients keep
    /// the message's place in the queue instead of waiting for a retry.
    pub(super) keep_place: bool,
}

/// When to try again after `attempts` earlier attempts, with ±10 % jitter so
/// a burst of deferrals does not come back as a burst.
fn next_attempt(config: &Config, attempts: u32) -> i64 {
    let schedule = &config.delivery.retry_schedule;
    let idx = (attempts as usize).min(schedule.len().saturating_sub(1));
    let base = schedule
        .get(idx)
        .copied()
        .unwrap_or(Duration::from_secs(300));
    let jitter = rand::rng().random_range(0.9..1.1);
    now_ms() + (base.as_millis() as f64 * jitter) as i64
}

pub(super) async fn record(
    engine: &Engine,
    config: &Config,
    msg: &MessageInfo,
    content: &[u8],
    outcome: Outcome,
    took: Duration,
) -> Handled {
    let Outcome {
        mut results,
        locally_suppressed,
        held,
        cap_wait,
        keep_place,
    } = outcome;
    let store = engine.shared.queue.store();
    let expired = now_ms() - msg.received_at > config.delivery.max_age.as_millis() as i64;
    if expired {
        for (_, r) in results.iter_mut() {
            if let RcptResult::Temporary(text) = r {
                *r = RcptResult::Permanent(format!(
                    "{text} (gave up: queued longer than delivery.max_age)"
                ));
            }
        }
    }
    let (mut delivered, mut deferred, mut failed) = (0, 0, 0);
    let mut updates = Vec::with_capacity(results.len());
    let mut failures = Vec::new();
    let mut last_temp = None;
    for (rcpt, r) in &results {
        match r {
            RcptResult::Delivered(t) => {
                delivered += 1;
                updates.push((rcpt.clone(), RecipientState::Delivered, t.clone()));
            }
            RcptResult::Temporary(t) => {
                deferred += 1;
                last_temp = Some(t.clone());
                updates.push((rcpt.clone(), RecipientState::Pending, t.clone()));
            }
            RcptResult::Permanent(t) => {
                failed += 1;
                failures.push((rcpt.clone(), t.clone()));
                updates.push((rcpt.clone(), RecipientState::Failed, t.clone()));
            }
        }
    }

    // The DSN is stored with the attempt (one transaction): never lost,
    // never twice.
    let bounce_notice = match &msg.dsn_to {
        Some(to) if !failures.is_empty() => {
            Some(bounce_notice(config, msg, to, content, &failures, expired))
        }
        _ => None,
    };
    // `5xx 5.1.x`: the address does not exist; stop mailing it (SPEC §6).
    // Those refused here for being on the list already are not new bounces.
    let bounced: Vec<(String, String)> = failures
        .iter()
        .filter(|(r, _)| !locally_suppressed.contains(r))
        .cloned()
        .collect();
    if !bounced.is_empty() {
        crate::suppression::after_delivery(&engine.shared, &msg.id, &bounced).await;
    }
    // Only the domain cap deferred them: try again when it has room, not
    // after the retry schedule's wait.
    let upstream_deferred = deferred > held;
    let next = if keep_place && deferred > 0 {
        Some(msg.next_attempt)
    } else if upstream_deferred {
        Some(next_attempt(config, msg.attempts))
    } else if deferred > 0 {
        let wait = cap_wait.unwrap_or(POLL);
        Some(now_ms() + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX).max(1))
    } else {
        None
    };

    let update = AttemptUpdate {
        expected_attempts: msg.attempts,
        recipients: updates,
        next_attempt: next,
        error: last_temp
            .clone()
            .or_else(|| failures.first().map(|f| f.1.clone())),
        bounce_notice,
    };
    let reply = last_temp
        .as_deref()
        .or(results.first().map(|(_, r)| r.text()))
        .unwrap_or("");
    let counts = Counts {
        delivered,
        deferred,
        failed,
    };
    match store.record_attempt(&msg.id, update.clone()).await {
        Ok(state) => {
            recorded(engine, &msg.id, msg.attempts, &update, state);
            tracing::info!(
                queue_id = %msg.id,
                attempt = msg.attempts + 1,
                delivered = counts.delivered,
                deferred = counts.deferred,
                failed = counts.failed,
                state = %state,
                ms = took.as_millis() as u64,
                reply,
                "delivery attempt"
            );
            Handled::Done
        }
        Err(e) => {
            // The upstream has answered: offering the message again would
            // relay it twice. Keep the outcome until the store takes it.
            tracing::error!(
                queue_id = %msg.id,
                error = %e,
                delivered = counts.delivered,
                deferred = counts.deferred,
                failed = counts.failed,
                "cannot record delivery attempt: outcome kept, delivery paused until the store takes it"
            );
            engine.handles.unrecorded.keep(
                Kept {
                    queue_id: msg.id.clone(),
                    update,
                },
                e.to_string(),
            );
            Handled::Kept
        }
    }
}

struct Counts {
    delivered: usize,
    deferred: usize,
    failed: usize,
}

/// Metrics and wake-ups once an attempt is in the store.
fn recorded(engine: &Engine, id: &str, attempts: u32, update: &AttemptUpdate, state: MessageState) {
    if let Some(dsn) = &update.bounce_notice {
        crate::metrics::dsn_sent();
        engine.shared.queue.wake();
        let failed = update
            .recipients
            .iter()
            .filter(|r| r.1 == RecipientState::Failed)
            .count();
        tracing::info!(queue_id = %id, dsn = %dsn.id, failed, "bounce notice queued");
    }
    let outcome = match state {
        MessageState::Delivered => crate::metrics::Attempt::Delivered,
        MessageState::Bounced => crate::metrics::Attempt::Bounced,
        MessageState::Queued | MessageState::Held => crate::metrics::Attempt::Deferred,
    };
    crate::metrics::attempt(outcome, attempts);
}

/// Writes kept outcomes whenever there are some, once a second until the
/// store takes them; runs until delivery stops.
pub(super) async fn record_kept(engine: Arc<Engine>) {
    let mut log = LogEvery::new(RECORD_LOG_EVERY);
    loop {
        if !engine.handles.unrecorded.is_pausing() {
            engine.handles.unrecorded.added().await;
            // The worker that kept it has already logged the cause.
            log.due();
        }
        tokio::time::sleep(RECORD_RETRY).await;
        match record_kept_once(&engine).await {
            // A wake-up left over from an outcome recorded meanwhile.
            Ok(0) => {}
            Ok(n) => {
                log.reset();
                tracing::info!(
                    outcomes = n,
                    "store writable again: kept delivery outcomes recorded, delivery resumed"
                );
            }
            Err((left, cause)) => {
                if let Some(skipped) = log.due() {
                    tracing::error!(
                        outcomes = left,
                        error = %cause,
                        retries = skipped,
                        "store still refuses delivery outcomes: delivery stays paused"
                    );
                }
            }
        }
    }
}

/// Offers every kept outcome to the store once, oldest first; how many
/// there were. `Err` with how many are left and the store's answer when it
/// refused one.
pub(super) async fn record_kept_once(engine: &Engine) -> Result<usize, (usize, String)> {
    let unrecorded = &engine.handles.unrecorded;
    let kept = unrecorded.snapshot();
    let store = engine.shared.queue.store();
    for (n, k) in kept.iter().enumerate() {
        match store.record_attempt(&k.queue_id, k.update.clone()).await {
            Ok(state) => {
                // `expected_attempts` matched: this is the attempt's own
                // record (or the message was final already, see the store).
                let attempts = k.update.expected_attempts;
                recorded(engine, &k.queue_id, attempts, &k.update, state);
                tracing::info!(queue_id = %k.queue_id, attempt = attempts + 1, state = %state, "delivery attempt recorded late");
            }
            Err(crate::store::StoreError::Conflict(_)) => {
                // Someone else recorded an attempt meanwhile (an admin's
                // retry from the CLI); ours is obsolete.
                tracing::warn!(queue_id = %k.queue_id, "kept delivery outcome dropped: the message was changed meanwhile");
            }
            Err(e) => {
                unrecorded.still_failing(e.to_string());
                return Err((kept.len() - n, e.to_string()));
            }
        }
        unrecorded.recorded(&k.queue_id);
        engine.release(&k.queue_id);
    }
    Ok(kept.len())
}

/// The delivery status notification for `failures`, to the sender;
/// `expired`: the message is past `delivery.max_age` (as [`record`] found
/// when it gave up on the temporary results).
fn bounce_notice(
    config: &Config,
    msg: &MessageInfo,
    to: &str,
    content: &[u8],
    failures: &[(String, String)],
    expired: bool,
) -> NewMessage {
    let list: Vec<dsn::Failure<'_>> = failures
        .iter()
        .map(|(r, t)| dsn::Failure {
            recipient: r,
            diagnostic: t,
            expired,
            reported: None,
        })
        .collect();
    dsn::notice(&config.server.hostname, msg, to, &list, content)
}
