//! `schleuse store migrate --from OLD.toml` (SPEC §11): a county's gateway
//! moves from the embedded store to PostgreSQL and an S3 bucket and takes
//! its state along. All real and on loopback: the gateway binary on the
//! embedded store, then on Debian's PostgreSQL and moto's S3 server, with
//! the upstream stand-in on both sides.
//!
//! The old gateway delivers a message whose PDF became a password link,
//! keeps one the upstream defers, and has an address on its suppression
//! list. After the migration the new gateway delivers the queued message
//! once, the old link downloads the same bytes from the bucket, the
//! suppression holds, and `gdpr export` finds the old log entry (the
//! pseudonym key came along). The old data directory is unchanged. A second
//! run, a missing `--from` and the wrong direction are refused in one line.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::postgres;
use common::s3::Moto;
use common::*;

const BUCKET: &str = "migrated";
const LINK_PASSWORD: &str = "Sommer-2026";
const PARENTS: &str = "eltern@example.org";
const DEFERRED: &str = "later@example.org";
const SUPPRESSED: &str = "blocked@example.org";

fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", output_text(out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", output_text(out)))
}

/// SIGTERM, as systemd stops it, and wait for the exit.
fn stop(gw: &mut Gateway) {
    let pid = gw.pid().expect("the gateway runs");
    let out = run_bounded(
        Command::new("kill").args(["-TERM", &pid.to_string()]),
        None,
        Duration::from_secs(10),
    );
    assert!(out.status.success(), "{}", output_text(&out));
    let status = gw.wait_exit(Duration::from_secs(30));
    assert!(status.is_some(), "the gateway did not stop\n{}", gw.log());
}

/// Every file below `dir` (the SQLite shared-memory index aside, which
/// any reader updates) with its bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else if !path.to_string_lossy().ends_with("-shm") {
                let bytes = std::fs::read(&path).expect("read file");
                out.insert(path.display().to_string(), bytes);
            }
        }
    }
    out
}

/// The files whose bytes differ, appeared or went, with their sizes.
fn changed(before: &BTreeMap<String, Vec<u8>>, after: &BTreeMap<String, Vec<u8>>) -> Vec<String> {
    let names: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    names
        .into_iter()
        .filter(|n| before.get(*n) != after.get(*n))
        .map(|n| {
            let len = |m: &BTreeMap<String, Vec<u8>>| m.get(n).map(Vec::len);
            format!("{n}: {:?} -> {:?} bytes", len(before), len(after))
        })
        .collect()
}

