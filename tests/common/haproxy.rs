//! Debian's HAProxy (installed by .ci/run) in front of gateways: a config
//! the test writes, run in the foreground, killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{output_text, run_bounded};

pub const HAPROXY: &str = "/usr/sbin/haproxy";

/// `haproxy -db` (foreground) running a config the test wrote; killed on drop.
pub struct Haproxy {
    child: Child,
    log_path: PathBuf,
}

impl Haproxy {
    pub fn start(dir: &Path, config: &str) -> Haproxy {
        let cfg = dir.join("haproxy.cfg");
        std::fs::write(&cfg, config).expect("write haproxy.cfg");
        let log_path = dir.join("haproxy.log");
        let log = std::fs::File::create(&log_path).expect("haproxy log");
        let check = run_bounded(
            Command::new(HAPROXY).arg("-c").arg("-f").arg(&cfg),
            None,
            Duration::from_secs(30),
        );
        assert!(
            check.status.success(),
            "haproxy -c\n{}",
            output_text(&check)
        );
        let child = Command::new(HAPROXY)
            .arg("-f")
            .arg(&cfg)
            .arg("-db")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("clone fd")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start haproxy (apt-get install haproxy)");
        Haproxy { child, log_path }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("----- haproxy log -----\n{}", self.log());
        }
    }
}
