//! Relay rules end to end (SPEC §8): a rule table for VIA's categories of
//! system mail, the per-category switch, `schleuse rules test` on real and
//! hand-written messages, and SIGHUP with a broken rule file.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;

/// VIA's system mails (SPEC §1) as an admin would configure them.
const VIA_RULES: &str = r#"
[categories]
disabled = ["workflow"]

[[rule]]
name = "login-pin"
match.header."X-VIA-Category" = "login-pin"
attachments = "reject"
max_recipients = 1
add_headers = { "X-Auto-Response-Suppress" = "All" }

[[rule]]
name = "verification-docs"
match.header."X-VIA-Category" = ["account-verification", "password-reset"]
match.has_attachments = true
action = "reject"
reject_reply = "554 5.7.1 Verification mails never carry documents"

[[rule]]
name = "password-reset"
match.header."X-VIA-Category" = ["account-verification", "password-reset"]
max_recipients = 1

[[rule]]
name = "school-notice"
match.header."X-VIA-Category" = "school-notice"
match.recipient_domain = ["*.schule.example"]
action = "hold"

[[rule]]
name = "school-notice-elsewhere"
match.header."X-VIA-Category" = "school-notice"
action = "reject"
reject_reply = "550 5.7.1 School notices go to schools only"

[[rule]]
name = "manual"
match.header."X-VIA-Category" = "manual"
link_password = "required"
max_expiry = "7d"
pii = "warn"
copy_to_sender = true
remove_headers = ["X-Internal-Ticket"]

[[rule]]
name = "internal"
match.recipient_domain = ["landkreis.example", "*.landkreis.example"]
attachments = "keep"
tracking = true

[[rule]]
name = "default"
action = "accept"
"#;

const PDF: &[u8] = b"%PDF-1.4\n% schleuse rules test\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n";

fn message(category: &str, subject: &str, extra_headers: &str, text: &str) -> Vec<u8> {
    format!(
        "From: Anna Beispiel <app@example.com>\r\nTo: eltern@example.org\r\nSubject: {subject}\r\n\
         Message-ID: <{subject}@example.com>\r\nX-VIA-Category: {category}\r\n{extra_headers}\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n"
    )
    .into_bytes()
}

fn with_pdf(category: &str, subject: &str) -> Vec<u8> {
    format!(
        "From: app@example.com\r\nTo: eltern@example.org\r\nSubject: {subject}\r\n\
         Message-ID: <{subject}@example.com>\r\nX-VIA-Category: {category}\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
         --b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nanbei der Bescheid\r\n\
         --b1\r\nContent-Type: application/pdf; name=\"bescheid.pdf\"\r\n\
         Content-Disposition: attachment; filename=\"bescheid.pdf\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{}\r\n--b1--\r\n",
        base64(PDF)
    )
    .into_bytes()
}

fn send(w: &World, to: &[&str], msg: &[u8]) -> Reply {
    let mut c = w.client();
    let r = c.send("app@example.com", to, msg);
    c.quit();
    r
}

fn by_subject<'a>(got: &'a [Delivered], subject: &str) -> &'a Delivered {
    got.iter()
        .find(|d| d.header("Subject").as_deref() == Some(subject))
        .unwrap_or_else(|| panic!("no message {subject:?} at the upstream"))
}

fn via_world() -> World {
    World::relay_with(UpstreamOpts::default(), |c| {
        c.extra_toml = VIA_RULES.into();
    })
}

