//! HTML to plain text for the scanners: tags removed, `<script>`, `<style>`,
//! `<title>` and `<template>` contents and comments dropped, entities
//! decoded, whitespace collapsed as a browser would, block elements and
//! `<br>` turned into line breaks and table cells into tabs (so a table row
//! stays one line: "Geburtsdatum<TAB>12.04.2013"). One linear pass.

/// Converts HTML to text; see the module documentation.
pub fn html_to_text(html: &str) -> String {
    let bytes = html.as_bytes();
    let mut out = String::with_capacity(html.len() / 2);
    let mut pre = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'<' => {
                if let Some(next) = tag(html, i, &mut out, &mut pre) {
                    i = next;
                } else {
                    push_char(&mut out, '<', pre > 0);
                    i += 1;
                }
            }
            b'&' => {
                let (c, len) = entity(&html[i..]);
                match c {
                    Some(c) => push_char(&mut out, c, pre > 0),
                    None => push_char(&mut out, '&', pre > 0),
                }
                i += len;
            }
            _ => {
                // Copy the run of plain text up to the next '<' or '&'.
                let end = memchr::memchr2(b'<', b'&', &bytes[i..]).map_or(bytes.len(), |n| i + n);
                for c in html[i..end].chars() {
                    push_char(&mut out, c, pre > 0);
                }
                i = end;
            }
        }
    }
    let trimmed = out.trim_end().len();
    out.truncate(trimmed);
    out
}

fn push_char(out: &mut String, c: char, preformatted: bool) {
    if preformatted {
        out.push(c);
    } else if c.is_whitespace() && c != '\u{a0}' {
        if !out.is_empty() && !out.ends_with([' ', '\n', '\t']) {
            out.push(' ');
        }
    } else {
        out.push(if c == '\u{a0}' { ' ' } else { c });
    }
}

/// Ends the current line. `<br>` always does (two give an empty line);
/// block elements only when the line is not empty already.
fn newline(out: &mut String, br: bool) {
    while out.ends_with(' ') {
        out.pop();
    }
    let limit = if br { "\n\n" } else { "\n" };
    if !out.is_empty() && !out.ends_with(limit) {
        out.push('\n');
    }
}

/// Handles a tag, comment or declaration at `i`; returns the position after
/// it, or `None` when the `<` is just text.
fn tag(html: &str, i: usize, out: &mut String, pre: &mut usize) -> Option<usize> {
    let bytes = html.as_bytes();
    let rest = &bytes[i + 1..];
    if rest.starts_with(b"!--") {
        return Some(find(bytes, i + 4, b"-->").map_or(bytes.len(), |e| e + 3));
    }
    let closing = rest.first() == Some(&b'/');
    let name_start = i + 1 + usize::from(closing);
    let first = *bytes.get(name_start)?;
    if !(first.is_ascii_alphabetic() || first == b'!' || first == b'?') {
        return None;
    }
    let name_end = bytes[name_start..]
        .iter()
        .position(|b| !b.is_ascii_alphanumeric())
        .map_or(bytes.len(), |n| name_start + n);
    let name = html[name_start..name_end].to_ascii_lowercase();
    let end = tag_end(bytes, name_end);
    let self_closing = end >= 2 && bytes[end - 2] == b'/';
    if !closing
        && !self_closing
        && matches!(name.as_str(), "script" | "style" | "title" | "template")
    {
        let close = format!("</{name}");
        return Some(
            find_ci(bytes, end, close.as_bytes())
                .map_or(bytes.len(), |e| tag_end(bytes, e + close.len())),
        );
    }
    match name.as_str() {
        "pre" if closing => *pre = pre.saturating_sub(1),
        "pre" => *pre += 1,
        _ => {}
    }
    match name.as_str() {
        "td" | "th" if !closing && !out.is_empty() && !out.ends_with('\n') => {
            while out.ends_with(' ') {
                out.pop();
            }
            out.push('\t');
        }
        "br" => newline(out, true),
        "p" | "div" | "li" | "ul" | "ol" | "tr" | "table" | "tbody" | "thead" | "tfoot" | "h1"
        | "h2" | "h3" | "h4" | "h5" | "h6" | "blockquote" | "pre" | "hr" | "section"
        | "article" | "header" | "footer" | "address" | "dd" | "dt" | "dl" | "center"
        | "caption" | "figure" | "nav" | "main" | "aside" | "form" | "fieldset" | "body" => {
            newline(out, false)
        }
        _ => {}
    }
    Some(end)
}

