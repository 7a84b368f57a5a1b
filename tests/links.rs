//! Documents never travel as attachments (SPEC §7): they are taken out,
//! stored encrypted, and reached through the link service. These tests run
//! the real binary, relay to the aiosmtpd stand-in and download over HTTP.

mod common;

use std::time::Duration;

use common::*;

const PDF: &[u8] = b"%PDF-1.4\n% schleuse test document\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n";

/// A PDF-like document of `len` bytes that contains a recognisable phrase
/// (to look for in the document store) and binary bytes.
fn document(len: usize) -> Vec<u8> {
    let mut d = PDF.to_vec();
    d.extend_from_slice(b"Bescheid fuer Max Mustermann, Schuelerbefoerderung 2026\n");
    fill_pseudo_random(&mut d, 0x1234_5678, len);
    d
}

const QP_TEXT: &str = "Sehr geehrte Familie M=C3=BCller,=0D=0A\r\nanbei der Bescheid zur Sch=C3=BClerbef=C3=B6rderung. Mit freundlichen Gr=C3=BC=\r\n=C3=9Fen\r\n";
const HTML: &str = "<!DOCTYPE html><html><body><p>Sehr geehrte Familie M&uuml;ller,</p><p>anbei der Bescheid.</p></body></html>\r\n";

/// multipart/mixed { alternative { text/plain QP, text/html base64 }, PDF }.
fn message_with_pdf(extra_headers: &str, pdf: &[u8]) -> Vec<u8> {
    let html_b64 = wrap76(&base64(HTML.as_bytes()));
    let pdf_b64 = wrap76(&base64(pdf));
    format!(
        "From: Sachbearbeitung <app@example.com>\r\n\
         To: eltern@example.org\r\n\
         Subject: Bescheid Schuelerbefoerderung\r\n\
         Message-ID: <links-{n}@example.com>\r\n\
         MIME-Version: 1.0\r\n\
         {extra_headers}\
         Content-Type: multipart/mixed; boundary=\"outer\"\r\n\
         \r\n\
         --outer\r\n\
         Content-Type: multipart/alternative; boundary=\"alt\"\r\n\
         \r\n\
         --alt\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: quoted-printable\r\n\
         \r\n\
         {QP_TEXT}\
         --alt\r\n\
         Content-Type: text/html; charset=utf-8\r\n\
         Content-Transfer-Encoding: base64\r\n\
         \r\n\
         {html_b64}\r\n\
         --alt--\r\n\
         --outer\r\n\
         Content-Type: application/pdf; name=\"Bescheid M=?utf-8?q?=C3=BC?=ller.pdf\"\r\n\
         Content-Disposition: attachment; filename*=utf-8''Bescheid%20M%C3%BCller.pdf\r\n\
         Content-Transfer-Encoding: base64\r\n\
         \r\n\
         {pdf_b64}\r\n\
         --outer--\r\n",
        n = pdf.len(),
    )
    .into_bytes()
}

fn world(f: impl FnOnce(&mut GatewayConf)) -> World {
    World::relay_with(UpstreamOpts::default(), f)
}

fn link_port(w: &World) -> u16 {
    w.env.conf().link_port
}

fn send_one(w: &World, message: &[u8]) -> Delivered {
    let mut c = w.client();
    let r = c.send("app@example.com", &["eltern@example.org"], message);
    assert_eq!(r.code, 250, "{r}\n{}", w.gw.log());
    c.quit();
    let got = w.up().wait_for(1, Duration::from_secs(30));
    assert_eq!(got.len(), 1, "{}", w.gw.log());
    got.into_iter().next().expect("one message")
}

fn download(port: u16, token: &str, password: Option<&str>) -> HttpResponse {
    let fields: Vec<(&str, &str)> = password.map(|p| ("password", p)).into_iter().collect();
    http_post_form(port, &format!("/d/{token}"), &[], &fields).expect("link service answers")
}

fn plain_and_html(eml: &[u8]) -> (String, String) {
    let parsed = mail_parser::MessageParser::new()
        .parse(eml)
        .expect("relayed message parses");
    (
        parsed
            .body_text(0)
            .map(|t| t.into_owned())
            .unwrap_or_default(),
        parsed
            .body_html(0)
            .map(|t| t.into_owned())
            .unwrap_or_default(),
    )
}

