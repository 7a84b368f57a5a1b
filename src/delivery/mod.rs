//! Delivery (SPEC §9): take due messages from the queue and hand them on.
//!
//! A scheduler reads due messages from the store (oldest arrival first) and
//! feeds a fixed pool of `delivery.max_connections` workers; each worker
//! keeps its upstream connection open for the next message. A shared pacer
//! caps the upstream rate at `delivery.max_messages_per_second`.
//!
//! Per recipient: `2xx` done; `4xx` (or a connection problem) retried after
//! `delivery.retry_schedule[attempt]` with ±10 % jitter; `5xx`, or still
//! pending after `delivery.max_age`, fails and the envelope sender gets a
//! DSN. The scheduler also polls the store once a second, which is how
//! `schleuse queue retry|release|flush` from another process take effect.
//!
//! Circuit breaker: when the upstream cannot be reached or answers `421`,
//! the whole queue pauses (2 s, doubling up to 1 min) instead of every
//! message failing on its own; after the pause one message probes, and only
//! its success lets the rest follow.
//!
//! [`Pause`]: the blocklist watch (`crate::reputation`) can hold all
//! delivery while an egress IP or sending domain is listed. [`account`]: a
//! refusal that cannot be about one message pauses the queue, not bounced.
//!
//! Before a message goes out, its pending recipients are checked again:
//! one put on the suppression list since the message was queued fails
//! (`550 5.1.1`, with a DSN to the sender) instead of being sent; a
//! recipient domain at its rate cap ([`caps`]) waits. Connections are made
//! from the configured egress addresses in rotation ([`egress`]).

pub mod account;
mod attempt;
pub mod caps;
pub mod dsn;
pub mod egress;
pub mod journal;
pub mod outbox;
pub mod relay;
pub mod unrecorded;

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::{Notify, mpsc};

use crate::config::{Config, UpstreamMode};
use crate::server::Shared;
use crate::store::Store;
use crate::store::{AttemptUpdate, MessageInfo, MessageState, NewMessage, RecipientState, now_ms};
use relay::{RcptResult, Upstream};
use unrecorded::{Kept, LogEvery};

/// How often the scheduler looks at the store without being woken.
const POLL: Duration = Duration::from_secs(1);
/// An upstream connection idle this long is closed politely.
const IDLE_CLOSE: Duration = Duration::from_secs(10);
/// How long a message whose store access failed stays out of dispatch.
/// Only reads and pre-attempt writes: an attempt's outcome is never lost
/// this way (see [`unrecorded`]).
const STORE_ERROR_PAUSE: Duration = Duration::from_secs(30);
/// How often kept outcomes are offered to the store again.
const RECORD_RETRY: Duration = Duration::from_secs(1);
/// How often a lasting failure to record is logged again.
const RECORD_LOG_EVERY: Duration = Duration::from_secs(60);

