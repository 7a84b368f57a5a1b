use super::evaluate::domain_matches;
use super::*;
fn config(text: &str) -> Result<Config, String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("rules.toml");
    std::fs::write(&path, text).expect("write");
    Config::load(&path).map_err(|e| e.to_string())
}

const VIA: &str = r#"
[categories]
disabled = ["workflow"]
paused = ["school-notice"]

[[rule]]
name = "login-pin"
match.header."X-VIA-Category" = "login-pin"
attachments = "reject"
max_recipients = 1

[[rule]]
name = "internal"
match.recipient_domain = ["landkreis.example", "*.schule.example"]
tracking = true
add_headers = { "X-Internal" = "yes" }

[[rule]]
name = "manual"
match.header."x-via-category" = ["manual", "Handarbeit"]
match.account = ["app", "via"]
link_password = "required"
max_expiry = "7d"
pii = "warn"
copy_to_sender = true

[[rule]]
name = "big"
match.min_size = "1KB"
match.sender = "*@*.landkreis.example"
action = "hold"

[[rule]]
name = "pdf"
match.has_attachments = true
action = "reject"
reject_reply = "550 5.7.1 No documents from this app"

[[rule]]
name = "default"
"#;

fn account(name: &str) -> Account {
    Account {
        name: name.into(),
        allowed_senders: vec!["*".into()],
        ..Account::default()
    }
}

fn decide(c: &Config, who: &str, sender: &str, rcpts: &[&str], msg: &str, att: bool) -> Decision {
    let rcpts: Vec<String> = rcpts.iter().map(|s| s.to_string()).collect();
    let acc = account(who);
    evaluate(
        c,
        &Facts {
            account: &acc,
            sender,
            recipients: &rcpts,
            message: msg.as_bytes(),
            has_attachments: Some(att),
        },
    )
}

fn msg(category: &str) -> String {
    format!(
        "From: Anna <anna@landkreis.example>\r\nX-VIA-Category:  {category}\r\nSubject: s\r\n\r\nhi\r\n"
    )
}

#[test]
fn first_match_decides_and_says_why() {
    let c = config(VIA).expect("valid");
    let d = decide(
        &c,
        "app",
        "app@landkreis.example",
        &["p@example.org"],
        &msg("login-pin"),
        false,
    );
    assert_eq!(d.rule.as_deref(), Some("login-pin"));
    assert_eq!(d.effective.attachments, AttachmentMode::Reject);
    assert_eq!(d.effective.max_recipients, 1);
    assert_eq!(d.verdict, Verdict::Accept);
    assert!(
        d.reasons[0].contains("X-VIA-Category: \"login-pin\""),
        "{:?}",
        d.reasons
    );

    let d = decide(
        &c,
        "app",
        "a@landkreis.example",
        &["p@example.org", "q@example.org"],
        &msg("LOGIN-PIN"),
        false,
    );
    let Verdict::Refuse(r) = &d.verdict else {
        panic!("{d:?}")
    };
    assert_eq!((r.code, r.esc), (550, [5, 5, 3]));
    assert_eq!(r.text, "Too many recipients for rule login-pin (max 1)");

    let d = decide(
        &c,
        "via",
        "a@landkreis.example",
        &["p@example.org"],
        &msg("Handarbeit"),
        false,
    );
    assert_eq!(d.rule.as_deref(), Some("manual"));
    assert!(
        d.reasons[0].contains("is \"Handarbeit\", not [login-pin]"),
        "{:?}",
        d.reasons
    );
    assert!(
        d.reasons[1].contains("recipient domain \"example.org\" is not in"),
        "{:?}",
        d.reasons
    );
    let e = &d.effective;
    assert_eq!(
        (e.link_password, e.pii, e.copy_to_sender),
        (LinkPassword::Required, PiiPolicy::Warn, true)
    );
    assert_eq!(e.max_expiry, Duration::from_secs(7 * 86_400));
    let a = e.attachments(&c.attachments);
    assert_eq!(
        a.expiry,
        Duration::from_secs(7 * 86_400),
        "default expiry shortened to the maximum"
    );
    assert_eq!(a.password, LinkPassword::Required);

    // The account condition fails: on to the next rules.
    let d = decide(
        &c,
        "other",
        "a@landkreis.example",
        &["p@example.org"],
        &msg("manual"),
        false,
    );
    assert_eq!(d.rule.as_deref(), Some("default"));
    assert!(
        d.reasons[2].contains("account \"other\" is not [app, via]"),
        "{:?}",
        d.reasons
    );
    assert_eq!(
        d.effective,
        Effective::new(&c, &account("other"), None),
        "default rule sets nothing"
    );
}

