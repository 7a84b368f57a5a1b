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

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::hash::Hash;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::Connected;
use axum::extract::rejection::{FormRejection, PathRejection};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Form, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use axum::serve::IncomingStream;
use governor::clock::{Clock, DefaultClock};
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::state::keyed::ShrinkableKeyedStateStore;
use governor::{Quota, RateLimiter};
use ipnet::IpNet;
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};

use super::page::{self, Notice};
use super::{Documents, DownloadOutcome, Language, LinkView, Lookup, Opened, VaultError};

const LOG_TARGET: &str = "schleuse::links";

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

struct Shared {
    docs: Arc<dyn Documents>,
    language: Language,
    trusted_proxies: Vec<IpNet>,
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

/// The budget key of a client address: IPv6 clients are counted by /64,
/// the block one customer gets.
fn ip_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u64::MAX as u128))),
        v4 => v4,
    }
}

/// The client of a request, as far as it can be told.
struct Client {
    ip: IpAddr,
}

impl FromRequestParts<Arc<Shared>> for Client {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<Shared>,
    ) -> Result<Self, Self::Rejection> {
        // [`serve`] provides `Peer`; a caller using plain axum::serve with
        // `SocketAddr` connect info works too.
        let peer = parts
            .extensions
            .get::<ConnectInfo<Peer>>()
            .map(|ConnectInfo(Peer(addr))| addr.ip())
            .or_else(|| {
                parts
                    .extensions
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|ConnectInfo(addr)| addr.ip())
            });
        Ok(Client {
            ip: client_ip(peer, &parts.headers, &state.trusted_proxies),
        })
    }
}

/// The client address: the peer, or, when the peer is a trusted proxy, the
/// rightmost `X-Forwarded-For` entry that is not a trusted proxy. Entries
/// left of that were written by the client and prove nothing. Without a
/// peer (not served by [`serve`]) all such requests share the unspecified
/// address, so the limits still hold.
fn client_ip(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let Some(peer) = peer else {
        return IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    };
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let mut hop = peer.to_canonical();
    if !is_trusted(&hop) {
        return hop;
    }
    let mut entries = Vec::new();
    for value in headers.get_all(HeaderName::from_static("x-forwarded-for")) {
        match value.to_str() {
            Ok(list) => entries.extend(list.split(',').map(parse_forwarded)),
            Err(_) => entries.push(None),
        }
    }
    for entry in entries.into_iter().rev() {
        // Garbage where a proxy should have written an address: believe
        // nothing further left, count the request against the last hop.
        let Some(ip) = entry else {
            break;
        };
        if !is_trusted(&ip) {
            return ip;
        }
        hop = ip;
    }
    hop
}

/// One `X-Forwarded-For` entry: `203.0.113.7`, `2001:db8::1`, and the
/// forms with a port some proxies write (`203.0.113.7:4711`,
/// `[2001:db8::1]:4711`).
fn parse_forwarded(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    let ip = entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            entry
                .strip_prefix('[')
                .and_then(|e| e.strip_suffix(']'))
                .and_then(|e| e.parse::<Ipv6Addr>().ok())
                .map(IpAddr::V6)
        })?;
    Some(ip.to_canonical())
}

