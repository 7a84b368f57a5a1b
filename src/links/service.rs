//! The link service (SPEC §7): `GET /d/<token>` shows what a link holds,
//! `POST /d/<token>` downloads it. Meant to run behind the county's HTTPS
//! reverse proxy, possibly under a path prefix.
//!
//! - A `GET` (or `HEAD`) only looks: mail scanners fetch every link in a
//!   message, so a `GET` never opens, records or consumes anything. Even an
//!   unprotected document downloads through the form's `POST`.
//! - Wrong passwords are limited per link and client address (IPv6 by /64,
//!   which one attacker usually holds whole) with a growing back-off, per
//!   client across links, and per link from all clients together (see
//!   `crate::store::guesses`; kept in the store, so a restart forgets
//!   nothing). A request over a limit gets `429` and its password is not
//!   even tried.
//! - The token appears in no log line and no page; the client address is
//!   passed to [`Documents::record`] and logged only when configured.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::{FormRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Form, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use ipnet::IpNet;
use serde::Deserialize;
use tokio::net::TcpListener;

use super::client::{Client, LoggedListener, Peer, TrustedProxies, ip_key};
use super::page::{self, Notice};
use super::response::{file_response, page_headers};
use super::{Documents, DownloadOutcome, LOG_TARGET, Lookup, Opened, VaultError};
use crate::config::Language;
use crate::store::guesses::GuessPolicy;

/// A password form is a few dozen bytes; anything much larger is not from
/// the page.
const BODY_LIMIT: usize = 8 * 1024;

/// Retry-After when the password checks are saturated.
const BUSY_RETRY: Duration = Duration::from_secs(5);

/// How the link service behaves (`[links]` in the config).
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// Language of the pages.
    pub language: Language,
    /// Peers whose `X-Forwarded-For` is believed. The client address is the
    /// rightmost entry that is not one of these.
    pub trusted_proxies: Vec<IpNet>,
    /// Pass the client address to [`Documents::record`] and the log.
    pub log_client_ip: bool,
    /// Limits on wrong passwords.
    pub guesses: GuessPolicy,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        ServiceOptions {
            language: Language::De,
            trusted_proxies: vec![
                IpNet::new_assert(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8),
                IpNet::new_assert(IpAddr::V6(Ipv6Addr::LOCALHOST), 128),
            ],
            log_client_ip: false,
            guesses: GuessPolicy::default(),
        }
    }
}

/// The routes of the link service; serve them with [`serve`] so the client
/// address is known.
pub fn router(docs: Arc<dyn Documents>, opts: ServiceOptions) -> Router {
    let shared = Arc::new(Shared {
        docs,
        language: opts.language,
        trusted_proxies: opts.trusted_proxies,
        log_client_ip: opts.log_client_ip,
        guesses: opts.guesses,
        page_headers: page_headers(),
    });
    Router::new()
        .route("/d/{token}", get(show).post(download).fallback(not_found))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(shared)
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets the
/// requests in progress finish. Failed accepts are logged and retried, never
/// fatal.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    axum::serve(
        LoggedListener(listener),
        router.into_make_service_with_connect_info::<Peer>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

pub(super) struct Shared {
    docs: Arc<dyn Documents>,
    language: Language,
    trusted_proxies: Vec<IpNet>,
    log_client_ip: bool,
    guesses: GuessPolicy,
    page_headers: HeaderMap,
}

impl TrustedProxies for Shared {
    fn trusted_proxies(&self) -> &[IpNet] {
        &self.trusted_proxies
    }
}

#[derive(Deserialize)]
struct PasswordForm {
    password: Option<String>,
}

async fn show(
    State(s): State<Arc<Shared>>,
    token: Result<Path<String>, PathRejection>,
) -> Response {
    let Some(token) = plausible(token) else {
        return s.not_found();
    };
    match s.docs.lookup(&token).await {
        Ok(Lookup::Active(view)) => s.page(
            StatusCode::OK,
            page::document(s.language, &view, Notice::None),
        ),
        Ok(Lookup::Gone { .. }) => s.page(StatusCode::GONE, page::gone(s.language)),
        Ok(Lookup::Unknown) => s.not_found(),
        Err(e) => s.failed(None, &e),
    }
}

async fn download(
    State(s): State<Arc<Shared>>,
    client: Client,
    token: Result<Path<String>, PathRejection>,
    form: Result<Form<PasswordForm>, FormRejection>,
) -> Response {
    let Some(token) = plausible(token) else {
        return s.not_found();
    };
    let password = match form {
        Ok(Form(form)) => form.password.filter(|p| !p.is_empty()),
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return s.page(StatusCode::PAYLOAD_TOO_LARGE, page::bad_request(s.language));
        }
        // No form at all (`curl -X POST`): fine for an unprotected document,
        // "no password" for a protected one.
        Err(_) => None,
    };
    let ip = client.ip;

    let view = match s.docs.lookup(&token).await {
        Ok(Lookup::Active(view)) => view,
        Ok(Lookup::Gone { id }) => return s.gone(&id, ip).await,
        Ok(Lookup::Unknown) => {
            s.log(None, "unknown", ip);
            return s.not_found();
        }
        Err(e) => return s.failed(None, &e),
    };

    let mut guess = None;
    if view.protected {
        // An empty submit is no guess: it neither counts nor costs a
        // key derivation.
        if password.is_none() {
            s.log(Some(&view.id), "password_missing", ip);
            return s.page(
                StatusCode::BAD_REQUEST,
                page::document(s.language, &view, Notice::PasswordMissing),
            );
        }
        // Taken before the password is tried (rather than counted after),
        // so parallel guesses stay inside the limits too: a thousand
        // requests sent at once get five tries, not a thousand.
        match s.docs.take_guess(&view.id, ip_key(ip), s.guesses).await {
            Ok(Ok(())) => guess = Some(view.id.clone()),
            Ok(Err(wait)) => {
                s.record(&view.id, DownloadOutcome::RateLimited, ip).await;
                return s.rate_limited(wait);
            }
            Err(e) => return s.failed(Some(&view.id), &e),
        }
    }

    let password = if view.protected {
        password.as_deref()
    } else {
        None
    };
    // A client that goes away from here on keeps its attempt counted: it
    // never learns whether the guess was right, and the owner loses at
    // most one of several tries.
    let opened = s.docs.open(&token, password).await;
    match opened {
        Ok(Opened::Document { view, data }) => {
            // A right password is no failed attempt: hand it back.
            s.give_back(guess, ip).await;
            s.record(&view.id, DownloadOutcome::Downloaded, ip).await;
            file_response(&view, data)
        }
        Ok(Opened::WrongPassword { view }) => {
            s.record(&view.id, DownloadOutcome::WrongPassword, ip).await;
            s.page(
                StatusCode::FORBIDDEN,
                page::document(s.language, &view, Notice::WrongPassword),
            )
        }
        // Gone between the look-up and the opening: no password was tried.
        Ok(Opened::Gone { id }) => {
            s.give_back(guess, ip).await;
            s.gone(&id, ip).await
        }
        Ok(Opened::Unknown) => {
            s.give_back(guess, ip).await;
            s.log(None, "unknown", ip);
            s.not_found()
        }
        Err(e) => {
            // Not the client's fault: the attempt does not count.
            s.give_back(guess, ip).await;
            s.failed(Some(&view.id), &e)
        }
    }
}

