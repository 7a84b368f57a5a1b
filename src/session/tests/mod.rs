//! In-process tests of the SMTP dialogue: a [`Session`] on one end of a
//! `tokio::io::duplex` pipe, a scripted client on the other, the store a
//! temporary SQLite database. No binary, no ports, no TLS: a reply-code
//! rule is checked in milliseconds (as chasquid and Stalwart test their
//! sessions). The black-box tests in `tests/` cover TLS, the listener,
//! and what happens to a message after its `250`.
//!
//! [`setup_with`] is the one place that knows what a session is built
//! from; when those pieces move, only it changes.

mod dialogue;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use argon2::password_hash::PasswordHasher;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Origin, Outcome, Session};
use crate::accounts::{Account, Accounts};
use crate::config::{Config, ListenerTls};
use crate::links::vault::Vault;
use crate::queue::Queue;
use crate::state::Shared;

/// The account the tests log in as.
const USER: &str = "app";
const PASSWORD: &str = "app-secret";
/// `max_recipients_per_message` and `max_message_size` of the test config.
const MAX_RECIPIENTS: usize = 3;
const MAX_SIZE: usize = 20_000;

/// What the sessions of one test share, and the temp dir their store is in
/// (removed on drop).
struct Setup {
    shared: Arc<Shared>,
    _shutdown: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

/// What a session depends on, with the test config as it is.
async fn setup() -> Setup {
    setup_with(|_| {}).await
}

/// Builds everything a session depends on: the config (the test defaults,
/// then `adjust`), one account with a cheap password hash, an embedded
/// store and document files in a temp dir, no TLS and no DKIM key.
async fn setup_with(adjust: impl FnOnce(&mut Config)) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "[server]\nhostname = \"gw.test\"\ndata_dir = {data_dir:?}\n\
         [upstream]\nmode = \"outbox\"\n\
         [limits]\nmax_message_size = \"{MAX_SIZE}\"\n\
         max_recipients_per_message = {MAX_RECIPIENTS}\n\
         [privacy]\npii = \"off\"\nreceived_header = \"minimal\"\n\
         [sender]\nfrom = \"keep\"\nreply_to = \"keep\"\n",
        data_dir = dir.path().join("var"),
    );
    let mut config = Config::parse(&text, Path::new("test.toml")).expect("test config parses");
    adjust(&mut config);
    config.validate().expect("test config is valid");
    let store = crate::store::open(&config).await.expect("open store");
    let files = crate::store::document_files::open(&config).expect("open document files");
    let vault = Arc::new(Vault::new(Arc::clone(&store), files, None));
    let accounts = Accounts {
        accounts: vec![Account {
            name: USER.into(),
            password_hash: cheap_hash(PASSWORD),
            allowed_senders: vec!["*@example.com".into()],
            ..Account::default()
        }],
    };
    let (shutdown, shutdown_rx) = watch::channel(false);
    let shared = Shared::new(
        config,
        accounts,
        None,
        Queue::new(store),
        vault,
        shutdown_rx,
    );
    Setup {
        shared: Arc::new(shared),
        _shutdown: shutdown,
        _dir: dir,
    }
}

/// An argon2id hash with the smallest parameters: the session verifies
/// with whatever the PHC string names, and the defaults cost seconds in a
/// debug build.
fn cheap_hash(password: &str) -> String {
    let params = argon2::Params::new(8, 1, 1, None).expect("argon2 params");
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(password.as_bytes())
        .expect("hash")
        .to_string()
}

/// One reply as the client reads it.
#[derive(Debug)]
struct Answer {
    code: u16,
    /// The text of each line, after `NNN-` or `NNN `.
    lines: Vec<String>,
}

impl Answer {
    /// Panics unless the reply is `expected`: a code, or a code and the
    /// start of the last line's text (`"250 2.1.0"`).
    #[track_caller]
    fn assert_code(&self, expected: &str) -> &Self {
        let (code, text) = expected.split_once(' ').unwrap_or((expected, ""));
        let last = self.lines.last().map(String::as_str).unwrap_or_default();
        assert!(
            self.code.to_string() == code && last.starts_with(text),
            "expected {expected:?}, got {self:?}"
        );
        self
    }

