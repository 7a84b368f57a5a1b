//! Going live with Mailjet (SPEC §9): a message bigger than the upstream
//! takes is refused at `DATA`, measured as it would be relayed (documents
//! turned into links, DKIM signature and `Received:` added); a webhook that
//! stays silent while mail is relayed raises an alert (log, metric) that
//! clears when an event arrives.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

const HOOK_PATH: &str = "/hooks/mailjet/7d2b9e41c0a85f36e1d4b8a2";
const HOOK_USER: &str = "mailjet";
const HOOK_PASSWORD: &str = "hook-Secret-17";
const TO: &str = "rcpt@example.org";
/// `[upstream] max_message_size` in the size tests.
const LIMIT: usize = 256 * 1024;

/// Messages with `X-Keep: yes` keep their attachments; others get links.
const KEEP_RULE: &str = "\n[[rule]]\nname = \"keep\"\nmatch.header.\"X-Keep\" = \"yes\"\n\
                         attachments = \"keep\"\n";

/// `message` with padding lines appended so that it is exactly `size`
/// bytes long (it must end with CRLF and be shorter by at least 160).
fn padded(mut message: Vec<u8>, size: usize) -> Vec<u8> {
    assert!(size >= message.len() + 160, "too short to pad");
    let mut left = size - message.len();
    while left > 0 {
        // A line is 3..=78 bytes with its CRLF; never leave 1 or 2 over.
        let line = match left {
            l if l <= 78 => l,
            l if l < 81 => l - 40,
            _ => 78,
        };
        message.extend(std::iter::repeat_n(b'x', line - 2));
        message.extend_from_slice(b"\r\n");
        left -= line;
    }
    assert_eq!(message.len(), size);
    message
}

fn plain_of_size(marker: &str, size: usize) -> Vec<u8> {
    padded(simple_message("app@example.com", TO, marker), size)
}

/// A text part of about `text_size` bytes and one PDF attachment.
fn text_and_document(marker: &str, text_size: usize, document: &[u8], keep: bool) -> Vec<u8> {
    let head = format!(
        "From: <app@example.com>\r\nTo: <{TO}>\r\nSubject: test {marker}\r\n{}\
         Message-ID: <{marker}@example.com>\r\nDate: Mon, 01 Jan 2024 10:00:00 +0100\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nbody of {marker}\r\n",
        if keep { "X-Keep: yes\r\n" } else { "" }
    );
    let mut m = head.into_bytes();
    if text_size > m.len() + 160 {
        m = padded(m, text_size);
    }
    m.extend_from_slice(
        format!(
            "--b\r\nContent-Type: application/pdf; name=\"{marker}.pdf\"\r\n\
             Content-Disposition: attachment; filename=\"{marker}.pdf\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{}\r\n--b--\r\n",
            wrap76(&base64(document))
        )
        .as_bytes(),
    );
    m
}

fn document(len: usize) -> Vec<u8> {
    let mut d = b"%PDF-1.7\n".to_vec();
    fill_pseudo_random(&mut d, 7, len);
    d
}

/// The files in the document store (none if it does not exist yet).
fn stored_documents(data_dir: &Path) -> usize {
    std::fs::read_dir(data_dir.join("documents")).map_or(0, |d| d.count())
}

/// Relay world with `[upstream] max_message_size = LIMIT`, the keep rule and
/// an Ed25519 DKIM key for example.com.
fn size_world() -> World {
    let mut env = Env::new();
    let up = env.start_upstream(&UpstreamOpts::default());
    let mut conf = GatewayConf::relay(up.port);
    conf.upstream_extra = format!("max_message_size = \"{}KB\"\n", LIMIT / 1024);
    env.write_config(&conf);
    let out = env.cli(
        &[
            "dkim",
            "keygen",
            "--domain",
            "example.com",
            "--selector",
            "gw1",
            "--algorithm",
            "ed25519",
        ],
        None,
    );
    assert!(out.status.success(), "dkim keygen\n{}", output_text(&out));
    let key = env.path().join("certs/dkim/example.com.gw1.ed25519.pem");
    conf.extra_toml = format!(
        "{KEEP_RULE}\n[[dkim]]\ndomain = \"example.com\"\nselector = \"gw1\"\nkey = \"{}\"\n",
        key.display()
    );
    env.write_config(&conf);
    env.add_default_user();
    let gw = env.start_gateway();
    World {
        gw,
        up: Some(up),
        env,
    }
}

