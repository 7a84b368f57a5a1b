//! Account-wide upstream refusals pause delivery instead of bouncing
//! (SPEC §9, `[delivery.account_pause]`): a refusal at the greeting or
//! AUTH, a `5xx` to `MAIL FROM` for the system address, a configured reply
//! pattern, or the same `5xx` for N recipients in a row holds the whole
//! queue; nothing is bounced, one notice goes to the admin address, and
//! every message goes out once when the upstream takes mail again.

mod common;

use std::fs;
use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(60);
const ADMIN: &str = "ops@example.com";
const SYSTEM: &str = "noreply@example.com";

#[derive(Default)]
struct Setup {
    /// Lines for `[delivery.account_pause]` besides the test defaults.
    pause: &'static str,
    /// `[delivery] max_age`, when not the harness's 5 days.
    max_age: Option<&'static str>,
    admin_port: Option<u16>,
    from_rewrite: bool,
}

/// Upstream and gateway, the pause probing every second or two.
fn world(s: Setup) -> World {
    let mut env = Env::new();
    let up = env.start_upstream(&UpstreamOpts::default());
    let mut conf = GatewayConf::relay(up.port);
    if s.from_rewrite {
        // The envelope sender becomes the system address.
        conf.from_mode = "rewrite";
    }
    if let Some(port) = s.admin_port {
        conf.extra_toml
            .push_str(&format!("\n[admin]\nbind = \"127.0.0.1:{port}\"\n"));
    }
    conf.extra_toml.push_str(&format!(
        "\n[delivery.account_pause]\nnotify = \"{ADMIN}\"\nprobe_interval = \"1s\"\nprobe_max_interval = \"2s\"\n{}\n",
        s.pause
    ));
    env.write_config(&conf);
    if let Some(age) = s.max_age {
        let text = fs::read_to_string(&env.config_path).expect("read config");
        assert!(text.contains("max_age = \"5d\""), "{text}");
        let text = text.replace("max_age = \"5d\"", &format!("max_age = \"{age}\""));
        fs::write(&env.config_path, text).expect("write config");
    }
    env.add_default_user();
    let gw = env.start_gateway();
    World {
        gw,
        up: Some(up),
        env,
    }
}

/// Submits one message per recipient in one session; their Message-IDs.
fn submit(w: &World, rcpts: &[&str], marker: &str) -> Vec<String> {
    let mut c = w.client();
    let mut ids = Vec::new();
    for (n, rcpt) in rcpts.iter().enumerate() {
        let msg = simple_message("app@example.com", rcpt, &format!("{marker}-{n}"));
        let r = c.send("app@example.com", &[rcpt], &msg);
        assert_eq!(r.code, 250, "{r}\n{}", w.gw.log());
        let id = header_fields(&msg)
            .into_iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("Message-ID"))
            .map(|(_, v)| v)
            .expect("simple_message has a Message-ID");
        ids.push(id);
    }
    c.quit();
    ids
}

fn wait_log(w: &World, needle: &str) {
    wait_until(WAIT, || w.gw.log().contains(needle).then_some(()))
        .unwrap_or_else(|| panic!("gateway never logged {needle:?}\n{}", w.gw.log()));
}

/// Waits until `needle` shows in the upstream's log `n` times.
fn wait_upstream_log(w: &World, needle: &str, n: usize) {
    wait_until(WAIT, || {
        (w.up().log().matches(needle).count() >= n).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "upstream never logged {needle:?} {n} times\n{}",
            w.up().log()
        )
    });
}

fn wait_queue_empty(w: &World) {
    wait_until(WAIT, || {
        let out = w.env.cli(&["queue", "list", "--json"], None);
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        list.as_array().is_some_and(|a| a.is_empty()).then_some(())
    })
    .unwrap_or_else(|| {
        let out = w.env.cli(&["queue", "list"], None);
        panic!("queue never emptied:\n{}", output_text(&out))
    });
}

