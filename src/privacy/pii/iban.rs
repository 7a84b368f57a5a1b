//! IBAN (ISO 13616): country code, two check digits, BBAN.
//!
//! Rule: an upper-case country code from the IBAN registry at a word start,
//! two check digits, then letters/digits with a single space, hyphen or
//! line break (hard wrapping) allowed between them (groups of four,
//! irregular groups) until the country's length is reached; the next
//! character must not continue the word. For countries whose BBAN is all
//! digits (DE, AT, BE, ES, PL, ...) letters are refused. The mod-97
//! checksum must be 1: a mistyped IBAN is not a finding.

use std::ops::Range;

use super::text::is_word_byte;

/// (country, total length, BBAN is numeric) from the SWIFT IBAN registry,
/// sorted by country code (looked up by binary search).
const COUNTRIES: &[(&[u8; 2], usize, bool)] = &[
    (b"AD", 24, false),
    (b"AE", 23, true),
    (b"AL", 28, false),
    (b"AT", 20, true),
    (b"AZ", 28, false),
    (b"BA", 20, true),
    (b"BE", 16, true),
    (b"BG", 22, false),
    (b"BH", 22, false),
    (b"BR", 29, false),
    (b"BY", 28, false),
    (b"CH", 21, false),
    (b"CR", 22, true),
    (b"CY", 28, false),
    (b"CZ", 24, true),
    (b"DE", 22, true),
    (b"DK", 18, true),
    (b"DO", 28, false),
    (b"EE", 20, true),
    (b"EG", 29, true),
    (b"ES", 24, true),
    (b"FI", 18, true),
    (b"FO", 18, true),
    (b"FR", 27, false),
    (b"GB", 22, false),
    (b"GE", 22, false),
    (b"GI", 23, false),
    (b"GL", 18, true),
    (b"GR", 27, false),
    (b"GT", 28, false),
    (b"HR", 21, true),
    (b"HU", 28, true),
    (b"IE", 22, false),
    (b"IL", 23, true),
    (b"IQ", 23, false),
    (b"IS", 26, true),
    (b"IT", 27, false),
    (b"JO", 30, false),
    (b"KW", 30, false),
    (b"KZ", 20, false),
    (b"LB", 28, false),
    (b"LC", 32, false),
    (b"LI", 21, false),
    (b"LT", 20, true),
    (b"LU", 20, false),
    (b"LV", 21, false),
    (b"MC", 27, false),
    (b"MD", 24, false),
    (b"ME", 22, true),
    (b"MK", 19, false),
    (b"MR", 27, true),
    (b"MT", 31, false),
    (b"MU", 30, false),
    (b"NL", 18, false),
    (b"NO", 15, true),
    (b"PK", 24, false),
    (b"PL", 28, true),
    (b"PS", 29, false),
    (b"PT", 25, true),
    (b"QA", 29, false),
    (b"RO", 24, false),
    (b"RS", 22, true),
    (b"SA", 24, false),
    (b"SC", 31, false),
    (b"SE", 24, true),
    (b"SI", 19, true),
    (b"SK", 24, true),
    (b"SM", 27, false),
    (b"ST", 25, true),
    (b"SV", 28, false),
    (b"TL", 23, true),
    (b"TN", 24, true),
    (b"TR", 26, false),
    (b"UA", 29, false),
    (b"VA", 22, true),
    (b"VG", 24, false),
    (b"XK", 20, true),
];

/// Byte ranges of all valid IBANs in `text`.
pub(crate) fn find(text: &str) -> Vec<Range<usize>> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i + 4 <= bytes.len() {
        // Cheap tests first (the same as `match_at`'s, but inline): nearly
        // every position is inside a word or not an upper-case letter.
        if !bytes[i].is_ascii_uppercase() || (i > 0 && is_word_byte(bytes[i - 1])) {
            i += 1;
            continue;
        }
        if let Some(end) = match_at(bytes, i) {
            found.push(i..end);
            i = end;
        } else {
            i += 1;
        }
    }
    found
}

