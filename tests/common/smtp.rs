//! A small synchronous SMTP client (plain TCP, upgraded with rustls), with
//! the helpers tests use to speak to the gateway directly.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls;

#[derive(Debug, Clone)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    /// All text after the codes, lines joined with `\n`.
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }

    /// The enhanced status code of the last line (`5.7.1`), if any.
    pub fn enhanced(&self) -> Option<String> {
        let last = self.lines.last()?;
        let word = last.split_whitespace().next()?;
        let parts: Vec<&str> = word.split('.').collect();
        (parts.len() == 3 && parts.iter().all(|p| p.parse::<u16>().is_ok()))
            .then(|| word.to_string())
    }

    /// The last word of the reply (the queue id after `250 … queued as ID`).
    pub fn last_word(&self) -> String {
        self.lines
            .last()
            .and_then(|l| l.split_whitespace().last())
            .unwrap_or_default()
            .to_string()
    }

    pub fn is(&self, code: u16, enhanced: &str) -> bool {
        self.code == code && self.enhanced().as_deref() == Some(enhanced)
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, l) in self.lines.iter().enumerate() {
            let sep = if i + 1 == self.lines.len() { ' ' } else { '-' };
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}{sep}{l}", self.code)?;
        }
        Ok(())
    }
}

enum Conn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
    Gone,
}

impl Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
            Conn::Gone => Err(io::Error::other("connection gone")),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.write_all(buf).and_then(|_| s.flush()),
            Conn::Tls(s) => s.write_all(buf).and_then(|_| s.flush()),
            Conn::Gone => Err(io::Error::other("connection gone")),
        }
    }
}

/// How the client checks the gateway's certificate.
pub enum Verify<'a> {
    /// Against this CA file, for the name `localhost`.
    Ca(&'a Path),
    /// Not at all (the gateway's generated self-signed certificate).
    Insecure,
}

pub struct Smtp {
    conn: Conn,
    buf: Vec<u8>,
    pub greeting: Reply,
}

pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

impl Smtp {
    /// Connects to 127.0.0.1:port and reads the greeting (which must be 220).
    pub fn connect(port: u16) -> Smtp {
        let s = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
        let mut c = Smtp::over(s);
        let g = c.read_reply().expect("read greeting");
        assert_eq!(g.code, 220, "greeting: {g}");
        c.greeting = g;
        c
    }

    /// A client on a connection the caller opened (and may already have
    /// written to, e.g. a PROXY header); the greeting is not read yet.
    pub fn over(s: TcpStream) -> Smtp {
        s.set_read_timeout(Some(IO_TIMEOUT)).expect("read timeout");
        s.set_write_timeout(Some(IO_TIMEOUT))
            .expect("write timeout");
        Smtp {
            conn: Conn::Plain(s),
            buf: Vec::new(),
            greeting: Reply {
                code: 0,
                lines: Vec::new(),
            },
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.conn.write_all(bytes)
    }

    /// Bytes received but not yet consumed as a reply.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// Reads one (possibly multi-line) reply. EOF is an `UnexpectedEof` error.
    pub fn read_reply(&mut self) -> io::Result<Reply> {
        let mut lines = Vec::new();
        loop {
            while let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..pos + 2).collect();
                let line = String::from_utf8_lossy(&line[..pos]).into_owned();
                let code: u16 = line
                    .get(..3)
                    .and_then(|c| c.parse().ok())
                    .ok_or_else(|| io::Error::other(format!("malformed reply line {line:?}")))?;
                let sep = line.as_bytes().get(3).copied().unwrap_or(b' ');
                lines.push(line.get(4..).unwrap_or_default().to_string());
                if sep != b'-' {
                    return Ok(Reply { code, lines });
                }
            }
            let mut chunk = [0u8; 8192];
            let n = self.conn.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "connection closed (unparsed: {:?})",
                        String::from_utf8_lossy(&self.buf)
                    ),
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends `line` + CRLF and reads the reply; panics on I/O errors.
    pub fn cmd(&mut self, line: &str) -> Reply {
        self.try_cmd(line)
            .unwrap_or_else(|e| panic!("{line:?}: I/O error: {e}"))
    }

    pub fn try_cmd(&mut self, line: &str) -> io::Result<Reply> {
        self.conn.write_all(format!("{line}\r\n").as_bytes())?;
        self.read_reply()
    }

    pub fn ehlo(&mut self) -> Reply {
        let r = self.cmd("EHLO client.test");
        assert_eq!(r.code, 250, "EHLO: {r}");
        r
    }

    /// STARTTLS (must be 220), then the TLS handshake. No EHLO afterwards.
    pub fn starttls(&mut self, verify: Verify<'_>) {
        let r = self.cmd("STARTTLS");
        assert_eq!(r.code, 220, "STARTTLS: {r}");
        self.tls_handshake(verify)
            .unwrap_or_else(|e| panic!("TLS handshake: {e}"));
    }

