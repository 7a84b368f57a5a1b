//! Tests of the whole scan: signature cut, MIME handling, robustness and
//! linear running time. The per-rule tests live next to each scanner.

use std::time::{Duration, Instant};

use super::*;

fn cats(f: &Findings) -> Vec<&'static str> {
    f.categories.iter().map(|c| c.as_str()).collect()
}

#[test]
fn category_names_and_serde() {
    for c in Category::ALL {
        assert_eq!(Category::parse(c.as_str()), Some(c));
        assert_eq!(
            serde_json::to_string(&c).ok(),
            Some(format!("\"{}\"", c.as_str()))
        );
        assert!(!c.label_de().is_empty() && !c.label_en().is_empty());
    }
    assert_eq!(Options::default().signature_marker, "-- ");
}

#[test]
fn findings_hold_counts_not_data() {
    let f = scan_text(
        "IBAN DE89 3704 0044 0532 0130 00, Tel. 0171 2345678, Handy 0160 9988776",
        &Options::default(),
    );
    assert_eq!(cats(&f), vec!["iban", "phone"]);
    assert_eq!(f.count(Category::Phone), 2);
    assert_eq!(f.summary(), "iban,phone");
    let json = serde_json::to_string(&f).unwrap_or_default();
    assert!(!json.contains("0171") && !json.contains("DE89"), "{json}");
}

#[test]
fn iban_digits_do_not_count_as_phone_or_tax_id() {
    let f = scan_text("Steuer: DE44 2135 2240 5456 5275 58", &Options::default());
    assert_eq!(cats(&f), vec!["iban"]);
}

#[test]
fn signature_block_is_not_scanned() {
    let text = "Die Linie 512 fährt früher.\n-- \nLandkreis Leinetal\n\
                Kaiserstraße 17, 31134 Leinestadt\nTel.: 05121 309-4412\n";
    assert!(scan_text(text, &Options::default()).is_empty());
    let all = Options {
        signature_marker: String::new(),
    };
    assert_eq!(cats(&scan_text(text, &all)), vec!["phone", "address"]);
    let custom = Options {
        signature_marker: "Mit freundlichen Grüßen".into(),
    };
    let t2 = "Hallo\nMit freundlichen Grüßen\nTel. 0171 2345678";
    assert!(scan_text(t2, &custom).is_empty());
}

#[test]
fn quoted_text_after_the_signature_is_scanned() {
    let text = "Danke!\n-- \nTel. 05121 309-0\n\nAm 09.09.2024 um 10:12 schrieb Frau X:\n\
                > Unsere IBAN: DE89 3704 0044 0532 0130 00\n";
    assert_eq!(cats(&scan_text(text, &Options::default())), vec!["iban"]);
}

fn eml(content_type: &str, extra: &str, body: &str) -> Vec<u8> {
    format!(
        "From: a@example.org\r\nTo: b@example.org\r\nSubject: t\r\nMIME-Version: 1.0\r\n\
         Content-Type: {content_type}\r\n{extra}\r\n{body}"
    )
    .into_bytes()
}

#[test]
fn message_parts_are_decoded() {
    let o = Options::default();
    let qp = eml(
        "text/plain; charset=utf-8",
        "Content-Transfer-Encoding: quoted-printable\r\n",
        "Konto DE89 3704 00=\r\n44 0532 0130 00, Gr=C3=BC=C3=9Fe\r\n",
    );
    assert_eq!(cats(&scan_message(&qp, &o)), vec!["iban"]);
    let html = eml(
        "text/html; charset=utf-8",
        "",
        "<p>Lena sitzt im Rollstuhl.</p><div>-- <br>Tel. 05121 309-0</div>",
    );
    assert_eq!(cats(&scan_message(&html, &o)), vec!["health"]);
}

#[test]
fn alternatives_are_not_double_counted_and_attachments_are_skipped() {
    let o = Options::default();
    let alt = eml(
        "multipart/alternative; boundary=\"b\"",
        "",
        "--b\r\nContent-Type: text/plain\r\n\r\nTel. 0171 2345678\r\n\
         --b\r\nContent-Type: text/html\r\n\r\n<p>Tel. 0171 2345678</p>\r\n--b--\r\n",
    );
    let f = scan_message(&alt, &o);
    assert_eq!(f.count(Category::Phone), 1);
    let mixed = eml(
        "multipart/mixed; boundary=\"m\"",
        "",
        "--m\r\nContent-Type: text/plain\r\n\r\nAnbei.\r\n\
         --m\r\nContent-Type: text/plain; name=\"a.txt\"\r\n\
         Content-Disposition: attachment; filename=\"a.txt\"\r\n\r\nTel. 0171 2345678\r\n--m--\r\n",
    );
    assert!(scan_message(&mixed, &o).is_empty());
}

