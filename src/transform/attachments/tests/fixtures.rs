//! The fixture corpus (`../shared/fixtures`): messages from other mail
//! libraries' test suites, malformed ones included, each with the outcome
//! it must have.

use super::*;

#[derive(Debug, PartialEq)]
enum Expect {
    Clean,
    Sealed(bool),
    Extract(usize),
}

const FIXTURES: &[(&str, Expect)] = &[
    ("cpython-msg_07-gif-attachment.eml", Expect::Extract(1)),
    ("cpython-msg_16-dsn-report.eml", Expect::Clean),
    (
        "cpython-msg_33-rfc2231-params-signed.eml",
        Expect::Sealed(false),
    ),
    // Its octet-stream parts are empty and nameless.
    ("cpython-msg_38-nested-mixed-alternative.eml", Expect::Clean),
    ("cpython-msg_45-pgp-signed.eml", Expect::Sealed(false)),
    ("dovecot-malformed-boundary-prefix.eml", Expect::Clean),
    ("dovecot-malformed-long-boundary.eml", Expect::Clean),
    (
        "dovecot-malformed-multipart-signed.eml",
        Expect::Sealed(false),
    ),
    ("dovecot-malformed-nested-rfc822.eml", Expect::Clean),
    ("dovecot-signed-in-mixed.eml", Expect::Clean),
    ("dovecot-unterminated-quoted-boundary.eml", Expect::Clean),
    ("mimekit-8bit-bytes-in-body.eml", Expect::Extract(1)),
    ("mimekit-deeply-nested.eml", Expect::Clean),
    ("mimekit-gmail-dkim-signed.eml", Expect::Clean),
    ("mimekit-invalid-cte-multipart.eml", Expect::Clean),
    ("mimekit-japanese-headers.eml", Expect::Clean),
    ("mimekit-missing-end-boundary.eml", Expect::Extract(1)),
    ("mimekit-null-bytes-in-headers.eml", Expect::Clean),
    ("mimekit-pgp-signed-gnupg-announce.eml", Expect::Clean),
    ("mimekit-raw-koi8r-header.eml", Expect::Clean),
    ("mimekit-raw-utf8-header.eml", Expect::Clean),
    ("mimekit-related-inline-images.eml", Expect::Extract(1)),
    ("mimekit-related-mhtml.eml", Expect::Clean),
    ("mimekit-smime-thunderbird-signed.eml", Expect::Sealed(true)),
    ("phpmmp-dsn-gb2312.eml", Expect::Clean),
    ("phpmmp-five-text-attachments.eml", Expect::Extract(10)),
    ("phpmmp-iso-2022-jp-alternative.eml", Expect::Clean),
    ("phpmmp-ks_c_5601-korean-jpeg.eml", Expect::Extract(2)),
    ("phpmmp-mixed-related-inline-images.eml", Expect::Extract(1)),
    ("phpmmp-msword-rfc2047-filename.eml", Expect::Extract(1)),
    ("phpmmp-nested-message-rfc822.eml", Expect::Clean),
    ("phpmmp-pdf-empty-filename.eml", Expect::Extract(1)),
    ("phpmmp-singlepart-png-attachment.eml", Expect::Extract(1)),
    (
        "phpmmp-swiftmailer-docx-pdf-odt-png-rfc822.eml",
        Expect::Extract(5),
    ),
    ("phpmmp-x-mac-cyrillic-alternative.eml", Expect::Clean),
];

#[test]
fn every_fixture_is_listed() {
    for entry in std::fs::read_dir(fixtures_dir()).expect("fixtures") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if name.ends_with(".eml") {
            assert!(
                FIXTURES.iter().any(|(n, _)| *n == name),
                "{name} has no expectation"
            );
        }
    }
}

#[test]
fn fixtures_scan_and_rewrite() {
    let opts = ExtractOptions::default();
    for (name, expect) in FIXTURES {
        let raw = fixture(name);
        let got = match scan(&raw, &opts) {
            Ok(Scan::Clean) => Expect::Clean,
            Ok(Scan::Sealed { has_attachments }) => Expect::Sealed(has_attachments),
            Ok(Scan::Extract(plan)) => Expect::Extract(plan.documents.len()),
            Err(e) => panic!("{name}: {e}"),
        };
        assert_eq!(&got, expect, "{name}");
        if let Expect::Extract(_) = expect {
            check_extraction(name, &raw, &opts);
        }
    }
}

