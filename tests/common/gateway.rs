//! The gateway process (`schleuse run`), and [`World`]: gateway, upstream
//! and temp dir together.

use std::fs;
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::Duration;

use super::process::read_lossy;
use super::{
    BIN, Env, GatewayConf, PASSWORD, Smtp, USER, Upstream, UpstreamConf, UpstreamOpts, wait_child,
    wait_until,
};

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

impl Gateway {
    /// Waits (bounded) for the process to exit by itself and reaps it;
    /// `None` if it is still running after `timeout` (it is left running).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let status = wait_child(self.child.as_mut()?, timeout)?;
        self.child = None;
        Some(status)
    }
}

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
