//! The scheduler and its workers: due messages are read from the store
//! (oldest arrival first) and handed to a fixed pool of
//! `delivery.max_connections` workers, each keeping its upstream
//! connection open for the next message. The in-flight set keeps a message
//! with one worker at a time; the pauses (blocklist, kept outcomes, circuit
//! breaker, account) hold dispatch here.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::attempt::deliver;
use super::breaker::Flow;
use super::courier::{Conn, Outbox};
use super::outcome::Handled;
use super::{Engine, POLL};
use crate::config::UpstreamMode;
use crate::store::{MessageInfo, now_ms};

/// An upstream connection idle this long is closed politely.
const IDLE_CLOSE: Duration = Duration::from_secs(10);
/// How long a message whose store access failed stays out of dispatch.
/// Only reads and pre-attempt writes: an attempt's outcome is never lost
/// this way (see [`super::unrecorded`]).
const STORE_ERROR_PAUSE: Duration = Duration::from_secs(30);

impl Engine {
    pub(super) fn in_flight(&self) -> usize {
        self.in_flight.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// Marks `id` in flight; `false` when a worker already holds it.
    pub(super) fn claim(&self, id: &str) -> bool {
        self.in_flight
            .lock()
            .map(|mut s| s.insert(id.to_owned()))
            .unwrap_or(false)
    }

    pub(super) fn release(&self, id: &str) {
        if let Ok(mut s) = self.in_flight.lock() {
            s.remove(id);
        }
        self.finished.notify_one();
    }
}

pub(super) async fn schedule(engine: &Arc<Engine>, tx: mpsc::Sender<MessageInfo>) {
    let shared = &engine.shared;
    let mut shutdown = shared.shutdown_signal();
    let store = Arc::clone(shared.queue.store());
    loop {
        if *shutdown.borrow() {
            return;
        }
        if engine.handles.unrecorded.is_pausing() {
            // The recorder wakes us (via `finished`) once the store took them.
            tokio::select! {
                _ = engine.finished.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
                _ = shutdown.changed() => return,
            }
            continue;
        }
        if engine.handles.delivery_pause.is_set() {
            let mut pause = engine.handles.delivery_pause.subscribe();
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
            if !engine.claim(&msg.id) {
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

pub(super) async fn worker(
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
            _ = tokio::time::sleep(IDLE_CLOSE), if conn.is_open() => {
                conn.close().await;
                continue;
            }
        };
        let Some(msg) = next else {
            break;
        };
        let id = msg.id.clone();
        // The running configuration picks the courier, message by message
        // (a reload may switch modes); the connection stays with the worker.
        let config = engine.shared.config();
        let handled = match config.upstream.mode {
            UpstreamMode::Outbox => deliver(&engine, &config, &mut Outbox, msg).await,
            UpstreamMode::Relay => deliver(&engine, &config, &mut conn, msg).await,
        };
        match handled {
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
