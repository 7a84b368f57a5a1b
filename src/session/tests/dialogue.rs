//! The SMTP dialogue, command by command: which reply each step gets
//! (RFC 5321, 4954, 2920; SPEC §5).

use super::*;

#[tokio::test]
async fn greeting_and_ehlo_keywords() {
    let s = setup().await;
    let mut c = s.connect(ListenerTls::None).await;
    c.greeting.assert_code("220 gw.test ESMTP");
    let ehlo = c.send("EHLO client.test").await;
    ehlo.assert_code("250");
    assert!(ehlo.lines[0].starts_with("gw.test "), "{ehlo:?}");
    for keyword in [
        "PIPELINING",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "SIZE 20000",
        "AUTH PLAIN LOGIN",
    ] {
        assert!(ehlo.has_line(keyword), "{keyword} missing in {ehlo:?}");
    }
    // No certificate: no STARTTLS, even where the listener would offer it.
    assert!(!ehlo.lines.iter().any(|l| l.starts_with("STARTTLS")));
    c.send("HELO client.test")
        .await
        .assert_code("250 2.0.0 gw.test");
    c.send("QUIT").await.assert_code("221 2.0.0");
    c.assert_closed().await;
}

#[tokio::test]
async fn auth_is_not_offered_nor_taken_before_tls() {
    let s = setup().await;
    let mut c = s.connect(ListenerTls::Starttls).await;
    let ehlo = c.send("EHLO client.test").await;
    assert!(
        !ehlo.lines.iter().any(|l| l.starts_with("AUTH")),
        "{ehlo:?}"
    );
    c.send(&auth_plain(USER, PASSWORD))
        .await
        .assert_code("538 5.7.11");
    c.send("STARTTLS").await.assert_code("454");
    c.send("MAIL FROM:<app@example.com>")
        .await
        .assert_code("530 5.7.0");
}

#[tokio::test]
async fn mail_needs_ehlo_then_auth() {
    let s = setup().await;
    let mut c = s.connect(ListenerTls::None).await;
    c.send("MAIL FROM:<app@example.com>")
        .await
        .assert_code("503 5.5.1");
    c.send("EHLO client.test").await.assert_code("250");
    c.send("MAIL FROM:<app@example.com>")
        .await
        .assert_code("530 5.7.0");
    c.send("RCPT TO:<rcpt@example.org>")
        .await
        .assert_code("530 5.7.0");
    c.send("DATA").await.assert_code("530 5.7.0");
}

#[tokio::test]
async fn auth_plain_and_login_succeed() {
    let s = setup().await;
    let mut c = s.logged_in().await;
    c.send(&auth_plain(USER, PASSWORD))
        .await
        .assert_code("503 5.5.1");
    let ehlo = c.send("EHLO client.test").await;
    assert!(
        !ehlo.lines.iter().any(|l| l.starts_with("AUTH")),
        "AUTH offered after login: {ehlo:?}"
    );

    let mut c = s.connect(ListenerTls::None).await;
    c.send("EHLO client.test").await.assert_code("250");
    let user = c.send("AUTH LOGIN").await;
    assert_eq!((user.code, user.lines[0].as_str()), (334, "VXNlcm5hbWU6"));
    let pass = c.send(&base64(USER.as_bytes())).await;
    assert_eq!((pass.code, pass.lines[0].as_str()), (334, "UGFzc3dvcmQ6"));
    c.send(&base64(PASSWORD.as_bytes()))
        .await
        .assert_code("235 2.7.0");
    // PLAIN with the response on its own line.
    let mut c = s.connect(ListenerTls::None).await;
    c.send("EHLO client.test").await.assert_code("250");
    c.send("AUTH PLAIN").await.assert_code("334");
    let token = base64(format!("\0{USER}\0{PASSWORD}").as_bytes());
    c.send(&token).await.assert_code("235 2.7.0");
}

