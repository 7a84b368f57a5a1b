//! The Mailjet event webhook on the admin endpoint:
//! `POST [suppression] webhook_path`.
//!
//! - HTTP basic auth with `webhook_user`/`webhook_password` (compared in
//!   constant time, read again on every request so a reload applies), not
//!   the `[admin]` credentials: Mailjet only knows its own. A wrong path is
//!   `404` before any authentication, like every unknown path.
//! - The body (at most `webhook_max_body`, else `413`) is one event object
//!   or a "Version 2" array of them; unknown fields and unusable elements
//!   are skipped, not refused.
//! - `200` once every event is stored (new or known): Mailjet stops
//!   retrying. A store failure answers `503` and Mailjet retries the batch
//!   later; events stored before the failure are recognised then by their
//!   key and not applied twice. A body that is not JSON gets `400`.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use crate::state::Shared;

/// The webhook's routes, when `webhook_path` is set. The path and the body
/// limit are read here, once: changing them takes a restart.
pub fn router(shared: Arc<Shared>) -> Option<Router> {
    let config = shared.config();
    let path = config.suppression.webhook_path.clone()?;
    let limit = usize::try_from(config.suppression.webhook_max_body).unwrap_or(usize::MAX);
    tracing::info!(
        "admin endpoint: Mailjet event webhook enabled (path from [suppression] webhook_path)"
    );
    Some(
        Router::new()
            .route(&path, post(receive))
            .layer(DefaultBodyLimit::max(limit))
            .route_layer(middleware::from_fn_with_state(Arc::clone(&shared), auth))
            .with_state(shared),
    )
}

async fn auth(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let config = shared.config();
    let s = &config.suppression;
    let (Some(_), Some(user), Some(pass)) = (&s.webhook_path, &s.webhook_user, &s.webhook_password)
    else {
        // Switched off by a reload: as if the path did not exist.
        return StatusCode::NOT_FOUND.into_response();
    };
    if crate::basic_auth::credentials_match(request.headers(), user, pass) {
        return next.run(request).await;
    }
    tracing::info!("webhook: request without valid credentials refused");
    let mut response = (StatusCode::UNAUTHORIZED, "authentication required\n").into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"schleuse webhook\", charset=\"UTF-8\""),
    );
    response
}

async fn receive(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let events = match super::mailjet::parse_body(&body) {
        Ok(e) => e,
        Err(e) => {
            tracing::info!(error = %e, bytes = body.len(), "webhook: body refused");
            return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response();
        }
    };
    let config = shared.config();
    match super::ingest(shared.queue.store().as_ref(), &config, events).await {
        Ok(done) => {
            if done.notices > 0 {
                shared.queue.wake();
            }
            tracing::info!(
                new = done.new,
                repeated = done.repeated,
                skipped = done.skipped,
                matched = done.matched,
                changed = done.changed,
                notices = done.notices,
                suppressed = done.suppressed,
                "webhook: Mailjet events received"
            );
            (
                StatusCode::OK,
                format!(
                    "ok: {} new, {} repeated, {} skipped, {} suppressed\n",
                    done.new, done.repeated, done.skipped, done.suppressed
                ),
            )
                .into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "webhook: cannot store events; Mailjet will retry");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "cannot store the events now; retry later\n",
            )
                .into_response()
        }
    }
}
