//! Residency (SPEC §7): mail leaves only to an allowed upstream, over
//! verified TLS. A config that points elsewhere, or turns TLS off for a
//! non-loopback host, is refused at start with the key named.

mod common;

use std::time::Duration;

use common::*;

fn config_with_upstream(env: &Env, upstream: &str) -> std::path::PathBuf {
    env.write_file(
        "residency.toml",
        format!(
            "[server]\ndata_dir = {:?}\n[accounts]\nfile = {:?}\n[admin]\nenabled = false\n\
             [attachments]\nmode = \"keep\"\n[upstream]\nmode = \"relay\"\nport = 587\n\
             username = \"u\"\npassword = \"p\"\n{upstream}\n",
            env.data_dir.display().to_string(),
            env.accounts_path.display().to_string(),
        )
        .as_bytes(),
    )
}

fn refused(env: &Env, upstream: &str, key: &str, reason: &str) {
    let path = config_with_upstream(env, upstream);
    let path = path.to_str().expect("utf-8 path");
    for args in [
        vec!["--config", path, "check-config"],
        vec!["--config", path, "run"],
    ] {
        let out = run_bounded(
            std::process::Command::new(BIN).args(&args),
            None,
            Duration::from_secs(20),
        );
        let text = output_text(&out);
        assert!(
            !out.status.success(),
            "{args:?} accepted {upstream}: {text}"
        );
        assert!(
            text.contains(key) && text.contains(reason),
            "{args:?}: {text}"
        );
        assert!(!text.contains("panicked"), "{text}");
    }
}

#[test]
fn an_upstream_outside_the_allow_list_is_refused_at_start() {
    let env = Env::new();
    refused(
        &env,
        "host = \"smtp.other-provider.example\"",
        "upstream.host",
        "allowed_hosts",
    );
}

#[test]
fn tls_cannot_be_turned_off_for_a_remote_upstream() {
    let env = Env::new();
    refused(
        &env,
        "host = \"in-v3.mailjet.com\"\ntls = \"none\"",
        "upstream.tls",
        "loopback",
    );
}

#[test]
fn the_default_allow_list_is_mailjet() {
    let env = Env::new();
    std::fs::write(&env.accounts_path, "").expect("accounts file");
    let path = config_with_upstream(&env, "host = \"in-v3.mailjet.com\"");
    let out = run_bounded(
        std::process::Command::new(BIN)
            .args(["--config", path.to_str().expect("path"), "check-config"])
            .current_dir(env.path()),
        None,
        Duration::from_secs(20),
    );
    assert!(out.status.success(), "{}", output_text(&out));
}