/// The document itself. Nothing in it may be rendered by the browser
/// (`attachment`, `nosniff`, a sandboxing CSP), whatever the sender
/// declared its type to be.
fn file_response(view: &LinkView, data: Vec<u8>) -> Response {
    let len = data.len();
    let mut resp = Response::new(Body::from(data));
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type(&view.content_type));
    headers.insert(
        header::CONTENT_DISPOSITION,
        content_disposition(&view.file_name),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

/// The declared type if it is a plain `type/subtype` (RFC 6838 names;
/// parameters dropped), else `application/octet-stream`.
fn content_type(declared: &str) -> HeaderValue {
    const FALLBACK: HeaderValue = HeaderValue::from_static("application/octet-stream");
    fn restricted_name(name: &str) -> bool {
        (1..=127).contains(&name.len())
            && name.as_bytes()[0].is_ascii_alphanumeric()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    }
    let essence = declared.split(';').next().unwrap_or_default().trim();
    match essence.split_once('/') {
        Some((ty, sub)) if restricted_name(ty) && restricted_name(sub) => {
            HeaderValue::from_str(&essence.to_ascii_lowercase()).unwrap_or(FALLBACK)
        }
        _ => FALLBACK,
    }
}

/// `attachment` with an ASCII `filename` for old clients and the exact name
/// as `filename*` (RFC 6266, RFC 5987). Characters that could end the
/// quoted string, name a directory or reorder the displayed name are
/// replaced in both.
fn content_disposition(name: &str) -> HeaderValue {
    let unsafe_char =
        |c: char| c.is_control() || page::is_bidi_control(c) || matches!(c, '/' | '\\');
    let name: String = name
        .trim()
        .chars()
        .map(|c| if unsafe_char(c) { '_' } else { c })
        .collect();
    let name = if name.is_empty() {
        "download".to_owned()
    } else {
        name
    };

    let mut ascii = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            'ä' => ascii.push_str("ae"),
            'ö' => ascii.push_str("oe"),
            'ü' => ascii.push_str("ue"),
            'Ä' => ascii.push_str("Ae"),
            'Ö' => ascii.push_str("Oe"),
            'Ü' => ascii.push_str("Ue"),
            'ß' => ascii.push_str("ss"),
            // `%` too: some browsers decode `%xx` in the plain filename.
            '"' | '%' => ascii.push('_'),
            c if c == ' ' || c.is_ascii_graphic() => ascii.push(c),
            _ => ascii.push('_'),
        }
    }

    let mut encoded = String::with_capacity(name.len() * 3);
    for b in name.bytes() {
        // RFC 5987 attr-char.
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    HeaderValue::from_str(&format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}"
    ))
    .unwrap_or(HeaderValue::from_static("attachment"))
}

/// The headers of every HTML page. The CSP allows exactly the one inline
/// style of [`page::STYLE`] by its hash, and nothing else.
fn page_headers() -> HeaderMap {
    use base64::Engine as _;
    let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, page::STYLE.as_bytes());
    let hash = base64::engine::general_purpose::STANDARD.encode(hash.as_ref());
    let csp = format!(
        "default-src 'none'; style-src 'sha256-{hash}'; form-action 'self'; \
         frame-ancestors 'none'; base-uri 'none'"
    );
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_str(&csp).unwrap_or(HeaderValue::from_static(
            "default-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        )),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        HeaderName::from_static("x-robots-tag"),
        HeaderValue::from_static("noindex, nofollow"),
    );
    headers
}

/// A keyed GCRA limiter (governor) whose cells can be given back.
///
/// governor can only take a cell or refuse; the service needs "take one
/// now, return it if the password was right". The state store is therefore
/// our own map, shared with the limiter, so that [`Limiter::give_back`] can
/// undo a take. Burst `n` per `window` means: `n` wrong passwords at once,
/// then one more per `window / n`.
struct Limiter<K: Hash + Eq + Clone> {
    cells: Cells<K>,
    limiter: RateLimiter<K, Cells<K>, DefaultClock>,
    /// The time one cell stands for, in the limiter's terms.
    cell: Nanos,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    fn new(burst: u32, window: Duration) -> Self {
        // Zero attempts would lock out the right password too; one is the
        // least that still lets the owner in.
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        let period = (window / burst.get()).max(Duration::from_millis(1));
        let quota = Quota::with_period(period)
            .unwrap_or(Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        let cells = Cells::default();
        Limiter {
            limiter: RateLimiter::new(quota, cells.clone(), DefaultClock::default()),
            cells,
            cell: Nanos::from(quota.replenish_interval()),
        }
    }

    /// Takes a cell, or tells how long until one is free.
    fn take(&self, key: &K) -> Result<(), Duration> {
        match self.limiter.check_key(key) {
            Ok(_) => Ok(()),
            Err(not_until) => Err(not_until.wait_time_from(self.limiter.clock().now())),
        }
    }

    /// Undoes one [`Limiter::take`]. Taking moved the key's theoretical
    /// arrival time one cell later (from `max(tat, now)`); moving it back is
    /// exact, or lands in the past, which GCRA treats as a full budget.
    fn give_back(&self, key: &K) {
        if let Some(tat) = self.cells.lock().get_mut(key) {
            *tat = tat.saturating_sub(self.cell);
        }
    }

    fn housekeeping(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.limiter.len()
    }
}

/// governor's keyed state: key → theoretical arrival time of the next cell.
struct Cells<K>(Arc<Mutex<HashMap<K, Nanos>>>);

impl<K> Clone for Cells<K> {
    fn clone(&self) -> Self {
        Cells(Arc::clone(&self.0))
    }
}

impl<K> Default for Cells<K> {
    fn default() -> Self {
        Cells(Arc::new(Mutex::new(HashMap::new())))
    }
}

impl<K> Cells<K> {
    fn lock(&self) -> MutexGuard<'_, HashMap<K, Nanos>> {
        // A panic elsewhere while holding the lock leaves a valid map.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<K: Hash + Eq + Clone> StateStore for Cells<K> {
    type Key = K;

