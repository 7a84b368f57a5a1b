//! How a message leaves, by `upstream.mode`: written to the outbox
//! ([`Outbox`]) or relayed upstream over the worker's connection
//! ([`Conn`]), behind one [`Courier`] trait so an attempt does not care
//! which. A relay send picks the egress address first, then has
//! [`super::account`] judge the replies, each with the stage it came from.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::relay::{self, RcptResult, Stage, Upstream};
use super::{Engine, account, egress, outbox};
use crate::config::Config;
use crate::store::MessageInfo;

/// What one send came to.
pub(super) struct Sent {
    pub results: Vec<(String, RcptResult)>,
    /// For the circuit breaker; `None` when no upstream was involved, or it
    /// answered but refused the account (not the breaker's business).
    pub usable: Option<Result<(), String>>,
    /// The egress address it went out from (`None`: the system's choice).
    pub egress: Option<IpAddr>,
    /// Refused account-wide: the message keeps its place in the queue.
    pub keep_place: bool,
}

/// One way out for a message.
pub(super) trait Courier {
    /// Whether it goes through the upstream, so that the circuit breaker
    /// and the account pause hold it back.
    const UPSTREAM: bool;

    /// Sends `msg` (its final `content`) to `recipients`. `None`: shutdown
    /// came first and nothing was sent.
    async fn send(
        &mut self,
        engine: &Engine,
        config: &Config,
        msg: &MessageInfo,
        recipients: &[String],
        content: &Arc<Vec<u8>>,
    ) -> Option<Sent>;
}

/// Outbox mode: the message written to `DATA_DIR/outbox` ([`outbox`]).
pub(super) struct Outbox;

impl Courier for Outbox {
    const UPSTREAM: bool = false;

    async fn send(
        &mut self,
        _engine: &Engine,
        config: &Config,
        msg: &MessageInfo,
        recipients: &[String],
        content: &Arc<Vec<u8>>,
    ) -> Option<Sent> {
        let results = to_outbox(config, &msg.id, Arc::clone(content), recipients).await;
        Some(Sent {
            results,
            usable: None,
            egress: None,
            keep_place: false,
        })
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

/// Relay mode: a worker's upstream connection and the egress address it
/// was made from.
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

impl Courier for Conn {
    const UPSTREAM: bool = true;

    async fn send(
        &mut self,
        engine: &Engine,
        config: &Config,
        msg: &MessageInfo,
        recipients: &[String],
        content: &Arc<Vec<u8>>,
    ) -> Option<Sent> {
        // `None`: shutting down while waiting for a free address.
        let egress = pick_egress(engine, config, self.egress).await?;
        if egress != self.egress {
            self.close().await;
            self.egress = egress;
        }
        let attempt = to_relay(config, self, &msg.sender, recipients, content).await;
        let relayed =
            account::judge_replies(engine, config, msg, attempt.results, attempt.usable).await;
        Some(Sent {
            results: relayed.results,
            usable: relayed.usable,
            egress,
            keep_place: relayed.keep_place,
        })
    }
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
        match engine.handles.egress.pick(&config.upstream.egress, current) {
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

/// A relay attempt's replies, each with the stage it came from.
struct Attempt {
    pub results: Vec<(String, RcptResult, Stage)>,
    /// Whether the upstream was usable (it answered the transaction) or not
    /// (unreachable, refused the connection, broken connection, `421`),
    /// which drives the circuit breaker.
    pub usable: Result<(), String>,
}

/// Sends to the upstream over `conn`, connecting first when needed.
async fn to_relay(
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
