//! Dates of birth.
//!
//! A date is `dd.mm.yyyy`, `d.m.yy`, `3. Mai 2012` (also `3 Mai 2012`,
//! `Sept.`), `yyyy-mm-dd` or `dd/mm/yyyy`, with a valid day and month and a
//! year (two digits or 1900–2099). It is a date of birth when
//! - it follows a birth keyword — `geb.`, `geboren`, `Geburtsdatum`,
//!   `Geb.-Datum`, `Geburtstag`, `DOB`, `date of birth`, `born` — within 40
//!   bytes and at most three words, without a clause break (`,` `;` `.` `!`
//!   `?` or a blank line) in between ("Frau Schulz, geb. Meyer, …" is not);
//! - or it is marked with the genealogical star: `(* 02.02.2018)`, `*3.5.2012`;
//! - or it is followed by `geboren` within two words ("ist am 11.12.2013
//!   geboren");
//! - or it stands in the column of a table (`;`, `|` or tab separated) whose
//!   header names one of the keywords.
//!
//! A date right after "nach/vor/bis (zum)/ab/seit/zwischen (dem)" is a
//! cut-off ("Kinder, die nach dem 30.09.2018 geboren sind") and never a
//! date of birth.
//!
//! Other dates — deadlines, school start, letter dates — are not findings.

use std::ops::Range;

use super::text::{is_letter_byte, is_word_byte, words_after};

const MONTHS: &[(&str, u8)] = &[
    ("januar", 1),
    ("jan", 1),
    ("jänner", 1),
    ("februar", 2),
    ("feb", 2),
    ("märz", 3),
    ("mär", 3),
    ("mrz", 3),
    ("april", 4),
    ("apr", 4),
    ("mai", 5),
    ("juni", 6),
    ("jun", 6),
    ("juli", 7),
    ("jul", 7),
    ("august", 8),
    ("aug", 8),
    ("september", 9),
    ("sept", 9),
    ("sep", 9),
    ("oktober", 10),
    ("okt", 10),
    ("november", 11),
    ("nov", 11),
    ("dezember", 12),
    ("dez", 12),
];

/// Parses a date starting at `i` (a digit) in the lowercase text; returns
/// the end of the date.
pub(crate) fn parse_date(lower: &str, i: usize) -> Option<usize> {
    let bytes = lower.as_bytes();
    if i > 0 && is_word_byte(bytes[i - 1]) {
        return None;
    }
    let (a, mut j) = number(bytes, i, 4)?;
    let end = if j - i == 4 {
        // ISO yyyy-mm-dd
        let (m, k) = number_after(bytes, j, b'-', 2)?;
        let (d, k) = number_after(bytes, k, b'-', 2)?;
        valid(d, m, a).then_some(k)?
    } else if bytes.get(j) == Some(&b'.') || bytes.get(j) == Some(&b'/') {
        let sep = bytes[j];
        if let Some((m, k)) = number_after(bytes, j, sep, 2) {
            let (y, k) = year_after(bytes, k, sep)?;
            valid(a, m, y).then_some(k)?
        } else if sep == b'.' {
            j += 1;
            month_name_date(lower, a, j)?
        } else {
            return None;
        }
    } else if bytes.get(j) == Some(&b' ') {
        month_name_date(lower, a, j)?
    } else {
        return None;
    };
    if bytes.get(end).is_some_and(|&b| is_word_byte(b)) {
        return None;
    }
    Some(end)
}

/// " Mai 2012", " Sept. 2012", " Oktober\n2008" after the day.
fn month_name_date(lower: &str, day: u32, mut j: usize) -> Option<usize> {
    let bytes = lower.as_bytes();
    while bytes.get(j).is_some_and(|b| *b == b' ' || *b == b'\n') {
        j += 1;
    }
    let start = j;
    while bytes.get(j).is_some_and(|&b| is_letter_byte(b)) {
        j += 1;
    }
    let word = lower.get(start..j)?;
    let &(_, month) = MONTHS.iter().find(|(name, _)| *name == word)?;
    if bytes.get(j) == Some(&b'.') {
        j += 1;
    }
    let mut spaces = 0;
    while bytes.get(j).is_some_and(|b| *b == b' ' || *b == b'\n') {
        j += 1;
        spaces += 1;
    }
    if spaces == 0 {
        return None;
    }
    let (y, k) = number(bytes, j, 4)?;
    (k - j == 4 && valid(day, u32::from(month), y)).then_some(k)
}

