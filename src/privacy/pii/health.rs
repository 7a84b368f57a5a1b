//! Health and disability terms (GDPR Art. 9 special categories).
//!
//! The text is split into words (letters only, so hyphenated compounds
//! become separate words: "Epilepsie-Notfallmedikament" gives "Epilepsie"
//! and "Notfallmedikament"), lowercased, and each word is matched against a
//! curated German list. Most terms are stems matched anywhere inside a
//! compound ("Rollstuhlfahrerin", "Notfallmedikament", "Kinderärztin",
//! "Physiotherapie"); short or ambiguous ones are matched as word starts
//! ("Reha", "Fieber", "blind") or whole words ("Gips", "ADHS", "GdB").
//!
//! Decisions (documented, deliberately conservative):
//! - Thing compounds are not about a person: "rollstuhlgerecht",
//!   "Rollstuhlstellplätze", "allergiefreundlich", "Behindertenparkplatz",
//!   "Krankenkasse", "Krankenversicherung".
//! - "Behinderung(en)"/"behindert" alone and "Diagnose" are ambiguous: they
//!   are dropped when a traffic or technical word stands within ten words
//!   ("Verkehrsbehinderung", "Baustelle", "Werkstatt", "Motor", "Fahrzeug",
//!   "Fehler…", "…gerät": "Diagnosegerät"); "Verkehrs-/Sicht-/Betriebsbehinderung" never count, nor
//!   does "anfallend" (only "Anfall", "Anfälle", "Krampfanfall").
//! - Places are not health data: "Krankenhaus", "Klinik…", "Reha…",
//!   "Ärztehaus" shortly after "Haltestelle"/"Hst."/"hält (am)" or inside a
//!   quoted name (a bus stop: `in "Leinestadt, Klinikum Mitte" umbenannt`).
//! - "krankheitsbedingte Personalausfälle" (anonymous staff) is not counted.
//! - Sentences about groups are not about a person: a gender-inclusive
//!   plural ("Schülerinnen und Schüler mit einer Behinderung werden …",
//!   "Schwerbehinderte Bewerberinnen und Bewerber …", "Fahrer/innen") or
//!   "(m/w/d)" in the same sentence drops the health words in it.
//! - Injuries: "Beinbruch", "Fraktur", "Prellung", and an injury verb right
//!   after a body part ("hat sich den Arm gebrochen").
//! - "Förderschwerpunkt" counts when followed by a disability-related focus
//!   (körperlich, motorisch, geistig, Sehen, Hören, emotional, Sprache),
//!   not when it describes a school ("Förderschule mit dem Förderschwerpunkt").

use std::ops::Range;

use super::health_terms::{
    self, INJURY_VERBS, Kind, PLACE_PARTS, SEIZURE_ENDINGS, TECHNICAL, TERMS, THING_PARTS,
};

struct Word<'a> {
    lower: &'a str,
    range: Range<usize>,
}

/// Byte ranges of the health terms in `text` (`lower`: same-length lowercase).
///
/// Most words of a text contain no term at all, so one automaton pass over
/// the whole text (every string whose presence [`is_term`] needs) marks the
/// few words worth the full check; the rest can only be "GdB" or "OP".
pub(crate) fn find(text: &str, lower: &str) -> Vec<Range<usize>> {
    let words = split_words(lower);
    // A needle is letters only, so each hit lies inside one word, and the
    // earliest-ending search reports at least one hit in every word that
    // holds a needle.
    let mut hits = health_terms::needles()
        .find_iter(lower)
        .map(|m| m.start())
        .peekable();
    let mut found = Vec::new();
    for (n, w) in words.iter().enumerate() {
        let mut candidate = false;
        while let Some(&at) = hits.peek() {
            if at >= w.range.end {
                break;
            }
            candidate |= at >= w.range.start;
            hits.next();
        }
        let original = text.get(w.range.clone()).unwrap_or_default();
        let short_term = original == "GdB" || original == "OP";
        if (candidate || short_term) && matches(lower, &words, n, original) {
            found.push(w.range.clone());
        }
    }
    found
}

