//! Submission side (SPEC §3-§5): an application submits over STARTTLS + AUTH,
//! the gateway relays to the upstream (STARTTLS + AUTH, verified with
//! `ca_file`), and refuses what it must with the right codes.

mod common;

use std::time::Duration;

use common::*;

const SENDER: &str = "sender@example.com";
const RCPT: &str = "rcpt@example.net";
const WAIT: Duration = Duration::from_secs(30);

/// A message that exercises transparency: dot lines (stuffing), 8-bit UTF-8,
/// a folded header, trailing spaces, tabs, empty lines, a long line.
fn tricky_message() -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(
        "From: App <sender@example.com>\r\n\
         To: Someone <rcpt@example.net>\r\n\
         Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= byte test\r\n\
         Message-ID: <byte-test-1@example.com>\r\n\
         Date: Mon, 01 Jan 2024 10:00:00 +0100\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\
         X-Folded: first part\r\n\
         \tsecond part\r\n\
         \r\n\
         .leading dot\r\n\
         ..two leading dots\r\n\
         .\r\n\
         trailing spaces   \r\n\
         \r\n\
         Grüße aus dem Landkreis – ÄÖÜ äöü ß\r\n\
         \tTab-indented line\r\n\
         From the start of a line\r\n"
            .as_bytes(),
    );
    m.extend_from_slice(&[b'x'; 900]);
    m.extend_from_slice(b"\r\n\r\n\r\nend.\r\n");
    m
}

/// The fields the gateway added: signatures, then its `Received:`, then the
/// relay-steering fields of SPEC §7 (tracking off, the opaque custom id);
/// nothing else.
fn check_added(eml: &[u8], message: &[u8]) -> Vec<(String, String)> {
    let added = added_headers(eml, message).unwrap_or_else(|e| panic!("{e}"));
    let first_trace = added
        .iter()
        .find(|(n, _)| !n.eq_ignore_ascii_case("DKIM-Signature"));
    assert!(
        first_trace.is_some_and(|(n, _)| n.eq_ignore_ascii_case("Received")),
        "the first added header after signatures must be Received:, added: {added:?}"
    );
    const ALLOWED: [&str; 5] = [
        "Received",
        "DKIM-Signature",
        "X-MJ-CustomID",
        "X-Mailjet-TrackOpen",
        "X-Mailjet-TrackClick",
    ];
    for (n, _) in &added {
        assert!(
            ALLOWED.iter().any(|a| n.eq_ignore_ascii_case(a)),
            "the gateway added an unexpected header {n:?} (added: {added:?})"
        );
    }
    added
}

#[test]
fn smtplib_submission_is_relayed_byte_identical() {
    let w = World::relay();
    let message = tricky_message();
    let results = smtplib_send(
        &w.env,
        w.port(),
        (USER, PASSWORD),
        SENDER,
        &[RCPT],
        &message,
    );
    assert_eq!(results.len(), 1);
    let r = &results[0];
    assert_eq!(r.code, 250, "end of DATA: {r:?}");
    assert!(
        r.reply.contains("queued as") && r.queue_id.as_deref().is_some_and(|q| !q.is_empty()),
        "250 must name the queue id: {r:?}"
    );

    let got = w.up().wait_for(1, WAIT);
    assert_eq!(got.len(), 1, "exactly one message relayed");
    let d = &got[0];
    assert_eq!(d.mail_from, SENDER);
    assert_eq!(d.rcpt_tos, vec![RCPT.to_string()]);
    assert_eq!(d.meta["tls"], true, "relayed over STARTTLS: {}", d.meta);
    assert_eq!(
        d.meta["authenticated"], true,
        "relayed with AUTH: {}",
        d.meta
    );
    check_added(&d.eml, &message);
}

