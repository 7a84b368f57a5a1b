//! The gateway's own `Received:` trace header (RFC 5321 §4.4), whose
//! detail follows `[privacy] received_header`: `full` names the client's
//! HELO and IP, `minimal` only the gateway, `none` adds nothing.

use std::net::IpAddr;

use crate::config::ReceivedHeader;

/// What the `Received:` header may say about one transaction.
#[derive(Debug, Clone, Copy)]
pub struct Stamp<'a> {
    pub hostname: &'a str,
    pub helo: &'a str,
    pub peer: IpAddr,
    pub tls: bool,
    pub authenticated: bool,
    pub queue_id: &'a str,
    pub mode: ReceivedHeader,
}

/// RFC 3848 transmission type.
fn protocol(tls: bool, authenticated: bool) -> &'static str {
    match (tls, authenticated) {
        (true, true) => "ESMTPSA",
        (true, false) => "ESMTPS",
        (false, true) => "ESMTPA",
        (false, false) => "ESMTP",
    }
}

pub fn received_header(s: &Stamp<'_>) -> Option<String> {
    let date = mail_builder::headers::date::Date::now().to_rfc822();
    let with = protocol(s.tls, s.authenticated);
    match s.mode {
        ReceivedHeader::None => None,
        ReceivedHeader::Minimal => Some(format!(
            "Received: by {} (schleuse) with {with} id {};\r\n\t{date}\r\n",
            s.hostname, s.queue_id
        )),
        ReceivedHeader::Full => {
            // The HELO name is client-controlled: keep it to a safe charset.
            let helo: String = s
                .helo
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'))
                .take(255)
                .collect();
            Some(format!(
                "Received: from {helo} ([{}])\r\n\tby {} (schleuse) with {with} id {};\r\n\t{date}\r\n",
                s.peer, s.hostname, s.queue_id
            ))
        }
    }
}

/// Prepends the `Received:` header in place.
pub fn prepend_received(message: &mut Vec<u8>, stamp: &Stamp<'_>) {
    if let Some(header) = received_header(stamp) {
        // Exact reservation: a 25 MB message must not double its buffer
        // just to gain a few hundred bytes in front.
        message.reserve_exact(header.len());
        message.splice(0..0, header.into_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(mode: ReceivedHeader) -> Stamp<'static> {
        Stamp {
            hostname: "gw.test",
            helo: "app.local\r\nX-Evil: 1",
            peer: IpAddr::from([192, 0, 2, 7]),
            tls: true,
            authenticated: true,
            queue_id: "abc",
            mode,
        }
    }

    #[test]
    fn minimal_hides_client() {
        let h = received_header(&stamp(ReceivedHeader::Minimal)).expect("header");
        assert!(h.starts_with("Received: by gw.test (schleuse) with ESMTPSA id abc;"));
        assert!(!h.contains("192.0.2.7"));
        assert!(received_header(&stamp(ReceivedHeader::None)).is_none());
    }

    #[test]
    fn full_names_client_safely() {
        let h = received_header(&stamp(ReceivedHeader::Full)).expect("header");
        assert!(h.contains("[192.0.2.7]"));
        assert!(!h.contains("X-Evil: 1"));
        let mut msg = b"Subject: x\r\n\r\nbody\r\n".to_vec();
        prepend_received(&mut msg, &stamp(ReceivedHeader::Minimal));
        assert!(msg.starts_with(b"Received: by gw.test"));
        assert!(msg.ends_with(b"Subject: x\r\n\r\nbody\r\n"));
    }
}
