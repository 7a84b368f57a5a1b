//! Sender identity and header privacy (SPEC §7): From rewrite with the
//! display name kept, Reply-To to the staff member, internal headers
//! removed, Mailjet tracking off, the opaque custom id, copy to sender.

mod common;

use std::time::Duration;

use common::*;

const STAFF_PASSWORD: &str = "staff-Passw0rd!!";

/// Upstream with TLS+AUTH; the gateway rewrites From and sets Reply-To, with
/// the shipped default list of headers to remove.
fn world(copy: bool) -> World {
    let mut env = Env::new();
    let up = env.start_upstream(&UpstreamOpts::default());
    let mut conf = GatewayConf::relay(up.port);
    conf.from_mode = "rewrite";
    conf.reply_to_mode = "account";
    conf.remove_headers = vec![
        "X-Originating-IP",
        "X-PHP-Originating-Script",
        "X-Mailer",
        "User-Agent",
    ];
    env.write_config(&conf);
    let mut args = vec![
        "user",
        "add",
        "vergabe",
        "--allow-sender",
        "*@landkreis.example",
        "--reply-to",
        "schuelerbefoerderung@landkreis.example",
        "--reply-to-header",
        "X-VIA-User",
        "--password-stdin",
    ];
    if copy {
        args.push("--copy-to-sender");
    }
    let out = env.cli(&args, Some(format!("{STAFF_PASSWORD}\n").as_bytes()));
    assert!(out.status.success(), "{}", output_text(&out));
    let gw = env.start_gateway();
    World {
        gw,
        up: Some(up),
        env,
    }
}

fn submit(w: &World, message: &str, rcpts: &[&str]) -> String {
    let mut c = Smtp::connect_auth(w.port(), w.ca(), "vergabe", STAFF_PASSWORD);
    let r = c.send("anna.mueller@landkreis.example", rcpts, message.as_bytes());
    assert_eq!(r.code, 250, "{r}\n{}", w.gw.log());
    c.quit();
    r.last_word()
}

const MESSAGE: &str = "From: =?utf-8?q?M=C3=BCller=2C_Anna_=28VIA=29?= <anna.mueller@landkreis.example>\r\n\
To: Familie Beispiel <eltern@example.org>\r\n\
Reply-To: irgendwer@anderswo.example\r\n\
Subject: =?utf-8?q?Bescheid_Sch=C3=BClerbef=C3=B6rderung?=\r\n\
Message-ID: <identity-1@landkreis.example>\r\n\
X-Mailer: PHPMailer 6.9\r\n\
X-Originating-IP: [10.1.2.3]\r\n\
X-VIA-Category: manual\r\n\
X-VIA-User: k.schmidt@landkreis.example\r\n\
X-Schleuse-Link-Expiry: 7d\r\n\
X-MJ-CustomID: app-chose-this\r\n\
X-Mailjet-TrackClick: 1\r\n\
MIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
Sehr geehrte Familie,\r\n\
der Antrag ist bewilligt.\r\n";

#[test]
fn from_rewrite_reply_to_and_header_privacy() {
    let w = world(false);
    let id = submit(&w, MESSAGE, &["eltern@example.org"]);
    let got = w.up().wait_for(1, Duration::from_secs(30));
    let d = &got[0];
    let text = d.text();

    // Bounces come to the county's system sender, not to the app.
    assert_eq!(d.mail_from, "noreply@example.com", "{text}");
    let from = d.header("From").expect("From");
    assert!(from.ends_with("<noreply@example.com>"), "{from}");
    // The display name survives, RFC 2047-encoded (checked decoded below).
    let parsed = python_header(&d.eml, "From");
    assert_eq!(
        parsed, "\"Müller, Anna (VIA)\" <noreply@example.com>",
        "{text}"
    );

    let replies: Vec<_> = header_fields(&d.eml)
        .into_iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("Reply-To"))
        .collect();
    assert_eq!(replies.len(), 1, "exactly one Reply-To\n{text}");
    assert!(
        replies[0].1.contains("k.schmidt@landkreis.example"),
        "{text}"
    );

    for gone in [
        "X-Mailer",
        "X-Originating-IP",
        "X-VIA-",
        "X-Schleuse-",
        "app-chose-this",
        "TrackClick: 1",
        "anderswo.example",
    ] {
        assert!(
            !text.contains(gone),
            "{gone} must not leave the house\n{text}"
        );
    }
    assert_eq!(d.header("X-Mailjet-TrackOpen").as_deref(), Some("0"));
    assert_eq!(d.header("X-Mailjet-TrackClick").as_deref(), Some("0"));
    assert_eq!(d.header("X-MJ-CustomID").as_deref(), Some(id.as_str()));
    let received = d.header("Received").expect("Received");
    assert!(
        !received.contains("127.0.0.1"),
        "minimal Received: {received}"
    );
    // The body is untouched.
    assert!(
        text.ends_with("\r\n\r\nSehr geehrte Familie,\r\nder Antrag ist bewilligt.\r\n"),
        "{text}"
    );
}

#[test]
fn untrusted_staff_header_falls_back_to_the_account_address() {
    let w = world(false);
    let message = MESSAGE.replace("k.schmidt@landkreis.example", "chef@boese.example");
    submit(&w, &message, &["eltern@example.org"]);
    let got = w.up().wait_for(1, Duration::from_secs(30));
    let reply = got[0].header("Reply-To").expect("Reply-To");
    assert!(
        reply.contains("schuelerbefoerderung@landkreis.example"),
        "{}",
        got[0].text()
    );
}

#[test]
fn copy_to_sender_goes_to_the_staff_member() {
    let w = world(true);
    submit(&w, MESSAGE, &["eltern@example.org"]);
    let got = w.up().wait_for(1, Duration::from_secs(30));
    let rcpts: Vec<&str> = got
        .iter()
        .flat_map(|d| d.rcpt_tos.iter().map(String::as_str))
        .collect();
    assert!(rcpts.contains(&"eltern@example.org"), "{rcpts:?}");
    assert!(rcpts.contains(&"k.schmidt@landkreis.example"), "{rcpts:?}");
}

/// The decoded value of a header, as Python's email package reads it.
fn python_header(eml: &[u8], name: &str) -> String {
    let script = format!(
        "import sys, email, email.policy\n\
         m = email.message_from_bytes(sys.stdin.buffer.read(), policy=email.policy.default)\n\
         print(str(m[{name:?}]))"
    );
    let out = run_bounded(
        std::process::Command::new(PYTHON).args(["-c", &script]),
        Some(eml),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", output_text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
