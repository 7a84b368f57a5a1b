//! Account-wide refusals are not bounces (SPEC §9).
//!
//! Some upstream refusals cannot be about one message: a `4xx`/`5xx` at
//! the greeting or AUTH, a `5xx` to `MAIL FROM` when the sender is the
//! system address, a reply matching `[delivery.account_pause] patterns`, or
//! the same `5xx` for `same_reply_recipients` different recipients in a row
//! (see [`detect`]). Bouncing on them would lose the whole queue to a
//! sender not validated at Mailjet or an account blocked for a week. So
//! such a refusal pauses delivery for the whole queue instead:
//!
//! - the refused recipients stay pending and the message keeps its place
//!   in the queue (its `next_attempt` is not moved); no DSN, no suppression;
//! - a warning is logged, `schleuse_delivery_account_paused` is 1,
//!   `/readyz` stays ready (submission goes on) and says why in its text,
//!   and one notice is queued for `notify` (at most one an hour);
//! - a message-less probe (`MAIL FROM` the system address, `RCPT TO` the
//!   notify address, `RSET`) tries the upstream after `probe_interval`,
//!   doubling up to `probe_max_interval`; once it is accepted the queue goes
//!   out in its order, each message once;
//! - messages past `delivery.max_age` meanwhile expire with a DSN as usual.
//!
//! A first `5xx` that could be the start of such a run is held once (kept
//! pending, retried after the retry schedule) and bounces when the next
//! attempt gets the same reply, so the recipients refused before the run
//! was recognised are not bounced either. Replies saying the address itself
//! is bad (`5.1.1` and the like) bounce at once, as before.
//!
//! The circuit breaker (unreachable upstream, `421`) is separate and
//! unchanged. The pause is per process and not persisted: after a restart
//! the first refusal starts it again.

pub mod detect;
mod notice;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use ::metrics::{counter, gauge};

use super::Engine;
use super::outcome::{Handled, Outcome};
use super::relay::{self, Probe, RcptResult, Stage};
use crate::config::{Config, UpstreamMode};
use crate::metrics::{ACCOUNT_PAUSED, ACCOUNT_PAUSES, ACCOUNT_PROBES, REFUSALS_HELD};
use crate::store::{MessageInfo, MessageState, RecipientState, now_ms};
use detect::{ACCOUNT_MARK, Cause, Detector, HELD_MARK, Rules, Seen, Verdict};

/// A pause that comes back within this long after the last notice tells
/// nobody again (the log and the metric still do).
const NOTICE_QUIET: Duration = Duration::from_secs(3600);
/// How often the pause is looked at (probe due, messages to expire).
const TICK: Duration = Duration::from_secs(1);
/// How often, while paused, the queue is searched for messages past
/// `delivery.max_age`, and how many due messages are looked at then.
const EXPIRE_EVERY: Duration = Duration::from_secs(2);
const EXPIRE_SCAN: usize = 500;

/// The pause state of this process (`Handles::account_pause`).
#[derive(Default)]
pub struct AccountPause {
    state: Mutex<State>,
    rules: Mutex<Option<Arc<Rules>>>,
}

#[derive(Default)]
struct State {
    detector: Detector,
    episode: Option<Episode>,
    /// When the last pause ended, and its last wait: a pause that comes
    /// back soon after goes on backing off instead of starting over.
    last: Option<(Instant, Duration)>,
    last_notice: Option<Instant>,
}

struct Episode {
    cause: Cause,
    reply: String,
    /// The normalised reply: the same refusal again is more of the same.
    key: String,
    since: Instant,
    wait: Duration,
    next_probe: Instant,
    probes: u32,
}

/// A pause that has just begun.
struct Began {
    cause: Cause,
    reply: String,
    since_wall: SystemTime,
    first_probe: Duration,
    notify: bool,
}

/// What a probe changed.
enum After {
    Resumed { paused_for: Duration, probes: u32 },
    Waits { next: Duration, why: String },
}

impl AccountPause {
    fn rules(&self, config: &crate::config::AccountPause) -> Arc<Rules> {
        let Ok(mut r) = self.rules.lock() else {
            return Arc::new(Rules::new(config));
        };
        match r.as_ref() {
            Some(rules) if rules.is_for(config) => Arc::clone(rules),
            _ => {
                let rules = Arc::new(Rules::new(config));
                *r = Some(Arc::clone(&rules));
                rules
            }
        }
    }

    pub fn is_paused(&self) -> bool {
        self.state.lock().is_ok_and(|s| s.episode.is_some())
    }