#[test]
fn a_pdf_becomes_a_link_and_the_text_parts_stay_as_sent() {
    let w = world(|_| {});
    let pdf = document(300 * 1024);
    let message = message_with_pdf("", &pdf);
    let relayed = send_one(&w, &message);
    let text = relayed.text();

    // The document's bytes are gone (several of its base64 lines checked).
    let pdf_b64 = wrap76(&base64(&pdf));
    for line in pdf_b64.lines().step_by(500).take(8) {
        assert!(!text.contains(line.trim()), "attachment bytes relayed");
    }
    // The quoted-printable text part is untouched byte for byte; the base64
    // HTML part decodes to the original HTML with the block before </body>.
    // The part body ends before the CRLF that belongs to the next delimiter.
    let qp_body = QP_TEXT.trim_end_matches("\r\n");
    assert!(text.contains(qp_body), "QP text part changed:\n{text}");
    let (plain, html) = plain_and_html(&relayed.eml);
    let port = link_port(&w);
    let in_plain = link_tokens(&plain, port);
    let in_html = link_tokens(&html, port);
    assert_eq!(in_plain.len(), 1, "one link in the text part:\n{plain}");
    assert_eq!(in_html, in_plain, "the same link in the HTML part:\n{html}");
    assert!(plain.contains("Bescheid Müller.pdf"), "{plain}");
    assert!(html.contains("anbei der Bescheid.</p>"), "{html}");
    let block_at = html.find(&in_html[0]).expect("link in html");
    let body_end = html.rfind("</body>").expect("</body> kept");
    assert!(block_at < body_end, "the block goes before </body>");
    assert!(
        plain.contains("gültig bis"),
        "German block by default:\n{plain}"
    );

    // The page, then the download: exact bytes, safe headers.
    let page = http_get(port, &format!("/d/{}", in_plain[0]), None).expect("page");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Bescheid Müller.pdf"));
    assert!(
        !page.body.contains("type=\"password\""),
        "no password asked"
    );
    let got = download(port, &in_plain[0], None);
    assert_eq!(got.status, 200, "{}", got.body);
    assert!(
        got.bytes == pdf,
        "downloaded bytes differ from the attachment"
    );
    assert_eq!(got.header("content-type"), Some("application/pdf"));
    let disposition = got.header("content-disposition").unwrap_or_default();
    assert!(disposition.starts_with("attachment"), "{disposition}");
    assert!(
        disposition.contains("filename*=UTF-8''Bescheid%20M%C3%BCller.pdf"),
        "{disposition}"
    );
    assert_eq!(got.header("x-content-type-options"), Some("nosniff"));
    assert!(got.header("content-security-policy").is_some());

    // A copy of the data directory reveals nothing: the document store holds
    // ciphertext only, and the database no token.
    let docs = w.env.data_dir.join("documents");
    let files: Vec<_> = std::fs::read_dir(&docs)
        .expect("document dir")
        .filter_map(|e| e.ok())
        .collect();
    assert_eq!(files.len(), 1);
    let stored = std::fs::read(files[0].path()).expect("stored document");
    assert!(!contains(&stored, b"Max Mustermann"), "plaintext on disk");
    assert!(!contains(&stored, &pdf[..64]), "plaintext on disk");
    // The relayed message (with the token) was queued until delivered; after
    // delivery it is deleted (secure_delete) and the WAL emptied.
    let token = in_plain[0].as_bytes();
    let clean = wait_until(Duration::from_secs(15), || {
        let db = std::fs::read(w.env.data_dir.join("queue.db")).unwrap_or_default();
        let wal = std::fs::read(w.env.data_dir.join("queue.db-wal")).unwrap_or_default();
        (!contains(&db, token) && !contains(&wal, token)).then_some(())
    });
    assert!(
        clean.is_some(),
        "the link token stays in the queue files after delivery"
    );
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_password_protects_the_document_and_wrong_guesses_are_limited() {
    let w = world(|c| {
        c.attachments_extra = "password_attempts_per_link = 3\n".into();
    });
    let pdf = document(20_000);
    let message = message_with_pdf("X-Schleuse-Link-Password: Sommer-2026\r\n", &pdf);
    let relayed = send_one(&w, &message);
    assert!(
        relayed.header("X-Schleuse-Link-Password").is_none(),
        "the password header must not travel"
    );
    assert!(!relayed.text().contains("Sommer-2026"));
    let port = link_port(&w);
    let (plain, _) = plain_and_html(&relayed.eml);
    assert!(plain.contains("passwortgeschützt"), "{plain}");
    let token = link_tokens(&plain, port).remove(0);

    let page = http_get(port, &format!("/d/{token}"), None).expect("page");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("type=\"password\""), "{}", page.body);
    assert_eq!(
        download(port, &token, None).status,
        400,
        "no password: asked for one"
    );
    assert_eq!(download(port, &token, Some("Winter-2026")).status, 403);
    let right = download(port, &token, Some("Sommer-2026"));
    assert_eq!(right.status, 200);
    assert!(right.bytes == pdf);
    // Three wrong guesses in a row are allowed (the right one started the
    // count afresh); then even the right one waits.
    assert_eq!(download(port, &token, Some("guess-1")).status, 403);
    assert_eq!(download(port, &token, Some("guess-2")).status, 403);
    assert_eq!(download(port, &token, Some("guess-3")).status, 403);
    let limited = download(port, &token, Some("Sommer-2026"));
    assert_eq!(limited.status, 429, "{}", limited.body);
    assert!(limited.header("retry-after").is_some());
}

