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
//!
//! The files, in the order a message meets them: `scheduler` (dispatch,
//! the workers), `attempt` (one attempt, up to the upstream's answer),
//! `courier` (how it leaves: outbox file or upstream relay),
//! `outcome` (recording it, the DSN, the recorder of kept outcomes); beside
//! them `breaker` (pacer, circuit breaker) and `health` (what `/readyz`
//! reads). This file holds what they share and starts them.

pub mod account;
mod attempt;
mod breaker;
pub mod caps;
mod courier;
pub mod egress;
mod health;
pub mod journal;
pub mod outbox;
mod outcome;
pub mod relay;
mod scheduler;
pub mod unrecorded;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};

use crate::state::Shared;
use crate::store::MessageInfo;
use breaker::{Breaker, Pacer};
use outcome::{record_kept, record_kept_once};
use scheduler::{schedule, worker};

pub use health::{Contact, Handles, Pause};

/// How often the scheduler looks at the store without being woken.
const POLL: Duration = Duration::from_secs(1);

/// What the scheduler, the workers, the recorder and the account watch
/// share.
struct Engine {
    shared: Arc<Shared>,
    handles: Arc<Handles>,
    in_flight: Mutex<HashSet<String>>,
    finished: Notify,
    pacer: Pacer,
    breaker: Mutex<Breaker>,
    caps: Mutex<Arc<caps::DomainCaps>>,
}

/// Runs delivery until shutdown; returns after the workers have finished
/// the messages they hold.
pub async fn run(shared: Arc<Shared>, handles: Arc<Handles>) {
    let workers = shared.config().delivery.max_connections;
    let engine = Arc::new(Engine {
        shared: Arc::clone(&shared),
        handles: Arc::clone(&handles),
        in_flight: Mutex::new(HashSet::new()),
        finished: Notify::new(),
        pacer: Pacer::new(),
        breaker: Mutex::new(Breaker::default()),
        caps: Mutex::new(Arc::new(caps::DomainCaps::new(
            &shared.config().delivery.domain_limit,
        ))),
    });
    // Before any new attempt: outcomes a previous run could not record.
    let data_dir = shared.config().server.data_dir.clone();
    match handles.unrecorded.open_journal(&data_dir) {
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
    let mut tasks = Vec::with_capacity(workers);
    for n in 0..workers {
        let engine = Arc::clone(&engine);
        let rx = Arc::clone(&rx);
        tasks.push(tokio::spawn(async move { worker(n, engine, rx).await }));
    }
    let recorder = tokio::spawn(record_kept(Arc::clone(&engine)));
    let account = tokio::spawn(account::watch(Arc::clone(&engine)));
    schedule(&engine, tx).await;
    account.abort();
    for h in tasks {
        let _ = h.await;
    }
    // The workers are done: their last outcomes are kept or recorded. One
    // more try for the kept ones before the process goes.
    recorder.abort();
    let _ = recorder.await;
    let _ = record_kept_once(&engine).await;
    let left = engine.handles.unrecorded.snapshot();
    if !left.is_empty() {
        let ids: Vec<&str> = left.iter().map(|k| k.queue_id.as_str()).collect();
        tracing::error!(
            messages = %ids.join(" "),
            "delivery stopped with outcomes the store never took: they stay in the journal and are recorded at the next start, before any new attempt"
        );
    }
    tracing::info!("delivery stopped");
}