#[test]
fn the_upstream_limit_counts_the_message_as_it_would_be_relayed() {
    let w = size_world();
    let mut c = w.client();

    // What the gateway adds (Received:, DKIM-Signature:, …), measured on
    // one message; the padding below changes only the body.
    let probe = plain_of_size("probe", LIMIT / 2);
    let r = c.send("app@example.com", &[TO], &probe);
    assert_eq!(r.code, 250, "{r}");
    let got = w.up().wait_for(1, Duration::from_secs(30));
    let relayed = &got[0];
    assert!(relayed.header("DKIM-Signature").is_some(), "signed");
    assert!(relayed.header("Received").is_some());
    let added = relayed.eml.len() - probe.len();
    assert!(added > 200, "only {added} bytes added?");

    // As submitted it fits; as relayed it would be 64 bytes too big.
    let over = plain_of_size("over", LIMIT - added + 64);
    assert!(over.len() < LIMIT);
    let r = c.send("app@example.com", &[TO], &over);
    assert!(r.is(552, "5.3.4"), "{r}");
    assert!(r.text().contains("256KB"), "names the limit: {r}");
    // 64 bytes under the limit as relayed: accepted.
    let under = plain_of_size("under", LIMIT - added - 64);
    let r = c.send("app@example.com", &[TO], &under);
    assert_eq!(r.code, 250, "{r}");
    let got = w.up().wait_for(2, Duration::from_secs(30));
    assert!(
        got[1].eml.len() <= LIMIT,
        "{} bytes relayed",
        got[1].eml.len()
    );
    assert!(got[1].text().contains("Message-ID: <under@example.com>"));
    c.quit();

    // The submission limit stays what EHLO announces, and SIZE= above it is
    // refused at MAIL as before.
    let mut plain = Smtp::connect(w.port());
    let ehlo = plain.ehlo();
    assert!(ehlo.text().contains("SIZE 1048576"), "{ehlo}");
    plain.quit();
    let mut c = w.client();
    let r = c.cmd("MAIL FROM:<app@example.com> SIZE=2000000");
    assert!(r.is(552, "5.3.4"), "{r}");
    c.quit();

    let refused = w.gw.log();
    assert!(refused.contains("upstream_size"), "the refusal is logged");
}

#[test]
fn an_oversize_message_is_refused_with_kept_attachments_and_passes_with_links() {
    let w = size_world();
    let mut c = w.client();
    // Twice the upstream limit, within the 1MB submission limit.
    let doc = document(LIMIT * 3 / 2);

    let kept = text_and_document("kept", 0, &doc, true);
    assert!(kept.len() > LIMIT * 2 && kept.len() < 1024 * 1024);
    let r = c.send("app@example.com", &[TO], &kept);
    assert!(r.is(552, "5.3.4"), "{r}");
    assert!(r.text().contains("256KB"), "{r}");

    let linked = text_and_document("linked", 0, &doc, false);
    let r = c.send("app@example.com", &[TO], &linked);
    assert_eq!(r.code, 250, "{r}");
    let got = w.up().wait_for(1, Duration::from_secs(30));
    assert!(
        got[0].eml.len() < LIMIT,
        "{} bytes relayed",
        got[0].eml.len()
    );
    assert!(got[0].text().contains("Message-ID: <linked@example.com>"));
    assert_eq!(stored_documents(&w.env.data_dir), 1);

    // Documents taken out of a message that stays too big (a long text)
    // were sealed already: they go with the refusal.
    let still_big = text_and_document("still-big", LIMIT + 4096, &document(8192), false);
    let r = c.send("app@example.com", &[TO], &still_big);
    assert!(r.is(552, "5.3.4"), "{r}");
    assert_eq!(
        stored_documents(&w.env.data_dir),
        1,
        "the refused message's document was discarded"
    );
    c.quit();
    let links = w.env.cli(&["links", "list", "--all"], None);
    assert!(links.status.success(), "{}", output_text(&links));
    let listed = String::from_utf8_lossy(&links.stdout);
    assert!(!listed.contains("still-big"), "{listed}");
    assert_eq!(w.up().messages().len(), 1, "nothing else was relayed");
}

