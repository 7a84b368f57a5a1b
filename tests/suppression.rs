//! Suppression of bounced addresses (SPEC §6): upstream `5xx 5.1.x`, DSNs
//! (imported, or sent to the system address) and Mailjet events put an
//! address on the list; a later `RCPT TO` gets `550 5.1.1` with the reason;
//! `schleuse suppress` manages the list; entries expire; `gdpr export` and
//! `gdpr erase` cover entries and relay events.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;

const SYSTEM: &str = "noreply@example.com";
const HOOK_PATH: &str = "/hooks/mailjet/3f9a0c27d1e84b6fa2c5e0d1";
const HOOK_USER: &str = "mailjet";
const HOOK_PASSWORD: &str = "hook-Secret-42";

fn today() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    schleuse::suppression::date(ms)
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", output_text(out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", output_text(out)))
}

/// The suppression list as `suppress list --json` shows it.
fn listed(env: &Env) -> Vec<serde_json::Value> {
    json(&env.cli(&["suppress", "list", "--json"], None))
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn entry_for(env: &Env, address: &str) -> Option<serde_json::Value> {
    listed(env).into_iter().find(|e| e["address"] == address)
}

/// The reply to `RCPT TO` in a fresh transaction.
fn rcpt(w: &World, address: &str) -> Reply {
    let mut c = w.client();
    let r = c.cmd("MAIL FROM:<app@example.com>");
    assert_eq!(r.code, 250, "{r}");
    let r = c.cmd(&format!("RCPT TO:<{address}>"));
    c.quit();
    r
}

fn dsn(recipients: &[(&str, &str, &str)]) -> Vec<u8> {
    let mut blocks = String::new();
    for (addr, action, status) in recipients {
        blocks.push_str(&format!(
            "\r\nFinal-Recipient: rfc822; {addr}\r\nAction: {action}\r\nStatus: {status}\r\n\
             Diagnostic-Code: smtp; 550 {status} <{addr}>: Recipient address rejected\r\n"
        ));
    }
    format!(
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.com>\r\n\
         To: <{SYSTEM}>\r\nSubject: Undelivered Mail Returned to Sender\r\n\
         Message-ID: <bounce-{}@mx.example.com>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n\r\n\
         --b\r\nContent-Type: message/delivery-status\r\n\r\n\
         Reporting-MTA: dns; mx.example.com\r\n{blocks}\r\n\
         --b\r\nContent-Type: text/rfc822-headers\r\n\r\nSubject: Bescheid\r\n\r\n--b--\r\n",
        recipients.len()
    )
    .into_bytes()
}

#[test]
fn upstream_hard_bounce_refuses_the_next_rcpt_until_removed() {
    let w = World::relay_with(
        UpstreamOpts {
            reject_rcpt: Some("weg@".into()),
            ..UpstreamOpts::default()
        },
        |_| {},
    );
    let mut c = w.client();
    let r = c.send(
        "app@example.com",
        &["weg@example.org"],
        &simple_message("app@example.com", "weg@example.org", "hb1"),
    );
    assert_eq!(r.code, 250, "{r}");
    c.quit();

    let entry = wait_until(Duration::from_secs(30), || {
        entry_for(&w.env, "weg@example.org")
    })
    .expect("the hard bounce put the address on the list");
    assert_eq!(entry["source"], "upstream");
    assert_eq!(entry["reason"], "upstream 550 5.1.1");
    assert!(entry["expires_at"].is_i64(), "{entry}");

    let r = rcpt(&w, "Weg@Example.org");
    assert!(r.is(550, "5.1.1"), "{r}");
    let text = r.text();
    assert!(
        text.contains(&format!(
            "<Weg@Example.org>: recipient suppressed after a hard bounce on {} (upstream 550 5.1.1)",
            today()
        )),
        "{text}"
    );
    assert!(text.contains("schleuse suppress remove"), "{text}");
    // Other recipients are not affected.
    assert_eq!(rcpt(&w, "da@example.org").code, 250);

    let out = w.env.cli(&["suppress", "remove", "weg@example.org"], None);
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(rcpt(&w, "weg@example.org").code, 250);
}

#[test]
fn dsns_imported_or_sent_to_the_system_address_suppress() {
    let w = World::without_upstream(GatewayConf::outbox());

    // An admin imports a bounce from the county mailbox.
    let file = w.env.write_file(
        "bounce.eml",
        &dsn(&[
            ("Alt@Example.org", "failed", "5.1.1"),
            ("voll@example.org", "failed", "5.2.2"),
            ("spaeter@example.org", "delayed", "4.4.1"),
        ]),
    );
    let out = w.env.cli(
        &["suppress", "import-dsn", file.to_str().expect("utf-8")],
        None,
    );
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("alt@example.org: suppressed until"),
        "{}",
        output_text(&out)
    );
    let list = listed(&w.env);
    assert_eq!(list.len(), 1, "only the 5.1.1 failure: {list:?}");
    assert_eq!(list[0]["reason"], "dsn 5.1.1");
    assert_eq!(list[0]["source"], "dsn");
    let r = rcpt(&w, "alt@example.org");
    assert!(r.is(550, "5.1.1"), "{r}");
    assert!(r.text().contains("(dsn 5.1.1)"), "{r}");

    let not_dsn = w.env.write_file(
        "plain.eml",
        &simple_message("a@example.org", "b@example.org", "x"),
    );
    let out = w.env.cli(
        &["suppress", "import-dsn", not_dsn.to_str().expect("utf-8")],
        None,
    );
    assert!(!out.status.success(), "{}", output_text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a delivery status notification"),
        "{}",
        output_text(&out)
    );

    // The county's mail server hands a bounce to the gateway: taken in with
    // the null sender, not relayed.
    let mut c = w.client();
    assert_eq!(c.cmd("MAIL FROM:<>").code, 250);
    let r = c.cmd("RCPT TO:<someone@example.org>");
    assert!(
        r.is(550, "5.7.1"),
        "the null sender only reaches the system address: {r}"
    );
    let r = c.cmd(&format!("RCPT TO:<{SYSTEM}>"));
    assert_eq!(r.code, 250, "{r}");
    let r = c.data(&dsn(&[("neu@example.org", "failed", "5.1.1")]));
    assert!(r.is(250, "2.6.0"), "{r}");
    assert!(r.text().contains("1 address(es) suppressed"), "{r}");
    // With the null sender anything but a report is refused.
    assert_eq!(c.cmd("MAIL FROM:<>").code, 250);
    assert_eq!(c.cmd(&format!("RCPT TO:<{SYSTEM}>")).code, 250);
    let r = c.data(&simple_message("app@example.com", SYSTEM, "nodsn"));
    assert!(r.is(554, "5.6.0"), "{r}");
    // Ordinary mail to the system address is relayed as always.
    let r = c.send(
        "app@example.com",
        &[SYSTEM],
        &simple_message("app@example.com", SYSTEM, "ordinary"),
    );
    assert_eq!(r.code, 250, "{r}");
    let queued = r.last_word();
    c.quit();

    let entry = entry_for(&w.env, "neu@example.org").expect("the report suppressed it");
    assert_eq!(entry["source"], "dsn");
    let outbox = w.env.outbox_dir();
    wait_until(Duration::from_secs(30), || {
        outbox.join(format!("{queued}.eml")).exists().then_some(())
    })
    .expect("the ordinary message reached the outbox");
    let files: Vec<_> = std::fs::read_dir(&outbox)
        .expect("outbox")
        .filter_map(|e| e.ok())
        .collect();
    assert_eq!(files.len(), 1, "the report was not relayed: {files:?}");
}

