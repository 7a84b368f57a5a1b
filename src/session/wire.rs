//! The one place that touches smtp-proto: command parsing, the DATA
//! receiver, the EHLO reply. Its receiver signatures change between
//! versions, so the rest of the session sees only these small wrappers.
//!
//! Framing rule (RFC 5321 §2.3.8, and the SMTP-smuggling fixes of 2023):
//! only CRLF ends a line. A command line with a bare CR or a bare LF is
//! refused as a whole instead of being split, and in DATA only
//! `<CRLF>.<CRLF>` ends the message.

use std::borrow::Cow;

use smtp_proto::request::receiver::DataReceiver;
use smtp_proto::{EhloResponse, Request};

pub use smtp_proto::{AUTH_LOGIN, AUTH_PLAIN, Error as ParseError, MAIL_SMTPUTF8};

/// The longest command line accepted (RFC 4954 allows long AUTH lines).
pub const MAX_LINE: usize = smtp_proto::request::receiver::MAX_LINE_LENGTH;

/// A complete line taken from the input buffer.
pub enum Line<'a> {
    /// Properly CRLF-terminated; the CRLF is stripped.
    Ok(&'a [u8]),
    /// Contained a bare CR or ended in a bare LF.
    BareLineEnding,
    /// Longer than [`MAX_LINE`] (with its CRLF).
    TooLong,
}

/// A command line that cannot be taken as sent.
#[derive(Debug)]
pub enum BadCommand {
    Syntax(ParseError),
    /// MAIL whose line is not valid UTF-8: smtp-proto would hand on the
    /// address with U+FFFD in place of the bad bytes, i.e. another address.
    SenderNotUtf8,
    /// The same for RCPT.
    RecipientNotUtf8,
}

/// Finds the end of the next line (its LF) in `buf`.
pub fn next_line_end(buf: &[u8]) -> Option<usize> {
    memchr_lf(buf)
}

fn memchr_lf(buf: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', buf)
}

/// Classifies a line that ends with LF.
pub fn check_line(line: &[u8]) -> Line<'_> {
    let Some(body) = line.strip_suffix(b"\r\n") else {
        return Line::BareLineEnding;
    };
    if body.contains(&b'\r') {
        return Line::BareLineEnding;
    }
    if line.len() > MAX_LINE {
        return Line::TooLong;
    }
    Line::Ok(body)
}

/// Parses one command line (without its CRLF).
pub fn parse_command(line: &[u8]) -> Result<Request<String>, BadCommand> {
    // smtp-proto expects the line terminator to be present.
    let mut framed = Vec::with_capacity(line.len() + 2);
    framed.extend_from_slice(line);
    framed.extend_from_slice(b"\r\n");
    let request = Request::parse(&mut framed.iter())
        .map(into_owned_request)
        .map_err(BadCommand::Syntax)?;
    // Only MAIL and RCPT carry what is handed on; elsewhere (an EHLO name,
    // a NOOP argument) the replacement character harms nothing.
    if std::str::from_utf8(line).is_err() {
        match request {
            Request::Mail { .. } => return Err(BadCommand::SenderNotUtf8),
            Request::Rcpt { .. } => return Err(BadCommand::RecipientNotUtf8),
            _ => {}
        }
    }
    Ok(request)
}

/// smtp-proto borrows from the input; detach so the caller's buffer is free.
fn into_owned_request(r: Request<Cow<'_, str>>) -> Request<String> {
    match r {
        Request::Ehlo { host } => Request::Ehlo { host: host.into() },
        Request::Lhlo { host } => Request::Lhlo { host: host.into() },
        Request::Helo { host } => Request::Helo { host: host.into() },
        Request::Mail { from } => Request::Mail {
            from: from.into_owned(),
        },
        Request::Rcpt { to } => Request::Rcpt {
            to: to.into_owned(),
        },
        Request::Bdat {
            chunk_size,
            is_last,
        } => Request::Bdat {
            chunk_size,
            is_last,
        },
        Request::Auth {
            mechanism,
            initial_response,
        } => Request::Auth {
            mechanism,
            initial_response: initial_response.into(),
        },
        Request::Noop { value } => Request::Noop {
            value: value.into(),
        },
        Request::Vrfy { value } => Request::Vrfy {
            value: value.into(),
        },
        Request::Expn { value } => Request::Expn {
            value: value.into(),
        },
        Request::Help { value } => Request::Help {
            value: value.into(),
        },
        Request::Etrn { name } => Request::Etrn { name: name.into() },
        Request::Atrn { domains } => Request::Atrn {
            domains: domains.into_iter().map(Into::into).collect(),
        },
        Request::Burl { uri, is_last } => Request::Burl {
            uri: uri.into(),
            is_last,
        },
        Request::StartTls => Request::StartTls,
        Request::Data => Request::Data,
        Request::Rset => Request::Rset,
        Request::Quit => Request::Quit,
    }
}

/// Receives DATA: dot-unstuffing and end detection by smtp-proto, with a
/// size cap that switches to discarding once exceeded.
pub struct DataIn {
    receiver: DataReceiver,
    pub body: Vec<u8>,
    max: usize,
    pub too_big: bool,
}

