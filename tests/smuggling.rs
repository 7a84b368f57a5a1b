//! SMTP smuggling (CVE-2023-51764 class) and STARTTLS command injection
//! (CVE-2011-0411 class), SPEC §5.
//!
//! The smuggling tests talk raw bytes over a plaintext loopback listener whose
//! clients are trusted (`trusted_networks`, acting as the default account), so
//! no AUTH is needed; the upstream is a plaintext loopback stand-in.

mod common;

use std::io;
use std::time::Duration;

use common::*;

const SENDER: &str = "sender@example.com";
const RCPT: &str = "rcpt@example.net";
const VICTIM: &str = "victim@example.net";
const WAIT: Duration = Duration::from_secs(30);

/// A trusted plaintext listener first, a STARTTLS listener second; plaintext
/// upstream without AUTH.
fn world() -> World {
    World::relay_with(
        UpstreamOpts {
            tls: false,
            auth: false,
            ..UpstreamOpts::default()
        },
        |c| {
            c.listeners = vec![ListenerConf::trusted_plain(USER), ListenerConf::starttls()];
        },
    )
}

/// After a refusal, the next reply must be the QUIT's 221 (or the gateway has
/// closed the connection): anything else is a reply to smuggled commands.
fn assert_no_stray_reply(c: &mut Smtp, what: &str) {
    match c.try_cmd("QUIT") {
        Ok(r) => assert_eq!(
            r.code, 221,
            "{what}: a stray reply is pending: the bytes after a bare CR/LF were \
             taken as a separate command (or smuggled commands were executed): {r}"
        ),
        Err(e) => assert!(
            matches!(
                e.kind(),
                io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::BrokenPipe
            ),
            "{what}: unexpected error after refusal: {e}"
        ),
    }
}

/// Sends a control message on a fresh connection, waits until it arrives,
/// gives the queue a moment more, and checks it is the only message relayed
/// and that nothing for the victim or with the smuggled text ever arrived.
fn assert_only_control_delivered(w: &World) {
    let mut c = Smtp::connect(w.port());
    c.ehlo();
    let r = c.send(
        SENDER,
        &[RCPT],
        &simple_message(SENDER, RCPT, "control-message"),
    );
    assert_eq!(r.code, 250, "control message: {r}");
    c.quit();
    w.up().wait_for(1, WAIT);
    std::thread::sleep(Duration::from_secs(3));
    let got = w.up().messages();
    for d in &got {
        assert!(
            !d.rcpt_tos.iter().any(|r| r == VICTIM),
            "a smuggled message reached the upstream: {:?}\n{}",
            d.rcpt_tos,
            d.text()
        );
        assert!(
            !d.text().contains("smuggled"),
            "smuggled content reached the upstream:\n{}",
            d.text()
        );
    }
    assert_eq!(
        got.len(),
        1,
        "only the control message may be relayed, got {}",
        got.len()
    );
    assert!(got[0].text().contains("control-message"));
}

/// Carrier message whose body ends with `fake_end`, followed by a hidden
/// second transaction (lines ending in `eol`), then the real `<CRLF>.<CRLF>`.
fn smuggle(fake_end: &[u8], eol: &str) {
    let w = world();
    let mut c = Smtp::connect(w.port());
    c.ehlo();
    let r = c.cmd(&format!("MAIL FROM:<{SENDER}>"));
    assert_eq!(r.code, 250, "MAIL (trusted network, no AUTH): {r}");
    let r = c.cmd(&format!("RCPT TO:<{RCPT}>"));
    assert_eq!(r.code, 250, "RCPT: {r}");
    let r = c.cmd("DATA");
    assert_eq!(r.code, 354, "DATA: {r}");

    let mut payload =
        format!("From: <{SENDER}>\r\nTo: <{RCPT}>\r\nSubject: carrier\r\n\r\ncarrier body")
            .into_bytes();
    payload.extend_from_slice(fake_end);
    let hidden = [
        format!("MAIL FROM:<{SENDER}>"),
        format!("RCPT TO:<{VICTIM}>"),
        "DATA".to_string(),
        format!("From: <{SENDER}>"),
        format!("To: <{VICTIM}>"),
        "Subject: smuggled".to_string(),
        String::new(),
        "smuggled body".to_string(),
    ];
    for line in &hidden {
        payload.extend_from_slice(line.as_bytes());
        payload.extend_from_slice(eol.as_bytes());
    }
    payload.extend_from_slice(b"\r\n.\r\n");
    c.send_raw(&payload).expect("send payload");

    let r = c
        .read_reply()
        .unwrap_or_else(|e| panic!("no reply to the end of DATA: {e}"));
    assert!(
        r.is(550, "5.6.0"),
        "a message with bare CR/LF must be refused with 550 5.6.0, got: {r}"
    );
    assert_no_stray_reply(&mut c, "after the tainted DATA");
    assert_only_control_delivered(&w);
}

#[test]
fn smuggling_lf_dot_crlf() {
    smuggle(b"\n.\r\n", "\r\n");
}

#[test]
fn smuggling_crlf_dot_lf() {
    smuggle(b"\r\n.\n", "\r\n");
}

#[test]
fn smuggling_cr_dot_crlf() {
    smuggle(b"\r.\r\n", "\r\n");
}

#[test]
fn smuggling_lf_dot_lf() {
    smuggle(b"\n.\n", "\r\n");
}

#[test]
fn smuggling_cr_dot_cr() {
    smuggle(b"\r.\r", "\r\n");
}

