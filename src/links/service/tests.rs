//! The service end to end over real TCP, against an in-memory
//! [`Documents`]: what each request may and may not cause (open, record,
//! count), and the headers every answer carries.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;
use crate::links::LinkView;
use crate::store::BoxFuture;
use crate::store::guesses::{self, GuessRow};

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
    /// The store's guess budgets, kept as the store keeps them.
    guesses: Mutex<HashMap<String, GuessRow>>,
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

    fn take_guess(
        &self,
        link_id: &str,
        client: IpAddr,
        policy: GuessPolicy,
    ) -> BoxFuture<'_, Result<Result<(), Duration>, VaultError>> {
        let keys = guesses::keys(link_id, &client.to_string());
        let mut map = self.guesses.lock().unwrap();
        let rows = keys
            .clone()
            .map(|k| map.get(&k).copied().unwrap_or_default());
        let result = guesses::take(rows, crate::store::now_ms(), &policy).map(|rows| {
            for (k, r) in keys.into_iter().zip(rows) {
                map.insert(k, r);
            }
        });
        Box::pin(std::future::ready(Ok(result)))
    }

    fn give_back_guess(
        &self,
        link_id: &str,
        client: IpAddr,
        policy: GuessPolicy,
    ) -> BoxFuture<'_, Result<(), VaultError>> {
        let keys = guesses::keys(link_id, &client.to_string());
        let mut map = self.guesses.lock().unwrap();
        let rows = keys
            .clone()
            .map(|k| map.get(&k).copied().unwrap_or_default());
        for (k, r) in keys.into_iter().zip(guesses::give_back(rows, &policy)) {
            map.insert(k, r);
        }
        Box::pin(std::future::ready(Ok(())))
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
    async fn start(fake: Fake, opts: ServiceOptions) -> Server {
        let fake = Arc::new(fake);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = router(fake.clone(), opts);
        tokio::spawn(serve(listener, router, std::future::pending()));
        Server { addr, fake }
    }

    async fn standard() -> Server {
        Server::start(Fake::standard(), ServiceOptions::default()).await
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
    let server = Server::start(Fake::standard(), opts).await;
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
    let opts = ServiceOptions {
        guesses: GuessPolicy {
            // Long enough that a loaded machine still answers the next
            // requests within it.
            backoff: Duration::from_secs(3),
            ..GuessPolicy::default()
        },
        ..ServiceOptions::default()
    };
    let server = Server::start(Fake::standard(), opts).await;

    // Four wrong, then the right one: under the limit it always works,
    // does not use up a try itself, and starts the client's count afresh.
    for _ in 0..4 {
        let reply = server.post(PROTECTED, "falsch", "").await;
        assert_eq!(reply.status, 403);
        assert_page_headers(&reply);
        let html = reply.text();
        assert!(html.contains("Das Passwort ist falsch."));
        assert!(html.contains(PASSWORD_INPUT));
    }
    assert_eq!(server.post(PROTECTED, SECRET, "").await.status, 200);
    for _ in 0..5 {
        assert_eq!(server.post(PROTECTED, "falsch", "").await.status, 403);
    }
    assert_eq!(server.fake.opens(), 10);

    // The sixth wrong one in a row: 429, and the password is not tried,
    // not even the right one.
    let reply = server.post(PROTECTED, "falsch", "").await;
    assert_eq!(reply.status, 429);
    assert_page_headers(&reply);
    let retry: u64 = reply.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=3).contains(&retry), "the first back-off: {retry}");
    assert!(
        reply
            .text()
            .contains(&format!("Bitte versuchen Sie es in {retry} Sekunde")),
        "{}",
        reply.text()
    );
    assert_eq!(server.post(PROTECTED, SECRET, "").await.status, 429);
    assert_eq!(server.fake.opens(), 10);

    let outcomes: Vec<DownloadOutcome> = server.fake.records().into_iter().map(|r| r.1).collect();
    use DownloadOutcome::*;
    let mut expected = vec![WrongPassword; 4];
    expected.push(Downloaded);
    expected.extend([WrongPassword; 5]);
    expected.extend([RateLimited, RateLimited]);
    assert_eq!(outcomes, expected);

    // After the back-off the right password works again (asking early is
    // refused and takes nothing).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match server.post(PROTECTED, SECRET, "").await.status {
            200 => break,
            429 => assert!(std::time::Instant::now() < deadline, "still refused"),
            other => panic!("{other}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_strangers_guesses_do_not_lock_out_the_recipient() {
    let server = Server::standard().await;
    let stranger = "X-Forwarded-For: 203.0.113.9\r\n";
    let recipient = "X-Forwarded-For: 198.51.100.1\r\n";
    let mut refused = 0;
    for _ in 0..12 {
        match server.post(PROTECTED, "falsch", stranger).await.status {
            403 => {}
            429 => refused += 1,
            other => panic!("stranger got {other}"),
        }
    }
    assert_eq!(refused, 7, "five tries, then the back-off");
    // Same /64 is the same client; another address is not affected.
    let reply = server.post(PROTECTED, SECRET, recipient).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

#[tokio::test]
async fn the_link_ceiling_holds_across_clients() {
    let opts = ServiceOptions {
        guesses: GuessPolicy {
            per_link: 3,
            ..GuessPolicy::default()
        },
        ..ServiceOptions::default()
    };
    let server = Server::start(Fake::standard(), opts).await;
    let from = |n: u8| format!("X-Forwarded-For: 203.0.113.{n}\r\n");
    for n in 1..=3 {
        assert_eq!(server.post(PROTECTED, "falsch", &from(n)).await.status, 403);
    }
    // A fresh client with the right password meets the ceiling (20 min
    // until the next attempt frees up), and its password is not tried.
    let reply = server.post(PROTECTED, SECRET, &from(4)).await;
    assert_eq!(reply.status, 429);
    let retry: u64 = reply.header("retry-after").unwrap().parse().unwrap();
    assert!((19 * 60..=20 * 60).contains(&retry), "{retry}");
    assert_eq!(server.fake.opens(), 3);
    // Other links are not affected.
    assert_eq!(server.post(&link(0), SECRET, &from(4)).await.status, 200);
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
        guesses: GuessPolicy {
            per_client: 3,
            ..GuessPolicy::default()
        },
        ..ServiceOptions::default()
    };
    let server = Server::start(Fake::standard(), opts).await;
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
        guesses: GuessPolicy {
            per_client: 2,
            ..GuessPolicy::default()
        },
        ..ServiceOptions::default()
    };
    let server = Server::start(Fake::standard(), opts).await;
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
