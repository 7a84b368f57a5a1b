//! After the hand-over (SPEC §6, §9): what the upstream and Mailjet's events
//! report reaches the staff member who submitted, changes the recipient's
//! state, and suppresses only addresses the event says are bad.

mod common;

use std::time::Duration;

use common::*;

const CLERK: &str = "anna.schmidt@example.com";
const SYSTEM: &str = "noreply@example.com";
const HOOK_PATH: &str = "/hooks/mailjet/3f9a0c27d1e84b6fa2c5e0d1";
const HOOK_USER: &str = "mailjet";
const HOOK_PASSWORD: &str = "hook-Secret-42";
const WAIT: Duration = Duration::from_secs(30);

/// From: rewritten to the system address (so the upstream sees that as the
/// envelope sender), the webhook on, the upstream refusing `unbekannt`.
fn world() -> (World, u16) {
    let admin = free_port();
    let w = World::relay_with(
        UpstreamOpts {
            reject_rcpt: Some("unbekannt".into()),
            ..UpstreamOpts::default()
        },
        |c| {
            c.from_mode = "rewrite";
            c.reply_to_mode = "account";
            c.max_recipients = 10;
            c.extra_toml = format!(
                "\n[admin]\nenabled = true\nbind = \"127.0.0.1:{admin}\"\n\
                 \n[suppression]\nwebhook_path = \"{HOOK_PATH}\"\n\
                 webhook_user = \"{HOOK_USER}\"\nwebhook_password = \"{HOOK_PASSWORD}\"\n"
            );
        },
    );
    (w, admin)
}

fn post(port: u16, body: &str) -> HttpResponse {
    let headers = vec![
        ("Content-Type".to_string(), "application/json".to_string()),
        (
            "Authorization".to_string(),
            format!(
                "Basic {}",
                base64(format!("{HOOK_USER}:{HOOK_PASSWORD}").as_bytes())
            ),
        ),
    ];
    http_request(port, "POST", HOOK_PATH, &headers, body.as_bytes()).expect("HTTP request")
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", output_text(out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", output_text(out)))
}

fn show(w: &World, id: &str) -> serde_json::Value {
    json(&w.env.cli(&["queue", "show", id, "--json"], None))
}

fn suppressed(w: &World) -> Vec<String> {
    let list = json(&w.env.cli(&["suppress", "list", "--json"], None));
    let mut out: Vec<String> = list
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["address"].as_str().map(str::to_owned))
        .collect();
    out.sort();
    out
}

/// Waits until the message is final, so events find it handed over.
fn wait_final(w: &World, id: &str) -> serde_json::Value {
    wait_until(WAIT, || {
        let m = show(w, id);
        (m["state"] != "queued").then_some(m)
    })
    .unwrap_or_else(|| panic!("{id} was not delivered: {}", show(w, id)))
}

/// The DSNs (null sender) the upstream has received so far.
fn dsns(w: &World) -> Vec<Delivered> {
    w.up()
        .messages()
        .into_iter()
        .filter(|d| d.mail_from.is_empty())
        .collect()
}

#[test]
fn a_refusal_at_rcpt_is_reported_to_the_clerk_not_the_system_address() {
    let (w, _) = world();
    let mut c = w.client();
    let r = c.send(
        CLERK,
        &["kind@example.org", "unbekannt@example.org"],
        &simple_message(CLERK, "kind@example.org", "refused"),
    );
    assert_eq!(r.code, 250, "{r}");
    c.quit();
    let got = w.up().wait_for(2, WAIT);
    let original: Vec<&Delivered> = got.iter().filter(|d| !d.mail_from.is_empty()).collect();
    assert_eq!(original.len(), 1, "{got:?}");
    assert_eq!(
        original[0].mail_from, SYSTEM,
        "the upstream sees the rewritten envelope sender"
    );
    let dsn: Vec<&Delivered> = got.iter().filter(|d| d.mail_from.is_empty()).collect();
    assert_eq!(dsn.len(), 1, "{got:?}");
    assert_eq!(
        dsn[0].rcpt_tos,
        [CLERK.to_string()],
        "the DSN goes to who submitted"
    );
    let text = dsn[0].text();
    assert!(
        text.contains("Final-Recipient: rfc822; unbekannt@example.org"),
        "{text}"
    );
}

/// One event per line of Mailjet's error table that matters here, for the
/// recipients of message `id`; `t` shifts the times (a later repetition of
/// the same reports is new to the key, not to the state).
fn events(id: &str, t: u64) -> String {
    let ev = |n: u64, body: &str| {
        format!(
            r#"{{"time":{},"MessageID":{},"CustomID":"{id}",{body}}}"#,
            1_795_170_000 + t + n,
            19_421_777_835_146_490 + n
        )
    };
    [
        ev(
            1,
            r#""event":"bounce","email":"weg@example.org","hard_bounce":true,"error_related_to":"recipient","error":"user unknown""#,
        ),
        ev(
            2,
            r#""event":"blocked","email":"gesperrt@example.org","error_related_to":"mailjet","error":"preblocked""#,
        ),
        ev(
            3,
            r#""event":"bounce","email":"filter@example.org","hard_bounce":true,"error_related_to":"spam","error":"content blocked""#,
        ),
        ev(
            4,
            r#""event":"blocked","email":"vorlage@example.org","error_related_to":"content","error":"error in template language""#,
        ),
        ev(
            5,
            r#""event":"bounce","email":"voll@example.org","hard_bounce":false,"error_related_to":"recipient","error":"quota exceeded""#,
        ),
        ev(
            6,
            r#""event":"sent","email":"ok@example.org","smtp_reply":"sent (250 2.0.0 OK)""#,
        ),
        ev(
            7,
            r#""event":"spam","email":"genervt@example.org","source":"JMRPP""#,
        ),
        ev(
            8,
            r#""event":"sent","email":"weg@example.org","smtp_reply":"sent (250 late)""#,
        ),
        format!(
            r#"{{"event":"bounce","time":{},"MessageID":1,"CustomID":"not-ours","email":"fremd@example.org","hard_bounce":true,"error_related_to":"recipient","error":"user unknown"}}"#,
            1_795_170_000 + t
        ),
    ]
    .join(",\n")
}

