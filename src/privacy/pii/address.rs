//! Postal addresses: street + house number + PLZ + town.
//!
//! Anchor: a 5-digit PLZ (optionally `D-`) not inside a longer number,
//! followed by a space and a capitalised town name. Going back from the PLZ:
//! separators (space, tab, `,` `;` `|` `-`, at most one line break, or the
//! word "in": "Lindenweg 4 in 31167 Bockenem"), a house number (`12`, `3a`, `3 b`, `21-23`, `12/14`), one space, and a street:
//! its last word ends with a street suffix (straße/str., weg, gasse, platz,
//! allee, ring, damm, ufer, chaussee, pfad, steig, markt, graben, wall, ...),
//! or one of the up to four words before the number is a street prefix
//! (Am, An, Auf, Im, In, Zum, Zur, Hinter, Vor, Unter, Über, Beim, Alte, ...)
//! followed only by capitalised words or articles ("Hinter dem Dorfe 2").
//!
//! The reverse order of forms, "31167 Bockenem, Lindenweg 4" (street and
//! number after a comma, ending the line), is recognised as well.
//!
//! A PLZ alone, a street without PLZ and a `Postfach 10 04 41, 31104 Stadt`
//! are not addresses: a Postfach is no place where somebody lives or can be
//! found. The county's own address in the signature is removed before.

use std::ops::Range;

use super::text::{is_letter_byte, is_word_byte, skip_to};

const SUFFIXES: &[&str] = &[
    "straße",
    "strasse",
    "str.",
    "str",
    "weg",
    "gasse",
    "platz",
    "allee",
    "ring",
    "damm",
    "ufer",
    "chaussee",
    "pfad",
    "steig",
    "stieg",
    "markt",
    "graben",
    "wall",
    "kamp",
    "twiete",
    "redder",
    "promenade",
    "anger",
    "brink",
    "winkel",
    "hof",
    "berg",
    "feld",
    "garten",
    "tor",
    "brücke",
    "siedlung",
    "höhe",
    "grund",
    "wiesen",
    "wiese",
    "aue",
    "hang",
    "blick",
    "park",
    "bogen",
    "kehre",
    "zeile",
    "gang",
    "stiege",
    "hain",
    "horst",
    "kai",
    "deich",
    "busch",
    "heide",
    "grube",
    "gärten",
    "breite",
];

/// Street prefixes that carry their article ("Am Markt", "Zur Mühle").
const PREFIXES: &[&str] = &[
    "am", "im", "zum", "zur", "beim", "vorm", "hinterm", "unterm", "überm", "auf'm", "alte",
    "alter", "altes", "neue", "neuer", "neues", "große", "großer", "kleine", "kleiner", "hohe",
    "hoher", "lange", "langer", "obere", "oberer", "untere", "unterer",
];

/// Prepositions that start a street only with an article ("An der Lamme",
/// "In den Kämpen", "Hinter dem Dorfe"); "in Raum 12" is no street.
const PREPOSITIONS: &[&str] = &["an", "in", "auf", "hinter", "vor", "unter", "über", "bei"];

const ARTICLES: &[&str] = &[
    "der", "die", "das", "dem", "den", "des", "alten", "neuen", "kleinen", "großen", "langen",
    "hohen",
];

/// Byte ranges (house number to PLZ) of the addresses in `text`
/// (`lower`: same-length lowercase copy).
pub(crate) fn find(text: &str, lower: &str) -> Vec<Range<usize>> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i + 5 <= bytes.len() {
        if !bytes[i].is_ascii_digit() {
            i = skip_to(bytes, i + 1, |b| b.is_ascii_digit());
            continue;
        }
        if i > 0 && (bytes[i - 1].is_ascii_digit() || is_letter_byte(bytes[i - 1])) {
            i += 1;
            continue;
        }
        let run = bytes[i..].iter().take_while(|b| b.is_ascii_digit()).count();
        if run == 5 && town_follows(text, i + 5) {
            let plz_start = strip_country(bytes, i);
            if let Some(number_start) = street_before(text, lower, plz_start) {
                found.push(number_start..i + 5);
            } else if let Some(end) = street_after(text, lower, i + 5) {
                found.push(plz_start..end);
            }
        }
        i += run.max(1);
    }
    found
}

