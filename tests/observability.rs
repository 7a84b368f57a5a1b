//! The admin endpoint (SPEC §10): `/metrics` counts what the gateway did,
//! `/healthz` answers while it runs, `/readyz` fails when the store cannot
//! commit or the upstream cannot be reached, and basic auth guards it all.
//! Scraped with a plain HTTP/1.1 GET over std's TcpStream.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

const SENDER: &str = "sender@example.com";
const RCPT: &str = "rcpt@example.net";
const WAIT: Duration = Duration::from_secs(30);

/// `[admin]` on a free loopback port, plus `more` lines in that table.
fn admin_toml(port: u16, more: &str) -> String {
    format!("\n[admin]\nbind = \"127.0.0.1:{port}\"\n{more}")
}

/// Waits until the endpoint answers at all (it starts with the listeners,
/// but the harness only waits for the SMTP ports).
fn wait_for_endpoint(port: u16, auth: Option<(&str, &str)>) {
    wait_until(WAIT, || http_get(port, "/healthz", auth).ok())
        .unwrap_or_else(|| panic!("admin endpoint on {port} never answered"));
}

fn scrape(port: u16) -> (HttpResponse, BTreeMap<String, f64>) {
    let r = http_get(port, "/metrics", None).expect("GET /metrics");
    assert_eq!(r.status, 200, "{}", r.body);
    let samples = prometheus_samples(&r.body);
    (r, samples)
}

fn sample(samples: &BTreeMap<String, f64>, key: &str) -> f64 {
    *samples
        .get(key)
        .unwrap_or_else(|| panic!("no sample {key} in {samples:#?}"))
}

/// Waits until `/readyz` answers `status`; returns the body.
fn wait_ready(port: u16, status: u16, why: &str) -> String {
    wait_until(WAIT, || {
        http_get(port, "/readyz", None)
            .ok()
            .filter(|r| r.status == status)
            .map(|r| r.body)
    })
    .unwrap_or_else(|| {
        let last = http_get(port, "/readyz", None);
        panic!("/readyz never answered {status} ({why}); last: {last:?}")
    })
}

#[test]
fn metrics_count_sessions_messages_and_refusals() {
    let admin = free_port();
    let mut conf = GatewayConf::outbox();
    conf.extra_toml = admin_toml(admin, "");
    let w = World::without_upstream(conf);
    wait_for_endpoint(admin, None);

    let health = http_get(admin, "/healthz", None).expect("GET /healthz");
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    let ready = wait_ready(admin, 200, "outbox mode, fresh store");
    assert_eq!(ready, "ready\n");

    // Two accepted messages.
    let mut c = w.client();
    for n in 0..2 {
        let r = c.send(
            SENDER,
            &[RCPT],
            &simple_message(SENDER, RCPT, &format!("obs-{n}")),
        );
        assert_eq!(r.code, 250, "{r}");
    }
    // Refused: a sender the account may not use, and a declared size too big.
    let r = c.cmd("MAIL FROM:<intruder@elsewhere.example>");
    assert!(r.is(553, "5.7.1"), "{r}");
    let r = c.cmd(&format!("MAIL FROM:<{SENDER}> SIZE=99999999"));
    assert!(r.is(552, "5.3.4"), "{r}");
    c.quit();
    // Refused: MAIL without AUTH; and a wrong password.
    let mut anon = Smtp::connect_tls(w.port(), w.ca());
    let r = anon.cmd(&format!("MAIL FROM:<{SENDER}>"));
    assert!(r.is(530, "5.7.0"), "{r}");
    let r = anon.auth_plain(USER, "not-the-password");
    assert_eq!(r.code, 535, "{r}");
    anon.quit();

    // Delivery (outbox) is asynchronous: wait for it to show (both of its
    // counters: one is counted a moment after the other).
    let samples = wait_until(WAIT, || {
        let (_, s) = scrape(admin);
        let delivered = "schleuse_delivery_attempts_total{result=\"delivered\"}";
        (s.get("schleuse_messages_relayed_total") == Some(&2.0) && s.get(delivered) >= Some(&2.0))
            .then_some(s)
    })
    .unwrap_or_else(|| panic!("relayed never reached 2: {:#?}", scrape(admin).1));

    let (resp, _) = scrape(admin);
    assert!(
        resp.header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        resp.headers
    );
    assert!(
        resp.body
            .contains("# TYPE schleuse_messages_accepted_total counter"),
        "{}",
        resp.body
    );
    assert_eq!(sample(&samples, "schleuse_messages_accepted_total"), 2.0);
    for (reason, n) in [
        ("sender_denied", 1.0),
        ("too_big", 1.0),
        ("auth_required", 1.0),
        ("storage", 0.0),
        ("bare_line_ending", 0.0),
    ] {
        let key = format!("schleuse_messages_rejected_total{{reason=\"{reason}\"}}");
        assert_eq!(sample(&samples, &key), n, "{key}");
    }
    assert_eq!(sample(&samples, "schleuse_smtp_auth_failures_total"), 1.0);
    assert!(sample(&samples, "schleuse_smtp_sessions_total") >= 2.0);
    assert!(
        sample(
            &samples,
            "schleuse_smtp_tls_handshakes_total{result=\"ok\"}"
        ) >= 2.0
    );
    assert_eq!(
        sample(
            &samples,
            "schleuse_delivery_attempts_total{result=\"delivered\"}"
        ),
        2.0
    );
    assert_eq!(sample(&samples, "schleuse_messages_bounced_total"), 0.0);
    // No [[dkim]] keys and without_dkim_key = "warn": passed on unsigned.
    assert_eq!(
        sample(
            &samples,
            "schleuse_dkim_signatures_total{result=\"unsigned\"}"
        ),
        2.0
    );
    // The gauges exist; everything was delivered, so the queue is empty.
    assert_eq!(
        sample(&samples, "schleuse_queue_messages{state=\"queued\"}"),
        0.0
    );
    assert_eq!(
        sample(&samples, "schleuse_queue_messages{state=\"held\"}"),
        0.0
    );
    assert_eq!(sample(&samples, "schleuse_queue_oldest_age_seconds"), 0.0);
    assert_eq!(sample(&samples, "schleuse_upstream_breaker_open"), 0.0);

    let missing = http_get(admin, "/nope", None).expect("GET /nope");
    assert_eq!(missing.status, 404);
}

