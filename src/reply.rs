//! SMTP replies as values: a code, an enhanced status code (RFC 3463) and a
//! human sentence. Handlers return a [`Reply`]; only the session writes bytes.
//!
//! A leaf beside the session rather than inside it: policy, limits,
//! suppression and metrics speak in replies too, and the session imports
//! them.

use std::borrow::Cow;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub esc: [u8; 3],
    pub text: Cow<'static, str>,
}

impl Reply {
    pub const fn new(code: u16, esc: [u8; 3], text: &'static str) -> Reply {
        Reply {
            code,
            esc,
            text: Cow::Borrowed(text),
        }
    }

    pub fn owned(code: u16, esc: [u8; 3], text: String) -> Reply {
        Reply {
            code,
            esc,
            text: Cow::Owned(text),
        }
    }

    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// A 421 means the server closes the connection after sending it.
    pub fn closes(&self) -> bool {
        self.code == 421
    }

    /// A SASL challenge (`334 <base64>`), which carries no status code.
    pub fn challenge(text: &'static str) -> Reply {
        Reply::new(334, [0, 0, 0], text)
    }

    /// Appends the wire form; multi-line when the text has line breaks.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        if self.code == 334 {
            out.extend_from_slice(format!("334 {}\r\n", self.text).as_bytes());
            return;
        }
        let lines: Vec<&str> = self.text.lines().collect();
        let last = lines.len().saturating_sub(1);
        for (i, line) in lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            let [a, b, c] = self.esc;
            out.extend_from_slice(format!("{}{sep}{a}.{b}.{c} {line}\r\n", self.code).as_bytes());
        }
        if lines.is_empty() {
            let [a, b, c] = self.esc;
            out.extend_from_slice(format!("{} {a}.{b}.{c} \r\n", self.code).as_bytes());
        }
    }

    /// The `reason` label of `messages_rejected_total` for a refusal: short
    /// and stable, so alerts survive a change of wording here.
    pub fn rejection_reason(&self) -> &'static str {
        let reasons: [(&Reply, &str); 12] = [
            (&AUTH_REQUIRED, "auth_required"),
            (&SENDER_DENIED, "sender_denied"),
            (&FROM_DENIED, "from_denied"),
            (&NO_FROM, "no_from"),
            (&TOO_BIG, "too_big"),
            (&TOO_MANY_RCPTS, "too_many_rcpts"),
            (&BARE_LINE_END_CMD, "bare_line_ending"),
            (&BARE_LINE_END_DATA, "bare_line_ending"),
            (&STORAGE_FAILED, "storage"),
            (&NO_SPACE, "storage"),
            (&NO_DKIM_KEY, "dkim"),
            (&SIGNING_FAILED, "dkim"),
        ];
        if (self.code, self.esc) == (552, [5, 3, 4]) {
            // Also the upstream limit's reply, whose text names the limit.
            return "too_big";
        }
        reasons
            .iter()
            .find(|(r, _)| *r == self)
            .map_or("other", |(_, reason)| reason)
    }

    pub fn log_text(&self) -> String {
        let [a, b, c] = self.esc;
        format!("{} {a}.{b}.{c} {}", self.code, self.text)
    }
}

// The fixed replies of the dialogue, in one place so codes stay consistent.
pub const OK: Reply = Reply::new(250, [2, 0, 0], "OK");
pub const RESET: Reply = Reply::new(250, [2, 0, 0], "Reset OK");
pub const BYE: Reply = Reply::new(221, [2, 0, 0], "Bye");
pub const SENDER_OK: Reply = Reply::new(250, [2, 1, 0], "Sender OK");
pub const RCPT_OK: Reply = Reply::new(250, [2, 1, 5], "Recipient OK");
pub const START_DATA: Reply =
    Reply::new(354, [2, 0, 0], "Start mail input; end with <CRLF>.<CRLF>");
pub const READY_TLS: Reply = Reply::new(220, [2, 0, 0], "Ready to start TLS");
pub const AUTH_OK: Reply = Reply::new(235, [2, 7, 0], "Authentication successful");
pub const VRFY: Reply = Reply::new(
    252,
    [2, 5, 0],
    "Cannot VRFY user, but will accept message and attempt delivery",
);
pub const HELP: Reply = Reply::new(
    214,
    [2, 0, 0],
    "Commands: EHLO HELO STARTTLS AUTH MAIL RCPT DATA RSET NOOP QUIT",
);

