//! Message shapes written for one case each: which parts go, what the
//! structure looks like afterwards, and what is sealed.

use mail_parser::decoders::quoted_printable::quoted_printable_decode;

use super::super::ExtractError;
use super::super::splice::trim_crlf;
use super::*;

const QP_BODY: &str = "Sehr geehrte Frau M=C3=BCller,\r\n\r\nanbei der Bescheid f=C3=BCr Ihr Kind. Diese Zeile ist l=C3=A4nger und wird=\r\n umgebrochen.\r\n\r\nMit freundlichen Gr=C3=BC=C3=9Fen\r\nIhr Landratsamt";
const HTML: &str = "<html><head><meta charset=\"utf-8\"></head><body>\r\n<p>Sehr geehrte Frau Müller,</p>\r\n<p>anbei der Bescheid.</p>\r\n</body>\r\n</html>\r\n";

fn handwritten(pdf: &[u8]) -> Vec<u8> {
    format!(
        "From: Amt <amt@landkreis.example>\r\nTo: eltern@example.org\r\nSubject: Ihr Bescheid\r\nDate: Mon, 2 Mar 2026 10:00:00 +0100\r\nMessage-ID: <1@landkreis.example>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"mix\"\r\n\r\nThis is a multi-part message in MIME format.\r\n--mix\r\nContent-Type: multipart/alternative; boundary=\"alt\"\r\n\r\n--alt\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n{QP_BODY}\r\n--alt\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--alt--\r\n\r\n--mix\r\nContent-Type: application/pdf; name=\"Bescheid.pdf\"\r\nContent-Disposition: attachment; filename=\"Bescheid.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--mix--\r\n",
        b64_lines(HTML.as_bytes()),
        b64_lines(pdf),
    )
    .into_bytes()
}

#[test]
fn handwritten_alternative_with_pdf() {
    let pdf = pdf_bytes(5000);
    let raw = handwritten(&pdf);
    let mut plan = plan_of(&raw, &ExtractOptions::default());
    let docs = std::mem::take(&mut plan.documents);
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].file_name, "Bescheid.pdf");
    assert_eq!(docs[0].content_type, "application/pdf");
    assert_eq!(docs[0].data, pdf);
    let block = block_for(&docs);
    let out = rewrite(&raw, &plan, &block).expect("rewrite");
    check_extraction("handwritten", &raw, &ExtractOptions::default());

    // The QP body is untouched, byte for byte, and so is everything up
    // to its end (headers, preamble, part headers).
    let qp_end = memchr::memmem::find(&raw, QP_BODY.as_bytes()).expect("qp") + QP_BODY.len();
    assert_eq!(&out[..qp_end], &raw[..qp_end]);
    // The HTML decodes to the original with the block before </body>.
    let (plain, html) = bodies(&out);
    let at = HTML.find("</body>").expect("body");
    assert_eq!(
        html,
        format!("{}{}{}", &HTML[..at], block.html(), &HTML[at..])
    );
    // The plain text decodes to the original, a blank line, the block.
    let orig_plain =
        String::from_utf8(quoted_printable_decode(QP_BODY.as_bytes()).expect("qp decodes"))
            .expect("utf-8");
    assert_eq!(
        plain,
        format!("{orig_plain}\r\n\r\n{}", trim_crlf(&block.plain()))
    );
    assert!(plain.contains("gültig bis 06.12.2026, passwortgeschützt"));
    // The PDF is gone, its part header too; the structure is intact.
    assert!(!contains(&out, b"Bescheid.pdf\"\r\n"));
    assert!(!contains(&out, b"application/pdf"));
    assert!(out.ends_with(b"--alt--\r\n\r\n--mix--\r\n"));
    assert!(!contains(&out, b"--mix\r\n\r\n"));
    // QP lines stay within 76 characters.
    for line in out.split(|&b| b == b'\n') {
        assert!(line.len() <= 78, "{}", String::from_utf8_lossy(line));
    }
}

