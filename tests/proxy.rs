//! PROXY protocol v2 on listeners (SPEC §11) against the real binary: the
//! header's client address is the one bans, limits, logs and `Received:`
//! see; connections without a valid header, or from a socket outside
//! `proxy_trusted`, are closed without a greeting; a listener without the
//! option is untouched. The last test puts Debian's real HAProxy in front.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::haproxy::Haproxy;
use common::*;

const SENDER: &str = "sender@example.com";
const RCPT: &str = "rcpt@example.net";

/// The v2 signature (HAProxy's proxy-protocol.txt, 2.2).
const SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// A hand-built `PROXY TCP4 client -> 192.0.2.25:587` header.
fn header_v2(client: [u8; 4], port: u16) -> Vec<u8> {
    let mut h = SIGNATURE.to_vec();
    h.extend([0x21, 0x11, 0, 12]); // v2 PROXY, AF_INET STREAM, 12 address bytes
    h.extend(client);
    h.extend([192, 0, 2, 25]);
    h.extend(port.to_be_bytes());
    h.extend(587u16.to_be_bytes());
    h
}

/// Connects to the gateway on `port` and writes `bytes` first.
fn connect_with(port: u16, bytes: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    s.write_all(bytes).expect("write first bytes");
    s
}

/// An SMTP client that claims to be `client` through a PROXY v2 header;
/// the greeting is read (and returned, whatever it is).
fn proxied(port: u16, client: [u8; 4]) -> (Smtp, Reply) {
    let s = connect_with(port, &header_v2(client, 40_000));
    let mut c = Smtp::over(s);
    let g = c.read_reply().expect("a reply after the PROXY header");
    (c, g)
}

/// Everything the gateway sends until it closes the connection (bounded
/// by IO_TIMEOUT); a reset counts as a close.
fn read_until_closed(mut s: TcpStream) -> (Vec<u8>, Duration) {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("no close within {IO_TIMEOUT:?}: {e}"),
        }
    }
    (got, start.elapsed())
}

/// A STARTTLS listener with `proxy_protocol` for sockets in `trusted`.
fn proxy_listener(trusted: &str) -> ListenerConf {
    ListenerConf {
        extra: format!("proxy_protocol = true\nproxy_trusted = [\"{trusted}\"]\n"),
        ..ListenerConf::starttls()
    }
}

fn admin_toml(port: u16) -> String {
    format!("\n[admin]\nbind = \"127.0.0.1:{port}\"\n")
}

fn proxy_refused(admin: u16) -> std::collections::BTreeMap<&'static str, f64> {
    let r = http_get(admin, "/metrics", None).expect("GET /metrics");
    let samples = prometheus_samples(&r.body);
    ["untrusted", "invalid", "timeout"]
        .into_iter()
        .map(|reason| {
            let key = format!("schleuse_smtp_proxy_refused_total{{reason=\"{reason}\"}}");
            (reason, samples.get(&key).copied().unwrap_or(-1.0))
        })
        .collect()
}

/// Starts the gateway with `conf`, after `edit` had its go at the rendered
/// config text (for keys the harness does not render, such as
/// `[timeouts] tls_handshake`).
fn start_edited(conf: GatewayConf, edit: impl FnOnce(String) -> String) -> World {
    let mut env = Env::new();
    let up = env.start_upstream(&UpstreamOpts::default());
    let mut conf = conf;
    conf.upstream = UpstreamConf::Relay {
        port: up.port,
        tls: true,
        auth: true,
    };
    env.write_config(&conf);
    let text = edit(env.render(&conf));
    std::fs::write(&env.config_path, text).expect("write edited config");
    env.add_default_user();
    let gw = env.start_gateway();
    World {
        gw,
        up: Some(up),
        env,
    }
}

