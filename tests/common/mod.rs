//! Shared harness for the integration tests: a temp dir per test, certificates
//! made with the `openssl` CLI, the Python upstream stand-in
//! (`tests/support/upstream.py`), the real `schleuse` binary, and small SMTP
//! clients (a raw/rustls one in Rust, smtplib and swaks as subprocesses).
//!
//! Everything binds to 127.0.0.1, every wait is bounded, and every process is
//! killed on drop. When a test panics, the gateway's and the upstream's logs
//! are printed (from `Drop`), so the failure report shows what they said.

#![allow(dead_code)]

pub mod dns;
pub mod haproxy;
pub mod postgres;
pub mod s3;

use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls;

/// Debian's Python, which has aiosmtpd (the pyenv one on PATH does not).
pub const PYTHON: &str = "/usr/bin/python3";
pub const BIN: &str = env!("CARGO_BIN_EXE_schleuse");

/// The account every test submits with unless it says otherwise.
pub const USER: &str = "app";
pub const PASSWORD: &str = "app-secret-Passw0rd";
/// Credentials the upstream stand-in requires from the gateway.
pub const RELAY_USER: &str = "relayuser";
pub const RELAY_PASSWORD: &str = "relaypass";

pub fn support_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support")
}

/// A loopback port that was free a moment ago, for a server a test starts.
///
/// Taken from below Linux's ephemeral range (32768–60999): a port from
/// that range, released here and bound by the gateway a moment later, can
/// meanwhile become the source port of any outgoing connection on the
/// machine, and the gateway then fails to start (this happened in CI).
/// Each test binary walks the range from its own offset, so the tests of
/// one binary (threads of one process) never get the same port twice.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {LOW}..{}", LOW + SPAN)
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

/// Tests of hourly windows start clear of the clock hour's end, so a
/// test of a few seconds cannot see the window roll over.
pub fn clear_of_hour_end() {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let left = 3600 - secs % 3600;
    if left < 60 {
        std::thread::sleep(Duration::from_secs(left + 1));
    }
}

/// Polls `f` every 50 ms until it returns `Some`, or `None` after `timeout`.
pub fn wait_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn toml_str(s: impl AsRef<str>) -> String {
    let s = s.as_ref();
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn path_str(p: &Path) -> String {
    toml_str(p.to_str().expect("temp paths are UTF-8"))
}

fn read_lossy(p: &Path) -> String {
    fs::read(p)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|e| format!("(cannot read {}: {e})", p.display()))
}

/// Runs a command with a bound on its wall time; it is killed when over.
pub fn run_bounded(cmd: &mut Command, stdin: Option<&[u8]>, timeout: Duration) -> Output {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        pipe.write_all(input).expect("write stdin");
    }
    let mut out_pipe = child.stdout.take().expect("stdout pipe");
    let mut err_pipe = child.stderr.take().expect("stderr pipe");
    let out_t = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out_pipe.read_to_end(&mut v);
        v
    });
    let err_t = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err_pipe.read_to_end(&mut v);
        v
    });
    let Some(status) = wait_child(&mut child, timeout) else {
        let _ = child.kill();
        let status = child.wait().expect("wait after kill");
        let out = out_t.join().unwrap_or_default();
        let err = err_t.join().unwrap_or_default();
        panic!(
            "{cmd:?} did not finish within {timeout:?} (killed, {status})\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&err)
        )
    };
    Output {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    }
}

/// Waits for a child up to `timeout`; `None` if it is still running.
pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    wait_until(timeout, || child.try_wait().expect("try_wait"))
}