#[test]
fn nonsense_upstream_sizes_and_silence_windows_are_config_errors() {
    let mut env = Env::new();
    for (extra, key) in [
        ("max_message_size = \"0\"\n", "upstream.max_message_size"),
        (
            "max_message_size = \"15 parsecs\"\n",
            "upstream.max_message_size",
        ),
        ("max_message_size = -1\n", "upstream.max_message_size"),
        (
            "max_message_size = \"15.5MB\"\n",
            "upstream.max_message_size",
        ),
    ] {
        let mut conf = GatewayConf::relay(2525);
        conf.upstream_extra = extra.into();
        env.write_config(&conf);
        let out = env.cli(&["check-config"], None);
        assert!(!out.status.success(), "{extra}: {}", output_text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{extra}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    let mut conf = GatewayConf::relay(2525);
    conf.extra_toml = "\n[suppression]\nwebhook_silence_alert = \"500ms\"\n".into();
    env.write_config(&conf);
    let out = env.cli(&["check-config"], None);
    assert!(!out.status.success(), "{}", output_text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("suppression.webhook_silence_alert"), "{err}");

    conf.upstream_extra = "max_message_size = \"10MB\"\n".into();
    conf.extra_toml = "\n[suppression]\nwebhook_silence_alert = \"0s\"\n".into();
    env.write_config(&conf);
    let out = env.cli(&["check-config"], None);
    assert!(out.status.success(), "{}", output_text(&out));
}

fn metric(admin: u16, name: &str) -> Option<f64> {
    let r = http_get(admin, "/metrics", None).ok()?;
    prometheus_samples(&r.body).get(name).copied()
}

#[test]
fn a_silent_webhook_raises_an_alert_that_an_event_clears() {
    let admin = free_port();
    let w = World::relay_with(UpstreamOpts::default(), |c| {
        c.extra_toml = format!(
            "\n[admin]\nenabled = true\nbind = \"127.0.0.1:{admin}\"\n\
             \n[suppression]\nwebhook_path = \"{HOOK_PATH}\"\nwebhook_user = \"{HOOK_USER}\"\n\
             webhook_password = \"{HOOK_PASSWORD}\"\nwebhook_silence_alert = \"2s\"\n"
        );
    });
    let silent = "schleuse_relay_events_silent";
    let last = "schleuse_relay_events_last_received_timestamp_seconds";
    assert_eq!(metric(admin, silent), Some(0.0), "no mail, no alert");

    let mut c = w.client();
    let r = c.send(
        "app@example.com",
        &[TO],
        &simple_message("app@example.com", TO, "quiet"),
    );
    assert_eq!(r.code, 250, "{r}");
    let queue_id = r.last_word();
    c.quit();
    w.up().wait_for(1, Duration::from_secs(30));

    // Relayed, and Mailjet says nothing: the alert fires after the window.
    let fired = wait_until(Duration::from_secs(30), || {
        (metric(admin, silent) == Some(1.0)).then_some(())
    });
    assert!(fired.is_some(), "alert\n{}", w.gw.log());
    assert_eq!(metric(admin, last), Some(0.0), "no event yet");
    let warned = wait_until(Duration::from_secs(10), || {
        w.gw.log().contains("webhook silent").then_some(())
    });
    assert!(warned.is_some(), "{}", w.gw.log());
    // Checked every second from now on, but said once (then hourly).
    let checks = |log: &str| log.matches("webhook liveness checked").count();
    let seen = checks(&w.gw.log());
    let more = wait_until(Duration::from_secs(20), || {
        let log = w.gw.log();
        (checks(&log) >= seen + 3).then_some(log)
    });
    let log = more.expect("three more checks");
    assert_eq!(log.matches("webhook silent").count(), 1, "{log}");

    // Mailjet's sent event (grouped, "Version 2") ends it.
    let body = format!(
        r#"[{{"event":"sent","time":1795170000,"MessageID":19421777835146490,
             "email":"{TO}","mj_campaign_id":7257,"mj_contact_id":4,"customcampaign":"",
             "CustomID":"{queue_id}","Payload":"","smtp_reply":"sent (250 2.0.0 OK)"}}]"#
    );
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
    let r = http_request(admin, "POST", HOOK_PATH, &headers, body.as_bytes()).expect("POST");
    assert_eq!(r.status, 200, "{}", r.body);
    let cleared = wait_until(Duration::from_secs(30), || {
        (metric(admin, silent) == Some(0.0)).then_some(())
    });
    assert!(cleared.is_some(), "cleared\n{}", w.gw.log());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let at = metric(admin, last).unwrap_or_default();
    assert!((now - at).abs() < 60.0, "last event at {at}, now {now}");
    let log = wait_until(Duration::from_secs(10), || {
        let log = w.gw.log();
        log.contains("events arrive again").then_some(log)
    });
    assert!(log.is_some(), "{}", w.gw.log());
}