#[test]
fn swaks_submission_is_relayed() {
    let w = World::relay();
    let message = simple_message(SENDER, RCPT, "swaks-marker-7f3a");
    let path = w.env.write_file("swaks.eml", &message);
    let data = format!("@{}", path.display());
    let out = swaks(
        &w.env,
        w.port(),
        &[
            "--auth",
            "PLAIN",
            "--auth-user",
            USER,
            "--auth-password",
            PASSWORD,
            "--from",
            SENDER,
            "--to",
            RCPT,
            "--data",
            &data,
        ],
    );
    let transcript = output_text(&out);
    assert!(out.status.success(), "swaks failed\n{transcript}");
    assert!(
        transcript.contains("queued as"),
        "no `queued as` in\n{transcript}"
    );

    let got = w.up().wait_for(1, WAIT);
    let d = &got[0];
    assert_eq!(d.mail_from, SENDER);
    assert_eq!(d.rcpt_tos, vec![RCPT.to_string()]);
    // swaks appends a CRLF of its own before the final dot.
    let with_crlf = [message.as_slice(), b"\r\n"].concat();
    if added_headers(&d.eml, &with_crlf).is_ok() {
        check_added(&d.eml, &with_crlf);
    } else {
        check_added(&d.eml, &message);
    }
}

#[test]
fn auth_before_starttls_is_refused() {
    let w = World::relay();
    let mut c = Smtp::connect(w.port());
    c.ehlo();
    let r = c.auth_plain(USER, PASSWORD);
    assert!(r.is(538, "5.7.11"), "AUTH before STARTTLS: {r}");
    // And nothing may be submitted on that connection.
    let r = c.cmd(&format!("MAIL FROM:<{SENDER}>"));
    assert!(r.is(530, "5.7.0"), "MAIL after refused AUTH: {r}");
}

#[test]
fn wrong_password_is_refused() {
    let w = World::relay();
    let mut c = Smtp::connect_tls(w.port(), w.ca());
    let r = c.auth_plain(USER, "not-the-password");
    assert!(r.is(535, "5.7.8"), "wrong password: {r}");
    let r = c.auth_plain("no-such-user", PASSWORD);
    assert!(r.is(535, "5.7.8"), "unknown user: {r}");
    let r = c.cmd(&format!("MAIL FROM:<{SENDER}>"));
    assert!(r.is(530, "5.7.0"), "MAIL after failed AUTH: {r}");
}

#[test]
fn mail_without_auth_is_refused() {
    let w = World::relay();
    // Before TLS.
    let mut c = Smtp::connect(w.port());
    c.ehlo();
    let r = c.cmd(&format!("MAIL FROM:<{SENDER}>"));
    assert!(r.is(530, "5.7.0"), "MAIL without TLS and AUTH: {r}");
    c.quit();
    // After TLS, still without AUTH.
    let mut c = Smtp::connect_tls(w.port(), w.ca());
    let r = c.cmd(&format!("MAIL FROM:<{SENDER}>"));
    assert!(r.is(530, "5.7.0"), "MAIL without AUTH: {r}");
    let r = c.cmd(&format!("RCPT TO:<{RCPT}>"));
    assert!(r.code >= 500, "RCPT without AUTH must be refused, got: {r}");
}

#[test]
fn disallowed_envelope_sender_is_refused() {
    let w = World::relay();
    let mut c = w.client();
    let r = c.cmd("MAIL FROM:<boss@evil.test>");
    assert!(
        r.is(553, "5.7.1"),
        "MAIL FROM not allowed for the account: {r}"
    );
    // A subdomain is not the domain.
    let r = c.cmd("MAIL FROM:<x@sub.example.com>");
    assert!(r.is(553, "5.7.1"), "MAIL FROM from a subdomain: {r}");
    let r = c.cmd(&format!("MAIL FROM:<{SENDER}>"));
    assert_eq!(r.code, 250, "allowed sender after refusals: {r}");
}

#[test]
fn disallowed_from_header_is_refused() {
    let w = World::relay();
    let mut c = w.client();
    let mut bad = simple_message(SENDER, RCPT, "bad-from");
    let text = String::from_utf8(bad).unwrap();
    bad = text
        .replace("From: <sender@example.com>", "From: Boss <boss@evil.test>")
        .into_bytes();
    let r = c.send(SENDER, &[RCPT], &bad);
    assert!(r.is(553, "5.7.1"), "From: not allowed for the account: {r}");

    // The session goes on; a good message passes, and only it arrives.
    let good = simple_message(SENDER, RCPT, "good-from");
    let r = c.send(SENDER, &[RCPT], &good);
    assert_eq!(r.code, 250, "allowed message: {r}");
    let got = w.up().wait_for(1, WAIT);
    std::thread::sleep(Duration::from_secs(2));
    let got_after = w.up().messages();
    assert_eq!(got_after.len(), 1, "only the allowed message is relayed");
    assert!(got[0].text().contains("good-from"));
}

