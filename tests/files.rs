//! What the gateway leaves on disk (SPEC §10) and what `check-config`
//! checks before `run` would fail: files private whatever the umask, a
//! data directory that can be created, retry intervals that are not a
//! tight loop.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::*;

const SENDER: &str = "sender@example.com";
const RCPT: &str = "rcpt@example.net";
const WAIT: Duration = Duration::from_secs(30);

/// Every file and directory under `dir` with group or other access.
fn open_to_others(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.permissions().mode() & 0o077 != 0 {
                found.push(format!(
                    "{} {:o}",
                    path.display(),
                    meta.permissions().mode() & 0o777
                ));
            }
            if meta.is_dir() {
                todo.push(path);
            }
        }
    }
    found
}

#[test]
fn files_are_private_whatever_the_umask() {
    // The usual umask outside systemd. Process-wide, and the usual value
    // anyway, so the other tests of this binary are not affected.
    // SAFETY: umask(2) only sets the file creation mask.
    unsafe { libc::umask(0o022) };
    let mut env = Env::new();
    // An installation from before: data directory and database world-readable.
    std::fs::create_dir_all(&env.data_dir).expect("data dir");
    std::fs::set_permissions(&env.data_dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let db = env.data_dir.join("queue.db");
    std::fs::write(&db, b"").expect("empty database");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).expect("chmod");

    env.write_config(&GatewayConf::outbox());
    env.add_default_user();
    let gw = env.start_gateway();
    let mut c = Smtp::connect_auth(gw.port(), &env.certs.ca_crt, USER, PASSWORD);
    let msg = message_with_document(SENDER, RCPT, "private", b"%PDF-1.4 Zeugnis");
    let r = c.send(SENDER, &[RCPT], &msg);
    assert_eq!(r.code, 250, "{r}");
    let outbox = env.outbox_dir();
    wait_until(WAIT, || {
        std::fs::read_dir(&outbox)
            .ok()?
            .flatten()
            .any(|e| e.path().extension().is_some_and(|x| x == "eml"))
            .then_some(())
    })
    .unwrap_or_else(|| panic!("nothing in the outbox\n{}", gw.log()));

    let mode = std::fs::metadata(&env.data_dir).map(|m| m.permissions().mode() & 0o777);
    assert_eq!(mode.ok(), Some(0o700), "data directory");
    let documents = env.data_dir.join("documents");
    let stored = std::fs::read_dir(&documents)
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(
        stored >= 1,
        "a document was stored in {}",
        documents.display()
    );
    assert!(env.data_dir.join("queue.db-wal").exists(), "WAL present");
    assert_eq!(open_to_others(&env.data_dir), Vec::<String>::new());
}

#[test]
fn check_config_refuses_a_data_dir_that_cannot_be_created() {
    let mut env = Env::new();
    env.write_config(&GatewayConf::outbox());
    env.add_default_user();
    let ok = env.cli(&["check-config"], None);
    assert!(ok.status.success(), "{}", output_text(&ok));

    let plain = env.write_file("plain-file", b"not a directory");
    let text = std::fs::read_to_string(&env.config_path).expect("config");
    let wanted = format!("data_dir = \"{}\"", env.data_dir.display());
    assert!(text.contains(&wanted), "{text}");
    let bad = text.replace(
        &wanted,
        &format!("data_dir = \"{}\"", plain.join("var").display()),
    );
    std::fs::write(&env.config_path, bad).expect("write config");
    let out = env.cli(&["check-config"], None);
    assert!(!out.status.success(), "{}", output_text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "one clear line: {err}");
    assert!(
        err.contains("server.data_dir") && err.contains("is not a directory"),
        "{err}"
    );
}

#[test]
fn a_zero_retry_interval_is_refused() {
    let mut env = Env::new();
    let mut conf = GatewayConf::outbox();
    conf.retry_schedule = vec!["1m", "0s"];
    env.write_config(&conf);
    let out = env.cli(&["check-config"], None);
    assert!(!out.status.success(), "{}", output_text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("delivery.retry_schedule") && err.contains("at least 1s"),
        "{err}"
    );
}