pub const AUTH_REQUIRED: Reply = Reply::new(530, [5, 7, 0], "Authentication required");
pub const ENCRYPTION_REQUIRED: Reply = Reply::new(
    538,
    [5, 7, 11],
    "Encryption required for requested authentication mechanism; use STARTTLS first",
);
pub const AUTH_FAILED: Reply = Reply::new(535, [5, 7, 8], "Authentication credentials invalid");
pub const AUTH_CANCELLED: Reply = Reply::new(501, [5, 0, 0], "Authentication cancelled");
pub const AUTH_BAD_BASE64: Reply = Reply::new(501, [5, 5, 2], "Invalid base64 data");
pub const AUTH_UNKNOWN_MECH: Reply = Reply::new(
    504,
    [5, 5, 4],
    "Unrecognized authentication type; use PLAIN or LOGIN",
);
pub const ALREADY_AUTHED: Reply = Reply::new(503, [5, 5, 1], "Already authenticated");
pub const AUTH_IN_TRANSACTION: Reply = Reply::new(
    503,
    [5, 5, 1],
    "AUTH is not allowed during a mail transaction",
);
pub const AUTH_UNAVAILABLE: Reply = Reply::new(
    454,
    [4, 7, 0],
    "Temporary authentication failure, try again later",
);

pub const NEED_EHLO: Reply = Reply::new(503, [5, 5, 1], "Send EHLO first");
pub const NESTED_MAIL: Reply = Reply::new(503, [5, 5, 1], "Nested MAIL command");
pub const NEED_MAIL: Reply = Reply::new(503, [5, 5, 1], "Need MAIL command first");
pub const NEED_RCPT: Reply = Reply::new(554, [5, 5, 1], "No valid recipients");
pub const SENDER_DENIED: Reply = Reply::new(
    553,
    [5, 7, 1],
    "Sender address not allowed for this account",
);
pub const FROM_DENIED: Reply =
    Reply::new(553, [5, 7, 1], "From: address not allowed for this account");
pub const NO_FROM: Reply = Reply::new(554, [5, 6, 0], "Message has no valid From: header");
pub const TOO_BIG: Reply = Reply::new(
    552,
    [5, 3, 4],
    "Message size exceeds fixed maximum message size",
);

/// `552 5.3.4` naming the limit, for a message bigger than the upstream
/// takes as it would be relayed (`[upstream] max_message_size`).
pub fn too_big_for_upstream(limit: u64) -> Reply {
    const KB: u64 = 1024;
    const MB: u64 = 1024 * 1024;
    let limit = match limit {
        l if l % MB == 0 => format!("{}MB", l / MB),
        l if l % KB == 0 => format!("{}KB", l / KB),
        l => format!("{l} bytes"),
    };
    Reply::owned(
        552,
        [5, 3, 4],
        format!(
            "Message size exceeds the {limit} the relay accepts (counted as it would be sent on)"
        ),
    )
}
pub const TOO_MANY_RCPTS: Reply = Reply::new(452, [4, 5, 3], "Too many recipients");
pub const BAD_RCPT: Reply = Reply::new(
    501,
    [5, 1, 3],
    "Bad recipient address syntax; use <local@domain>",
);
pub const BAD_SENDER: Reply = Reply::new(501, [5, 1, 7], "Bad sender address syntax");
// Invalid UTF-8 is no address in any syntax (RFC 6531 §3.3 builds on
// RFC 3629 UTF-8): a syntax error of the mailbox, 501 with X.1.7 / X.1.3
// (RFC 3463), not the policy refusal 553 X.6.7 of a well-formed one.
pub const SENDER_NOT_UTF8: Reply =
    Reply::new(501, [5, 1, 7], "Bad sender address syntax: not valid UTF-8");