#[test]
fn smuggling_bare_lf_lines() {
    // Everything hidden uses bare LF line ends, as a lenient receiver would read it.
    smuggle(b"\n.\n", "\n");
}

#[test]
fn bare_lf_or_cr_in_command_is_refused() {
    let w = world();
    for (what, bytes) in [
        (
            "bare LF between MAIL and RCPT",
            format!("MAIL FROM:<{SENDER}>\nRCPT TO:<{VICTIM}>\r\n"),
        ),
        ("bare CR in NOOP", "NOOP\rNOOP\r\n".to_string()),
        ("bare LF in EHLO", "EHLO a\nEHLO b\r\n".to_string()),
    ] {
        let mut c = Smtp::connect(w.port());
        c.ehlo();
        c.send_raw(bytes.as_bytes()).expect("send");
        let r = c
            .read_reply()
            .unwrap_or_else(|e| panic!("{what}: no reply: {e}"));
        assert!(r.is(500, "5.5.2"), "{what}: expected 500 5.5.2, got: {r}");
        assert_no_stray_reply(&mut c, what);
    }
    // Nothing was queued by any of it.
    let mut c = Smtp::connect(w.port());
    c.ehlo();
    let r = c.cmd(&format!("MAIL FROM:<{SENDER}>"));
    assert_eq!(r.code, 250, "a fresh transaction works: {r}");
    c.quit();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        w.up().messages().is_empty(),
        "nothing may be relayed: {:?}",
        w.up()
            .messages()
            .iter()
            .map(|d| d.rcpt_tos.clone())
            .collect::<Vec<_>>()
    );
}

/// Pipelined bytes after STARTTLS must be discarded, not executed inside TLS.
fn starttls_injection(injected: &str) {
    let w = world();
    let tls_port = w.gw.ports[1];
    let mut c = Smtp::connect(tls_port);
    c.ehlo();
    c.send_raw(format!("STARTTLS\r\n{injected}").as_bytes())
        .expect("send STARTTLS + injected command");
    let r = c.read_reply().expect("reply to STARTTLS");
    assert_eq!(r.code, 220, "STARTTLS: {r}");
    c.tls_handshake(Verify::Ca(w.ca()))
        .unwrap_or_else(|e| panic!("TLS handshake after STARTTLS + {injected:?}: {e}"));

    // The first reply inside TLS must be the EHLO's (multi-line, with AUTH),
    // not a reply to the injected command.
    let r = c.cmd("EHLO client.test");
    assert!(
        r.code == 250 && r.lines.len() > 1 && r.text().to_ascii_uppercase().contains("AUTH"),
        "first reply after the handshake must be the EHLO response, got: {r}\n\
         (the injected {injected:?} was executed after TLS started)"
    );
    let r = c.cmd("NOOP");
    assert_eq!(r.code, 250, "NOOP: {r}");
    assert_no_stray_reply(&mut c, "after STARTTLS injection");
}

#[test]
fn starttls_injection_rset_is_discarded() {
    starttls_injection("RSET\r\n");
}

#[test]
fn starttls_injection_mail_is_discarded() {
    starttls_injection(&format!("MAIL FROM:<{SENDER}>\r\n"));
}

/// With no `Received:` header in front, a message whose first line is a
/// lone "." (sent dot-stuffed as "..") must reach the upstream intact: an
/// unstuffed leading dot would end the upstream's DATA early and turn the
/// rest of the body into commands run with the gateway's credentials.
#[test]
fn leading_dot_cannot_smuggle_commands_to_the_upstream() {
    let w = World::relay_with(
        UpstreamOpts {
            tls: false,
            auth: false,
            ..UpstreamOpts::default()
        },
        |c| {
            c.listeners = vec![ListenerConf::trusted_plain(USER)];
            c.received_header = "none";
        },
    );
    let mut c = Smtp::connect(w.port());
    c.ehlo();
    let r = c.cmd(&format!("MAIL FROM:<{SENDER}>"));
    assert_eq!(r.code, 250, "{r}");
    let r = c.cmd(&format!("RCPT TO:<{RCPT}>"));
    assert_eq!(r.code, 250, "{r}");
    let r = c.cmd("DATA");
    assert_eq!(r.code, 354, "{r}");
    let body = format!(
        "..\r\nMAIL FROM:<{SENDER}>\r\nRCPT TO:<{VICTIM}>\r\nDATA\r\nFrom: {SENDER}\r\n\r\nsmuggled\r\n.\r\n"
    );
    // Only the first line is stuffed by the client; the rest is the payload.
    c.send_raw(body.as_bytes()).expect("send");
    let r = c.read_reply().expect("reply to the end of DATA");
    // mail-parser reads past the odd first lines and finds the From:, so the
    // message is accepted: it must arrive whole, as one message.
    c.quit();
    assert_eq!(r.code, 250, "{r}");
    let got = w.up().wait_for(1, WAIT);
    // (The gateway's own fields now sit above it; the body line "." must
    // still arrive as such, inside the one message.)
    assert!(
        got[0].text().contains("\r\n.\r\nMAIL FROM:"),
        "{}",
        got[0].text()
    );
    assert!(got[0].text().contains("smuggled"), "{}", got[0].text());
    std::thread::sleep(Duration::from_secs(2));
    for d in w.up().messages() {
        assert!(
            !d.rcpt_tos.iter().any(|r| r == VICTIM),
            "smuggled through a leading dot: {:?}\n{}",
            d.rcpt_tos,
            d.text()
        );
    }
}
