//! Process lifecycle: SIGHUP reload (accepted and refused), SIGTERM with a
//! transaction in flight, connection caps, and the admin CLI while running.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

fn signal(gw: &Gateway, sig: &str) {
    let pid = gw.pid().expect("gateway running").to_string();
    let status = Command::new("kill")
        .args([sig, &pid])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {sig} {pid}");
}

fn wait_log(gw: &Gateway, needle: &str) {
    let found = wait_until(Duration::from_secs(20), || {
        gw.log().contains(needle).then_some(())
    });
    assert!(found.is_some(), "log never said {needle:?}\n{}", gw.log());
}

fn message(n: usize) -> Vec<u8> {
    format!(
        "From: app@example.com\r\nTo: r@example.org\r\nSubject: lifecycle {n}\r\n\
         Message-ID: <life-{n}@example.com>\r\n\r\nHallo {n}\r\n"
    )
    .into_bytes()
}

#[test]
fn sighup_applies_new_accounts_and_refuses_a_broken_config() {
    let mut env = Env::new();
    env.write_config(&GatewayConf::outbox());
    env.add_default_user();
    let gw = env.start_gateway();
    let ca = env.certs.ca_crt.clone();

    // Added while running: unknown until the reload.
    env.add_user("second", "second-Passw0rd!", &["*@example.com"]);
    let mut c = Smtp::connect_tls(gw.port(), &ca);
    let r = c.auth_plain("second", "second-Passw0rd!");
    assert!(r.is(535, "5.7.8"), "before reload: {r}");
    c.quit();

    signal(&gw, "-HUP");
    wait_log(&gw, "configuration reloaded");
    let mut c = Smtp::connect_auth(gw.port(), &ca, "second", "second-Passw0rd!");
    let r = c.send("x@example.com", &["r@example.org"], &message(1));
    assert_eq!(r.code, 250, "after reload: {r}");
    c.quit();

    // A config with a typo is refused; the running one stays in force.
    let good = std::fs::read_to_string(&env.config_path).expect("read config");
    std::fs::write(
        &env.config_path,
        format!("{good}\n[limits]\nmax_mesage_size = 1\n"),
    )
    .expect("write broken config");
    signal(&gw, "-HUP");
    wait_log(&gw, "reload refused");
    let mut c = Smtp::connect_auth(gw.port(), &ca, USER, PASSWORD);
    let r = c.send("app@example.com", &["r@example.org"], &message(2));
    assert_eq!(r.code, 250, "after refused reload: {r}");
    c.quit();
}

#[test]
fn sigterm_lets_the_transaction_in_flight_finish() {
    let mut env = Env::new();
    env.write_config(&GatewayConf::outbox());
    // The harness's 2 s grace would start with the signal, and the rest of
    // the message goes only after the log line and the idle session's 421
    // were read: a busy machine can take longer than that. A transaction
    // that finishes ends its session at once, so the stop is no slower.
    let text = std::fs::read_to_string(&env.config_path).expect("read config");
    assert!(text.contains("shutdown_grace = \"2s\""), "{text}");
    let text = text.replace("shutdown_grace = \"2s\"", "shutdown_grace = \"30s\"");
    std::fs::write(&env.config_path, text).expect("write config");
    env.add_default_user();
    let mut gw = env.start_gateway();
    let ca = env.certs.ca_crt.clone();

    let mut busy = Smtp::connect_auth(gw.port(), &ca, USER, PASSWORD);
    assert_eq!(busy.cmd("MAIL FROM:<app@example.com>").code, 250);
    assert_eq!(busy.cmd("RCPT TO:<r@example.org>").code, 250);
    assert_eq!(busy.cmd("DATA").code, 354);
    let msg = message(7);
    let (head, tail) = msg.split_at(20);
    busy.send_raw(head).expect("first half");

    let mut idle = Smtp::connect_tls(gw.port(), &ca);
    signal(&gw, "-TERM");
    wait_log(&gw, "shutting down");

    // The idle session is told, the busy one may finish its message.
    let r = idle
        .read_reply()
        .expect("idle session hears about the shutdown");
    assert!(r.is(421, "4.3.2"), "idle: {r}");
    busy.send_raw(tail).expect("second half");
    busy.send_raw(b".\r\n").expect("end of data");
    let r = busy.read_reply().expect("reply to the message in flight");
    assert_eq!(r.code, 250, "in-flight message: {r}");
    let id = r.last_word();

    // New connections are no longer accepted, and the process exits.
    let exited = wait_until(Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", gw.port()))
            .is_err()
            .then_some(())
    });
    assert!(
        exited.is_some(),
        "still accepting after SIGTERM\n{}",
        gw.log()
    );
    drop(busy);
    wait_log(&gw, "stopped");
    gw.kill();

    // Nothing acknowledged is lost: after a restart it is delivered.
    let gw = env.start_gateway();
    let path = env.outbox_dir().join(format!("{id}.eml"));
    let found = wait_until(Duration::from_secs(20), || path.exists().then_some(()));
    assert!(
        found.is_some(),
        "{id} never reached the outbox\n{}",
        gw.log()
    );
}