pub fn output_text(o: &Output) -> String {
    format!(
        "exit: {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

// ---------------------------------------------------------------------------
// Certificates

/// A private CA and a leaf for `localhost`/`127.0.0.1` signed by it (rustls
/// refuses a CA certificate used as an end entity, so no single self-signed).
#[derive(Debug, Clone)]
pub struct Certs {
    pub ca_crt: PathBuf,
    pub ca_key: PathBuf,
    pub server_crt: PathBuf,
    pub server_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = run_bounded(
        Command::new("openssl").args(args).current_dir(dir),
        None,
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "openssl {args:?} failed\n{}",
        output_text(&out)
    );
}

pub fn make_certs(dir: &Path) -> Certs {
    fs::create_dir_all(dir).expect("create cert dir");
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    let mut args = vec!["req", "-x509", "-nodes"];
    args.extend(ec);
    args.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "30",
        "-subj",
        "/CN=schleuse test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &args);
    let mut args = vec!["req", "-new", "-nodes"];
    args.extend(ec);
    args.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    openssl(dir, &args);
    fs::write(
        dir.join("leaf.ext"),
        "basicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth\n\
         subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .expect("write leaf.ext");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "30",
            "-extfile",
            "leaf.ext",
        ],
    );
    Certs {
        ca_crt: dir.join("ca.crt"),
        ca_key: dir.join("ca.key"),
        server_crt: dir.join("server.crt"),
        server_key: dir.join("server.key"),
    }
}

// ---------------------------------------------------------------------------
// The upstream stand-in

#[derive(Debug, Clone)]
pub struct UpstreamOpts {
    /// STARTTLS with the test CA's leaf, AUTH required after TLS.
    pub tls: bool,
    /// Require AUTH with RELAY_USER/RELAY_PASSWORD.
    pub auth: bool,
    pub fail_first: u32,
    pub reject_rcpt: Option<String>,
    /// Answer `451 4.2.0` at RCPT for addresses containing this.
    pub defer_rcpt: Option<String>,
    /// A fixed port (for an upstream that starts after the gateway).
    pub port: Option<u16>,
    /// Accept DATA lines up to this length (aiosmtpd's default is RFC 5321's 1000).
    pub line_limit: Option<usize>,
}

impl Default for UpstreamOpts {
    fn default() -> Self {
        Self {
            tls: true,
            auth: true,
            fail_first: 0,
            reject_rcpt: None,
            defer_rcpt: None,
            port: None,
            line_limit: None,
        }
    }
}

/// One message the upstream accepted.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub n: u32,
    pub eml: Vec<u8>,
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    pub meta: serde_json::Value,
}

impl Delivered {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.eml).into_owned()
    }

    /// The first header field with this name (unfolded), if any.
    pub fn header(&self, name: &str) -> Option<String> {
        header_fields(&self.eml)
            .into_iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
}

/// The header fields of a message: (name, unfolded value).
pub fn header_fields(eml: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(eml);
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in text.split("\r\n") {
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(last) = fields.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
        } else if let Some((n, v)) = line.split_once(':') {
            fields.push((n.to_string(), v.trim().to_string()));
        }
    }
    fields
}

pub struct Upstream {
    child: Option<Child>,
    pub port: u16,
    pub out_dir: PathBuf,
    pub log_path: PathBuf,
    /// Where [`Upstream::refuse`] puts its files (`upstream.py --control`).
    pub control_dir: PathBuf,
}

