//! `schleuse suppress list|add|remove|import-dsn`: the suppression list
//! (SPEC §3, §6), against the same database the gateway uses; a change
//! applies to the next `RCPT TO` at once.

use super::time;
use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;

use crate::config::{Config, parse_duration};
use crate::store::Store;
use crate::store::now_ms;
use crate::store::suppression::{SuppressOutcome, Suppression, SuppressionSource, normalise};
use crate::suppression::{apply_dsn, date, dsn_reader};

#[derive(Debug, clap::Subcommand)]
pub enum SuppressCommand {
    /// Suppressed addresses (address, reason, source, since, until)
    List {
        #[arg(long)]
        json: bool,
    },
    /// Suppress an address: permanently, or for a while with --for
    Add {
        address: String,
        /// Why (shown to the sending app in the 550 reply)
        #[arg(long, default_value = "admin")]
        reason: String,
        /// How long, e.g. 30d [default: until removed]
        #[arg(long = "for", value_name = "DURATION")]
        duration: Option<String>,
    },
    /// Lift the suppression of an address
    Remove { address: String },
    /// Suppress the hard-bounced recipients of DSN files (RFC 3464); '-' reads stdin
    ImportDsn {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

fn until(s: &Suppression) -> String {
    s.expires_at.map_or_else(|| "permanent".into(), time)
}

pub async fn run(store: &dyn Store, config: &Config, cmd: SuppressCommand) -> anyhow::Result<()> {
    match cmd {
        SuppressCommand::List { json } => list(store, json).await,
        SuppressCommand::Add {
            address,
            reason,
            duration,
        } => add(store, &address, &reason, duration.as_deref()).await,
        SuppressCommand::Remove { address } => {
            if !store.unsuppress(&address).await? {
                anyhow::bail!("{} is not on the suppression list", normalise(&address));
            }
            println!("{}: removed from the suppression list", normalise(&address));
            Ok(())
        }
        SuppressCommand::ImportDsn { files } => import_dsn(store, config, &files).await,
    }
}

async fn list(store: &dyn Store, json: bool) -> anyhow::Result<()> {
    let entries = store.suppressions(now_ms()).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(());
    }
    if entries.is_empty() {
        println!("the suppression list is empty");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|s| {
            vec![
                s.address.clone(),
                s.reason.clone(),
                s.source.to_string(),
                time(s.created_at),
                until(s),
            ]
        })
        .collect();
    print!(
        "{}",
        super::table(&["ADDRESS", "REASON", "SOURCE", "SINCE", "UNTIL"], &rows)
    );
    Ok(())
}

async fn add(
    store: &dyn Store,
    address: &str,
    reason: &str,
    duration: Option<&str>,
) -> anyhow::Result<()> {
    let address = normalise(address);
    if !crate::config::plausible_recipient(&address) {
        anyhow::bail!("{address:?} is not an address like parent@example.org");
    }
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().any(char::is_control) || reason.chars().count() > 80 {
        anyhow::bail!("--reason must be one line of at most 80 characters");
    }
    let now = now_ms();
    let expires_at = match duration {
        None => None,
        Some(d) => {
            let d = parse_duration(d).map_err(|e| anyhow::anyhow!("--for: {e}"))?;
            if d.is_zero() {
                anyhow::bail!("--for must be longer than zero");
            }
            Some(now.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
        }
    };
    let entry = Suppression {
        address: address.clone(),
        source: SuppressionSource::Admin,
        reason: reason.to_string(),
        detail: None,
        created_at: now,
        expires_at,
    };
    let until = match entry.expires_at {
        Some(t) => format!("until {}", time(t)),
        None => "until removed (permanent)".into(),
    };
    let outcome = store.suppress(entry, true).await?;
    let verb = match outcome {
        SuppressOutcome::Added => "suppressed",
        _ => "suppressed (replacing the earlier entry)",
    };
    println!("{address}: {verb} {until}");
    Ok(())
}

async fn import_dsn(store: &dyn Store, config: &Config, files: &[PathBuf]) -> anyhow::Result<()> {
    let mut not_dsn = Vec::new();
    for file in files {
        let name = file.display().to_string();
        let bytes = if name == "-" {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("cannot read stdin")?;
            buf
        } else {
            std::fs::read(file).with_context(|| format!("cannot read {name}"))?
        };
        let Some(report) = dsn_reader::parse(&bytes) else {
            eprintln!(
                "schleuse: {name}: not a delivery status notification (no message/delivery-status part)"
            );
            not_dsn.push(name);
            continue;
        };
        let done = apply_dsn(store, config, &report, &format!("import-dsn {name}")).await?;
        if done.is_empty() {
            println!(
                "{name}: {} recipient(s) reported, none failed permanently with 5.1.x",
                report.recipients.len()
            );
        }
        let until = date(now_ms().saturating_add(
            i64::try_from(config.suppression.hard_bounce_duration.as_millis()).unwrap_or(i64::MAX),
        ));
        for (address, status, outcome) in done {
            let what = match outcome {
                SuppressOutcome::Added => format!("suppressed until {until}"),
                SuppressOutcome::Renewed => format!("suppression renewed until {until}"),
                SuppressOutcome::Kept => "already suppressed for longer".into(),
            };
            println!("{name}: {address}: {what} ({status})");
        }
    }
    if !not_dsn.is_empty() {
        anyhow::bail!(
            "{} file(s) were not DSNs: {}",
            not_dsn.len(),
            not_dsn.join(", ")
        );
    }
    Ok(())
}