#[test]
fn via_rule_table_end_to_end() {
    let w = via_world();

    // login-pin: one recipient only, no attachments, a header added.
    let r = send(
        &w,
        &["eltern@example.org", "schule@example.org"],
        &message("login-pin", "pin-two", "", "Ihre PIN: 4711"),
    );
    assert!(r.is(550, "5.5.3"), "{r}");
    assert!(
        r.text()
            .contains("Too many recipients for rule login-pin (max 1)"),
        "{r}"
    );
    let r = send(
        &w,
        &["eltern@example.org"],
        &with_pdf("login-pin", "pin-pdf"),
    );
    assert!(r.is(550, "5.7.1"), "{r}");
    assert!(r.text().contains("attachments are not accepted"), "{r}");
    let r = send(
        &w,
        &["eltern@example.org"],
        &message("login-pin", "pin-ok", "", "Ihre PIN: 4711"),
    );
    assert_eq!(r.code, 250, "{r}");
    let pin_id = r.last_word();

    // A category switched off: a clear permanent refusal.
    let r = send(
        &w,
        &["eltern@example.org"],
        &message("Workflow", "wf", "", "Neue Antraege"),
    );
    assert!(r.is(550, "5.7.1"), "{r}");
    assert!(
        r.text()
            .contains("Mail of category \"Workflow\" is switched off"),
        "{r}"
    );

    // has_attachments + configured reject reply (code and text).
    let r = send(
        &w,
        &["eltern@example.org"],
        &with_pdf("account-verification", "verify-pdf"),
    );
    assert!(r.is(554, "5.7.1"), "{r}");
    assert_eq!(r.text(), "5.7.1 Verification mails never carry documents");
    let r = send(
        &w,
        &["a@example.org", "b@example.org"],
        &message("password-reset", "reset-two", "", "Link"),
    );
    assert!(r.text().contains("rule password-reset (max 1)"), "{r}");

    // school-notice: held when every recipient is a school, refused otherwise.
    let r = send(
        &w,
        &["sekretariat@gs-nord.schule.example"],
        &message("school-notice", "school-held", "", "Neue Schuelerliste"),
    );
    assert_eq!(r.code, 250, "{r}");
    let held_id = r.last_word();
    let r = send(
        &w,
        &["sekretariat@gs-nord.schule.example", "eltern@example.org"],
        &message("school-notice", "school-mixed", "", "Neue Schuelerliste"),
    );
    assert!(r.is(550, "5.7.1"), "{r}");
    assert_eq!(r.text(), "5.7.1 School notices go to schools only");

    // manual: PII warning to the staff member, a copy to them, a removed header.
    let r = send(
        &w,
        &["eltern@example.org"],
        &message(
            "manual",
            "manual-pii",
            "X-Internal-Ticket: 4711\r\n",
            "Bitte ueberweisen Sie auf DE89 3704 0044 0532 0130 00.",
        ),
    );
    assert_eq!(r.code, 250, "{r}");
    let manual_id = r.last_word();

    // internal recipients only: attachments kept, tracking allowed.
    let r = send(
        &w,
        &["amt@landkreis.example", "schulamt@kreis.landkreis.example"],
        &with_pdf("other", "internal-pdf"),
    );
    assert_eq!(r.code, 250, "{r}");
    // One outside recipient: the default rule, the document becomes a link.
    let r = send(
        &w,
        &["amt@landkreis.example", "eltern@example.org"],
        &with_pdf("other", "mixed-pdf"),
    );
    assert_eq!(r.code, 250, "{r}");

    // pin-ok, manual-pii (+ PII notice), internal-pdf, mixed-pdf.
    let got = w.up().wait_for(5, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));
    let got_now = w.up().messages();
    assert_eq!(
        got_now.len(),
        5,
        "the held message stays held\n{}",
        w.gw.log()
    );
    assert!(
        got.iter()
            .all(|d| d.header("Subject").as_deref() != Some("school-held"))
    );

    let pin = by_subject(&got, "pin-ok");
    assert_eq!(
        pin.header("X-Auto-Response-Suppress").as_deref(),
        Some("All")
    );
    assert_eq!(pin.rcpt_tos, vec!["eltern@example.org".to_string()]);

    let manual = by_subject(&got, "manual-pii");
    assert!(
        manual.rcpt_tos.contains(&"app@example.com".to_string()),
        "copy_to_sender: {:?}",
        manual.rcpt_tos
    );
    assert!(
        manual.header("X-Internal-Ticket").is_none(),
        "{}",
        manual.text()
    );
    let notice = got
        .iter()
        .find(|d| d.rcpt_tos == vec!["app@example.com".to_string()])
        .expect("a PII notice to the staff member");
    assert!(notice.text().contains("IBAN"), "{}", notice.text());
    assert!(
        !notice.text().contains("DE89"),
        "the notice repeats the data"
    );

    let internal = by_subject(&got, "internal-pdf");
    assert!(internal.text().contains(&base64(PDF)), "attachment kept");
    assert!(
        internal.header("X-Mailjet-TrackOpen").is_none(),
        "tracking on"
    );
    let mixed = by_subject(&got, "mixed-pdf");
    assert!(
        !mixed.text().contains(&base64(PDF)),
        "document became a link"
    );
    assert_eq!(mixed.header("X-Mailjet-TrackOpen").as_deref(), Some("0"));

    // The rule is in the delivery log and in the "accepted" log line.
    let show = output_text(&w.env.cli(&["queue", "show", &manual_id], None));
    assert!(
        show.contains("note:") && show.contains("rule: manual; pii: iban"),
        "{show}"
    );
    let show = output_text(&w.env.cli(&["queue", "show", &held_id], None));
    assert!(
        show.contains("rule: school-notice; held: rule school-notice"),
        "{show}"
    );
    let list = output_text(&w.env.cli(&["queue", "list"], None));
    assert!(list.contains(&held_id) && list.contains("held"), "{list}");
    let log = w.gw.log();
    assert!(
        log.lines().any(|l| l.contains(&pin_id)
            && l.contains("rule=")
            && l.contains("login-pin")
            && l.contains("accepted")),
        "{log}"
    );
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures")
        .join(name)
}

