//! Several instances sharing one PostgreSQL and one S3 bucket (SPEC §11),
//! all real and on loopback: Debian's PostgreSQL and HAProxy, moto's S3
//! server, the gateway binary twice, the upstream stand-in.
//!
//! - 500 messages through HAProxy (PROXY v2) while one instance is killed
//!   with SIGKILL: every message answered `250` arrives upstream; copies
//!   are counted (a message the dead instance had handed over but not yet
//!   recorded is sent again by the other one: at most one per delivery
//!   connection it had open). Every link works from both instances.
//! - A killed instance's leases expire and the other delivers its mail.
//! - An account's quota holds across instances (counters in PostgreSQL).

mod common;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::haproxy::Haproxy;
use common::postgres::{self, PgDb};
use common::s3::Moto;
use common::*;

const SENDER: &str = "sender@example.com";
const BUCKET: &str = "cluster";

/// One instance: its own directory, config and log; the shared state is in
/// PostgreSQL and the bucket.
struct Node {
    env: Env,
    gw: Gateway,
}

impl Node {
    /// The direct (STARTTLS) port; the PROXY listener is the second one.
    fn port(&self) -> u16 {
        self.env.conf().port()
    }

    fn proxy_port(&self) -> u16 {
        self.env.conf().listeners[1].port
    }

    fn link_port(&self) -> u16 {
        self.env.conf().link_port
    }

    fn client(&self) -> Smtp {
        Smtp::connect_auth(self.port(), &self.env.certs.ca_crt, USER, PASSWORD)
    }

    fn restart(&mut self) {
        self.gw = Gateway::start(&self.env, "gateway-restarted.log");
    }
}

struct Shared {
    db: PgDb,
    moto: Moto,
    /// Holds the upstream stand-in's and moto's files.
    _dir: Env,
}

impl Shared {
    fn start() -> Shared {
        let dir = Env::new();
        let db = postgres::database();
        let moto = Moto::start(dir.path());
        moto.create_bucket(BUCKET);
        Shared {
            db,
            moto,
            _dir: dir,
        }
    }

    /// An instance relaying to `upstream_port`; `first` lends its test CA
    /// and certificate so one client trusts every instance.
    fn node(
        &self,
        upstream_port: u16,
        first: Option<&Node>,
        f: impl FnOnce(&mut GatewayConf),
    ) -> Node {
        let mut env = Env::new();
        if let Some(first) = first {
            for (from, to) in [
                (&first.env.certs.ca_crt, &env.certs.ca_crt),
                (&first.env.certs.server_crt, &env.certs.server_crt),
                (&first.env.certs.server_key, &env.certs.server_key),
            ] {
                std::fs::copy(from, to).expect("share the test certificate");
            }
        }
        let mut conf = GatewayConf::relay(upstream_port);
        conf.upstream = UpstreamConf::Relay {
            port: upstream_port,
            tls: false,
            auth: false,
        };
        conf.listeners = vec![
            ListenerConf::starttls(),
            ListenerConf {
                extra: "proxy_protocol = true\nproxy_trusted = [\"127.0.0.1/32\"]\n".into(),
                ..ListenerConf::starttls()
            },
        ];
        conf.extra_toml = format!(
            "\n[store]\nbackend = \"postgres\"\nurl = \"{}\"\npool_size = 4\nlease_time = \"3s\"\n{}",
            self.db.url(),
            self.moto.documents_toml(BUCKET, "documents/")
        );
        f(&mut conf);
        env.write_config(&conf);
        env.add_default_user();
        let gw = env.start_gateway();
        Node { env, gw }
    }
}

fn plain_upstream(dir: &Env) -> Upstream {
    dir.start_upstream(&UpstreamOpts {
        tls: false,
        auth: false,
        ..UpstreamOpts::default()
    })
}