/// What became of one message handed to a worker.
enum Handled {
    /// Attempted and recorded, or nothing to do: it may be dispatched again.
    Done,
    /// The store could not be read (or a pre-attempt write failed): nothing
    /// was sent; it stays out of dispatch for a while.
    StoreFailed,
    /// Attempted, but the outcome could not be recorded: it is kept in
    /// [`unrecorded`] and the message stays out of dispatch until the
    /// recorder has written it.
    Kept,
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
pub struct Pause(tokio::sync::watch::Sender<bool>);

impl Default for Pause {
    fn default() -> Self {
        Self(tokio::sync::watch::channel(false).0)
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
}

/// Spaces sends evenly: at most `rate` per second across all workers.
struct Pacer {
    next: tokio::sync::Mutex<Instant>,
}

impl Pacer {
    async fn wait(&self, rate: u32) {
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
struct Breaker {
    /// Consecutive attempts that found the upstream unusable.
    failures: u32,
    /// Paused until then; after it, one probe goes out.
    open_until: Option<Instant>,
}

enum Flow {
    Closed,
    Open(Instant),
    /// Paused time is over: let one message through to test the upstream.
    Probe,
}

const BREAKER_MIN: Duration = Duration::from_secs(2);
const BREAKER_MAX: Duration = Duration::from_secs(60);

struct Engine {
    shared: Arc<Shared>,
    in_flight: Mutex<HashSet<String>>,
    finished: Notify,
    pacer: Pacer,
    breaker: Mutex<Breaker>,
    caps: Mutex<Arc<caps::DomainCaps>>,
}

/// A worker's upstream connection and the egress address it was made from.
#[derive(Default)]
struct Conn {
    upstream: Option<Upstream>,
    egress: Option<IpAddr>,
}

impl Conn {
    async fn close(&mut self) {
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

    fn flow(&self) -> Flow {
        // Held for an account-wide refusal: `account::watch` probes.
        if let Some(until) = self.shared.account_pause.held_until(Instant::now()) {
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

    fn upstream_failed(&self, why: &str) {
        self.shared.upstream_contact.failed(why);
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

    fn upstream_ok(&self) {
        self.shared.upstream_contact.ok();
        if let Ok(mut b) = self.breaker.lock()
            && b.failures > 0
        {
            *b = Breaker::default();
            crate::metrics::breaker_open(false);
            tracing::info!("upstream usable again: delivery resumed");
        }
    }

    fn in_flight(&self) -> usize {
        self.in_flight.lock().map(|s| s.len()).unwrap_or(0)
    }

    fn release(&self, id: &str) {
        if let Ok(mut s) = self.in_flight.lock() {
            s.remove(id);
        }
        self.finished.notify_one();
    }
}

/// Runs delivery until shutdown; returns after the workers have finished
/// the messages they hold.
pub async fn run(shared: Arc<Shared>) {
    let workers = shared.config().delivery.max_connections;
    let engine = Arc::new(Engine {
        shared: Arc::clone(&shared),
        in_flight: Mutex::new(HashSet::new()),
        finished: Notify::new(),
        pacer: Pacer {
            next: tokio::sync::Mutex::new(Instant::now()),
        },
        breaker: Mutex::new(Breaker::default()),
        caps: Mutex::new(Arc::new(caps::DomainCaps::new(
            &shared.config().delivery.domain_limit,
        ))),
    });
    // Before any new attempt: outcomes a previous run could not record.
    let data_dir = shared.config().server.data_dir.clone();
    match shared.unrecorded.open_journal(&data_dir) {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            outcomes = n,
            "delivery outcomes the previous run could not record: recording them before delivery resumes"
        ),
        Err(e) => {
            tracing::error!(error = %e, "cannot open the delivery outcome journal; a restart while the store refuses writes could relay a message twice")
        }
    }
    let (tx, rx) = mpsc::channel::<MessageInfo>(workers);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let mut handles = Vec::with_capacity(workers);
    for n in 0..workers {
        let engine = Arc::clone(&engine);
        let rx = Arc::clone(&rx);
        handles.push(tokio::spawn(async move { worker(n, engine, rx).await }));
    }
    let recorder = tokio::spawn(record_kept(Arc::clone(&engine)));
    let account = tokio::spawn(account::watch(Arc::clone(&engine)));
    schedule(&engine, tx).await;
    account.abort();
    for h in handles {
        let _ = h.await;
    }
    // The workers are done: their last outcomes are kept or recorded. One
    // more try for the kept ones before the process goes.
    recorder.abort();
    let _ = recorder.await;
    let _ = record_kept_once(&engine).await;
    let left = engine.shared.unrecorded.snapshot();
    if !left.is_empty() {
        let ids: Vec<&str> = left.iter().map(|k| k.queue_id.as_str()).collect();
        tracing::error!(
            messages = %ids.join(" "),
            "delivery stopped with outcomes the store never took: they stay in the journal and are recorded at the next start, before any new attempt"
        );
    }
    tracing::info!("delivery stopped");
}

async fn schedule(engine: &Arc<Engine>, tx: mpsc::Sender<MessageInfo>) {
    let shared = &engine.shared;
    let mut shutdown = shared.shutdown_signal();
    let store = Arc::clone(shared.queue.store());
    loop {
        if *shutdown.borrow() {
            return;
        }
        if shared.unrecorded.is_pausing() {
            // The recorder wakes us (via `finished`) once the store took them.
            tokio::select! {
                _ = engine.finished.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
                _ = shutdown.changed() => return,
            }
            continue;
        }
        if shared.delivery_pause.is_set() {
            let mut pause = shared.delivery_pause.0.subscribe();
            tokio::select! {
                _ = pause.wait_for(|p| !*p) => {}
                _ = shutdown.changed() => return,
            }
            continue;
        }
        let in_flight = engine.in_flight();
        // Enough to keep every worker busy and the hand-over channel full,
        // and no more: on a shared store each message returned is leased
        // to this instance, and leases held ahead of the workers would keep
        // other instances idle (and wait for expiry if this one dies).
        let ahead = 2 * shared.config().delivery.max_connections.max(1);
        let limit = match engine.flow() {
            Flow::Closed => in_flight + ahead,
            Flow::Open(until) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(until.into()) => {}
                    _ = shutdown.changed() => return,
                }
                continue;
            }
            Flow::Probe if in_flight == 0 => 1,
            Flow::Probe => {
                tokio::select! {
                    _ = engine.finished.notified() => {}
                    _ = tokio::time::sleep(POLL) => {}
                    _ = shutdown.changed() => return,
                }
                continue;
            }
        };
        let due = match store.due(now_ms(), limit).await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the queue");
                Vec::new()
            }
        };
        let mut dispatched = 0;
        for msg in due {
            let fresh = engine
                .in_flight
                .lock()
                .map(|mut s| s.insert(msg.id.clone()))
                .unwrap_or(false);
            if !fresh {
                continue;
            }
            tokio::select! {
                sent = tx.send(msg) => if sent.is_err() { return },
                _ = shutdown.changed() => return,
            }
            dispatched += 1;
        }
        if dispatched > 0 {
            continue;
        }
        let wait = match store.next_due().await {
            Ok(Some(t)) if t > now_ms() => POLL.min(Duration::from_millis((t - now_ms()) as u64)),
            _ => POLL,
        };
        tokio::select! {
            _ = shared.queue.notified() => {}
            _ = engine.finished.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
    }
}

async fn worker(
    n: usize,
    engine: Arc<Engine>,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<MessageInfo>>>,
) {
    let mut conn = Conn::default();
    loop {
        // The receiver's lock is held only while waiting; when the idle timer
        // wins, the wait is dropped and the lock with it.
        let next = tokio::select! {
            m = async { rx.lock().await.recv().await } => m,
            _ = tokio::time::sleep(IDLE_CLOSE), if conn.upstream.is_some() => {
                conn.close().await;
                continue;
            }
        };
        let Some(msg) = next else {
            break;
        };
        let id = msg.id.clone();
        match deliver(&engine, &mut conn, msg).await {
            Handled::Done => engine.release(&id),
            Handled::StoreFailed => {
                // Nothing was sent: keep the message out of dispatch for a
                // while instead of retrying it in a tight loop.
                let engine = Arc::clone(&engine);
                tokio::spawn(async move {
                    tokio::time::sleep(STORE_ERROR_PAUSE).await;
                    engine.release(&id);
                });
            }
            // In flight until the recorder has written its outcome.
            Handled::Kept => {}
        }
    }
    conn.close().await;
    tracing::debug!(worker = n, "delivery worker stopped");
}

/// One attempt for one message, recorded in the store (or kept until it can
/// be).
async fn deliver(engine: &Engine, conn: &mut Conn, stale: MessageInfo) -> Handled {
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

/// One attempt's results and what the gateway decided itself.
struct Outcome {
    results: Vec<(String, RcptResult)>,
    /// Failed because they are on the suppression list (not a new bounce).
    locally_suppressed: Vec<String>,
    /// How many of the temporary results are recipients held back by a
    /// domain cap rather than deferred by the upstream.
    held: usize,
    cap_wait: Option<Duration>,
    /// Refused account-wide ([`account`]): pending recipients keep the
    /// message's place in the queue instead of waiting for a retry.
    keep_place: bool,
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

async fn record(
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
            Some(bounce_notice(config, msg, to, content, &failures))
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
            engine.shared.unrecorded.keep(
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
async fn record_kept(engine: Arc<Engine>) {
    let mut log = LogEvery::new(RECORD_LOG_EVERY);
    loop {
        if !engine.shared.unrecorded.is_pausing() {
            engine.shared.unrecorded.added().await;
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
async fn record_kept_once(engine: &Engine) -> Result<usize, (usize, String)> {
    let unrecorded = &engine.shared.unrecorded;
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

/// The delivery status notification for `failures`, to the sender.
fn bounce_notice(
    config: &Config,
    msg: &MessageInfo,
    to: &str,
    content: &[u8],
    failures: &[(String, String)],
) -> NewMessage {
    let expired = now_ms() - msg.received_at > config.delivery.max_age.as_millis() as i64;
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
