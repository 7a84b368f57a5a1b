use super::*;

fn rules(same_reply: usize) -> Rules {
    Rules::new(&Config {
        same_reply_recipients: same_reply,
        ..Config::default()
    })
}

fn seen<'a>(rcpt: &'a str, stage: Stage, text: &'a str) -> Seen<'a> {
    Seen {
        recipient: rcpt,
        stage,
        text,
        prev: None,
    }
}

fn judge(d: &mut Detector, r: &Rules, system: bool, replies: &[Seen<'_>]) -> Judgement {
    d.judge(r, system, None, replies, Instant::now())
}

fn cause(j: &Judgement) -> Option<Cause> {
    j.account_wide.as_ref().map(|(c, _)| *c)
}

#[test]
fn normalising_drops_what_differs_between_recipients() {
    let a = normalise("550 5.7.1 <bob@a.example>: Relay denied (id AB12CD34EF, 42 tries).");
    let b = normalise("550 5.7.1 <eve@b.example>: Relay denied (id ZZ98XX77QQ, 7 tries)");
    assert_eq!(a, b);
    assert_eq!(a, "550 5.7.1 <addr> relay denied (id <id> 0 tries)");
    assert_ne!(
        normalise("550 5.7.1 Relay denied"),
        normalise("554 5.7.1 Relay denied")
    );
    assert_eq!(
        normalise(&format!("550 5.7.1 Relay denied{HELD_MARK}")),
        normalise("550 5.7.1 Relay denied")
    );
    assert_eq!(reply_code("550 5.7.1 x"), 550);
    assert_eq!(reply_code("oops"), 0);
}

#[test]
fn default_patterns_match_account_refusals_only() {
    let r = rules(5);
    for hit in [
        "550 5.7.1 Sender address not validated",
        "550 5.7.1 The sender <via@landkreis.example> is not authorized for this account",
        "550 not an authorised sender email address for your account",
        "554 5.7.1 Your account has been temporarily blocked",
        "451 4.7.1 Account temporarily limited for 7 days",
        "550 5.7.0 Daily sending limit exceeded",
    ] {
        assert!(r.matches_reply(hit), "{hit}");
    }
    for miss in [
        "550 5.1.1 <a@b.example>: Recipient address rejected: User unknown",
        "554 5.7.1 Message rejected as spam",
        "550 5.7.1 Relay access denied",
        "452 4.5.3 Too many recipients",
    ] {
        assert!(!r.matches_reply(miss), "{miss}");
    }
}

#[test]
fn connect_refusal_is_account_wide_except_421() {
    let r = rules(5);
    let mut d = Detector::default();
    let j = judge(
        &mut d,
        &r,
        false,
        &[seen(
            "a@x.example",
            Stage::Connect,
            "535 5.7.8 Authentication failed",
        )],
    );
    assert_eq!(cause(&j), Some(Cause::Connect));
    let j = judge(
        &mut d,
        &r,
        false,
        &[seen(
            "a@x.example",
            Stage::Connect,
            "454 4.7.0 Try again later",
        )],
    );
    assert_eq!(cause(&j), Some(Cause::Connect));
    let j = judge(
        &mut d,
        &r,
        false,
        &[seen("a@x.example", Stage::Connect, "421 4.3.2 busy")],
    );
    assert_eq!(cause(&j), None);
}

#[test]
fn mail_from_refusal_counts_for_the_system_sender_only() {
    let r = rules(5);
    let mut d = Detector::default();
    let replies = [
        seen("a@x.example", Stage::MailFrom, "550 5.7.1 no"),
        seen("b@x.example", Stage::MailFrom, "550 5.7.1 no"),
    ];
    assert_eq!(
        cause(&judge(&mut d, &r, true, &replies)),
        Some(Cause::SystemSender)
    );
    let j = judge(&mut d, &r, false, &replies);
    assert_eq!(cause(&j), None);
    // One reply for the message: held once, counted once.
    assert_eq!(j.verdicts, vec![Verdict::HoldOnce, Verdict::HoldOnce]);
    // A 4xx to MAIL FROM is a deferral, even for the system address.
    let j = judge(
        &mut d,
        &r,
        true,
        &[seen("a@x.example", Stage::MailFrom, "451 4.3.0 later")],
    );
    assert_eq!(cause(&j), None);
    assert_eq!(j.verdicts, vec![Verdict::AsIs]);
}

#[test]
fn a_pattern_pauses_at_its_first_match_at_any_stage() {
    let r = rules(0);
    let mut d = Detector::default();
    for stage in [Stage::MailFrom, Stage::Rcpt, Stage::Data] {
        let j = judge(
            &mut d,
            &r,
            false,
            &[seen(
                "a@x.example",
                stage,
                "550 5.7.1 Your account is suspended",
            )],
        );
        assert_eq!(cause(&j), Some(Cause::Pattern), "{stage:?}");
    }
    let j = judge(
        &mut d,
        &r,
        false,
        &[seen(
            "a@x.example",
            Stage::Local,
            "451 4.4.1 account suspended",
        )],
    );
    assert_eq!(cause(&j), None, "the gateway's own text is not a reply");
}

#[test]
fn the_same_reply_for_n_different_recipients_in_a_row() {
    let r = rules(3);
    let mut d = Detector::default();
    let t = |n: &str| format!("550 5.7.1 <{n}@x.example> refused by policy");
    let (t1, t2, t3) = (t("a"), t("b"), t("c"));
    let j = judge(&mut d, &r, false, &[seen("a@x.example", Stage::Rcpt, &t1)]);
    assert_eq!((cause(&j), j.verdicts), (None, vec![Verdict::HoldOnce]));
    // The same recipient again does not make it two.
    let j = judge(&mut d, &r, false, &[seen("a@x.example", Stage::Rcpt, &t1)]);
    assert_eq!(cause(&j), None);
    let j = judge(&mut d, &r, false, &[seen("b@x.example", Stage::Rcpt, &t2)]);
    assert_eq!(cause(&j), None);
    let j = judge(&mut d, &r, false, &[seen("c@x.example", Stage::Rcpt, &t3)]);
    assert_eq!(cause(&j), Some(Cause::SameReply));
    // The pause took the run: counting starts over.
    let j = judge(&mut d, &r, false, &[seen("d@x.example", Stage::Rcpt, &t1)]);
    assert_eq!(cause(&j), None);
}

#[test]
fn one_message_with_many_refused_recipients_counts_each() {
    let r = rules(3);
    let mut d = Detector::default();
    let text = "550 5.7.1 refused by policy";
    let j = judge(
        &mut d,
        &r,
        false,
        &[
            seen("a@x.example", Stage::Rcpt, text),
            seen("b@x.example", Stage::Rcpt, text),
            seen("c@x.example", Stage::Rcpt, text),
        ],
    );
    assert_eq!(cause(&j), Some(Cause::SameReply));
}

#[test]
fn a_success_a_different_reply_or_a_bad_address_breaks_the_row() {
    let r = rules(2);
    let text = "550 5.7.1 refused by policy";
    let other = "550 5.7.1 something else";
    for breaker in [
        seen("z@x.example", Stage::Data, "250 2.0.0 OK"),
        seen("z@x.example", Stage::Rcpt, other),
        seen("z@x.example", Stage::Rcpt, "550 5.1.1 user unknown"),
    ] {
        let mut d = Detector::default();
        judge(&mut d, &r, false, &[seen("a@x.example", Stage::Rcpt, text)]);
        let j = judge(&mut d, &r, false, std::slice::from_ref(&breaker));
        assert_eq!(cause(&j), None);
        let j = judge(&mut d, &r, false, &[seen("b@x.example", Stage::Rcpt, text)]);
        assert_eq!(cause(&j), None, "after {:?}", breaker.text);
    }
    // A deferral in between does not.
    let mut d = Detector::default();
    judge(&mut d, &r, false, &[seen("a@x.example", Stage::Rcpt, text)]);
    judge(
        &mut d,
        &r,
        false,
        &[seen("z@x.example", Stage::Rcpt, "451 4.2.0 later")],
    );
    let j = judge(&mut d, &r, false, &[seen("b@x.example", Stage::Rcpt, text)]);
    assert_eq!(cause(&j), Some(Cause::SameReply));
}

#[test]
fn bad_addresses_bounce_at_once() {
    let r = rules(2);
    let mut d = Detector::default();
    for rcpt in ["a@x.example", "b@x.example", "c@x.example"] {
        let j = judge(
            &mut d,
            &r,
            false,
            &[seen(rcpt, Stage::Rcpt, "550 5.1.1 user unknown")],
        );
        assert_eq!((cause(&j), j.verdicts), (None, vec![Verdict::AsIs]));
    }
}

#[test]
fn the_run_must_fit_in_the_window() {
    let r = Rules::new(&Config {
        same_reply_recipients: 2,
        same_reply_window: Duration::from_secs(60),
        ..Config::default()
    });
    let mut d = Detector::default();
    let text = "550 5.7.1 refused by policy";
    let t0 = Instant::now();
    d.judge(
        &r,
        false,
        None,
        &[seen("a@x.example", Stage::Rcpt, text)],
        t0,
    );
    let late = t0 + Duration::from_secs(61);
    let j = d.judge(
        &r,
        false,
        None,
        &[seen("b@x.example", Stage::Rcpt, text)],
        late,
    );
    assert_eq!(cause(&j), None);
    let j = d.judge(
        &r,
        false,
        None,
        &[seen("c@x.example", Stage::Rcpt, text)],
        late + Duration::from_secs(1),
    );
    assert_eq!(cause(&j), Some(Cause::SameReply));
}

#[test]
fn a_refusal_held_once_bounces_when_it_comes_again() {
    let r = rules(5);
    let mut d = Detector::default();
    let text = "550 5.7.1 <a@x.example> refused by policy";
    let held = format!("550 5.7.1 <a@x.example> refused by policy{HELD_MARK}");
    let paused = format!("550 5.7.1 <a@x.example> refused by policy{ACCOUNT_MARK}");
    let with_prev = |prev: &'static str| Seen {
        prev: Some(prev),
        ..seen("a@x.example", Stage::Rcpt, text)
    };
    let held: &'static str = held.leak();
    let paused: &'static str = paused.leak();
    let j = judge(&mut d, &r, false, &[with_prev(held)]);
    assert_eq!(j.verdicts, vec![Verdict::AsIs]);
    // Kept pending by a pause is not "held once": it is held again.
    let j = judge(&mut d, &r, false, &[with_prev(paused)]);
    assert_eq!(j.verdicts, vec![Verdict::HoldOnce]);
    let j = judge(
        &mut d,
        &r,
        false,
        &[with_prev(
            "550 5.7.1 another reply [schleuse: held once, bounced if refused the same way again]",
        )],
    );
    assert_eq!(j.verdicts, vec![Verdict::HoldOnce]);
}

#[test]
fn during_a_pause_the_same_refusal_is_more_of_it() {
    let r = rules(0);
    let mut d = Detector::default();
    let key = normalise("550 5.7.1 <a@x.example> refused by policy");
    let j = d.judge(
        &r,
        false,
        Some(&key),
        &[seen(
            "b@x.example",
            Stage::Rcpt,
            "550 5.7.1 <b@x.example> refused by policy",
        )],
        Instant::now(),
    );
    assert!(j.account_wide.is_some());
}

#[test]
fn off_means_5xx_bounce_as_before() {
    let r = rules(0);
    let mut d = Detector::default();
    let j = judge(
        &mut d,
        &r,
        false,
        &[seen(
            "a@x.example",
            Stage::Rcpt,
            "550 5.7.1 refused by policy",
        )],
    );
    assert_eq!((cause(&j), j.verdicts), (None, vec![Verdict::AsIs]));
}
