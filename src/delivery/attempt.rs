//! One attempt for one message: its state read again, the pending
//! recipients checked against the suppression list and the domain caps,
//! the lease confirmed, then the message written to the outbox or relayed
//! (from an egress address, every reply with the stage it came from, for
//! [`super::account`]); the outcome goes to [`super::outcome`].

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::breaker::Flow;
use super::outcome::{Handled, Outcome, record};
use super::relay::{self, RcptResult, Stage, Upstream};
use super::scheduler::POLL;
use super::{Engine, account, caps, egress, outbox};
use crate::config::{Config, UpstreamMode};
use crate::store::{MessageInfo, MessageState, RecipientState, Store, now_ms};

/// A worker's upstream connection and the egress address it was made from.
#[derive(Default)]
pub(super) struct Conn {
    upstream: Option<Upstream>,
    egress: Option<IpAddr>,
}

impl Conn {
    pub(super) fn is_open(&self) -> bool {
        self.upstream.is_some()
    }

    pub(super) async fn close(&mut self) {
        if let Some(u) = self.upstream.take() {
            u.quit().await;
        }
    }
}

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

/// One attempt for one message, recorded in the store (or kept until it can
/// be).
pub(super) async fn deliver(engine: &Engine, conn: &mut Conn, stale: MessageInfo) -> Handled {
    let shared = &engine.shared;
    let config = shared.config();
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
    if shared.delivery_pause.is_set()
        || shared.unrecorded.is_pausing()
        || (config.upstream.mode == UpstreamMode::Relay && matches!(engine.flow(), Flow::Open(_)))
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
    let admission = engine.caps(&config).admit(&pending);
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
        if shared.unrecorded.is_pausing() {
            // Another worker's outcome could not be recorded while this one
            // waited for its turn: no new attempts until it is.
            return Handled::Done;
        }
        results = match config.upstream.mode {
            UpstreamMode::Outbox => {
                to_outbox(&config, &msg.id, Arc::clone(&content), &admission.now).await
            }
            UpstreamMode::Relay => {
                let Some(egress) = pick_egress(engine, &config, conn.egress).await else {
                    // Shutting down while waiting for a free address.
                    return Handled::Done;
                };
                if egress != conn.egress {
                    conn.close().await;
                    conn.egress = egress;
                }
                let relayed =
                    account::relay(engine, &config, conn, &msg, &admission.now, &content).await;
                keep_place = relayed.keep_place;
                match relayed.usable {
                    Some(Ok(())) => {
                        engine.upstream_ok();
                        if let Some(ip) = egress {
                            crate::metrics::egress_message(ip);
                        }
                    }
                    Some(Err(why)) => engine.upstream_failed(&why),
                    None => {}
                }
                relayed.results
            }
        };
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
    record(engine, &config, &msg, &content, outcome, started.elapsed()).await
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

/// The egress address for the next message (`None`: the system's
/// choice); waits while every usable one is at its cap. `None` outside
/// means shutdown came first.
async fn pick_egress(
    engine: &Engine,
    config: &Config,
    current: Option<IpAddr>,
) -> Option<Option<IpAddr>> {
    let mut shutdown = engine.shared.shutdown_signal();
    loop {
        match engine.shared.egress.pick(&config.upstream.egress, current) {
            egress::Pick::Any => return Some(None),
            egress::Pick::Use(ip) => return Some(Some(ip)),
            egress::Pick::Wait(d) => {
                tokio::select! {
                    _ = tokio::time::sleep(d.max(Duration::from_millis(5))) => {}
                    _ = shutdown.wait_for(|s| *s) => return None,
                }
            }
        }
    }
}

async fn to_outbox(
    config: &Config,
    id: &str,
    content: Arc<Vec<u8>>,
    pending: &[String],
) -> Vec<(String, RcptResult)> {
    let dir = config.server.data_dir.clone();
    let id = id.to_owned();
    // File writes and fsync block: keep them off the async workers.
    let written = tokio::task::spawn_blocking(move || outbox::write(&dir, &id, &content)).await;
    let result = match written {
        Ok(Ok(path)) => RcptResult::Delivered(format!("250 2.0.0 written to {}", path.display())),
        Ok(Err(e)) => RcptResult::Temporary(format!("451 4.3.0 cannot write outbox file: {e}")),
        Err(e) => RcptResult::Temporary(format!("451 4.3.0 outbox writer failed: {e}")),
    };
    pending
        .iter()
        .map(|r| (r.clone(), result.clone()))
        .collect()
}

/// A relay attempt's replies, each with the stage it came from.
pub(super) struct Attempt {
    pub results: Vec<(String, RcptResult, Stage)>,
    /// Whether the upstream was usable (it answered the transaction) or not
    /// (unreachable, refused the connection, broken connection, `421`),
    /// which drives the circuit breaker.
    pub usable: Result<(), String>,
}

/// Sends to the upstream over `conn`, connecting first when needed.
pub(super) async fn to_relay(
    config: &Config,
    conn: &mut Conn,
    sender: &str,
    pending: &[String],
    content: &[u8],
) -> Attempt {
    let all = |text: &str, stage: Stage| -> Vec<(String, RcptResult, Stage)> {
        pending
            .iter()
            .map(|r| (r.clone(), RcptResult::Temporary(text.to_string()), stage))
            .collect()
    };
    let failed = |text: &str, why: String| Attempt {
        results: all(text, Stage::Local),
        usable: Err(why),
    };
    // A reused connection may have been closed by the upstream while idle:
    // one fresh connection is tried before calling the attempt failed.
    let upstream = &mut conn.upstream;
    for attempt in 0..2 {
        let reused = upstream.is_some();
        if upstream.is_none() {
            match relay::connect(config, conn.egress).await {
                Ok(u) => *upstream = Some(u),
                Err(e) => {
                    // Refused rather than unreachable: kept pending whatever
                    // the code (the account check decides what it means).
                    if let Some(reply) = relay::refusal(&e) {
                        return Attempt {
                            results: all(&reply, Stage::Connect),
                            usable: Err(e.to_string()),
                        };
                    }
                    let text = format!("451 4.4.1 upstream unreachable: {e}");
                    return failed(&text, e.to_string());
                }
            }
        }
        let Some(conn) = upstream.as_mut() else {
            break;
        };
        let started = Instant::now();
        match conn.send(sender, pending, content).await {
            Ok(results) => {
                crate::metrics::upstream_latency(started.elapsed());
                if relay::closes_connection(&results) {
                    if let Some(u) = upstream.take() {
                        u.quit().await;
                    }
                    return Attempt {
                        results,
                        usable: Err("upstream answered 421".into()),
                    };
                }
                return Attempt {
                    results,
                    usable: Ok(()),
                };
            }
            Err(e) => {
                *upstream = None;
                // Only a failure before DATA is safe to repeat at once: after
                // it, the upstream may already have taken the message.
                if reused && attempt == 0 && e.before_data {
                    tracing::debug!(error = %e.error, "reused upstream connection failed; reconnecting");
                    continue;
                }
                let text = format!("451 4.4.2 upstream connection failed: {}", e.error);
                return failed(&text, e.error.to_string());
            }
        }
    }
    let text = "451 4.4.2 upstream connection failed";
    failed(text, text.into())
}