fn number(bytes: &[u8], i: usize, max: usize) -> Option<(u32, usize)> {
    let mut j = i;
    let mut v: u32 = 0;
    while let Some(&b) = bytes.get(j).filter(|b| b.is_ascii_digit()) {
        if j - i == max {
            return None;
        }
        v = v * 10 + u32::from(b - b'0');
        j += 1;
    }
    (j > i).then_some((v, j))
}

fn number_after(bytes: &[u8], i: usize, sep: u8, max: usize) -> Option<(u32, usize)> {
    if bytes.get(i) != Some(&sep) {
        return None;
    }
    number(bytes, i + 1, max)
}

fn year_after(bytes: &[u8], i: usize, sep: u8) -> Option<(u32, usize)> {
    let (y, k) = number_after(bytes, i, sep, 4)?;
    match k - i - 1 {
        2 => Some((y, k)),
        4 if (1900..=2099).contains(&y) => Some((y, k)),
        _ => None,
    }
}

fn valid(d: u32, m: u32, y: u32) -> bool {
    (1..=31).contains(&d) && (1..=12).contains(&m) && (y < 100 || (1900..=2099).contains(&y))
}

/// Byte ranges of the dates of birth (`lower`: the lowercase text).
pub(crate) fn find(lower: &str) -> Vec<Range<usize>> {
    let bytes = lower.as_bytes();
    let mut found: Vec<Range<usize>> = Vec::new();
    let push = |r: Range<usize>, found: &mut Vec<Range<usize>>| {
        if !is_cutoff(lower, r.start) && !found.iter().any(|f| f.start == r.start) {
            found.push(r);
        }
    };
    let mut i = 0;
    while i < bytes.len() {
        // Every keyword starts with one of these letters.
        if matches!(bytes[i], b'g' | b'd' | b'b')
            && let Some(kw_end) = keyword_at(lower, i)
        {
            if let Some(r) = date_after_keyword(lower, kw_end) {
                push(r, &mut found);
            }
            i = kw_end;
            continue;
        }
        if bytes[i].is_ascii_digit()
            && let Some(end) = parse_date(lower, i)
        {
            if star_before(bytes, i) || geboren_after(lower, end) {
                push(i..end, &mut found);
            }
            i = end;
            continue;
        }
        i += 1;
    }
    for r in super::table::column_values(lower, is_keyword_cell) {
        if let Some(end) = lower
            .get(r.clone())
            .and_then(|cell| parse_date(cell.trim_end(), 0))
            .filter(|e| *e == lower[r.clone()].trim_end().len())
        {
            push(r.start..r.start + end, &mut found);
        }
    }
    found.sort_by_key(|r| r.start);
    found
}

/// "nach dem 30.09.2018 … geboren", "bis zum", "ab", "seit", "zwischen":
/// a cut-off date of a rule, not somebody's birthday.
fn is_cutoff(lower: &str, start: usize) -> bool {
    const PREPOSITIONS: &[&str] = &[
        "nach", "vor", "bis", "ab", "seit", "zwischen", "vom", "before", "after",
    ];
    let words = super::text::words_before_wrapped(lower, start, 2, 24);
    match words.as_slice() {
        [w, ..] if PREPOSITIONS.contains(w) => true,
        [article, w, ..] => ["dem", "zum", "den"].contains(article) && PREPOSITIONS.contains(w),
        _ => false,
    }
}

/// The end of a birth keyword starting at `i`, if one does.
fn keyword_at(lower: &str, i: usize) -> Option<usize> {
    let bytes = lower.as_bytes();
    if i > 0 && is_word_byte(bytes[i - 1]) {
        return None;
    }
    let rest = lower.get(i..)?;
    // Longest first: "geb.-datum" before "geb.". All start with g, d or b
    // (`find` relies on that).
    const KEYWORDS: &[&str] = &[
        "geburtsdatum",
        "geb.-datum",
        "geb.datum",
        "geburtstag",
        "geboren",
        "date of birth",
        "geb.",
        "geb:",
        "dob",
        "born",
    ];
    let kw = KEYWORDS.iter().find(|k| rest.starts_with(*k))?;
    let end = i + kw.len();
    // Whole words only ("Geburtstagsfeier", "Doberan" are not keywords).
    if !kw.ends_with(['.', ':']) && bytes.get(end).is_some_and(|&b| is_letter_byte(b)) {
        return None;
    }
    Some(end)
}

