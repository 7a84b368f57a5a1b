//! Limits and AUTH bans (SPEC §5, §6) against the real binary: they trigger
//! at the configured counts, answer with a retry hint, survive a restart
//! (bans and account quotas live in the store) and recover after the ban.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

const SENDER: &str = "sender@example.com";
const RCPT: &str = "rcpt@example.net";

/// Connects and returns the first reply line (the greeting, or a refusal).
fn greeting(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    while !buf.windows(2).any(|w| w == b"\r\n") {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8_lossy(&buf).trim_end().to_string()
}

fn restart(w: &mut World, log: &str) {
    w.gw.kill();
    w.gw = Gateway::start(&w.env, log);
}

#[test]
fn auth_failures_ban_the_ip_across_a_restart_until_the_ban_ends() {
    let mut w = World::relay_with(UpstreamOpts::default(), |c| {
        c.limits_extra =
            "auth_failures = 3\nauth_failure_window = \"1m\"\nauth_ban_time = \"10s\"\n".into();
    });
    let mut c = Smtp::connect_tls(w.port(), w.ca());
    // Taken before the third failure is sent: the ban starts somewhere in
    // that exchange (a slow machine spends a while on the password hash),
    // so this is the earliest it can start.
    let fail = |c: &mut Smtp, n: u32| {
        let r = c.auth_plain(USER, "not-the-password");
        assert!(r.is(535, "5.7.8"), "failure {n} is still a 535: {r}");
    };
    fail(&mut c, 1);
    fail(&mut c, 2);
    let banned_at = Instant::now();
    fail(&mut c, 3);
    // The next try on the same connection: banned, and the connection closes.
    let r = c.auth_plain(USER, PASSWORD);
    assert!(r.is(421, "4.7.0"), "after 3 failures: {r}");
    let text = r.text();
    assert!(
        text.contains("Too many failed logins from 127.0.0.1") && text.contains("try again after"),
        "{text}"
    );
    assert!(c.try_cmd("NOOP").is_err(), "the connection is closed");

    // A new connection is refused at the greeting, even with the right password.
    let g = greeting(w.port());
    assert!(g.starts_with("421 4.7.0 Too many failed logins"), "{g}");
    assert!(g.contains("(in "), "a retry hint: {g}");

    // The ban is in the store: a restarted gateway still refuses.
    restart(&mut w, "gateway-restarted.log");
    // Unless the restart outlasted the ban: judged by the time the reply
    // came, not before the connection (a slow machine may pass 9 s between).
    let g = greeting(w.port());
    assert!(
        g.starts_with("421 4.7.0") || banned_at.elapsed() >= Duration::from_secs(9),
        "banned after a restart: {g}"
    );
    let first_log = std::fs::read_to_string(w.env.path().join("gateway.log")).unwrap_or_default();
    assert!(first_log.contains("client IP banned after repeated failed logins"));

    // After the ban time the client is welcome again.
    let back = wait_until(Duration::from_secs(20), || {
        greeting(w.port()).starts_with("220").then_some(())
    });
    assert!(back.is_some(), "the ban ends");
    assert!(
        banned_at.elapsed() >= Duration::from_secs(9),
        "not before its time"
    );
    let mut c = w.client();
    let r = c.send(SENDER, &[RCPT], &simple_message(SENDER, RCPT, "after-ban"));
    assert_eq!(r.code, 250, "{r}");
}

#[test]
fn account_hourly_quota_holds_across_a_restart() {
    let mut w = World::relay_with(UpstreamOpts::default(), |c| {
        c.limits_extra = "account_messages_per_hour = 2\n".into();
    });
    // The window is the clock hour; the margin is for what follows, not for
    // starting the processes above.
    clear_of_hour_end();
    let mut c = w.client();
    for n in 0..2 {
        let r = c.send(
            SENDER,
            &[RCPT],
            &simple_message(SENDER, RCPT, &format!("q{n}")),
        );
        assert_eq!(r.code, 250, "message {n}: {r}");
    }
    let r = c.cmd(&format!("MAIL FROM:<{SENDER}>"));
    assert!(r.is(450, "4.7.1"), "the third message: {r}");
    let text = r.text();
    assert!(
        text.contains("Account app has reached its hourly limit of 2 messages")
            && text.contains("try again after")
            && text.contains(":00:00Z"),
        "{text}"
    );
    c.quit();

    restart(&mut w, "gateway-restarted.log");
    let mut c = w.client();
    let r = c.cmd(&format!("MAIL FROM:<{SENDER}>"));
    assert!(
        r.is(450, "4.7.1"),
        "still over the quota after a restart: {r}"
    );
    assert_eq!(w.up().wait_for(2, Duration::from_secs(30)).len(), 2);
}

#[test]
fn ip_message_rate_and_daily_recipients() {
    let w = World::relay_with(UpstreamOpts::default(), |c| {
        c.limits_extra = "ip_messages_per_minute = 2\naccount_recipients_per_day = 3\n".into();
    });
    let mut c = w.client();
    let two = ["a@example.net", "b@example.net"];
    let r = c.send(SENDER, &two, &simple_message(SENDER, RCPT, "r1"));
    assert_eq!(r.code, 250, "{r}");

    // Two recipients used today: the third is accepted, the fourth not.
    let r = c.cmd(&format!("MAIL FROM:<{SENDER}>"));
    assert_eq!(r.code, 250, "{r}");
    let r = c.cmd("RCPT TO:<c@example.net>");
    assert_eq!(r.code, 250, "{r}");
    let r = c.cmd("RCPT TO:<d@example.net>");
    assert!(r.is(450, "4.7.1"), "the fourth recipient today: {r}");
    assert!(
        r.text().contains("daily limit of 3 recipients") && r.text().contains("try again after"),
        "{r}"
    );
    let r = c.data(&simple_message(SENDER, RCPT, "r2"));
    assert_eq!(r.code, 250, "{r}");

    // Two messages this minute from 127.0.0.1: the third MAIL waits.
    let r = c.cmd(&format!("MAIL FROM:<{SENDER}>"));
    assert!(r.is(450, "4.7.1"), "the third message this minute: {r}");
    assert!(
        r.text()
            .contains("Too many messages from 127.0.0.1 (limit 2 per minute); try again after"),
        "{r}"
    );
    assert!(r.text().contains(" seconds)"), "under a minute: {r}");
}

#[test]
fn bans_list_and_remove() {
    let w = World::relay_with(UpstreamOpts::default(), |c| {
        c.limits_extra =
            "auth_failures = 2\nauth_failure_window = \"1m\"\nauth_ban_time = \"1h\"\n".into();
    });
    let mut c = Smtp::connect_tls(w.port(), w.ca());
    for _ in 0..2 {
        c.auth_plain(USER, "not-the-password");
    }
    assert!(greeting(w.port()).starts_with("421 4.7.0"), "banned");

    let out = w.env.cli(&["bans", "list"], None);
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    let header = text.lines().find(|l| l.starts_with("IP")).unwrap_or("");
    assert!(
        header.contains("SINCE") && header.contains("UNTIL") && header.contains("REASON"),
        "{text}"
    );
    assert!(text.contains("127.0.0.1"), "{text}");
    let out = w.env.cli(&["bans", "list", "--json"], None);
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"ip\": \"127.0.0.1\""));

    let out = w.env.cli(&["bans", "remove", "192.0.2.99"], None);
    assert!(!out.status.success(), "unknown IP: {}", output_text(&out));
    assert!(output_text(&out).contains("192.0.2.99 is not banned"));

    let out = w.env.cli(&["bans", "remove", "127.0.0.1"], None);
    assert!(out.status.success(), "{}", output_text(&out));
    let g = greeting(w.port());
    assert!(g.starts_with("220"), "welcome again after bans remove: {g}");
    let out = w.env.cli(&["bans", "list"], None);
    assert!(output_text(&out).contains("no client IP is banned"));
}
