//! The plan is pure: its decisions are checked here without a session,
//! a store or a vault. (That DATA acts on the same plan as `rules test` is
//! checked in `admin/dry_run_equality.rs`.)

use std::path::Path;
use std::time::Duration;

use super::{Notice, Refusal, plan};
use crate::accounts::Account;
use crate::config::Config;
use crate::privacy::decision::Decision as PiiDecision;
use crate::transform::documents::{DocumentsError, Fate, Password};

fn config(toml: &str) -> Config {
    Config::parse(toml, Path::new("plan.toml")).expect("config")
}

fn account() -> Account {
    Account {
        name: "app".into(),
        allowed_senders: vec!["*".into()],
        ..Account::default()
    }
}

/// A message with one PDF attachment and these extra header fields.
fn with_pdf(extra: &str) -> Vec<u8> {
    format!(
        "From: app@example.com\r\nTo: r@example.org\r\nSubject: Bescheid\r\n{extra}\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
         --b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nanbei der Bescheid\r\n\
         --b1\r\nContent-Type: application/pdf; name=\"bescheid.pdf\"\r\n\
         Content-Disposition: attachment; filename=\"bescheid.pdf\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQKJSVFT0YK\r\n--b1--\r\n"
    )
    .into_bytes()
}

fn run(config: &Config, message: &[u8]) -> super::Plan {
    let recipients = vec!["r@example.org".to_owned()];
    plan(&super::Facts {
        config,
        account: &account(),
        sender: "app@example.com",
        recipients: &recipients,
        message,
    })
}

#[test]
fn documents_become_links_with_the_expiry_and_password_decided() {
    let c = config("[attachments]\npassword = \"required\"\nmax_expiry = \"10d\"\n");
    let p = run(&c, &with_pdf("X-Schleuse-Link-Expiry: 30d\r\n"));
    let Fate::Link(links) = &p.attachments else {
        panic!("{:?}", p.attachments);
    };
    assert_eq!(links.documents.len(), 1);
    assert_eq!(links.documents[0].file_name, "bescheid.pdf");
    // Asked for 30 days: never longer than max_expiry.
    assert_eq!(links.expiry, Duration::from_secs(10 * 86_400));
    assert_eq!(links.password, Password::Generate);
    assert_eq!(p.notices(), vec![Notice::Password]);
    assert!(p.refusal().is_none());

    let p = run(&c, &with_pdf("X-Schleuse-Link-Password: Sommer 2026\r\n"));
    let Fate::Link(links) = &p.attachments else {
        panic!("{:?}", p.attachments);
    };
    assert_eq!(links.password, Password::App("Sommer 2026".into()));
    assert!(p.notices().is_empty(), "the app knows its own password");
}

#[test]
fn refusals_come_in_the_order_data_checks_them() {
    let c = config(
        "[privacy]\npii = \"reject\"\n[attachments]\nmode = \"reject\"\n\
         [[rule]]\nname = \"stop\"\nmatch.header.\"X-Stop\" = \"yes\"\naction = \"reject\"\n\
         reject_reply = \"550 5.7.1 Stopped\"\n",
    );
    let p = run(
        &c,
        &with_pdf("X-Stop: yes\r\nX-Schleuse-Link-Expiry: soon\r\n"),
    );
    let stages: Vec<&str> = p.refusals().iter().map(Refusal::stage).collect();
    assert_eq!(stages, ["rule", "documents", "documents"], "{p:#?}");
    assert!(matches!(p.refusal(), Some(Refusal::Rule(r)) if r.code == 550));
    assert!(matches!(
        p.refusals()[1],
        Refusal::Control(DocumentsError::BadExpiry(_))
    ));
    assert!(matches!(
        p.refusals()[2],
        Refusal::Documents(DocumentsError::AttachmentsRefused)
    ));
}

#[test]
fn pii_warn_brings_a_notice_and_hold_holds() {
    let body = "From: app@example.com\r\nTo: r@example.org\r\nSubject: x\r\n\r\n\
                IBAN DE89 3704 0044 0532 0130 00 bitte\r\n";
    let p = run(&config("[privacy]\npii = \"warn\"\n"), body.as_bytes());
    assert!(matches!(p.pii, PiiDecision::Warn { .. }), "{:?}", p.pii);
    assert!(matches!(p.notices().as_slice(), [Notice::Pii(_)]));
    assert!(!p.holds());
    let p = run(&config("[privacy]\npii = \"hold\"\n"), body.as_bytes());
    assert!(p.holds());
    assert_eq!(p.note_parts(), vec!["pii: iban".to_owned()]);
}