fn is_keyword_cell(cell: &str) -> bool {
    let c = cell.trim().trim_end_matches([':', '.']);
    matches!(
        c,
        "geburtsdatum" | "geb.-datum" | "geb" | "dob" | "date of birth" | "geboren am"
    )
}

/// A date within 40 bytes and three words after the keyword, no clause
/// break in between.
fn date_after_keyword(lower: &str, from: usize) -> Option<Range<usize>> {
    let bytes = lower.as_bytes();
    let limit = (from + 40).min(bytes.len());
    let mut i = from;
    let mut words = 0;
    let mut newlines = 0;
    while i < limit {
        let b = bytes[i];
        if b.is_ascii_digit() {
            return parse_date(lower, i).map(|end| i..end);
        }
        if is_letter_byte(b) {
            words += 1;
            if words > 3 {
                return None;
            }
            while i < bytes.len() && is_letter_byte(bytes[i]) {
                i += 1;
            }
            // "geb. am" is fine, "geb. Meyer. Am …" is not.
            if bytes.get(i) == Some(&b'.') && !bytes.get(i + 1).is_some_and(u8::is_ascii_digit) {
                return None;
            }
            continue;
        }
        match b {
            b',' | b';' | b'!' | b'?' | b'.' => return None,
            b'\n' => {
                newlines += 1;
                if newlines > 1 {
                    return None;
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

fn star_before(bytes: &[u8], i: usize) -> bool {
    let mut j = i;
    if j > 0 && bytes[j - 1] == b' ' {
        j -= 1;
    }
    j > 0 && bytes[j - 1] == b'*' && (j < 2 || !is_word_byte(bytes[j - 2]))
}

fn geboren_after(lower: &str, end: usize) -> bool {
    words_after(lower, end, 2, 30)
        .iter()
        .any(|w| *w == "geboren" || *w == "born")
        && !lower
            .get(end..(end + 30).min(lower.len()))
            .is_some_and(|s| {
                s.split("geboren")
                    .next()
                    .is_some_and(|p| p.contains([',', ';', '.']))
            })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(t: &str) -> usize {
        find(&t.to_lowercase()).len()
    }

    #[test]
    fn date_formats() {
        for (t, ok) in [
            ("03.05.2012", true),
            ("3.5.12", true),
            ("3. Mai 2012", true),
            ("3 mai 2012", true),
            ("5. oktober\n2008", true),
            ("12. sept. 2014", true),
            ("2015-06-19", true),
            ("03/05/2012", true),
            ("32.01.2012", false),
            ("03.13.2012", false),
            ("03.05.", false),
            ("3. Mai", false),
            ("03.05.20123", false),
            ("2.14", false),
        ] {
            assert_eq!(parse_date(&t.to_lowercase(), 0).is_some(), ok, "{t}");
        }
    }

    #[test]
    fn birth_dates_after_keywords() {
        for t in [
            "Mia Albrecht, geb. 14.03.2015",
            "geboren am 3. Mai 2013.",
            "Geburtsdatum: 2012-05-03",
            "Geb.-Datum 4.7.17",
            "DOB 03.05.2012",
            "born 14.09.2011",
            "geb.: 23.05.1975",
            "(geb. am 30.01.2011)",
            "Geburtsdatum\t12.04.2013",
            "Emil (* 02.02.2018)",
            "Nele ist am 11.12.2013 geboren.",
            "Name;DOB;Klasse\nNguyen;2013-08-21;6a",
            "Name | Geburtsdatum\nA | 3.5.2012\nB | 4.6.2013",
        ] {
            assert!(count(t) >= 1, "{t}");
        }
    }

    #[test]
    fn other_dates_are_not_birth_dates() {
        for t in [
            "Frau Schulz, geb. Meyer,\n\nIhr Antrag vom 12.06.2024",
            "Schulbeginn am 15.08.2024, Frist bis 31.05.2024.",
            "hat nächste Woche Geburtstag. Wir sammeln bis 12.10.2024",
            "eine Geburtstagsfeier am 13.09.2024",
            "the project was born out of the 2019 survey; next meeting 14.10.2024",
            "Geburtsdatum fehlt noch. Bitte bis 30.09.2024 nachreichen.",
            "Jahrgang 2012, geboren 2012",
            "Am 12.06.2024 hat er, so die Mutter, geboren? nein",
            "Kinder, die nach dem 30.09.2018 und vor dem\n01.10.2019 geboren sind",
        ] {
            assert_eq!(count(t), 0, "{t}");
        }
    }
}