#[test]
fn nothing_panics_on_odd_input() {
    let o = Options::default();
    let samples = [
        "",
        "\n",
        "-- ",
        "0",
        "+",
        "+49",
        "(0",
        "(0)",
        "DE",
        "DE89",
        "geb.",
        "geb. 31.",
        "*",
        "* 1",
        "12345",
        "Straße 1, 12345 ",
        "\u{fffd}\u{0}ä",
        "İİİ 0171 2345678 İ",
        "&#;<<>>",
        "a\r\r\n-- \r",
        "Steuer 1 2 3 4 5 6 7 8 9 0 1",
        "0049",
        "D-12345 Ab",
    ];
    for s in samples {
        let _ = scan_text(s, &o);
        let _ = scan_message(s.as_bytes(), &o);
        let _ = html_to_text(s);
    }
    // Every prefix of a message with all categories, cut at any char boundary.
    let all = "Lena (* 02.02.2018), Am Markt 3a\n31171 Nordstemmen, Tel. 0171 2345678, \
               IBAN DE89 3704 0044 0532 0130 00, Steuer-ID 57 892 493 101, Rollstuhl.";
    for (i, _) in all.char_indices() {
        let _ = scan_text(&all[..i], &o);
        let _ = scan_text(&all[i..], &o);
    }
    let _ = scan_message(&[0xff, 0xfe, b'\n', b'\n', 0x80], &o);
    let f = scan_text(all, &o);
    assert_eq!(f.categories.len(), 6, "{f:?}");
}

fn timed(text: &str) -> Duration {
    let start = Instant::now();
    let _ = scan_text(text, &Options::default());
    start.elapsed()
}

#[test]
fn one_megabyte_is_scanned_in_linear_time() {
    // Realistic text and adversarial repetitions of prefixes that make a
    // scanner look around: digits, "geb.", "+49", "DE", house numbers.
    let line = "Sehr geehrte Frau Meier, geb. Schulz, Tel. 0171 2345678, \
                Hauptstraße 12, 31134 Leinestadt, Rollstuhl, DE89 3704 0044 0532 0130 00.\n";
    let adversarial = [
        line.repeat(1 << 20 >> 7),
        "0".repeat(1 << 20),
        "0 ".repeat(1 << 19),
        "geb. ".repeat(1 << 18),
        "DE1".repeat(1 << 18),
        "1, 12345 A".repeat(1 << 17),
        "+49 1".repeat(1 << 18),
        "ä".repeat(1 << 19),
        "Straße 1a ".repeat(1 << 17),
        "1.1.11 ".repeat(1 << 17),
        "a;".repeat(1 << 19),
    ];
    // Generous bound for unoptimised test builds on a slow machine; a
    // quadratic scanner needs minutes on 1 MB.
    let limit = if cfg!(debug_assertions) { 20 } else { 2 };
    for text in &adversarial {
        let mut cut = text.len() / 8;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let small = timed(&text[..cut]);
        let full = timed(text);
        assert!(
            full < Duration::from_secs(limit),
            "{} bytes took {full:?}",
            text.len()
        );
        // Linear: 8x the input must not take much more than 8x the time.
        assert!(
            full < small * 30 + Duration::from_millis(200),
            "{small:?} -> {full:?}"
        );
    }
}

/// Deterministic fuzzing: random strings over the characters every scanner
/// reacts to. Nothing may panic, and the findings must not depend on the
/// signature marker when there is none.
#[test]
fn random_inputs_do_not_panic() {
    const ALPHABET: &[&str] = &[
        "0",
        "1",
        "4",
        "9",
        "5",
        " ",
        "  ",
        "+",
        "+49",
        "0049",
        "(",
        ")",
        "(0)",
        "-",
        "/",
        ".",
        ",",
        ":",
        ";",
        "|",
        "\n",
        "\r\n",
        "\t",
        "ä",
        "ß",
        "İ",
        "\u{a0}",
        "\u{2011}",
        "DE",
        "AT",
        "geb.",
        "geboren",
        "*",
        "Mai",
        "Str.",
        "straße",
        "Am",
        "in",
        "Tel",
        "Nr",
        "Steuer",
        "<",
        ">",
        "&",
        "#",
        "x",
        "&#",
        ";",
        "<p>",
        "<td>",
        "<script>",
        "--",
        "-- \n",
        "\"",
        "Haltestelle",
        "Rollstuhl",
        "behinder",
        "innen",
        "und",
        "Anfall",
        "GdB",
        "D-",
    ];
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let o = Options::default();
    for _ in 0..3000 {
        let len = (next() % 40) as usize;
        let mut s = String::new();
        for _ in 0..len {
            s.push_str(ALPHABET[(next() % ALPHABET.len() as u64) as usize]);
        }
        let f = scan_text(&s, &o);
        let _ = html_to_text(&s);
        let _ = scan_message(s.as_bytes(), &o);
        if !s.lines().any(|l| l.trim_end() == "--") {
            let none = Options {
                signature_marker: String::new(),
            };
            assert_eq!(f, scan_text(&s, &none), "{s:?}");
        }
    }
}
