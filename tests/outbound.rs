//! Outbound protection (SPEC §6) with the real binary and the upstream
//! stand-in: a recipient suppressed while its message waits in the queue
//! is not sent to, per-domain rate caps pace delivery without counting
//! attempts, and egress source addresses rotate, with a blocklisted one
//! taken out of the rotation (DNS stand-in on loopback).

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::dns::{Answer, DnsStandIn, Zone};
use common::*;
use serde_json::Value;

const SENDER: &str = "sender@example.com";
const WAIT: Duration = Duration::from_secs(30);

fn cli_ok(w: &World, args: &[&str]) -> String {
    let out = w.env.cli(args, None);
    assert!(
        out.status.success(),
        "schleuse {args:?} failed\n{}",
        output_text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn show(w: &World, id: &str) -> Value {
    let text = cli_ok(w, &["queue", "show", id, "--json"]);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("queue show {id}: {e}\n{text}"))
}

/// `queue show` once the message is final: the upstream has a message a
/// moment before the gateway records the attempt.
fn show_final(w: &World, id: &str) -> Value {
    wait_until(WAIT, || {
        let v = show(w, id);
        (message(&v, id)["state"] != "queued").then_some(v)
    })
    .unwrap_or_else(|| panic!("{id} never became final\n{}", w.gw.log()))
}

/// The message object in `queue show --json` output (it may be wrapped).
fn message<'a>(v: &'a Value, id: &str) -> &'a Value {
    fn find<'a>(v: &'a Value, id: &str) -> Option<&'a Value> {
        match v {
            Value::Object(m) if m.get("id").and_then(Value::as_str) == Some(id) => Some(v),
            Value::Object(m) => m.values().find_map(|c| find(c, id)),
            Value::Array(a) => a.iter().find_map(|c| find(c, id)),
            _ => None,
        }
    }
    find(v, id).unwrap_or_else(|| panic!("{id} not in {v:#}"))
}

fn recipient<'a>(msg: &'a Value, address: &str) -> &'a Value {
    msg["recipients"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["address"] == address))
        .unwrap_or_else(|| panic!("{address} not among {msg:#}"))
}

