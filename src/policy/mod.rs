//! Policy: may this account send this message? (SPEC §5)
//!
//! An account may only use the envelope senders and `From:` addresses its
//! `allowed_senders` list permits; anything else is `553 5.7.1`. Later
//! stages (rules, limits, reputation) add their checks here; the relay
//! rules (`[[rule]]`, SPEC §8) are in [`rules`].

pub mod rules;

use mail_parser::{HeaderName, HeaderValue, MessageParser};

use crate::accounts::Account;
use crate::reply::{self, Reply};

pub fn check_envelope_sender(account: &Account, sender: &str) -> Result<(), Reply> {
    // The null sender is for bounces; an application never needs it.
    if sender.is_empty() || !account.may_send_as(sender) {
        return Err(reply::SENDER_DENIED);
    }
    Ok(())
}

/// Every address in every `From:` header must be allowed; a message without
/// a usable `From:` is refused (RFC 5322 requires one, DKIM signs it).
pub fn check_header_from(account: &Account, message: &[u8]) -> Result<(), Reply> {
    let parsed = MessageParser::new()
        .parse_headers(message)
        .ok_or(reply::NO_FROM)?;
    let mut seen = 0;
    for header in parsed.headers() {
        if header.name != HeaderName::From {
            continue;
        }
        let HeaderValue::Address(address) = &header.value else {
            return Err(reply::NO_FROM);
        };
        for addr in address.iter() {
            let Some(email) = addr.address() else {
                return Err(reply::NO_FROM);
            };
            if !account.may_send_as(email) {
                return Err(reply::FROM_DENIED);
            }
            seen += 1;
        }
    }
    if seen == 0 {
        return Err(reply::NO_FROM);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account() -> Account {
        Account {
            name: "via".into(),
            password_hash: String::new(),
            allowed_senders: vec!["*@landkreis.example".into()],
            ..Account::default()
        }
    }

    #[test]
    fn from_header_checks() {
        let a = account();
        let ok =
            b"From: \"M\xc3\xbcller, Anna\" <anna@landkreis.example>\r\nSubject: x\r\n\r\nhi\r\n";
        assert!(check_header_from(&a, ok).is_ok());
        let bad = b"From: boss@evil.example\r\n\r\nhi\r\n";
        assert_eq!(check_header_from(&a, bad), Err(reply::FROM_DENIED));
        let two = b"From: a@landkreis.example, b@evil.example\r\n\r\nhi\r\n";
        assert_eq!(check_header_from(&a, two), Err(reply::FROM_DENIED));
        let none = b"Subject: no from\r\n\r\nhi\r\n";
        assert_eq!(check_header_from(&a, none), Err(reply::NO_FROM));
    }

    #[test]
    fn envelope_sender() {
        let a = account();
        assert!(check_envelope_sender(&a, "x@landkreis.example").is_ok());
        assert!(check_envelope_sender(&a, "").is_err());
        assert!(check_envelope_sender(&a, "x@evil.example").is_err());
    }
}