#[test]
fn recipient_domains_must_all_match() {
    let c = config(VIA).expect("valid");
    let m = msg("x");
    let d = decide(
        &c,
        "app",
        "a@b.example",
        &["a@landkreis.example", "b@gs-nord.schule.example"],
        &m,
        false,
    );
    assert_eq!(d.rule.as_deref(), Some("internal"));
    assert!(d.effective.tracking);
    assert!(d.effective.edits_headers(&c.privacy));
    let p = d.effective.privacy(&c.privacy);
    assert!(p.remove_headers.iter().any(|h| h == "X-Internal"));
    let d = decide(
        &c,
        "app",
        "a@b.example",
        &["a@landkreis.example", "p@example.org"],
        &m,
        false,
    );
    assert_ne!(d.rule.as_deref(), Some("internal"));
    // "*.schule.example" is for subdomains, not the domain itself.
    let d = decide(&c, "app", "a@b.example", &["a@schule.example"], &m, false);
    assert_ne!(d.rule.as_deref(), Some("internal"));
    assert!(domain_matches("*.schule.example", "A.Schule.Example"));
    assert!(!domain_matches("*.schule.example", "xschule.example"));
    assert!(domain_matches("*", "anything.example"));
}

#[test]
fn sender_size_and_attachments() {
    let c = config(VIA).expect("valid");
    let mut big = msg("x");
    big.push_str(&"x".repeat(2000));
    // The envelope sender does not match, From: does not either.
    let d = decide(
        &c,
        "app",
        "a@landkreis.example",
        &["p@example.org"],
        &big,
        false,
    );
    assert_eq!(d.rule.as_deref(), Some("default"));
    assert!(
        d.reasons[3].contains("neither the envelope sender"),
        "{:?}",
        d.reasons
    );
    let d = decide(
        &c,
        "app",
        "a@amt.landkreis.example",
        &["p@example.org"],
        &big,
        false,
    );
    assert_eq!(d.rule.as_deref(), Some("big"));
    assert_eq!(d.verdict, Verdict::Hold("rule big".into()));
    let d = decide(
        &c,
        "app",
        "a@amt.landkreis.example",
        &["p@example.org"],
        &msg("x"),
        true,
    );
    assert!(
        d.reasons[3].contains("below min_size 1024"),
        "{:?}",
        d.reasons
    );
    assert_eq!(d.rule.as_deref(), Some("pdf"));
    let Verdict::Refuse(r) = &d.verdict else {
        panic!("{d:?}")
    };
    assert_eq!(r.log_text(), "550 5.7.1 No documents from this app");
    assert!(needs_attachment_scan(&c.rules));
}

#[test]
fn category_switches() {
    let c = config(VIA).expect("valid");
    let d = decide(
        &c,
        "app",
        "a@x.example",
        &["p@example.org"],
        &msg("Workflow"),
        false,
    );
    let Verdict::Refuse(r) = &d.verdict else {
        panic!("{d:?}")
    };
    assert_eq!(
        r.log_text(),
        "550 5.7.1 Mail of category \"Workflow\" is switched off"
    );
    let d = decide(
        &c,
        "app",
        "a@x.example",
        &["p@example.org"],
        &msg("school-notice"),
        false,
    );
    assert!(matches!(d.verdict, Verdict::Hold(_)), "{d:?}");
    let d = decide(
        &c,
        "app",
        "a@x.example",
        &["p@example.org"],
        "From: a@x.example\r\n\r\nhi\r\n",
        false,
    );
    assert_eq!(d.verdict, Verdict::Accept);
}

#[test]
fn no_rules_means_globals() {
    let c = config("").expect("valid");
    let d = decide(
        &c,
        "app",
        "a@x.example",
        &["p@example.org"],
        &msg("manual"),
        false,
    );
    assert_eq!(d.rule, None);
    assert_eq!(d.verdict, Verdict::Accept);
    assert!(matches!(
        d.effective.attachments(&c.attachments),
        Cow::Borrowed(_)
    ));
    assert!(matches!(d.effective.privacy(&c.privacy), Cow::Borrowed(_)));
    let c = config("[[rule]]\nname = \"stop\"\naction = \"reject\"\n").expect("valid");
    let d = decide(
        &c,
        "app",
        "a@x.example",
        &["p@example.org"],
        &msg("manual"),
        false,
    );
    let Verdict::Refuse(r) = &d.verdict else {
        panic!("{d:?}")
    };
    assert_eq!(r.log_text(), "550 5.7.1 Refused by relay rule stop");
}

#[test]
fn prepend_and_describe() {
    let c = config(VIA).expect("valid");
    let d = decide(
        &c,
        "app",
        "a@b.example",
        &["a@landkreis.example"],
        &msg("x"),
        false,
    );
    let mut m = b"From: a\r\n\r\nhi\r\n".to_vec();
    d.effective.prepend_headers(&mut m);
    assert_eq!(m, b"X-Internal: yes\r\nFrom: a\r\n\r\nhi\r\n");
    let lines = d.effective.describe();
    assert!(lines.contains(&("tracking", "true".into())), "{lines:?}");
}
