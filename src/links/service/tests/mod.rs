//! The service end to end over real TCP, against an in-memory
//! [`Documents`]: what each request may and may not cause (open, record,
//! count), and the headers every answer carries.
//!
//! This file is the harness (the fake document store, a test server, a
//! small HTTP client); the tests are grouped by concern: [`pages`] (what a
//! GET shows and the errors), [`passwords`] (downloads, wrong passwords
//! and their limits), [`client_ip`] (the per-IP limit, the trusted proxy,
//! what is logged).

mod client_ip;
mod pages;
mod passwords;

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

fn link(i: usize) -> String {
    format!("lnk{i}_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
}