#[test]
fn queue_gauges_follow_held_messages() {
    let admin = free_port();
    let mut conf = GatewayConf::outbox();
    conf.sending = "paused";
    conf.extra_toml = admin_toml(admin, "");
    let w = World::without_upstream(conf);
    wait_for_endpoint(admin, None);
    let mut c = w.client();
    let r = c.send(SENDER, &[RCPT], &simple_message(SENDER, RCPT, "held"));
    assert_eq!(r.code, 250, "{r}");
    c.quit();
    let (_, s) = scrape(admin);
    assert_eq!(sample(&s, "schleuse_queue_messages{state=\"held\"}"), 1.0);
    assert_eq!(sample(&s, "schleuse_queue_messages{state=\"queued\"}"), 0.0);
}

#[test]
fn basic_auth_guards_every_route() {
    let admin = free_port();
    let mut conf = GatewayConf::outbox();
    conf.extra_toml = admin_toml(admin, "username = \"prom\"\npassword = \"scrape-Pw-1\"\n");
    let _w = World::without_upstream(conf);
    let good = Some(("prom", "scrape-Pw-1"));
    wait_for_endpoint(admin, good);
    for path in ["/metrics", "/healthz", "/readyz"] {
        let r = http_get(admin, path, None).expect("GET without auth");
        assert_eq!(r.status, 401, "{path} without credentials");
        assert!(
            r.header("www-authenticate")
                .is_some_and(|v| v.starts_with("Basic realm=")),
            "{path}: {:?}",
            r.headers
        );
        let r = http_get(admin, path, Some(("prom", "wrong"))).expect("GET wrong auth");
        assert_eq!(r.status, 401, "{path} with a wrong password");
        let r = http_get(admin, path, good).expect("GET with auth");
        assert_eq!(r.status, 200, "{path} with credentials: {}", r.body);
    }
}

/// Holds SQLite's write lock on the queue database from another process
/// (what a stuck admin command or backup tool would do) until dropped.
struct WriteLock(Child);

impl WriteLock {
    fn take(db: &Path) -> WriteLock {
        let script = "import sqlite3, sys\n\
                      c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
                      c.execute('BEGIN IMMEDIATE')\n\
                      print('LOCKED', flush=True)\n\
                      sys.stdin.read()\n";
        let mut child = Command::new(PYTHON)
            .args(["-c", script])
            .arg(db)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start python3 sqlite3");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read LOCKED");
        assert_eq!(
            line.trim(),
            "LOCKED",
            "python could not lock {}",
            db.display()
        );
        WriteLock(child)
    }
}

