//! PROXY protocol version 2: the client address a TCP load balancer
//! (HAProxy `send-proxy-v2`) writes in front of the SMTP stream (SPEC §11).
//!
//! Standard: HAProxy's `proxy-protocol.txt`, section 2.2 (binary format).
//! The header is a 16-byte fixed part — a 12-byte signature, version and
//! command, address family and transport, and the big-endian length of the
//! rest (bytes 14–15) — followed by that many bytes of addresses and TLVs.
//!
//! [`read_header`] reads exactly the header's bytes and nothing beyond them:
//! what follows belongs to the SMTP dialogue (or the TLS handshake on an
//! implicit-TLS listener), which the session must see untouched. The
//! parsing itself is the `ppp` crate's; this module only frames the bytes
//! and decides what a parsed header means for the session.
//!
//! Only version 2 is accepted. Version 1 (the text form, `send-proxy`)
//! would need a second, line-oriented reader and widen what an attacker
//! who reaches the port can try; HAProxy speaks v2 whenever asked to.
//!
//! Config keys: `listener.proxy_protocol`, `listener.proxy_trusted` (who
//! may send a header at all is checked by the caller, before any byte is
//! read), `timeouts.tls_handshake` (the caller's bound on the whole read).

use std::net::{IpAddr, SocketAddr};

use ppp::v2;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The v2 signature, the first 12 bytes of every header.
const SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// Signature, version/command, family/transport and the 2-byte length.
const FIXED_LEN: usize = 16;

/// The largest header accepted, fixed part included. The format allows
/// 16 + 65,535 bytes; HAProxy's addresses plus the TLVs it can add
/// (unique id, ALPN, authority, TLS details) stay well below this, and a
/// cap keeps a slow or broken proxy from pinning 64 KiB per connection.
pub const MAX_HEADER_LEN: usize = 4096;

/// What a valid header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proxied {
    /// `PROXY`: the connection was relayed for this client.
    Client(SocketAddr),
    /// `LOCAL`: the proxy speaks for itself (HAProxy's health checks); the
    /// protocol says to use the socket's own addresses.
    Local,
}