#[test]
fn the_proxied_client_is_received_logged_and_banned() {
    let mut conf = GatewayConf::relay(0);
    conf.listeners = vec![proxy_listener("127.0.0.1/32"), ListenerConf::starttls()];
    conf.received_header = "full";
    conf.limits_extra =
        "auth_failures = 3\nauth_failure_window = \"1m\"\nauth_ban_time = \"1h\"\n".into();
    let w = start_edited(conf, |t| t);
    let proxy_port = w.gw.ports[0];
    let plain_port = w.gw.ports[1];

    // A message through the proxy listener carries the claimed client.
    let (mut c, g) = proxied(proxy_port, [203, 0, 113, 7]);
    assert_eq!(g.code, 220, "greeting after the header: {g}");
    c.ehlo();
    c.starttls(Verify::Ca(w.ca()));
    c.ehlo();
    let r = c.auth_plain(USER, PASSWORD);
    assert_eq!(r.code, 235, "{r}");
    let r = c.send(SENDER, &[RCPT], &simple_message(SENDER, RCPT, "proxied-1"));
    assert_eq!(r.code, 250, "{r}");
    c.quit();
    let got = w.up().wait_for(1, Duration::from_secs(30));
    let received = got[0].header("Received").expect("a Received header");
    assert!(
        received.contains("([203.0.113.7])"),
        "Received names the proxied client: {received}"
    );
    let log = w.gw.log();
    assert!(
        log.contains("PROXY v2 header read") && log.contains("client=203.0.113.7"),
        "the log names the proxied client\n{log}"
    );

    // Three failed logins from 203.0.113.7 ban that address ...
    let (mut c, _) = proxied(proxy_port, [203, 0, 113, 7]);
    c.ehlo();
    c.starttls(Verify::Ca(w.ca()));
    c.ehlo();
    for n in 1..=3 {
        let r = c.auth_plain(USER, "not-the-password");
        assert!(r.is(535, "5.7.8"), "failure {n}: {r}");
    }
    let r = c.auth_plain(USER, PASSWORD);
    assert!(r.is(421, "4.7.0"), "banned: {r}");
    assert!(
        r.text().contains("Too many failed logins from 203.0.113.7"),
        "{r}"
    );
    // ... at the greeting too (the ban check runs on the proxied address) ...
    let (_, g) = proxied(proxy_port, [203, 0, 113, 7]);
    assert!(g.is(421, "4.7.0"), "a banned client's next connection: {g}");
    let bans = w.env.cli(&["bans", "list"], None);
    let bans = output_text(&bans);
    assert!(
        bans.contains("203.0.113.7") && !bans.contains("127.0.0.1"),
        "{bans}"
    );

    // ... but neither another client behind the same proxy nor the proxy's
    // own address, on the plain listener.
    let (mut c, g) = proxied(proxy_port, [198, 51, 100, 9]);
    assert_eq!(g.code, 220, "another proxied client: {g}");
    c.ehlo();
    c.starttls(Verify::Ca(w.ca()));
    c.ehlo();
    let r = c.auth_plain(USER, PASSWORD);
    assert_eq!(r.code, 235, "198.51.100.9 is not banned: {r}");
    c.quit();
    let mut c = Smtp::connect_auth(plain_port, w.ca(), USER, PASSWORD);
    let r = c.send(SENDER, &[RCPT], &simple_message(SENDER, RCPT, "direct-1"));
    assert_eq!(r.code, 250, "{r}");
    c.quit();
    let got = w.up().wait_for(2, Duration::from_secs(30));
    let direct = got
        .iter()
        .find(|d| d.text().contains("direct-1"))
        .expect("the direct message");
    let received = direct.header("Received").expect("Received");
    assert!(received.contains("([127.0.0.1])"), "{received}");
}

