//! The `schleuse` command line (SPEC §3).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use schleuse::config::{Config, LogFormat};
use schleuse::server::{self, ConfigSource};
use schleuse::store::Store;
use schleuse::{admin, dkim, logfmt};

const DEFAULT_CONFIG: &str = "conf/schleuse.toml";

#[derive(Parser)]
#[command(
    name = "schleuse",
    version,
    about = "SMTP submission gateway: authenticated submission, durable queue, upstream relay"
)]
struct Cli {
    /// Config file [default: conf/schleuse.toml; built-in defaults if absent]
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Log format (overrides [log] format)
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormatArg>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormatArg {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default)
    Run,
    /// Validate the configuration and every file it names
    CheckConfig,
    /// Manage SMTP accounts
    #[command(subcommand)]
    User(UserCommand),
    /// Inspect and manage the queue
    #[command(subcommand)]
    Queue(QueueCommand),
    /// DKIM keys: generate one, check the published DNS record
    #[command(subcommand)]
    Dkim(DkimCommand),
    /// Stored documents and their links
    #[command(subcommand)]
    Links(LinksCommand),
    /// Rights of data subjects: everything held about an address
    #[command(subcommand)]
    Gdpr(GdprCommand),
    /// Relay rules: `rules test FILE.eml --account NAME` (a dry run)
    #[command(subcommand)]
    Rules(admin::rules::RulesCommand),
    /// The suppression list: addresses that bounced hard are refused at RCPT
    #[command(subcommand)]
    Suppress(admin::suppress::SuppressCommand),
    /// Client IPs banned after repeated failed logins
    #[command(subcommand)]
    Bans(admin::bans::BansCommand),
    /// The store itself: `store migrate --from OLD.toml` moves an embedded store to --config's
    #[command(subcommand)]
    Store(admin::store::StoreCommand),
}

