//! Exactly once under local faults (SPEC §9): a message the upstream has
//! accepted is never offered to it again because the gateway could not
//! record the result — not with the disk full (a small tmpfs as the data
//! directory), not with the database locked from outside for longer than
//! the busy timeout. Delivery pauses meanwhile, `/readyz` says why, the log
//! says it without flooding, and everything goes out once the store takes
//! writes again. At submission, a full disk is `452 4.3.1` and nothing is
//! acknowledged that is not stored.
//!
//! The tmpfs tests mount a file system: they need root, as CI has.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const SENDER: &str = "sender@example.com";
const RCPT: &str = "rcpt@example.net";
const WAIT: Duration = Duration::from_secs(90);
/// Longer than the old 30 s store-error pause after which a message whose
/// attempt could not be recorded was offered to the upstream again.
const FAULT_HELD: Duration = Duration::from_secs(40);

/// A tmpfs of `size` mounted on `dir` for the test's lifetime.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        fs::create_dir_all(dir).expect("create mount point");
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs needs root (CI runs as root): {}",
            output_text(&out)
        );
        Tmpfs(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes `path` until the file system has no room left.
fn fill(path: &Path) {
    let mut f = fs::File::create(path).expect("create filler");
    let chunk = vec![0x5a_u8; 64 * 1024];
    loop {
        if f.write_all(&chunk).is_err() {
            break;
        }
    }
    // The last partial block, byte by byte.
    let mut small = [0x5a_u8; 512];
    while f.write_all(&small).is_ok() {}
    small = [0; 512];
    let _ = f.write(&small[..1]);
    let _ = f.sync_all();
}

fn admin_toml(port: u16) -> String {
    format!("\n[admin]\nbind = \"127.0.0.1:{port}\"\n")
}

fn readyz(port: u16) -> Option<(u16, String)> {
    http_get(port, "/readyz", None)
        .ok()
        .map(|r| (r.status, r.body))
}

/// Waits until `/readyz` answers 503 with a line containing `needle`.
fn wait_not_ready(port: u16, needle: &str) -> String {
    wait_until(WAIT, || {
        readyz(port).filter(|(s, b)| *s == 503 && b.contains(needle))
    })
    .map(|(_, b)| b)
    .unwrap_or_else(|| {
        panic!(
            "/readyz never reported {needle:?}; last: {:?}",
            readyz(port)
        )
    })
}

fn wait_log(gw: &Gateway, needle: &str) {
    wait_until(WAIT, || gw.log().contains(needle).then_some(()))
        .unwrap_or_else(|| panic!("the log never said {needle:?}:\n{}", gw.log()));
}

/// Submits `n` messages; the Message-IDs of those acknowledged with 250.
fn submit(w: &World, prefix: &str, n: usize) -> Vec<String> {
    let mut c = w.client();
    (0..n)
        .map(|i| {
            let marker = format!("{prefix}-{i}");
            let r = c.send(SENDER, &[RCPT], &simple_message(SENDER, RCPT, &marker));
            assert_eq!(r.code, 250, "{r}");
            format!("<{marker}@example.com>")
        })
        .collect()
}

fn duplicates(up: &Upstream) -> Vec<(String, usize)> {
    arrivals_per_message_id(up)
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .collect()
}

/// Waits until the queue is empty (every outcome recorded).
fn wait_queue_empty(w: &World) {
    wait_until(WAIT, || {
        let out = w.env.cli(&["queue", "list", "--json"], None);
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        list.as_array().is_some_and(|a| a.is_empty()).then_some(())
    })
    .unwrap_or_else(|| {
        let out = w.env.cli(&["queue", "list"], None);
        panic!("queue never emptied:\n{}", output_text(&out))
    });
}

/// How many messages each test sends.
const N: usize = 10;

/// A gateway relaying to an upstream that answers the first `N` messages
/// with `451` (so each has had one recorded attempt and waits 15 s for its
/// next), with the admin endpoint on; `tmpfs_size` mounts the data
/// directory first. The fault goes in while they wait: their next attempt
/// is accepted by the upstream and cannot be recorded.
fn world(admin: u16, tmpfs_size: Option<&str>) -> (World, Vec<String>, Option<Tmpfs>) {
    let mut env = Env::new();
    let mount = tmpfs_size.map(|size| Tmpfs::mount(&env.data_dir, size));
    let up = env.start_upstream(&UpstreamOpts {
        fail_first: N as u32,
        ..UpstreamOpts::default()
    });
    let mut conf = GatewayConf::relay(up.port);
    conf.retry_schedule = vec!["15s"];
    conf.extra_toml = admin_toml(admin);
    env.write_config(&conf);
    env.add_default_user();
    let gw = env.start_gateway();
    wait_until(WAIT, || readyz(admin)).expect("admin endpoint answers");
    let w = World {
        gw,
        up: Some(up),
        env,
    };
    let acked = submit(&w, if mount.is_some() { "full" } else { "locked" }, N);
    wait_until(WAIT, || {
        (w.gw
            .log()
            .matches("INFO delivery attempt queue_id=")
            .count()
            >= N)
            .then_some(())
    })
    .unwrap_or_else(|| panic!("the first attempts were not all recorded:\n{}", w.gw.log()));
    assert!(w.up().messages().is_empty());
    (w, acked, mount)
}

#[test]
fn disk_full_after_the_upstream_accepted_relays_each_message_once() {
    let admin = free_port();
    let (mut w, acked, _tmpfs) = world(admin, Some("16m"));

    // The disk fills while the messages wait for their next attempt.
    let filler = w.env.data_dir.join("filler");
    fill(&filler);
    // Each readiness check commits a row: once that fails, the store is
    // full (no slack left in the WAL file).
    let why = wait_not_ready(admin, "store");
    assert!(why.contains("full"), "{why}");

    // Submission with a full disk: 452 4.3.1, nothing acknowledged.
    let mut c = w.client();
    let r = c.send(SENDER, &[RCPT], &simple_message(SENDER, RCPT, "while-full"));
    assert!(r.is(452, "4.3.1"), "{r}");
    // A document cannot be stored either, and leaves no temporary file.
    let doc = vec![b'%'; 256 * 1024];
    let msg = message_with_document(SENDER, RCPT, "doc-while-full", &doc);
    let r = c.send(SENDER, &[RCPT], &msg);
    assert!(r.is(452, "4.3.1"), "{r}");
    let leftovers: Vec<_> = fs::read_dir(w.env.data_dir.join("documents"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert_eq!(
        leftovers,
        Vec::<std::ffi::OsString>::new(),
        "nothing left in documents/"
    );

    // The upstream accepts them now, while the disk stays full.
    wait_log(&w.gw, "cannot record delivery attempt");
    let why = wait_not_ready(admin, "delivery: paused");
    assert!(why.contains("full"), "readyz names the cause: {why}");
    let first_seen = w.up().messages().len();
    assert!(first_seen >= 1, "something reached the upstream");
    std::thread::sleep(FAULT_HELD);
    assert_eq!(
        duplicates(w.up()),
        vec![],
        "relayed again while the disk was full"
    );
    assert_eq!(
        w.up().messages().len(),
        first_seen,
        "no new attempts while outcomes wait to be recorded"
    );
    let log = w.gw.log();
    let checkpoint_lines = log.matches("WAL checkpoint").count();
    assert!(
        checkpoint_lines <= 3,
        "checkpoint failures are logged once a minute, not {checkpoint_lines} times in {FAULT_HELD:?}"
    );
    assert!(log.matches("store still refuses").count() <= 2, "{log}");

    // A crash now must not forget the kept outcomes either: kill -9, free
    // the disk, start again. The journal is recorded before any attempt.
    w.gw.kill();
    fs::remove_file(&filler).expect("free the disk");
    w.gw = Gateway::start(&w.env, "gateway-restarted.log");
    wait_log(&w.gw, "previous run could not record");
    wait_for_message_ids(w.up(), &acked, WAIT).unwrap_or_else(|(missing, got)| {
        panic!("missing {missing:?} ({got} arrived)\n{}", w.gw.log())
    });
    wait_queue_empty(&w);
    assert_eq!(duplicates(w.up()), vec![], "{}", w.gw.log());
    assert_eq!(w.up().messages().len(), acked.len());
    assert_eq!(
        wait_until(WAIT, || readyz(admin).filter(|r| r.0 == 200)).map(|r| r.0),
        Some(200)
    );
}

/// Holds `BEGIN IMMEDIATE` on the database from another process until
/// dropped.
struct Locker(Child);

impl Locker {
    fn lock(db: &Path) -> Locker {
        let mut child = Command::new("/usr/bin/python3")
            .arg("-c")
            .arg(
                "import sqlite3, sys\n\
                 c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)\n\
                 c.execute('BEGIN IMMEDIATE')\n\
                 print('locked', flush=True)\n\
                 sys.stdin.read()\n",
            )
            .arg(db)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start python3");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read from the locker");
        assert_eq!(line.trim(), "locked");
        Locker(child)
    }
}

impl Drop for Locker {
    fn drop(&mut self) {
        // Closing stdin ends it; kill in case it hangs.
        drop(self.0.stdin.take());
        if wait_child(&mut self.0, Duration::from_secs(10)).is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn database_locked_from_outside_relays_each_message_once() {
    let admin = free_port();
    let (w, acked, _) = world(admin, None);

    let locker = Locker::lock(&w.env.data_dir.join("queue.db"));
    // The next attempt is accepted by the upstream; its record waits out
    // the busy timeout, then fails.
    wait_log(&w.gw, "cannot record delivery attempt");
    let failed_at = Instant::now();
    let why = wait_not_ready(admin, "delivery: paused");
    assert!(why.contains("database is locked"), "names the cause: {why}");
    let log = w.gw.log();
    assert!(
        !log.contains("the store has shut down"),
        "the log names the real cause:\n{log}"
    );
    let first_seen = w.up().messages().len();
    assert!(first_seen >= 1, "the upstream accepted something");
    if let Some(rest) = FAULT_HELD.checked_sub(failed_at.elapsed()) {
        std::thread::sleep(rest);
    }
    assert_eq!(duplicates(w.up()), vec![], "relayed again while locked");
    assert_eq!(
        w.up().messages().len(),
        first_seen,
        "no new attempts while paused"
    );

    drop(locker);
    wait_for_message_ids(w.up(), &acked, WAIT).unwrap_or_else(|(missing, got)| {
        panic!("missing {missing:?} ({got} arrived)\n{}", w.gw.log())
    });
    wait_queue_empty(&w);
    assert_eq!(duplicates(w.up()), vec![], "{}", w.gw.log());
    assert_eq!(w.up().messages().len(), acked.len());
}