impl Upstream {
    pub fn start(dir: &Path, certs: &Certs, opts: &UpstreamOpts) -> Upstream {
        let out_dir = dir.join("upstream-out");
        fs::create_dir_all(&out_dir).expect("create upstream out dir");
        let log_path = dir.join("upstream.log");
        let control_dir = dir.join("upstream-control");
        fs::create_dir_all(&control_dir).expect("create upstream control dir");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("open upstream log");
        let mut cmd = Command::new(PYTHON);
        cmd.arg(support_dir().join("upstream.py"))
            .arg("--out")
            .arg(&out_dir)
            .arg("--port")
            .arg(opts.port.unwrap_or(0).to_string())
            .arg("--control")
            .arg(&control_dir);
        if opts.tls {
            cmd.arg("--cert")
                .arg(&certs.server_crt)
                .arg("--key")
                .arg(&certs.server_key);
        } else {
            cmd.arg("--no-tls");
        }
        if opts.auth {
            cmd.args(["--username", RELAY_USER, "--password", RELAY_PASSWORD]);
        }
        if opts.fail_first > 0 {
            cmd.args(["--fail-first", &opts.fail_first.to_string()]);
        }
        if let Some(limit) = opts.line_limit {
            cmd.arg("--line-limit").arg(limit.to_string());
        }
        if let Some(r) = &opts.reject_rcpt {
            cmd.args(["--reject-rcpt", r]);
        }
        if let Some(r) = &opts.defer_rcpt {
            cmd.args(["--defer-rcpt", r]);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        let mut child = cmd.spawn().expect("start upstream.py");
        let stdout = child.stdout.take().expect("upstream stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        let mut up = Upstream {
            child: Some(child),
            port: 0,
            out_dir,
            log_path,
            control_dir,
        };
        match line.trim().strip_prefix("READY ").map(str::parse::<u16>) {
            Some(Ok(port)) => up.port = port,
            _ => panic!(
                "upstream.py did not print READY (got {line:?})\n{}",
                up.log()
            ),
        }
        up
    }

    pub fn log(&self) -> String {
        format!(
            "----- upstream log ({}) -----\n{}",
            self.log_path.display(),
            read_lossy(&self.log_path)
        )
    }

    /// From now on answers `step` (`greeting`, `auth`, `mail` or `rcpt`)
    /// with `reply` (a whole SMTP reply line); `None` goes back to normal.
    pub fn refuse(&self, step: &str, reply: Option<&str>) {
        let path = self.control_dir.join(step);
        match reply {
            Some(r) => {
                // Renamed into place: the upstream never reads half a line.
                let tmp = self.control_dir.join(format!(".{step}.tmp"));
                fs::write(&tmp, format!("{r}\n")).expect("write upstream control file");
                fs::rename(&tmp, &path).expect("place upstream control file");
            }
            None => match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => panic!("remove {}: {e}", path.display()),
            },
        }
    }

    /// Everything accepted so far, in order.
    pub fn messages(&self) -> Vec<Delivered> {
        let mut out = Vec::new();
        for n in 1.. {
            let meta_path = self.out_dir.join(format!("{n}.json"));
            let Ok(meta_text) = fs::read_to_string(&meta_path) else {
                break;
            };
            let meta: serde_json::Value =
                serde_json::from_str(&meta_text).expect("upstream .json parses");
            let eml = fs::read(self.out_dir.join(format!("{n}.eml"))).expect("upstream .eml");
            out.push(Delivered {
                n,
                eml,
                mail_from: meta["mail_from"].as_str().unwrap_or_default().to_string(),
                rcpt_tos: meta["rcpt_tos"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default(),
                meta,
            });
        }
        out
    }

    /// Waits (bounded) until at least `n` messages arrived; panics otherwise
    /// (the logs are printed when the processes are dropped).
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Delivered> {
        wait_until(timeout, || {
            let m = self.messages();
            (m.len() >= n).then_some(m)
        })
        .unwrap_or_else(|| {
            panic!(
                "expected {n} message(s) at the upstream within {timeout:?}, got {}",
                self.messages().len(),
            )
        })
    }

    /// SIGTERM, then SIGKILL if it does not exit within 5 s.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            if wait_child(&mut child, Duration::from_secs(5)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop();
        if thread::panicking() {
            eprintln!("{}", self.log());
        }
    }
}

// ---------------------------------------------------------------------------
// Gateway configuration

#[derive(Debug, Clone)]
pub struct ListenerConf {
    pub port: u16,
    /// `starttls`, `implicit` or `none`.
    pub tls: &'static str,
    /// For `trusted_networks = ["127.0.0.1/32"]` acting as this account.
    pub trusted_account: Option<String>,
    /// Raw TOML lines appended to this `[[listener]]` block.
    pub extra: String,
}

impl ListenerConf {
    pub fn starttls() -> Self {
        Self {
            port: free_port(),
            tls: "starttls",
            trusted_account: None,
            extra: String::new(),
        }
    }

