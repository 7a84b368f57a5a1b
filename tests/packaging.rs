//! `packaging/install.sh`, staged into a temp dir with `DESTDIR` (no user is
//! created, systemctl is not called): files, modes, and that a second run
//! keeps a config and an environment file the admin has changed.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn install(destdir: &Path, args: &[&str]) -> Output {
    run_bounded(
        Command::new("bash")
            .arg(repo().join("packaging/install.sh"))
            .args(args)
            .env("DESTDIR", destdir)
            .env("SCHLEUSE_BIN", BIN),
        None,
        Duration::from_secs(60),
    )
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn install_sh_stages_files_and_keeps_an_existing_config() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();

    let out = install(root, &["--no-build"]);
    assert!(out.status.success(), "first run\n{}", output_text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("would create the system user 'schleuse'"),
        "{stdout}"
    );
    assert!(
        stdout.contains("skipping systemctl daemon-reload"),
        "{stdout}"
    );
    assert!(stdout.contains("Next steps"), "{stdout}");

    let bin = root.join("usr/local/bin/schleuse");
    let conf = root.join("etc/schleuse/schleuse.toml");
    let envfile = root.join("etc/schleuse/schleuse.env");
    let unit = root.join("etc/systemd/system/schleuse.service");
    assert_eq!(mode(&bin), 0o755, "binary mode");
    assert_eq!(mode(&conf), 0o640, "config mode");
    assert_eq!(mode(&envfile), 0o600, "env file mode");
    assert_eq!(mode(&unit), 0o644, "unit mode");
    assert_eq!(
        mode(&root.join("etc/schleuse")),
        0o755,
        "/etc/schleuse mode"
    );
    assert_eq!(
        fs::metadata(&bin).unwrap().len(),
        fs::metadata(BIN).unwrap().len(),
        "the installed binary is SCHLEUSE_BIN"
    );
    assert_eq!(
        fs::read(&conf).unwrap(),
        fs::read(repo().join("conf/schleuse.toml")).unwrap(),
        "config is conf/schleuse.toml"
    );
    assert_eq!(fs::read(&envfile).unwrap(), b"", "env file starts empty");
    assert_eq!(
        fs::read(&unit).unwrap(),
        fs::read(repo().join("systemd/schleuse.service")).unwrap(),
        "unit is systemd/schleuse.service"
    );
    // The installed binary works and accepts the installed config.
    let out = run_bounded(
        Command::new(&bin)
            .arg("--config")
            .arg(&conf)
            .arg("check-config")
            .current_dir(root),
        None,
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "check-config\n{}", output_text(&out));

    // The admin edits both files; a second run (an upgrade) must keep them.
    let edited = "# edited by the admin\nsending = \"paused\"\n";
    fs::write(&conf, edited).unwrap();
    fs::write(&envfile, "MJ_APIKEY_PUBLIC=abc\n").unwrap();
    fs::write(&unit, "stale unit\n").unwrap();
    let out = install(root, &["--no-build"]);
    assert!(out.status.success(), "second run\n{}", output_text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("kept the existing"), "{stdout}");
    assert_eq!(fs::read_to_string(&conf).unwrap(), edited, "config kept");
    assert_eq!(mode(&conf), 0o640, "config mode kept");
    assert_eq!(
        fs::read_to_string(&envfile).unwrap(),
        "MJ_APIKEY_PUBLIC=abc\n",
        "env file kept"
    );
    assert_eq!(
        fs::read(&unit).unwrap(),
        fs::read(repo().join("systemd/schleuse.service")).unwrap(),
        "the unit is replaced on upgrade"
    );
}

#[test]
fn install_sh_fails_with_one_clear_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = install(dir.path(), &["--bogus"]);
    assert!(!out.status.success(), "{}", output_text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("unknown argument '--bogus'"), "{err}");

    let out = run_bounded(
        Command::new("bash")
            .arg(repo().join("packaging/install.sh"))
            .arg("--no-build")
            .env("DESTDIR", dir.path())
            .env("SCHLEUSE_BIN", dir.path().join("no-such-binary")),
        None,
        Duration::from_secs(60),
    );
    assert!(!out.status.success(), "{}", output_text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("no executable at"), "{err}");
    assert!(
        !dir.path().join("etc").exists(),
        "nothing is installed after an error"
    );
}