fn rules_env() -> Env {
    let mut env = Env::new();
    let mut conf = GatewayConf::outbox();
    conf.extra_toml = VIA_RULES.into();
    env.write_config(&conf);
    env.add_default_user();
    env
}

fn rules_test(env: &Env, args: &[&str]) -> String {
    let mut all = vec!["rules", "test"];
    all.extend_from_slice(args);
    let out = env.cli(&all, None);
    assert!(out.status.success(), "{}", output_text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn rules_test_explains_each_decision() {
    let env = rules_env();

    // A hand-written VIA message with LF line endings.
    let pin = env.write_file(
        "pin.eml",
        b"From: VIA <app@example.com>\nTo: a@example.org, b@example.org\nX-VIA-Category: login-pin\nX-Mailer: PHPMailer\nSubject: PIN\n\nIhre PIN: 4711\n",
    );
    let out = rules_test(&env, &[pin.to_str().unwrap(), "--account", USER]);
    assert!(out.contains("matched rule: login-pin"), "{out}");
    assert!(
        out.contains("rule[0] \"login-pin\" matches: X-VIA-Category: \"login-pin\""),
        "{out}"
    );
    assert!(out.contains("max_recipients  1"), "{out}");
    assert!(
        out.contains(
            "outcome: REFUSED with 550 5.5.3 Too many recipients for rule login-pin (max 1)"
        ),
        "recipients from To: when no --rcpt\n{out}"
    );
    let header = out
        .split("Header as relayed")
        .nth(1)
        .and_then(|h| h.split("staff member:").next())
        .expect("a header section");
    assert!(header.contains("X-Auto-Response-Suppress: All"), "{out}");
    assert!(header.contains("Subject: PIN\n"), "{out}");
    assert!(
        !header.contains("X-VIA-Category"),
        "control header relayed\n{out}"
    );

    let out = rules_test(
        &env,
        &[
            pin.to_str().unwrap(),
            "--account",
            USER,
            "--rcpt",
            "a@example.org",
        ],
    );
    assert!(out.contains("outcome: ACCEPTED for delivery"), "{out}");

    // Why earlier rules did not match, for a manual mail with PII.
    let manual = env.write_file(
        "manual.eml",
        b"From: app@example.com\r\nTo: eltern@example.org\r\nX-VIA-Category: manual\r\nSubject: Erstattung\r\n\r\nKonto DE89 3704 0044 0532 0130 00\r\n",
    );
    let out = rules_test(&env, &[manual.to_str().unwrap(), "--account", USER]);
    assert!(
        out.contains(
            "rule[0] \"login-pin\" does not match: X-VIA-Category is \"manual\", not [login-pin]"
        ),
        "{out}"
    );
    assert!(
        out.contains("rule[3] \"school-notice\" does not match: X-VIA-Category is \"manual\""),
        "{out}"
    );
    assert!(out.contains("matched rule: manual"), "{out}");
    assert!(out.contains("link_password   required"), "{out}");
    assert!(out.contains("found: iban"), "{out}");
    assert!(!out.contains("DE89"), "PII data printed\n{out}");
    assert!(
        out.contains("copy_to_sender: a copy goes to app@example.com"),
        "{out}"
    );

    // Category switched off.
    let wf = env.write_file(
        "wf.eml",
        b"From: app@example.com\nTo: x@example.org\nX-VIA-Category: workflow\nSubject: s\n\nb\n",
    );
    let out = rules_test(&env, &[wf.to_str().unwrap(), "--account", USER]);
    assert!(
        out.contains("category \"workflow\" is switched off"),
        "{out}"
    );
    assert!(
        out.contains(
            "outcome: REFUSED with 550 5.7.1 Mail of category \"workflow\" is switched off"
        ),
        "{out}"
    );

    // Real messages: documents listed; the sender check says the fixture's
    // From: is not the account's; internal recipients keep attachments.
    let pdf = fixture("phpmmp-pdf-empty-filename.eml");
    let pdf = pdf.to_str().unwrap();
    let out = rules_test(
        &env,
        &[
            pdf,
            "--account",
            USER,
            "--from",
            "app@example.com",
            "--rcpt",
            "eltern@example.org",
        ],
    );
    assert!(out.contains("matched rule: default"), "{out}");
    assert!(out.contains("dokument-1.pdf  application/pdf"), "{out}");
    assert!(out.contains("1 document(s) become links"), "{out}");
    assert!(out.contains("REFUSED  From: address(es)"), "{out}");
    assert!(out.contains("outcome: REFUSED with 553 5.7.1"), "{out}");
    let out = rules_test(
        &env,
        &[pdf, "--account", USER, "--rcpt", "amt@landkreis.example"],
    );
    assert!(
        out.contains("rule[6] \"internal\" matches: every recipient domain is in"),
        "{out}"
    );
    assert!(
        out.contains("relayed as they are (attachments = keep)"),
        "{out}"
    );

    let docs = fixture("phpmmp-swiftmailer-docx-pdf-odt-png-rfc822.eml");
    let out = rules_test(
        &env,
        &[
            docs.to_str().unwrap(),
            "--account",
            USER,
            "--rcpt",
            "eltern@example.org",
        ],
    );
    for ext in [".docx", ".pdf", ".odt", ".png"] {
        assert!(out.contains(ext), "{ext} not listed\n{out}");
    }
    let signed = fixture("mimekit-smime-thunderbird-signed.eml");
    let out = rules_test(
        &env,
        &[
            signed.to_str().unwrap(),
            "--account",
            USER,
            "--rcpt",
            "eltern@example.org",
        ],
    );
    assert!(out.contains("signed or encrypted message"), "{out}");
    assert!(out.contains("Dry run: nothing is sent"), "{out}");

    // Nothing was queued or stored: not even the data directory exists.
    assert!(
        !env.data_dir.exists(),
        "{} was created",
        env.data_dir.display()
    );

    // Errors: one line, non-zero exit.
    for (args, expect) in [
        (
            vec!["rules", "test", "/nonexistent.eml", "--account", USER],
            "cannot read /nonexistent.eml",
        ),
        (
            vec![
                "rules",
                "test",
                manual.to_str().unwrap(),
                "--account",
                "nobody",
            ],
            "no account named \"nobody\"",
        ),
    ] {
        let out = env.cli(&args, None);
        assert!(!out.status.success(), "{}", output_text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect) && err.lines().count() == 1, "{err}");
    }
}

#[test]
fn a_broken_rule_file_is_refused_and_names_the_key() {
    let mut env = Env::new();
    let mut conf = GatewayConf::outbox();
    conf.extra_toml = "[[rule]]\nname = \"pin\"\nmatch.header.\"X-VIA-Category\" = \"login-pin\"\n\
                       action = \"reject\"\nreject_reply = \"550 Refused\"\n"
        .into();
    env.write_config(&conf);
    let out = env.cli(&["check-config"], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rule[0].reject_reply"), "{err}");
    assert!(err.contains("enhanced status code"), "{err}");
    conf.extra_toml =
        "[[rule]]\nname = \"x\"\nmatch.recipient_domain = [\"sch*le.example\"]\n".into();
    env.write_config(&conf);
    let err = output_text(&env.cli(&["check-config"], None));
    assert!(err.contains("rule[0].match.recipient_domain[0]"), "{err}");
}

const STOP_WORKFLOW: &str = "\n[[rule]]\nname = \"stop-workflow\"\n\
    match.header.\"X-VIA-Category\" = \"workflow\"\naction = \"reject\"\n\
    reject_reply = \"550 5.7.1 Workflow mail is off this week\"\n";

#[test]
fn sighup_with_a_broken_rule_keeps_the_old_rules() {
    let mut w = World::relay_with(UpstreamOpts::default(), |c| {
        c.extra_toml = STOP_WORKFLOW.into();
    });
    let wf = || message("workflow", "wf", "", "Neue Antraege");
    let r = send(&w, &["eltern@example.org"], &wf());
    assert_eq!(r.text(), "5.7.1 Workflow mail is off this week", "{r}");

    let hup = |w: &World| {
        let pid = w.gw.pid().expect("gateway runs").to_string();
        let out = run_bounded(
            std::process::Command::new("kill").args(["-HUP", &pid]),
            None,
            Duration::from_secs(10),
        );
        assert!(out.status.success(), "{}", output_text(&out));
    };
    // A broken rule file: refused, logged, the old rules stay.
    let mut conf = w.env.conf().clone();
    conf.extra_toml = STOP_WORKFLOW.replace("550 5.7.1 Workflow", "550 Workflow");
    w.env.write_config(&conf);
    hup(&w);
    let refused = wait_until(Duration::from_secs(20), || {
        let log = w.gw.log();
        log.contains("reload refused").then_some(log)
    })
    .unwrap_or_else(|| panic!("no reload refusal logged\n{}", w.gw.log()));
    assert!(refused.contains("rule[0].reject_reply"), "{refused}");
    let r = send(&w, &["eltern@example.org"], &wf());
    assert_eq!(r.text(), "5.7.1 Workflow mail is off this week", "{r}");

    // A good file without the rule: reloaded, new sessions relay workflow mail.
    conf.extra_toml = String::new();
    w.env.write_config(&conf);
    hup(&w);
    wait_until(Duration::from_secs(20), || {
        w.gw.log().contains("configuration reloaded").then_some(())
    })
    .unwrap_or_else(|| panic!("no reload logged\n{}", w.gw.log()));
    let r = send(&w, &["eltern@example.org"], &wf());
    assert_eq!(r.code, 250, "{r}");
    assert_eq!(w.up().wait_for(1, Duration::from_secs(30)).len(), 1);
}