/// A connection whose greeting is 220 (None on 421 or any error).
fn greeted(port: u16) -> Option<std::net::TcpStream> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut buf = [0u8; 3];
    std::io::Read::read_exact(&mut s, &mut buf).ok()?;
    (&buf == b"220").then_some(s)
}

#[test]
fn per_ip_connection_cap_answers_421() {
    let mut env = Env::new();
    env.write_config(&GatewayConf::outbox());
    let text = std::fs::read_to_string(&env.config_path).expect("read config");
    let text = text.replace("max_connections_per_ip = 50", "max_connections_per_ip = 2");
    std::fs::write(&env.config_path, text).expect("write config");
    env.add_default_user();
    let gw = env.start_gateway();

    // The start-up probe's connection holds a slot until its session notices
    // the close, so the second slot may need a moment to come free.
    let first = Smtp::connect(gw.port());
    let second = wait_until(Duration::from_secs(10), || greeted(gw.port()));
    assert!(second.is_some(), "no second slot\n{}", gw.log());
    let mut third = std::net::TcpStream::connect(("127.0.0.1", gw.port())).expect("connect");
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut reply = String::new();
    std::io::Read::read_to_string(&mut third, &mut reply).expect("read refusal");
    assert!(
        reply.starts_with("421 4.7.0 "),
        "third connection: {reply:?}"
    );
    drop((first, second));

    // Slots come back when sessions end.
    let again = wait_until(Duration::from_secs(10), || greeted(gw.port()));
    assert!(
        again.is_some(),
        "no slot after the others closed\n{}",
        gw.log()
    );
}

