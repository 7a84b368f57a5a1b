//! The link side's background work under `schleuse run`: the HTTP service,
//! the purge of expired documents, and the first-download notices. Part of
//! the wiring (it takes the whole [`Shared`]), so `crate::links` stays below
//! the state.

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::{AttachmentMode, Config};
use crate::links::notice::DownloadNotice as NoticeMail;
use crate::links::service::{self, ServiceOptions};
use crate::links::vault::NoticeHook;
use crate::state::Shared;
use crate::store::DownloadNotice;
use crate::store::guesses::GuessPolicy;

/// Binds the link service's port when links are on; a port that cannot be
/// bound stops the start, like an SMTP listener's.
pub async fn bind(config: &Config) -> anyhow::Result<Option<TcpListener>> {
    if config.attachments.mode != AttachmentMode::Link {
        return Ok(None);
    }
    let addr = config.attachments.bind;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("link service ([attachments] bind = {addr})"))?;
    tracing::info!(
        "link service on http://{addr}, links point to {}",
        config.attachments.link_url("…")
    );
    Ok(Some(listener))
}

pub fn spawn_service(shared: Arc<Shared>, listener: TcpListener) -> JoinHandle<()> {
    let cfg = shared.config().attachments.clone();
    let opts = ServiceOptions {
        guesses: GuessPolicy::from(&cfg),
        language: cfg.language,
        trusted_proxies: cfg.trusted_proxies,
        log_client_ip: cfg.log_client_ip,
    };
    let router = service::router(shared.vault.clone(), opts);
    let mut stop = shared.shutdown_signal();
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(e) = service::serve(listener, router, shutdown).await {
            tracing::error!(error = %e, "link service stopped");
        }
    })
}

/// Expires documents every `purge_interval` (read anew each round, so a
/// reload takes effect).
pub fn spawn_purge(shared: Arc<Shared>) {
    let mut stop = shared.shutdown_signal();
    tokio::spawn(async move {
        loop {
            let cfg = shared.config();
            match shared.vault.purge(cfg.retention.downloads).await {
                Ok(p) if p.expired + p.orphans + p.tombstones > 0 => {
                    crate::metrics::documents_purged(p.expired, p.orphans);
                    tracing::info!(
                        expired = p.expired,
                        orphans = p.orphans,
                        old_records = p.tombstones,
                        "document purge"
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "document purge failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(cfg.attachments.purge_interval) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    });
}

/// The vault reports first downloads here; the notice is sent from a task
/// of its own so the download itself never waits for it.
pub fn notice_channel() -> (NoticeHook, mpsc::UnboundedReceiver<DownloadNotice>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let hook: NoticeHook = Arc::new(move |n| {
        let _ = tx.send(n);
    });
    (hook, rx)
}

pub fn spawn_notices(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<DownloadNotice>) {
    tokio::spawn(async move {
        while let Some(n) = rx.recv().await {
            let config = shared.config();
            let system = &config.sender.system_address;
            let content = NoticeMail {
                language: config.attachments.language,
                from: system,
                to: &n.notify_to,
                queue_id: &n.message_id,
                link_id: &n.link_id,
                file_name: &n.file_name,
            }
            .render();
            let msg = crate::queue::staff_notice(
                &shared.dkim(),
                system,
                &n.account,
                &n.notify_to,
                content,
            );
            match shared.queue.submit(msg).await {
                Ok(id) => {
                    tracing::info!(link = %n.link_id, queue_id = %id, "first-download notice queued")
                }
                Err(e) => {
                    tracing::error!(link = %n.link_id, error = %e, "cannot queue the first-download notice")
                }
            }
        }
    });
}