fn match_at(bytes: &[u8], start: usize) -> Option<usize> {
    if start > 0 && is_word_byte(bytes[start - 1]) {
        return None;
    }
    let cc = bytes.get(start..start + 2)?;
    if !cc.iter().all(u8::is_ascii_uppercase) {
        return None;
    }
    let &(_, len, numeric) = COUNTRIES
        .binary_search_by(|(c, _, _)| c[..].cmp(cc))
        .ok()
        .and_then(|k| COUNTRIES.get(k))?;
    let mut chars = [0u8; 34];
    chars[0] = cc[0];
    chars[1] = cc[1];
    let mut n = 2;
    let mut i = start + 2;
    // An optional space between country code and check digits ("DE 89 ...").
    if bytes.get(i) == Some(&b' ') {
        i += 1;
    }
    let mut after_space = false;
    while n < len {
        let b = *bytes.get(i)?;
        if b.is_ascii_alphanumeric() {
            let is_check = n < 4;
            if (is_check || numeric) && !b.is_ascii_digit() {
                return None;
            }
            chars[n] = b.to_ascii_uppercase();
            n += 1;
            after_space = false;
        } else if matches!(b, b' ' | b'\n' | b'\t' | b'-') && !after_space && n >= 4 {
            after_space = true;
        } else {
            return None;
        }
        i += 1;
    }
    if bytes.get(i).is_some_and(|&b| is_word_byte(b)) {
        return None;
    }
    checksum_ok(&chars[..len]).then_some(i)
}

/// ISO 7064 MOD 97-10 over BBAN + country + check digits.
fn checksum_ok(iban: &[u8]) -> bool {
    let mut r: u32 = 0;
    for &b in iban[4..].iter().chain(&iban[..4]) {
        r = match b {
            b'0'..=b'9' => (r * 10 + u32::from(b - b'0')) % 97,
            b'A'..=b'Z' => (r * 100 + u32::from(b - b'A') + 10) % 97,
            _ => return false,
        };
    }
    r == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn countries_are_sorted_for_binary_search() {
        assert!(COUNTRIES.windows(2).all(|w| w[0].0 < w[1].0));
    }

    fn count(t: &str) -> usize {
        find(t).len()
    }

    #[test]
    fn valid_ibans_of_many_countries() {
        for t in [
            "DE89 3704 0044 0532 0130 00",
            "DE89370400440532013000",
            "IBAN: DE63 2595 0130 9458 0730 21.",
            "AT18 4549 8174 1040 9016",
            "CH48 5135 0BAS U2ZU ZEEU 3",
            "NL32GZTY8754283433",
            "FR02 4171 9536 40UL UTPV G8FP O03",
            "IT61 R110 0457 7216 UE6L LJJU TG6",
            "ES80 3280 5983 2468 2034 1768",
            "BE06 8706 5247 0690",
            "PL17 9292 2446 9629 1370 2858 7335",
            "LU60 3659 RODE 6XK6 NTTT",
            "(DE44 2135 2240\n5456 5275 58)",
            "DE 44 2135 2240 5456 5275 58",
            "DE40-1683-6153-4487-9913-89",
        ] {
            assert_eq!(count(t), 1, "{t}");
        }
    }

    #[test]
    fn wrong_checksum_length_or_shape_is_not_an_iban() {
        for t in [
            "DE63 2595 0130 9458 0530 21",
            "DE08250100300560865790",
            "DE89 3704 0044 0532 0130 0",
            "DE89 3704 0044 0532 0130 001",
            "XDE89370400440532013000",
            "DE89  3704 0044 0532 0130 00",
            "USt-IdNr. DE 811 234 567",
            "de89370400440532013000",
            "ZZ89370400440532013000",
        ] {
            assert_eq!(count(t), 0, "{t}");
        }
    }

    #[test]
    fn two_ibans_are_counted_twice() {
        assert_eq!(
            count("DE89370400440532013000 und AT18 4549 8174 1040 9016"),
            2
        );
    }
}