#[test]
fn queue_commands_while_running() {
    let mut env = Env::new();
    // The upstream is never started: messages stay queued.
    let mut conf = GatewayConf::relay(free_port());
    conf.retry_schedule = vec!["1h"];
    env.write_config(&conf);
    env.add_default_user();
    let gw = env.start_gateway();
    let ca = env.certs.ca_crt.clone();

    let mut c = Smtp::connect_auth(gw.port(), &ca, USER, PASSWORD);
    let id = c
        .send("app@example.com", &["r@example.org"], &message(3))
        .last_word();
    c.quit();

    // Wait for the first (failed) attempt so the state is settled.
    let tried = wait_until(Duration::from_secs(20), || {
        let out = env.cli(&["queue", "show", &id, "--json"], None);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("\"attempts\": 1").then_some(text)
    });
    assert!(tried.is_some(), "no attempt recorded\n{}", gw.log());

    let out = env.cli(&["queue", "list"], None);
    assert!(out.status.success(), "{}", output_text(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains(&id) && text.contains("queued"), "{text}");
    let header = text.lines().next().unwrap_or_default();
    assert!(
        header.starts_with("ID ") && header.contains("STATE"),
        "{text}"
    );

    let out = env.cli(&["queue", "hold", &id], None);
    assert!(out.status.success(), "{}", output_text(&out));
    let out = env.cli(&["queue", "list", "--json"], None);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(list[0]["state"], "held", "{list}");

    let out = env.cli(&["queue", "hold", &id], None);
    assert!(!out.status.success(), "holding twice must fail");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one clear line: {err}");
    assert!(err.contains("held"), "{err}");

    let out = env.cli(&["queue", "delete", &id], None);
    assert!(out.status.success(), "{}", output_text(&out));
    let out = env.cli(&["queue", "show", "nosuchid"], None);
    assert!(!out.status.success());
    drop(gw);
}

const LOAD_CLIENTS: usize = 4;
const LOAD_PER_CLIENT: usize = 50;
const TERM_AFTER: usize = 40;

/// SPEC §2/§9 with a clean stop: SIGTERM in the middle of a load run (upstream
/// down, so everything stays queued); after a restart and the upstream coming
/// up, every message that got a 250 is delivered.
#[test]
fn sigterm_during_a_load_run_loses_nothing() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    let mut env = Env::new();
    let upstream_port = free_port();
    let conf = GatewayConf::relay(upstream_port);
    env.write_config(&conf);
    env.add_default_user();
    let mut gw = env.start_gateway();
    let port = gw.port();
    let t0 = Instant::now();

    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..LOAD_CLIENTS)
        .map(|k| {
            let acked = Arc::clone(&acked);
            let stop = Arc::clone(&stop);
            let ca = env.certs.ca_crt.clone();
            std::thread::spawn(move || -> String {
                let mut conn: Option<Smtp> = None;
                for i in 0..LOAD_PER_CLIENT {
                    if stop.load(Ordering::Relaxed) {
                        return format!("client {k}: stopped after {i}");
                    }
                    let c = match conn.as_mut() {
                        Some(c) => c,
                        None => match Smtp::try_connect_auth(port, &ca, USER, PASSWORD) {
                            Ok(c) => conn.insert(c),
                            Err(e) => return format!("client {k}: message {i}: connect: {e}"),
                        },
                    };
                    let id = format!("<term-{k}-{i:03}@example.com>");
                    let msg = format!(
                        "From: app@example.com\r\nTo: r@example.org\r\n\
                         Subject: load {k} {i}\r\nMessage-ID: {id}\r\n\r\nload {k} {i}\r\n"
                    );
                    match c.try_send("app@example.com", &["r@example.org"], msg.as_bytes()) {
                        Ok(r) if r.code == 250 => acked.lock().unwrap().push(id),
                        Ok(r) => return format!("client {k}: message {i}: {r}"),
                        Err(e) => return format!("client {k}: message {i}: {e}"),
                    }
                }
                if let Some(c) = conn {
                    c.quit();
                }
                format!("client {k}: all {LOAD_PER_CLIENT} sent")
            })
        })
        .collect();

    let reached = wait_until(Duration::from_secs(120), || {
        (acked.lock().unwrap().len() >= TERM_AFTER).then_some(())
    });
    if reached.is_none() {
        stop.store(true, Ordering::Relaxed);
    }
    assert!(
        reached.is_some(),
        "fewer than {TERM_AFTER} acks within 120 s ({})\n{}",
        acked.lock().unwrap().len(),
        gw.log()
    );
    signal(&gw, "-TERM");
    let at_term = acked.lock().unwrap().len();
    eprintln!("SIGTERM after {at_term} acks ({:?})", t0.elapsed());
    stop.store(true, Ordering::Relaxed);

    // Bounded: the gateway closes sessions after shutdown_grace (2 s), and the
    // client's reads time out after IO_TIMEOUT.
    for c in clients {
        let outcome = c.join().expect("client thread");
        eprintln!("{outcome}");
    }
    let status = gw.wait_exit(Duration::from_secs(30));
    assert!(
        status.is_some(),
        "the gateway did not exit within 30 s of SIGTERM\n{}",
        gw.log()
    );
    wait_log(&gw, "stopped");
    let status = status.unwrap();
    assert!(status.success(), "SIGTERM exit: {status}\n{}", gw.log());
    let acked = acked.lock().unwrap().clone();
    eprintln!(
        "gateway exited ({status}) with {} acked ({:?}); restarting",
        acked.len(),
        t0.elapsed()
    );
    assert!(acked.len() >= TERM_AFTER);
    let first_log = gw.log();
    drop(gw);

    let gw = Gateway::start(&env, "gateway-restarted.log");
    let up = env.start_upstream(&UpstreamOpts {
        port: Some(upstream_port),
        ..UpstreamOpts::default()
    });
    if let Err((m, arrived)) = wait_for_message_ids(&up, &acked, Duration::from_secs(120)) {
        panic!(
            "{} acknowledged message(s) never arrived within 120 s (e.g. {:?}); {arrived} arrived\n\
             first log:\n{first_log}\n{}",
            m.len(),
            &m[..m.len().min(5)],
            gw.log()
        );
    }

    // Let stragglers arrive, then report duplicates (allowed, not an error).
    std::thread::sleep(Duration::from_secs(2));
    let per_id = arrivals_per_message_id(&up);
    let duplicates: Vec<_> = per_id.iter().filter(|(_, n)| **n > 1).collect();
    eprintln!(
        "sigterm under load: {} acked, {} distinct delivered, {} duplicate Message-IDs {:?} ({:?})",
        acked.len(),
        per_id.len(),
        duplicates.len(),
        duplicates,
        t0.elapsed()
    );
    drop(gw);
    drop(up);
}