async fn not_found(State(s): State<Arc<Shared>>) -> Response {
    s.not_found()
}

/// The token from the path, if it can be one: tokens are base64url of at
/// least 128 random bits. Anything else is answered without asking the
/// store.
fn plausible(token: Result<Path<String>, PathRejection>) -> Option<String> {
    let Ok(Path(token)) = token else {
        return None;
    };
    let ok = (20..=100).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then_some(token)
}

impl Shared {
    fn page(&self, status: StatusCode, html: String) -> Response {
        let mut resp = Response::new(Body::from(html));
        *resp.status_mut() = status;
        resp.headers_mut().extend(self.page_headers.clone());
        resp
    }

    fn not_found(&self) -> Response {
        self.page(StatusCode::NOT_FOUND, page::not_found(self.language))
    }

    async fn gone(&self, id: &str, ip: IpAddr) -> Response {
        self.record(id, DownloadOutcome::Gone, ip).await;
        self.page(StatusCode::GONE, page::gone(self.language))
    }

    fn failed(&self, id: Option<&str>, error: &VaultError) -> Response {
        if let VaultError::Busy = error {
            // A flood of password checks: the same answer as the limits.
            return self.rate_limited(BUSY_RETRY);
        }
        tracing::error!(
            target: LOG_TARGET,
            link = id.unwrap_or("-"),
            error = %error,
            "cannot serve a document"
        );
        self.page(
            StatusCode::INTERNAL_SERVER_ERROR,
            page::unavailable(self.language),
        )
    }

    fn rate_limited(&self, wait: Duration) -> Response {
        // Whole seconds, rounded up: a client that waits exactly this long
        // must not be refused again.
        let secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
        let mut resp = self.page(
            StatusCode::TOO_MANY_REQUESTS,
            page::rate_limited(self.language, Duration::from_secs(secs)),
        );
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        resp
    }

    /// One download-log entry and one log line. A failing download log does
    /// not fail the download: the recipient is not the one to tell.
    async fn record(&self, id: &str, outcome: DownloadOutcome, ip: IpAddr) {
        let logged_ip = self.log_client_ip.then_some(ip);
        if let Err(e) = self.docs.record(id, outcome, logged_ip).await {
            tracing::error!(
                target: LOG_TARGET,
                link = id,
                outcome = outcome.as_str(),
                error = %e,
                "cannot write the download log"
            );
        }
        self.log(Some(id), outcome.as_str(), ip);
    }

    fn log(&self, id: Option<&str>, outcome: &str, ip: IpAddr) {
        let link = id.unwrap_or("-");
        if self.log_client_ip {
            tracing::info!(target: LOG_TARGET, link, outcome, client = %ip, "download attempt");
        } else {
            tracing::info!(target: LOG_TARGET, link, outcome, "download attempt");
        }
    }

    /// Hands back the attempt taken for `link`, if one was.
    async fn give_back(&self, link: Option<String>, ip: IpAddr) {
        let Some(link) = link else { return };
        if let Err(e) = self
            .docs
            .give_back_guess(&link, ip_key(ip), self.guesses)
            .await
        {
            tracing::error!(
                target: LOG_TARGET,
                link,
                error = %e,
                "cannot hand back a password attempt"
            );
        }
    }
}

#[cfg(test)]
mod tests;
