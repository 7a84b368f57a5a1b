//! Rights of data subjects and data minimisation (SPEC §7): the delivery
//! log keeps recipients pseudonymised, `gdpr export` finds everything about
//! an address, `gdpr erase` removes it, and retention purges old entries.

mod common;

use std::time::Duration;

use common::*;

fn message(to: &str, marker: &str, attachment: bool) -> Vec<u8> {
    let mut m = format!(
        "From: app@example.com\r\nTo: {to}\r\nSubject: {marker}\r\nMessage-ID: <{marker}@example.com>\r\nMIME-Version: 1.0\r\n"
    );
    if attachment {
        m.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nHallo\r\n\
             --b\r\nContent-Type: application/pdf; name=\"Bescheid.pdf\"\r\nContent-Disposition: attachment; filename=\"Bescheid.pdf\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{}\r\n--b--\r\n",
            base64(format!("%PDF-1.4 {marker}").as_bytes())
        ));
    } else {
        m.push_str("Content-Type: text/plain\r\n\r\nHallo\r\n");
    }
    m.into_bytes()
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", output_text(out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", output_text(out)))
}

#[test]
fn export_finds_an_address_erase_removes_it_and_the_log_is_pseudonymised() {
    let w = World::relay();
    let mut c = w.client();
    for (to, marker, att) in [
        ("eltern@example.org", "m1", true),
        ("eltern@example.org", "m2", false),
        ("schule@example.org", "m3", false),
    ] {
        let r = c.send("app@example.com", &[to], &message(to, marker, att));
        assert_eq!(r.code, 250, "{r}");
    }
    c.quit();
    assert_eq!(w.up().wait_for(3, Duration::from_secs(30)).len(), 3);

    // Once delivered, the database holds no clear-text recipient.
    let db = w.env.data_dir.join("queue.db");
    let clean = wait_until(Duration::from_secs(15), || {
        let bytes = [
            std::fs::read(&db).unwrap_or_default(),
            std::fs::read(db.with_extension("db-wal")).unwrap_or_default(),
        ]
        .concat();
        (!bytes.windows(18).any(|w| w == b"eltern@example.org")).then_some(())
    });
    assert!(
        clean.is_some(),
        "clear-text recipient left in the delivery log"
    );

    // Export: both messages to the parents (in any case spelling), with
    // their documents, and nothing of the school's.
    let found = json(&w.env.cli(&["gdpr", "export", "Eltern@Example.org"], None));
    let messages = found["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 2, "{found:#}");
    assert!(
        found["pseudonym"]
            .as_str()
            .is_some_and(|p| p.starts_with("hmac:"))
    );
    let docs: usize = messages
        .iter()
        .map(|m| m["documents"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(docs, 1, "{found:#}");
    assert!(messages.iter().all(|m| m["recipient_state"] == "delivered"));
    assert!(
        messages
            .iter()
            .all(|m| !m["attempts"].as_array().expect("attempts").is_empty())
    );
    assert!(
        !found.to_string().contains("Hallo"),
        "no content in the log"
    );

    // Erase asks for --yes first, then removes all of it, document included.
    let refused = w.env.cli(&["gdpr", "erase", "eltern@example.org"], None);
    assert!(!refused.status.success());
    assert!(output_text(&refused).contains("--yes"));
    let erased = w
        .env
        .cli(&["gdpr", "erase", "eltern@example.org", "--yes"], None);
    let report = output_text(&erased);
    assert!(erased.status.success(), "{report}");
    assert!(report.contains("documents (links):      1"), "{report}");
    let after = json(&w.env.cli(&["gdpr", "export", "eltern@example.org"], None));
    assert_eq!(
        after["messages"].as_array().map(Vec::len),
        Some(0),
        "{after:#}"
    );
    assert_eq!(after["downloads"].as_array().map(Vec::len), Some(0));
    let docs_left = std::fs::read_dir(w.env.data_dir.join("documents"))
        .expect("documents dir")
        .count();
    assert_eq!(docs_left, 0, "erased document still on disk");
    // The school's entry is untouched.
    let school = json(&w.env.cli(&["gdpr", "export", "schule@example.org"], None));
    assert_eq!(school["messages"].as_array().map(Vec::len), Some(1));
}

#[test]
fn erase_reaches_mail_still_in_the_queue() {
    let mut conf = GatewayConf::outbox();
    conf.sending = "paused";
    let w = World::without_upstream(conf);
    let mut c = w.client();
    let r = c.send(
        "app@example.com",
        &["kind@example.org"],
        &message("kind@example.org", "q1", true),
    );
    assert_eq!(r.code, 250);
    let r2 = c.send(
        "app@example.com",
        &["kind@example.org", "schule@example.org"],
        &message("kind@example.org", "q2", false),
    );
    assert_eq!(r2.code, 250);
    c.quit();
    let found = json(&w.env.cli(&["gdpr", "export", "kind@example.org"], None));
    assert_eq!(
        found["messages"].as_array().map(Vec::len),
        Some(2),
        "{found:#}"
    );
    let erased = w
        .env
        .cli(&["gdpr", "erase", "kind@example.org", "--yes"], None);
    let report = output_text(&erased);
    assert!(erased.status.success(), "{report}");
    assert!(report.contains("queued messages:        1"), "{report}");
    assert!(report.contains(&r2.last_word()), "kept one named: {report}");
    let list = output_text(&w.env.cli(&["queue", "list"], None));
    assert!(!list.contains(&r.last_word()), "{list}");
    assert!(list.contains(&r2.last_word()), "{list}");
    let show = output_text(&w.env.cli(&["queue", "show", &r2.last_word()], None));
    assert!(
        !show.contains("kind@example.org") && show.contains("schule@example.org"),
        "{show}"
    );
}

#[test]
fn retention_purges_old_log_entries() {
    // The entry must still be there for the first export below, which runs
    // the CLI (a process start) after the upstream has the message: 10 s,
    // not 2, lest a busy machine see it purged already.
    let w = World::relay_with(UpstreamOpts::default(), |c| {
        c.extra_toml =
            "\n[retention]\ndelivery_log = \"10s\"\ndownloads = \"2s\"\ninterval = \"1s\"\n".into();
    });
    let mut c = w.client();
    let r = c.send(
        "app@example.com",
        &["eltern@example.org"],
        &message("eltern@example.org", "old", false),
    );
    assert_eq!(r.code, 250);
    c.quit();
    assert_eq!(w.up().wait_for(1, Duration::from_secs(30)).len(), 1);
    let present = json(&w.env.cli(&["gdpr", "export", "eltern@example.org"], None));
    assert_eq!(present["messages"].as_array().map(Vec::len), Some(1));
    let purged = wait_until(Duration::from_secs(40), || {
        let v = json(&w.env.cli(&["gdpr", "export", "eltern@example.org"], None));
        (v["messages"].as_array().map(Vec::len) == Some(0)).then_some(())
    });
    assert!(
        purged.is_some(),
        "log entry outlived its retention\n{}",
        w.gw.log()
    );
    // Logged just after the purge has committed.
    let logged = wait_until(Duration::from_secs(10), || {
        w.gw.log().contains("old entries purged").then_some(())
    });
    assert!(logged.is_some(), "{}", w.gw.log());
}