/// A second SIGTERM during the grace period exits at once, and the store it
/// leaves behind opens cleanly (the queued message is still there).
#[test]
fn second_sigterm_exits_at_once() {
    let mut env = Env::new();
    // No upstream: the message acknowledged first stays queued.
    let mut conf = GatewayConf::relay(free_port());
    conf.retry_schedule = vec!["1h"];
    env.write_config(&conf);
    let text = std::fs::read_to_string(&env.config_path).expect("read config");
    assert!(text.contains("shutdown_grace = \"2s\""), "{text}");
    let text = text.replace("shutdown_grace = \"2s\"", "shutdown_grace = \"30s\"");
    std::fs::write(&env.config_path, text).expect("write config");
    env.add_default_user();
    let mut gw = env.start_gateway();
    let ca = env.certs.ca_crt.clone();

    let mut c = Smtp::connect_auth(gw.port(), &ca, USER, PASSWORD);
    let r = c.send("app@example.com", &["r@example.org"], &message(11));
    assert_eq!(r.code, 250, "{r}");
    let queued = r.last_word();
    c.quit();

    // A transaction held open: without the second signal the gateway would
    // wait up to 30 s for it.
    let mut busy = Smtp::connect_auth(gw.port(), &ca, USER, PASSWORD);
    assert_eq!(busy.cmd("MAIL FROM:<app@example.com>").code, 250);
    assert_eq!(busy.cmd("RCPT TO:<r@example.org>").code, 250);
    assert_eq!(busy.cmd("DATA").code, 354);
    let msg = message(12);
    busy.send_raw(&msg[..20]).expect("first half");

    signal(&gw, "-TERM");
    wait_log(&gw, "shutting down");
    let still_running = gw.wait_exit(Duration::from_millis(500));
    assert!(
        still_running.is_none(),
        "the first SIGTERM must wait for the open transaction (grace 30 s), \
         but the gateway exited ({:?})\n{}",
        still_running,
        gw.log()
    );
    let t = std::time::Instant::now();
    signal(&gw, "-TERM");
    // "At once" against the 30 s grace; a loaded machine may take a few
    // seconds to schedule the exit.
    let status = gw.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some(),
        "still running 10 s after the second SIGTERM (grace 30 s)\n{}",
        gw.log()
    );
    eprintln!(
        "exited {:?} after the second SIGTERM ({})",
        t.elapsed(),
        status.unwrap()
    );
    assert!(
        gw.log().contains("second signal"),
        "no log line about the second signal\n{}",
        gw.log()
    );
    drop(busy);

    // The store is intact: a restart comes up and the queue still has the message.
    let gw = Gateway::start(&env, "gateway-restarted.log");
    let out = env.cli(&["queue", "list"], None);
    assert!(
        out.status.success(),
        "queue list after the restart\n{}\n{}",
        output_text(&out),
        gw.log()
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&queued),
        "{queued} missing after the restart\n{text}"
    );
    let mut c = Smtp::connect_auth(gw.port(), &ca, USER, PASSWORD);
    let r = c.send("app@example.com", &["r@example.org"], &message(13));
    assert_eq!(r.code, 250, "after the restart: {r}");
    c.quit();
}