/// Why a connection's first bytes are not an acceptable PROXY v2 header.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The first bytes are not the v2 signature; `v1` when they look like
    /// the text form (`PROXY TCP4 …`), which a log reader will want to know.
    #[error("{}", if *.v1 { "PROXY v1 (text) header; only v2 is accepted (HAProxy: send-proxy-v2)" } else { "no PROXY v2 signature" })]
    NoSignature { v1: bool },
    #[error("connection closed after {0} bytes of the PROXY header")]
    Truncated(usize),
    #[error("PROXY header of {0} bytes exceeds the limit of {MAX_HEADER_LEN}")]
    TooLong(usize),
    #[error("invalid PROXY v2 header: {0}")]
    Invalid(#[from] v2::ParseError),
    /// A well-formed `PROXY` header that names no TCP client address: a
    /// session needs one (bans, rate limits, logs), so it is refused
    /// rather than guessed.
    #[error("PROXY header without a TCP client address ({0})")]
    NoClientAddress(&'static str),
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one PROXY v2 header from `stream`, consuming exactly its bytes.
///
/// Fails fast on input that cannot become a header (the signature is
/// checked as bytes arrive), so a client speaking SMTP straight away is
/// refused at once rather than after the timeout. Never panics, whatever
/// the bytes; bound the call with a timeout, as a silent peer is waited for.
pub async fn read_header<R: AsyncRead + Unpin>(stream: &mut R) -> Result<Proxied, ProxyError> {
    let mut header = vec![0u8; FIXED_LEN];
    let mut filled = 0;
    while filled < FIXED_LEN {
        // Reads into the rest of the fixed part only, never past it.
        let n = stream.read(&mut header[filled..FIXED_LEN]).await?;
        if n == 0 {
            return Err(ProxyError::Truncated(filled));
        }
        filled += n;
        let seen = &header[..filled.min(SIGNATURE.len())];
        if !SIGNATURE.starts_with(seen) {
            return Err(ProxyError::NoSignature {
                v1: header[..filled].starts_with(b"PROXY"),
            });
        }
    }
    let rest = usize::from(u16::from_be_bytes([header[14], header[15]]));
    let total = FIXED_LEN + rest;
    if total > MAX_HEADER_LEN {
        return Err(ProxyError::TooLong(total));
    }
    header.resize(total, 0);
    if let Err(e) = stream.read_exact(&mut header[FIXED_LEN..]).await {
        return Err(match e.kind() {
            std::io::ErrorKind::UnexpectedEof => ProxyError::Truncated(FIXED_LEN),
            _ => ProxyError::Io(e),
        });
    }
    interpret(&header)
}

/// Parses a complete header (exactly its bytes) and says what it means.
fn interpret(bytes: &[u8]) -> Result<Proxied, ProxyError> {
    let header = v2::Header::try_from(bytes)?;
    if header.command == v2::Command::Local {
        return Ok(Proxied::Local);
    }
    if header.protocol != v2::Protocol::Stream {
        return Err(ProxyError::NoClientAddress(match header.protocol {
            v2::Protocol::Datagram => "datagram transport",
            _ => "unspecified transport",
        }));
    }
    let (ip, port) = match header.addresses {
        v2::Addresses::IPv4(a) => (IpAddr::V4(a.source_address), a.source_port),
        v2::Addresses::IPv6(a) => (IpAddr::V6(a.source_address), a.source_port),
        v2::Addresses::Unix(_) => return Err(ProxyError::NoClientAddress("unix socket")),
        v2::Addresses::Unspecified => {
            return Err(ProxyError::NoClientAddress("unspecified address family"));
        }
    };
    // An IPv4 client behind an IPv6 proxy socket arrives as ::ffff:a.b.c.d;
    // bans and limits key on the plain form, as for direct connections.
    Ok(Proxied::Client(SocketAddr::new(ip.to_canonical(), port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `PROXY TCP4` header from `src` to 192.0.2.1:587, plus `tlv` bytes.
    fn v4_header(src: [u8; 4], port: u16, tlv: &[u8]) -> Vec<u8> {
        let mut h = SIGNATURE.to_vec();
        h.push(0x21); // version 2, PROXY
        h.push(0x11); // AF_INET, STREAM
        h.extend(u16::try_from(12 + tlv.len()).unwrap().to_be_bytes());
        h.extend(src);
        h.extend([192, 0, 2, 1]);
        h.extend(port.to_be_bytes());
        h.extend(587u16.to_be_bytes());
        h.extend(tlv);
        h
    }

    fn read(bytes: &[u8]) -> (Result<Proxied, ProxyError>, Vec<u8>) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let mut input = bytes;
            let r = read_header(&mut input).await;
            (r, input.to_vec())
        })
    }

    #[test]
    fn reads_the_client_and_leaves_the_smtp_bytes() {
        let mut bytes = v4_header([203, 0, 113, 7], 40000, &[]);
        bytes.extend_from_slice(b"EHLO x\r\n");
        let (r, rest) = read(&bytes);
        assert_eq!(
            r.expect("valid"),
            Proxied::Client("203.0.113.7:40000".parse().unwrap())
        );
        assert_eq!(rest, b"EHLO x\r\n", "not a byte more than the header");
    }

    #[test]
    fn tlvs_are_skipped_and_ipv6_mapped_becomes_ipv4() {
        // PP2_TYPE_UNIQUE_ID (0x05) with 3 bytes.
        let (r, rest) = read(&v4_header(
            [198, 51, 100, 9],
            1,
            &[0x05, 0, 3, b'a', b'b', b'c'],
        ));
        assert_eq!(
            r.expect("valid"),
            Proxied::Client("198.51.100.9:1".parse().unwrap())
        );
        assert!(rest.is_empty());

        let mut h = SIGNATURE.to_vec();
        h.extend([0x21, 0x21, 0, 36]); // PROXY, AF_INET6, STREAM
        let src: std::net::Ipv6Addr = "::ffff:203.0.113.7".parse().unwrap();
        h.extend(src.octets());
        h.extend(std::net::Ipv6Addr::LOCALHOST.octets());
        h.extend([0, 25, 0, 25]);
        assert_eq!(
            read(&h).0.expect("valid"),
            Proxied::Client("203.0.113.7:25".parse().unwrap())
        );
    }

    #[test]
    fn local_command_and_refusals() {
        let mut local = SIGNATURE.to_vec();
        local.extend([0x20, 0x00, 0, 0]);
        assert_eq!(read(&local).0.expect("LOCAL"), Proxied::Local);

        let mut unspec = SIGNATURE.to_vec();
        unspec.extend([0x21, 0x00, 0, 0]);
        assert!(matches!(
            read(&unspec).0,
            Err(ProxyError::NoClientAddress(_))
        ));

        assert!(matches!(
            read(b"EHLO client.test\r\n").0,
            Err(ProxyError::NoSignature { v1: false })
        ));
        assert!(matches!(
            read(b"PROXY TCP4 203.0.113.7 192.0.2.1 1 25\r\n").0,
            Err(ProxyError::NoSignature { v1: true })
        ));
        let mut long = SIGNATURE.to_vec();
        long.extend([0x21, 0x11, 0xff, 0xff]);
        assert!(matches!(read(&long).0, Err(ProxyError::TooLong(_))));
        let mut v3 = v4_header([1, 2, 3, 4], 1, &[]);
        v3[12] = 0x31;
        assert!(matches!(read(&v3).0, Err(ProxyError::Invalid(_))));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let full = v4_header([203, 0, 113, 7], 40000, &[0x05, 0, 1, b'x']);
        for cut in 0..full.len() {
            let (r, _) = read(&full[..cut]);
            assert!(r.is_err(), "{cut} bytes of {} accepted", full.len());
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        // xorshift: reproducible garbage, half of it behind a real signature
        // so the parser's inner paths (families, lengths, TLVs) are reached.
        let mut x: u32 = 0x9e37_79b9;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        for round in 0..5000 {
            let len = (next() % 300) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if round % 2 == 0 {
                let mut h = SIGNATURE.to_vec();
                h.extend([0x20 | (next() as u8 & 0x1), next() as u8]);
                h.extend(u16::try_from(len).unwrap().to_be_bytes());
                h.append(&mut bytes);
                bytes = h;
            }
            let _ = read(&bytes);
        }
    }
}