const SINGLE_HEADERS: &str = "Received: from app.landkreis.example by gw; Mon, 2 Mar 2026 10:00:00 +0100\r\nFrom: Scanner <scan@landkreis.example>\r\nTo: amt@landkreis.example\r\nSubject: Scan vom Kopierer\r\nContent-Type: application/pdf;\r\n\tname=\"scan 0815.pdf\"\r\nDate: Mon, 2 Mar 2026 10:00:00 +0100\r\nContent-Transfer-Encoding: base64\r\nMIME-Version: 1.0\r\nContent-Disposition: attachment; filename=\"scan 0815.pdf\"\r\nX-Custom: bleibt   so\r\n";

#[test]
fn single_part_attachment_becomes_text() {
    let pdf = pdf_bytes(3000);
    let raw = format!("{SINGLE_HEADERS}\r\n{}\r\n", b64_lines(&pdf)).into_bytes();
    let (docs, out) = check_extraction("single", &raw, &ExtractOptions::default());
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].file_name, "scan 0815.pdf");
    assert_eq!(docs[0].data, pdf);
    let text = String::from_utf8(out.clone()).expect("ascii output");
    let (head, body) = text.split_once("\r\n\r\n").expect("header block");
    let kept = |h: &str| -> Vec<String> {
        let mut fields: Vec<String> = Vec::new();
        for line in h.split("\r\n") {
            if line.starts_with([' ', '\t']) {
                if let Some(last) = fields.last_mut() {
                    last.push_str(line);
                }
            } else {
                fields.push(line.to_string());
            }
        }
        fields
            .into_iter()
            .filter(|f| !f.to_ascii_lowercase().starts_with("content-"))
            .collect()
    };
    assert_eq!(kept(head), kept(SINGLE_HEADERS.trim_end()));
    assert!(head.ends_with(
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable"
    ));
    assert_eq!(count(head, "Content-"), 2);
    let msg = MessageParser::default().parse(&out).expect("parses");
    assert!(msg.root_part().is_content_type("text", "plain"));
    assert!(
        msg.body_text(0)
            .is_some_and(|t| t.contains(&url(0)) && t.contains("scan 0815.pdf"))
    );
    assert!(body.is_ascii());
}

#[test]
fn single_part_without_mime_version_gets_one() {
    // A raw 8-bit header name must not trip the Content-* match.
    let raw = "From: a@example.org\r\nSubject: x\r\nContent\u{e4}x: y\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n";
    let (docs, out) = check_extraction("png", raw.as_bytes(), &ExtractOptions::default());
    assert_eq!(docs[0].file_name, "dokument-1.png");
    assert_eq!(docs[0].data, b"\x89PNG\r\n\x1a\n");
    let head = "From: a@example.org\r\nSubject: x\r\nContent\u{e4}x: y\r\nMIME-Version: 1.0\r\nContent-Type: text/plain";
    assert!(out.starts_with(head.as_bytes()));
}

#[test]
fn only_attachments_get_a_text_part() {
    let (a, b) = (pdf_bytes(2000), pdf_bytes(3000));
    let raw = format!(
        "From: a@example.org\r\nSubject: Anlagen\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\nContent-Type: application/pdf; name=a.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--b1\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--b1--\r\n",
        b64_lines(&a),
        b64_lines(&b)
    )
    .into_bytes();
    let (docs, out) = check_extraction("only-attachments", &raw, &ExtractOptions::default());
    assert_eq!(
        docs.iter()
            .map(|d| d.file_name.as_str())
            .collect::<Vec<_>>(),
        ["a.pdf", "dokument-2.bin"]
    );
    let msg = MessageParser::default().parse(&out).expect("parses");
    assert_eq!(msg.root_part().sub_parts().map(<[u32]>::len), Some(1));
    assert!(msg.parts[1].is_content_type("text", "plain"));
    assert!(out.ends_with(b"\r\n--b1--\r\n"));
    // Same with the close delimiter missing: it is added.
    let cut = raw.len() - b"--b1--\r\n".len();
    let (_, out) = check_extraction("unclosed", &raw[..cut], &ExtractOptions::default());
    assert!(out.ends_with(b"\r\n--b1--\r\n"));
}

