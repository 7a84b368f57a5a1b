//! The submission side under hostile clients (SPEC §5): idle and trickling
//! connections cannot hold the slots, an over-long line gets one reply,
//! client text cannot forge log lines, addresses are never altered.
//!
//! Idle floods come from several loopback source addresses (127.0.0.x),
//! so the per-IP cap is not what protects the newcomer.

mod common;

use std::fs;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// Starts a gateway for `conf`, with its rendered config text edited by `edit`.
fn world(conf: GatewayConf, edit: impl Fn(String) -> String) -> World {
    let mut env = Env::new();
    env.write_config(&conf);
    let text = fs::read_to_string(&env.config_path).expect("read config");
    fs::write(&env.config_path, edit(text)).expect("write config");
    env.add_default_user();
    let gw = env.start_gateway();
    World { gw, up: None, env }
}

/// Sets `[timeouts]` keys (the harness writes command, data_block, data_total).
fn timeouts(text: String, command: &str, auth: &str, session: &str) -> String {
    text.replace(
        "command = \"60s\"",
        &format!("command = \"{command}\"\nauth = \"{auth}\"\nsession = \"{session}\""),
    )
}

/// A TCP connection to the gateway from 127.0.0.`host`.
fn connect_from(host: u8, port: u16) -> TcpStream {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let local = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, host)), 0);
    socket.bind(&local.into()).expect("bind a loopback source");
    let remote = SocketAddr::from(([127, 0, 0, 1], port));
    socket
        .connect_timeout(&remote.into(), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("connect from 127.0.0.{host}: {e}"));
    socket.into()
}

/// Reads the first reply line (up to CRLF) within `timeout`.
fn read_line(s: &mut TcpStream, timeout: Duration) -> io::Result<String> {
    s.set_read_timeout(Some(timeout))?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        if s.read(&mut byte)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        line.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&line).trim_end().to_string())
}

#[test]
fn idle_connections_that_never_log_in_do_not_lock_out_a_new_client() {
    // 5 addresses x 20 idle connections fill max_connections; the AUTH
    // deadline is far off, so only shedding can make room in time.
    let w = world(GatewayConf::outbox(), |t| {
        let t = t.replace(
            "max_connections = 500\nmax_connections_per_ip = 50",
            "max_connections = 100\nmax_connections_per_ip = 20\nmax_unauthenticated_connections = 100",
        );
        timeouts(t, "60s", "10m", "1h")
    });
    let port = w.port();
    // The harness's start-up probe may still hold a slot for a moment.
    let probe_gone = wait_until(Duration::from_secs(10), || {
        let mut s = connect_from(9, port);
        let line = read_line(&mut s, Duration::from_secs(10)).ok()?;
        line.starts_with("220").then_some(())
    });
    assert!(probe_gone.is_some(), "no greeting at all\n{}", w.gw.log());
    let mut idle = Vec::new();
    for host in 2..=6 {
        for _ in 0..20 {
            let mut s = connect_from(host, port);
            let greeting = read_line(&mut s, Duration::from_secs(30)).expect("greeting");
            assert!(
                greeting.starts_with("220 "),
                "idle #{}: {greeting}",
                idle.len()
            );
            idle.push(s);
        }
    }

    let started = Instant::now();
    let mut newcomer = connect_from(1, port);
    let greeting = read_line(&mut newcomer, Duration::from_secs(30)).expect("newcomer's greeting");
    let waited = started.elapsed();
    assert!(
        greeting.starts_with("220 "),
        "with 100 idle connections open, a new client got {greeting:?}\n{}",
        w.gw.log()
    );
    // Timing is for the benchmark (bench/flood.sh); this bound only says
    // the slot was not freed by some deadline.
    assert!(waited < Duration::from_secs(20), "greeted after {waited:?}");

    // One idle connection made room, with a 421 that says why.
    let shed = wait_until(Duration::from_secs(20), || {
        idle.iter_mut().find_map(|s| {
            let line = read_line(s, Duration::from_millis(20)).ok()?;
            Some(line)
        })
    })
    .expect("no idle connection was shed");
    assert!(shed.starts_with("421 4.7.0 "), "shed with {shed:?}");

    // The newcomer logs in and is served as usual.
    let mut c = Smtp::over(newcomer);
    c.ehlo();
    c.starttls(Verify::Ca(&w.env.certs.ca_crt));
    c.ehlo();
    let r = c.auth_plain(USER, PASSWORD);
    assert_eq!(r.code, 235, "AUTH: {r}");
    assert_eq!(c.cmd("NOOP").code, 250);
}

