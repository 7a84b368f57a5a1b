//! Anomaly hold (SPEC §6) against the real binary: an account far above its
//! baseline gets its further mail accepted but held, the alert is logged
//! once, and `schleuse queue release` sends the mail on.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const SENDER: &str = "sender@example.com";
const RCPT: &str = "rcpt@example.net";

fn cli_ok(w: &World, args: &[&str]) -> String {
    let out = w.env.cli(args, None);
    assert!(
        out.status.success(),
        "schleuse {args:?} failed\n{}",
        output_text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn anomaly_hold_and_release() {
    // No history: baseline 0, so max(baseline, 1) × 2 = 2; the minimum of 5
    // decides.
    let w = World::relay_with(UpstreamOpts::default(), |c| {
        c.extra_toml = "\n[reputation]\nanomaly_hold = true\nanomaly_factor = 2.0\n\
                        anomaly_window = \"1h\"\nanomaly_baseline = \"1d\"\n\
                        anomaly_min_messages = 5\n"
            .into();
    });
    // The window is the clock hour; the margin is for the messages below,
    // not for starting the processes above.
    clear_of_hour_end();
    let mut c = w.client();
    for n in 1..=6 {
        let r = c.send(
            SENDER,
            &[RCPT],
            &simple_message(SENDER, RCPT, &format!("anomaly-{n}")),
        );
        assert_eq!(r.code, 250, "message {n} is accepted: {r}");
    }
    c.quit();
    assert_eq!(w.up().wait_for(4, Duration::from_secs(30)).len(), 4);

    let list: Value = serde_json::from_str(&cli_ok(&w, &["queue", "list", "--json"])).unwrap();
    let held: Vec<&Value> = list
        .as_array()
        .expect("a JSON array")
        .iter()
        .filter(|m| m["state"] == "held")
        .collect();
    assert_eq!(held.len(), 2, "the 5th and 6th are held: {list:#}");
    let notes: Vec<&str> = held.iter().filter_map(|m| m["note"].as_str()).collect();
    assert!(
        notes.contains(&"anomaly: 5 in 1h vs baseline 0.0")
            && notes.contains(&"anomaly: 6 in 1h vs baseline 0.0"),
        "{notes:?}"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(w.up().messages().len(), 4, "held mail is not delivered");

    let log = std::fs::read_to_string(w.env.path().join("gateway.log")).unwrap_or_default();
    assert_eq!(
        log.matches("anomaly hold: account sends far above its baseline")
            .count(),
        1,
        "one alert per account and window\n{log}"
    );

    // One by ID, the rest by account.
    let first = held[0]["id"].as_str().expect("id");
    cli_ok(&w, &["queue", "release", first]);
    let out = cli_ok(&w, &["queue", "release", "--account", USER]);
    assert!(
        out.contains("1 held message(s) of account app released"),
        "{out}"
    );
    let got = w.up().wait_for(6, Duration::from_secs(30));
    let texts: Vec<String> = got.iter().map(|d| d.text()).collect();
    for n in [5, 6] {
        assert!(
            texts.iter().any(|t| t.contains(&format!("anomaly-{n}"))),
            "message {n} delivered after the release"
        );
    }
}