#[test]
fn mixed_without_text_body_gets_a_first_part() {
    let pdf = pdf_bytes(2000);
    let raw = format!(
        "From: a@example.org\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\nContent-Type: image/gif\r\nContent-ID: <logo>\r\nContent-Transfer-Encoding: base64\r\n\r\nR0lGODlhAQABAAAAACw=\r\n--b1\r\nContent-Type: application/pdf; name=a.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--b1--\r\n",
        b64_lines(&pdf)
    )
    .into_bytes();
    let (_, out) = check_extraction("no-text", &raw, &ExtractOptions::default());
    let msg = MessageParser::default().parse(&out).expect("parses");
    assert!(msg.parts[1].is_content_type("text", "plain"));
    assert!(msg.parts[2].is_content_type("image", "gif"));
    assert_eq!(msg.root_part().sub_parts().map(<[u32]>::len), Some(2));
}

#[test]
fn signed_and_encrypted_are_sealed() {
    let signed = |inner: &str| {
        format!("From: a@example.org\r\nMIME-Version: 1.0\r\nContent-Type: multipart/signed; protocol=\"application/pgp-signature\"; micalg=pgp-sha256; boundary=s1\r\n\r\n--s1\r\n{inner}\r\n--s1\r\nContent-Type: application/pgp-signature; name=signature.asc\r\n\r\n-----BEGIN PGP SIGNATURE-----\r\nxyz\r\n-----END PGP SIGNATURE-----\r\n--s1--\r\n").into_bytes()
    };
    let opts = ExtractOptions::default();
    let plain = signed("Content-Type: text/plain\r\n\r\nHallo");
    assert!(matches!(
        scan(&plain, &opts),
        Ok(Scan::Sealed {
            has_attachments: false
        })
    ));
    let with_pdf = signed(
        "Content-Type: multipart/mixed; boundary=m1\r\n\r\n--m1\r\nContent-Type: text/plain\r\n\r\nHallo\r\n--m1\r\nContent-Type: application/pdf; name=a.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--m1--",
    );
    assert!(matches!(
        scan(&with_pdf, &opts),
        Ok(Scan::Sealed {
            has_attachments: true
        })
    ));
    let encrypted = b"From: a@example.org\r\nMIME-Version: 1.0\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=e1\r\n\r\n--e1\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n--e1\r\nContent-Type: application/octet-stream\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n--e1--\r\n";
    assert!(matches!(
        scan(encrypted, &opts),
        Ok(Scan::Sealed {
            has_attachments: true
        })
    ));
    let smime = b"From: a@example.org\r\nMIME-Version: 1.0\r\nContent-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\nContent-Transfer-Encoding: base64\r\n\r\nMIAGCSqGSIb3DQEHA6CAMIACAQAx\r\n";
    assert!(matches!(
        scan(smime, &opts),
        Ok(Scan::Sealed {
            has_attachments: true
        })
    ));
    // A signed part with attachments further down: not altered either.
    let nested = format!(
        "From: a@example.org\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=o1\r\n\r\n--o1\r\n{}\r\n--o1\r\nContent-Type: text/plain\r\n\r\nListen-Fu\u{df}zeile\r\n--o1--\r\n",
        String::from_utf8_lossy(&with_pdf)
            .split_once("MIME-Version: 1.0\r\n")
            .map(|x| x.1)
            .unwrap_or_default()
    );
    assert!(matches!(
        scan(nested.as_bytes(), &opts),
        Ok(Scan::Sealed {
            has_attachments: true
        })
    ));
}

fn related(image_len: usize) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let small = pdf_bytes(300);
    let large = pdf_bytes(image_len);
    let raw = format!(
        "From: a@example.org\r\nMIME-Version: 1.0\r\nContent-Type: multipart/related; type=\"text/html\"; boundary=r1\r\n\r\n--r1\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n<html><body><img src=3D\"cid:logo\"><img src=3D\"cid:foto\"></body></html>\r\n--r1\r\nContent-Type: image/png; name=logo.png\r\nContent-ID: <logo>\r\nContent-Disposition: inline; filename=logo.png\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--r1\r\nContent-Type: image/jpeg\r\nContent-ID: <foto>\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--r1--\r\n",
        b64_lines(&small),
        b64_lines(&large)
    )
    .into_bytes();
    (raw, small, large)
}

