//! The PII check end to end (`[privacy] pii`): each policy on a message
//! whose text carries an IBAN and a date of birth.

mod common;

use std::time::Duration;

use common::*;

const WITH_PII: &[u8] = b"From: app@example.com\r\nTo: eltern@example.org\r\nSubject: Erstattung Fahrkosten\r\n\
MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
Sehr geehrte Frau Beispiel,\r\n\r\nwir erstatten die Fahrkosten fuer Ihren Sohn (geb. 14.03.2013) auf das Konto\r\n\
DE89 3704 0044 0532 0130 00.\r\n\r\nMit freundlichen Gruessen\r\n-- \r\nLandkreis Beispiel, Tel. 0621 123456\r\n";

const WITHOUT_PII: &[u8] =
    b"From: app@example.com\r\nTo: eltern@example.org\r\nSubject: Fahrplan\r\n\r\n\
Ab Montag faehrt der Bus um 7:15 Uhr. Rechnungsnummer 2026-0815.\r\n";

fn world(policy: &str) -> World {
    let policy = policy.to_owned();
    World::relay_with(UpstreamOpts::default(), move |c| {
        c.privacy_extra = format!("pii = \"{policy}\"\n");
    })
}

fn send(w: &World, message: &[u8]) -> Reply {
    let mut c = w.client();
    let r = c.send("app@example.com", &["eltern@example.org"], message);
    c.quit();
    r
}

#[test]
fn reject_names_the_categories_not_the_data() {
    let w = world("reject");
    let r = send(&w, WITH_PII);
    assert!(r.is(550, "5.7.1"), "{r}");
    let text = r.text();
    assert!(
        text.contains("IBAN") && text.to_lowercase().contains("birth"),
        "{text}"
    );
    assert!(
        !text.contains("DE89") && !text.contains("14.03.2013"),
        "{text}"
    );
    assert_eq!(send(&w, WITHOUT_PII).code, 250);
}

#[test]
fn warn_relays_and_tells_the_staff_member() {
    let w = world("warn");
    assert_eq!(send(&w, WITH_PII).code, 250);
    let got = w.up().wait_for(2, Duration::from_secs(30));
    assert_eq!(got.len(), 2, "message and notice\n{}", w.gw.log());
    let notice = got
        .iter()
        .find(|d| d.rcpt_tos == vec!["app@example.com".to_string()])
        .expect("a notice to the staff member");
    let text = notice.text();
    assert!(text.contains("IBAN"), "{text}");
    assert!(
        !text.contains("DE89") && !text.contains("14.03.2013"),
        "the notice repeats the data"
    );
    // No PII, no notice: the message arrives, and nothing after it.
    assert_eq!(send(&w, WITHOUT_PII).code, 250);
    w.up().wait_for(3, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    let got = w.up().messages();
    assert_eq!(got.len(), 3, "{got:#?}");
}

#[test]
fn tag_notes_it_in_the_log_only() {
    let w = world("tag");
    let r = send(&w, WITH_PII);
    assert_eq!(r.code, 250);
    assert_eq!(w.up().wait_for(1, Duration::from_secs(30)).len(), 1);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(w.up().messages().len(), 1, "tag sends no notice");
    let show = output_text(&w.env.cli(&["queue", "show", &r.last_word()], None));
    assert!(show.contains("pii: iban, date_of_birth"), "{show}");
    assert!(w.gw.log().contains("pii: iban"), "{}", w.gw.log());
}

#[test]
fn hold_keeps_it_for_an_admin() {
    let w = world("hold");
    let r = send(&w, WITH_PII);
    assert_eq!(r.code, 250);
    let id = r.last_word();
    std::thread::sleep(Duration::from_secs(2));
    assert!(w.up().messages().is_empty(), "held message was relayed");
    let list = output_text(&w.env.cli(&["queue", "list"], None));
    assert!(list.contains(&id) && list.contains("held"), "{list}");
    let released = w.env.cli(&["queue", "release", &id], None);
    assert!(released.status.success(), "{}", output_text(&released));
    assert_eq!(w.up().wait_for(1, Duration::from_secs(30)).len(), 1);
}