fn split_words(lower: &str) -> Vec<Word<'_>> {
    let mut words = Vec::new();
    let mut start = None;
    let bytes = lower.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let (alphabetic, width) = if bytes[i].is_ascii() {
            (bytes[i].is_ascii_alphabetic(), 1)
        } else {
            let c = lower[i..].chars().next().unwrap_or(' ');
            (c.is_alphabetic(), c.len_utf8())
        };
        match (alphabetic, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                words.push(Word {
                    lower: &lower[s..i],
                    range: s..i,
                });
                start = None;
            }
            _ => {}
        }
        i += width;
    }
    if let Some(s) = start {
        words.push(Word {
            lower: &lower[s..],
            range: s..lower.len(),
        });
    }
    words
}

/// Is word `n` a health term about a person? The term itself first (cheap),
/// then the exceptions that need the surrounding words.
fn matches(lower: &str, words: &[Word<'_>], n: usize, original: &str) -> bool {
    let w = words[n].lower;
    let term = original == "GdB" || original == "OP" || (w.len() >= 4 && is_term(words, n));
    term && !THING_PARTS.iter().any(|p| w.contains(p))
        && !is_place(lower, words, n)
        && !group_statement(lower, words, n)
}

fn is_term(words: &[Word<'_>], n: usize) -> bool {
    let w = words[n].lower;
    // "rollierend" (rotating schedules) is not "Rolli", "Magenta" no stomach.
    if w.starts_with("rollier") || w.starts_with("magenta") {
        return false;
    }
    if w.contains("behinder") {
        return disability_word(words, n);
    }
    if is_seizure(w) || is_injury(words, n) {
        return true;
    }
    if w.starts_with("förderschwerpunkt") {
        return focus_is_disability(words, n);
    }
    if w.starts_with("krankheitsbedingt")
        && words
            .get(n + 1)
            .is_some_and(|next| next.lower.contains("personal") || next.lower.starts_with("ausf"))
    {
        return false;
    }
    let Some(&(term, _)) = TERMS.iter().find(|(t, kind)| match kind {
        Kind::Stem => w.contains(t),
        Kind::Start => w.starts_with(t),
        Kind::Whole => w == *t,
    }) else {
        return false;
    };
    !(term == "diagnos" && technical_nearby(words, n))
}

/// "den Arm gebrochen", "den Fuß verstaucht": an injury verb within three
/// words after a body part.
fn is_injury(words: &[Word<'_>], n: usize) -> bool {
    const BODY: &[&str] = &[
        "arm",
        "bein",
        "fuß",
        "hand",
        "finger",
        "handgelenk",
        "schlüsselbein",
        "zeh",
        "knöchel",
        "knie",
        "schulter",
        "ellenbogen",
        "nase",
        "rippe",
        "rippen",
    ];
    INJURY_VERBS.contains(&words[n].lower)
        && words[n.saturating_sub(3)..n]
            .iter()
            .any(|b| BODY.contains(&b.lower))
}

/// Is word `n` in a sentence about a group rather than a person? Marked by
/// a gender-inclusive plural ("Schülerinnen und Schüler", "Fahrerinnen
/// und Fahrer", "Bewerber/innen") or "(m/w/d)": the language of rules,
/// statistics and job advertisements.
fn group_statement(lower: &str, words: &[Word<'_>], n: usize) -> bool {
    let (from, to) = sentence(lower, words, n);
    let ws = &words[from..to];
    ws.iter().enumerate().any(|(k, w)| {
        let pair = w.lower.len() > 7
            && w.lower.ends_with("innen")
            && ws
                .get(k + 1)
                .is_some_and(|c| c.lower == "und" || c.lower == "oder")
            && ws
                .get(k + 2)
                .is_some_and(|m| m.lower.len() >= 4 && w.lower.starts_with(m.lower));
        let slash = w.lower == "innen" && k > 0;
        let mwd = w.lower == "m"
            && ws.get(k + 1).is_some_and(|x| x.lower == "w")
            && ws.get(k + 2).is_some_and(|x| x.lower == "d");
        pair || slash || mwd
    })
}

/// Word index range of the sentence around word `n` (at most 25 words each
/// way). A boundary is `!`, `?`, `;`, an empty line, or a `.` followed by
/// whitespace that does not end a short abbreviation ("St.", "Nr.", "geb.").
fn sentence(lower: &str, words: &[Word<'_>], n: usize) -> (usize, usize) {
    let boundary = |k: usize| -> bool {
        // Gap between words[k - 1] and words[k].
        let gap = &lower[words[k - 1].range.end..words[k].range.start];
        if gap.contains(['!', '?', ';']) || gap.contains("\n\n") {
            return true;
        }
        let gb = gap.as_bytes();
        gb.iter().enumerate().any(|(i, &b)| {
            b == b'.'
                && gb.get(i + 1).is_some_and(|c| c.is_ascii_whitespace())
                && (i > 0 || words[k - 1].lower.chars().count() > 3)
        })
    };
    let mut from = n;
    while from > 0 && n - from < 25 && !boundary(from) {
        from -= 1;
    }
    let mut to = n + 1;
    while to < words.len() && to - n < 25 && !boundary(to) {
        to += 1;
    }
    (from, to)
}

/// "Anfall", "Anfälle", "Krampfanfall", "Asthmaanfall"; not "anfallend".
fn is_seizure(w: &str) -> bool {
    SEIZURE_ENDINGS.iter().any(|s| w.ends_with(s))
}

fn disability_word(words: &[Word<'_>], n: usize) -> bool {
    let w = words[n].lower;
    const NOT_PERSON: &[&str] = &[
        "verkehrs", "sicht", "betriebs", "bau", "fahrbahn", "straßen", "ablauf",
    ];
    if NOT_PERSON.iter().any(|p| w.starts_with(p)) {
        return false;
    }
    if TERMS
        .iter()
        .any(|(t, _)| t.ends_with("behindert") && w.contains(t))
    {
        return true;
    }
    if w.starts_with("behinderung") || w.starts_with("behindert") {
        // Ambiguous: a person's disability or an obstruction of traffic.
        return !technical_nearby(words, n);
    }
    // Other compounds: "Schwerbehinderung", "Sehbehinderung", "Mehrfachbehinderung".
    w.contains("behinderung")
}

fn technical_nearby(words: &[Word<'_>], n: usize) -> bool {
    let from = n.saturating_sub(10);
    let to = (n + 11).min(words.len());
    words[from..to]
        .iter()
        .any(|w| TECHNICAL.iter().any(|t| w.lower.contains(t)))
}

/// A place-like word ("Krankenhaus", "Klinikum") in a bus stop name: within
/// six words after "Haltestelle"/"Hst."/"hält", or inside a quoted name on
/// the same line.
fn is_place(lower: &str, words: &[Word<'_>], n: usize) -> bool {
    let w = words[n].lower;
    if !PLACE_PARTS.iter().any(|p| w.contains(p)) {
        return false;
    }
    let after_stop = words[n.saturating_sub(6)..n].iter().any(|p| {
        p.lower.contains("haltestelle")
            || p.lower == "hst"
            || p.lower.starts_with("haltepunkt")
            || p.lower == "hält"
            || p.lower == "halten"
    });
    after_stop || in_quoted_name(lower, words[n].range.clone())
}

/// An odd number of `"` before the word on its line and one after it.
fn in_quoted_name(lower: &str, range: Range<usize>) -> bool {
    let bytes = lower.as_bytes();
    let line_start = memchr::memrchr(b'\n', &bytes[..range.start]).map_or(0, |i| i + 1);
    let line_end =
        memchr::memchr(b'\n', &bytes[range.end..]).map_or(bytes.len(), |i| range.end + i);
    let before = bytes[line_start..range.start]
        .iter()
        .filter(|&&b| b == b'"')
        .count();
    before % 2 == 1 && bytes[range.end..line_end].contains(&b'"')
}

fn focus_is_disability(words: &[Word<'_>], n: usize) -> bool {
    const FOCUS: &[&str] = &[
        "körperlich",
        "motorisch",
        "geistig",
        "sehen",
        "hören",
        "emotional",
        "sprache",
    ];
    let describes_school = words[n.saturating_sub(4)..n]
        .iter()
        .any(|p| p.lower.contains("schule"));
    let focus = words[n + 1..(n + 4).min(words.len())]
        .iter()
        .any(|f| FOCUS.iter().any(|x| f.lower.starts_with(x)));
    focus && !describes_school
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The automaton in `find` only lets through words holding a needle:
    /// every word of the labelled corpus that `is_term` accepts must hold
    /// one, or a change to `is_term` silently stopped counting.
    #[test]
    fn needles_cover_every_rule() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pii");
        let mut texts = 0;
        for entry in std::fs::read_dir(dir).expect("corpus dir") {
            let path = entry.expect("dir entry").path();
            if path.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("corpus file");
            let lower = super::super::text::lowercase_same_len(&text);
            let words = split_words(&lower);
            for n in 0..words.len() {
                if is_term(&words, n) {
                    assert!(
                        health_terms::needles().is_match(words[n].lower),
                        "{}: {}",
                        path.display(),
                        words[n].lower
                    );
                }
            }
            texts += 1;
        }
        assert!(texts >= 5, "corpus not found");
    }

    fn count(t: &str) -> usize {
        find(t, &t.to_lowercase()).len()
    }

    #[test]
    fn terms_and_compounds() {
        for t in [
            "Sophie sitzt im Rollstuhl.",
            "Rollstuhlfahrerin (E-Rollstuhl)",
            "das Epilepsie-Notfallmedikament",
            "Emre hat Krampfanfälle",
            "hatte im Bus einen Anfall",
            "Schwerbehindertenausweis mit Merkzeichen aG",
            "GdB 80",
            "Pflegegrad 3",
            "Diabetes Typ 1, Insulin",
            "Autismus-Spektrum-Störung",
            "ADHS",
            "ärztliches Attest der Kinderärztin",
            "im Krankenhaus",
            "Leonie ist heute krank",
            "Sehbehinderung diagnostiziert",
            "mit Gips und Krücken",
            "Down-Syndrom",
            "psychischen Erkrankung",
            "Depression",
            "Förderschwerpunkt körperliche und motorische Entwicklung",
            "Hörgeräte",
            "Chemotherapie",
            "Dialyse",
            "Erdnussallergie",
            "ein Kind mit Behinderung",
            "Lena hat sich den Arm gebrochen.",
            "Jonas hat Heuschnupfen.",
            "nach einer OP am Knie",
            "Lotte ist Rollifahrerin",
            "Leni hat Magen-Darm",
            "Die Schülerinnen und Schüler sind informiert. Emre hat Epilepsie.",
        ] {
            assert!(count(t) >= 1, "{t}");
        }
    }

    #[test]
    fn look_alikes_are_not_health_data() {
        for t in [
            "Fahrplanänderung ab Montag",
            "die anfallenden Kosten",
            "wegen der Verkehrsbehinderung auf der B 243",
            "Bauarbeiten führen zu Behinderungen und Verspätungen",
            "rollstuhlgerechte Niederflurbusse",
            "zwei Rollstuhlstellplätze mit Kraftknotensystem",
            "Jugendherberge mit allergiefreundlicher Küche",
            "nach der Fehlerdiagnose in der Werkstatt",
            "die Werkstatt hat noch keine Diagnose gestellt",
            "Haltestelle \"Leinestadt, St.-Bernward-Krankenhaus\"",
            "wird in \"Leinestadt, Klinikum Mitte\" umbenannt",
            "Das neue Diagnosegerät für die Busflotte",
            "aufgrund krankheitsbedingter Personalausfälle",
            "neben den Behindertenparkplätzen",
            "Förderschule mit dem Förderschwerpunkt geistige Entwicklung",
            "Ihre Krankenkasse",
            "Gdb",
            "Statistik, Attraktion, Anfahrt, Therme",
            "Schülerinnen und Schüler mit einer Behinderung werden befördert, wenn die Behinderung dies erfordert.",
            "Schwerbehinderte Bewerberinnen und Bewerber werden bevorzugt.",
            "Busfahrer (m/w/d) mit ärztlicher Untersuchung gesucht",
            "Das Eis ist gebrochen.",
            "die Linie hält ab Montag nicht mehr am Ärztehaus Süd",
            "ein rollierendes System, die OPNV-Linie",
        ] {
            assert_eq!(count(t), 0, "{t}");
        }
    }
}
