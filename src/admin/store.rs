//! `schleuse store migrate --from OLD.toml`: moves a gateway's state from
//! the embedded store to the store and document store of `--config`
//! (SPEC §11; what moves and how is in `crate::store::migrate`). Prints
//! each step with its counts as it finishes (SPEC §10), and a closing
//! line; any failure is one sentence and a non-zero exit.
//!
//! The gateway on the old config must be stopped first: the command reads
//! a snapshot, and mail accepted or delivered after it would be lost or
//! sent twice. The gateways on the new config start after it.

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::store::migrate::{self, Event, Summary};

#[derive(Debug, clap::Subcommand)]
pub enum StoreCommand {
    /// Copy the embedded store and documents of OLD.toml into the store and document store of --config
    Migrate {
        /// The old gateway's config (embedded store); that gateway must be stopped
        #[arg(long, value_name = "OLD.toml")]
        from: PathBuf,
    },
}

/// `config` is the target (`--config`), already loaded.
pub async fn run(config: &Config, cmd: StoreCommand) -> anyhow::Result<()> {
    match cmd {
        StoreCommand::Migrate { from } => migrate(&from, config).await,
    }
}

async fn migrate(from_path: &Path, to: &Config) -> anyhow::Result<()> {
    let from = Config::load_for_admin(from_path)?;
    let new = to.file_name();
    let mut print = |event: Event| match event {
        // Printed once the checks passed: a refusal is one line.
        Event::Started => {
            let old = from.file_name();
            println!(
                "Moving the state of {} to {}.",
                old.display(),
                new.display()
            );
            println!("  from: {}", location(&from));
            println!("  to:   {}", location(to));
            println!(
                "The gateway on {} must be stopped; start the gateways on {} only after this.",
                old.display(),
                new.display()
            );
        }
        Event::Done { step, text } => println!("{step}: {text}"),
        Event::Running { step, done, total } => println!("{step}: {done} of {total} …"),
    };
    let summary = migrate::run(&from, to, &mut print).await?;
    println!("{}", closing(&summary, &new));
    Ok(())
}

fn location(config: &Config) -> String {
    format!(
        "{}, documents in {}",
        migrate::describe_store(config),
        config.documents.describe(&config.server.data_dir)
    )
}

fn closing(s: &Summary, new: &Path) -> String {
    if !s.rows {
        return format!("done: {} document(s) copied.", s.documents);
    }
    let key = if s.key {
        "the pseudonym key"
    } else {
        "no pseudonym key"
    };
    format!(
        "done: {} message(s) ({} queued, {} held), {} link(s) and {key} committed in one \
         transaction, {} document(s) copied; start the gateways on {}.",
        s.messages,
        s.queued,
        s.held,
        s.links,
        s.documents,
        new.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_closing_line_counts_what_moved() {
        let s = Summary {
            rows: true,
            messages: 1200,
            queued: 3,
            held: 1,
            links: 5,
            documents: 57,
            key: true,
        };
        assert_eq!(
            closing(&s, Path::new("new.toml")),
            "done: 1200 message(s) (3 queued, 1 held), 5 link(s) and the pseudonym key \
             committed in one transaction, 57 document(s) copied; start the gateways on new.toml."
        );
        let docs_only = Summary {
            documents: 2,
            ..Summary::default()
        };
        assert_eq!(
            closing(&docs_only, Path::new("new.toml")),
            "done: 2 document(s) copied."
        );
    }
}
