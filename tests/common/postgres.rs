//! A throwaway PostgreSQL server for the tests (Debian's `postgresql`
//! package: `/usr/lib/postgresql/<version>/bin`).
//!
//! One server per test binary while any of its tests needs one: every
//! [`database`] call shares the running server (started on first use with
//! `initdb` into a temp dir, trust auth, 127.0.0.1 on a free port, its
//! socket inside the temp dir) and gets a fresh database of its own. The
//! server is stopped (`pg_ctl stop -m immediate`) and its directory deleted
//! when the last [`PgDb`] of the moment is dropped; a later test starts a
//! new one. That costs an `initdb` (about a second) only when the tests
//! of a binary do not overlap, and no server outlives its tests (a static
//! would never be dropped).
//!
//! PostgreSQL refuses to run as root: as root, the directory is given to
//! the `postgres` user and every server command runs through `runuser`.
//! Durability settings are off (`fsync`): these servers hold test data
//! only, and the tests measure nothing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::{free_port, output_text, run_bounded};

/// The `bin` directory of the newest installed PostgreSQL.
fn bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "no PostgreSQL server under /usr/lib/postgresql/*/bin \
             (Debian: apt-get install postgresql; .ci/run installs it)"
        ),
    }
}

fn is_root() -> bool {
    // The owner of /proc/self is the effective user.
    std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
}

/// `program args…`, as the `postgres` user when we are root.
fn server_command(bin: &Path, program: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(program));
        c
    } else {
        Command::new(bin.join(program))
    }
}

pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
}

impl PgServer {
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// A server; with `tls` (certificate and key files), TCP clients must
    /// use TLS (`hostssl` only), which proves a client that got in used it.
    fn start(tls: Option<(&Path, &Path)>) -> PgServer {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("schleuse-pg-")
            .tempdir()
            .expect("create PostgreSQL temp dir");
        let server = PgServer {
            dir,
            bin,
            port: free_port(),
        };
        std::fs::create_dir(server.socket_dir()).expect("socket dir");
        let mut ssl = String::new();
        if let Some((cert, key)) = tls {
            let (c, k) = (
                server.dir.path().join("server.crt"),
                server.dir.path().join("server.key"),
            );
            std::fs::copy(cert, &c).expect("copy certificate");
            std::fs::copy(key, &k).expect("copy key");
            // PostgreSQL refuses a key others can read.
            std::fs::set_permissions(&k, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .expect("chmod key");
            ssl = format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                c.display(),
                k.display()
            );
        }
        if is_root() {
            let out = run_bounded(
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(server.dir.path()),
                None,
                Duration::from_secs(30),
            );
            assert!(out.status.success(), "chown: {}", output_text(&out));
        }
        let out = run_bounded(
            server_command(&server.bin, "initdb")
                .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"])
                .arg("-D")
                .arg(server.data()),
            None,
            Duration::from_secs(120),
        );
        assert!(out.status.success(), "initdb failed: {}", output_text(&out));
        if tls.is_some() {
            std::fs::write(
                server.data().join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
            )
            .expect("write pg_hba.conf");
        }
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} \
             -c fsync=off -c full_page_writes=off -c max_connections=200{ssl}",
            server.port,
            server.socket_dir().display()
        );
        let out = run_bounded(
            server_command(&server.bin, "pg_ctl")
                .args(["start", "-w", "-t", "60", "-D"])
                .arg(server.data())
                .arg("-l")
                .arg(server.dir.path().join("server.log"))
                .args(["-o", &options]),
            None,
            Duration::from_secs(90),
        );
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}\n{}",
            output_text(&out),
            server.log()
        );
        server
    }

    /// Creates a database owned by the superuser `postgres`.
    fn create_database(&self, name: &str) {
        let out = run_bounded(
            Command::new(self.bin.join("createdb"))
                .arg("-h")
                .arg(self.socket_dir())
                .args(["-p", &self.port.to_string(), "-U", "postgres", name]),
            None,
            Duration::from_secs(60),
        );
        assert!(
            out.status.success(),
            "createdb {name}: {}\n{}",
            output_text(&out),
            self.log()
        );
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let out = run_bounded(
            server_command(&self.bin, "pg_ctl")
                .args(["stop", "-m", "immediate", "-w", "-t", "30", "-D"])
                .arg(self.data()),
            None,
            Duration::from_secs(60),
        );
        if !out.status.success() {
            eprintln!("pg_ctl stop failed: {}", output_text(&out));
        }
        if std::thread::panicking() {
            eprintln!("----- PostgreSQL log -----\n{}", self.log());
        }
    }
}

/// One test's database on the shared server.
pub struct PgDb {
    pub server: Arc<PgServer>,
    pub name: String,
}

impl PgDb {
    /// A URL for the store: TCP on loopback, no TLS, trust auth.
    pub fn url(&self) -> String {
        self.url_with("sslmode=disable")
    }

    /// The same with other parameters (e.g. `sslmode=require`).
    pub fn url_with(&self, params: &str) -> String {
        format!(
            "postgresql://postgres@127.0.0.1:{}/{}?{params}",
            self.server.port, self.name
        )
    }
}

/// The running server, or a new one.
fn server() -> Arc<PgServer> {
    static SHARED: Mutex<Weak<PgServer>> = Mutex::new(Weak::new());
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = shared.upgrade() {
        return s;
    }
    let s = Arc::new(PgServer::start(None));
    *shared = Arc::downgrade(&s);
    s
}

/// A fresh, empty database (on the shared server).
pub fn database() -> PgDb {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let server = server();
    let name = format!(
        "t{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    );
    server.create_database(&name);
    PgDb { server, name }
}

/// A database on a server of its own that accepts TCP clients over TLS
/// only, with this certificate and key.
pub fn tls_database(cert: &Path, key: &Path) -> PgDb {
    let server = Arc::new(PgServer::start(Some((cert, key))));
    server.create_database("tls");
    PgDb {
        server,
        name: "tls".into(),
    }
}