#[test]
fn size_limits() {
    let w = World::relay_with(UpstreamOpts::default(), |c| c.max_message_size = "10KB");
    let mut c = w.client();
    // SIZE declared at MAIL.
    let r = c.cmd(&format!("MAIL FROM:<{SENDER}> SIZE=20480"));
    assert!(r.is(552, "5.3.4"), "SIZE over the limit: {r}");
    // Actual oversize DATA without SIZE=.
    let r = c.cmd(&format!("MAIL FROM:<{SENDER}>"));
    assert_eq!(r.code, 250, "MAIL: {r}");
    let r = c.cmd(&format!("RCPT TO:<{RCPT}>"));
    assert_eq!(r.code, 250, "RCPT: {r}");
    let mut big = simple_message(SENDER, RCPT, "too-big");
    for _ in 0..300 {
        big.extend_from_slice(&[b'y'; 98]);
        big.extend_from_slice(b"\r\n");
    }
    let r = c.data(&big);
    assert!(r.is(552, "5.3.4"), "oversize DATA: {r}");

    // A small message still goes through on the same session; only it arrives.
    let r = c.send(SENDER, &[RCPT], &simple_message(SENDER, RCPT, "small-one"));
    assert_eq!(r.code, 250, "small message: {r}");
    let got = w.up().wait_for(1, WAIT);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(w.up().messages().len(), 1, "only the small message");
    assert!(got[0].text().contains("small-one"));
}

#[test]
fn too_many_recipients() {
    let w = World::relay(); // max_recipients_per_message = 5
    let mut c = w.client();
    let r = c.cmd(&format!("MAIL FROM:<{SENDER}>"));
    assert_eq!(r.code, 250, "MAIL: {r}");
    let rcpts: Vec<String> = (1..=5).map(|i| format!("r{i}@example.net")).collect();
    for a in &rcpts {
        let r = c.cmd(&format!("RCPT TO:<{a}>"));
        assert_eq!(r.code, 250, "RCPT {a}: {r}");
    }
    let r = c.cmd("RCPT TO:<r6@example.net>");
    assert!(r.is(452, "4.5.3"), "sixth recipient: {r}");
    let r = c.data(&simple_message(SENDER, "r1@example.net", "five-rcpts"));
    assert_eq!(r.code, 250, "DATA with five recipients: {r}");

    let got = w.up().wait_for(1, WAIT);
    let mut all: Vec<String> = got.iter().flat_map(|d| d.rcpt_tos.clone()).collect();
    all.sort();
    assert_eq!(all, rcpts, "the five accepted recipients, not the sixth");
}

#[test]
fn outbox_mode_writes_eml_named_by_queue_id() {
    let w = World::without_upstream(GatewayConf::outbox());
    let message = simple_message(SENDER, RCPT, "outbox-marker");
    let mut c = w.client();
    let r = c.send(SENDER, &[RCPT], &message);
    assert_eq!(r.code, 250, "end of DATA: {r}");
    let id = r.last_word();
    assert!(
        r.text().contains("queued as") && !id.is_empty(),
        "250 must end with the queue id: {r}"
    );
    let path = w.env.outbox_dir().join(format!("{id}.eml"));
    let eml = wait_until(WAIT, || std::fs::read(&path).ok()).unwrap_or_else(|| {
        let listing: Vec<_> = std::fs::read_dir(w.env.outbox_dir())
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        panic!(
            "{} did not appear within {WAIT:?}; outbox holds {listing:?}",
            path.display()
        )
    });
    check_added(&eml, &message);
}

#[test]
fn check_config_reports_unknown_key_in_one_line() {
    let mut env = Env::new();
    let conf = GatewayConf::outbox();
    env.write_config(&conf);
    let out = env.cli(&["check-config"], None);
    assert!(
        out.status.success(),
        "a valid config must pass\n{}",
        output_text(&out)
    );

    let path = env.config_path.display().to_string();
    let base = env.render(&conf);
    let cases = [
        (
            "max_mesage_size",
            base.replacen("[limits]\n", "[limits]\nmax_mesage_size = \"1MB\"\n", 1),
        ),
        (
            "hostnme",
            base.replacen("[server]\n", "[server]\nhostnme = \"x\"\n", 1),
        ),
        ("sendng", format!("sendng = \"enabled\"\n{base}")),
    ];
    for (key, text) in cases {
        std::fs::write(&env.config_path, text).unwrap();
        let out = env.cli(&["check-config"], None);
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<&str> = all.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(
            !out.status.success(),
            "unknown key {key} must fail\n{}",
            output_text(&out)
        );
        assert_eq!(
            lines.len(),
            1,
            "exactly one line of output expected\n{}",
            output_text(&out)
        );
        assert!(
            lines[0].contains(&path) && lines[0].contains(key),
            "the line must name the file {path} and the key {key}: {:?}",
            lines[0]
        );
        assert!(
            !all.contains("panicked") && !all.contains("RUST_BACKTRACE"),
            "no panic: {all}"
        );
    }
}