fn lines(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn an_embedded_gateway_moves_to_postgres_and_s3_with_queue_links_log_and_key() {
    // ---- 1. The old gateway: embedded store, documents under data_dir.
    let mut old = World::relay_with(
        UpstreamOpts {
            defer_rcpt: Some("later@".into()),
            ..UpstreamOpts::default()
        },
        |_| {},
    );
    let old_link_port = old.env.conf().link_port;
    let mut pdf = b"%PDF-1.4\n% Bescheid fuer Familie Mueller\n".to_vec();
    fill_pseudo_random(&mut pdf, 0x0d0c_0001, 120 * 1024);
    let with_link = [
        format!("X-Schleuse-Link-Password: {LINK_PASSWORD}\r\n").as_bytes(),
        &message_with_document("app@example.com", PARENTS, "bescheid", &pdf),
    ]
    .concat();
    let mut c = old.client();
    let r = c.send("app@example.com", &[PARENTS], &with_link);
    assert_eq!(r.code, 250, "{r}\n{}", old.gw.log());
    let r = c.send(
        "app@example.com",
        &[DEFERRED],
        &simple_message("app@example.com", DEFERRED, "later"),
    );
    assert_eq!(r.code, 250, "{r}\n{}", old.gw.log());
    c.quit();
    let out = old.env.cli(&["suppress", "add", SUPPRESSED], None);
    assert!(out.status.success(), "{}", output_text(&out));

    let relayed = old.up().wait_for(1, Duration::from_secs(30));
    let text = mail_parser::MessageParser::new()
        .parse(&relayed[0].eml)
        .and_then(|m| m.body_text(0).map(|t| t.into_owned()))
        .unwrap_or_default();
    let token = link_tokens(&text, old_link_port)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no link in the relayed text:\n{text}"));
    // A download on the old side, so the download log has a row.
    let got = http_post_form(
        old_link_port,
        &format!("/d/{token}"),
        &[],
        &[("password", LINK_PASSWORD)],
    )
    .expect("old link service answers");
    assert_eq!(got.status, 200, "{}", got.body);
    assert!(got.bytes == pdf, "the old link gives the document");

    // The delivered message is final (in the log, pseudonymised) and the
    // deferred one has been tried at least once.
    let waiting = wait_until(Duration::from_secs(30), || {
        let list = json(&old.env.cli(&["queue", "list", "--json"], None));
        let list = list.as_array()?.clone();
        (list.len() == 1 && list[0]["attempts"].as_u64()? >= 1).then_some(list)
    })
    .unwrap_or_else(|| panic!("the deferred message was never tried\n{}", old.gw.log()));
    let queued_id = waiting[0]["id"].as_str().expect("id").to_owned();
    stop(&mut old.gw);
    let before = json(&old.env.cli(&["queue", "show", &queued_id, "--json"], None));
    assert_eq!(before["state"], "queued", "{before:#}");
    let old_export = json(&old.env.cli(&["gdpr", "export", PARENTS], None));
    let old_messages = old_export["messages"].as_array().expect("messages");
    assert_eq!(old_messages.len(), 1, "{old_export:#}");
    assert_eq!(old_messages[0]["state"], "delivered", "{old_export:#}");
    let old_data = files(&old.env.data_dir);
    assert!(
        old_data.keys().any(|k| k.contains("/documents/")),
        "the document is a file under data_dir: {:?}",
        old_data.keys()
    );

    // ---- 2. The new config: PostgreSQL and a bucket.
    let scratch = tempfile::tempdir().expect("tempdir");
    let db = postgres::database();
    let moto = Moto::start(scratch.path());
    moto.create_bucket(BUCKET);
    let mut new_env = Env::new();
    let new_up = new_env.start_upstream(&UpstreamOpts::default());
    let mut conf = GatewayConf::relay(new_up.port);
    conf.extra_toml = format!(
        "\n[store]\nbackend = \"postgres\"\nurl = \"{}\"\npool_size = 4\n{}",
        db.url(),
        moto.documents_toml(BUCKET, "documents/")
    );
    new_env.write_config(&conf);
    new_env.add_default_user();
    let old_config = old.env.config_path.to_str().expect("UTF-8 path").to_owned();

    let out = new_env.cli(&["store", "migrate", "--from", &old_config], None);
    assert!(out.status.success(), "{}", output_text(&out));
    let said = lines(&out.stdout);
    for expected in [
        "must be stopped",
        "documents: 1 copied",
        "messages: 2 (1 queued, 0 held)",
        "recipients: 2",
        "message contents: 1 (",
        "links: 1 (1 active)",
        "downloads: 1",
        "suppressions: 1",
        "limit counters: ",
        "bans: 0",
        "pseudonym key: carried over",
        "done: 2 message(s) (1 queued, 0 held), 1 link(s) and the pseudonym key committed",
    ] {
        assert!(
            said.iter().any(|l| l.contains(expected)),
            "no line with {expected:?}\n{}",
            output_text(&out)
        );
    }
    // Documents first: a committed link never lacks its document.
    let at = |needle: &str| said.iter().position(|l| l.starts_with(needle));
    assert!(at("documents:") < at("messages:"), "{said:#?}");
    assert!(
        out.stderr.is_empty(),
        "nothing on stderr\n{}",
        output_text(&out)
    );
    let after = files(&old.env.data_dir);
    assert!(
        changed(&old_data, &after).is_empty(),
        "the old data directory was written to: {:#?}",
        changed(&old_data, &after)
    );
    let links = json(&new_env.cli(&["links", "list", "--json"], None));
    let links = links.as_array().expect("links").clone();
    assert_eq!(links.len(), 1, "{links:#?}");
    let link_id = links[0]["id"].as_str().expect("link id");
    assert_eq!(links[0]["state"], "active");
    assert_eq!(links[0]["protected"], true);
    assert_eq!(links[0]["downloads"], 1, "the download count came along");
    assert_eq!(moto.keys(BUCKET), [format!("documents/{link_id}")]);
    let moved = json(&new_env.cli(&["queue", "show", &queued_id, "--json"], None));
    for field in [
        "received_at",
        "attempts",
        "next_attempt",
        "state",
        "last_error",
    ] {
        assert_eq!(
            moved[field], before[field],
            "{field}: {moved:#} vs {before:#}"
        );
    }

    // ---- 3. The new gateway takes over.
    let gw = new_env.start_gateway();
    let delivered = new_up.wait_for(1, Duration::from_secs(30));
    assert_eq!(delivered[0].rcpt_tos, [DEFERRED]);
    assert_eq!(
        delivered[0].header("Subject").as_deref(),
        Some("test later")
    );
    let done = wait_until(Duration::from_secs(30), || {
        let m = json(&new_env.cli(&["queue", "show", &queued_id, "--json"], None));
        (m["state"] == "delivered").then_some(m)
    })
    .unwrap_or_else(|| {
        panic!(
            "the queued message was not recorded delivered\n{}",
            gw.log()
        )
    });
    assert_eq!(
        done["attempts"].as_u64(),
        before["attempts"].as_u64().map(|n| n + 1),
        "one more attempt than before: {done:#}"
    );
    let list = json(&new_env.cli(&["queue", "list", "--json"], None));
    assert_eq!(list.as_array().map(Vec::len), Some(0), "{list:#}");

    // The old link's token opens the document from the bucket.
    let new_link_port = new_env.conf().link_port;
    let got = http_post_form(
        new_link_port,
        &format!("/d/{token}"),
        &[],
        &[("password", LINK_PASSWORD)],
    )
    .expect("new link service answers");
    assert_eq!(got.status, 200, "{}\n{}", got.body, gw.log());
    assert!(got.bytes == pdf, "the new link gives the same bytes");

    // The suppression list came along.
    let out = new_env.cli(&["suppress", "list"], None);
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(SUPPRESSED),
        "{}",
        output_text(&out)
    );
    let mut c = Smtp::connect_auth(gw.port(), &new_env.certs.ca_crt, USER, PASSWORD);
    assert_eq!(c.cmd("MAIL FROM:<app@example.com>").code, 250);
    let r = c.cmd(&format!("RCPT TO:<{SUPPRESSED}>"));
    assert!(r.is(550, "5.1.1"), "{r}");
    c.quit();

    // The old log entry is found under the old pseudonym: the key came along.
    let export = json(&new_env.cli(&["gdpr", "export", PARENTS], None));
    assert_eq!(export["pseudonym"], old_export["pseudonym"], "{export:#}");
    let messages = export["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 1, "{export:#}");
    assert_eq!(messages[0]["id"], old_messages[0]["id"]);
    assert_eq!(messages[0]["state"], "delivered");
    assert_eq!(
        messages[0]["documents"].as_array().map(Vec::len),
        Some(1),
        "{export:#}"
    );

    // Exactly once, also after a while.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(new_up.messages().len(), 1, "{}", gw.log());

    // ---- 4. Refusals: one line on stderr, a non-zero exit, nothing printed before.
    let refused = |out: &Output, needle: &str| {
        assert!(!out.status.success(), "{}", output_text(out));
        let err = lines(&out.stderr);
        assert_eq!(err.len(), 1, "{}", output_text(out));
        assert!(err[0].contains(needle), "{}", output_text(out));
        assert!(out.stdout.is_empty(), "{}", output_text(out));
    };
    let again = new_env.cli(&["store", "migrate", "--from", &old_config], None);
    refused(&again, "already holds 2 message(s), 1 link(s)");
    let missing = new_env.path().join("no-such-old.toml");
    let out = new_env.cli(
        &[
            "store",
            "migrate",
            "--from",
            missing.to_str().expect("UTF-8 path"),
        ],
        None,
    );
    refused(&out, "no-such-old.toml: cannot read");
    let new_config = new_env.config_path.to_str().expect("UTF-8 path").to_owned();
    let out = old
        .env
        .cli(&["store", "migrate", "--from", &new_config], None);
    refused(&out, "not supported");
    let after = files(&old.env.data_dir);
    assert!(
        changed(&old_data, &after).is_empty(),
        "{:#?}",
        changed(&old_data, &after)
    );
    drop(gw);
}
