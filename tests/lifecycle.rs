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

#[test]
fn per_ip_connection_cap_answers_421() {
    let mut env = Env::new();
    env.write_config(&GatewayConf::outbox());
    let text = std::fs::read_to_string(&env.config_path).expect("read config");
    let text = text.replace("max_connections_per_ip = 50", "max_connections_per_ip = 2");
    std::fs::write(&env.config_path, text).expect("write config");
    env.add_default_user();
    let gw = env.start_gateway();

    let first = Smtp::connect(gw.port());
    let second = Smtp::connect(gw.port());
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
    let again = wait_until(Duration::from_secs(10), || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.port())).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut buf = [0u8; 3];
        std::io::Read::read_exact(&mut s, &mut buf).ok()?;
        (&buf == b"220").then_some(())
    });
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
