//! What the fuzz targets share: one runtime with a paused clock, and a
//! gateway environment built the way `schleuse run` builds it (config,
//! SQLite store and document files in a temp dir, vault, one account),
//! without listeners or delivery. The targets feed their input to the real
//! code in-process: the SMTP session over `tokio::io::duplex`, the link
//! service and the Mailjet webhook as axum routers.

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderName, HeaderValue, Method, Request, Uri};
use schleuse::accounts::{Account, Accounts};
use schleuse::config::ListenerTls;
use schleuse::links::service::{self, ServiceOptions};
use schleuse::links::vault::{Plain, SealOptions, Vault};
use schleuse::queue::Queue;
use schleuse::state::Shared;
use schleuse::session::{Origin, Session};
use schleuse::store::guesses::GuessPolicy;
use schleuse::store::{NewMessage, new_queue_id, now_ms};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;
use tokio::sync::watch;
use tower::ServiceExt;

/// The one account: `AUTH PLAIN AGZ1enoAZnV6eg==` (fuzz / fuzz).
pub const USER: &str = "fuzz";
pub const PASSWORD: &str = "fuzz";
/// The password of the protected link document.
pub const LINK_PASSWORD: &str = "geheim-fuzz";
/// Where the webhook listens, and its credentials (`mailjet:fuzz-hook`).
pub const WEBHOOK_PATH: &str = "/hooks/mailjet/Fuzz0123456789abcdef";
pub const WEBHOOK_AUTH: &str = "Basic bWFpbGpldDpmdXp6LWhvb2s=";

/// The environment is rebuilt after this many inputs: the queue, the
/// download log and the limiters grow with every input, and a fresh one
/// keeps inputs from depending on long histories.
const ENV_USES: u32 = 1000;

/// A current-thread runtime whose clock is paused: the session's sleeps
/// (the 1 s AUTH failure delay) and timeouts advance at once when nothing
/// else can run, so they cost no wall time. Blocking tasks (argon2, the
/// store's reads) hold the clock while they run.
pub fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("tokio runtime")
    })
}

pub struct Env {
    _dir: tempfile::TempDir,
    _shutdown: watch::Sender<bool>,
    pub shared: Arc<Shared>,
    /// Tokens of the three link documents: open, password-protected,
    /// revoked (the link service's `$OPEN`, `$PROT`, `$GONE`).
    pub tokens: [String; 3],
    pub links: Router,
    pub webhook: Router,
    uses: u32,
    sessions: u32,
}

thread_local! {
    static ENV: RefCell<Option<Env>> = const { RefCell::new(None) };
}

/// Runs `f` with the environment, building a fresh one when needed.
pub fn with_env<T>(f: impl FnOnce(&mut Env) -> T) -> T {
    ENV.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|e| e.uses >= ENV_USES) {
            // The old one first: its store threads and files go away.
            *slot = None;
            *slot = Some(runtime().block_on(Env::build()));
        }
        let env = slot.as_mut().expect("just built");
        env.uses += 1;
        f(env)
    })
}

/// A temp dir on tmpfs when there is one: the store fsyncs every commit.
fn temp_dir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    let builder = || {
        let mut b = tempfile::Builder::new();
        b.prefix("schleuse-fuzz-");
        b
    };
    if shm.is_dir()
        && let Ok(dir) = builder().tempdir_in(shm)
    {
        return dir;
    }
    builder().tempdir().expect("temp dir")
}

fn config_text(data_dir: &std::path::Path) -> String {
    format!(
        r#"
[server]
hostname = "gateway.fuzz.example"
data_dir = "{}"

[[listener]]
bind = "127.0.0.1:2525"
tls = "none"

[limits]
# Inputs share the account: its quotas would fill up within a run.
account_messages_per_hour = 0
account_messages_per_day = 0
account_recipients_per_day = 0

[suppression]
webhook_path = "{WEBHOOK_PATH}"
webhook_user = "mailjet"
webhook_password = "fuzz-hook"
"#,
        data_dir.display()
    )
}

/// A cheap argon2id hash (8 KiB, one pass): verification reads the cost
/// from the hash, so a right password costs microseconds, not 19 MiB.
fn cheap_hash(password: &str) -> String {
    use argon2::password_hash::PasswordHasher;
    use argon2::{Algorithm, Argon2, Params, Version};
    let params = Params::new(8, 1, 1, None).expect("argon2 params");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password.as_bytes())
        .expect("argon2 hash")
        .to_string()
}