/// The marker of a relayed message (`Subject: test <marker>`).
fn marker(d: &Delivered) -> String {
    d.header("Subject")
        .and_then(|s| s.strip_prefix("test ").map(str::to_owned))
        .unwrap_or_default()
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[test]
fn five_hundred_through_haproxy_while_one_instance_is_killed() {
    let shared = Shared::start();
    let up_dir = Env::new();
    let up = plain_upstream(&up_dir);
    let mut a = shared.node(up.port, None, |_| {});
    let b = shared.node(up.port, Some(&a), |_| {});

    let front = free_port();
    let haproxy = Haproxy::start(
        up_dir.path(),
        &format!(
            "global\n    log stderr format short local0 info\n\
             defaults\n    mode tcp\n    log global\n    option tcplog\n\
             \x20   timeout connect 2s\n    timeout client 60s\n    timeout server 60s\n\
             \x20   option redispatch\n    retries 3\n\
             frontend submission\n    bind 127.0.0.1:{front}\n    default_backend gateways\n\
             backend gateways\n    balance roundrobin\n    option smtpchk HELO haproxy.test\n\
             \x20   server a 127.0.0.1:{} send-proxy-v2 check check-send-proxy inter 300ms fall 1 rise 2\n\
             \x20   server b 127.0.0.1:{} send-proxy-v2 check check-send-proxy inter 300ms fall 1 rise 2\n",
            a.proxy_port(),
            b.proxy_port()
        ),
    );
    let ca = a.env.certs.ca_crt.clone();
    let up_ready = wait_until(Duration::from_secs(30), || {
        Smtp::try_connect_auth(front, &ca, USER, PASSWORD).ok()
    });
    assert!(
        up_ready.is_some(),
        "HAProxy passes sessions\n{}",
        haproxy.log()
    );
    drop(up_ready);

    const TOTAL: usize = 500;
    const KILL_AT: usize = 200;
    let document = |i: usize| {
        let mut d = b"%PDF-1.4\n".to_vec();
        fill_pseudo_random(&mut d, i as u32 + 1, 3000);
        d
    };
    let mut acked: Vec<usize> = Vec::new();
    let mut failed_tries = 0usize;
    let mut conn: Option<Smtp> = None;
    let mut sent_in_session = 0;
    let mut killed_at = None;
    // Whether the open session is on instance a (found by its log naming
    // the session's first queue id).
    let mut on_a: Option<bool> = None;
    for i in 0..TOTAL {
        // Kill a in the middle of one of its sessions, just after it took
        // mail (some of it still being delivered).
        if i >= KILL_AT
            && killed_at.is_none()
            && on_a == Some(true)
            && (3..10).contains(&sent_in_session)
        {
            a.gw.kill();
            eprintln!("killed a before message {i}, {sent_in_session} into its session");
            killed_at = Some((i, Instant::now()));
        }
        let to = format!("r{i}@example.net");
        let m = format!("cluster-{i}");
        let message = if i % 50 == 7 {
            message_with_document(SENDER, &to, &m, &document(i))
        } else {
            simple_message(SENDER, &to, &m)
        };
        // A session that breaks (its instance died) is replaced; the
        // message is offered again until some instance answers 250.
        let mut done = false;
        for _ in 0..40 {
            if conn.is_none() || sent_in_session >= 10 {
                if let Some(c) = conn.take() {
                    c.quit();
                }
                conn = Smtp::try_connect_auth(front, &ca, USER, PASSWORD).ok();
                sent_in_session = 0;
                on_a = None;
            }
            let Some(c) = conn.as_mut() else {
                failed_tries += 1;
                std::thread::sleep(Duration::from_millis(100));
                continue;
            };
            match c.try_send(SENDER, &[&to], &message) {
                Ok(r) if r.code == 250 => {
                    if on_a.is_none() {
                        // a may also deliver what b took: look for a's "accepted".
                        let id = format!("queue_id={}", r.last_word());
                        on_a = Some(
                            a.gw.log()
                                .lines()
                                .any(|l| l.contains(" accepted ") && l.contains(&id)),
                        );
                    }
                    sent_in_session += 1;
                    done = true;
                    break;
                }
                other => {
                    eprintln!("message {i}: {other:?}");
                    failed_tries += 1;
                    conn = None;
                }
            }
        }
        assert!(done, "message {i} found no instance\n{}", haproxy.log());
        acked.push(i);
    }
    if let Some(c) = conn.take() {
        c.quit();
    }
    let Some((killed_before, killed)) = killed_at else {
        panic!("no session of a's came by after message {KILL_AT}");
    };
    let took = killed.elapsed();

    // Every acknowledged message arrives; the dead instance's leased ones
    // after the lease time (3 s), from the other instance. Waited for by
    // marker: copies count as arrivals, so TOTAL arrivals can come while
    // an original is still on its way.
    let count = |got: &[Delivered]| {
        let mut copies: BTreeMap<String, usize> = BTreeMap::new();
        for d in got {
            *copies.entry(marker(d)).or_default() += 1;
        }
        copies
    };
    let missing_in = |copies: &BTreeMap<String, usize>| -> Vec<usize> {
        acked
            .iter()
            .copied()
            .filter(|i| !copies.contains_key(&format!("cluster-{i}")))
            .collect()
    };
    let got = wait_until(Duration::from_secs(120), || {
        let got = up.messages();
        missing_in(&count(&got)).is_empty().then_some(got)
    })
    .unwrap_or_else(|| up.messages());
    let copies = count(&got);
    let missing = missing_in(&copies);
    assert!(
        missing.is_empty(),
        "acknowledged but never delivered: {missing:?}"
    );
    let duplicates: usize = copies.values().map(|n| n - 1).sum();
    eprintln!(
        "cluster: {TOTAL} acknowledged, {} arrivals, {duplicates} duplicate(s), \
         {failed_tries} failed tries around the kill (before message {killed_before}), \
         {took:?} from kill to end of sending",
        got.len()
    );
    // A copy needs the upstream's 250 to have come before the kill and its
    // record after: at most one per delivery connection (4 in the harness).
    assert!(duplicates <= 4, "{duplicates} duplicates: {copies:?}");

    // The kill broke a session: the client had to go again.
    assert!(failed_tries > 0, "the kill hit a session on a");
    assert!(b.gw.log().contains("accepted"), "instance b took mail");

    // Every link works from both instances (a restarted instance rejoins).
    a.restart();
    let with_links: Vec<&Delivered> = got
        .iter()
        .filter(|d| {
            marker(d)
                .strip_prefix("cluster-")
                .and_then(|n| n.parse::<usize>().ok())
                .is_some_and(|n| n % 50 == 7)
        })
        .collect();
    assert_eq!(with_links.len(), TOTAL / 50, "one per 50 had a document");
    for d in with_links {
        let text = d.text();
        let i: usize = marker(d)["cluster-".len()..].parse().expect("index");
        let mut tokens = link_tokens(&text, a.link_port());
        tokens.extend(link_tokens(&text, b.link_port()));
        assert_eq!(tokens.len(), 1, "one link in {}", marker(d));
        for port in [a.link_port(), b.link_port()] {
            let r = http_post_form(port, &format!("/d/{}", tokens[0]), &[], &[])
                .expect("link service answers");
            assert_eq!(r.status, 200, "{} from port {port}: {}", marker(d), r.body);
            assert_eq!(r.bytes, document(i), "{} from port {port}", marker(d));
        }
    }
    // Only ciphertext in the bucket.
    let keys = shared.moto.keys(BUCKET);
    assert_eq!(keys.len(), TOTAL / 50, "{keys:?}");
    drop(haproxy);
}

#[test]
fn a_dead_instances_leases_expire_and_the_other_delivers() {
    let shared = Shared::start();
    // An upstream that accepts connections and never answers: instance a's
    // workers hold their leases while they wait.
    let black_hole = TcpListener::bind("127.0.0.1:0").expect("bind");
    black_hole.set_nonblocking(true).expect("nonblocking");
    let hole_port = black_hole.local_addr().expect("addr").port();
    let mut a = shared.node(hole_port, None, |_| {});
    let submitted = now_secs();
    let mut c = a.client();
    for i in 0..3 {
        let to = format!("lease{i}@example.net");
        let r = c.send(
            SENDER,
            &[&to],
            &simple_message(SENDER, &to, &format!("lease-{i}")),
        );
        assert_eq!(r.code, 250, "{r}");
    }
    c.quit();
    let mut held = Vec::new();
    let leased = wait_until(Duration::from_secs(20), || {
        while let Ok((s, _)) = black_hole.accept() {
            held.push(s);
        }
        // One connection per message (4 workers): all three are leased.
        (held.len() >= 3).then_some(())
    });
    assert!(
        leased.is_some(),
        "instance a took the messages\n{}",
        a.gw.log()
    );
    a.gw.kill();

    let up_dir = Env::new();
    let up = plain_upstream(&up_dir);
    let b = shared.node(up.port, Some(&a), |_| {});
    let got = up.wait_for(3, Duration::from_secs(60));
    let mut markers: Vec<String> = got.iter().map(marker).collect();
    markers.sort();
    assert_eq!(
        markers,
        ["lease-0", "lease-1", "lease-2"],
        "each exactly once"
    );
    // No sooner than the lease (3 s) after a took them (after submission).
    for d in &got {
        let at = d.meta["at"].as_f64().expect("arrival time");
        assert!(
            at >= submitted + 3.0,
            "delivered {:.2} s after submission, before a's lease ran out\n{}",
            at - submitted,
            b.gw.log()
        );
    }
    // The upstream has the message before b has recorded the attempt.
    let recorded = wait_until(Duration::from_secs(10), || {
        (b.gw.log().matches("delivery attempt").count() >= 3).then_some(())
    });
    assert!(recorded.is_some(), "b recorded them\n{}", b.gw.log());
}

#[test]
fn an_accounts_quota_holds_across_instances() {
    let shared = Shared::start();
    let up_dir = Env::new();
    let up = plain_upstream(&up_dir);
    let quota = |c: &mut GatewayConf| c.limits_extra = "account_messages_per_hour = 10\n".into();
    let a = shared.node(up.port, None, quota);
    let b = shared.node(up.port, Some(&a), quota);
    // The window is the clock hour: the margin is for the messages below,
    // not for starting PostgreSQL, moto and two gateways above.
    clear_of_hour_end();

    let mut accepted = 0;
    let mut refused = Vec::new();
    for (n, node) in [(0, &a), (1, &b)] {
        let mut c = node.client();
        for i in 0..6 {
            let to = format!("q{n}-{i}@example.net");
            match c.try_send(
                SENDER,
                &[&to],
                &simple_message(SENDER, &to, &format!("quota-{n}-{i}")),
            ) {
                Ok(r) if r.code == 250 => accepted += 1,
                Ok(r) => panic!("end of DATA: {r}"),
                Err(e) => refused.push(e.to_string()),
            }
        }
        c.quit();
    }
    // Sequential sessions: exact (concurrent ones may pass by their number).
    assert_eq!(accepted, 10, "refusals: {refused:?}");
    assert_eq!(refused.len(), 2);
    assert!(
        refused.iter().all(|r| r.contains("450 4.7.1")),
        "{refused:?}"
    );
    up.wait_for(10, Duration::from_secs(30));
}
