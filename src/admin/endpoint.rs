//! The admin HTTP endpoint (SPEC §10), started by `schleuse run`.
//!
//! - `GET /metrics`: Prometheus text format (see [`crate::metrics`]); the
//!   queue gauges are read from the store on every scrape.
//! - `GET /healthz`: `200 ok` while the process runs.
//! - `GET /readyz`: `200 ready` when a message handed over now would be
//!   stored and sent on: the store commits a tiny write, the document store
//!   answers (its directory exists; a bucket answers a listing), every
//!   configured listener is bound, no delivery outcome waits to be recorded
//!   (delivery pauses meanwhile), and in relay mode the upstream answered within
//!   `admin.upstream_check_interval` (a delivery, or a probe connection made
//!   here when deliveries are rare). Otherwise `503` with one line per
//!   failed check. While delivery is paused because the upstream refuses
//!   the account (`crate::delivery::account`) submission goes on: `200`,
//!   with the pause on a second line.
//!
//! Config keys: `[admin]` (`bind` and `enabled` take a restart; basic auth
//! and the interval follow a reload). Every route needs basic auth when
//! `admin.username`/`password` are set; the comparison runs in constant
//! time. A bind that fails stops the start, like an SMTP listener's: set
//! `enabled = false` to run without the endpoint.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::UpstreamMode;
use crate::delivery::{Handles, relay};
use crate::state::Shared;

/// How long `/readyz` waits for the store's test commit. A commit normally
/// takes milliseconds; one that takes longer is a store that will make SMTP
/// clients wait, which is what "not ready" means.
const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a scrape waits for the queue counts before rendering the last ones.
const STATS_TIMEOUT: Duration = Duration::from_secs(2);
/// Upkeep of the recorder (histogram buffers) and the queue gauges, so memory
/// stays bounded and the gauges stay fresh even when nobody scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(15);

/// The Prometheus text exposition format, version 0.0.4.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("cannot listen on {addr}: {cause}")]
    Bind {
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error("cannot install the metrics recorder: {0}")]
    Recorder(#[from] metrics_exporter_prometheus::BuildError),
}

/// A bound endpoint, not yet serving.
pub struct Endpoint {
    listener: TcpListener,
    addr: SocketAddr,
    metrics: PrometheusHandle,
}

impl Endpoint {
    /// Binds `addr` and installs the metrics recorder.
    pub async fn bind(addr: SocketAddr) -> Result<Endpoint, EndpointError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|cause| EndpointError::Bind { addr, cause })?;
        let metrics = crate::metrics::install()?;
        Ok(Endpoint {
            listener,
            addr,
            metrics,
        })
    }

    /// Serves until shutdown begins. `bound` are the SMTP listener addresses
    /// this process holds, which `/readyz` compares with the configuration.
    pub fn spawn(
        self,
        shared: Arc<Shared>,
        delivery: Arc<Handles>,
        bound: Vec<SocketAddr>,
    ) -> JoinHandle<()> {
        let state = Arc::new(AdminState {
            shared: Arc::clone(&shared),
            delivery: Arc::clone(&delivery),
            metrics: self.metrics,
            bound,
        });
        let upkeep = tokio::spawn(upkeep(Arc::clone(&state)));
        let probe = tokio::spawn(probe_upstream(Arc::clone(&shared), delivery));
        let app = router(state);
        let addr = self.addr;
        let mut shutdown = shared.shutdown_signal();
        tracing::info!(%addr, "admin endpoint: /metrics, /healthz, /readyz");
        tokio::spawn(async move {
            let stop = async move {
                let _ = shutdown.wait_for(|stop| *stop).await;
            };
            if let Err(e) = axum::serve(self.listener, app)
                .with_graceful_shutdown(stop)
                .await
            {
                tracing::error!(%addr, error = %e, "admin endpoint failed");
            }
            upkeep.abort();
            probe.abort();
            tracing::info!(%addr, "admin endpoint closed");
        })
    }
}

struct AdminState {
    shared: Arc<Shared>,
    /// Delivery's health, for `/readyz` and the upstream probe.
    delivery: Arc<Handles>,
    metrics: PrometheusHandle,
    bound: Vec<SocketAddr>,
}

fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            basic_auth,
        ))
        .with_state(Arc::clone(&state))
        // The Mailjet webhook has its own credentials (not the admin's).
        .merge(crate::suppression::webhook::router(Arc::clone(&state.shared)).unwrap_or_default())
}