impl Env {
    async fn build() -> Env {
        let dir = temp_dir();
        let config = schleuse::fuzzing::config(&config_text(dir.path())).expect("fuzz config");
        let store = schleuse::store::open(&config).await.expect("store");
        let files = schleuse::store::document_files::open(&config).expect("document files");
        let vault = Arc::new(Vault::new(store.clone(), files, None));
        let mut accounts = Accounts::default();
        accounts
            .add(Account {
                name: USER.into(),
                password_hash: cheap_hash(PASSWORD),
                allowed_senders: vec!["*@landkreis.example".into(), "*@*.fuzz.example".into()],
                reply_to_header: Some("X-VIA-User".into()),
                ..Account::default()
            })
            .expect("account");
        let (shutdown, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared::new(
            config.clone(),
            accounts,
            None,
            Queue::new(store.clone()),
            Arc::clone(&vault),
            shutdown_rx,
        ));
        let tokens = seal_documents(&vault, &store).await;
        let links = service::router(
            Arc::clone(&vault) as Arc<dyn schleuse::links::Documents>,
            ServiceOptions {
                language: config.attachments.language,
                trusted_proxies: config.attachments.trusted_proxies.clone(),
                log_client_ip: true,
                guesses: GuessPolicy::from(&config.attachments),
            },
        );
        let webhook = schleuse::suppression::webhook::router(Arc::clone(&shared))
            .expect("webhook configured");
        Env {
            _dir: dir,
            _shutdown: shutdown,
            shared,
            tokens,
            links,
            webhook,
            uses: 0,
            sessions: 0,
        }
    }

    /// A client address of its own per session: bans and per-IP rates
    /// from earlier inputs do not change how this one is answered.
    fn next_peer(&mut self) -> SocketAddr {
        self.sessions += 1;
        let [_, a, b, c] = self.sessions.to_be_bytes();
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, a, b, c)), 40000)
    }
}

/// Three documents committed with one message, as a session does: an open
/// one, a password-protected one and one revoked at once.
async fn seal_documents(vault: &Vault, store: &Arc<dyn schleuse::store::Store>) -> [String; 3] {
    let expires_at = now_ms() + 14 * 86_400_000;
    let mut sealed = Vec::new();
    for (name, password) in [
        ("Bescheid.pdf", None),
        ("Antrag Müller.pdf", Some(LINK_PASSWORD)),
        ("alt.txt", None),
    ] {
        let doc = Plain {
            file_name: name.into(),
            content_type: "application/pdf".into(),
            data: format!("%PDF-1.4 {name}").into_bytes(),
        };
        let opts = SealOptions {
            account: USER.into(),
            password: password.map(str::to_owned),
            expires_at,
            notify_to: Some("sachbearbeitung@landkreis.example".into()),
        };
        sealed.push(vault.seal(doc, &opts).await.expect("seal"));
    }
    store
        .enqueue(NewMessage {
            id: new_queue_id(),
            account: USER.into(),
            sender: "sachbearbeitung@landkreis.example".into(),
            recipients: vec!["buerger@example.org".into()],
            content: b"Subject: links\r\n\r\nlinks\r\n".to_vec(),
            links: sealed.iter().map(|s| s.link.clone()).collect(),
            ..NewMessage::default()
        })
        .await
        .expect("enqueue");
    vault.revoke(&sealed[2].link.id).await.expect("revoke");
    let token = |i: usize| sealed[i].token.clone();
    [token(0), token(1), token(2)]
}

/// Drives one SMTP session (plain-text loopback listener, AUTH allowed)
/// with `input` as everything the client sends, then end of stream.
/// Returns what the gateway answered.
pub fn session(input: &[u8]) -> Vec<u8> {
    with_env(|env| {
        let origin = Origin {
            peer: env.next_peer(),
            listener_tls: ListenerTls::None,
            trusted_account: None,
            session_id: "fuzz".into(),
        };
        let shared = Arc::clone(&env.shared);
        runtime().block_on(async move {
            let (client, server) = tokio::io::duplex(64 * 1024);
            let (mut from_server, mut to_server) = tokio::io::split(client);
            let input = input.to_vec();
            let writer = tokio::spawn(async move {
                // The session may hang up before reading everything.
                let _ = to_server.write_all(&input).await;
                let _ = to_server.shutdown().await;
            });
            let reader = tokio::spawn(async move {
                let mut replies = Vec::new();
                let _ = from_server.read_to_end(&mut replies).await;
                replies
            });
            let mut session = Session::new(server, shared, origin, false);
            let _ = session.run(true).await;
            drop(session);
            let _ = writer.await;
            reader.await.unwrap_or_default()
        })
    })
}

