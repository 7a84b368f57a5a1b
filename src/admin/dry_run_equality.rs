//! `rules test` and DATA take the same decisions: every message of the
//! fixture corpus (`../shared/fixtures`) and of the PII corpus
//! (`tests/pii/`) goes through the dry run and through a real session over
//! an in-memory stream, under three configurations, and the two plans must
//! print the same.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::accounts::{Account, Accounts};
use crate::config::{Config, ListenerTls};
use crate::links::vault::Vault;
use crate::pipeline;
use crate::queue::Queue;
use crate::session::{Origin, Session};
use crate::state::Shared;

const ACCOUNT: &str = "corpus";
const SENDER: &str = "sender@example.com";
const RECIPIENT: &str = "r@example.org";

/// The globals, and two sets of rules that use every decision the plan
/// takes: `has_attachments` (the scan before the rules), PII warn, hold
/// and reject, the password matrix, signed pass, header edits, and
/// attachments refused.
const CONFIGS: [&str; 3] = [
    "",
    r#"
[privacy]
pii = "warn"
[attachments]
password = "required"
signed = "pass"

[[rule]]
name = "never"
match.has_attachments = true
match.recipient_domain = ["hold.example"]
action = "hold"

[[rule]]
name = "documents"
match.has_attachments = true
link_password = "required"
max_expiry = "3d"
pii = "hold"
add_headers = { "X-Documents" = "yes" }
remove_headers = ["X-Mailer"]

[[rule]]
name = "plain"
tracking = true
copy_to_sender = true
"#,
    r#"
[privacy]
pii = "reject"
[attachments]
mode = "reject"
"#,
];

/// The corpus comes from one client in seconds: no rate limit may refuse it.
const LIMITS: &str = "ip_messages_per_minute = 1000000\naccount_messages_per_hour = 1000000\n\
                      account_messages_per_day = 1000000\naccount_recipients_per_day = 1000000\n";

fn has_from(message: &[u8]) -> bool {
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(message.len());
    message[..end]
        .split(|&b| b == b'\n')
        .any(|line| line.len() > 5 && line[..5].eq_ignore_ascii_case(b"from:"))
}

fn emls(dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            emls(&p, out);
        } else if p.extension().is_some_and(|x| x == "eml") {
            let raw = std::fs::read(&p).expect("read fixture");
            out.push((p.display().to_string(), raw));
        }
    }
}

#[derive(serde::Deserialize)]
struct PiiCorpus {
    message: Vec<PiiMessage>,
}

#[derive(serde::Deserialize)]
struct PiiMessage {
    id: String,
    body: String,
    #[serde(default)]
    format: Option<String>,
}

/// Every message of both corpora, CRLF, each with a `From:`.
fn corpus() -> Vec<(String, Vec<u8>)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut raw = Vec::new();
    emls(&root.join("../shared/fixtures"), &mut raw);
    assert!(raw.len() >= 30, "the fixture corpus: {}", raw.len());
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("tests/pii"))
        .expect("tests/pii")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read corpus");
        let corpus: PiiCorpus = toml::from_str(&text).expect("corpus format");
        for m in corpus.message {
            let message = match m.format.as_deref() {
                Some("eml") => m.body.into_bytes(),
                Some("html") => format!(
                    "Subject: {}\nContent-Type: text/html; charset=utf-8\n\n{}",
                    m.id, m.body
                )
                .into_bytes(),
                _ => format!(
                    "Subject: {}\nContent-Type: text/plain; charset=utf-8\n\n{}",
                    m.id, m.body
                )
                .into_bytes(),
            };
            raw.push((format!("{}#{}", f.display(), m.id), message));
        }
    }
    raw.into_iter()
        .map(|(name, raw)| {
            // Converted as `rules test` converts a file; ended by a line break as
            // an SMTP client ends DATA.
            let mut message = super::rules::crlf(&raw);
            if !message.ends_with(b"\r\n") {
                message.extend_from_slice(b"\r\n");
            }
            if !has_from(&message) {
                message.splice(0..0, format!("From: {SENDER}\r\n").bytes());
            }
            (name, message)
        })
        .collect()
}

/// The dialogue of one submission, as the client writes it.
fn dialogue(message: &[u8]) -> Vec<u8> {
    let mut out =
        format!("EHLO client.test\r\nMAIL FROM:<{SENDER}>\r\nRCPT TO:<{RECIPIENT}>\r\nDATA\r\n")
            .into_bytes();
    for line in message.split_inclusive(|&b| b == b'\n') {
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
    }
    out.extend_from_slice(b".\r\nQUIT\r\n");
    out
}

/// The plan DATA acted on, and the replies, for one message.
async fn through_data(shared: &Arc<Shared>, message: &[u8]) -> (Option<String>, String) {
    let (client, server) = tokio::io::duplex(1 << 16);
    let origin = Origin {
        peer: SocketAddr::from(([127, 0, 0, 1], 40000)),
        listener_tls: ListenerTls::None,
        trusted_account: Some(ACCOUNT.into()),
        session_id: "equality".into(),
    };
    let mut session = Session::new(server, Arc::clone(shared), origin, false);
    let input = dialogue(message);
    let (mut rd, mut wr) = tokio::io::split(client);
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&input).await;
        wr
    });
    let reader = tokio::spawn(async move {
        let mut replies = Vec::new();
        let _ = rd.read_to_end(&mut replies).await;
        String::from_utf8_lossy(&replies).into_owned()
    });
    session.run(true).await;
    let plan = session.last_plan().map(str::to_owned);
    drop(session);
    let _wr = writer.await.expect("writer");
    let replies = reader.await.expect("reader");
    (plan, replies)
}

/// The shared state of a gateway; the sender keeps it from shutting down.
async fn shared(config: Config) -> (Arc<Shared>, tokio::sync::watch::Sender<bool>) {
    let store = crate::store::open(&config).await.expect("store");
    let files = crate::store::document_files::open(&config).expect("documents");
    let vault = Arc::new(Vault::new(store.clone(), files, None));
    let mut accounts = Accounts::default();
    accounts.accounts.push(account());
    let (tx, rx) = tokio::sync::watch::channel(false);
    let shared = Arc::new(Shared::new(
        config,
        accounts,
        None,
        Queue::new(store),
        vault,
        rx,
    ));
    (shared, tx)
}

fn account() -> Account {
    Account {
        name: ACCOUNT.into(),
        allowed_senders: vec!["*".into()],
        ..Account::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_test_and_data_take_the_same_decisions() {
    let corpus = corpus();
    let account = account();
    let recipients = vec![RECIPIENT.to_owned()];
    let mut compared = 0;
    for (i, extra) in CONFIGS.iter().enumerate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = format!(
            "[server]\ndata_dir = {:?}\n[limits]\nmax_message_size = \"8MB\"\n{LIMITS}{extra}",
            dir.path().display().to_string()
        );
        let config = Config::parse(&text, Path::new("equality.toml")).expect("config");
        let (shared, _running) = shared(config.clone()).await;
        for (name, message) in &corpus {
            let facts = pipeline::Facts {
                config: &config,
                account: &account,
                sender: SENDER,
                recipients: &recipients,
                message,
            };
            let (dry, _report) = super::rules::dry_run(&facts, name);
            let dry = format!("{dry:#?}");
            let (data, replies) = through_data(&shared, message).await;
            let data = data.unwrap_or_else(|| panic!("config {i}, {name}: no plan\n{replies}"));
            assert_eq!(
                dry, data,
                "config {i}, {name}: the two paths differ\n{replies}"
            );
            compared += 1;
        }
    }
    assert!(compared >= 3 * 300, "compared {compared}");
}
