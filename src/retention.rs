//! Retention (SPEC §7): records are kept only as long as `[retention]`
//! says. The delivery log of final messages is purged here; document links
//! and the download log are purged with the documents (`server::link_tasks`).
//! Expired suppression entries go in the same round, relay (Mailjet)
//! events with the delivery log. Ended limit-counter windows and bans
//! (`crate::limits`) go too (hourly message counters only after
//! `[reputation] anomaly_baseline` while the anomaly hold is on), and the in-memory limit state is tidied.
//! The age of the oldest record held is a metric, so a purge that stopped
//! working shows on a dashboard, not in an audit.

use std::sync::Arc;
use std::time::Duration;

use crate::state::Shared;
use crate::store::now_ms;

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// One purge round; returns how many log entries went.
pub async fn purge_once(shared: &Shared) -> usize {
    let config = shared.config();
    let store = shared.queue.store();
    let before = now_ms().saturating_sub(millis(config.retention.delivery_log));
    let purged = match store.purge_log(before).await {
        Ok(n) => n,
        Err(e) => {
            tracing::error!(error = %e, "delivery-log purge failed");
            0
        }
    };
    if purged > 0 {
        tracing::info!(entries = purged, "delivery log: old entries purged");
    }
    // Expired suppression entries go; relay events are log records.
    match store.purge_suppressions(now_ms(), before).await {
        Ok((0, 0)) => {}
        Ok((entries, events)) => {
            tracing::info!(
                entries,
                events,
                "suppression list: expired entries and old relay events purged"
            )
        }
        Err(e) => tracing::error!(error = %e, "suppression purge failed"),
    }
    // The anomaly hold's baseline reads ended hourly buckets.
    let keep_hourly = if config.reputation.anomaly_hold {
        millis(config.reputation.anomaly_baseline)
    } else {
        0
    };
    match store.purge_limits(now_ms(), keep_hourly).await {
        Ok(0) => {}
        Ok(rows) => tracing::debug!(rows, "limits: ended counter windows and bans purged"),
        Err(e) => tracing::error!(error = %e, "limits purge failed"),
    }
    if let Ok(bans) = store.bans(now_ms()).await {
        crate::metrics::bans_active(bans.len());
    }
    shared.limits.housekeeping(&config.limits);
    match store.oldest_record().await {
        Ok(oldest) => crate::metrics::oldest_record(oldest),
        Err(e) => tracing::warn!(error = %e, "cannot read the oldest record's age"),
    }
    purged
}

pub fn spawn(shared: Arc<Shared>) {
    let mut stop = shared.shutdown_signal();
    tokio::spawn(async move {
        loop {
            purge_once(&shared).await;
            let interval = shared.config().retention.interval;
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    });
}