/// What a client trickling `bytes` at one byte per `pace` (repeating
/// them) is answered, up to the first 421 or the connection's end.
struct Trickled {
    replies: Vec<String>,
    cut_after: Duration,
}

fn trickle(port: u16, tls_first: bool, bytes: &'static [u8], pace: Duration) -> Trickled {
    let started = Instant::now();
    let mut s = connect_from(1, port);
    let greeting = read_line(&mut s, Duration::from_secs(30)).expect("greeting");
    assert!(greeting.starts_with("220 "), "{greeting}");
    if tls_first {
        // Not logged in, on the STARTTLS listener: EHLO in clear is fine.
        s.write_all(b"EHLO trickle.test\r\n").expect("EHLO");
        while !read_line(&mut s, Duration::from_secs(30))
            .expect("EHLO reply")
            .starts_with("250 ")
        {}
    }
    let mut replies = Vec::new();
    let mut buf = Vec::new();
    for &b in bytes.iter().cycle() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "still not cut off after 2 minutes: {replies:?}"
        );
        if s.write_all(&[b]).is_err() {
            break;
        }
        // Wait one pace for whatever the gateway says.
        s.set_read_timeout(Some(pace)).expect("read timeout");
        let mut chunk = [0u8; 512];
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
        while let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
            let line: Vec<u8> = buf.drain(..end + 2).collect();
            replies.push(String::from_utf8_lossy(&line[..end]).into_owned());
        }
        if replies.iter().any(|r| r.starts_with("421")) {
            break;
        }
    }
    Trickled {
        replies,
        cut_after: started.elapsed(),
    }
}

#[test]
fn trickling_clients_are_cut_off_at_their_deadlines() {
    let mut conf = GatewayConf::outbox();
    conf.listeners = vec![ListenerConf::trusted_plain(USER), ListenerConf::starttls()];
    // Each 6-byte NOOP line at one byte per second is complete well within
    // its 15 s even on a loaded machine; the deadlines are far enough apart
    // that each trickler can only be cut by its own.
    let w = world(conf, |t| timeouts(t, "15s", "22s", "30s"));
    let trusted = w.gw.ports[0];
    let open = w.gw.ports[1];
    let second = Duration::from_secs(1);

    let login = thread::spawn(move || trickle(open, true, b"NOOP\r\n", second));
    let session = thread::spawn(move || trickle(trusted, false, b"NOOP\r\n", second));
    // One line that never ends.
    let line = thread::spawn(move || trickle(trusted, false, b"NOOP xxxxxxxxxx", second));
    let (login, session, line) = (
        login.join().expect("login trickler"),
        session.join().expect("session trickler"),
        line.join().expect("line trickler"),
    );

    for (name, t, deadline, text) in [
        (
            "not logged in",
            &login,
            22,
            "No successful login within 22s",
        ),
        ("trusted", &session, 30, "Session time limit reached: 30s"),
        (
            "never-ending line",
            &line,
            15,
            "No complete command within 15s",
        ),
    ] {
        let last = t.replies.last().cloned().unwrap_or_default();
        assert!(
            last.starts_with("421 4.4.2 ") && last.contains(text),
            "{name}: replies {:?}\n{}",
            t.replies,
            w.gw.log()
        );
        // Measured from the client's connect, which precedes the accept:
        // never shorter than the deadline.
        assert!(
            t.cut_after >= Duration::from_secs(deadline),
            "{name}: cut after {:?}, before its {deadline} s",
            t.cut_after
        );
    }
    // The NOOPs before the cut were served.
    assert!(
        login.replies.iter().any(|r| r.starts_with("250")),
        "{:?}",
        login.replies
    );
    assert!(
        session
            .replies
            .iter()
            .filter(|r| r.starts_with("250"))
            .count()
            >= 2
    );
    assert_eq!(line.replies.len(), 1, "{:?}", line.replies);
}