pub const RCPT_NOT_UTF8: Reply = Reply::new(
    501,
    [5, 1, 3],
    "Bad recipient address syntax: not valid UTF-8",
);
// RFC 6531 §3.5: a non-ASCII address needs SMTPUTF8 on MAIL.
pub const SENDER_NEEDS_SMTPUTF8: Reply = Reply::new(
    553,
    [5, 6, 7],
    "Non-ASCII addresses not permitted for that sender without SMTPUTF8",
);
pub const RCPT_NEEDS_SMTPUTF8: Reply = Reply::new(
    553,
    [5, 6, 7],
    "Non-ASCII addresses not permitted for that recipient without SMTPUTF8",
);
// smtp-proto hands on a quoted local part without its quotes; relayed so,
// it would be another address (or none).
pub const SENDER_UNSUPPORTED: Reply = Reply::new(
    501,
    [5, 1, 7],
    "Bad sender address syntax: quoted local parts, spaces and control characters are not supported",
);
pub const RCPT_UNSUPPORTED: Reply = Reply::new(
    501,
    [5, 1, 3],
    "Bad recipient address syntax: quoted local parts, spaces and control characters are not supported",
);
pub const BARE_LINE_END_CMD: Reply = Reply::new(
    500,
    [5, 5, 2],
    "Bare CR or LF in command; lines must end with CRLF; closing connection",
);
pub const BARE_LINE_END_DATA: Reply = Reply::new(
    550,
    [5, 6, 0],
    "Message refused: bare CR or LF found; lines must end with CRLF",
);
pub const LINE_TOO_LONG: Reply = Reply::new(500, [5, 5, 2], "Line too long");
pub const UNKNOWN_COMMAND: Reply = Reply::new(500, [5, 5, 1], "Command not recognized");
pub const NOT_IMPLEMENTED: Reply = Reply::new(502, [5, 5, 1], "Command not implemented");
pub const NO_STARTTLS: Reply = Reply::new(502, [5, 5, 1], "STARTTLS not available on this port");
pub const TLS_ACTIVE: Reply = Reply::new(503, [5, 5, 1], "TLS already active");
pub const TLS_UNAVAILABLE: Reply =
    Reply::new(454, [4, 7, 0], "TLS not available due to temporary reason");
pub const NO_DKIM_KEY: Reply = Reply::new(
    554,
    [5, 7, 0],
    "Message refused: no signing key for the From: domain",
);
pub const SIGNING_FAILED: Reply = Reply::new(
    451,
    [4, 3, 0],
    "Temporary failure while signing the message; try again later",
);
/// RFC 3463's "insufficient system storage": the disk is full.
pub const NO_SPACE: Reply = Reply::new(
    452,
    [4, 3, 1],
    "Insufficient system storage; message not accepted, try again later",
);
pub const STORAGE_FAILED: Reply = Reply::new(
    451,
    [4, 3, 0],
    "Temporary storage failure; message not accepted, try again later",
);
pub const SENDING_DISABLED: Reply = Reply::new(
    421,
    [4, 3, 2],
    "Sending is disabled by the administrator; try again later",
);
pub const TOO_MANY_ERRORS: Reply =
    Reply::new(421, [4, 7, 0], "Too many errors; closing connection");
pub const TIMEOUT: Reply = Reply::new(421, [4, 4, 2], "Timeout; closing connection");
pub const SHUTTING_DOWN: Reply =
    Reply::new(421, [4, 3, 2], "Service shutting down; try again later");
pub const TOO_MANY_CONNECTIONS: Reply =
    Reply::new(421, [4, 7, 0], "Too many connections; try again later");
pub const SHED: Reply = Reply::new(
    421,
    [4, 7, 0],
    "Too many connections waiting to log in; closing this idle one to make room",
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form() {
        let mut out = Vec::new();
        TOO_BIG.write_to(&mut out);
        assert_eq!(
            out,
            b"552 5.3.4 Message size exceeds fixed maximum message size\r\n"
        );
        let mut out = Vec::new();
        Reply::owned(250, [2, 0, 0], "one\ntwo".into()).write_to(&mut out);
        assert_eq!(out, b"250-2.0.0 one\r\n250 2.0.0 two\r\n");
    }

    #[test]
    fn rejection_reasons_are_known_labels() {
        assert_eq!(TOO_BIG.rejection_reason(), "too_big");
        assert_eq!(BARE_LINE_END_DATA.rejection_reason(), "bare_line_ending");
        assert_eq!(SIGNING_FAILED.rejection_reason(), "dkim");
        assert_eq!(too_big_for_upstream(15 << 20).rejection_reason(), "too_big");
        assert!(too_big_for_upstream(15 << 20).text.contains(" 15MB "));
        assert!(too_big_for_upstream(1536).text.contains(" 1536 bytes "));
        let transform = Reply::owned(554, [5, 6, 0], "Message refused: x".into());
        assert_eq!(transform.rejection_reason(), "other");
        for r in [
            AUTH_REQUIRED,
            SENDER_DENIED,
            FROM_DENIED,
            NO_FROM,
            STORAGE_FAILED,
            NO_SPACE,
        ] {
            assert!(crate::metrics::REJECT_REASONS.contains(&r.rejection_reason()));
        }
    }
}
