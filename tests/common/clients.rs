//! Real SMTP clients as subprocesses: Python's smtplib
//! (`tests/support/send.py`) and swaks.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::{Env, PYTHON, output_text, run_bounded, support_dir};

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