/// With every inline image extracted, more paths run (related roots,
/// image-only parts); the same checks must hold.
#[test]
fn fixtures_with_all_images_extracted() {
    let opts = ExtractOptions {
        inline_image_max: 0,
    };
    for (name, _) in FIXTURES {
        let raw = fixture(name);
        if let Ok(Scan::Extract(_)) = scan(&raw, &opts) {
            check_extraction(name, &raw, &opts);
        }
    }
    let raw = fixture("phpmmp-mixed-related-inline-images.eml");
    let (docs, _) = check_extraction("mixed-related", &raw, &opts);
    let names: Vec<_> = docs.iter().map(|d| d.file_name.as_str()).collect();
    assert_eq!(names, ["logo.jpg", "background.jpg", "attachment.txt"]);
}

#[test]
fn swiftmailer_names_types_and_encoded_rfc822() {
    let raw = fixture("phpmmp-swiftmailer-docx-pdf-odt-png-rfc822.eml");
    let (docs, out) = extract(&raw, &ExtractOptions::default());
    let got: Vec<_> = docs
        .iter()
        .map(|d| (d.file_name.as_str(), d.content_type.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (
                "Hello from SwiftMailer.docx",
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
            ),
            ("Hello from SwiftMailer.pdf", "application/pdf"),
            (
                "Hello from SwiftMailer.odt",
                "application/vnd.oasis.opendocument.text"
            ),
            ("Cours-Tutoriels-Serge-Tahé-1568x268.png", "image/png"),
            ("test-localhost.eml", "message/rfc822"),
        ]
    );
    // The base64 message/rfc822 is one document: its decoded bytes, a
    // message that itself still holds the four attachments.
    let nested = MessageParser::default()
        .parse(&docs[4].data)
        .expect("nested parses");
    assert_eq!(nested.attachments.len(), 4);
    assert!(docs[0].data.starts_with(b"PK"));
    assert!(docs[1].data.starts_with(b"%PDF"));
    assert!(out.len() < 6_000, "output is {} bytes", out.len());
    // Both QP bodies are still there byte for byte, before the block.
    let orig = MessageParser::default().parse(&raw).expect("parses");
    for id in [2usize, 3] {
        let p = &orig.parts[id];
        let body = &raw[p.offset_body as usize..p.offset_end as usize];
        assert!(contains(&out, body));
    }
}

#[test]
fn nested_rfc822_fixtures() {
    let opts = ExtractOptions::default();
    for name in [
        "phpmmp-nested-message-rfc822.eml",
        "dovecot-malformed-nested-rfc822.eml",
    ] {
        // Their forwarded messages hold no attachments: nothing to do.
        assert!(
            matches!(scan(&fixture(name), &opts), Ok(Scan::Clean)),
            "{name}"
        );
    }
}

#[test]
fn malformed_input_never_panics() {
    let opts = ExtractOptions::default();
    for (name, _) in FIXTURES {
        let raw = fixture(name);
        let len = raw.len().min(40_000);
        let raw = &raw[..len];
        let step = (len / 97).max(1);
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15 ^ len as u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut variants: Vec<Vec<u8>> =
            (0..len).step_by(step).map(|n| raw[..n].to_vec()).collect();
        for _ in 0..60 {
            let mut v = raw.to_vec();
            for _ in 0..4 {
                let at = (next() as usize) % len.max(1);
                if let Some(b) = v.get_mut(at) {
                    *b = [b'-', b'\r', b'\n', b'=', b':', b'"', 0, 0xff][(next() % 8) as usize];
                }
            }
            variants.push(v);
        }
        for v in variants {
            for opts in [
                opts,
                ExtractOptions {
                    inline_image_max: 0,
                },
            ] {
                if let Ok(Scan::Extract(plan)) = scan(&v, &opts) {
                    let block = block_for(&plan.documents);
                    let out = rewrite(&v, &plan, &block).expect("a plan rewrites");
                    assert!(MessageParser::default().parse(&out).is_some(), "{name}");
                    // Whatever the damage, nothing is left behind.
                    // Whatever the damage, nothing is left behind.
                    assert!(matches!(scan(&out, &opts), Ok(Scan::Clean)), "{name}");
                }
            }
        }
    }
}

#[test]
fn malformed_fixtures_rewrite() {
    let raw = fixture("mimekit-missing-end-boundary.eml");
    let (docs, out) = check_extraction("missing end", &raw, &ExtractOptions::default());
    // Its base64 body was never closed; it is decoded all the same, and
    // the multipart gets the close delimiter it lacked.
    assert_eq!(docs[0].data, b"This is the zip attachment.");
    assert!(out.ends_with(b"passwortgeschuetzt\r\n------=_NextPart_000_003F_01CE98CE.6E826F90--"));
    for name in [
        "dovecot-malformed-long-boundary.eml",
        "dovecot-malformed-boundary-prefix.eml",
        "dovecot-unterminated-quoted-boundary.eml",
        "mimekit-deeply-nested.eml",
    ] {
        assert!(
            scan(
                &fixture(name),
                &ExtractOptions {
                    inline_image_max: 0
                }
            )
            .is_ok(),
            "{name}"
        );
    }
}