/// "D-31134" / "DE-31134": the PLZ anchor moves to the country prefix.
fn strip_country(bytes: &[u8], i: usize) -> usize {
    for p in [b"D-".as_slice(), b"DE-".as_slice()] {
        if i >= p.len()
            && &bytes[i - p.len()..i] == p
            && (i == p.len() || !is_word_byte(bytes[i - p.len() - 1]))
        {
            return i - p.len();
        }
    }
    i
}

/// One or two spaces, then a capitalised word of two or more letters.
fn town_follows(text: &str, mut j: usize) -> bool {
    let bytes = text.as_bytes();
    if bytes
        .get(j)
        .is_some_and(|&b| b.is_ascii_digit() || b == b'.' || b == b',')
        && bytes.get(j + 1).is_some_and(u8::is_ascii_digit)
    {
        return false;
    }
    let mut spaces = 0;
    while bytes.get(j) == Some(&b' ') {
        j += 1;
        spaces += 1;
    }
    if !(1..=2).contains(&spaces) {
        return false;
    }
    let Some(rest) = text.get(j..) else {
        return false;
    };
    let mut chars = rest.chars();
    matches!(chars.next(), Some(c) if c.is_uppercase())
        && matches!(chars.next(), Some(c) if c.is_alphabetic())
}

/// Start of the house number when a street with number ends right before
/// the PLZ at `plz`.
fn street_before(text: &str, lower: &str, plz: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut j = plz;
    let mut newlines = 0;
    let mut skipped = 0;
    while j > 0 {
        match bytes[j - 1] {
            b' ' | b'\t' | b',' | b';' | b'|' | b'-' => {}
            b'\n' => {
                newlines += 1;
                if newlines > 1 {
                    return None;
                }
            }
            _ => break,
        }
        j -= 1;
        skipped += 1;
        if skipped > 8 {
            return None;
        }
    }
    // "Lindenweg 4 in 31167 Bockenem"
    if skipped > 0 && j >= 3 && &bytes[j - 3..j] == b" in" && bytes[j] == b' ' {
        j -= 3;
    }
    if skipped == 0 {
        return None;
    }
    let number_start = house_number_start(bytes, j)?;
    // Exactly one space between street and number.
    if number_start < 2 || bytes[number_start - 1] != b' ' || bytes[number_start - 2] == b' ' {
        return None;
    }
    is_street(lower, number_start - 1).then_some(number_start)
}

/// The reverse order of forms: "31167 Bockenem, Lindenweg 4" — town, comma,
/// then street and number ending the line (or followed by `,` `;` `.` `)`).
/// Returns the end of the house number.
fn street_after(text: &str, lower: &str, plz_end: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let line_end = memchr::memchr(b'\n', &bytes[plz_end..]).map_or(bytes.len(), |n| plz_end + n);
    let limit = line_end.min(plz_end + 100);
    let comma = plz_end + memchr::memchr(b',', &bytes[plz_end..limit])?;
    let stop = bytes[comma + 1..limit]
        .iter()
        .position(|b| matches!(b, b',' | b';' | b')'))
        .map_or(limit, |n| comma + 1 + n);
    let mut end = stop;
    while end > comma + 1 && matches!(bytes[end - 1], b' ' | b'\t' | b'.') {
        end -= 1;
    }
    let number_start = house_number_start(bytes, end)?;
    if number_start < comma + 3
        || bytes[number_start - 1] != b' '
        || bytes[number_start - 2] == b' '
    {
        return None;
    }
    is_street(lower, number_start - 1).then_some(end)
}

/// House number ending at `end`: digits with an optional letter (also after
/// one space) and an optional range ("21-23", "12/14", "3a-c").
fn house_number_start(bytes: &[u8], end: usize) -> Option<usize> {
    let mut j = end;
    // Optional letter suffix: "3a", "3 b".
    if j > 0 && bytes[j - 1].is_ascii_lowercase() && (j < 2 || !is_letter_byte(bytes[j - 2])) {
        j -= 1;
        if j > 0 && bytes[j - 1] == b' ' {
            j -= 1;
        }
    }
    let digits_end = j;
    while j > 0 && bytes[j - 1].is_ascii_digit() {
        j -= 1;
    }
    let n = digits_end - j;
    if n == 0 || n > 4 {
        return None;
    }
    // Range: "21-23" / "12/14".
    if j >= 2 && matches!(bytes[j - 1], b'-' | b'/') && bytes[j - 2].is_ascii_digit() {
        let mut k = j - 1;
        while k > 0 && bytes[k - 1].is_ascii_digit() {
            k -= 1;
        }
        if j - 1 - k <= 4 {
            j = k;
        }
    }
    if bytes[j] == b'0' {
        return None;
    }
    Some(j)
}