    /// A plaintext loopback listener whose clients act as `account` without AUTH.
    pub fn trusted_plain(account: &str) -> Self {
        Self {
            port: free_port(),
            tls: "none",
            trusted_account: Some(account.into()),
            extra: String::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub enum UpstreamConf {
    /// Relay to the upstream stand-in at this port.
    Relay {
        port: u16,
        tls: bool,
        auth: bool,
    },
    Outbox,
}

#[derive(Debug, Clone)]
pub struct GatewayConf {
    pub sending: &'static str,
    pub listeners: Vec<ListenerConf>,
    pub upstream: UpstreamConf,
    /// Give the gateway the CA-signed leaf (true) or let it generate its own
    /// self-signed certificate (false).
    pub test_ca_cert: bool,
    pub retry_schedule: Vec<&'static str>,
    pub max_message_size: &'static str,
    pub max_recipients: usize,
    pub received_header: &'static str,
    /// Raw TOML lines appended to the end of the `[server]` table.
    pub extra_server: String,
    /// `[sender] from` and `reply_to`: "keep" in tests that compare bytes.
    pub from_mode: &'static str,
    pub reply_to_mode: &'static str,
    /// `[privacy] remove_headers` (none by default here, so bytes compare).
    pub remove_headers: Vec<&'static str>,
    /// Raw TOML appended at the end (e.g. `[[dkim]]` blocks).
    pub extra_toml: String,
    /// `[attachments] mode`; the link service listens on `link_port`.
    pub attachments_mode: &'static str,
    pub link_port: u16,
    /// Raw TOML lines appended to the `[attachments]` table.
    pub attachments_extra: String,
    /// Raw TOML lines appended to the `[privacy]` table.
    pub privacy_extra: String,
    /// Raw TOML lines appended to the `[limits]` table. The rate and quota
    /// limits are off (0) in the harness unless named here, so load tests
    /// are not throttled.
    pub limits_extra: String,
    /// Raw TOML lines appended to the `[upstream]` table.
    pub upstream_extra: String,
}

impl GatewayConf {
    /// One STARTTLS listener relaying to the upstream stand-in (TLS + AUTH).
    pub fn relay(upstream_port: u16) -> Self {
        Self {
            sending: "enabled",
            listeners: vec![ListenerConf::starttls()],
            upstream: UpstreamConf::Relay {
                port: upstream_port,
                tls: true,
                auth: true,
            },
            test_ca_cert: true,
            retry_schedule: vec!["1s", "2s"],
            max_message_size: "1MB",
            max_recipients: 5,
            received_header: "minimal",
            extra_server: String::new(),
            from_mode: "keep",
            reply_to_mode: "keep",
            remove_headers: Vec::new(),
            extra_toml: String::new(),
            attachments_mode: "link",
            link_port: free_port(),
            attachments_extra: String::new(),
            // The PII check off unless a test is about it: other tests
            // send made-up personal data and compare bytes.
            privacy_extra: "pii = \"off\"\n".into(),
            limits_extra: String::new(),
            upstream_extra: String::new(),
        }
    }

    pub fn outbox() -> Self {
        Self {
            upstream: UpstreamConf::Outbox,
            ..Self::relay(0)
        }
    }

    /// The first listener's port.
    pub fn port(&self) -> u16 {
        self.listeners[0].port
    }
}

/// One test's world: its temp dir, certificates and file locations.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub certs: Certs,
    pub config_path: PathBuf,
    pub accounts_path: PathBuf,
    pub data_dir: PathBuf,
    pub conf: Option<GatewayConf>,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("schleuse-test-")
            .tempdir()
            .expect("create temp dir");
        let certs = make_certs(&dir.path().join("ca"));
        Env {
            config_path: dir.path().join("schleuse.toml"),
            accounts_path: dir.path().join("accounts.toml"),
            data_dir: dir.path().join("var"),
            certs,
            dir,
            conf: None,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn render(&self, c: &GatewayConf) -> String {
        let mut t = String::new();
        let d = self.path();
        writeln!(t, "sending = {}", toml_str(c.sending)).unwrap();
        writeln!(t, "\n[server]").unwrap();
        writeln!(t, "hostname = \"gw.test\"").unwrap();
        writeln!(t, "data_dir = {}", path_str(&self.data_dir)).unwrap();
        writeln!(t, "shutdown_grace = \"2s\"").unwrap();
        t.push_str(&c.extra_server);
        for l in &c.listeners {
            writeln!(t, "\n[[listener]]").unwrap();
            writeln!(t, "bind = \"127.0.0.1:{}\"", l.port).unwrap();
            writeln!(t, "tls = {}", toml_str(l.tls)).unwrap();
            if let Some(a) = &l.trusted_account {
                writeln!(t, "trusted_networks = [\"127.0.0.1/32\"]").unwrap();
                writeln!(t, "account = {}", toml_str(a)).unwrap();
            }
            t.push_str(&l.extra);
        }
        writeln!(t, "\n[tls]").unwrap();
        if c.test_ca_cert {
            writeln!(t, "cert = {}", path_str(&self.certs.server_crt)).unwrap();
            writeln!(t, "key = {}", path_str(&self.certs.server_key)).unwrap();
        } else {
            writeln!(t, "cert = {}", path_str(&d.join("gw-certs/server.crt"))).unwrap();
            writeln!(t, "key = {}", path_str(&d.join("gw-certs/server.key"))).unwrap();
        }
        writeln!(t, "\n[accounts]\nfile = {}", path_str(&self.accounts_path)).unwrap();
        writeln!(t, "\n[upstream]").unwrap();
        match &c.upstream {
            UpstreamConf::Outbox => writeln!(t, "mode = \"outbox\"").unwrap(),
            UpstreamConf::Relay { port, tls, auth } => {
                writeln!(t, "mode = \"relay\"\nhost = \"127.0.0.1\"\nport = {port}").unwrap();
                if *tls {
                    writeln!(t, "tls = \"starttls\"").unwrap();
                    writeln!(t, "ca_file = {}", path_str(&self.certs.ca_crt)).unwrap();
                } else {
                    writeln!(t, "tls = \"none\"").unwrap();
                }
                if *auth {
                    writeln!(t, "username = {}", toml_str(RELAY_USER)).unwrap();
                    writeln!(t, "password = {}", toml_str(RELAY_PASSWORD)).unwrap();
                }
                writeln!(t, "timeout = \"10s\"").unwrap();
            }
        }
        t.push_str(&c.upstream_extra);
        let schedule: Vec<String> = c.retry_schedule.iter().map(toml_str).collect();
        writeln!(t, "\n[delivery]").unwrap();
        writeln!(t, "retry_schedule = [{}]", schedule.join(", ")).unwrap();
        writeln!(t, "max_age = \"5d\"\nmax_connections = 4").unwrap();
        writeln!(t, "max_messages_per_second = 1000").unwrap();
        writeln!(t, "\n[limits]").unwrap();
        writeln!(t, "max_message_size = {}", toml_str(c.max_message_size)).unwrap();
        writeln!(t, "max_recipients_per_message = {}", c.max_recipients).unwrap();
        writeln!(t, "max_connections = 500\nmax_connections_per_ip = 50").unwrap();
        for key in [
            "ip_messages_per_minute",
            "account_messages_per_hour",
            "account_messages_per_day",
            "account_recipients_per_day",
        ] {
            if !c.limits_extra.contains(key) {
                writeln!(t, "{key} = 0").unwrap();
            }
        }
        t.push_str(&c.limits_extra);
        writeln!(t, "\n[timeouts]").unwrap();
        writeln!(
            t,
            "command = \"60s\"\ndata_block = \"60s\"\ndata_total = \"120s\""
        )
        .unwrap();
        writeln!(t, "\n[privacy]").unwrap();
        writeln!(t, "received_header = {}", toml_str(c.received_header)).unwrap();
        let remove: Vec<String> = c.remove_headers.iter().map(toml_str).collect();
        writeln!(t, "remove_headers = [{}]", remove.join(", ")).unwrap();
        t.push_str(&c.privacy_extra);
        writeln!(t, "\n[sender]").unwrap();
        writeln!(t, "from = {}", toml_str(c.from_mode)).unwrap();
        writeln!(t, "reply_to = {}", toml_str(c.reply_to_mode)).unwrap();
        writeln!(t, "system_address = \"noreply@example.com\"").unwrap();
        writeln!(t, "\n[log]\nformat = \"human\"\nlevel = \"debug\"").unwrap();
        if !c.extra_toml.contains("[attachments]") {
            writeln!(t, "\n[attachments]").unwrap();
            writeln!(t, "mode = {}", toml_str(c.attachments_mode)).unwrap();
            writeln!(t, "bind = \"127.0.0.1:{}\"", c.link_port).unwrap();
            writeln!(t, "public_url = \"http://127.0.0.1:{}\"", c.link_port).unwrap();
            t.push_str(&c.attachments_extra);
        }
        // Gateways of parallel tests must not fight over the default admin
        // port; tests that want the endpoint configure it themselves.
        if !c.extra_toml.contains("[admin]") {
            writeln!(t, "\n[admin]\nenabled = false").unwrap();
        }
        t.push_str(&c.extra_toml);
        t
    }

    pub fn write_config(&mut self, c: &GatewayConf) {
        fs::write(&self.config_path, self.render(c)).expect("write config");
        self.conf = Some(c.clone());
    }

    pub fn conf(&self) -> &GatewayConf {
        self.conf.as_ref().expect("write_config first")
    }

    /// `schleuse --config <this config> ARGS...`, bounded to 60 s.
    pub fn cli(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        run_bounded(
            Command::new(BIN)
                .arg("--config")
                .arg(&self.config_path)
                .args(args)
                .current_dir(self.path()),
            stdin,
            Duration::from_secs(60),
        )
    }

    /// Creates an account through `schleuse user add … --password-stdin`.
    pub fn add_user(&self, name: &str, password: &str, allow: &[&str]) {
        let mut args = vec!["user", "add", name];
        for a in allow {
            args.extend(["--allow-sender", a]);
        }
        args.push("--password-stdin");
        let input = format!("{password}\n");
        let out = self.cli(&args, Some(input.as_bytes()));
        assert!(
            out.status.success(),
            "schleuse user add {name} failed\n{}",
            output_text(&out)
        );
    }

    /// The usual account: USER/PASSWORD, senders `*@example.com`.
    pub fn add_default_user(&self) {
        self.add_user(USER, PASSWORD, &["*@example.com"]);
    }

    pub fn start_gateway(&self) -> Gateway {
        Gateway::start(self, "gateway.log")
    }

    pub fn start_upstream(&self, opts: &UpstreamOpts) -> Upstream {
        Upstream::start(self.path(), &self.certs, opts)
    }

    pub fn outbox_dir(&self) -> PathBuf {
        self.data_dir.join("outbox")
    }

    /// A file in the temp dir with these contents.
    pub fn write_file(&self, name: &str, contents: &[u8]) -> PathBuf {
        let p = self.path().join(name);
        fs::write(&p, contents).expect("write file");
        p
    }
}

impl Default for Env {
    fn default() -> Self {
        Self::new()
    }
}

// ---------------------------------------------------------------------------
// The gateway process

pub struct Gateway {
    child: Option<Child>,
    pub log_path: PathBuf,
    pub ports: Vec<u16>,
}

impl Gateway {
    /// Starts `schleuse run` and waits (up to 60 s) until every listener
    /// and the harness's link service accept connections. The log (stdout +
    /// stderr) is appended to `<tempdir>/<log_name>`.
    pub fn start(env: &Env, log_name: &str) -> Gateway {
        let log_path = env.path().join(log_name);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("open gateway log");
        let child = Command::new(BIN)
            .arg("--config")
            .arg(&env.config_path)
            .arg("run")
            .current_dir(env.path())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("clone log fd")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start schleuse run");
        let conf = env.conf();
        let ports: Vec<u16> = conf.listeners.iter().map(|l| l.port).collect();
        let mut gw = Gateway {
            child: Some(child),
            log_path,
            ports: ports.clone(),
        };
        // The link service is bound after the SMTP listeners: a test that
        // downloads right after a (re)start must not find its port closed.
        // Only the one `render` configures (a test's own `[attachments]`
        // table may have none).
        let link = (conf.attachments_mode == "link" && !conf.extra_toml.contains("[attachments]"))
            .then_some(conf.link_port);
        for port in ports.into_iter().chain(link) {
            let up = wait_until(Duration::from_secs(60), || {
                if let Some(status) = gw.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                    panic!("schleuse run exited early ({status})\n{}", gw.log());
                }
                TcpStream::connect(("127.0.0.1", port)).ok()
            });
            match up {
                Some(s) => {
                    let _ = s.shutdown(Shutdown::Both);
                }
                None => panic!(
                    "schleuse did not listen on 127.0.0.1:{port} within 60 s\n{}",
                    gw.log()
                ),
            }
        }
        gw
    }

    pub fn port(&self) -> u16 {
        self.ports[0]
    }

    pub fn log(&self) -> String {
        format!(
            "----- gateway log ({}) -----\n{}",
            self.log_path.display(),
            read_lossy(&self.log_path)
        )
    }

    /// SIGKILL (`kill -9`), and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() {
            eprintln!("{}", self.log());
        }
    }
}

