//! Delivery (SPEC §9) and the queue admin commands (SPEC §3): retry after a
//! temporary upstream failure, DSN after a permanent one, hold/release/list,
//! delete and flush while the gateway runs.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const SENDER: &str = "sender@example.com";
const RCPT: &str = "rcpt@example.net";
const WAIT: Duration = Duration::from_secs(30);

fn submit(w: &World, marker: &str) -> String {
    let mut c = w.client();
    let r = c.send(SENDER, &[RCPT], &simple_message(SENDER, RCPT, marker));
    assert_eq!(r.code, 250, "end of DATA: {r}");
    c.quit();
    let id = r.last_word();
    assert!(!id.is_empty(), "queue id in {r}");
    id
}

fn queue(w: &World, args: &[&str]) -> String {
    let mut all = vec!["queue"];
    all.extend_from_slice(args);
    let out = w.env.cli(&all, None);
    assert!(
        out.status.success(),
        "schleuse queue {args:?} failed\n{}",
        output_text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn queue_json(w: &World, args: &[&str]) -> Value {
    let text = queue(w, args);
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("queue {args:?} did not print JSON ({e}):\n{text}"))
}

/// The innermost JSON object that has a string value equal to `id`.
fn find_entry<'a>(v: &'a Value, id: &str) -> Option<&'a Value> {
    match v {
        Value::Object(map) => {
            for child in map.values() {
                if let Some(found) = find_entry(child, id) {
                    return Some(found);
                }
            }
            map.values().any(|x| x.as_str() == Some(id)).then_some(v)
        }
        Value::Array(items) => items.iter().find_map(|x| find_entry(x, id)),
        _ => None,
    }
}

/// Whether a queue entry says it is held: `"held": true`, or some string
/// value (status/state) such as `held` / `hold` / `on_hold`.
fn is_held(entry: &Value) -> bool {
    match entry {
        Value::Object(map) => map.iter().any(|(k, v)| {
            (k.eq_ignore_ascii_case("held") && v.as_bool() == Some(true)) || is_held(v)
        }),
        Value::Array(items) => items.iter().any(is_held),
        Value::String(s) => {
            let s = s.to_ascii_lowercase();
            s == "held" || s == "hold" || s == "on_hold" || s == "on-hold"
        }
        _ => false,
    }
}

#[test]
fn temporary_upstream_failure_is_retried() {
    let w = World::relay_with(
        UpstreamOpts {
            fail_first: 1,
            ..UpstreamOpts::default()
        },
        |_| {},
    );
    submit(&w, "retry-me");
    let got = w.up().wait_for(1, WAIT);
    assert!(got[0].text().contains("retry-me"));
    assert_eq!(
        got[0].meta["data_attempt"], 2,
        "delivered on the second DATA attempt: {}",
        got[0].meta
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(w.up().messages().len(), 1, "delivered exactly once");
}

#[test]
fn permanent_failure_sends_dsn_to_sender() {
    let w = World::relay_with(
        UpstreamOpts {
            reject_rcpt: Some("bad".into()),
            ..UpstreamOpts::default()
        },
        |_| {},
    );
    let mut c = w.client();
    let r = c.send(
        SENDER,
        &["good@example.net", "bad@example.net"],
        &simple_message(SENDER, "good@example.net", "half-bounce"),
    );
    assert_eq!(r.code, 250, "end of DATA: {r}");
    c.quit();

    let got = w.up().wait_for(2, WAIT);
    let original: Vec<&Delivered> = got.iter().filter(|d| !d.mail_from.is_empty()).collect();
    let dsns: Vec<&Delivered> = got.iter().filter(|d| d.mail_from.is_empty()).collect();
    assert_eq!(
        original.len(),
        1,
        "the original once, to the good recipient"
    );
    assert_eq!(original[0].rcpt_tos, vec!["good@example.net".to_string()]);
    assert_eq!(dsns.len(), 1, "one DSN with the null sender <>");
    let dsn = dsns[0];
    assert_eq!(
        dsn.rcpt_tos,
        vec![SENDER.to_string()],
        "DSN goes to the sender"
    );
    let ct = dsn
        .header("Content-Type")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        ct.contains("multipart/report")
            && ct.contains("report-type")
            && ct.contains("delivery-status"),
        "DSN Content-Type: {ct:?}\n{}",
        dsn.text()
    );
    let text = dsn.text();
    let lower = text.to_ascii_lowercase();
    assert!(
        lower.contains("content-type: message/delivery-status"),
        "DSN has a message/delivery-status part:\n{text}"
    );
    assert!(
        lower.contains("final-recipient:") && lower.contains("bad@example.net"),
        "DSN names the failed recipient:\n{text}"
    );
    assert!(
        lower.contains("action: failed") && lower.contains("status: 5."),
        "DSN says Action: failed, Status: 5.x.x:\n{text}"
    );
    assert!(
        !lower.contains("final-recipient: rfc822;good@example.net")
            && !lower.contains("final-recipient: rfc822; good@example.net"),
        "the delivered recipient must not be reported as failed:\n{text}"
    );

    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(w.up().messages().len(), 2, "no further messages or DSNs");
}