    /// Upgrades the connection to TLS (after a 220 to STARTTLS). Bytes that
    /// arrived in plain text and were not consumed are an error.
    pub fn tls_handshake(&mut self, verify: Verify<'_>) -> io::Result<()> {
        if !self.buf.is_empty() {
            return Err(io::Error::other(format!(
                "plaintext bytes after the STARTTLS reply: {:?}",
                String::from_utf8_lossy(&self.buf)
            )));
        }
        let sock = match std::mem::replace(&mut self.conn, Conn::Gone) {
            Conn::Plain(s) => s,
            _ => return Err(io::Error::other("not a plaintext connection")),
        };
        let conn = rustls::ClientConnection::new(
            Arc::new(client_config(verify)),
            ServerName::try_from("localhost").expect("server name"),
        )
        .map_err(io::Error::other)?;
        let mut tls = rustls::StreamOwned::new(conn, sock);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        self.conn = Conn::Tls(Box::new(tls));
        Ok(())
    }

    /// EHLO, STARTTLS, EHLO, verified against the test CA.
    pub fn connect_tls(port: u16, ca: &Path) -> Smtp {
        let mut c = Smtp::connect(port);
        c.ehlo();
        c.starttls(Verify::Ca(ca));
        c.ehlo();
        c
    }

    /// EHLO, STARTTLS, EHLO, AUTH PLAIN (must be 235).
    pub fn connect_auth(port: u16, ca: &Path, user: &str, password: &str) -> Smtp {
        let mut c = Smtp::connect_tls(port, ca);
        let r = c.auth_plain(user, password);
        assert_eq!(r.code, 235, "AUTH PLAIN as {user}: {r}");
        c
    }

    pub fn auth_plain(&mut self, user: &str, password: &str) -> Reply {
        let token = base64(format!("\0{user}\0{password}").as_bytes());
        self.cmd(&format!("AUTH PLAIN {token}"))
    }

    /// DATA (must be 354), the dot-stuffed message, `.`; returns the final reply.
    pub fn data(&mut self, message: &[u8]) -> Reply {
        let r = self.cmd("DATA");
        assert_eq!(r.code, 354, "DATA: {r}");
        self.send_raw(&dot_stuff(message)).expect("send message");
        self.send_raw(b".\r\n").expect("send end of data");
        self.read_reply().expect("reply to end of DATA")
    }

    /// MAIL, RCPT…, DATA; every step before the end of DATA must be 250/354.
    pub fn send(&mut self, from: &str, to: &[&str], message: &[u8]) -> Reply {
        let r = self.cmd(&format!("MAIL FROM:<{from}>"));
        assert_eq!(r.code, 250, "MAIL FROM:<{from}>: {r}");
        for t in to {
            let r = self.cmd(&format!("RCPT TO:<{t}>"));
            assert_eq!(r.code, 250, "RCPT TO:<{t}>: {r}");
        }
        self.data(message)
    }

    pub fn quit(mut self) {
        let _ = self.try_cmd("QUIT");
    }
}

/// Dot-stuffs a message with CRLF line ends and makes sure it ends in CRLF.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 16);
    let mut at_line_start = true;
    for &b in message {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

pub fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

pub fn client_config(verify: Verify<'_>) -> rustls::ClientConfig {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions");
    match verify {
        Verify::Ca(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca).expect("read CA file") {
                roots.add(cert.expect("CA PEM")).expect("add CA");
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Verify::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider())))
            .with_no_client_auth(),
    }
}

#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl Smtp {
    /// Like `connect_auth`, but every failure (connect, greeting, STARTTLS,
    /// handshake, AUTH) is an error instead of a panic.
    pub fn try_connect_auth(port: u16, ca: &Path, user: &str, password: &str) -> io::Result<Smtp> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.set_write_timeout(Some(IO_TIMEOUT))?;
        let mut c = Smtp {
            conn: Conn::Plain(s),
            buf: Vec::new(),
            greeting: Reply {
                code: 0,
                lines: Vec::new(),
            },
        };
        let expect = |r: Reply, code: u16, what: &str| -> io::Result<Reply> {
            if r.code == code {
                Ok(r)
            } else {
                Err(io::Error::other(format!("{what}: {r}")))
            }
        };
        c.greeting = expect(c.read_reply()?, 220, "greeting")?;
        expect(c.try_cmd("EHLO client.test")?, 250, "EHLO")?;
        expect(c.try_cmd("STARTTLS")?, 220, "STARTTLS")?;
        c.tls_handshake(Verify::Ca(ca))?;
        expect(c.try_cmd("EHLO client.test")?, 250, "EHLO")?;
        let token = base64(format!("\0{user}\0{password}").as_bytes());
        expect(c.try_cmd(&format!("AUTH PLAIN {token}"))?, 235, "AUTH")?;
        Ok(c)
    }

    /// MAIL, RCPT…, DATA and the message; any I/O error or unexpected reply
    /// before the end of DATA is an error. Returns the final reply.
    pub fn try_send(&mut self, from: &str, to: &[&str], message: &[u8]) -> io::Result<Reply> {
        let step = |c: &mut Smtp, line: &str, code: u16| -> io::Result<()> {
            let r = c.try_cmd(line)?;
            if r.code == code {
                Ok(())
            } else {
                Err(io::Error::other(format!("{line}: {r}")))
            }
        };
        step(self, &format!("MAIL FROM:<{from}>"), 250)?;
        for t in to {
            step(self, &format!("RCPT TO:<{t}>"), 250)?;
        }
        step(self, "DATA", 354)?;
        self.send_raw(&dot_stuff(message))?;
        self.send_raw(b".\r\n")?;
        self.read_reply()
    }
}