// ---------------------------------------------------------------------------
// A small synchronous SMTP client (plain TCP, upgraded with rustls)

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

// ---------------------------------------------------------------------------
// Python smtplib and swaks clients

/// One result line of `tests/support/send.py`.
#[derive(Debug, Clone)]
pub struct SendResult {
    pub stage: String,
    pub code: u16,
    pub reply: String,
    pub queue_id: Option<String>,
}

/// Submits `message` with smtplib (STARTTLS verified against the test CA,
/// AUTH LOGIN/PLAIN as the given user). Panics if smtplib raised.
pub fn smtplib_send(
    env: &Env,
    port: u16,
    user: (&str, &str),
    from: &str,
    to: &[&str],
    message: &[u8],
) -> Vec<SendResult> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let msg_path = env.write_file(&format!("smtplib-{n}.eml"), message);
    let mut cmd = Command::new(PYTHON);
    cmd.arg(support_dir().join("send.py"))
        .args(["--port", &port.to_string(), "--starttls", "--cafile"])
        .arg(&env.certs.ca_crt)
        .args(["--user", user.0, "--password", user.1, "--mail-from", from])
        .arg("--message")
        .arg(&msg_path);
    for t in to {
        cmd.args(["--to", t]);
    }
    let out = run_bounded(&mut cmd, None, Duration::from_secs(120));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("send.py output is not JSON ({e})\n{}", output_text(&out)));
    assert!(
        v["error"].is_null() && out.status.success(),
        "send.py failed\n{}",
        output_text(&out)
    );
    v["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| SendResult {
            stage: r["stage"].as_str().unwrap_or_default().into(),
            code: r["code"].as_u64().unwrap_or_default() as u16,
            reply: r["reply"].as_str().unwrap_or_default().into(),
            queue_id: r["queue_id"].as_str().map(String::from),
        })
        .collect()
}