#[test]
fn without_a_valid_header_or_from_a_stranger_there_is_no_greeting() {
    let admin = free_port();
    let mut conf = GatewayConf::relay(0);
    conf.listeners = vec![
        proxy_listener("127.0.0.1/32"),
        ListenerConf::starttls(),
        // Only 127.0.0.2 may send headers here; the tests connect from
        // 127.0.0.1, a stranger.
        proxy_listener("127.0.0.2/32"),
    ];
    conf.extra_toml = admin_toml(admin);
    // A short header timeout, so the silent-client case is quick, yet long
    // enough that "refused at once" cannot be mistaken for it even when a
    // busy machine stalls the gateway for a few seconds.
    let w = start_edited(conf, |t| {
        t.replace("[timeouts]\n", "[timeouts]\ntls_handshake = \"5s\"\n")
    });
    let (proxy_port, plain_port, stranger_port) = (w.gw.ports[0], w.gw.ports[1], w.gw.ports[2]);
    wait_until(Duration::from_secs(30), || {
        http_get(admin, "/healthz", None).ok()
    })
    .expect("admin endpoint up");
    let before = proxy_refused(admin);

    // SMTP straight away, a v1 text header, a v2 header with version 3:
    // closed at once, nothing said.
    let mut v3 = header_v2([203, 0, 113, 7], 1);
    v3[12] = 0x31;
    for first in [
        b"EHLO client.test\r\n".to_vec(),
        b"PROXY TCP4 203.0.113.7 192.0.2.25 40000 587\r\n".to_vec(),
        v3,
    ] {
        let (got, took) = read_until_closed(connect_with(proxy_port, &first));
        assert!(got.is_empty(), "no reply to {first:?}: {got:?}");
        assert!(
            took < Duration::from_secs(4),
            "refused at once, not after the timeout ({took:?})"
        );
    }
    // A header cut short by the client's close.
    let s = connect_with(proxy_port, &header_v2([203, 0, 113, 7], 1)[..20]);
    s.shutdown(Shutdown::Write).expect("half-close");
    let (got, _) = read_until_closed(s);
    assert!(got.is_empty(), "truncated header: {got:?}");
    // Silence, and a header that stops half-way: closed after the timeout.
    // Timed from before the connection: the gateway's timer starts when it
    // accepts, which a busy machine may let happen well before this thread
    // gets to read.
    for first in [&b""[..], &header_v2([203, 0, 113, 7], 1)[..14]] {
        let start = Instant::now();
        let (got, _) = read_until_closed(connect_with(proxy_port, first));
        let took = start.elapsed();
        assert!(got.is_empty(), "no reply without a header: {got:?}");
        assert!(
            took >= Duration::from_millis(4500),
            "closed by the timeout ({took:?})"
        );
    }
    // A valid header from a socket outside proxy_trusted.
    let (got, _) = read_until_closed(connect_with(stranger_port, &header_v2([203, 0, 113, 7], 1)));
    assert!(got.is_empty(), "a stranger gets nothing: {got:?}");

    let log = w.gw.log();
    assert!(
        log.contains("PROXY v1 (text) header; only v2 is accepted"),
        "{log}"
    );
    assert!(log.contains("not in proxy_trusted"), "{log}");
    assert!(log.contains("no header in time"), "{log}");
    let after = proxy_refused(admin);
    assert!(
        after["invalid"] - before["invalid"] >= 4.0,
        "{before:?} -> {after:?}"
    );
    assert!(
        after["timeout"] - before["timeout"] >= 2.0,
        "{before:?} -> {after:?}"
    );
    assert!(
        after["untrusted"] - before["untrusted"] >= 1.0,
        "{before:?} -> {after:?}"
    );

    // Nothing else broke: a proxied client still gets through ...
    let (mut c, g) = proxied(proxy_port, [198, 51, 100, 9]);
    assert_eq!(g.code, 220, "{g}");
    c.ehlo();
    c.quit();
    // ... and the listener without the option speaks SMTP as ever, to
    // which a PROXY header is just a bad command.
    let mut c = Smtp::connect_auth(plain_port, w.ca(), USER, PASSWORD);
    let r = c.send(SENDER, &[RCPT], &simple_message(SENDER, RCPT, "plain-1"));
    assert_eq!(r.code, 250, "{r}");
    c.quit();
    let mut c = Smtp::connect(plain_port);
    c.send_raw(&header_v2([203, 0, 113, 7], 1))
        .expect("send header");
    let r = c.read_reply().expect("a reply");
    assert!(r.code >= 500, "a PROXY header is no command here: {r}");
    w.up().wait_for(1, Duration::from_secs(30));
}

