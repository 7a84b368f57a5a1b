//! How documents are described to people — in the link block of a message,
//! on the link page, in notices and in download headers — so all of them
//! say the same size and date for the same document.

use crate::config::Language;

/// A size for people: `812 Bytes`, `1,5 MB` (German) or `1.5 MB` (English).
///
/// Units are binary (1 KB = 1024 bytes), like the sizes in the config file,
/// so a document at a `25MB` limit shows as "25 MB".
pub fn human_size(bytes: u64, lang: Language) -> String {
    const UNITS: [&str; 6] = ["KB", "MB", "GB", "TB", "PB", "EB"];
    let de = lang == Language::De;
    if bytes < 1024 {
        return match (bytes, de) {
            (1, true) => "1 Byte".to_owned(),
            (_, true) => format!("{bytes} Bytes"),
            (1, false) => "1 byte".to_owned(),
            (_, false) => format!("{bytes} bytes"),
        };
    }
    let bytes = u128::from(bytes);
    let mut unit = 0;
    let mut scale: u128 = 1024;
    while unit + 1 < UNITS.len() && bytes >= scale * 1024 {
        unit += 1;
        scale *= 1024;
    }
    let mut tenths = (bytes * 10 + scale / 2) / scale;
    // 1023.96 KB would round to "1024 KB"; show "1 MB" instead.
    if tenths >= 10240 && unit + 1 < UNITS.len() {
        unit += 1;
        scale *= 1024;
        tenths = (bytes * 10 + scale / 2) / scale;
    }
    let (whole, frac) = (tenths / 10, tenths % 10);
    let unit = UNITS[unit];
    match (frac, de) {
        (0, _) => format!("{whole} {unit}"),
        (_, true) => format!("{whole},{frac} {unit}"),
        (_, false) => format!("{whole}.{frac} {unit}"),
    }
}

/// A date (UTC) from Unix milliseconds: `31.12.2025` (German) or
/// `2025-12-31` (English, ISO 8601, unambiguous across countries).
pub fn date(unix_ms: i64, lang: Language) -> String {
    let (y, m, d) = civil_from_days(unix_ms.div_euclid(86_400_000));
    match lang {
        Language::De => format!("{d:02}.{m:02}.{y:04}"),
        Language::En => format!("{y:04}-{m:02}-{d:02}"),
    }
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (H. Hinnant's algorithm); exact for every i64 day count that
/// an i64 of milliseconds can produce.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The ASCII spelling of the non-ASCII characters German text and file
/// names commonly have (`ä` → `ae`, `€` → `EUR`, typographic quotes and
/// dashes); `None` for anything else.
pub fn transliterate(c: char) -> Option<&'static str> {
    Some(match c {
        'ä' => "ae",
        'ö' => "oe",
        'ü' => "ue",
        'Ä' => "Ae",
        'Ö' => "Oe",
        'Ü' => "Ue",
        'ß' => "ss",
        '…' => "...",
        '–' | '—' => "-",
        '„' | '“' | '”' | '«' | '»' => "\"",
        '‚' | '‘' | '’' => "'",
        '€' => "EUR",
        '\u{A0}' => " ",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(human_size(0, Language::De), "0 Bytes");
        assert_eq!(human_size(1, Language::En), "1 byte");
        assert_eq!(human_size(245 * 1024, Language::De), "245 KB");
        assert_eq!(human_size(1024 * 1024 - 1, Language::De), "1 MB");
        assert_eq!(human_size(1_572_864, Language::De), "1,5 MB");
        assert_eq!(human_size(1_572_864, Language::En), "1.5 MB");
        assert_eq!(human_size(3 * 1024 * 1024 * 1024, Language::En), "3 GB");
        let _ = human_size(u64::MAX, Language::De);
    }

    #[test]
    fn dates() {
        // 2026-12-06 12:00 UTC
        let t = 1_796_558_400_000;
        assert_eq!(date(t, Language::De), "06.12.2026");
        assert_eq!(date(t, Language::En), "2026-12-06");
        assert_eq!(date(0, Language::En), "1970-01-01");
        assert_eq!(date(-1, Language::En), "1969-12-31");
        assert_eq!(date(951_782_400_000, Language::En), "2000-02-29");
        let _ = date(i64::MAX, Language::De);
        let _ = date(i64::MIN, Language::De);
    }

    #[test]
    fn transliteration() {
        assert_eq!(transliterate('ü'), Some("ue"));
        assert_eq!(transliterate('€'), Some("EUR"));
        assert_eq!(transliterate('漢'), None);
    }
}