/// After the upstream accepts again: every message exactly once, the
/// notice exactly once, no DSN, nothing bounced.
fn everything_went_once(w: &World, ids: &[String]) {
    if let Err((missing, got)) = wait_for_message_ids(w.up(), ids, WAIT) {
        panic!(
            "missing {missing:?} ({got} arrived)\n{}\n{}",
            w.gw.log(),
            w.up().log()
        );
    }
    wait_queue_empty(w);
    let arrivals = arrivals_per_message_id(w.up());
    for id in ids {
        assert_eq!(arrivals.get(id), Some(&1), "{id}: {arrivals:?}");
    }
    let msgs = w.up().messages();
    let notices: Vec<&Delivered> = msgs.iter().filter(|d| d.rcpt_tos == [ADMIN]).collect();
    assert_eq!(notices.len(), 1, "one pause notice: {msgs:#?}");
    assert_eq!(notices[0].mail_from, SYSTEM);
    // German is the default language of the notices.
    let subject = notices[0].header("Subject").unwrap_or_default();
    assert!(subject.contains("Versand angehalten"), "{subject}");
    assert!(
        msgs.iter().all(|d| !d.mail_from.is_empty()),
        "no DSN may be sent: {msgs:#?}"
    );
    assert_eq!(msgs.len(), ids.len() + 1, "{msgs:#?}");
    let log = w.gw.log();
    assert!(!log.contains("bounce notice queued"), "{log}");
    assert!(
        log.contains("upstream takes mail again: delivery resumed"),
        "{log}"
    );
}

#[test]
fn mail_from_refused_for_the_system_address_pauses_and_every_message_goes_once() {
    let admin = free_port();
    let w = world(Setup {
        admin_port: Some(admin),
        from_rewrite: true,
        ..Setup::default()
    });
    w.up()
        .refuse("mail", Some("550 5.7.1 Access denied (test)"));
    let ids = submit(
        &w,
        &["a@example.org", "b@example.org", "c@example.org"],
        "mailfrom",
    );
    wait_log(&w, "delivery paused: the upstream refuses the account");
    assert!(
        w.gw.log().contains("cause=\"system_sender\""),
        "{}",
        w.gw.log()
    );
    // Probes back off and keep finding the refusal; nothing goes out.
    wait_log(&w, "probe: the upstream still refuses the account");
    let probe = format!("MAIL FROM <{SYSTEM}> refused (--control)");
    let before = w.up().log().matches(&probe).count();
    wait_upstream_log(&w, &probe, before + 1);
    assert!(w.up().messages().is_empty());

    // Still ready for submission, and it says why delivery waits.
    let r = http_get(admin, "/readyz", None).expect("readyz");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.starts_with("ready\n"), "{}", r.body);
    assert!(r.body.contains("delivery: paused"), "{}", r.body);
    assert!(r.body.contains("550 5.7.1 Access denied"), "{}", r.body);
    let m = http_get(admin, "/metrics", None).expect("metrics");
    let samples = prometheus_samples(&m.body);
    assert_eq!(
        samples.get("schleuse_delivery_account_paused"),
        Some(&1.0),
        "{}",
        m.body
    );
    assert_eq!(
        samples.get("schleuse_delivery_account_pauses_total{cause=\"system_sender\"}"),
        Some(&1.0),
        "{}",
        m.body
    );
    let out = w.env.cli(&["queue", "list", "--json"], None);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("queue list");
    let queued = list.as_array().cloned().unwrap_or_default();
    assert_eq!(
        queued.len(),
        4,
        "three messages and the notice wait:\n{list:#}"
    );
    // Each keeps its place: due since it came, not put off by the refusal
    // (the retry schedule would have moved it by a second or more).
    for m in &queued {
        let (next, received) = (m["next_attempt"].as_i64(), m["received_at"].as_i64());
        let kept = next.zip(received).is_some_and(|(n, r)| n - r < 500);
        assert!(kept, "{m:#}");
        assert_eq!(m["recipients"][0]["state"], "pending", "{m:#}");
    }

    w.up().refuse("mail", None);
    everything_went_once(&w, &ids);
    let m = http_get(admin, "/metrics", None).expect("metrics");
    let samples = prometheus_samples(&m.body);
    assert_eq!(samples.get("schleuse_delivery_account_paused"), Some(&0.0));
}