    fn has_line(&self, line: &str) -> bool {
        self.lines.iter().any(|l| l == line)
    }
}

/// The client end of one session.
struct Client {
    io: DuplexStream,
    buf: Vec<u8>,
    session: JoinHandle<Outcome>,
    greeting: Answer,
}

impl Setup {
    /// A session from a client at 192.0.2.1 on a listener with `tls`,
    /// past its `220` greeting.
    async fn connect(&self, tls: ListenerTls) -> Client {
        let (io, server) = tokio::io::duplex(256 * 1024);
        let origin = Origin {
            peer: SocketAddr::from(([192, 0, 2, 1], 40_000)),
            listener_tls: tls,
            trusted_account: None,
            session_id: "test".into(),
        };
        let mut session = Session::new(server, Arc::clone(&self.shared), origin, false);
        let session = tokio::spawn(async move { session.run(true).await });
        let mut c = Client {
            io,
            buf: Vec::new(),
            session,
            greeting: Answer {
                code: 0,
                lines: Vec::new(),
            },
        };
        c.greeting = c.read().await;
        c.greeting.assert_code("220");
        c
    }

    /// A plain-text (loopback) listener's session, logged in with AUTH PLAIN.
    async fn logged_in(&self) -> Client {
        let mut c = self.connect(ListenerTls::None).await;
        c.send("EHLO client.test").await.assert_code("250");
        c.send(&auth_plain(USER, PASSWORD))
            .await
            .assert_code("235 2.7.0");
        c
    }
}

impl Client {
    /// Sends one command line and reads its reply.
    async fn send(&mut self, line: &str) -> Answer {
        self.write(format!("{line}\r\n").as_bytes()).await;
        self.read().await
    }

    /// The usual envelope, accepted: `MAIL FROM:<app@example.com>` and
    /// `RCPT TO:<rcpt@example.org>`, for tests about what follows it.
    async fn envelope(&mut self) {
        self.send("MAIL FROM:<app@example.com>")
            .await
            .assert_code("250 2.1.0");
        self.send("RCPT TO:<rcpt@example.org>")
            .await
            .assert_code("250 2.1.5");
    }

    async fn write(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.expect("write to session");
    }

    /// Reads one (possibly multi-line) reply; panics at end of stream.
    async fn read(&mut self) -> Answer {
        let mut lines = Vec::new();
        loop {
            while let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..end + 2).collect();
                let line = String::from_utf8_lossy(&line[..end]).into_owned();
                let code = line.get(..3).and_then(|c| c.parse().ok());
                let Some(code) = code else {
                    panic!("malformed reply line {line:?}");
                };
                lines.push(line.get(4..).unwrap_or_default().to_string());
                if line.as_bytes().get(3) != Some(&b'-') {
                    return Answer { code, lines };
                }
            }
            let mut chunk = [0u8; 4096];
            let n = self.io.read(&mut chunk).await.expect("read from session");
            assert!(n > 0, "session closed; unparsed {:?}", self.buf);
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Waits for the session to hang up: no bytes left, end of stream.
    async fn assert_closed(mut self) {
        let mut rest = Vec::new();
        self.io.read_to_end(&mut rest).await.expect("read to end");
        assert!(
            rest.is_empty() && self.buf.is_empty(),
            "bytes after the last reply: {:?}",
            String::from_utf8_lossy(&[self.buf.as_slice(), &rest].concat())
        );
        let outcome = self.session.await.expect("session task");
        assert!(matches!(outcome, Outcome::Closed));
    }
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn auth_plain(user: &str, password: &str) -> String {
    format!(
        "AUTH PLAIN {}",
        base64(format!("\0{user}\0{password}").as_bytes())
    )
}

/// A small message from an allowed sender, ending in CRLF.
fn message(marker: &str) -> String {
    format!(
        "From: <app@example.com>\r\nTo: <rcpt@example.org>\r\nSubject: test {marker}\r\n\
         Message-ID: <{marker}@example.com>\r\nDate: Mon, 01 Jan 2024 10:00:00 +0100\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         body of {marker}\r\n"
    )
}