    fn measure_and_replace<T, F, E>(&self, key: &K, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut map = self.lock();
        match map.get_mut(key) {
            Some(tat) => {
                let (out, next) = f(Some(*tat))?;
                *tat = next;
                Ok(out)
            }
            None => {
                let (out, next) = f(None)?;
                map.insert(key.clone(), next);
                Ok(out)
            }
        }
    }
}

impl<K: Hash + Eq + Clone> ShrinkableKeyedStateStore<K> for Cells<K> {
    fn retain_recent(&self, drop_below: Nanos) {
        self.lock().retain(|_, tat| *tat > drop_below);
    }

    fn shrink_to_fit(&self) {
        self.lock().shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

/// The TCP listener of [`serve`]: axum alone retries failed accepts
/// silently (its logging needs a feature this crate does not enable).
struct LoggedListener(TcpListener);

impl axum::serve::Listener for LoggedListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            match self.0.accept().await {
                Ok((stream, addr)) => {
                    // Pages and downloads are written in one go; waiting
                    // for Nagle only adds latency.
                    let _ = stream.set_nodelay(true);
                    return (stream, addr);
                }
                // The client gave up before we got to it.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::ConnectionReset
                            | io::ErrorKind::ConnectionRefused
                    ) =>
                {
                    tracing::debug!(target: LOG_TARGET, error = %e, "connection lost before accept");
                }
                Err(e) => {
                    // Typically out of file descriptors: waiting lets some
                    // connections close instead of spinning on the error.
                    tracing::error!(
                        target: LOG_TARGET,
                        error = %e,
                        "link service cannot accept connections; retrying in 1s"
                    );
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// The peer address of a connection accepted by [`LoggedListener`].
#[derive(Debug, Clone, Copy)]
struct Peer(SocketAddr);

impl Connected<IncomingStream<'_, LoggedListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, LoggedListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::store::BoxFuture;

    const PROTECTED: &str = "prot_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    const OPEN: &str = "open_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    const NASTY: &str = "nast_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    const GONE: &str = "gone_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    const BROKEN: &str = "brkn_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    const UNKNOWN: &str = "unkn_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    const SECRET: &str = "richtig-Passwort";

    struct FakeDoc {
        view: LinkView,
        data: Vec<u8>,
        password: Option<String>,
        gone: bool,
        broken: bool,
    }

    #[derive(Default)]
    struct Fake {
        docs: HashMap<String, FakeDoc>,
        records: Mutex<Vec<(String, DownloadOutcome, Option<IpAddr>)>>,
        lookups: AtomicUsize,
        opens: AtomicUsize,
    }

    impl Fake {
        fn add(&mut self, token: &str, name: &str, ty: &str, data: &[u8], password: Option<&str>) {
            self.docs.insert(
                token.to_owned(),
                FakeDoc {
                    view: LinkView {
                        id: format!("id-{}", &token[..4]),
                        file_name: name.to_owned(),
                        content_type: ty.to_owned(),
                        size: data.len() as u64,
                        expires_at: 1_767_139_200_000,
                        protected: password.is_some(),
                    },
                    data: data.to_vec(),
                    password: password.map(str::to_owned),
                    gone: false,
                    broken: false,
                },
            );
        }

        fn standard() -> Fake {
            let mut fake = Fake::default();
            let all_bytes: Vec<u8> = (0..=255).collect();
            fake.add(
                PROTECTED,
                "Bescheid Müller.pdf",
                "application/pdf",
                &all_bytes,
                Some(SECRET),
            );
            fake.add(
                OPEN,
                "Plan.txt",
                "text/plain; charset=utf-8",
                b"hello",
                None,
            );
            fake.add(NASTY, "<b>&\"x.pdf", "text/html\"><script>", b"x", None);
            fake.add(GONE, "old.pdf", "application/pdf", b"old", None);
            fake.add(BROKEN, "broken.pdf", "application/pdf", b"b", None);
            if let Some(d) = fake.docs.get_mut(GONE) {
                d.gone = true;
            }
            if let Some(d) = fake.docs.get_mut(BROKEN) {
                d.broken = true;
            }
            for i in 0..3 {
                fake.add(
                    &format!("lnk{i}_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
                    "a.pdf",
                    "application/pdf",
                    b"a",
                    Some(SECRET),
                );
            }
            fake
        }

        fn records(&self) -> Vec<(String, DownloadOutcome, Option<IpAddr>)> {
            self.records.lock().unwrap().clone()
        }

        fn opens(&self) -> usize {
            self.opens.load(Ordering::SeqCst)
        }
    }

    impl Documents for Fake {
        fn lookup(&self, token: &str) -> BoxFuture<'_, Result<Lookup, VaultError>> {
            self.lookups.fetch_add(1, Ordering::SeqCst);
            let result = match self.docs.get(token) {
                None => Ok(Lookup::Unknown),
                Some(d) if d.gone => Ok(Lookup::Gone {
                    id: d.view.id.clone(),
                }),
                Some(d) => Ok(Lookup::Active(d.view.clone())),
            };
            Box::pin(std::future::ready(result))
        }

        fn open(
            &self,
            token: &str,
            password: Option<&str>,
        ) -> BoxFuture<'_, Result<Opened, VaultError>> {
            self.opens.fetch_add(1, Ordering::SeqCst);
            let result = match self.docs.get(token) {
                None => Ok(Opened::Unknown),
                Some(d) if d.gone => Ok(Opened::Gone {
                    id: d.view.id.clone(),
                }),
                Some(d) if d.broken => Err(VaultError::Damaged(d.view.id.clone())),
                Some(d) if d.password.is_some() && d.password.as_deref() != password => {
                    Ok(Opened::WrongPassword {
                        view: d.view.clone(),
                    })
                }
                Some(d) => Ok(Opened::Document {
                    view: d.view.clone(),
                    data: d.data.clone(),
                }),
            };
            Box::pin(std::future::ready(result))
        }

        fn record(
            &self,
            link_id: &str,
            outcome: DownloadOutcome,
            ip: Option<IpAddr>,
        ) -> BoxFuture<'_, Result<(), VaultError>> {
            self.records
                .lock()
                .unwrap()
                .push((link_id.to_owned(), outcome, ip));
            Box::pin(std::future::ready(Ok(())))
        }
    }