/// Sends `bytes` and returns every reply line until the gateway closes.
fn replies_until_close(port: u16, bytes: &[u8]) -> Vec<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let greeting = read_line(&mut s, Duration::from_secs(30)).expect("greeting");
    assert!(greeting.starts_with("220 "), "{greeting}");
    s.write_all(bytes).expect("send");
    let mut replies = Vec::new();
    while let Ok(line) = read_line(&mut s, Duration::from_secs(30)) {
        replies.push(line);
    }
    replies
}

#[test]
fn an_over_long_line_gets_exactly_one_reply() {
    let mut conf = GatewayConf::outbox();
    conf.listeners = vec![ListenerConf::trusted_plain(USER)];
    let w = world(conf, |t| t);
    for size in [20 * 1024, 1024 * 1024] {
        let mut pipelined = b"NOOP ".to_vec();
        pipelined.resize(5 + size, b'x');
        pipelined.extend_from_slice(b"\r\nNOOP\r\nQUIT\r\n");
        let replies = replies_until_close(w.port(), &pipelined);
        let codes: Vec<&str> = replies.iter().map(|r| &r[..r.len().min(9)]).collect();
        assert_eq!(
            codes,
            ["500 5.5.2", "250 2.0.0", "221 2.0.0"],
            "a {size}-byte line: {replies:?}"
        );
    }
}

/// AUTH LOGIN with a user name meant to forge a log line and drive the
/// terminal, on a plain-text loopback listener (AUTH allowed without TLS).
const FORGED: &str = "x\nFAKE INFO authenticated session=99 account=via\u{1b}[31m\0\u{9b}2J";

fn forge_attempt(port: u16) {
    let mut c = Smtp::connect(port);
    c.cmd("EHLO evil\u{1b}[2J.test");
    assert_eq!(c.cmd("AUTH LOGIN").code, 334);
    assert_eq!(c.cmd(&base64(FORGED.as_bytes())).code, 334);
    assert_eq!(c.cmd(&base64(b"wrong")).code, 535);
    c.quit();
}

/// Starts `schleuse run` the way a service manager would: stderr to a
/// file, no terminal, and no NO_COLOR in the environment.
fn start_without_terminal(env: &Env, log: &std::path::Path) -> std::process::Child {
    let file = fs::File::create(log).expect("create log");
    let child = Command::new(BIN)
        .arg("--config")
        .arg(&env.config_path)
        .arg("run")
        .current_dir(env.path())
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::from(file.try_clone().expect("clone")))
        .stderr(Stdio::from(file))
        .spawn()
        .expect("start schleuse run");
    let port = env.conf().port();
    let up = wait_until(Duration::from_secs(60), || {
        TcpStream::connect(("127.0.0.1", port)).ok()
    });
    assert!(up.is_some(), "gateway did not listen");
    child
}

#[test]
fn client_text_cannot_forge_log_lines() {
    let mut conf = GatewayConf::outbox();
    conf.listeners = vec![ListenerConf {
        tls: "none",
        ..ListenerConf::starttls()
    }];
    conf.attachments_mode = "keep";
    let mut env = Env::new();
    env.write_config(&conf);
    env.add_default_user();

    for format in ["human", "json"] {
        let text = fs::read_to_string(&env.config_path).expect("read config");
        let text = text.replace("format = \"human\"", &format!("format = \"{format}\""));
        fs::write(&env.config_path, text).expect("write config");
        let log = env.path().join(format!("{format}.log"));
        let mut child = start_without_terminal(&env, &log);
        forge_attempt(env.conf().port());
        let found = wait_until(Duration::from_secs(20), || {
            let text = fs::read_to_string(&log).ok()?;
            text.contains("authentication failed").then_some(text)
        });
        let _ = child.kill();
        let _ = child.wait();
        let text = found.unwrap_or_else(|| {
            panic!(
                "no failed login logged ({format}):\n{}",
                fs::read_to_string(&log).unwrap_or_default()
            )
        });

        let raw: Vec<char> = text
            .chars()
            .filter(|&c| c != '\n' && (c.is_control() || c == '\u{9b}'))
            .collect();
        assert!(
            raw.is_empty(),
            "{format} log has raw control characters {raw:?}:\n{text}"
        );
        let mut json_failures = 0;
        for line in text.lines() {
            assert!(
                !line.trim_start().starts_with("FAKE"),
                "{format} log has a forged line:\n{text}"
            );
            if format == "json" {
                let v: serde_json::Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
                if v["message"] == "authentication failed" {
                    // JSON escapes, and the value itself is kept.
                    assert_eq!(v["user"], FORGED, "{line}");
                    json_failures += 1;
                }
            }
        }
        if format == "json" {
            assert_eq!(json_failures, 1, "one failed login logged:\n{text}");
        }
        if format == "human" {
            assert!(
                text.contains(
                    "x\\nFAKE INFO authenticated session=99 account=via\\x1b[31m\\0\\u{9b}2J"
                ),
                "the user name, escaped:\n{text}"
            );
        }
    }
}