/// Position after the `>` that closes a tag, skipping quoted attributes.
fn tag_end(bytes: &[u8], mut i: usize) -> usize {
    let mut quote = None;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'"' || b == b'\'' => quote = Some(b),
            None if b == b'>' => return i + 1,
            None => {}
        }
        i += 1;
    }
    bytes.len()
}

fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay.get(from..)?, needle).map(|n| from + n)
}

/// Case-insensitive search for an ASCII needle starting with `<`.
fn find_ci(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    let mut i = from;
    while let Some(p) = find(hay, i, b"<") {
        if hay
            .get(p..p + needle.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(needle))
        {
            return Some(p);
        }
        i = p + 1;
    }
    None
}

/// Decodes the entity at the start of `s` (which begins with `&`). Returns
/// the character (or `None` for an unknown entity, kept as text) and the
/// number of bytes consumed.
fn entity(s: &str) -> (Option<char>, usize) {
    let body = &s.as_bytes()[1..];
    let Some(semi) = body.iter().take(32).position(|&b| b == b';') else {
        return (None, 1);
    };
    let name = &s[1..1 + semi];
    let c = if let Some(num) = name.strip_prefix('#') {
        let value = match num.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok(),
            None => num.parse::<u32>().ok(),
        };
        match value {
            Some(0) | None => None,
            Some(v) => Some(char::from_u32(v).unwrap_or('\u{fffd}')),
        }
    } else {
        named(name)
    };
    match c {
        Some(c) => (Some(c), semi + 2),
        None => (None, 1),
    }
}

fn named(name: &str) -> Option<char> {
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => '\u{a0}',
        "auml" => 'ä',
        "ouml" => 'ö',
        "uuml" => 'ü',
        "Auml" => 'Ä',
        "Ouml" => 'Ö',
        "Uuml" => 'Ü',
        "szlig" => 'ß',
        "euro" => '€',
        "ndash" => '–',
        "mdash" => '—',
        "hellip" => '…',
        "laquo" => '«',
        "raquo" => '»',
        "bdquo" => '„',
        "ldquo" => '“',
        "rdquo" => '”',
        "lsquo" => '‘',
        "rsquo" => '’',
        "sbquo" => '‚',
        "middot" => '·',
        "bull" => '•',
        "shy" => '\u{ad}',
        "copy" => '©',
        "reg" => '®',
        "deg" => '°',
        "sect" => '§',
        "para" => '¶',
        "times" => '×',
        "divide" => '÷',
        "eacute" => 'é',
        "egrave" => 'è',
        "ecirc" => 'ê',
        "aacute" => 'á',
        "agrave" => 'à',
        "acirc" => 'â',
        "iacute" => 'í',
        "oacute" => 'ó',
        "uacute" => 'ú',
        "ccedil" => 'ç',
        "ntilde" => 'ñ',
        "Eacute" => 'É',
        "Ccedil" => 'Ç',
        "thinsp" => '\u{2009}',
        "ensp" => '\u{2002}',
        "emsp" => '\u{2003}',
        "zwnj" => '\u{200c}',
        "zwj" => '\u{200d}',
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_tags_and_decodes_entities() {
        let t = html_to_text(
            "<p>Gartenstra&szlig;e&nbsp;9<br>31137 M&#252;nchen &#xFC; &amp; &unknown; 3 < 4</p>",
        );
        assert_eq!(t, "Gartenstraße 9\n31137 München ü & &unknown; 3 < 4");
    }

    #[test]
    fn drops_script_style_and_comments() {
        let t = html_to_text(
            "<html><head><STYLE>p{}</style><script>var a = '</p>';</script></head>\
             <body><!-- Tel 0171 2345678 -->Hallo<title>x</title></body></html>",
        );
        assert_eq!(t, "Hallo");
    }

    #[test]
    fn blocks_cells_and_signature_lines() {
        let t = html_to_text(
            "<table><tr><td>Geburtsdatum</td><td>12.04.2013</td></tr></table>\
             <div class=\"moz-signature\">-- <br>\n  Landkreis</div>",
        );
        assert_eq!(t, "Geburtsdatum\t12.04.2013\n--\nLandkreis");
    }

    #[test]
    fn broken_html_does_not_panic() {
        for t in [
            "<",
            "<a",
            "&",
            "&#",
            "&#x;",
            "&#99999999;",
            "<script>",
            "<!--",
            "a<b c='>",
            "ä<ü&ö;",
        ] {
            let _ = html_to_text(t);
        }
        assert_eq!(html_to_text("&#55296;"), "\u{fffd}");
    }
}