/// Does a street name end at `end` (exclusive, right before the space)?
fn is_street(lower: &str, end: usize) -> bool {
    let bytes = lower.as_bytes();
    let mut words: Vec<&str> = Vec::with_capacity(5);
    let mut j = end;
    while words.len() < 5 && j > 0 {
        let word_end = j;
        // A word may end with '.' ("Str.") and contain '-' ("Bischof-Janssen-Straße").
        if bytes[j - 1] == b'.' {
            j -= 1;
        }
        while j > 0
            && (is_letter_byte(bytes[j - 1]) || bytes[j - 1] == b'-' || bytes[j - 1] == b'\'')
        {
            j -= 1;
        }
        let Some(word) = lower.get(j..word_end) else {
            return false;
        };
        if word.is_empty() || word == "." {
            break;
        }
        words.push(word);
        if j == 0 || bytes[j - 1] != b' ' {
            break;
        }
        j -= 1;
    }
    let Some(last) = words.first() else {
        return false;
    };
    let last_part = last.rsplit('-').next().unwrap_or(last);
    if SUFFIXES.iter().any(|s| last_part.ends_with(s)) && last_part.len() >= 3 {
        return true;
    }
    // "Am Markt", "Zur Mühle", "Hinter dem Dorfe", "An der Lamme".
    for (n, w) in words.iter().enumerate().skip(1) {
        if PREFIXES.contains(w) {
            return true;
        }
        if PREPOSITIONS.contains(w) && n >= 2 && ARTICLES.contains(&words[n - 1]) {
            return true;
        }
        if !ARTICLES.contains(w) && n >= 3 {
            break;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(t: &str) -> usize {
        find(t, &t.to_lowercase()).len()
    }

    #[test]
    fn addresses() {
        for t in [
            "Hauptstraße 12, 12345 Musterstadt",
            "Am Markt 3a\n34567 Neustadt",
            "Hildesheimer Str. 112, 31180 Giesen",
            "Alte Dorfstraße 3 b, 31177 Harsum",
            "Bahnhofstr. 21-23, 31157 Sarstedt",
            "Hinter dem Dorfe 2, 31199 Diekholzen",
            "Zur Mühle 7\n31188 Holle",
            "Im Sande 12, 31162 Bad Salzdetfurth",
            "Kaiserstraße 17 · 31134 Leinestadt"
                .replace('·', ",")
                .as_str(),
            "Bischof-Janssen-Straße 31, D-31134 Hildesheim",
            "Gewerbering 12, 31137 Leinestadt",
            "An der Lamme 2, 31167 Bockenem",
            "wir wohnen Lindenweg 4 in 31167 Bockenem, neben der Kirche",
            "Wohnort: 31167 Bockenem, Lindenweg 4\nSchule: X",
            "31162 Bad Salzdetfurth, Am Alten Weg 4.",
        ] {
            assert_eq!(count(t), 1, "{t}");
        }
    }

    #[test]
    fn not_addresses() {
        for t in [
            "Postfach 10 04 41, 31104 Leinestadt",
            "Ihr Wohnort 31180 Giesen liegt 3,8 km entfernt",
            "Haltestellen der Linie 520:\n31150 Leinestadt ZOB",
            "Bahnhofstraße 21 vor der Bäckerei",
            "Zimmer 204, 31134 Leinestadt",
            "Treffen in Raum 12, 31134 Leinestadt",
            "Lindenweg, 31137 Leinestadt",
            "Kundennummer 12345 Berlin",
            "Hauptstraße 12, 123456 Musterstadt",
            "Hauptstraße 12, 12345 musterstadt",
            "Hauptstraße 12,\n\n12345 Musterstadt",
            "31167 Bockenem, Linie 512",
            "31134 Leinestadt, den 12.03.2024",
            "Wohnort: 31167 Bockenem, Zimmer 4",
        ] {
            assert_eq!(count(t), 0, "{t}");
        }
    }
}