#[test]
fn hold_list_release_while_running() {
    let mut env = Env::new();
    let upstream_port = free_port();
    env.write_config(&GatewayConf::relay(upstream_port));
    env.add_default_user();
    let gw = env.start_gateway();
    let mut w = World { gw, up: None, env };

    let id = submit(&w, "held-message");
    queue(&w, &["hold", &id]);
    let list = queue_json(&w, &["list", "--json"]);
    let entry = find_entry(&list, &id)
        .unwrap_or_else(|| panic!("queue list --json does not list {id}:\n{list:#}"));
    assert!(is_held(entry), "{id} must be shown held:\n{entry:#}");
    let shown = queue_json(&w, &["show", &id, "--json"]);
    assert!(
        find_entry(&shown, &id).is_some(),
        "queue show {id} --json must describe it:\n{shown:#}"
    );
    let text_list = queue(&w, &["list"]);
    assert!(
        text_list.contains(&id),
        "queue list names {id}:\n{text_list}"
    );

    // Upstream comes up: a held message stays put (two retry intervals).
    w.up = Some(w.env.start_upstream(&UpstreamOpts {
        port: Some(upstream_port),
        ..UpstreamOpts::default()
    }));
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        w.up().messages().is_empty(),
        "a held message must not be delivered"
    );

    queue(&w, &["release", &id]);
    let got = w.up().wait_for(1, WAIT);
    assert!(got[0].text().contains("held-message"));
}

#[test]
fn delete_removes_a_queued_message() {
    let mut env = Env::new();
    let upstream_port = free_port();
    env.write_config(&GatewayConf::relay(upstream_port));
    env.add_default_user();
    let gw = env.start_gateway();
    let mut w = World { gw, up: None, env };

    let doomed = submit(&w, "doomed-message");
    let kept = submit(&w, "kept-message");
    queue(&w, &["delete", &doomed]);
    let list = queue_json(&w, &["list", "--json"]);
    assert!(
        find_entry(&list, &doomed).is_none(),
        "deleted {doomed} still listed:\n{list:#}"
    );
    assert!(
        find_entry(&list, &kept).is_some(),
        "{kept} must still be listed:\n{list:#}"
    );

    w.up = Some(w.env.start_upstream(&UpstreamOpts {
        port: Some(upstream_port),
        ..UpstreamOpts::default()
    }));
    let got = w.up().wait_for(1, WAIT);
    std::thread::sleep(Duration::from_secs(3));
    let all = w.up().messages();
    assert_eq!(all.len(), 1, "only the kept message");
    assert!(got[0].text().contains("kept-message"));
}

