//! German telephone, fax and mobile numbers.
//!
//! Candidates start at a word boundary (not inside a longer number) with
//! `+49`, `0049` or `0`, or with an area code in parentheses `(05121)`;
//! after `+49` an optional `(0)` is skipped and the area code may stand in
//! parentheses (`+49 (5121) 309 4412`). Digit groups may be joined by a
//! single space, `/` or `-` (also ` / `, ` - `). A group that starts with
//! `0` after eight or more digits begins a second number ("05121 309441 /
//! 0171 2345678"). The national number (with its leading 0) must look German:
//! mobile `015x/016x/017x` with 11–12 digits, or a landline area code `02`–`09`
//! with 8–13 digits (extensions included).
//!
//! The nearest label words before the number decide (up to four words on
//! the same line, or at the end of the previous line when the number starts
//! a line — plain-text mail is hard-wrapped):
//! - a phone word (Tel, Telefon, Handy, Mobil, Fax, Ruf…, Rückruf, anrufen,
//!   erreichbar, Festnetz, Zentrale, Durchwahl, Einwahl, Hotline, WhatsApp,
//!   SMS; also "erreichbar"/"mobil" right after the number) → phone with
//!   8+ digits, even without separators;
//! - a number label (…nummer, …nr, Nr. not after Tel, …zeichen, …code, ID,
//!   …ziffer, PIN, Az., IBAN, Konto, Rechnung, Beleg, Vorgang, Verfahren, Akte, Sache,
//!   Fall, Ticket, …stelle, …zweck)
//!   → never a phone, whatever the form (so "Rechnungsnummer 0123456789",
//!   "Belegnummer 0049 2211 4455 9", "Kundennummer\n0307 1145 22");
//! - no label: the `+49`/`0049` form, or the typical formatting — area code
//!   of 3–6 digits followed by a separator, or in parentheses — with at
//!   least 10 digits. A bare run of digits without a label is not a phone.

use std::ops::Range;

use super::text::{is_word_byte, line_start, skip_to, words_after, words_before};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    Phone,
    Number,
    None,
}

struct Candidate {
    end: usize,
    /// National digits with the leading 0 (at most 20 kept).
    digits: Vec<u8>,
    international: bool,
    /// Area code followed by a separator or written in parentheses.
    formatted: bool,
}

/// Byte ranges of the phone numbers in `text` (`lower`: same-length
/// lowercase copy).
pub(crate) fn find(text: &str, lower: &str) -> Vec<Range<usize>> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !is_start(b) {
            i = skip_to(bytes, i + 1, is_start);
            continue;
        }
        if !at_boundary(bytes, i) {
            i += 1;
            continue;
        }
        let Some(c) = parse(bytes, i) else {
            i += 1;
            continue;
        };
        if accept(&c, label(lower, i, c.end)) {
            found.push(i..c.end);
        }
        i = c.end.max(i + 1);
    }
    found
}

/// A number starts with `+`, `0` or `(` (checked before anything else).
fn is_start(b: u8) -> bool {
    b == b'+' || b == b'0' || b == b'('
}

fn at_boundary(bytes: &[u8], i: usize) -> bool {
    let Some(&prev) = i.checked_sub(1).and_then(|p| bytes.get(p)) else {
        return true;
    };
    if is_word_byte(prev) || prev == b'+' {
        return false;
    }
    // "2024-0511 …", "12.0511", "402/0512", "2024 0041" continue a number.
    !(matches!(prev, b'.' | b',' | b'/' | b'-' | b' ') && i >= 2 && bytes[i - 2].is_ascii_digit())
}