    struct Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Reply {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }

        fn text(&self) -> String {
            String::from_utf8_lossy(&self.body).into_owned()
        }
    }

    struct Server {
        addr: SocketAddr,
        fake: Arc<Fake>,
    }

    impl Server {
        async fn start(fake: Fake, opts: ServiceOptions, windows: Windows) -> Server {
            let fake = Arc::new(fake);
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let router = build(fake.clone(), opts, windows);
            tokio::spawn(serve(listener, router, std::future::pending()));
            Server { addr, fake }
        }

        async fn standard() -> Server {
            Server::start(Fake::standard(), ServiceOptions::default(), long_windows()).await
        }

        async fn raw(&self, request: &[u8]) -> Reply {
            let mut stream = TcpStream::connect(self.addr).await.unwrap();
            stream.write_all(request).await.unwrap();
            let mut buf = Vec::new();
            // A server refusing a body may reset the connection after its
            // answer; what arrived is enough.
            let _ = stream.read_to_end(&mut buf).await;
            let split = buf
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .expect("no end of headers");
            let head = String::from_utf8(buf[..split].to_vec()).unwrap();
            let mut lines = head.split("\r\n");
            let status = lines.next().unwrap()[9..12].parse().unwrap();
            let headers = lines
                .map(|l| {
                    let (n, v) = l.split_once(':').unwrap();
                    (n.trim().to_owned(), v.trim().to_owned())
                })
                .collect();
            Reply {
                status,
                headers,
                body: buf[split + 4..].to_vec(),
            }
        }

        async fn request(&self, method: &str, path: &str, extra: &str, body: &str) -> Reply {
            let form = if method == "POST" {
                format!(
                    "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
                    body.len()
                )
            } else {
                String::new()
            };
            let req = format!(
                "{method} {path} HTTP/1.1\r\nHost: via.landkreis.example\r\n\
                 Connection: close\r\n{form}{extra}\r\n{body}"
            );
            self.raw(req.as_bytes()).await
        }

        async fn get(&self, token: &str) -> Reply {
            self.request("GET", &format!("/d/{token}"), "", "").await
        }

        async fn post(&self, token: &str, password: &str, extra: &str) -> Reply {
            let body = format!("password={password}");
            self.request("POST", &format!("/d/{token}"), extra, &body)
                .await
        }
    }

    fn long_windows() -> Windows {
        Windows {
            link: LINK_WINDOW,
            ip: IP_WINDOW,
        }
    }