/// Runs swaks (STARTTLS, AUTH PLAIN); returns its output (all transcript).
pub fn swaks(env: &Env, port: u16, extra: &[&str]) -> Output {
    let mut cmd = Command::new("swaks");
    cmd.args([
        "--server",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--ehlo",
        "swaks.test",
        "--timeout",
        "30",
        "--tls",
    ])
    .args(extra)
    .current_dir(env.path());
    run_bounded(&mut cmd, None, Duration::from_secs(120))
}

// ---------------------------------------------------------------------------
// Test messages

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

// ---------------------------------------------------------------------------
// A whole test world

/// Gateway, upstream and temp dir together; dropped in that order, so the
/// processes are gone before their directory is removed, and their logs are
/// still there to print when a test panics.
pub struct World {
    pub gw: Gateway,
    pub up: Option<Upstream>,
    pub env: Env,
}

impl World {
    /// Upstream (TLS + AUTH) started, config from `GatewayConf::relay`
    /// adjusted by `f`, the default account, the gateway running.
    pub fn relay_with(opts: UpstreamOpts, f: impl FnOnce(&mut GatewayConf)) -> World {
        let mut env = Env::new();
        let up = env.start_upstream(&opts);
        let mut conf = GatewayConf::relay(up.port);
        if let UpstreamConf::Relay { tls, auth, .. } = &mut conf.upstream {
            *tls = opts.tls;
            *auth = opts.auth;
        }
        f(&mut conf);
        env.write_config(&conf);
        env.add_default_user();
        let gw = env.start_gateway();
        World {
            gw,
            up: Some(up),
            env,
        }
    }