#[test]
fn flush_and_retry_deliver_now() {
    let mut env = Env::new();
    let upstream_port = free_port();
    let mut conf = GatewayConf::relay(upstream_port);
    // After the first failed attempt, nothing would happen for an hour.
    conf.retry_schedule = vec!["1h"];
    env.write_config(&conf);
    env.add_default_user();
    let gw = env.start_gateway();
    let mut w = World { gw, up: None, env };

    let first = submit(&w, "flush-one");
    let second = submit(&w, "retry-two");
    // Let the first delivery attempts fail against the missing upstream:
    // both recorded, so neither is still on its first try when the
    // upstream comes up.
    for id in [&first, &second] {
        let tried = wait_until(WAIT, || {
            let out = w.env.cli(&["queue", "show", id, "--json"], None);
            String::from_utf8_lossy(&out.stdout)
                .contains("\"attempts\": 1")
                .then_some(())
        });
        assert!(
            tried.is_some(),
            "no attempt recorded for {id}\n{}",
            w.gw.log()
        );
    }
    w.up = Some(w.env.start_upstream(&UpstreamOpts {
        port: Some(upstream_port),
        ..UpstreamOpts::default()
    }));
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        w.up().messages().is_empty(),
        "nothing before the next scheduled attempt (1h)"
    );

    queue(&w, &["retry", &second]);
    let got = w.up().wait_for(1, WAIT);
    assert!(
        got[0].text().contains("retry-two"),
        "`queue retry {second}` delivers that message:\n{}",
        got[0].text()
    );
    queue(&w, &["flush"]);
    let got = w.up().wait_for(2, WAIT);
    assert!(
        got.iter().any(|d| d.text().contains("flush-one")),
        "`queue flush` delivers {first}"
    );
}

/// A message with one recipient delivered and one deferred is retried for
/// the deferred one only: the delivered recipient never gets a second copy,
/// however the scheduler's reads and the workers' updates interleave.
#[test]
fn partial_deferral_never_duplicates_the_delivered_recipient() {
    let w = World::relay_with(
        UpstreamOpts {
            tls: false,
            auth: false,
            defer_rcpt: Some("later".into()),
            ..UpstreamOpts::default()
        },
        |c| {
            c.listeners = vec![ListenerConf::trusted_plain(USER)];
            c.retry_schedule = vec!["1s"];
        },
    );
    // Four clients at once keep the scheduler's reads and the workers'
    // updates interleaving.
    const CLIENTS: usize = 4;
    const EACH: usize = 100;
    const N: usize = CLIENTS * EACH;
    let port = w.port();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|k| {
            std::thread::spawn(move || {
                let mut c = Smtp::connect(port);
                c.ehlo();
                for i in 0..EACH {
                    let msg = simple_message(SENDER, RCPT, &format!("partial-{k}-{i}"));
                    let r = c.send(SENDER, &[RCPT, "later@example.net"], &msg);
                    assert_eq!(r.code, 250, "message {k}-{i}: {r}");
                }
                c.quit();
            })
        })
        .collect();
    for c in clients {
        c.join().expect("client thread");
    }
    // 400 first deliveries share the upstream with the deferred recipients'
    // retries (every second): more than WAIT on a busy machine.
    w.up().wait_for(N, Duration::from_secs(120));
    // Several retry rounds for the deferred recipient.
    std::thread::sleep(Duration::from_secs(5));
    let got = w.up().messages();
    let mut markers: Vec<String> = got
        .iter()
        .filter_map(|d| {
            let t = d.text();
            t.find("partial-").map(|p| {
                t[p..]
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string()
            })
        })
        .collect();
    let total = markers.len();
    markers.sort();
    markers.dedup();
    assert_eq!(markers.len(), N, "every message once\n{}", w.gw.log());
    assert_eq!(
        total,
        N,
        "{} duplicate deliveries\n{}",
        total - N,
        w.gw.log()
    );
}
