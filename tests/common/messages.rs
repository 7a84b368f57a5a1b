//! Test messages and what to check in relayed ones: simple and
//! with-document messages, link tokens, header fields added by the gateway.

use super::base64;

/// A simple message with a unique marker in Subject and body.
pub fn simple_message(from: &str, to: &str, marker: &str) -> Vec<u8> {
    format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: test {marker}\r\n\
         Message-ID: <{marker}@example.com>\r\nDate: Mon, 01 Jan 2024 10:00:00 +0100\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         body of {marker}\r\n"
    )
    .into_bytes()
}

/// A text part and one PDF attachment (`document`, base64), so the gateway
/// turns it into a link.
pub fn message_with_document(from: &str, to: &str, marker: &str, document: &[u8]) -> Vec<u8> {
    format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: test {marker}\r\n\
         Message-ID: <{marker}@example.com>\r\nDate: Mon, 01 Jan 2024 10:00:00 +0100\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nbody of {marker}\r\n\
         --b\r\nContent-Type: application/pdf; name=\"{marker}.pdf\"\r\n\
         Content-Disposition: attachment; filename=\"{marker}.pdf\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{}\r\n--b--\r\n",
        wrap76(&base64(document))
    )
    .into_bytes()
}

/// The link tokens in a relayed text that point at the link service on
/// `port`, in order, without repeats.
pub fn link_tokens(text: &str, port: u16) -> Vec<String> {
    let prefix = format!("http://127.0.0.1:{port}/d/");
    let mut out: Vec<String> = text
        .match_indices(&prefix)
        .map(|(i, _)| {
            text[i + prefix.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect()
        })
        .collect();
    out.dedup();
    out
}

/// Whether `eml` is `message` with only header fields added at the top;
/// returns those added fields, or an explanation.
pub fn added_headers(eml: &[u8], message: &[u8]) -> Result<Vec<(String, String)>, String> {
    if !eml.ends_with(message) {
        let common = eml
            .iter()
            .rev()
            .zip(message.iter().rev())
            .take_while(|(a, b)| a == b)
            .count();
        return Err(format!(
            "the relayed message does not end with the submitted bytes \
             (common suffix {common} of {} bytes)\n--- submitted ---\n{}\n--- relayed ---\n{}",
            message.len(),
            String::from_utf8_lossy(message),
            String::from_utf8_lossy(eml)
        ));
    }
    let prefix = &eml[..eml.len() - message.len()];
    if !prefix.is_empty() && !prefix.ends_with(b"\r\n") {
        return Err(format!(
            "added prefix does not end with CRLF: {:?}",
            String::from_utf8_lossy(prefix)
        ));
    }
    let text = String::from_utf8_lossy(prefix);
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in text.split_terminator("\r\n") {
        if line.starts_with([' ', '\t']) && !fields.is_empty() {
            continue;
        }
        match line.split_once(':') {
            Some((n, v))
                if !n.is_empty() && n.bytes().all(|b| b.is_ascii_graphic() && b != b':') =>
            {
                fields.push((n.to_string(), v.trim().to_string()));
            }
            _ => return Err(format!("added line is not a header field: {line:?}")),
        }
    }
    Ok(fields)
}

/// Base64 text wrapped at 76 characters with CRLF, as MIME writes it.
pub fn wrap76(b64: &str) -> String {
    b64.as_bytes()
        .chunks(76)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("\r\n")
}

/// Appends xorshift bytes to `data` until it is `len` long: binary content
/// that does not compress and is the same in every run.
pub fn fill_pseudo_random(data: &mut Vec<u8>, mut seed: u32, len: usize) {
    while data.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        data.push(seed as u8);
    }
}