    /// While paused: until when the scheduler holds everything back before
    /// it looks again (the probe itself runs in [`watch`]). Short, so a
    /// resume or a reload to outbox mode takes effect at once.
    pub fn held_until(&self, now: Instant) -> Option<Instant> {
        self.is_paused().then_some(now + TICK)
    }

    /// One line for `/readyz` while paused; `None` otherwise.
    pub fn status(&self) -> Option<String> {
        let s = self.state.lock().ok()?;
        let e = s.episode.as_ref()?;
        let now = Instant::now();
        Some(format!(
            "delivery: paused for {}s, the upstream refuses the account ({}): {}; next probe in {}s; nothing is bounced, submission goes on",
            now.saturating_duration_since(e.since).as_secs(),
            e.cause.describe(),
            e.reply,
            e.next_probe.saturating_duration_since(now).as_secs(),
        ))
    }

    /// Judges one attempt's replies; starts a pause when they show an
    /// account-wide refusal and none is on.
    fn judge(
        &self,
        config: &crate::config::AccountPause,
        sender_is_system: bool,
        seen: &[Seen<'_>],
        now: Instant,
    ) -> (detect::Judgement, Option<Began>) {
        let rules = self.rules(config);
        let Ok(mut s) = self.state.lock() else {
            // Without the state, the safe side: nothing bounces.
            let j = detect::Judgement {
                account_wide: None,
                verdicts: vec![Verdict::HoldOnce; seen.len()],
            };
            return (j, None);
        };
        let s = &mut *s;
        let ongoing = s.episode.as_ref().map(|e| e.key.clone());
        let j = s
            .detector
            .judge(&rules, sender_is_system, ongoing.as_deref(), seen, now);
        let mut began = None;
        if let Some((cause, reply)) = &j.account_wide
            && s.episode.is_none()
        {
            let wait = match s.last {
                Some((ended, w))
                    if now.saturating_duration_since(ended) < config.probe_max_interval =>
                {
                    w.saturating_mul(2).min(config.probe_max_interval)
                }
                _ => config.probe_interval,
            };
            let notify = s
                .last_notice
                .is_none_or(|t| now.saturating_duration_since(t) >= NOTICE_QUIET);
            if notify {
                s.last_notice = Some(now);
            }
            let since_wall = SystemTime::now();
            s.episode = Some(Episode {
                cause: *cause,
                reply: reply.clone(),
                key: detect::normalise(reply),
                since: now,
                wait,
                next_probe: now + wait,
                probes: 0,
            });
            began = Some(Began {
                cause: *cause,
                reply: reply.clone(),
                since_wall,
                first_probe: wait,
                notify,
            });
        }
        (j, began)
    }

    fn probe_due(&self, now: Instant) -> bool {
        self.state
            .lock()
            .is_ok_and(|s| s.episode.as_ref().is_some_and(|e| now >= e.next_probe))
    }

    /// Takes a probe's finding: resume, or wait longer.
    fn probed(
        &self,
        config: &crate::config::AccountPause,
        probe: &Probe,
        now: Instant,
    ) -> Option<After> {
        let rules = self.rules(config);
        let mut s = self.state.lock().ok()?;
        let e = s.episode.as_mut()?;
        e.probes += 1;
        let refused = match probe {
            Probe::Accepted => None,
            Probe::Failed(why) => Some(why.clone()),
            Probe::Refused { stage, reply } => {
                // A `5xx` to the probe's RCPT that is none of the above is
                // about that address: the account takes mail again.
                let still = *stage != Stage::Rcpt
                    || detect::reply_code(reply) < 500
                    || rules.matches_reply(reply)
                    || detect::normalise(reply) == e.key;
                still.then(|| reply.clone())
            }
        };
        if let Some(why) = refused {
            e.wait = e.wait.saturating_mul(2).min(config.probe_max_interval);
            e.next_probe = now + e.wait;
            return Some(After::Waits { next: e.wait, why });
        }
        let e = s.episode.take()?;
        s.last = Some((now, e.wait));
        s.detector.reset();
        Some(After::Resumed {
            paused_for: now.saturating_duration_since(e.since),
            probes: e.probes,
        })
    }

    /// Ends a pause without a probe (the upstream is no longer used).
    fn clear(&self) {
        if let Ok(mut s) = self.state.lock()
            && s.episode.take().is_some()
        {
            s.detector.reset();
            gauge!(ACCOUNT_PAUSED).set(0.0);
        }
    }
}

/// One relay attempt with its replies judged.
pub(super) struct Relayed {
    pub results: Vec<(String, RcptResult)>,
    /// For the circuit breaker; `None` when the upstream answered but
    /// refused the account (not the breaker's business).
    pub usable: Option<Result<(), String>>,
    /// Refused account-wide: the message keeps its place in the queue.
    pub keep_place: bool,
}

/// Applies [`detect`]'s verdicts to the replies of one relay attempt for
/// `msg` (each with its stage, and whether the upstream was usable, as
/// `super::courier::to_relay` found them): account-wide refusals and
/// refusals held once stay pending instead of bouncing.
pub(super) async fn judge_replies(
    engine: &Engine,
    config: &Config,
    msg: &MessageInfo,
    replies: Vec<(String, RcptResult, Stage)>,
    usable: Result<(), String>,
) -> Relayed {
    let prev = |rcpt: &str| {
        msg.recipients
            .iter()
            .find(|r| r.address == rcpt)
            .and_then(|r| r.reply.as_deref())
    };
    let seen: Vec<Seen<'_>> = replies
        .iter()
        .map(|(rcpt, result, stage)| Seen {
            recipient: rcpt,
            stage: *stage,
            text: result.text(),
            prev: prev(rcpt),
        })
        .collect();
    let system = msg
        .sender
        .eq_ignore_ascii_case(&config.sender.system_address);
    let pause = &engine.handles.account_pause;
    let (judgement, began) = pause.judge(
        &config.delivery.account_pause,
        system,
        &seen,
        Instant::now(),
    );
    drop(seen);
    let wide = judgement.account_wide.is_some();
    let at_connect = replies.iter().any(|(_, _, s)| *s == Stage::Connect);
    let results = replies
        .into_iter()
        .zip(judgement.verdicts)
        .map(|((rcpt, result, stage), verdict)| {
            let result = match result {
                RcptResult::Delivered(_) => result,
                r if stage == Stage::Local => r,
                r if wide => {
                    counter!(REFUSALS_HELD, "why" => "account_wide").increment(1);
                    RcptResult::Temporary(format!("{}{ACCOUNT_MARK}", r.text()))
                }
                RcptResult::Permanent(t) if verdict == Verdict::HoldOnce => {
                    counter!(REFUSALS_HELD, "why" => "unconfirmed").increment(1);
                    tracing::debug!(queue_id = %msg.id, reply = %t, "refusal held once: it bounces if the next attempt gets the same");
                    RcptResult::Temporary(format!("{t}{HELD_MARK}"))
                }
                r => r,
            };
            (rcpt, result)
        })
        .collect();
    if let Some(began) = began {
        started(engine, config, msg, began).await;
    }
    Relayed {
        results,
        usable: (!(wide && at_connect)).then_some(usable),
        keep_place: wide,
    }
}

/// Logs a pause that has begun and queues the notice.
async fn started(engine: &Engine, config: &Config, msg: &MessageInfo, began: Began) {
    gauge!(ACCOUNT_PAUSED).set(1.0);
    counter!(ACCOUNT_PAUSES, "cause" => began.cause.label()).increment(1);
    tracing::warn!(
        cause = began.cause.label(),
        why = began.cause.describe(),
        reply = %began.reply,
        queue_id = %msg.id,
        first_probe_s = began.first_probe.as_secs(),
        "delivery paused: the upstream refuses the account; nothing is bounced, messages stay queued in order"
    );
    if !began.notify {
        tracing::info!("no pause notice this time: one was sent less than an hour ago");
        return;
    }
    let ap = &config.delivery.account_pause;
    let system = &config.sender.system_address;
    let to = ap.notify.as_deref().unwrap_or(system);
    let content = notice::PauseNotice {
        config,
        to,
        cause: began.cause,
        reply: &began.reply,
        since: began.since_wall,
    }
    .render();
    let notice =
        crate::queue::staff_notice(&engine.shared.dkim(), system, &msg.account, to, content);
    match engine.shared.queue.submit(notice).await {
        Ok(id) => tracing::info!(queue_id = %id, to, "pause notice queued"),
        Err(e) => tracing::error!(error = %e, "cannot queue the pause notice"),
    }
}

/// Runs until shutdown: while paused, probes the upstream when due and
/// expires messages that reach `delivery.max_age`.
pub(super) async fn watch(engine: Arc<Engine>) {
    let mut shutdown = engine.shared.shutdown_signal();
    let mut last_expiry: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let pause = &engine.handles.account_pause;
        if !pause.is_paused() {
            continue;
        }
        let config = engine.shared.config();
        if config.upstream.mode != UpstreamMode::Relay {
            pause.clear();
            tracing::info!("account pause ended: the upstream is no longer used");
            continue;
        }
        if last_expiry.is_none_or(|t| t.elapsed() >= EXPIRE_EVERY) {
            last_expiry = Some(Instant::now());
            expire(&engine, &config).await;
        }
        if pause.probe_due(Instant::now()) {
            tokio::select! {
                _ = probe(&engine, &config) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }
}

async fn probe(engine: &Engine, config: &Config) {
    let ap = &config.delivery.account_pause;
    let sender = &config.sender.system_address;
    let rcpt = ap.notify.as_deref().unwrap_or(sender);
    let egress = config.upstream.egress.first().map(|e| e.address);
    // connect() bounds each step by upstream.timeout; this bounds the whole.
    let limit = config.upstream.timeout.saturating_mul(4);
    let found = tokio::time::timeout(limit, relay::probe(config, egress, sender, rcpt))
        .await
        .unwrap_or_else(|_| Probe::Failed("probe timed out".into()));
    let result = match &found {
        Probe::Accepted => "accepted",
        Probe::Refused { .. } => "refused",
        Probe::Failed(_) => "failed",
    };
    counter!(ACCOUNT_PROBES, "result" => result).increment(1);
    let pause = &engine.handles.account_pause;
    match pause.probed(ap, &found, Instant::now()) {
        Some(After::Resumed { paused_for, probes }) => {
            gauge!(ACCOUNT_PAUSED).set(0.0);
            engine.handles.upstream_contact.ok();
            if let Probe::Refused { reply, .. } = &found {
                tracing::warn!(rcpt, reply = %reply, "probe recipient refused (check [delivery.account_pause] notify), but the upstream takes mail from the account again");
            }
            tracing::info!(
                paused_s = paused_for.as_secs(),
                probes,
                "upstream takes mail again: delivery resumed, the queue goes out in order"
            );
            engine.shared.queue.wake();
        }
        Some(After::Waits { next, why }) => {
            tracing::info!(reply = %why, next_probe_s = next.as_secs(), "probe: the upstream still refuses the account; delivery stays paused");
        }
        None => {}
    }
}

/// Expires the due messages past `delivery.max_age` (DSN and all) while
/// nothing is attempted; only when the oldest queued message is that old.
async fn expire(engine: &Engine, config: &Config) {
    let store = engine.shared.queue.store();
    let max_age = i64::try_from(config.delivery.max_age.as_millis()).unwrap_or(i64::MAX);
    let now = now_ms();
    let too_old = |received_at: i64| now.saturating_sub(received_at) > max_age;
    match store.stats().await {
        Ok(s) if s.oldest_queued_at.is_some_and(too_old) => {}
        _ => return,
    }
    let due = match store.due(now, EXPIRE_SCAN).await {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the queue to expire old messages");
            return;
        }
    };
    for msg in due.into_iter().filter(|m| too_old(m.received_at)) {
        if !engine.claim(&msg.id) {
            continue;
        }
        match expire_one(engine, config, &msg).await {
            // In flight until the recorder has written its outcome.
            Handled::Kept => {}
            Handled::Done | Handled::StoreFailed => engine.release(&msg.id),
        }
    }
}

/// Records one attempt for `stale` that sends nothing: its pending
/// recipients fail as too old, and the sender gets the DSN.
async fn expire_one(engine: &Engine, config: &Config, stale: &MessageInfo) -> Handled {
    let store = engine.shared.queue.store();
    let msg = match store.get(&stale.id).await {
        Ok(Some(m)) if m.state == MessageState::Queued && m.attempts == stale.attempts => m,
        Ok(_) => return Handled::Done,
        Err(e) => {
            tracing::error!(queue_id = %stale.id, error = %e, "cannot read message state");
            return Handled::StoreFailed;
        }
    };
    let content = match store.content(&msg.id).await {
        Ok(Some(c)) => c,
        Ok(None) => return Handled::Done,
        Err(e) => {
            tracing::error!(queue_id = %msg.id, error = %e, "cannot load message");
            return Handled::StoreFailed;
        }
    };
    let text = "451 4.4.0 not sent: delivery paused, the upstream refuses the account";
    let results: Vec<(String, RcptResult)> = msg
        .recipients
        .iter()
        .filter(|r| r.state == RecipientState::Pending)
        .map(|r| (r.address.clone(), RcptResult::Temporary(text.into())))
        .collect();
    if results.is_empty() {
        return Handled::Done;
    }
    let outcome = Outcome {
        results,
        locally_suppressed: Vec::new(),
        held: 0,
        cap_wait: None,
        keep_place: false,
    };
    super::outcome::record(engine, config, &msg, &content, outcome, Duration::ZERO).await
}

#[cfg(test)]
mod tests;