#[test]
fn relay_events_reach_the_clerk_once_and_suppress_only_bad_addresses() {
    let (w, admin) = world();
    let recipients = [
        "weg@example.org",
        "gesperrt@example.org",
        "filter@example.org",
        "vorlage@example.org",
        "voll@example.org",
        "ok@example.org",
        "genervt@example.org",
    ];
    let mut c = w.client();
    let r = c.send(
        CLERK,
        &recipients,
        &simple_message(CLERK, "weg@example.org", "handed-over"),
    );
    assert_eq!(r.code, 250, "{r}");
    let id = r.last_word();
    c.quit();
    let m = wait_final(&w, &id);
    assert_eq!(m["state"], "delivered", "{m}");
    assert_eq!(dsns(&w).len(), 0, "Mailjet said 250 to all");

    let batch = format!("[{}]", events(&id, 0));
    let first = post(admin, &batch);
    assert_eq!(first.status, 200, "{}", first.body);
    assert!(first.body.contains("9 new"), "{}", first.body);
    let again = post(admin, &batch);
    assert!(again.body.contains("0 new, 9 repeated"), "{}", again.body);
    // Mailjet reports the same failures once more, as new events.
    let later = post(admin, &format!("[{}]", events(&id, 100)));
    assert!(later.body.contains("9 new"), "{}", later.body);

    let m = show(&w, &id);
    assert_eq!(m["state"], "bounced", "{m}");
    let states: Vec<&str> = m["recipients"]
        .as_array()
        .expect("recipients")
        .iter()
        .map(|r| r["state"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        states,
        [
            "bounced",
            "blocked",
            "bounced",
            "blocked",
            "bounced",
            "sent",
            "complained"
        ],
        "a late `sent` does not undo the bounce: {m}"
    );
    let replies: Vec<&str> = m["recipients"]
        .as_array()
        .expect("recipients")
        .iter()
        .map(|r| r["reply"].as_str().unwrap_or_default())
        .collect();
    assert!(
        replies[0].contains("user unknown"),
        "the relay's reason is kept: {replies:?}"
    );
    assert!(replies[5].contains("250 2.0.0 OK"), "{replies:?}");

    assert_eq!(
        suppressed(&w),
        [
            "fremd@example.org",
            "genervt@example.org",
            "gesperrt@example.org",
            "weg@example.org"
        ],
        "hard bounces about the recipient (also in another sender's mail on the account: \
         the address is bad all the same), Mailjet's preblock and the complaint; \
         never the content filter, the template error or the soft bounce"
    );

    // One DSN per failed recipient, to the clerk, however often reported.
    let failed = [
        ("weg@example.org", "5.1.1"),
        ("gesperrt@example.org", "5.1.1"),
        ("filter@example.org", "5.7.1"),
        ("vorlage@example.org", "5.6.0"),
        ("voll@example.org", "5.2.2"),
    ];
    let got = wait_until(WAIT, || {
        let d = dsns(&w);
        (d.len() >= failed.len()).then_some(d)
    })
    .unwrap_or_else(|| panic!("DSNs: {:?}", dsns(&w)));
    // The queue is empty once every notice went out: no more will come.
    wait_until(WAIT, || {
        let q = json(&w.env.cli(&["queue", "list", "--json"], None));
        q.as_array().is_some_and(Vec::is_empty).then_some(())
    })
    .expect("the queue empties");
    assert_eq!(dsns(&w).len(), failed.len(), "{got:?}");
    for (address, status) in failed {
        let mine: Vec<Delivered> = got
            .iter()
            .filter(|d| {
                d.text()
                    .contains(&format!("Final-Recipient: rfc822; {address}"))
            })
            .cloned()
            .collect();
        assert_eq!(mine.len(), 1, "{address}: {got:?}");
        assert_eq!(mine[0].rcpt_tos, [CLERK.to_string()]);
        let text = mine[0].text();
        assert!(text.contains(&format!("Status: {status}")), "{text}");
        assert!(text.contains(&id), "names the message: {text}");
        assert!(
            mine[0]
                .header("Content-Type")
                .unwrap_or_default()
                .contains("report-type=delivery-status"),
            "{text}"
        );
    }

    let export = json(&w.env.cli(&["gdpr", "export", "weg@example.org"], None));
    let mine = export["messages"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["id"] == id.as_str()))
        .unwrap_or_else(|| panic!("{export}"));
    assert_eq!(mine["recipient_state"], "bounced", "{export}");
}