#[test]
fn greeting_and_auth_refusals_pause_without_bouncing() {
    let w = world(Setup::default());
    w.up().refuse(
        "greeting",
        Some("554 5.7.0 No service for this client (test)"),
    );
    let ids = submit(&w, &["a@example.org", "b@example.org"], "greeting");
    wait_log(&w, "delivery paused: the upstream refuses the account");
    assert!(w.gw.log().contains("cause=\"connect\""), "{}", w.gw.log());
    // Now AUTH is refused instead: the probes find that too.
    w.up().refuse("greeting", None);
    w.up().refuse(
        "auth",
        Some("535 5.7.8 Authentication credentials invalid (test)"),
    );
    wait_upstream_log(&w, "refused (--control): 535 5.7.8", 1);
    wait_log(&w, "reply=535 5.7.8 Authentication credentials invalid");
    assert!(w.up().messages().is_empty());
    w.up().refuse("auth", None);
    everything_went_once(&w, &ids);
}

#[test]
fn the_same_refusal_for_n_recipients_in_a_row_pauses() {
    let w = world(Setup {
        pause: "same_reply_recipients = 3\nsame_reply_window = \"1m\"\npatterns = []",
        ..Setup::default()
    });
    w.up()
        .refuse("rcpt", Some("550 5.7.1 Recipient refused by policy (test)"));
    let ids = submit(
        &w,
        &["a@example.org", "b@example.org", "c@example.org"],
        "samereply",
    );
    wait_log(&w, "delivery paused: the upstream refuses the account");
    let log = w.gw.log();
    assert!(log.contains("cause=\"same_reply\""), "{log}");
    assert!(!log.contains("bounce notice queued"), "{log}");
    w.up().refuse("rcpt", None);
    everything_went_once(&w, &ids);
}

#[test]
fn a_configured_pattern_pauses_at_its_first_match() {
    let w = world(Setup {
        pause: "same_reply_recipients = 0\npatterns = [\"account is temporarily limited\"]",
        ..Setup::default()
    });
    w.up().refuse(
        "rcpt",
        Some("550 5.7.1 Your account is temporarily limited (test)"),
    );
    let ids = submit(&w, &["a@example.org"], "pattern");
    wait_log(&w, "delivery paused: the upstream refuses the account");
    let log = w.gw.log();
    assert!(log.contains("cause=\"pattern\""), "{log}");
    // The first refused RCPT was the message's only attempt so far.
    assert_eq!(
        w.up().log().matches("RCPT <a@example.org> refused").count(),
        1,
        "{}",
        w.up().log()
    );
    w.up().refuse("rcpt", None);
    everything_went_once(&w, &ids);
}

#[test]
fn a_message_past_max_age_while_paused_still_expires_with_a_dsn() {
    let w = world(Setup {
        max_age: Some("3s"),
        ..Setup::default()
    });
    w.up().refuse(
        "greeting",
        Some("554 5.7.0 No service for this client (test)"),
    );
    let ids = submit(&w, &["old@example.org"], "expires");
    wait_log(&w, "delivery paused: the upstream refuses the account");
    wait_log(&w, "bounce notice queued");
    assert!(w.up().messages().is_empty());
    w.up().refuse("greeting", None);
    // The DSN goes to the sender once the upstream takes mail again; the
    // message itself never goes.
    let dsn = wait_until(WAIT, || {
        w.up()
            .messages()
            .into_iter()
            .find(|d| d.mail_from.is_empty() && d.rcpt_tos == ["app@example.com"])
    })
    .unwrap_or_else(|| panic!("no DSN\n{}\n{}", w.gw.log(), w.up().log()));
    let text = dsn.text();
    assert!(text.contains("old@example.org"), "{text}");
    assert!(text.contains("max_age"), "{text}");
    wait_queue_empty(&w);
    let arrivals = arrivals_per_message_id(w.up());
    assert_eq!(arrivals.get(&ids[0]), None, "{arrivals:?}");
}