fn metric(port: u16, line_start: &str) -> Option<f64> {
    let body = http_get(port, "/metrics", None).ok()?.body;
    body.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn a_recipient_suppressed_while_queued_is_not_sent_to() {
    let w = World::relay_with(UpstreamOpts::default(), |c| {
        c.sending = "paused";
        c.privacy_extra = "log_recipients = \"clear\"\n".into();
    });
    let (gone, kept) = ("gone@example.net", "kept@example.net");
    let mut c = w.client();
    let r = c.send(
        SENDER,
        &[gone, kept],
        &simple_message(SENDER, kept, "held-then-sent"),
    );
    assert_eq!(r.code, 250, "{r}");
    c.quit();
    let id = r.last_word();

    // While it waits (sending paused: held), the address bounces elsewhere;
    // here an admin puts it on the list.
    cli_ok(&w, &["suppress", "add", gone, "--reason", "mailbox closed"]);
    cli_ok(&w, &["queue", "release", &id]);

    let got = w.up().wait_for(2, WAIT);
    let to_kept: Vec<&Delivered> = got.iter().filter(|d| !d.mail_from.is_empty()).collect();
    assert_eq!(to_kept.len(), 1, "{got:#?}");
    assert_eq!(
        to_kept[0].rcpt_tos,
        [kept],
        "the suppressed address is not sent to"
    );
    assert!(to_kept[0].text().contains("held-then-sent"));
    // The sender learns it from a DSN naming the list.
    let dsn = got
        .iter()
        .find(|d| d.mail_from.is_empty())
        .unwrap_or_else(|| panic!("no DSN among {got:#?}"));
    assert_eq!(dsn.rcpt_tos, [SENDER]);
    assert!(
        dsn.text().contains(gone) && dsn.text().contains("5.1.1"),
        "{}",
        dsn.text()
    );

    let shown = show_final(&w, &id);
    let msg = message(&shown, &id);
    let entry = recipient(msg, gone);
    assert_eq!(entry["state"], "failed", "{msg:#}");
    let reply = entry["reply"].as_str().unwrap_or_default();
    assert!(
        reply.starts_with("550 5.1.1 ")
            && reply.contains("suppressed by an administrator")
            && reply.ends_with("not sent"),
        "{reply}"
    );
    assert_eq!(recipient(msg, kept)["state"], "delivered", "{msg:#}");

    // Still the admin's entry: the refusal is not taken for a new bounce.
    let list: Value = serde_json::from_str(&cli_ok(&w, &["suppress", "list", "--json"])).unwrap();
    let entries = list.as_array().expect("array");
    assert_eq!(entries.len(), 1, "{list:#}");
    assert_eq!(entries[0]["source"], "admin", "{list:#}");
}

#[test]
fn a_domain_cap_paces_its_recipients_and_leaves_others_alone() {
    let admin = free_port();
    let w = World::relay_with(UpstreamOpts::default(), |c| {
        c.privacy_extra = "log_recipients = \"clear\"\n".into();
        c.extra_toml = format!(
            "\n[[delivery.domain_limit]]\ndomains = [\"gmx.test\", \"*.web.test\"]\n\
             recipients_per_minute = 60\nburst = 2\n\
             \n[admin]\nbind = \"127.0.0.1:{admin}\"\n"
        );
    });
    let mut c = w.client();
    // Before the first capped recipient is accepted, so before its cell is
    // taken (the upstream's `at` is on the same clock).
    let submitted = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let mut ids = Vec::new();
    for (n, to) in [
        "a@gmx.test",
        "b@mail.web.test",
        "c@gmx.test",
        "d@gmx.test",
        "e@gmx.test",
    ]
    .iter()
    .enumerate()
    {
        let r = c.send(
            SENDER,
            &[to],
            &simple_message(SENDER, to, &format!("capped-{n}")),
        );
        assert_eq!(r.code, 250, "{r}");
        ids.push(r.last_word());
    }
    // Mixed: the free domain goes at once, the capped one waits its turn.
    let mixed = c.send(
        SENDER,
        &["f@gmx.test", "g@free.test"],
        &simple_message(SENDER, "g@free.test", "mixed"),
    );
    assert_eq!(mixed.code, 250, "{mixed}");
    c.quit();
    let mixed_id = mixed.last_word();

    let got = w.up().wait_for(7, WAIT);
    let at = |rcpt: &str| -> f64 {
        got.iter()
            .find(|d| d.rcpt_tos.iter().any(|r| r == rcpt))
            .and_then(|d| d.meta["at"].as_f64())
            .unwrap_or_else(|| panic!("{rcpt} not delivered: {got:#?}"))
    };
    // Six recipients in the group, a burst of 2, then one per second: the
    // last cell is taken no sooner than 4 s after the first, which is taken
    // after `submitted`. (A lower bound only: the cap makes delivery slower,
    // never faster. Not from the first arrival: that one may have waited
    // for a new upstream connection the last did not need.)
    let capped = [
        "a@gmx.test",
        "b@mail.web.test",
        "c@gmx.test",
        "d@gmx.test",
        "e@gmx.test",
        "f@gmx.test",
    ];
    let times: Vec<f64> = capped.iter().map(|r| at(r)).collect();
    let last = times.iter().cloned().fold(f64::MIN, f64::max);
    assert!(
        last - submitted >= 3.9,
        "the cap spaced them: {:?} s after submission",
        times.iter().map(|t| t - submitted).collect::<Vec<_>>()
    );
    // The free recipient of the mixed message went in its first attempt.
    assert!(at("g@free.test") < at("f@gmx.test"), "{got:#?}");

    // Held back whole: not an attempt. The mixed one: one attempt for g,
    // then one for f.
    for id in &ids {
        let shown = show_final(&w, id);
        let msg = message(&shown, id);
        assert_eq!(msg["state"], "delivered", "{msg:#}");
        assert_eq!(
            msg["attempts"], 1,
            "a postponement is not an attempt: {msg:#}"
        );
    }
    let shown = show_final(&w, &mixed_id);
    let msg = message(&shown, &mixed_id);
    assert_eq!(msg["attempts"], 2, "{msg:#}");
    assert_eq!(recipient(msg, "f@gmx.test")["state"], "delivered");

    let deferred = wait_until(Duration::from_secs(5), || {
        metric(admin, "schleuse_domain_cap_deferred_total").filter(|n| *n > 0.0)
    });
    assert!(deferred.is_some(), "the metric counts held-back recipients");
}

#[test]
fn egress_addresses_rotate_and_a_listed_one_leaves() {
    let dns = DnsStandIn::start(Zone::new());
    let admin = free_port();
    let w = World::relay_with(UpstreamOpts::default(), |c| {
        c.extra_toml = format!(
            "\n[[upstream.egress]]\naddress = \"127.0.0.2\"\npublic_address = \"203.0.113.2\"\n\
             \n[[upstream.egress]]\naddress = \"127.0.0.3\"\npublic_address = \"203.0.113.3\"\n\
             \n[dns]\nnameservers = [\"{}\"]\ntimeout = \"500ms\"\n\
             \n[reputation]\nblocklist_check = true\ndnsbl = [\"bl.test\"]\nrhsbl = []\n\
             check_interval = \"1s\"\npause_on_listing = true\n\
             \n[admin]\nbind = \"127.0.0.1:{admin}\"\n",
            dns.nameserver()
        );
    });
    let send = |from: usize, n: usize| {
        let mut c = w.client();
        for i in from..from + n {
            let to = format!("r{i}@example.net");
            let r = c.send(
                SENDER,
                &[&to],
                &simple_message(SENDER, &to, &format!("egress-{i}")),
            );
            assert_eq!(r.code, 250, "{r}");
        }
        c.quit();
    };
    let peers = |got: &[Delivered]| -> BTreeSet<String> {
        got.iter()
            .filter_map(|d| d.meta["peer"].as_str().map(String::from))
            .collect()
    };

    // Four workers connect in turn: both addresses are used.
    send(0, 12);
    let got = w.up().wait_for(12, WAIT);
    assert_eq!(
        peers(&got),
        BTreeSet::from(["127.0.0.2".to_string(), "127.0.0.3".to_string()]),
        "connections come from both egress addresses"
    );

    // 203.0.113.2 gets listed: 127.0.0.2 leaves the rotation, and since
    // another address is left, delivery goes on.
    dns.set(
        "2.113.0.203.bl.test",
        Some(Answer::listed(&[[127, 0, 0, 2]], None)),
    );
    let out = wait_until(Duration::from_secs(15), || {
        metric(admin, "schleuse_egress_in_rotation{address=\"127.0.0.2\"}").filter(|v| *v == 0.0)
    });
    assert!(
        out.is_some(),
        "127.0.0.2 leaves the rotation\n{}",
        w.gw.log()
    );
    let logged = wait_until(Duration::from_secs(5), || {
        w.gw.log()
            .contains("taken out of the rotation")
            .then_some(())
    });
    assert!(logged.is_some(), "{}", w.gw.log());
    send(100, 8);
    let got = w.up().wait_for(20, WAIT);
    assert_eq!(
        peers(&got[12..]),
        BTreeSet::from(["127.0.0.3".to_string()]),
        "only the clean address sends"
    );
    assert!(!w.gw.log().contains("delivery paused"), "{}", w.gw.log());

    // Both listed: nothing clean is left, so pause_on_listing holds delivery.
    dns.set(
        "3.113.0.203.bl.test",
        Some(Answer::listed(&[[127, 0, 0, 2]], None)),
    );
    let paused = wait_until(Duration::from_secs(15), || {
        w.gw.log().contains("delivery paused").then_some(())
    });
    assert!(paused.is_some(), "{}", w.gw.log());
    send(200, 2);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        w.up().messages().len(),
        20,
        "held while everything is listed"
    );

    // Both clear: delivery resumes from both addresses.
    dns.set("2.113.0.203.bl.test", None);
    dns.set("3.113.0.203.bl.test", None);
    let got = w.up().wait_for(22, WAIT);
    assert_eq!(got.len(), 22);
    let back = wait_until(Duration::from_secs(15), || {
        metric(admin, "schleuse_egress_in_rotation{address=\"127.0.0.2\"}").filter(|v| *v == 1.0)
    });
    assert!(back.is_some(), "127.0.0.2 is back in the rotation");
}