#[test]
fn user_add_creates_a_working_account() {
    let mut env = Env::new();
    let up = env.start_upstream(&UpstreamOpts::default());
    env.write_config(&GatewayConf::relay(up.port));
    let password = "S3cond-account pass";
    env.add_user("second", password, &["*@example.com", "exact@other.test"]);
    let accounts = std::fs::read_to_string(&env.accounts_path).expect("accounts file written");
    assert!(
        !accounts.contains(password),
        "the password must not be stored in clear:\n{accounts}"
    );
    assert!(
        accounts.contains("$argon2"),
        "an argon2 hash is stored:\n{accounts}"
    );
    let gw = env.start_gateway();
    let w = World {
        gw,
        up: Some(up),
        env,
    };

    let mut c = Smtp::connect_tls(w.port(), w.ca());
    let r = c.auth_plain("second", "wrong");
    assert!(
        r.is(535, "5.7.8"),
        "wrong password for the new account: {r}"
    );
    let r = c.auth_plain("second", password);
    assert_eq!(r.code, 235, "AUTH as the new account: {r}");
    let r = c.cmd("MAIL FROM:<x@other.test>");
    assert!(r.is(553, "5.7.1"), "not an allowed sender: {r}");
    let msg = simple_message("exact@other.test", RCPT, "second-account")
        .into_iter()
        .collect::<Vec<u8>>();
    let r = c.send("exact@other.test", &[RCPT], &msg);
    assert_eq!(r.code, 250, "exact allowed sender: {r}");
    let r = c.send(
        "any@example.com",
        &[RCPT],
        &simple_message("any@example.com", RCPT, "second-wild"),
    );
    assert_eq!(r.code, 250, "wildcard allowed sender: {r}");
    let got = w.up().wait_for(2, WAIT);
    let mut froms: Vec<&str> = got.iter().map(|d| d.mail_from.as_str()).collect();
    froms.sort();
    assert_eq!(froms, vec!["any@example.com", "exact@other.test"]);
}

#[test]
fn received_header_minimal_hides_client_ip() {
    let w = World::relay(); // received_header = "minimal"
    let mut c = w.client();
    let message = simple_message(SENDER, RCPT, "privacy");
    let r = c.send(SENDER, &[RCPT], &message);
    assert_eq!(r.code, 250, "end of DATA: {r}");
    let got = w.up().wait_for(1, WAIT);
    let added = check_added(&got[0].eml, &message);
    for (n, v) in &added {
        assert!(
            !v.contains("127.0.0.1"),
            "with received_header = \"minimal\" the client IP must not appear: {n}: {v}"
        );
    }
}

#[test]
fn generated_self_signed_certificate_is_used_on_first_start() {
    let mut env = Env::new();
    let up = env.start_upstream(&UpstreamOpts::default());
    let mut conf = GatewayConf::relay(up.port);
    conf.test_ca_cert = false;
    env.write_config(&conf);
    env.add_default_user();
    let cert = env.path().join("gw-certs/server.crt");
    assert!(!cert.exists());
    let gw = env.start_gateway();
    let w = World {
        gw,
        up: Some(up),
        env,
    };
    assert!(cert.exists(), "{} generated on first start", cert.display());

    let mut c = Smtp::connect(w.port());
    c.ehlo();
    c.starttls(Verify::Insecure);
    c.ehlo();
    let r = c.auth_plain(USER, PASSWORD);
    assert_eq!(r.code, 235, "AUTH over the generated certificate: {r}");
    let r = c.send(
        SENDER,
        &[RCPT],
        &simple_message(SENDER, RCPT, "self-signed"),
    );
    assert_eq!(r.code, 250, "end of DATA: {r}");
    let got = w.up().wait_for(1, WAIT);
    assert!(got[0].text().contains("self-signed"));
}
