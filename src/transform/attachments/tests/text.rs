//! How the block lands in an existing text part: charsets, transfer
//! encodings, the place in an HTML body, escaping.

use super::*;

fn inserted(raw: &[u8], out: &[u8]) -> Vec<u8> {
    // Everything up to the cut PDF is unchanged; what the block added
    // sits between the text body and the close delimiter.
    let body_end =
        memchr::memmem::find(raw, b"\r\n--b1\r\nContent-Type: application/pdf").expect("pdf");
    assert_eq!(&out[..body_end], &raw[..body_end]);
    let close = memchr::memmem::rfind(out, b"\r\n--b1--").expect("close");
    out[body_end..close].to_vec()
}

#[test]
fn seven_bit_text_gets_ascii_only() {
    let raw = simple(
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit",
        "Guten Tag.",
    );
    let (_, out) = check_extraction("7bit", &raw, &ExtractOptions::default());
    let added = inserted(&raw, &out);
    assert!(added.is_ascii());
    let added = String::from_utf8(added).expect("ascii");
    assert!(added.starts_with("\r\n\r\n----"));
    assert!(added.contains("passwortgeschuetzt"));
    assert!(added.contains("Download ueber den Link, gueltig bis"));
    // No charset at all: us-ascii, the same.
    let raw = simple("Content-Type: text/plain", "Hallo");
    let (_, out) = check_extraction("no charset", &raw, &ExtractOptions::default());
    assert!(inserted(&raw, &out).is_ascii());
}

#[test]
fn eight_bit_charsets() {
    // Latin-1: single bytes for the umlauts.
    let raw = simple(
        "Content-Type: text/plain; charset=ISO-8859-1\r\nContent-Transfer-Encoding: 8bit",
        "Gr\u{fc}\u{df}e",
    );
    let (_, out) = check_extraction("latin1", &raw, &ExtractOptions::default());
    let added = inserted(&raw, &out);
    assert!(contains(&added, b"g\xfcltig bis"));
    assert!(contains(&added, b"passwortgesch\xfctzt"));
    // UTF-8: as is.
    let raw = simple(
        "Content-Type: text/plain; charset=\"UTF-8\"\r\nContent-Transfer-Encoding: 8bit",
        "Grüße",
    );
    let (_, out) = check_extraction("utf8", &raw, &ExtractOptions::default());
    assert!(contains(&inserted(&raw, &out), "gültig bis".as_bytes()));
    // 8bit without a charset, and charsets we do not write: ASCII.
    for headers in [
        "Content-Type: text/plain\r\nContent-Transfer-Encoding: 8bit",
        "Content-Type: text/plain; charset=koi8-r\r\nContent-Transfer-Encoding: 8bit",
        "Content-Type: text/plain; charset=iso-2022-jp\r\nContent-Transfer-Encoding: quoted-printable",
    ] {
        let raw = simple(headers, "Text");
        let (_, out) = check_extraction(headers, &raw, &ExtractOptions::default());
        let added = inserted(&raw, &out);
        assert!(added.is_ascii() && !contains(&added, b"=C3"), "{headers}");
        assert!(contains(&added, b"gueltig"), "{headers}");
    }
}

#[test]
fn base64_plain_text_is_reencoded() {
    let raw = simple(
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64",
        &b64_lines("Grüße aus dem Amt\r\n".as_bytes()),
    );
    let (_, out) = check_extraction("b64 plain", &raw, &ExtractOptions::default());
    let (plain, _) = bodies(&out);
    assert!(plain.starts_with("Grüße aus dem Amt\r\n\r\n-----"));
    assert!(plain.contains("passwortgeschützt"));
}

#[test]
fn qp_html_block_goes_before_body_close() {
    let html = "<html><body><p>Gr=C3=BC=C3=9Fe</p>\r\n<p>Eine lange Zeile, die umgebrochen werden muss, damit sie nicht zu lang =\r\nwird.</p></BODY></html>";
    let raw = simple(
        "Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable",
        html,
    );
    let (_, out) = check_extraction("qp html", &raw, &ExtractOptions::default());
    assert!(contains(&out, b"<p>Eine lange Zeile, die umgebrochen werden muss, damit sie nicht zu lang =\r\nwird.</p>=\r\n<div"));
    let (_, decoded) = bodies(&out);
    assert!(decoded.contains("wird.</p><div class=\"schleuse-dokumente\">"));
    assert!(decoded.ends_with("</div>\r\n</BODY></html>"));
    // No </body>: the block goes at the end.
    let raw = simple(
        "Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 7bit",
        "<p>Hallo</p>",
    );
    let (_, out) = check_extraction("no body tag", &raw, &ExtractOptions::default());
    let (_, decoded) = bodies(&out);
    assert!(decoded.starts_with("<p>Hallo</p>\r\n<div class="));
    assert!(decoded.ends_with("</div>"));
}

#[test]
fn file_names_are_escaped_in_html() {
    let raw = b"From: a@example.org\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\nContent-Type: text/html; charset=us-ascii\r\n\r\n<html><body><p>Hi</p></body></html>\r\n--b1\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename*=utf-8''%3Cscript%3E%26%22x.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b1--\r\n".to_vec();
    let (docs, out) = check_extraction("escape", &raw, &ExtractOptions::default());
    assert_eq!(docs[0].file_name, "<script>&\"x.pdf");
    assert!(!contains(&out, b"<script>"));
    assert!(contains(&out, b"&lt;script&gt;&amp;&quot;x.pdf</a>"));
    // HTML-only message: a 7bit HTML part gets the ASCII block only,
    // no text part is added.
    let msg = MessageParser::default().parse(&out).expect("parses");
    assert_eq!(msg.parts.len(), 2);
}

#[test]
fn unknown_transfer_encoding_gets_a_new_text_part() {
    let raw = simple(
        "Content-Type: text/plain\r\nContent-Transfer-Encoding: x-uuencode",
        "begin 644 x\r\nend",
    );
    let (_, out) = check_extraction("x-uuencode", &raw, &ExtractOptions::default());
    assert!(contains(&out, b"begin 644 x\r\nend\r\n--b1--"));
    let msg = MessageParser::default().parse(&out).expect("parses");
    assert!(msg.parts[1].is_content_type("text", "plain"));
    assert_eq!(
        msg.parts[1].content_transfer_encoding(),
        Some("quoted-printable")
    );
    // UTF-16 HTML, no plain text: the HTML stays as it is, the block
    // goes into a new text part.
    let raw = simple(
        "Content-Type: text/html; charset=utf-16\r\nContent-Transfer-Encoding: base64",
        "//48AGgA",
    );
    let (_, out) = extract(&raw, &ExtractOptions::default());
    assert!(contains(&out, b"//48AGgA\r\n--b1--"));
    assert!(matches!(
        scan(&out, &ExtractOptions::default()),
        Ok(Scan::Clean)
    ));
    let (plain, _) = bodies(&out);
    assert_eq!(count(&plain, &url(0)), 1);
}