/// A download attempt as if from `client`, through the trusted proxy
/// (loopback) that names it in `X-Forwarded-For`.
fn download_from(port: u16, token: &str, password: &str, client: &str) -> HttpResponse {
    let headers = [("X-Forwarded-For".to_string(), client.to_string())];
    http_post_form(
        port,
        &format!("/d/{token}"),
        &headers,
        &[("password", password)],
    )
    .expect("link service answers")
}

#[test]
fn wrong_guesses_survive_a_restart_and_do_not_lock_out_the_recipient() {
    let mut w = world(|c| {
        c.attachments_extra =
            "password_attempts_per_link = 3\npassword_ceiling_per_link = 6\n".into();
    });
    let message = message_with_pdf("X-Schleuse-Link-Password: Sommer-2026\r\n", &document(4000));
    let relayed = send_one(&w, &message);
    let port = link_port(&w);
    let token = link_tokens(&plain_and_html(&relayed.eml).0, port).remove(0);
    let (stranger, recipient) = ("203.0.113.9", "198.51.100.1");

    for n in 1..=3 {
        let r = download_from(port, &token, &format!("guess-{n}"), stranger);
        assert_eq!(r.status, 403, "{}", r.body);
    }
    assert_eq!(download_from(port, &token, "guess-4", stranger).status, 429);

    // The budgets are in the store: a restart gives no fresh guesses.
    w.gw.kill();
    w.gw = Gateway::start(&w.env, "gateway-restarted.log");
    let r = download_from(port, &token, "guess-5", stranger);
    assert_eq!(r.status, 429, "a restart reset the limits\n{}", w.gw.log());

    // The recipient, from another address, is not locked out.
    let r = download_from(port, &token, "Sommer-2026", recipient);
    assert_eq!(r.status, 200, "{}\n{}", r.body, w.gw.log());

    // A second stranger's three guesses reach the link's ceiling (six an
    // hour from all clients; the recipient's right one did not count):
    // now everyone waits, a fresh client with the right password too.
    for n in 1..=3 {
        let r = download_from(port, &token, &format!("other-{n}"), "203.0.113.77");
        assert_eq!(r.status, 403, "{}", r.body);
    }
    let r = download_from(port, &token, "Sommer-2026", "192.0.2.7");
    assert_eq!(r.status, 429, "{}", r.body);
    let retry: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!(
        (1..=600).contains(&retry),
        "one more every 10 minutes: {retry}"
    );
}