fn webhook_world() -> (World, u16) {
    let admin_port = free_port();
    let mut conf = GatewayConf::outbox();
    conf.extra_toml = format!(
        "\n[admin]\nenabled = true\nbind = \"127.0.0.1:{admin_port}\"\n\
         \n[suppression]\nhard_bounce_duration = \"30d\"\nwebhook_path = \"{HOOK_PATH}\"\n\
         webhook_user = \"{HOOK_USER}\"\nwebhook_password = \"{HOOK_PASSWORD}\"\n"
    );
    (World::without_upstream(conf), admin_port)
}

fn post(port: u16, path: &str, auth: Option<(&str, &str)>, body: &str) -> HttpResponse {
    let mut headers = vec![("Content-Type".to_string(), "application/json".to_string())];
    if let Some((u, p)) = auth {
        headers.push((
            "Authorization".into(),
            format!("Basic {}", base64(format!("{u}:{p}").as_bytes())),
        ));
    }
    http_request(port, "POST", path, &headers, body.as_bytes()).expect("HTTP request")
}

fn batch(custom_id: &str) -> String {
    format!(
        r#"[
  {{"event":"bounce","time":1795170000,"MessageID":19421777835146490,"Message_GUID":"1ab23cd4-e567",
    "email":"weg@example.org","mj_campaign_id":7257,"mj_contact_id":4,"customcampaign":"",
    "CustomID":"{custom_id}","Payload":"","blocked":false,"hard_bounce":true,
    "error_related_to":"recipient","error":"user unknown","brand_new_field":{{"nested":[1,2]}}}},
  {{"event":"blocked","time":1795170001,"MessageID":19421777835146491,"email":"gesperrt@example.org",
    "CustomID":"","error_related_to":"recipient","error":"preblocked"}},
  {{"event":"spam","time":1795170002,"MessageID":19421777835146492,"email":"genervt@example.org",
    "source":"JMRPP"}},
  {{"event":"bounce","time":1795170003,"MessageID":19421777835146493,"email":"voll@example.org",
    "hard_bounce":false,"error_related_to":"mailbox inactive","error":"quota exceeded"}},
  {{"event":"open","time":1795170004,"MessageID":19421777835146494,"email":"leser@example.org",
    "ip":"198.51.100.7","geo":"DE","agent":"Mozilla/5.0"}}
]"#
    )
}