    fn assert_page_headers(reply: &Reply) {
        use base64::Engine as _;
        let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, page::STYLE.as_bytes());
        let hash = base64::engine::general_purpose::STANDARD.encode(hash.as_ref());
        assert_eq!(
            reply.header("content-security-policy"),
            Some(
                format!(
                    "default-src 'none'; style-src 'sha256-{hash}'; form-action 'self'; \
                     frame-ancestors 'none'; base-uri 'none'"
                )
                .as_str()
            )
        );
        assert_eq!(
            reply.header("content-type"),
            Some("text/html; charset=utf-8")
        );
        assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(reply.header("referrer-policy"), Some("no-referrer"));
        assert_eq!(reply.header("cache-control"), Some("no-store"));
        assert_eq!(reply.header("x-frame-options"), Some("DENY"));
        assert_eq!(reply.header("set-cookie"), None);
    }

    const PASSWORD_INPUT: &str = "<input type=\"password\" id=\"password\" name=\"password\" \
                                  autocomplete=\"current-password\" required";

    #[tokio::test]
    async fn pages_show_documents_and_get_never_downloads() {
        let server = Server::standard().await;

        let reply = server.get(PROTECTED).await;
        assert_eq!(reply.status, 200);
        assert_page_headers(&reply);
        let html = reply.text();
        assert!(html.contains("<html lang=\"de\">"));
        assert!(html.contains("Bescheid Müller.pdf"));
        assert!(html.contains("256 Bytes"));
        assert!(html.contains("31.12.2025"));
        assert!(html.contains("<label for=\"password\">"));
        assert!(html.contains(PASSWORD_INPUT));
        assert!(html.contains("<form method=\"post\">"));
        assert!(!html.contains(PROTECTED), "the token is not echoed");

        let html = server.get(OPEN).await.text();
        assert!(!html.contains("type=\"password\""));
        assert!(html.contains("<button type=\"submit\">Herunterladen</button>"));

        let html = server.get(NASTY).await.text();
        assert!(html.contains("&lt;b&gt;&amp;&quot;x.pdf"));
        assert!(!html.contains("<b>&"));

        let head = server
            .request("HEAD", &format!("/d/{PROTECTED}"), "", "")
            .await;
        assert_eq!(head.status, 200);
        assert!(head.body.is_empty());

        assert_eq!(server.fake.opens(), 0, "a GET never opens");
        assert!(server.fake.records().is_empty(), "a GET never records");
    }

    #[tokio::test]
    async fn english_pages() {
        let opts = ServiceOptions {
            language: Language::En,
            ..ServiceOptions::default()
        };
        let server = Server::start(Fake::standard(), opts, long_windows()).await;
        let html = server.get(PROTECTED).await.text();
        assert!(html.contains("<html lang=\"en\">"));
        assert!(html.contains("2025-12-31"));
        assert!(html.contains(">Password</label>"));
    }

    #[tokio::test]
    async fn right_password_sends_the_exact_bytes() {
        let server = Server::standard().await;
        let reply = server.post(PROTECTED, SECRET, "").await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, (0..=255).collect::<Vec<u8>>());
        assert_eq!(reply.header("content-type"), Some("application/pdf"));
        assert_eq!(
            reply.header("content-disposition"),
            Some(
                "attachment; filename=\"Bescheid Mueller.pdf\"; \
                 filename*=UTF-8''Bescheid%20M%C3%BCller.pdf"
            )
        );
        assert_eq!(reply.header("content-length"), Some("256"));
        assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(
            reply.header("content-security-policy"),
            Some("default-src 'none'; sandbox")
        );
        assert_eq!(reply.header("cache-control"), Some("no-store"));
        assert_eq!(
            server.fake.records(),
            vec![("id-prot".to_owned(), DownloadOutcome::Downloaded, None)]
        );

        // Unprotected: the button posts an empty form, or none at all.
        let reply = server.request("POST", &format!("/d/{OPEN}"), "", "").await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, b"hello");
        assert_eq!(reply.header("content-type"), Some("text/plain"));
        let bare = format!(
            "POST /d/{OPEN} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        );
        assert_eq!(server.raw(bare.as_bytes()).await.status, 200);

        // A declared type that is not a plain type/subtype is not passed on.
        let reply = server.post(NASTY, "", "").await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.header("content-type"),
            Some("application/octet-stream")
        );
        assert_eq!(
            reply.header("content-disposition"),
            Some("attachment; filename=\"<b>&_x.pdf\"; filename*=UTF-8''%3Cb%3E&%22x.pdf")
        );
    }

    #[tokio::test]
    async fn wrong_passwords_are_refused_counted_and_limited() {
        let windows = Windows {
            link: Duration::from_secs(5),
            ip: IP_WINDOW,
        };
        let server = Server::start(Fake::standard(), ServiceOptions::default(), windows).await;

        // Four wrong, then the right one: under the limit it always works,
        // and it does not use up a try itself.
        for _ in 0..4 {
            let reply = server.post(PROTECTED, "falsch", "").await;
            assert_eq!(reply.status, 403);
            assert_page_headers(&reply);
            let html = reply.text();
            assert!(html.contains("Das Passwort ist falsch."));
            assert!(html.contains(PASSWORD_INPUT));
        }
        assert_eq!(server.post(PROTECTED, SECRET, "").await.status, 200);
        assert_eq!(server.post(PROTECTED, "falsch", "").await.status, 403);
        assert_eq!(server.fake.opens(), 6);

        // Sixth wrong one within the window: 429, and the password is not
        // tried, not even the right one.
        let reply = server.post(PROTECTED, "falsch", "").await;
        assert_eq!(reply.status, 429);
        assert_page_headers(&reply);
        let retry: u64 = reply.header("retry-after").unwrap().parse().unwrap();
        assert_eq!(retry, 1, "one cell per second");
        assert!(
            reply
                .text()
                .contains("Bitte versuchen Sie es in 1 Sekunde erneut.")
        );
        assert_eq!(server.post(PROTECTED, SECRET, "").await.status, 429);
        assert_eq!(server.fake.opens(), 6);

        let outcomes: Vec<DownloadOutcome> =
            server.fake.records().into_iter().map(|r| r.1).collect();
        use DownloadOutcome::*;
        assert_eq!(
            outcomes,
            [
                WrongPassword,
                WrongPassword,
                WrongPassword,
                WrongPassword,
                Downloaded,
                WrongPassword,
                RateLimited,
                RateLimited
            ]
        );

        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(server.post(PROTECTED, SECRET, "").await.status, 200);
    }

    #[tokio::test]
    async fn a_missing_password_is_no_attempt() {
        let server = Server::standard().await;
        for _ in 0..10 {
            let reply = server.post(PROTECTED, "", "").await;
            assert_eq!(reply.status, 400);
            assert!(reply.text().contains("Bitte geben Sie das Passwort ein."));
        }
        assert_eq!(server.fake.opens(), 0);
        assert!(server.fake.records().is_empty());
        assert_eq!(server.post(PROTECTED, SECRET, "").await.status, 200);
    }

    fn link(i: usize) -> String {
        format!("lnk{i}_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
    }

    #[tokio::test]
    async fn per_ip_limit_spans_links_and_trusts_the_proxy() {
        let opts = ServiceOptions {
            log_client_ip: true,
            attempts_per_ip: 3,
            ..ServiceOptions::default()
        };
        let server = Server::start(Fake::standard(), opts, long_windows()).await;
        let attacker = "X-Forwarded-For: 203.0.113.9\r\n";
        for i in 0..3 {
            assert_eq!(server.post(&link(i), "falsch", attacker).await.status, 403);
        }
        assert_eq!(server.post(&link(0), "falsch", attacker).await.status, 429);
        assert_eq!(server.fake.opens(), 3);

        // Someone else behind the same proxy is not affected; the client's
        // own (leftmost) entry is not believed.
        let other = "X-Forwarded-For: 203.0.113.9, 198.51.100.1\r\n";
        assert_eq!(server.post(&link(0), "falsch", other).await.status, 403);
        let records = server.fake.records();
        let attacker_ip: IpAddr = "203.0.113.9".parse().unwrap();
        let other_ip: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(records[0].2, Some(attacker_ip));
        assert_eq!(
            records[3],
            (
                "id-lnk0".into(),
                DownloadOutcome::RateLimited,
                Some(attacker_ip)
            )
        );
        assert_eq!(records[4].2, Some(other_ip));
    }

    #[tokio::test]
    async fn forwarded_for_is_ignored_from_untrusted_peers() {
        let opts = ServiceOptions {
            trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
            log_client_ip: true,
            attempts_per_ip: 2,
            ..ServiceOptions::default()
        };
        let server = Server::start(Fake::standard(), opts, long_windows()).await;
        let spoof = |n: u8| format!("X-Forwarded-For: 192.0.2.{n}\r\n");
        assert_eq!(server.post(&link(0), "falsch", &spoof(1)).await.status, 403);
        assert_eq!(server.post(&link(1), "falsch", &spoof(2)).await.status, 403);
        assert_eq!(server.post(&link(2), "falsch", &spoof(3)).await.status, 429);
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(server.fake.records().iter().all(|r| r.2 == Some(loopback)));
    }

    #[tokio::test]
    async fn client_ip_is_not_logged_by_default() {
        let server = Server::standard().await;
        server.post(PROTECTED, "falsch", "").await;
        server.post(GONE, "", "").await;
        assert_eq!(
            server.fake.records(),
            vec![
                ("id-prot".to_owned(), DownloadOutcome::WrongPassword, None),
                ("id-gone".to_owned(), DownloadOutcome::Gone, None),
            ]
        );
    }

    #[tokio::test]
    async fn gone_unknown_and_invalid() {
        let server = Server::standard().await;

        let reply = server.get(GONE).await;
        assert_eq!(reply.status, 410);
        assert_page_headers(&reply);
        assert!(
            reply
                .text()
                .contains("Dieser Link ist abgelaufen oder wurde widerrufen.")
        );
        assert!(server.fake.records().is_empty());
        assert_eq!(server.post(GONE, "", "").await.status, 410);
        assert_eq!(server.fake.opens(), 0);

        let reply = server.get(UNKNOWN).await;
        assert_eq!(reply.status, 404);
        assert_page_headers(&reply);
        assert_eq!(server.post(UNKNOWN, SECRET, "").await.status, 404);
        let lookups = server.fake.lookups.load(Ordering::SeqCst);

        let long = "A".repeat(101);
        for bad in [
            "short",
            long.as_str(),
            "prot_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.AAAA",
            "prot_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA%3CAAA",
            "prot_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA%FFAAA",
        ] {
            assert_eq!(server.get(bad).await.status, 404, "{bad}");
            assert_eq!(server.post(bad, SECRET, "").await.status, 404, "{bad}");
        }
        assert_eq!(server.fake.lookups.load(Ordering::SeqCst), lookups);

        for path in ["/", "/d/", &format!("/d/{PROTECTED}/x"), "/favicon.ico"] {
            let reply = server.request("GET", path, "", "").await;
            assert_eq!(reply.status, 404, "{path}");
            assert_page_headers(&reply);
        }
        let reply = server
            .request(
                "PUT",
                &format!("/d/{PROTECTED}"),
                "Content-Length: 0\r\n",
                "",
            )
            .await;
        assert_eq!(reply.status, 404);
        assert_eq!(server.fake.opens(), 0);
    }

    #[tokio::test]
    async fn store_errors_give_a_500_page() {
        let server = Server::standard().await;
        let reply = server.post(BROKEN, "", "").await;
        assert_eq!(reply.status, 500);
        assert_page_headers(&reply);
        assert!(
            reply
                .text()
                .contains("Der Download ist gerade nicht möglich.")
        );
    }

    #[tokio::test]
    async fn oversize_bodies_are_refused() {
        let server = Server::standard().await;
        let big = "x".repeat(9 * 1024);
        let reply = server.post(PROTECTED, &big, "").await;
        assert_eq!(reply.status, 413);
        assert_eq!(server.fake.opens(), 0);
        assert!(server.fake.records().is_empty());
    }

    #[tokio::test]
    async fn serve_stops_on_shutdown() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let router = router(Arc::new(Fake::standard()), ServiceOptions::default());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, router, async {
            let _ = rx.await;
        }));
        tx.send(()).unwrap();
        let result = tokio::time::timeout(Duration::from_secs(5), task).await;
        assert!(matches!(result, Ok(Ok(Ok(())))));
    }

    #[test]
    fn client_addresses() {
        let trusted: Vec<IpNet> = vec![
            "127.0.0.0/8".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let xff = |values: &[&str]| {
            let mut headers = HeaderMap::new();
            for v in values {
                headers.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
            }
            headers
        };
        let local = Some(ip("127.0.0.1"));

        assert_eq!(
            client_ip(Some(ip("192.0.2.1")), &xff(&["1.1.1.1"]), &trusted),
            ip("192.0.2.1")
        );
        assert_eq!(client_ip(local, &xff(&[]), &trusted), ip("127.0.0.1"));
        assert_eq!(
            client_ip(local, &xff(&["1.1.1.1, 2.2.2.2"]), &trusted),
            ip("2.2.2.2")
        );
        assert_eq!(
            client_ip(local, &xff(&["1.1.1.1, 2.2.2.2", "10.1.1.1"]), &trusted),
            ip("2.2.2.2")
        );
        assert_eq!(
            client_ip(local, &xff(&["2.2.2.2:4711"]), &trusted),
            ip("2.2.2.2")
        );
        assert_eq!(
            client_ip(local, &xff(&["[2001:db8::1]:4711"]), &trusted),
            ip("2001:db8::1")
        );
        assert_eq!(
            client_ip(local, &xff(&["[2001:db8::2]"]), &trusted),
            ip("2001:db8::2")
        );
        assert_eq!(
            client_ip(local, &xff(&["::ffff:2.2.2.2"]), &trusted),
            ip("2.2.2.2")
        );
        // Garbage written by the client left of real entries is never reached.
        assert_eq!(
            client_ip(local, &xff(&["evil, 2.2.2.2"]), &trusted),
            ip("2.2.2.2")
        );
        // Garbage on the right: the last believed hop answers for it.
        assert_eq!(
            client_ip(local, &xff(&["2.2.2.2, 10.0.0.5, junk"]), &trusted),
            ip("127.0.0.1")
        );
        assert_eq!(
            client_ip(local, &xff(&["10.0.0.5, 10.0.0.6"]), &trusted),
            ip("10.0.0.5")
        );
        let mut bad = HeaderMap::new();
        bad.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"2.2.2.2\xff").unwrap(),
        );
        assert_eq!(client_ip(local, &bad, &trusted), ip("127.0.0.1"));
        assert_eq!(
            client_ip(Some(ip("::ffff:127.0.0.1")), &xff(&["3.3.3.3"]), &trusted),
            ip("3.3.3.3")
        );
        assert_eq!(client_ip(None, &xff(&["3.3.3.3"]), &trusted), ip("0.0.0.0"));

        assert_eq!(ip_key(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1:2::"));
        assert_eq!(ip_key(ip("192.0.2.7")), ip("192.0.2.7"));
    }

    #[test]
    fn content_types() {
        let ct = |s: &str| content_type(s).to_str().unwrap().to_owned();
        assert_eq!(ct("application/pdf"), "application/pdf");
        assert_eq!(ct("Text/Plain; charset=utf-8"), "text/plain");
        assert_eq!(
            ct("application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
        );
        for bad in [
            "",
            "pdf",
            "/pdf",
            "application/",
            "a/b/c",
            "text/html\r\nX: y",
            "täxt/plain",
            "a b/c",
        ] {
            assert_eq!(ct(bad), "application/octet-stream", "{bad:?}");
        }
    }

    #[test]
    fn content_dispositions() {
        let cd = |s: &str| content_disposition(s).to_str().unwrap().to_owned();
        assert_eq!(
            cd("a.pdf"),
            "attachment; filename=\"a.pdf\"; filename*=UTF-8''a.pdf"
        );
        assert_eq!(
            cd("Größe 100%.pdf"),
            "attachment; filename=\"Groesse 100_.pdf\"; filename*=UTF-8''Gr%C3%B6%C3%9Fe%20100%25.pdf"
        );
        assert_eq!(
            cd("a\"b\\c/d\r\ne\u{202E}f.pdf"),
            "attachment; filename=\"a_b_c_d__e_f.pdf\"; filename*=UTF-8''a%22b_c_d__e_f.pdf"
        );
        assert_eq!(
            cd("  "),
            "attachment; filename=\"download\"; filename*=UTF-8''download"
        );
        assert_eq!(
            cd("日本.pdf"),
            "attachment; filename=\"__.pdf\"; filename*=UTF-8''%E6%97%A5%E6%9C%AC.pdf"
        );
    }

    #[test]
    fn limiter_gives_cells_back_and_forgets_old_keys() {
        let limiter: Limiter<String> = Limiter::new(2, Duration::from_millis(200));
        let key = "k".to_owned();
        assert!(limiter.take(&key).is_ok());
        assert!(limiter.take(&key).is_ok());
        assert!(limiter.take(&key).is_err());
        limiter.give_back(&key);
        assert!(limiter.take(&key).is_ok());
        assert!(limiter.take(&key).is_err());
        for i in 0..100 {
            let _ = limiter.take(&format!("other{i}"));
        }
        assert_eq!(limiter.len(), 101);
        std::thread::sleep(Duration::from_millis(350));
        limiter.housekeeping();
        assert_eq!(limiter.len(), 0);

        // Zero configured attempts still let the right password in once.
        let strict: Limiter<String> = Limiter::new(0, Duration::from_secs(60));
        assert!(strict.take(&key).is_ok());
        assert!(strict.take(&key).is_err());
    }
}