#[tokio::test]
async fn auth_failures() {
    let s = setup().await;
    let mut c = s.connect(ListenerTls::None).await;
    c.send(&auth_plain(USER, PASSWORD))
        .await
        .assert_code("503 5.5.1");
    c.send("EHLO client.test").await.assert_code("250");
    c.send(&auth_plain(USER, "wrong"))
        .await
        .assert_code("535 5.7.8");
    c.send("AUTH LOGIN").await.assert_code("334");
    c.send(&base64(USER.as_bytes())).await.assert_code("334");
    c.send(&base64(b"wrong")).await.assert_code("535 5.7.8");
    c.send("AUTH LOGIN").await.assert_code("334");
    c.send("*").await.assert_code("501 5.0.0");
    c.send("AUTH PLAIN !!!").await.assert_code("501 5.5.2");
    c.send("AUTH CRAM-MD5").await.assert_code("504 5.5.4");
    // Still not logged in.
    c.send("MAIL FROM:<app@example.com>")
        .await
        .assert_code("530 5.7.0");
}

#[tokio::test]
async fn sender_outside_the_account_is_refused() {
    let s = setup().await;
    let mut c = s.logged_in().await;
    c.send("MAIL FROM:<someone@elsewhere.example>")
        .await
        .assert_code("553 5.7.1");
    c.send("MAIL FROM:<app@example.com>")
        .await
        .assert_code("250 2.1.0");
    c.send("MAIL FROM:<app@example.com>")
        .await
        .assert_code("503 5.5.1");
}

#[tokio::test]
async fn recipients_are_limited_per_message() {
    let s = setup().await;
    let mut c = s.logged_in().await;
    c.send("MAIL FROM:<app@example.com>")
        .await
        .assert_code("250 2.1.0");
    for n in 0..MAX_RECIPIENTS {
        c.send(&format!("RCPT TO:<r{n}@example.org>"))
            .await
            .assert_code("250 2.1.5");
    }
    // A repeated recipient is not another one.
    c.send("RCPT TO:<R0@example.org>")
        .await
        .assert_code("250 2.1.5");
    c.send("RCPT TO:<one-more@example.org>")
        .await
        .assert_code("452 4.5.3");
}

#[tokio::test]
async fn declared_size_over_the_limit_is_refused_at_mail() {
    let s = setup().await;
    let mut c = s.logged_in().await;
    c.send(&format!(
        "MAIL FROM:<app@example.com> SIZE={}",
        MAX_SIZE + 1
    ))
    .await
    .assert_code("552 5.3.4");
    c.send(&format!("MAIL FROM:<app@example.com> SIZE={MAX_SIZE}"))
        .await
        .assert_code("250 2.1.0");
}

#[tokio::test]
async fn commands_out_of_sequence() {
    let s = setup().await;
    let mut c = s.logged_in().await;
    c.send("RCPT TO:<rcpt@example.org>")
        .await
        .assert_code("503 5.5.1");
    c.send("DATA").await.assert_code("503 5.5.1");
    c.send("MAIL FROM:<app@example.com>")
        .await
        .assert_code("250 2.1.0");
    c.send("DATA").await.assert_code("554 5.5.1");
    c.send("FROB").await.assert_code("500 5.5.1");
}

#[tokio::test]
async fn rset_noop_and_quit() {
    let s = setup().await;
    let mut c = s.logged_in().await;
    c.send("MAIL FROM:<app@example.com>")
        .await
        .assert_code("250 2.1.0");
    c.send("RCPT TO:<rcpt@example.org>")
        .await
        .assert_code("250 2.1.5");
    c.send("RSET").await.assert_code("250 2.0.0");
    // The transaction is gone, the login stays.
    c.send("DATA").await.assert_code("503 5.5.1");
    c.send("NOOP").await.assert_code("250 2.0.0");
    c.send("MAIL FROM:<app@example.com>")
        .await
        .assert_code("250 2.1.0");
    c.send("QUIT").await.assert_code("221 2.0.0");
    c.assert_closed().await;
}

#[tokio::test]
async fn over_long_line_is_answered_once_and_the_session_goes_on() {
    let s = setup().await;
    let mut c = s.connect(ListenerTls::None).await;
    let long = format!("NOOP {}", "x".repeat(crate::session::wire::MAX_LINE + 100));
    c.send(&long).await.assert_code("500 5.5.2");
    c.send("NOOP").await.assert_code("250 2.0.0");
}

#[tokio::test]
async fn bare_line_feed_in_a_command_closes_the_session() {
    let s = setup().await;
    let mut c = s.connect(ListenerTls::None).await;
    c.write(b"NOOP\nNOOP\r\n").await;
    let r = c.read().await;
    assert!(r.code >= 500, "{r:?}");
    c.assert_closed().await;
}

