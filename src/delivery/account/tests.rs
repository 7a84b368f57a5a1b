use super::*;

fn config() -> crate::config::AccountPause {
    crate::config::AccountPause {
        probe_interval: Duration::from_secs(30),
        probe_max_interval: Duration::from_secs(100),
        ..Default::default()
    }
}

fn refused_mail_from(p: &AccountPause, now: Instant) -> Option<Began> {
    let seen = [Seen {
        recipient: "a@x.example",
        stage: Stage::MailFrom,
        text: "550 5.7.1 sender not allowed here",
        prev: None,
    }];
    let (j, began) = p.judge(&config(), true, &seen, now);
    assert!(j.account_wide.is_some());
    began
}

fn refused(stage: Stage, reply: &str) -> Probe {
    Probe::Refused {
        stage,
        reply: reply.into(),
    }
}

#[test]
fn a_pause_begins_once_and_backs_off_until_a_probe_passes() {
    let p = AccountPause::default();
    let t0 = Instant::now();
    assert!(!p.is_paused());
    assert!(p.held_until(t0).is_none() && p.status().is_none());
    let began = refused_mail_from(&p, t0).expect("a pause begins");
    assert_eq!(began.cause, Cause::SystemSender);
    assert_eq!(began.first_probe, Duration::from_secs(30));
    assert!(began.notify);
    assert!(p.is_paused());
    assert_eq!(p.held_until(t0), Some(t0 + TICK));
    let status = p.status().unwrap_or_default();
    assert!(status.contains("550 5.7.1 sender not allowed"), "{status}");
    // Workers that were under way report the same: still one pause.
    assert!(refused_mail_from(&p, t0).is_none());
    assert!(!p.probe_due(t0));

    let t1 = t0 + Duration::from_secs(30);
    assert!(p.probe_due(t1));
    let after = p.probed(&config(), &refused(Stage::MailFrom, "550 5.7.1 no"), t1);
    assert!(matches!(after, Some(After::Waits { next, .. }) if next == Duration::from_secs(60)));
    let t2 = t1 + Duration::from_secs(60);
    let after = p.probed(&config(), &Probe::Failed("timed out".into()), t2);
    assert!(matches!(after, Some(After::Waits { next, .. }) if next == Duration::from_secs(100)));
    let t3 = t2 + Duration::from_secs(100);
    let after = p.probed(&config(), &refused(Stage::Connect, "535 5.7.8 no"), t3);
    assert!(matches!(after, Some(After::Waits { next, .. }) if next == Duration::from_secs(100)));
    let t4 = t3 + Duration::from_secs(100);
    match p.probed(&config(), &Probe::Accepted, t4) {
        Some(After::Resumed { paused_for, probes }) => {
            assert_eq!((paused_for, probes), (Duration::from_secs(290), 4));
        }
        _ => panic!("an accepted probe resumes delivery"),
    }
    assert!(!p.is_paused() && p.held_until(t4).is_none());
}

#[test]
fn a_probe_refused_for_its_recipient_alone_resumes() {
    let p = AccountPause::default();
    let t0 = Instant::now();
    refused_mail_from(&p, t0);
    let t1 = t0 + Duration::from_secs(30);
    // 4xx: not taking mail yet.
    let after = p.probed(&config(), &refused(Stage::Rcpt, "451 4.3.0 later"), t1);
    assert!(matches!(after, Some(After::Waits { .. })));
    // The refusal that started the pause, at RCPT: still refused.
    let after = p.probed(
        &config(),
        &refused(Stage::Rcpt, "550 5.7.1 sender not allowed here"),
        t1,
    );
    assert!(matches!(after, Some(After::Waits { .. })));
    let after = p.probed(
        &config(),
        &refused(Stage::Rcpt, "550 5.1.1 <admin@x.example> unknown"),
        t1,
    );
    assert!(matches!(after, Some(After::Resumed { .. })));
}

#[test]
fn a_pause_soon_after_the_last_goes_on_backing_off_and_tells_nobody_again() {
    let p = AccountPause::default();
    let t0 = Instant::now();
    refused_mail_from(&p, t0);
    let t1 = t0 + Duration::from_secs(30);
    p.probed(&config(), &Probe::Accepted, t1);
    let again = refused_mail_from(&p, t1 + Duration::from_secs(5)).expect("a new pause");
    assert_eq!(again.first_probe, Duration::from_secs(60));
    assert!(!again.notify);
    let t2 = t1 + Duration::from_secs(5 + 60);
    p.probed(&config(), &Probe::Accepted, t2);
    // Long after: back to the start, and a new notice after the quiet hour.
    let later = t2 + NOTICE_QUIET;
    let fresh = refused_mail_from(&p, later).expect("a new pause");
    assert_eq!(fresh.first_probe, Duration::from_secs(30));
    assert!(fresh.notify);
}

#[test]
fn nothing_to_probe_when_not_paused() {
    let p = AccountPause::default();
    assert!(
        p.probed(&config(), &Probe::Accepted, Instant::now())
            .is_none()
    );
    assert!(!p.probe_due(Instant::now()));
    p.clear();
    assert!(!p.is_paused());
}

#[test]
fn metric_names_follow_the_conventions() {
    for name in [ACCOUNT_PAUSES, ACCOUNT_PROBES, REFUSALS_HELD] {
        assert!(
            name.starts_with("schleuse_") && name.ends_with("_total"),
            "{name}"
        );
    }
    assert!(ACCOUNT_PAUSED.starts_with("schleuse_") && !ACCOUNT_PAUSED.ends_with("_total"));
}

#[test]
fn every_cause_is_registered_as_a_metric_label() {
    let labels: Vec<&str> = Cause::ALL.iter().map(|c| c.label()).collect();
    assert_eq!(labels, crate::metrics::ACCOUNT_PAUSE_CAUSES);
}
