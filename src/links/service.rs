//! The link service (SPEC §7): `GET /d/<token>` shows what a link holds,
//! `POST /d/<token>` downloads it. Meant to run behind the county's HTTPS
//! reverse proxy, possibly under a path prefix.
//!
//! - A `GET` (or `HEAD`) only looks: mail scanners fetch every link in a
//!   message, so a `GET` never opens, records or consumes anything. Even an
//!   unprotected document downloads through the form's `POST`.
//! - Wrong passwords are limited per link and per client address (IPv6 by
//!   /64, which one attacker usually holds whole). A request over either
//!   limit gets `429` and its password is not even tried.
//! - The token appears in no log line and no page; the client address is
//!   passed to [`Documents::record`] and logged only when configured.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
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

use super::client::{Client, LoggedListener, Peer, ip_key};
use super::limiter::Limiter;
use super::page::{self, Notice};
use super::response::{file_response, page_headers};
use super::{Documents, DownloadOutcome, Language, Lookup, Opened, VaultError};

pub(super) const LOG_TARGET: &str = "schleuse::links";

/// A password form is a few dozen bytes; anything much larger is not from
/// the page.
const BODY_LIMIT: usize = 8 * 1024;

/// The windows of `attempts_per_link` and `attempts_per_ip`.
const LINK_WINDOW: Duration = Duration::from_secs(15 * 60);
const IP_WINDOW: Duration = Duration::from_secs(60 * 60);

/// Stale limiter entries are dropped every this many password attempts, so
/// the maps hold only the keys of the last window, whatever an attacker
/// sends.
const HOUSEKEEPING_EVERY: u32 = 256;

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
    /// Wrong passwords allowed per link per 15 minutes.
    pub attempts_per_link: u32,
    /// Wrong passwords allowed per client address per hour.
    pub attempts_per_ip: u32,
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
            attempts_per_link: 5,
            attempts_per_ip: 20,
        }
    }
}

/// The routes of the link service; serve them with [`serve`] so the client
/// address is known.
pub fn router(docs: Arc<dyn Documents>, opts: ServiceOptions) -> Router {
    build(
        docs,
        opts,
        Windows {
            link: LINK_WINDOW,
            ip: IP_WINDOW,
        },
    )
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

/// The rate-limit windows; only tests shorten them.
#[derive(Debug, Clone, Copy)]
struct Windows {
    link: Duration,
    ip: Duration,
}

fn build(docs: Arc<dyn Documents>, opts: ServiceOptions, windows: Windows) -> Router {
    let shared = Arc::new(Shared {
        docs,
        language: opts.language,
        trusted_proxies: opts.trusted_proxies,
        log_client_ip: opts.log_client_ip,
        links: Limiter::new(opts.attempts_per_link, windows.link),
        ips: Limiter::new(opts.attempts_per_ip, windows.ip),
        attempts: AtomicU32::new(0),
        page_headers: page_headers(),
    });
    Router::new()
        .route("/d/{token}", get(show).post(download).fallback(not_found))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(shared)
}

pub(super) struct Shared {
    docs: Arc<dyn Documents>,
    language: Language,
    pub(super) trusted_proxies: Vec<IpNet>,
    log_client_ip: bool,
    /// Wrong passwords per link id.
    links: Limiter<String>,
    /// Wrong passwords per client address (see [`ip_key`]).
    ips: Limiter<IpAddr>,
    attempts: AtomicU32,
    page_headers: HeaderMap,
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

    let mut reservation = None;
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
        match s.reserve(&view.id, ip) {
            Ok(r) => reservation = Some(r),
            Err(wait) => {
                s.record(&view.id, DownloadOutcome::RateLimited, ip).await;
                return s.rate_limited(wait);
            }
        }
    }

    let password = if view.protected {
        password.as_deref()
    } else {
        None
    };
    let opened = s.docs.open(&token, password).await;
    match opened {
        Ok(Opened::Document { view, data }) => {
            // A right password is no failed attempt: give the cells back.
            drop(reservation);
            s.record(&view.id, DownloadOutcome::Downloaded, ip).await;
            file_response(&view, data)
        }
        Ok(Opened::WrongPassword { view }) => {
            if let Some(r) = reservation {
                r.keep();
            }
            s.record(&view.id, DownloadOutcome::WrongPassword, ip).await;
            s.page(
                StatusCode::FORBIDDEN,
                page::document(s.language, &view, Notice::WrongPassword),
            )
        }
        Ok(Opened::Gone { id }) => s.gone(&id, ip).await,
        Ok(Opened::Unknown) => {
            s.log(None, "unknown", ip);
            s.not_found()
        }
        Err(e) => s.failed(Some(&view.id), &e),
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

    /// Takes one cell from the link's and from the client's budget before
    /// the password is tried; [`Reservation`] gives them back unless the
    /// password turns out wrong. Reserving first (rather than checking, then
    /// counting afterwards) keeps parallel guesses inside the limit too:
    /// a thousand requests sent at once get five tries, not a thousand.
    fn reserve(&self, link: &str, ip: IpAddr) -> Result<Reservation<'_>, Duration> {
        if self
            .attempts
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(HOUSEKEEPING_EVERY)
        {
            self.links.housekeeping();
            self.ips.housekeeping();
        }
        let link = link.to_owned();
        self.links.take(&link)?;
        let ip = ip_key(ip);
        if let Err(wait) = self.ips.take(&ip) {
            self.links.give_back(&link);
            return Err(wait);
        }
        Ok(Reservation {
            shared: self,
            link,
            ip,
            kept: false,
        })
    }
}

/// One cell of each budget, held while a password is tried. Dropping it
/// gives the cells back, also when the client goes away mid-request (it
/// never learns whether its guess was right).
struct Reservation<'a> {
    shared: &'a Shared,
    link: String,
    ip: IpAddr,
    kept: bool,
}

impl Reservation<'_> {
    /// The password was wrong: the cells stay used.
    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.shared.links.give_back(&self.link);
            self.shared.ips.give_back(&self.ip);
        }
    }
}

#[cfg(test)]
mod tests;
