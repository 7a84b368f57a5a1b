//! One relay attempt: the upstream conversation for one message, every
//! reply with the stage it came from (for [`super::account`]).

use std::time::Instant;

use super::Conn;
use super::relay::{self, RcptResult, Stage};
use crate::config::Config;

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