fn parse(bytes: &[u8], start: usize) -> Option<Candidate> {
    let mut c = Candidate {
        end: start,
        digits: Vec::with_capacity(16),
        international: false,
        formatted: false,
    };
    let mut i = start;
    if bytes[i..].starts_with(b"+49") || bytes[i..].starts_with(b"0049") {
        c.international = true;
        i += if bytes[i] == b'+' { 3 } else { 4 };
        // "+49 5121", "+49-5121", "+49/5121"
        if matches!(bytes.get(i), Some(b' ' | b'-' | b'/')) {
            i += 1;
        }
        if bytes[i..].starts_with(b"(0)") {
            i += 3;
            if bytes.get(i) == Some(&b' ') {
                i += 1;
            }
        }
        c.digits.push(0);
        // "+49 (5121) 309 4412": the area code in parentheses without its 0.
        if bytes.get(i) == Some(&b'(') {
            let area_start = i + 1;
            let area_len = bytes[area_start..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            if !(2..=5).contains(&area_len) || bytes.get(area_start + area_len) != Some(&b')') {
                return None;
            }
            c.digits.extend(
                bytes[area_start..area_start + area_len]
                    .iter()
                    .map(|d| d - b'0'),
            );
            i = area_start + area_len + 1;
            if bytes.get(i) == Some(&b' ') {
                i += 1;
            }
        }
        if !bytes.get(i).is_some_and(|b| (b'1'..=b'9').contains(b)) || c.digits.get(1) == Some(&0) {
            return None;
        }
    } else if bytes[i] == b'(' {
        // "(05121) 309441": the area code in parentheses.
        i += 1;
        let area_start = i;
        while bytes.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let area = &bytes[area_start..i];
        if area.len() < 3 || area.len() > 6 || area[0] != b'0' || bytes.get(i) != Some(&b')') {
            return None;
        }
        c.digits.extend(area.iter().map(|d| d - b'0'));
        i += 1;
        if bytes.get(i) == Some(&b' ') {
            i += 1;
        }
        if !bytes.get(i).is_some_and(u8::is_ascii_digit) {
            return None;
        }
        c.formatted = true;
    } else if bytes[i] != b'0' {
        return None;
    }
    let mut first_group = true;
    loop {
        let group_start = i;
        while let Some(&d) = bytes.get(i).filter(|b| b.is_ascii_digit()) {
            if c.digits.len() < 20 {
                c.digits.push(d - b'0');
            }
            i += 1;
        }
        c.end = i;
        let group_len = i - group_start;
        let Some(next) = separator(bytes, i) else {
            break;
        };
        if first_group && !c.international && (3..=6).contains(&group_len) {
            c.formatted = true;
        }
        first_group = false;
        // A new number after a complete one: "05121 309441 / 0171 2345678".
        let next_len = bytes[next..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if bytes[next] == b'0' && next_len >= 3 && c.digits.len() >= 8 {
            break;
        }
        i = next;
    }
    // Not followed by a letter or by a decimal part ("0171,50").
    match bytes.get(c.end) {
        Some(&b) if is_word_byte(b) => return None,
        Some(b'.' | b',') if bytes.get(c.end + 1).is_some_and(u8::is_ascii_digit) => return None,
        _ => {}
    }
    Some(c)
}

/// The position of the next digit group after a separator at `i`, if any:
/// " ", "/", "-", " / ", " - ", "/ ", " /", "- ", " -".
fn separator(bytes: &[u8], i: usize) -> Option<usize> {
    let mut k = i;
    if bytes.get(k) == Some(&b' ') {
        k += 1;
    }
    if matches!(bytes.get(k), Some(b'/' | b'-')) {
        k += 1;
        if bytes.get(k) == Some(&b' ') {
            k += 1;
        }
    }
    (k > i && bytes.get(k).is_some_and(u8::is_ascii_digit)).then_some(k)
}

fn accept(c: &Candidate, label: Label) -> bool {
    let d = &c.digits;
    if label == Label::Number || d.len() < 8 || d.len() > 13 || d[0] != 0 {
        return false;
    }
    let plausible = match d[1] {
        0 => false,
        1 => matches!(d[2], 5..=7) && (11..=12).contains(&d.len()),
        _ => true,
    };
    if !plausible {
        return false;
    }
    if c.international || label == Label::Phone {
        return d.len() >= 9 || label == Label::Phone;
    }
    c.formatted && d.len() >= 10
}

fn label(lower: &str, start: usize, end: usize) -> Label {
    let bytes = lower.as_bytes();
    let mut before = words_before(lower, start, 4, 40);
    let ls = line_start(bytes, start);
    let only_punct_before = bytes[ls..start].iter().all(|b| !is_word_byte(*b));
    if before.is_empty() && only_punct_before && ls > 0 {
        // Hard-wrapped text: "Kundennummer bei uns:\n0307 1145 22", "Die
        // Fahrkartennummer war\n0160 4477 1234": the label is on the line above.
        let prev = lower[..ls - 1].trim_end();
        before = words_before(lower, prev.len(), 4, 40);
    }
    let mut words = before.iter().peekable();
    while let Some(w) = words.next() {
        if is_phone_word(w) {
            return Label::Phone;
        }
        if *w == "nr" || *w == "no" {
            // "Tel.-Nr." versus "Rechnung Nr.".
            return match words.peek() {
                Some(p) if is_phone_word(p) => Label::Phone,
                _ => Label::Number,
            };
        }
        if is_number_label(w) {
            return Label::Number;
        }
    }
    if let Some(w) = words_after(lower, end, 1, 20).first()
        && (w.starts_with("erreichbar") || *w == "mobil" || *w == "handy")
    {
        return Label::Phone;
    }
    Label::None
}

fn is_phone_word(w: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "tel",
        "fon",
        "phone",
        "handy",
        "mobil",
        "fax",
        "ruf",
        "rückruf",
        "anruf",
        "zurückruf",
        "erreich",
        "festnetz",
        "zentrale",
        "durchwahl",
        "einwahl",
        "hotline",
        "whatsapp",
        "sms",
        "notruf",
        "telefax",
    ];
    PREFIXES.iter().any(|p| w.starts_with(p))
        || w.contains("telefon")
        || w.contains("rufnummer")
        || w.ends_with("fax")
}

fn is_number_label(w: &str) -> bool {
    const EXACT: &[&str] = &[
        "id",
        "pin",
        "az",
        "iban",
        "bic",
        "blz",
        "konto",
        "rechnung",
        "beleg",
        "vorgang",
        "ticket",
        "tan",
        "plz",
        "ust",
        "code",
        "fahrt",
        "linie",
        "linien",
        "los",
        "verfahren",
        "akte",
        "sache",
        "fall",
    ];
    const SUFFIXES: &[&str] = &[
        "nummer", "nr", "zeichen", "code", "kennung", "referenz", "zweck", "stelle", "text",
        "ziffer",
    ];
    w != "nummer" && (EXACT.contains(&w) || SUFFIXES.iter().any(|s| w.ends_with(s)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(t: &str) -> usize {
        let lower = t.to_lowercase();
        find(t, &lower).len()
    }

    #[test]
    fn german_numbers_in_common_forms() {
        for t in [
            "Tel. 05121 309-4412",
            "Handy 01761234567",
            "+49 171 2345678",
            "+49-5121-309-4415",
            "Tel +49 (5121) 309 4412",
            "(+49 152 34567890)",
            "+49 (0) 5064 96 12 30",
            "Rufnummer 0049 5121 98 76 50",
            "(05062) 8 93 40",
            "0151/23456789",
            "Mobil 0152-28374655.",
            "unter 05063 / 27 15 90 erreichbar",
            "Tel. 0 51 21 / 9 87 65 43",
            "Frau Möller, 0170 4455667.",
            "Zentrale: 05121 4 44 44",
            "Tel.-Nr. 05121 3090",
            "Sie erreichen mich 01761234567 jederzeit",
            "Telefonnummer:\n0511 1234567",
        ] {
            assert_eq!(count(t), 1, "{t}");
        }
    }

    #[test]
    fn two_numbers_in_one_run() {
        assert_eq!(count("Tel. 05121 309441 / 0171 2345678"), 2);
    }

    #[test]
    fn case_and_invoice_numbers_are_not_phones() {
        for t in [
            "Rechnungsnummer 0123456789",
            "Kundennummer 0412345678",
            "Vorgangsnummer: 0172345678",
            "Die Fahrkartennummer war 0160 4477 1234",
            "Vertragsnummer: 0176-2291-4471",
            "Rechnung Nr. 0504231177",
            "Kundennummer bei uns:\n0307 1145 22",
            "Die Fahrkartennummer war\n0160 4477 1234, gültig",
            "Belegnummer 0049 2211 4455 9",
            "Konferenz-ID: 0813 4471 92",
            "Aktivierungscode: 0170 3391 2288 4410",
            "Az. 402.31-0512/2024",
            "402-SB-2024-04711",
            "SB 2024 0041 7733",
            "0172345678",
            "Abfahrt 07:35, 01.08.2024",
            "Linien 0301, 0302",
            "0241.5410.0000",
            "Haltestelle 0180 123456",
            "Ticket 0123 4567 890",
            "die Kennziffer 0511 234 567 an",
            "das Verfahren 030 4471 2290 des Gerichts",
        ] {
            assert_eq!(count(t), 0, "{t}");
        }
    }

    #[test]
    fn foreign_or_implausible_prefixes_are_not_german_phones() {
        assert_eq!(count("+43 664 1234567"), 0);
        assert_eq!(count("Tel. 0123 4567890"), 0, "012 is no mobile prefix");
        assert_eq!(count("Tel. 0041 61 123 45 67"), 0);
    }
}
