//! One test's world on disk: the gateway configuration a test describes
//! ([`GatewayConf`]), rendered to TOML in a temp dir with its certificates
//! and accounts ([`Env`]), and the `schleuse` CLI run against it.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use super::{
    BIN, Certs, Gateway, PASSWORD, RELAY_PASSWORD, RELAY_USER, USER, Upstream, UpstreamOpts,
    free_port, make_certs, output_text, run_bounded,
};

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
