//! A real S3-compatible server for the tests: moto's standalone server
//! (PyPI `moto[server]`), one process per test on 127.0.0.1, data in memory.
//!
//! moto is installed into its own virtualenv by `.ci/run` (Debian's Python
//! refuses `pip install` into the system, PEP 668), at [`MOTO_PYTHON`];
//! `SCHLEUSE_MOTO_PYTHON` names another interpreter that has it. moto accepts
//! any credentials; the bucket is created with a plain HTTP `PUT`, so this
//! harness needs nothing but the standard library.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, http_request, read_lossy, wait_until};

/// The interpreter of the virtualenv `.ci/run` installs moto into.
pub const MOTO_PYTHON: &str = "/opt/schleuse-test/moto/bin/python";
/// Any key works with moto; these are what the gateway is configured with.
pub const ACCESS_KEY: &str = "schleuse-test-key";
pub const SECRET_KEY: &str = "schleuse-test-secret";

/// The Python that runs moto: `SCHLEUSE_MOTO_PYTHON`, else [`MOTO_PYTHON`].
pub fn moto_python() -> PathBuf {
    std::env::var_os("SCHLEUSE_MOTO_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(MOTO_PYTHON))
}

/// A running `python -m moto.server`; killed on drop.
pub struct Moto {
    child: Option<Child>,
    pub port: u16,
    pub log_path: PathBuf,
}

impl Moto {
    /// Starts moto on a free loopback port and waits (up to 30 s) until it
    /// answers HTTP. Its log goes to `<dir>/moto.log`.
    pub fn start(dir: &Path) -> Moto {
        let python = moto_python();
        assert!(
            python.exists(),
            "{} not found: moto is needed for the S3 tests. Install it as .ci/run does:\n  \
             python3 -m venv /opt/schleuse-test/moto && \
             /opt/schleuse-test/moto/bin/pip install 'moto[server]==5.2.5'\n\
             (or point SCHLEUSE_MOTO_PYTHON at a Python that has moto[server])",
            python.display()
        );
        let port = free_port();
        let log_path = dir.join("moto.log");
        let log = fs::File::create(&log_path).expect("create moto log");
        let child = Command::new(&python)
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .current_dir(dir)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("clone log fd")))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} -m moto.server: {e}", python.display()));
        let mut moto = Moto {
            child: Some(child),
            port,
            log_path,
        };
        let up = wait_until(Duration::from_secs(30), || {
            if let Some(status) = moto
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("moto exited early ({status})\n{}", moto.log());
            }
            http_request(port, "GET", "/", &[], b"")
                .ok()
                .filter(|r| r.status == 200)
        });
        assert!(
            up.is_some(),
            "moto did not answer on 127.0.0.1:{port} within 30 s\n{}",
            moto.log()
        );
        moto
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a bucket (moto needs no signature for it).
    pub fn create_bucket(&self, bucket: &str) {
        let r = http_request(self.port, "PUT", &format!("/{bucket}"), &[], b"")
            .unwrap_or_else(|e| panic!("PUT /{bucket}: {e}\n{}", self.log()));
        assert_eq!(r.status, 200, "create bucket {bucket}: {}", r.body);
    }

    /// Every key in the bucket, sorted (one unsigned `ListObjectsV2`, up to
    /// 1000 keys): a look behind the code under test.
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        let r = http_request(
            self.port,
            "GET",
            &format!("/{bucket}?list-type=2"),
            &[],
            b"",
        )
        .unwrap_or_else(|e| panic!("list {bucket}: {e}\n{}", self.log()));
        assert_eq!(r.status, 200, "list {bucket}: {}", r.body);
        assert!(
            !r.body.contains("<IsTruncated>true"),
            "more keys than one page"
        );
        let mut keys: Vec<String> = r
            .body
            .split("<Key>")
            .skip(1)
            .filter_map(|rest| rest.split_once("</Key>"))
            .map(|(key, _)| key.to_owned())
            .collect();
        keys.sort();
        keys
    }

    /// The `[documents]` section for this server.
    pub fn documents_toml(&self, bucket: &str, prefix: &str) -> String {
        format!(
            "\n[documents]\nbackend = \"s3\"\nendpoint = \"{}\"\nallow_http = true\n\
             region = \"eu-central-1\"\nbucket = \"{bucket}\"\nprefix = \"{prefix}\"\n\
             access_key_id = \"{ACCESS_KEY}\"\nsecret_access_key = \"{SECRET_KEY}\"\n\
             timeout = \"10s\"\n",
            self.endpoint()
        )
    }

    pub fn log(&self) -> String {
        format!(
            "----- moto log ({}) -----\n{}",
            self.log_path.display(),
            read_lossy(&self.log_path)
        )
    }

    /// Stops the server (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("{}", self.log());
        }
    }
}