#[test]
fn mailjet_webhook_is_authenticated_idempotent_and_feeds_gdpr() {
    let (w, admin) = webhook_world();
    // A message to the address, so the bounce event has one of ours to match.
    let mut c = w.client();
    let r = c.send(
        "app@example.com",
        &["weg@example.org"],
        &simple_message("app@example.com", "weg@example.org", "wh1"),
    );
    assert_eq!(r.code, 250, "{r}");
    let queue_id = r.last_word();
    c.quit();

    let auth = Some((HOOK_USER, HOOK_PASSWORD));
    let body = batch(&queue_id);
    let wrong = post(admin, HOOK_PATH, Some((HOOK_USER, "guess")), &body);
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    assert!(wrong.header("www-authenticate").is_some());
    assert_eq!(post(admin, HOOK_PATH, None, &body).status, 401);
    let elsewhere = post(admin, "/hooks/mailjet/0000000000000000000000", auth, &body);
    assert_eq!(elsewhere.status, 404);
    assert!(entry_for(&w.env, "weg@example.org").is_none());

    let first = post(admin, HOOK_PATH, auth, &body);
    assert_eq!(first.status, 200, "{}", first.body);
    assert!(first.body.contains("5 new"), "{}", first.body);
    // Mailjet retries the same batch: nothing changes, still 200.
    let again = post(admin, HOOK_PATH, auth, &body);
    assert_eq!(again.status, 200, "{}", again.body);
    assert!(again.body.contains("0 new, 5 repeated"), "{}", again.body);

    let list = listed(&w.env);
    let mut addresses: Vec<&str> = list.iter().filter_map(|e| e["address"].as_str()).collect();
    addresses.sort_unstable();
    assert_eq!(
        addresses,
        [
            "genervt@example.org",
            "gesperrt@example.org",
            "weg@example.org"
        ],
        "one entry per hard bounce, block and complaint; none for the soft bounce or the open"
    );
    let reasons: Vec<(&str, &str)> = list
        .iter()
        .map(|e| {
            (
                e["address"].as_str().unwrap_or_default(),
                e["reason"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        reasons.contains(&("weg@example.org", "mailjet:bounce recipient/user unknown")),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&(
            "gesperrt@example.org",
            "mailjet:blocked recipient/preblocked"
        )),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&("genervt@example.org", "mailjet:spam")),
        "{reasons:?}"
    );

    let r = rcpt(&w, "weg@example.org");
    assert!(r.is(550, "5.1.1"), "{r}");
    assert!(
        r.text().contains(&format!(
            "recipient suppressed after a hard bounce on {} (mailjet:bounce recipient/user unknown)",
            today()
        )),
        "{r}"
    );
    let r = rcpt(&w, "gesperrt@example.org");
    assert!(
        r.is(550, "5.1.1") && r.text().contains("(mailjet:blocked recipient/preblocked)"),
        "{r}"
    );
    assert_eq!(
        rcpt(&w, "voll@example.org").code,
        250,
        "a soft bounce only logs"
    );

    // A single object (no Version 2 grouping) works too.
    let single = r#"{"event":"spam","time":1795170100,"MessageID":7,"email":"einzeln@example.org","source":"JMRPP","x":null}"#;
    let r = post(admin, HOOK_PATH, auth, single);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(entry_for(&w.env, "einzeln@example.org").is_some());
    assert_eq!(post(admin, HOOK_PATH, auth, "not json").status, 400);

    let metrics = http_get(admin, "/metrics", None).expect("metrics");
    let samples = prometheus_samples(&metrics.body);
    let added = samples
        .get("schleuse_suppressions_added_total{source=\"mailjet\"}")
        .copied()
        .unwrap_or_default();
    assert_eq!(added, 4.0, "{}", metrics.body);
    assert_eq!(
        samples.get("schleuse_rcpt_suppressed_total").copied(),
        Some(2.0)
    );
    assert_eq!(
        samples
            .get("schleuse_relay_events_total{event=\"open\"}")
            .copied(),
        Some(1.0)
    );

    // gdpr export shows the entry and the events, joined to our message.
    let export = json(&w.env.cli(&["gdpr", "export", "Weg@Example.org"], None));
    assert_eq!(
        export["suppression"]["reason"], "mailjet:bounce recipient/user unknown",
        "{export}"
    );
    let events = export["relay_events"].as_array().expect("relay_events");
    assert_eq!(events.len(), 1, "{export}");
    assert_eq!(events[0]["event"], "bounce");
    assert_eq!(events[0]["message_id"].as_str(), Some(queue_id.as_str()));
    assert!(
        events[0]["recipient"]
            .as_str()
            .is_some_and(|r| r.starts_with("hmac:")),
        "pseudonymised like the log: {export}"
    );
    let messages = export["messages"].as_array().expect("messages");
    assert!(
        messages.iter().any(|m| m["id"] == queue_id.as_str()),
        "{export}"
    );
    let reader = json(&w.env.cli(&["gdpr", "export", "leser@example.org"], None));
    let open = &reader["relay_events"][0];
    assert_eq!(open["event"], "open");
    assert!(
        open["detail"].is_null(),
        "no IP, location or agent kept: {reader}"
    );
    assert!(!reader.to_string().contains("198.51.100.7"));

    let out = w
        .env
        .cli(&["gdpr", "erase", "weg@example.org", "--yes"], None);
    assert!(out.status.success(), "{}", output_text(&out));
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(said.contains("suppression entries:    1"), "{said}");
    assert!(said.contains("relay events:           1"), "{said}");
    let after = json(&w.env.cli(&["gdpr", "export", "weg@example.org"], None));
    assert!(after["suppression"].is_null(), "{after}");
    assert_eq!(after["relay_events"].as_array().map(Vec::len), Some(0));
    assert_eq!(rcpt(&w, "weg@example.org").code, 250);
}

#[test]
fn admin_add_list_remove_and_expiry() {
    // The short entries must outlast the checks that see them: each RCPT
    // below is a new session with a password check (argon2, slow in a
    // debug build on a busy machine), the list a CLI run.
    let mut conf = GatewayConf::outbox();
    conf.extra_toml = "\n[suppression]\nhard_bounce_duration = \"20s\"\n".into();
    let w = World::without_upstream(conf);

    let out = w.env.cli(
        &[
            "suppress",
            "add",
            "Dauer@Example.org",
            "--reason",
            "Empfänger verzogen",
        ],
        None,
    );
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("(permanent)"));
    let out = w.env.cli(
        &["suppress", "add", "kurz@example.org", "--for", "20s"],
        None,
    );
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(rcpt(&w, "kurz@example.org").is(550, "5.1.1"));

    let table = w.env.cli(&["suppress", "list"], None);
    assert!(table.status.success(), "{}", output_text(&table));
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("ADDRESS"), "{table}");
    let col = lines[0].find("REASON").expect("REASON column");
    assert!(lines.iter().skip(1).all(|l| l.len() > col), "{table}");
    assert!(
        table.contains("dauer@example.org") && table.contains("permanent"),
        "{table}"
    );
    assert!(table.contains("admin"), "{table}");

    let r = rcpt(&w, "dauer@example.org");
    assert!(r.is(550, "5.1.1"), "{r}");
    assert!(
        r.text().contains(&format!(
            "recipient suppressed by an administrator on {} (Empfaenger verzogen)",
            today()
        )),
        "{r}"
    );

    // An automatic entry with hard_bounce_duration = 20s.
    let file = w
        .env
        .write_file("b.eml", &dsn(&[("auto@example.org", "failed", "5.1.2")]));
    let out = w.env.cli(
        &["suppress", "import-dsn", file.to_str().expect("utf-8")],
        None,
    );
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(rcpt(&w, "auto@example.org").is(550, "5.1.1"));

    // Expired entries no longer count.
    wait_until(Duration::from_secs(60), || {
        (rcpt(&w, "kurz@example.org").code == 250 && rcpt(&w, "auto@example.org").code == 250)
            .then_some(())
    })
    .expect("expired entries are lifted");
    let left: Vec<String> = listed(&w.env)
        .iter()
        .filter_map(|e| e["address"].as_str().map(String::from))
        .collect();
    assert_eq!(left, ["dauer@example.org"]);

    let out = w
        .env
        .cli(&["suppress", "remove", "dauer@example.org"], None);
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(rcpt(&w, "dauer@example.org").code, 250);

    // Errors: one clear line, non-zero exit.
    for args in [
        vec!["suppress", "remove", "dauer@example.org"],
        vec!["suppress", "add", "not-an-address"],
        vec!["suppress", "add", "x@example.org", "--for", "soon"],
    ] {
        let out = w.env.cli(&args, None);
        assert!(!out.status.success(), "{args:?}: {}", output_text(&out));
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("schleuse: error:"), "{err}");
    }
}

#[test]
fn a_guessable_webhook_path_is_a_config_error() {
    let mut env = Env::new();
    let mut conf = GatewayConf::outbox();
    conf.extra_toml =
        "\n[admin]\nenabled = true\n\n[suppression]\nwebhook_path = \"/hooks/mailjet\"\n\
                       webhook_user = \"mailjet\"\nwebhook_password = \"pw\"\n"
            .into();
    env.write_config(&conf);
    let out = env.cli(&["check-config"], None);
    assert!(!out.status.success(), "{}", output_text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("suppression.webhook_path"), "{err}");
    assert!(err.contains("16 random characters"), "{err}");
}