async fn metrics(State(state): State<Arc<AdminState>>) -> Response {
    refresh_queue_gauges(&state.shared).await;
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        state.metrics.render(),
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<Arc<AdminState>>) -> Response {
    let failures = readiness(&state).await;
    if failures.is_empty() {
        let mut body = String::from("ready\n");
        if let Some(paused) = state.delivery.account_pause.status() {
            body.push_str(&paused);
            body.push('\n');
        }
        (StatusCode::OK, body).into_response()
    } else {
        tracing::debug!(failures = %failures.join("; "), "not ready");
        let mut body = failures.join("\n");
        body.push('\n');
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

/// One short line per failed check; empty when ready.
async fn readiness(state: &AdminState) -> Vec<String> {
    let shared = &state.shared;
    let config = shared.config();
    let mut failures = Vec::new();
    if *shared.shutdown_signal().borrow() {
        failures.push("shutting down".to_string());
    }
    match tokio::time::timeout(PING_TIMEOUT, shared.queue.store().ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => failures.push(format!("store: not writable: {e}")),
        Err(_) => failures.push(format!(
            "store: no commit within {}s",
            PING_TIMEOUT.as_secs()
        )),
    }
    // Only a document store that answers can take a message's attachments
    // (they are stored before the message is acknowledged).
    match tokio::time::timeout(PING_TIMEOUT, shared.vault.probe()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => failures.push(format!("documents: {e}")),
        Err(_) => failures.push(format!(
            "documents: no answer within {}s",
            PING_TIMEOUT.as_secs()
        )),
    }
    if let Some(paused) = state.delivery.unrecorded.status() {
        failures.push(paused);
    }
    for l in &config.listeners {
        if !state.bound.contains(&l.bind) {
            failures.push(format!(
                "listener {}: configured but not bound (takes a restart)",
                l.bind
            ));
        }
    }
    // Refusing the account is an answer: the pause says so on its own line.
    if config.upstream.mode == UpstreamMode::Relay && !state.delivery.account_pause.is_paused() {
        let window = config.admin.upstream_check_interval;
        if let Err(last_error) = state.delivery.upstream_contact.within(window) {
            let why = last_error.map(|e| format!(": {e}")).unwrap_or_default();
            failures.push(format!(
                "upstream: not reached in the last {}{why}",
                humantime::format_duration(window)
            ));
        }
    }
    failures
}

/// Sets the queue gauges from the store; on failure the last values stay
/// (a broken store shows on `/readyz`).
async fn refresh_queue_gauges(shared: &Shared) {
    match tokio::time::timeout(STATS_TIMEOUT, shared.queue.store().stats()).await {
        Ok(Ok(stats)) => crate::metrics::queue(&stats),
        Ok(Err(e)) => tracing::debug!(error = %e, "cannot read queue counts"),
        Err(_) => tracing::debug!("queue counts timed out"),
    }
}

async fn upkeep(state: Arc<AdminState>) {
    let mut tick = tokio::time::interval(UPKEEP_EVERY);
    loop {
        tick.tick().await;
        state.metrics.run_upkeep();
        refresh_queue_gauges(&state.shared).await;
    }
}

/// In relay mode, connects to the upstream (TLS and AUTH included) whenever
/// no delivery has done so for half of `admin.upstream_check_interval`, so
/// `/readyz` knows about an upstream outage before the next message does.
/// Checking at a quarter of the interval keeps a healthy upstream's last
/// contact well inside the window.
async fn probe_upstream(shared: Arc<Shared>, delivery: Arc<Handles>) {
    let mut was_ok = true;
    loop {
        let config = shared.config();
        let window = config.admin.upstream_check_interval;
        let stale = delivery
            .upstream_contact
            .age()
            .is_none_or(|age| age > window / 2);
        if config.upstream.mode == UpstreamMode::Relay && stale {
            // connect() bounds each step by upstream.timeout; this bounds the whole.
            let limit = config.upstream.timeout.saturating_mul(2);
            let result = match tokio::time::timeout(
                limit,
                relay::connect(&config, config.upstream.egress.first().map(|e| e.address)),
            )
            .await
            {
                Ok(Ok(conn)) => {
                    conn.quit().await;
                    Ok(())
                }
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("timed out".to_string()),
            };
            match result {
                Ok(()) => {
                    delivery.upstream_contact.ok();
                    if !was_ok {
                        tracing::info!("readiness probe: upstream reachable again");
                    }
                    was_ok = true;
                }
                Err(e) => {
                    delivery.upstream_contact.failed(&e);
                    if was_ok {
                        tracing::warn!(error = %e, "readiness probe: upstream not reachable");
                    }
                    was_ok = false;
                }
            }
        }
        tokio::time::sleep((window / 4).max(Duration::from_millis(250))).await;
    }
}

/// Basic auth (RFC 7617) on every route when `admin.username` is set.
async fn basic_auth(
    State(state): State<Arc<AdminState>>,
    request: Request,
    next: Next,
) -> Response {
    let config = state.shared.config();
    let (Some(user), Some(pass)) = (&config.admin.username, &config.admin.password) else {
        return next.run(request).await;
    };
    if crate::basic_auth::credentials_match(request.headers(), user, pass) {
        return next.run(request).await;
    }
    let mut response = (StatusCode::UNAUTHORIZED, "authentication required\n").into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"schleuse admin\", charset=\"UTF-8\""),
    );
    response
}