#[test]
fn expired_unknown_and_revoked_links() {
    let w = world(|c| {
        c.attachments_extra = "purge_interval = \"1s\"\n".into();
    });
    let port = link_port(&w);
    let mut c = w.client();
    let short = message_with_pdf("X-Schleuse-Link-Expiry: 2s\r\n", &document(5000));
    assert_eq!(
        c.send("app@example.com", &["eltern@example.org"], &short)
            .code,
        250
    );
    let long = message_with_pdf("", &document(6000));
    assert_eq!(
        c.send("app@example.com", &["eltern@example.org"], &long)
            .code,
        250
    );
    c.quit();
    let got = w.up().wait_for(2, Duration::from_secs(30));
    assert_eq!(got.len(), 2);
    let token_of = |len: usize| {
        let d = got
            .iter()
            .find(|d| d.text().contains(&format!("<links-{len}@example.com>")))
            .expect("relayed");
        link_tokens(&plain_and_html(&d.eml).0, port).remove(0)
    };
    let (short_token, long_token) = (token_of(5000), token_of(6000));

    // Unknown and malformed tokens: 404.
    let random = "A".repeat(43);
    assert_eq!(
        http_get(port, &format!("/d/{random}"), None)
            .expect("get")
            .status,
        404
    );
    assert_eq!(
        http_get(port, "/d/../../etc/passwd", None)
            .expect("get")
            .status,
        404
    );

    // Expiry: 410 once past, and the purge deletes the file.
    let gone = wait_until(Duration::from_secs(15), || {
        let r = http_get(port, &format!("/d/{short_token}"), None).ok()?;
        (r.status == 410).then_some(r)
    });
    assert!(gone.is_some(), "expired link still served\n{}", w.gw.log());
    assert_eq!(download(port, &short_token, None).status, 410);
    let docs = w.env.data_dir.join("documents");
    let one_left = wait_until(Duration::from_secs(15), || {
        (std::fs::read_dir(&docs).ok()?.count() == 1).then_some(())
    });
    assert!(one_left.is_some(), "expired document not purged");

    // Revocation through the CLI, on the running gateway.
    let list = w.env.cli(&["links", "list"], None);
    let listing = output_text(&list);
    assert!(list.status.success(), "{listing}");
    assert!(listing.contains("Bescheid Müller.pdf"), "{listing}");
    let id = listing
        .lines()
        .find(|l| l.contains("active"))
        .and_then(|l| l.split_whitespace().next())
        .expect("a link id")
        .to_owned();
    let json = output_text(&w.env.cli(&["links", "list", "--all", "--json"], None));
    assert!(json.contains("\"expired\""), "{json}");
    let revoked = w.env.cli(&["links", "revoke", &id], None);
    assert!(revoked.status.success(), "{}", output_text(&revoked));
    assert_eq!(
        http_get(port, &format!("/d/{long_token}"), None)
            .expect("get")
            .status,
        410
    );
    assert_eq!(
        std::fs::read_dir(&docs).expect("dir").count(),
        0,
        "revoked file kept"
    );
    let again = w.env.cli(&["links", "revoke", "nosuchlink"], None);
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("error: no link with id nosuchlink"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_required_password_is_generated_and_sent_to_the_staff_member_only() {
    let w = world(|c| {
        c.attachments_extra = "password = \"required\"\n".into();
    });
    let pdf = document(8000);
    let mut c = w.client();
    let r = c.send(
        "app@example.com",
        &["eltern@example.org"],
        &message_with_pdf("", &pdf),
    );
    assert_eq!(r.code, 250, "{r}");
    c.quit();
    let got = w.up().wait_for(2, Duration::from_secs(30));
    assert_eq!(got.len(), 2, "message and notice\n{}", w.gw.log());
    let (to_parents, notice): (Vec<_>, Vec<_>) = got
        .into_iter()
        .partition(|d| d.rcpt_tos.iter().any(|r| r.contains("eltern@")));
    let (to_parents, notice) = (&to_parents[0], &notice[0]);
    assert_eq!(notice.rcpt_tos, vec!["app@example.com".to_string()]);
    let notice_text = plain_and_html(&notice.eml).0;
    let password = notice_text
        .lines()
        .find_map(|l| l.strip_prefix("Passwort: "))
        .expect("the notice names the password")
        .trim()
        .to_owned();
    assert!(
        !to_parents.text().contains(&password),
        "password sent to the recipient"
    );
    let port = link_port(&w);
    let token = link_tokens(&plain_and_html(&to_parents.eml).0, port).remove(0);
    assert_eq!(download(port, &token, None).status, 400);
    let ok = download(port, &token, Some(&password));
    assert_eq!(ok.status, 200);
    assert!(ok.bytes == pdf);
}

#[test]
fn policies_reject_attachments_and_signed_mail_clearly() {
    let w = world(|c| c.attachments_mode = "reject");
    let mut c = w.client();
    let r = c.send(
        "app@example.com",
        &["eltern@example.org"],
        &message_with_pdf("", PDF),
    );
    assert!(r.is(550, "5.7.1"), "{r}");
    // A message without attachments still passes.
    let plain = simple_message("app@example.com", "eltern@example.org", "no-docs");
    assert_eq!(
        c.send("app@example.com", &["eltern@example.org"], &plain)
            .code,
        250
    );
    c.quit();

    let w = world(|_| {});
    let signed = format!(
        "From: app@example.com\r\nTo: eltern@example.org\r\nSubject: signed\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\"s\"\r\n\r\n\
         --s\r\nContent-Type: multipart/mixed; boundary=\"m\"\r\n\r\n--m\r\nContent-Type: text/plain\r\n\r\nhello\r\n\
         --m\r\nContent-Type: application/pdf; name=\"a.pdf\"\r\nContent-Disposition: attachment; filename=\"a.pdf\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{}\r\n--m--\r\n\
         --s\r\nContent-Type: application/pkcs7-signature; name=\"smime.p7s\"\r\nContent-Transfer-Encoding: base64\r\n\r\nAAAA\r\n--s--\r\n",
        base64(PDF)
    );
    let mut c = w.client();
    let r = c.send(
        "app@example.com",
        &["eltern@example.org"],
        signed.as_bytes(),
    );
    assert!(r.is(554, "5.7.1"), "{r}");
    let r = c.send(
        "app@example.com",
        &["eltern@example.org"],
        &message_with_pdf("X-Schleuse-Link-Expiry: soon\r\n", PDF),
    );
    assert!(r.is(554, "5.6.0"), "{r}");
    assert!(r.text().contains("X-Schleuse-Link-Expiry"), "{r}");
    c.quit();
}

#[test]
fn a_message_that_is_only_an_attachment_gets_a_text_part() {
    let w = world(|_| {});
    let png = document(4000);
    let message = format!(
        "From: app@example.com\r\nTo: eltern@example.org\r\nSubject: Foto\r\nMIME-Version: 1.0\r\n\
         Content-Type: image/png; name=\"Fahrplan.png\"\r\nContent-Disposition: attachment; filename=\"Fahrplan.png\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{}\r\n",
        wrap76(&base64(&png))
    );
    let relayed = send_one(&w, message.as_bytes());
    let (plain, _) = plain_and_html(&relayed.eml);
    let port = link_port(&w);
    let token = link_tokens(&plain, port);
    assert_eq!(token.len(), 1, "{plain}");
    assert!(plain.contains("Fahrplan.png"));
    assert_eq!(relayed.header("Subject").as_deref(), Some("Foto"));
    let got = download(port, &token[0], None);
    assert!(got.bytes == png);
}

#[test]
fn a_document_acknowledged_before_kill_9_is_still_served_after_restart() {
    let mut w = world(|_| {});
    let pdf = document(50_000);
    let relayed = send_one(&w, &message_with_pdf("", &pdf));
    let port = link_port(&w);
    let token = link_tokens(&plain_and_html(&relayed.eml).0, port).remove(0);
    w.gw.kill();
    w.gw = w.env.start_gateway();
    let got = wait_until(Duration::from_secs(15), || {
        let r = http_post_form(port, &format!("/d/{token}"), &[], &[]).ok()?;
        (r.status == 200).then_some(r)
    })
    .expect("served after restart");
    assert!(got.bytes == pdf);
}

#[test]
fn the_staff_member_hears_of_the_first_download_only() {
    let w = world(|c| {
        c.attachments_extra = "notify_first_download = true\n".into();
    });
    let pdf = document(3000);
    let relayed = send_one(&w, &message_with_pdf("", &pdf));
    let port = link_port(&w);
    let token = link_tokens(&plain_and_html(&relayed.eml).0, port).remove(0);
    // Looking at the page is not a download.
    assert_eq!(
        http_get(port, &format!("/d/{token}"), None)
            .expect("page")
            .status,
        200
    );
    assert!(download(port, &token, None).bytes == pdf);
    assert!(download(port, &token, None).bytes == pdf);
    let got = w.up().wait_for(2, Duration::from_secs(30));
    assert_eq!(got.len(), 2, "{}", w.gw.log());
    let notice = &got[1];
    assert_eq!(notice.rcpt_tos, vec!["app@example.com".to_string()]);
    let text = plain_and_html(&notice.eml).0;
    assert!(text.contains("Bescheid Müller.pdf"), "{text}");
    assert!(!text.contains(&token), "the notice must not carry the link");
    // The second download sends nothing more.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(w.up().messages().len(), 2);
    let json = output_text(&w.env.cli(&["links", "list", "--json"], None));
    assert!(json.contains("\"downloads\": 2"), "{json}");
}

#[test]
fn deleting_a_queued_message_revokes_its_links() {
    let mut conf = GatewayConf::outbox();
    conf.sending = "paused";
    let w = World::without_upstream(conf);
    let mut c = w.client();
    let r = c.send(
        "app@example.com",
        &["eltern@example.org"],
        &message_with_pdf("", PDF),
    );
    assert_eq!(r.code, 250);
    c.quit();
    let id = r.last_word();
    let listed = output_text(&w.env.cli(&["links", "list"], None));
    assert!(listed.contains(&id), "{listed}");
    let deleted = w.env.cli(&["queue", "delete", &id], None);
    assert!(deleted.status.success(), "{}", output_text(&deleted));
    let after = output_text(&w.env.cli(&["links", "list", "--all"], None));
    assert!(after.contains("revoked"), "{after}");
}