/// One HTTP request from text: `METHOD PATH`, header lines, an empty line,
/// the body. `$OPEN`, `$PROT` and `$GONE` in the path become the tokens of
/// the environment's documents. `None` when the text is no request.
struct HttpInput {
    method: Method,
    uri: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Vec<u8>,
}

fn split_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => (
            data[..i].strip_suffix(b"\r").unwrap_or(&data[..i]),
            &data[i + 1..],
        ),
        None => (data, &[]),
    }
}

fn replace_all(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut rest = haystack;
    while !rest.is_empty() {
        if rest.starts_with(needle) {
            out.extend_from_slice(with);
            rest = &rest[needle.len()..];
        } else {
            out.push(rest[0]);
            rest = &rest[1..];
        }
    }
    out
}

fn parse_http(data: &[u8], tokens: &[String; 3]) -> Option<HttpInput> {
    let (line, mut rest) = split_line(data);
    let space = line.iter().position(|&b| b == b' ')?;
    let method = Method::from_bytes(&line[..space]).ok()?;
    let mut path = line[space + 1..].to_vec();
    for (marker, token) in [b"$OPEN", b"$PROT", b"$GONE"].iter().zip(tokens) {
        path = replace_all(&path, *marker, token.as_bytes());
    }
    let uri = Uri::try_from(path).ok()?;
    let mut headers = Vec::new();
    loop {
        if rest.is_empty() {
            break;
        }
        let (line, next) = split_line(rest);
        rest = next;
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let value = line[colon + 1..].trim_ascii();
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(value),
        ) {
            headers.push((name, value));
        }
    }
    Some(HttpInput {
        method,
        uri,
        headers,
        body: rest.to_vec(),
    })
}

fn request(input: HttpInput, peer: SocketAddr) -> Request<Body> {
    let mut req = Request::new(Body::from(input.body));
    *req.method_mut() = input.method;
    *req.uri_mut() = input.uri;
    for (name, value) in input.headers {
        req.headers_mut().append(name, value);
    }
    req.extensions_mut().insert(ConnectInfo(peer));
    req
}

/// What a router answered: status, headers and body as bytes.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<u8>,
    pub body: Vec<u8>,
}

async fn call(router: &Router, req: Request<Body>) -> Answer {
    let resp = router.clone().oneshot(req).await.expect("infallible");
    let status = resp.status().as_u16();
    let mut headers = Vec::new();
    for (name, value) in resp.headers() {
        headers.extend_from_slice(name.as_str().as_bytes());
        headers.extend_from_slice(b": ");
        headers.extend_from_slice(value.as_bytes());
        headers.extend_from_slice(b"\r\n");
    }
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .map(|b| b.to_vec())
        .unwrap_or_default();
    Answer {
        status,
        headers,
        body,
    }
}

/// Sends one request (see [`HttpInput`]) to the link service, from the
/// loopback reverse proxy (so `X-Forwarded-For` is read). Returns the
/// answer and the tokens, or `None` when the input is no request.
pub fn links(data: &[u8]) -> Option<(Answer, [String; 3])> {
    with_env(|env| {
        let input = parse_http(data, &env.tokens)?;
        let req = request(input, SocketAddr::from(([127, 0, 0, 1], 40000)));
        let answer = runtime().block_on(call(&env.links, req));
        Some((answer, env.tokens.clone()))
    })
}

/// POSTs `body` to the Mailjet webhook with the right credentials.
pub fn webhook(body: &[u8]) -> Answer {
    with_env(|env| {
        let mut req = Request::new(Body::from(body.to_vec()));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = Uri::from_static(WEBHOOK_PATH);
        let headers = req.headers_mut();
        headers.insert("authorization", HeaderValue::from_static(WEBHOOK_AUTH));
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        runtime().block_on(call(&env.webhook, req))
    })
}

/// Whether `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}