#[test]
fn small_inline_images_stay_large_ones_go() {
    let (raw, small, large) = related(300 * 1024);
    let (docs, out) = check_extraction("related", &raw, &ExtractOptions::default());
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].data, large);
    assert_eq!(docs[0].file_name, "dokument-1.jpg");
    assert!(contains(&out, b64_lines(&small).as_bytes()));
    // Both small: nothing to do.
    let (raw, _, _) = related(1000);
    assert!(matches!(
        scan(&raw, &ExtractOptions::default()),
        Ok(Scan::Clean)
    ));
}

#[test]
fn nested_rfc822_parts_are_cut_in_place() {
    let pdf = pdf_bytes(4000);
    let raw = format!(
        "From: a@example.org\r\nSubject: Fwd: Antrag\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=o1\r\n\r\n--o1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nSiehe unten.\r\n--o1\r\nContent-Type: message/rfc822\r\nContent-Disposition: attachment\r\n\r\nFrom: b@example.org\r\nSubject: Antrag\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=i1\r\n\r\n--i1\r\nContent-Type: text/plain\r\n\r\nDer weitergeleitete Text.\r\n--i1\r\nContent-Type: application/pdf; name=antrag.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--i1--\r\n--o1--\r\n",
        b64_lines(&pdf)
    )
    .into_bytes();
    let (docs, out) = check_extraction("nested", &raw, &ExtractOptions::default());
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].file_name, "antrag.pdf");
    assert_eq!(docs[0].data, pdf);
    let msg = MessageParser::default().parse(&out).expect("parses");
    let inner = msg.parts[2].message().expect("forward stays");
    assert!(
        inner
            .body_text(0)
            .is_some_and(|t| t.contains("Der weitergeleitete Text."))
    );
    assert!(inner.attachments.is_empty());
}

#[test]
fn nested_rfc822_without_body_left_is_one_document() {
    let pdf = pdf_bytes(4000);
    let raw = format!(
        "From: a@example.org\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=o1\r\n\r\n--o1\r\nContent-Type: text/plain\r\n\r\nSiehe Anhang.\r\n--o1\r\nContent-Type: message/rfc822\r\n\r\nFrom: b@example.org\r\nSubject: Scan / Kopierer\r\nMIME-Version: 1.0\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--o1--\r\n",
        b64_lines(&pdf)
    )
    .into_bytes();
    let (docs, _) = check_extraction("nested single", &raw, &ExtractOptions::default());
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].file_name, "Scan _ Kopierer.eml");
    assert_eq!(docs[0].content_type, "message/rfc822");
    assert!(docs[0].data.starts_with(b"From: b@example.org\r\n"));
}

#[test]
fn plan_and_block_must_match() {
    let raw = simple("Content-Type: text/plain", "Hallo");
    let plan = plan_of(&raw, &ExtractOptions::default());
    let empty = Block {
        language: Language::De,
        entries: Vec::new(),
    };
    assert!(matches!(
        rewrite(&raw, &plan, &empty),
        Err(ExtractError::BlockMismatch {
            expected: 1,
            got: 0
        })
    ));
    let block = block_for(&plan.documents);
    assert!(matches!(
        rewrite(&raw[1..], &plan, &block),
        Err(ExtractError::PlanMismatch)
    ));
    assert!(matches!(
        scan(b"", &ExtractOptions::default()),
        Err(ExtractError::Unparseable)
    ));
}

#[test]
fn ten_megabyte_pdf() {
    let pdf = pdf_bytes(10 * 1024 * 1024);
    let raw = handwritten(&pdf);
    let started = std::time::Instant::now();
    let mut plan = plan_of(&raw, &ExtractOptions::default());
    let docs = std::mem::take(&mut plan.documents);
    let out = rewrite(&raw, &plan, &block_for(&docs)).expect("rewrite");
    let took = started.elapsed();
    assert_eq!(docs[0].data.len(), pdf.len());
    assert!(out.len() < 5_000);
    // Generous for unoptimised test builds on a slow machine; quadratic
    // work would take minutes.
    assert!(took.as_secs() < 20, "took {took:?}");
}