impl DataIn {
    /// `expected` is the client's `SIZE=` declaration, used to size the
    /// buffer once instead of growing it step by step.
    pub fn new(max: usize, expected: usize) -> DataIn {
        let mut receiver = DataReceiver::new();
        // A fresh receiver has seen no CRLF, so "DATA" followed at once by
        // ".\r\n" would never end and a first line "..x" would not be
        // unstuffed. The DATA command's own CRLF counts: prime it.
        let mut primed = Vec::new();
        receiver.ingest(&mut b"\r\n".iter(), &mut primed);
        DataIn {
            receiver,
            body: Vec::with_capacity(expected.min(max) + crate::transform::HEADROOM),
            max,
            too_big: false,
        }
    }

    /// Feeds bytes; returns how many were consumed and whether the
    /// terminating `<CRLF>.<CRLF>` was seen.
    pub fn ingest(&mut self, bytes: &[u8]) -> (usize, bool) {
        let mut iter = bytes.iter();
        let done = self.receiver.ingest(&mut iter, &mut self.body);
        let consumed = bytes.len() - iter.as_slice().len();
        if self.body.len() > self.max {
            // Keep the receiver's state but drop what can never be accepted.
            self.too_big = true;
            let keep = self.body.len().min(4);
            let tail = self.body.split_off(self.body.len() - keep);
            self.body = tail;
        }
        (consumed, done)
    }
}

/// True if `body` has a CR not followed by LF or an LF not preceded by CR.
pub fn has_bare_line_ending(body: &[u8]) -> bool {
    for pos in memchr::memchr2_iter(b'\r', b'\n', body) {
        let bare = if body[pos] == b'\n' {
            pos == 0 || body[pos - 1] != b'\r'
        } else {
            body.get(pos + 1) != Some(&b'\n')
        };
        if bare {
            return true;
        }
    }
    false
}

/// Writes the EHLO reply with the given capability bits.
pub fn ehlo_reply(hostname: &str, capabilities: u32, auth: u64, size: usize) -> Vec<u8> {
    let mut r = EhloResponse::new(hostname);
    r.capabilities = capabilities;
    r.auth_mechanisms = auth;
    r.size = size;
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = r.write(&mut out);
    out
}

pub use smtp_proto::{
    EXT_8BIT_MIME, EXT_AUTH, EXT_ENHANCED_STATUS_CODES, EXT_PIPELINING, EXT_SIZE, EXT_SMTP_UTF8,
    EXT_START_TLS,
};

#[cfg(test)]
mod tests {
    use super::*;

    fn receive(data: &[u8]) -> Option<(Vec<u8>, usize)> {
        let mut d = DataIn::new(1 << 20, 0);
        let (n, done) = d.ingest(data);
        done.then_some((d.body, n))
    }

    #[test]
    fn empty_message_and_leading_dots() {
        assert_eq!(receive(b".\r\n"), Some((Vec::new(), 3)));
        let (body, _) = receive(b"..x\r\n.\r\n").expect("ends");
        assert_eq!(body, b".x\r\n");
    }

    #[test]
    fn only_crlf_dot_crlf_ends_data() {
        for smuggle in [
            &b"a\n.\r\nMAIL FROM:<x@y>\r\n"[..],
            b"a\r\n.\nMAIL FROM:<x@y>\r\n",
            b"a\r.\r\nMAIL FROM:<x@y>\r\n",
            b"a\n.\nMAIL FROM:<x@y>\r\n",
        ] {
            assert!(
                receive(smuggle).is_none(),
                "{:?}",
                String::from_utf8_lossy(smuggle)
            );
        }
        let (body, n) = receive(b"a\r\n.\r\nQUIT\r\n").expect("ends");
        assert_eq!(body, b"a\r\n");
        assert_eq!(n, 6);
    }

    #[test]
    fn bare_line_endings() {
        assert!(!has_bare_line_ending(b"a\r\nb\r\n"));
        assert!(has_bare_line_ending(b"a\nb\r\n"));
        assert!(has_bare_line_ending(b"a\rb\r\n"));
        assert!(has_bare_line_ending(b"a\r"));
        assert!(matches!(check_line(b"NOOP\r\n"), Line::Ok(b"NOOP")));
        assert!(matches!(check_line(b"NOOP\n"), Line::BareLineEnding));
        assert!(matches!(check_line(b"NO\rOP\r\n"), Line::BareLineEnding));
    }

    #[test]
    fn over_long_lines() {
        let mut line = vec![b'x'; MAX_LINE - 2];
        line.extend_from_slice(b"\r\n");
        assert!(matches!(check_line(&line), Line::Ok(_)));
        line.insert(0, b'x');
        assert!(matches!(check_line(&line), Line::TooLong));
    }

    #[test]
    fn invalid_utf8_addresses_are_not_replaced() {
        assert!(matches!(
            parse_command(b"MAIL FROM:<p\xe4rent@example.org>"),
            Err(BadCommand::SenderNotUtf8)
        ));
        assert!(matches!(
            parse_command(b"RCPT TO:<p\xe4rent@example.org>"),
            Err(BadCommand::RecipientNotUtf8)
        ));
        let Ok(Request::Rcpt { to }) = parse_command("RCPT TO:<pär@example.org>".as_bytes())
        else {
            panic!("valid UTF-8 parses");
        };
        assert_eq!(to.address, "pär@example.org");
        assert!(parse_command(b"EHLO h\xe4st").is_ok());
    }

    #[test]
    fn size_cap_discards() {
        let mut d = DataIn::new(10, 100);
        let (_, done) = d.ingest(b"0123456789abcdef\r\n.\r\n");
        assert!(done);
        assert!(d.too_big);
    }
}