    pub fn relay() -> World {
        Self::relay_with(UpstreamOpts::default(), |_| {})
    }

    /// A gateway whose config comes from `conf` and has no upstream running.
    pub fn without_upstream(conf: GatewayConf) -> World {
        let mut env = Env::new();
        env.write_config(&conf);
        env.add_default_user();
        let gw = env.start_gateway();
        World { gw, up: None, env }
    }

    pub fn up(&self) -> &Upstream {
        self.up.as_ref().expect("this world has an upstream")
    }

    /// The first listener's port.
    pub fn port(&self) -> u16 {
        self.gw.port()
    }

    pub fn ca(&self) -> &Path {
        &self.env.certs.ca_crt
    }

    /// A connection that has done EHLO, STARTTLS, EHLO, AUTH as the default account.
    pub fn client(&self) -> Smtp {
        Smtp::connect_auth(self.port(), self.ca(), USER, PASSWORD)
    }
}

// ---------------------------------------------------------------------------
// A minimal HTTP/1.1 client for the admin endpoint

/// One HTTP response: status, header fields (names lowercased), body.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// The body as received (downloads are binary).
    pub bytes: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` on 127.0.0.1:port with `Connection: close` and optional basic
/// auth; bounded to 10 s. `Err` when the connection fails.
pub fn http_get(port: u16, path: &str, auth: Option<(&str, &str)>) -> io::Result<HttpResponse> {
    let mut extra = Vec::new();
    if let Some((user, pass)) = auth {
        let token = base64(format!("{user}:{pass}").as_bytes());
        extra.push(("Authorization".to_string(), format!("Basic {token}")));
    }
    http_request(port, "GET", path, &extra, b"")
}

/// A form `POST` (`application/x-www-form-urlencoded`) with extra headers.
pub fn http_post_form(
    port: u16,
    path: &str,
    headers: &[(String, String)],
    fields: &[(&str, &str)],
) -> io::Result<HttpResponse> {
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
        .collect();
    let mut all = headers.to_vec();
    all.push((
        "Content-Type".into(),
        "application/x-www-form-urlencoded".into(),
    ));
    http_request(port, "POST", path, &all, body.join("&").as_bytes())
}

fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b' ' => "+".into(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One HTTP/1.1 request with `Connection: close`, bounded to 10 s.
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> io::Result<HttpResponse> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| io::Error::other("no end of HTTP header"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad status line in {head:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body)?;
    }
    Ok(HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        bytes: body,
    })
}

fn dechunk(mut data: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| io::Error::other("chunk size line"))?;
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|e| io::Error::other(format!("chunk size {size_text:?}: {e}")))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = data
            .get(..size)
            .ok_or_else(|| io::Error::other("short chunk"))?;
        out.extend_from_slice(chunk);
        data = data.get(size + 2..).unwrap_or_default();
    }
}

/// Prometheus text format samples: `name{labels}` (as written) → value.
pub fn prometheus_samples(text: &str) -> std::collections::BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_string(), value.parse().ok()?))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Helpers for tests that expect failures (shutdown, restarts)

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

impl Gateway {
    /// Waits (bounded) for the process to exit by itself and reaps it;
    /// `None` if it is still running after `timeout` (it is left running).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let status = wait_child(self.child.as_mut()?, timeout)?;
        self.child = None;
        Some(status)
    }
}

// ---------------------------------------------------------------------------
// Counting deliveries by Message-ID (crash and shutdown tests)

/// Waits up to `timeout` until every Message-ID in `acked` has reached the
/// upstream. `Err` lists the ones still missing and how many messages came.
pub fn wait_for_message_ids(
    up: &Upstream,
    acked: &[String],
    timeout: Duration,
) -> Result<(), (Vec<String>, usize)> {
    let missing = |msgs: &[Delivered]| -> Vec<String> {
        let got: std::collections::HashSet<String> =
            msgs.iter().filter_map(|d| d.header("Message-ID")).collect();
        acked
            .iter()
            .filter(|id| !got.contains(*id))
            .cloned()
            .collect()
    };
    let done = wait_until(timeout, || missing(&up.messages()).is_empty().then_some(()));
    match done {
        Some(()) => Ok(()),
        None => {
            let msgs = up.messages();
            Err((missing(&msgs), msgs.len()))
        }
    }
}

/// How often each Message-ID reached the upstream (more than once: a duplicate).
pub fn arrivals_per_message_id(up: &Upstream) -> std::collections::HashMap<String, usize> {
    let mut per_id = std::collections::HashMap::new();
    for d in up.messages() {
        *per_id
            .entry(d.header("Message-ID").unwrap_or_default())
            .or_default() += 1;
    }
    per_id
}