#[test]
fn signed_mail_with_documents_is_passed_or_refused_as_configured() {
    let signed = "From: app@example.com\r\nTo: r@example.org\r\nSubject: s\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/signed; protocol=\"application/pgp-signature\"; boundary=\"s\"\r\n\r\n\
         --s\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
         --b1\r\nContent-Type: text/plain\r\n\r\nhi\r\n\
         --b1\r\nContent-Type: application/pdf; name=\"a.pdf\"\r\n\
         Content-Disposition: attachment; filename=\"a.pdf\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQKJSVFT0YK\r\n--b1--\r\n\
         --s\r\nContent-Type: application/pgp-signature\r\n\r\nsig\r\n--s--\r\n";
    let p = run(&config(""), signed.as_bytes());
    assert!(
        matches!(p.attachments, Fate::Refused(DocumentsError::SealedRefused)),
        "{:?}",
        p.attachments
    );
    let p = run(
        &config("[attachments]\nsigned = \"pass\"\n"),
        signed.as_bytes(),
    );
    assert!(matches!(
        p.attachments,
        Fate::Sealed {
            has_attachments: true
        }
    ));
    let p = run(
        &config("[attachments]\nmode = \"keep\"\n"),
        signed.as_bytes(),
    );
    assert!(matches!(p.attachments, Fate::Kept));
}

/// The corpus, CRLF, each with a `From:`.
fn fixtures() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("../shared/fixtures") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|x| x != "eml") {
            continue;
        }
        let raw = std::fs::read(&path).expect("read");
        let mut m = Vec::with_capacity(raw.len() + 64);
        m.extend_from_slice(b"From: app@example.com\r\nX-Mailer: corpus\r\n");
        for (i, &b) in raw.iter().enumerate() {
            if b == b'\n' && (i == 0 || raw[i - 1] != b'\r') {
                m.push(b'\r');
            }
            m.push(b);
        }
        out.push((path.display().to_string(), m));
    }
    out
}

/// Documents first, cut by the plan's scan, gives the same bytes as the
/// header first and a new scan, wherever `documents_first` allows it.
#[test]
fn documents_first_is_the_same_as_header_first() {
    use crate::transform::attachments::{Scan, rewrite, scan};
    use crate::transform::linkblock::{Block, Entry};
    use crate::transform::{self, Stamp};

    let configs = [
        config(""),
        config(
            "[[rule]]\nname = \"edits\"\nadd_headers = { \"X-Documents\" = \"yes\" }\n\
             remove_headers = [\"X-Mailer\", \"Content-Language\"]\ntracking = true\n",
        ),
    ];
    let block = |n: usize| Block {
        language: crate::config::Language::De,
        entries: (0..n)
            .map(|i| Entry {
                file_name: format!("d{i}.pdf"),
                size: 100,
                url: format!("https://links.example/{i}"),
                expires_at: 0,
                protected: false,
            })
            .collect(),
    };
    let mut fast = 0;
    for c in &configs {
        for (name, message) in fixtures() {
            let mut p = run(c, &message);
            let Some(found) = p.scan.take() else {
                continue;
            };
            let privacy = p.privacy(&c.privacy);
            if !super::execute::documents_first(&p, &privacy, &found, &message) {
                continue;
            }
            fast += 1;
            let ctx = transform::Context {
                sender: &c.sender,
                privacy: &privacy,
                account: &account(),
                queue_id: "Q",
                stamp: Stamp {
                    hostname: "gw.test",
                    helo: "h",
                    peer: std::net::IpAddr::from([127, 0, 0, 1]),
                    tls: true,
                    authenticated: true,
                    queue_id: "Q",
                    mode: c.privacy.received_header,
                },
            };
            let b = block(found.documents.len());
            // Header first, then a new scan of the transformed message.
            let mut slow = transform::apply(&ctx, message.clone()).expect("apply");
            p.rule.effective.prepend_headers(&mut slow.message);
            let Ok(Scan::Extract(again)) = scan(&slow.message, &found_options(c)) else {
                panic!("{name}: the transformed message scans differently");
            };
            let slow = rewrite(&slow.message, &again, &b).expect("rewrite");
            // Documents first, then the header.
            let edited = transform::headers::rewrite(&ctx, &message).expect("header");
            let cut = rewrite(&message, &found, &b).expect("rewrite");
            let mut first = transform::finish(&ctx, edited, cut);
            p.rule.effective.prepend_headers(&mut first.message);
            assert!(first.message == slow, "{name}: the two orders differ");
        }
    }
    assert!(
        fast >= 10,
        "only {fast} messages took the documents-first path"
    );
}

fn found_options(c: &Config) -> crate::transform::attachments::ExtractOptions {
    crate::transform::documents::extract_options(&c.attachments)
}