#[test]
fn addresses_are_relayed_unchanged_or_refused() {
    let mut conf = GatewayConf::outbox();
    conf.listeners = vec![ListenerConf::trusted_plain(USER)];
    let w = world(conf, |t| t);
    let mut c = Smtp::connect(w.port());
    c.ehlo();
    let cmd = |c: &mut Smtp, line: &[u8]| {
        let mut bytes = line.to_vec();
        bytes.extend_from_slice(b"\r\n");
        c.send_raw(&bytes).expect("send");
        c.read_reply().expect("reply")
    };

    // Invalid UTF-8 is no address: refused, never turned into p\u{fffd}rent@.
    for smtputf8 in ["", " SMTPUTF8"] {
        let r = cmd(
            &mut c,
            format!("MAIL FROM:<sender@example.com>{smtputf8}").as_bytes(),
        );
        assert_eq!(r.code, 250, "{r}");
        let r = cmd(&mut c, b"RCPT TO:<p\xe4rent@example.org>");
        assert!(r.is(501, "5.1.3"), "invalid UTF-8 recipient: {r}");
        assert_eq!(cmd(&mut c, b"RSET").code, 250);

        let mut raw = b"MAIL FROM:<s\xe4nder@example.com>".to_vec();
        raw.extend_from_slice(smtputf8.as_bytes());
        let r = cmd(&mut c, &raw);
        assert!(r.is(501, "5.1.7"), "invalid UTF-8 sender: {r}");

        let r = cmd(
            &mut c,
            format!("MAIL FROM:<s\u{e4}nder@example.com>{smtputf8}").as_bytes(),
        );
        if smtputf8.is_empty() {
            assert!(r.is(553, "5.6.7"), "non-ASCII sender without SMTPUTF8: {r}");
        } else {
            assert_eq!(r.code, 250, "non-ASCII sender with SMTPUTF8: {r}");
        }
        assert_eq!(cmd(&mut c, b"RSET").code, 250);
    }

    // Non-ASCII recipients only after SMTPUTF8 (RFC 6531 §3.5).
    assert_eq!(cmd(&mut c, b"MAIL FROM:<sender@example.com>").code, 250);
    let r = cmd(&mut c, "RCPT TO:<p\u{e4}rent@example.org>".as_bytes());
    assert!(
        r.is(553, "5.6.7"),
        "non-ASCII recipient without SMTPUTF8: {r}"
    );
    assert_eq!(cmd(&mut c, b"RSET").code, 250);
    assert_eq!(
        cmd(&mut c, b"MAIL FROM:<sender@example.com> SMTPUTF8").code,
        250
    );
    let r = cmd(&mut c, "RCPT TO:<p\u{e4}rent@example.org>".as_bytes());
    assert_eq!(r.code, 250, "non-ASCII recipient with SMTPUTF8: {r}");
    // Quoted local parts come out of the parser unquoted: refused.
    let r = cmd(&mut c, b"RCPT TO:<\"two words\"@example.org>");
    assert!(r.is(501, "5.1.3"), "quoted local part: {r}");
    c.quit();
}