#[tokio::test]
async fn a_message_is_queued_before_its_250() {
    let s = setup().await;
    let mut c = s.logged_in().await;
    c.envelope().await;
    c.send("DATA").await.assert_code("354");
    c.write(message("m1").as_bytes()).await;
    let done = c.send(".").await;
    done.assert_code("250 2.0.0");
    let id = done.lines[0].rsplit(' ').next().unwrap_or_default();
    let store = s.shared.queue.store();
    let queued = store.get(id).await.expect("read store");
    assert!(queued.is_some(), "{id} is not in the queue");
    let content = store.content(id).await.expect("read store");
    let content = String::from_utf8(content.unwrap_or_default()).expect("UTF-8");
    assert!(content.contains("Subject: test m1"), "{content}");
}

#[tokio::test]
async fn pipelined_commands_are_answered_in_order() {
    let s = setup().await;
    let mut c = s.logged_in().await;
    c.write(
        b"MAIL FROM:<app@example.com>\r\nRCPT TO:<a@example.org>\r\n\
          RCPT TO:<b@example.org>\r\nDATA\r\n",
    )
    .await;
    for expected in ["250 2.1.0", "250 2.1.5", "250 2.1.5", "354"] {
        c.read().await.assert_code(expected);
    }
    let mut rest = message("m2");
    rest.push_str(".\r\nQUIT\r\n");
    c.write(rest.as_bytes()).await;
    c.read().await.assert_code("250 2.0.0");
    c.read().await.assert_code("221 2.0.0");
    c.assert_closed().await;
}

#[tokio::test]
async fn message_over_the_limit_is_refused_after_data() {
    let s = setup().await;
    let mut c = s.logged_in().await;
    c.envelope().await;
    c.send("DATA").await.assert_code("354");
    let mut big = message("big");
    big.push_str(&"0123456789abcdef\r\n".repeat(MAX_SIZE / 16));
    c.write(big.as_bytes()).await;
    c.send(".").await.assert_code("552 5.3.4");
    // The transaction is over; the session is not.
    c.send("NOOP").await.assert_code("250 2.0.0");
}

#[tokio::test]
async fn from_header_outside_the_account_is_refused() {
    let s = setup().await;
    let mut c = s.logged_in().await;
    c.envelope().await;
    c.send("DATA").await.assert_code("354");
    let forged = message("m3").replace("From: <app@example.com>", "From: <boss@elsewhere.example>");
    c.write(forged.as_bytes()).await;
    c.send(".").await.assert_code("553 5.7.1");
}

#[tokio::test]
async fn recipient_checks_at_rcpt() {
    use crate::store::suppression::{Suppression, SuppressionSource};
    let s = setup().await;
    let listed = Suppression {
        address: "gone@example.org".into(),
        source: SuppressionSource::Admin,
        reason: "left".into(),
        detail: None,
        created_at: crate::store::now_ms(),
        expires_at: None,
    };
    let store = s.shared.queue.store();
    store.suppress(listed, true).await.expect("suppress");
    let mut c = s.logged_in().await;
    c.send("MAIL FROM:<app@example.com>")
        .await
        .assert_code("250 2.1.0");
    c.send("RCPT TO:<gone@example.org>")
        .await
        .assert_code("550 5.1.1");
    // Non-ASCII needs SMTPUTF8 on MAIL.
    c.send("RCPT TO:<pär@example.org>")
        .await
        .assert_code("553 5.6.7");
    c.send("RCPT TO:<ok@example.org>")
        .await
        .assert_code("250 2.1.5");
    c.send("RSET").await.assert_code("250 2.0.0");
    // The null sender only for reports to the system address.
    c.send("MAIL FROM:<>").await.assert_code("250 2.1.0");
    c.send("RCPT TO:<ok@example.org>")
        .await
        .assert_code("550 5.7.1");
}

#[tokio::test]
async fn too_many_errors_close_the_session() {
    let s = setup_with(|c| c.limits.max_errors_per_session = 3).await;
    let mut c = s.connect(ListenerTls::None).await;
    c.send("FROB").await.assert_code("500 5.5.1");
    c.send("FROB").await.assert_code("500 5.5.1");
    c.write(b"FROB\r\n").await;
    c.read().await.assert_code("500 5.5.1");
    c.read().await.assert_code("421 4.7.0");
    c.assert_closed().await;
}
