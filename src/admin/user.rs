//! `schleuse user add|passwd|list|remove`: manage the accounts file.
//! Passwords come from a prompt (asked twice) or one line on stdin
//! (`--password-stdin`), never from the command line.

use std::io::{BufRead, IsTerminal};
use std::path::Path;

use anyhow::{Context, bail};

use crate::accounts::{self, Account, Accounts};

pub fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    let password = if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from stdin")?;
        line.trim_end_matches(['\r', '\n']).to_string()
    } else {
        if !std::io::stdin().is_terminal() {
            bail!("no terminal to ask for the password: pipe it in with --password-stdin");
        }
        let first = rpassword::prompt_password("Password: ").context("cannot read password")?;
        let second =
            rpassword::prompt_password("Repeat password: ").context("cannot read password")?;
        if first != second {
            bail!("the two passwords differ");
        }
        first
    };
    if password.chars().count() < 12 {
        bail!("the password is too short: use at least 12 characters");
    }
    Ok(password)
}

const RELOAD_HINT: &str =
    "reload the running gateway to apply it: systemctl reload schleuse (or kill -HUP its pid)";

/// The optional sender-identity settings of a new account.
#[derive(Debug, Default)]
pub struct Identity {
    pub reply_to: Option<String>,
    pub reply_to_header: Option<String>,
    pub copy_to_sender: bool,
}

pub fn add(
    file: &Path,
    name: &str,
    senders: &[String],
    identity: Identity,
    from_stdin: bool,
) -> anyhow::Result<()> {
    if !accounts::valid_name(name) {
        bail!("{name:?} is not a valid account name (letters, digits, '.', '_', '-')");
    }
    if senders.is_empty() {
        bail!("give at least one --allow-sender PATTERN (e.g. '*@landkreis.example')");
    }
    let mut all = Accounts::load(file)?;
    if all.get(name).is_some() {
        bail!("account {name:?} already exists (use `user passwd` to change its password)");
    }
    if let Some(addr) = &identity.reply_to
        && !crate::config::plausible_recipient(addr)
    {
        bail!("--reply-to {addr:?} is not an address like name@landkreis.example");
    }
    if let Some(h) = &identity.reply_to_header
        && (h.is_empty() || !h.bytes().all(|b| b.is_ascii_graphic() && b != b':'))
    {
        bail!("--reply-to-header {h:?} is not a header name");
    }
    let password = read_password(from_stdin)?;
    all.add(Account {
        reply_to: identity.reply_to,
        reply_to_header: identity.reply_to_header,
        copy_to_sender: identity.copy_to_sender.then_some(true),
        name: name.to_string(),
        password_hash: accounts::hash_password(&password)?,
        allowed_senders: senders.to_vec(),
        ..Default::default()
    })?;
    all.save(file)?;
    println!("account {name} added to {}; {RELOAD_HINT}", file.display());
    Ok(())
}

pub fn passwd(file: &Path, name: &str, from_stdin: bool) -> anyhow::Result<()> {
    let mut all = Accounts::load(file)?;
    if all.get(name).is_none() {
        bail!("no account named {name:?} in {}", file.display());
    }
    let password = read_password(from_stdin)?;
    all.set_password(name, &password)?;
    all.save(file)?;
    println!("password of {name} changed; {RELOAD_HINT}");
    Ok(())
}

pub fn remove(file: &Path, name: &str) -> anyhow::Result<()> {
    let mut all = Accounts::load(file)?;
    all.remove(name)?;
    all.save(file)?;
    println!("account {name} removed; {RELOAD_HINT}");
    Ok(())
}

pub fn list(file: &Path, json: bool) -> anyhow::Result<()> {
    let all = Accounts::load(file)?;
    if json {
        let view: Vec<serde_json::Value> = all
            .accounts
            .iter()
            .map(|a| serde_json::json!({"name": a.name, "allowed_senders": a.allowed_senders}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&view)?);
        return Ok(());
    }
    if all.accounts.is_empty() {
        println!("no accounts in {}", file.display());
        return Ok(());
    }
    let rows: Vec<Vec<String>> = all
        .accounts
        .iter()
        .map(|a| vec![a.name.clone(), a.allowed_senders.join(", ")])
        .collect();
    print!("{}", super::table(&["NAME", "ALLOWED SENDERS"], &rows));
    Ok(())
}