// ---------------------------------------------------------------------------
// Real HAProxy in front

#[test]
fn through_haproxy_send_proxy_v2() {
    let mut conf = GatewayConf::relay(0);
    conf.listeners = vec![proxy_listener("127.0.0.1/32")];
    conf.received_header = "full";
    let w = start_edited(conf, |t| t);
    let gw_port = w.port();

    // Loopback is all of 127/8: HAProxy listens on 127.0.0.2 and reaches the
    // gateway from 127.0.0.1 (its socket peer), the client connects from
    // 127.0.0.3 — so the address the gateway reports can only have come from
    // the header. `check-send-proxy` + `smtpchk` make HAProxy's health
    // checks arrive as PROXY LOCAL connections that say HELO.
    let front = free_port();
    let haproxy = Haproxy::start(
        w.env.path(),
        &format!(
            "global\n    log stderr format short local0 info\n\
             defaults\n    mode tcp\n    log global\n    option tcplog\n\
             \x20   timeout connect 5s\n    timeout client 60s\n    timeout server 60s\n\
             frontend submission\n    bind 127.0.0.2:{front}\n    default_backend gateways\n\
             backend gateways\n    option smtpchk HELO haproxy.test\n\
             \x20   server gw 127.0.0.1:{gw_port} send-proxy-v2 check check-send-proxy inter 500ms\n"
        ),
    );
    let listening = wait_until(Duration::from_secs(30), || {
        TcpStream::connect(("127.0.0.2", front)).ok()
    });
    assert!(listening.is_some(), "haproxy listens\n{}", haproxy.log());

    let message = simple_message(SENDER, RCPT, "via-haproxy");
    let data = format!("@{}", w.env.write_file("haproxy.eml", &message).display());
    let out = run_bounded(
        Command::new("swaks")
            .args(["--server", "127.0.0.2", "--port", &front.to_string()])
            .args(["--local-interface", "127.0.0.3"])
            .args(["--ehlo", "swaks.test", "--timeout", "30", "--tls"])
            .args([
                "--auth",
                "PLAIN",
                "--auth-user",
                USER,
                "--auth-password",
                PASSWORD,
            ])
            .args(["--from", SENDER, "--to", RCPT, "--data", &data]),
        None,
        Duration::from_secs(120),
    );
    let transcript = output_text(&out);
    assert!(
        out.status.success() && transcript.contains("queued as"),
        "swaks through haproxy\n{transcript}\n{}",
        haproxy.log()
    );

    let got = w.up().wait_for(1, Duration::from_secs(30));
    let received = got[0].header("Received").expect("Received");
    assert!(
        received.contains("([127.0.0.3])"),
        "the client behind HAProxy, not HAProxy's 127.0.0.1: {received}"
    );
    let log = w.gw.log();
    assert!(
        log.lines().any(|l| l.contains("PROXY v2 header read")
            && l.contains("proxy=127.0.0.1:")
            && l.contains("client=127.0.0.3")),
        "{log}"
    );
    // HAProxy's health checks: PROXY LOCAL, handled as a normal session.
    let checked = wait_until(Duration::from_secs(20), || {
        w.gw.log()
            .contains("PROXY v2 LOCAL (health check)")
            .then_some(())
    });
    assert!(checked.is_some(), "{}\n{}", w.gw.log(), haproxy.log());
    let log = w.gw.log();
    assert!(
        log.matches("PROXY listener: no valid header").count() <= 1,
        "only the harness's start-up probe comes without a header\n{log}"
    );
    drop(haproxy);
}
