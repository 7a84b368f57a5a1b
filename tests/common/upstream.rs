//! The upstream stand-in (`tests/support/upstream.py`): starting it, telling
//! it to refuse, and reading what it accepted (also by Message-ID, for the
//! crash and shutdown tests).

use std::fs;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use super::process::read_lossy;
use super::{Certs, PYTHON, RELAY_PASSWORD, RELAY_USER, support_dir, wait_child, wait_until};

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