impl Drop for WriteLock {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `chattr +i` on files; undone on drop so the temp dir can be removed.
struct Immutable(Vec<PathBuf>);

impl Immutable {
    /// `None` where the filesystem or the privileges do not allow it.
    fn set(files: Vec<PathBuf>) -> Option<Immutable> {
        // Undoes what was set so far if a later file fails.
        let mut guard = Immutable(Vec::new());
        for f in files {
            let ok = Command::new("chattr")
                .arg("+i")
                .arg(&f)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return None;
            }
            guard.0.push(f);
        }
        Some(guard)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for f in &self.0 {
            let _ = Command::new("chattr").arg("-i").arg(f).status();
        }
    }
}

/// An outbox-mode gateway with its admin endpoint, once it reports ready;
/// returns it and the endpoint's port.
fn ready_outbox_gateway() -> (World, u16) {
    let admin = free_port();
    let mut conf = GatewayConf::outbox();
    conf.extra_toml = admin_toml(admin, "");
    let w = World::without_upstream(conf);
    wait_for_endpoint(admin, None);
    wait_ready(admin, 200, "fresh store");
    (w, admin)
}

#[test]
fn readyz_fails_while_the_store_cannot_commit() {
    let (w, admin) = ready_outbox_gateway();
    let db = w.env.data_dir.join("queue.db");

    // Another process holds the write lock: no commit can happen. (Root
    // ignores file permissions, so "read-only" is made this way and, where
    // the filesystem allows, with the immutable attribute below.)
    let lock = WriteLock::take(&db);
    let body = wait_ready(admin, 503, "store locked by another process");
    assert!(body.starts_with("store: "), "{body}");
    let health = http_get(admin, "/healthz", None).expect("GET /healthz");
    assert_eq!(health.status, 200, "alive, just not ready");
    drop(lock);
    wait_ready(admin, 200, "lock released");

    // The database files cannot be written at all.
    let files: Vec<PathBuf> = ["queue.db", "queue.db-wal"]
        .iter()
        .map(|f| w.env.data_dir.join(f))
        .filter(|p| fs::metadata(p).is_ok())
        .collect();
    match Immutable::set(files) {
        Some(frozen) => {
            let body = wait_ready(admin, 503, "store files immutable");
            assert!(body.starts_with("store: "), "{body}");
            drop(frozen);
            wait_ready(admin, 200, "store files writable again");
        }
        None => eprintln!("chattr +i not supported here; the write-lock case ran"),
    }
}

#[test]
fn readyz_fails_while_the_documents_directory_is_gone() {
    let (w, admin) = ready_outbox_gateway();

    // An unmounted volume looks like this: attachments could not be stored.
    let dir = w.env.data_dir.join("documents");
    let aside = w.env.data_dir.join("documents.aside");
    fs::rename(&dir, &aside).expect("move the documents directory away");
    let body = wait_ready(admin, 503, "documents directory gone");
    assert!(body.starts_with("documents: "), "{body}");
    fs::rename(&aside, &dir).expect("put it back");
    wait_ready(admin, 200, "documents directory back");
}

#[test]
fn readyz_follows_the_upstream_and_latency_is_measured() {
    let admin = free_port();
    let mut w = World::relay_with(UpstreamOpts::default(), |c| {
        c.extra_toml = admin_toml(admin, "upstream_check_interval = \"1s\"\n");
    });
    wait_for_endpoint(admin, None);
    // The probe (or the delivery below) reaches the upstream.
    wait_ready(admin, 200, "upstream running");
    let mut c = w.client();
    let r = c.send(SENDER, &[RCPT], &simple_message(SENDER, RCPT, "latency"));
    assert_eq!(r.code, 250, "{r}");
    c.quit();
    w.up().wait_for(1, WAIT);
    // The latency is measured at the upstream's reply, the message counted
    // as relayed only once the attempt is recorded after it.
    let s = wait_until(WAIT, || {
        let (_, s) = scrape(admin);
        (s.get("schleuse_upstream_latency_seconds_count") >= Some(&1.0)
            && s.get("schleuse_messages_relayed_total") >= Some(&1.0))
        .then_some(s)
    })
    .unwrap_or_else(|| panic!("no latency sample: {:#?}", scrape(admin).1));
    assert!(sample(&s, "schleuse_upstream_latency_seconds_bucket{le=\"+Inf\"}") >= 1.0);
    assert_eq!(sample(&s, "schleuse_messages_relayed_total"), 1.0);

    let port = w.up().port;
    w.up.as_mut().expect("upstream").stop();
    let body = wait_ready(admin, 503, "upstream stopped");
    assert!(
        body.contains("upstream: not reached in the last 1s"),
        "{body}"
    );

    // Back on the same port: ready again without any delivery.
    let opts = UpstreamOpts {
        port: Some(port),
        ..UpstreamOpts::default()
    };
    w.up = Some(w.env.start_upstream(&opts));
    wait_ready(admin, 200, "upstream back");
}