#[derive(Subcommand)]
enum GdprCommand {
    /// Print, as JSON, everything held about ADDR (Art. 15)
    Export { address: String },
    /// Delete everything held about ADDR, queued mail included (Art. 17)
    Erase {
        address: String,
        /// Really erase (without it, only say what would go)
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Subcommand)]
enum LinksCommand {
    /// Active links (id, file, size, created, expires, downloads)
    List {
        /// Also expired and revoked links
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a link now: the document is deleted, the link answers 410
    Revoke { id: String },
}

#[derive(Subcommand)]
enum DkimCommand {
    /// Write a new key under certs/dkim/ (PKCS#8, mode 0600) and print the DNS TXT record
    Keygen {
        /// Signing domain (the From: domain), e.g. landkreis.example
        #[arg(long)]
        domain: String,
        /// Selector, e.g. via2026 (the record is SELECTOR._domainkey.DOMAIN)
        #[arg(long)]
        selector: String,
        #[arg(long, value_enum, default_value_t = DkimAlgorithm::Ed25519)]
        algorithm: DkimAlgorithm,
    },
    /// Look up the published key in DNS and compare it with the private key
    Check {
        #[arg(long)]
        domain: String,
        /// Only this selector [default: every [[dkim]] key of the domain]
        #[arg(long)]
        selector: Option<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum DkimAlgorithm {
    Ed25519,
    /// RSA-SHA256, 2048 bits
    Rsa,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add an account (password from a prompt, or --password-stdin)
    Add {
        name: String,
        /// Envelope/From addresses it may use: '*@domain', an address, or '*'
        #[arg(long = "allow-sender", value_name = "PATTERN")]
        allow_sender: Vec<String>,
        /// The staff member's address for Reply-To: (and copies)
        #[arg(long, value_name = "ADDRESS")]
        reply_to: Option<String>,
        /// A header the app sets per message with the staff address (e.g. X-VIA-User)
        #[arg(long, value_name = "HEADER")]
        reply_to_header: Option<String>,
        /// Send the staff member a copy of every relayed message
        #[arg(long)]
        copy_to_sender: bool,
        /// Read the password as one line from stdin
        #[arg(long)]
        password_stdin: bool,
    },
    /// Change an account's password
    Passwd {
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// List accounts
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove an account
    Remove { name: String },
}

#[derive(Subcommand)]
enum QueueCommand {
    /// Messages waiting for delivery or held
    List {
        #[arg(long)]
        json: bool,
    },
    /// One message with its recipients
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Try a queued message again now
    Retry { id: String },
    /// Delete a queued or held message
    Delete { id: String },
    /// Hold a queued message until released
    Hold { id: String },
    /// Release a held message, or with --account every held message of an account
    Release {
        #[arg(required_unless_present = "account", conflicts_with = "account")]
        id: Option<String>,
        #[arg(long, value_name = "NAME")]
        account: Option<String>,
    },
    /// Try every queued message now
    Flush,
}

fn config_source(cli: &Cli) -> ConfigSource {
    match &cli.config {
        Some(p) => ConfigSource::File(p.clone()),
        None if Path::new(DEFAULT_CONFIG).exists() => ConfigSource::File(DEFAULT_CONFIG.into()),
        None => ConfigSource::Builtin,
    }
}

fn init_logging(config: Option<&Config>, arg: Option<LogFormatArg>) {
    let format = match arg {
        Some(LogFormatArg::Json) => LogFormat::Json,
        Some(LogFormatArg::Human) => LogFormat::Human,
        None => config.map(|c| c.log.format).unwrap_or_default(),
    };
    let level = config
        .map(|c| c.log.level.clone())
        .unwrap_or_else(|| "info".into());
    let filter = tracing_subscriber::EnvFilter::try_from_env("SCHLEUSE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // Client-provided text is escaped in both formats (`schleuse::logfmt`);
    // colours only on a terminal, never in a file or the journal.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_writer(logfmt::JsonEscaped(std::io::stderr))
            .init(),
        LogFormat::Human => builder
            .fmt_fields(logfmt::EscapedFields)
            .with_writer(std::io::stderr)
            .init(),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The store `[store]` names; the runtime is the admin command's own.
fn open_store(rt: &tokio::runtime::Runtime, config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    Ok(rt.block_on(schleuse::store::open(config))?)
}

fn main() -> ExitCode {
    // Before anything is created: queue, documents, keys, accounts.
    schleuse::store::private::restrict_umask();
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("schleuse: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    let source = config_source(&cli);
    let command = cli.command.unwrap_or(Command::Run);
    match command {
        Command::Run => {
            let config = source.load()?;
            init_logging(Some(&config), cli.log_format);
            runtime()?.block_on(server::run(source))
        }
        Command::CheckConfig => {
            let config = source.load()?;
            schleuse::store::private::check_creatable_dir(&config.server.data_dir)
                .map_err(|why| anyhow::anyhow!("server.data_dir: {why}"))?;
            let accounts = schleuse::accounts::Accounts::load(&config.accounts.file)?;
            server::check_listener_accounts(&config, &accounts)?;
            for l in &config.listeners {
                if l.tls != schleuse::config::ListenerTls::None
                    && (config.tls.cert.exists() || config.tls.key.exists())
                {
                    schleuse::tls::server_config(&config.tls.cert, &config.tls.key)?;
                    break;
                }
            }
            if let Some(ca) = &config.upstream.ca_file {
                schleuse::tls::client_connector(Some(ca))?;
            }
            server::load_dkim(&config)?;
            println!("{}: OK", config.file_name().display());
            Ok(())
        }
        Command::User(cmd) => {
            let config = source.load_for_admin()?;
            let file = &config.accounts.file;
            match cmd {
                UserCommand::Add {
                    name,
                    allow_sender,
                    reply_to,
                    reply_to_header,
                    copy_to_sender,
                    password_stdin,
                } => {
                    let identity = admin::user::Identity {
                        reply_to,
                        reply_to_header,
                        copy_to_sender,
                    };
                    admin::user::add(file, &name, &allow_sender, identity, password_stdin)
                }
                UserCommand::Passwd {
                    name,
                    password_stdin,
                } => admin::user::passwd(file, &name, password_stdin),
                UserCommand::List { json } => admin::user::list(file, json),
                UserCommand::Remove { name } => admin::user::remove(file, &name),
            }
        }
        Command::Queue(cmd) => {
            let config = source.load_for_admin()?;
            let rt = runtime()?;
            let store = open_store(&rt, &config)?;
            rt.block_on(queue_command(store.as_ref(), cmd))
        }
        Command::Gdpr(cmd) => {
            let config = source.load_for_admin()?;
            let rt = runtime()?;
            let store = open_store(&rt, &config)?;
            match cmd {
                GdprCommand::Export { address } => {
                    rt.block_on(admin::gdpr::export(store.as_ref(), &address))
                }
                GdprCommand::Erase { address, yes } => {
                    let files = schleuse::store::document_files::open(&config)?;
                    rt.block_on(admin::gdpr::erase(
                        store.as_ref(),
                        files.as_ref(),
                        &address,
                        yes,
                    ))
                }
            }
        }
        Command::Suppress(cmd) => {
            let config = source.load_for_admin()?;
            let rt = runtime()?;
            let store = open_store(&rt, &config)?;
            rt.block_on(admin::suppress::run(store.as_ref(), &config, cmd))
        }
        Command::Bans(cmd) => {
            let config = source.load_for_admin()?;
            let rt = runtime()?;
            let store = open_store(&rt, &config)?;
            rt.block_on(admin::bans::run(store.as_ref(), cmd))
        }
        Command::Store(cmd) => {
            let config = source.load_for_admin()?;
            runtime()?.block_on(admin::store::run(&config, cmd))
        }
        Command::Rules(cmd) => {
            let config = source.load_for_admin()?;
            admin::rules::run(&config, cmd)
        }
        Command::Links(cmd) => {
            let config = source.load_for_admin()?;
            let rt = runtime()?;
            let store = open_store(&rt, &config)?;
            match cmd {
                LinksCommand::List { all, json } => {
                    rt.block_on(admin::links::list(store.as_ref(), all, json))
                }
                LinksCommand::Revoke { id } => {
                    let files = schleuse::store::document_files::open(&config)?;
                    let vault = schleuse::links::vault::Vault::new(store, files, None);
                    rt.block_on(admin::links::revoke(&vault, &id))
                }
            }
        }
        Command::Dkim(DkimCommand::Keygen {
            domain,
            selector,
            algorithm,
        }) => {
            let algorithm = match algorithm {
                DkimAlgorithm::Ed25519 => dkim::Algorithm::Ed25519,
                DkimAlgorithm::Rsa => dkim::Algorithm::Rsa,
            };
            let generated = dkim::keygen::keygen(
                Path::new(dkim::keygen::DEFAULT_DIR),
                &domain,
                &selector,
                algorithm,
            )?;
            print!("{}", generated.report());
            Ok(())
        }
        Command::Dkim(DkimCommand::Check { domain, selector }) => {
            let config = source.load_for_admin()?;
            let reports =
                runtime()?.block_on(dkim::check::check(&config, &domain, selector.as_deref()))?;
            for r in &reports {
                println!("{r}");
            }
            let bad = reports.iter().filter(|r| !r.matches()).count();
            if bad > 0 {
                anyhow::bail!(
                    "DKIM check failed for {bad} of {} selector(s) of {domain}",
                    reports.len()
                );
            }
            Ok(())
        }
    }
}

async fn queue_command(store: &dyn Store, cmd: QueueCommand) -> anyhow::Result<()> {
    match cmd {
        QueueCommand::List { json } => admin::queue::list(store, json).await,
        QueueCommand::Show { id, json } => admin::queue::show(store, &id, json).await,
        QueueCommand::Retry { id } => {
            store.retry(&id).await?;
            println!("{id}: will be retried within a second");
            Ok(())
        }
        QueueCommand::Delete { id } => {
            store.delete(&id).await?;
            println!("{id}: deleted");
            Ok(())
        }
        QueueCommand::Hold { id } => {
            store.hold(&id).await?;
            println!("{id}: held");
            Ok(())
        }
        QueueCommand::Release { id: Some(id), .. } => {
            store.release(&id).await?;
            println!("{id}: released");
            Ok(())
        }
        QueueCommand::Release {
            id: None,
            account: Some(account),
        } => admin::queue::release_account(store, &account).await,
        QueueCommand::Release { .. } => anyhow::bail!("queue release needs an ID or --account"),
        QueueCommand::Flush => {
            let n = store.flush().await?;
            println!("{n} queued message(s) will be retried within a second");
            Ok(())
        }
    }
}
