//! `schleuse run`: wires the stages together and owns the process lifecycle.
//!
//! Start-up: config → store → accounts (a first `via` account if there is
//! none) → TLS material → listeners bound → admin endpoint (metrics) →
//! delivery started → `READY=1` to systemd. SIGHUP reloads config,
//! accounts, the certificate and the DKIM keys; a reload that fails
//! validation (or names a key that cannot be read) is refused and the
//! running configuration stays.
//! SIGTERM stops accepting, lets sessions finish up to
//! `server.shutdown_grace`, stops delivery after the messages in hand; a
//! second SIGTERM exits at once (the store is consistent at every commit).
//!
//! The state it builds and hands out is `crate::state::Shared`; this file
//! is the top of the layers, the wiring only.

mod link_tasks;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::accounts::{Account, Accounts};
use crate::admin::endpoint::Endpoint;
use crate::config::{AttachmentMode, Config, ListenerTls, LogRecipients, UpstreamMode};
use crate::dkim::Signer;
use crate::links::vault::Vault;
use crate::queue::Queue;
use crate::state::Shared;
use crate::{delivery, listener, tls};

/// Where the running configuration comes from, for reloads.
pub enum ConfigSource {
    File(PathBuf),
    Builtin,
}

impl ConfigSource {
    pub fn load(&self) -> anyhow::Result<Config> {
        Ok(match self {
            ConfigSource::File(p) => Config::load(p)?,
            ConfigSource::Builtin => Config::builtin(),
        })
    }

    /// See [`Config::load_for_admin`].
    pub fn load_for_admin(&self) -> anyhow::Result<Config> {
        Ok(match self {
            ConfigSource::File(p) => Config::load_for_admin(p)?,
            ConfigSource::Builtin => Config::builtin(),
        })
    }
}

/// The TLS acceptor, generating a self-signed certificate on first start.
fn load_tls(config: &Config) -> anyhow::Result<Option<TlsAcceptor>> {
    if config.listeners.iter().all(|l| l.tls == ListenerTls::None) {
        return Ok(None);
    }
    if tls::ensure_self_signed(&config.tls.cert, &config.tls.key, &config.server.hostname)? {
        tracing::warn!(
            cert = %config.tls.cert.display(),
            "generated a self-signed certificate; replace it with a real one for production"
        );
    }
    let server = tls::server_config(&config.tls.cert, &config.tls.key)?;
    Ok(Some(TlsAcceptor::from(server)))
}

/// The account created on first start when the accounts file is empty.
pub const FIRST_ACCOUNT: &str = "via";

/// Every account a listener hands to trusted clients must exist (an empty
/// accounts file will get [`FIRST_ACCOUNT`] on the first start).
pub fn check_listener_accounts(config: &Config, accounts: &Accounts) -> anyhow::Result<()> {
    for (i, l) in config.listeners.iter().enumerate() {
        let will_exist =
            accounts.accounts.is_empty() && l.account.as_deref() == Some(FIRST_ACCOUNT);
        if let Some(name) = &l.account
            && accounts.get(name).is_none()
            && !will_exist
        {
            anyhow::bail!(
                "{}: listener[{i}].account: no account named {name:?} in {} (add it with `schleuse user add {name}`)",
                config.file_name().display(),
                config.accounts.file.display()
            );
        }
    }
    Ok(())
}

/// Creates the `via` account with a random password when there is none.
fn first_account(config: &Config) -> anyhow::Result<Accounts> {
    let path = &config.accounts.file;
    let mut accounts = Accounts::load(path)?;
    if accounts.accounts.is_empty() {
        let password = crate::accounts::random_password();
        accounts.add(Account {
            name: FIRST_ACCOUNT.into(),
            password_hash: crate::accounts::hash_password(&password)?,
            allowed_senders: vec!["*@landkreis.example".into()],
            ..Account::default()
        })?;
        accounts
            .save(path)
            .with_context(|| "cannot write the first account")?;
        // Printed once, to the terminal/journal of the first start only.
        eprintln!(
            "\n  No SMTP account existed, so one was created:\n\
             \n      user:     via\n      password: {password}\n\
             \n  It may send as *@landkreis.example. This password is shown only now;\n  \
             change it with `schleuse user passwd via`. Stored (hashed) in {}.\n",
            path.display()
        );
    }
    Ok(accounts)
}

pub async fn run(source: ConfigSource) -> anyhow::Result<()> {
    let config = source.load()?;
    if let ConfigSource::Builtin = source {
        tracing::info!(
            "no config file found: using the built-in defaults (see conf/schleuse.toml)"
        );
    }
    let store = crate::store::open(&config).await?;
    store.set_clear_recipients(config.privacy.log_recipients == LogRecipients::Clear);
    let files = crate::store::document_files::open(&config)?;
    files.probe().await?;
    tracing::info!(at = %config.documents.describe(&config.server.data_dir), "document store opened (AES-256-GCM, key per link, never stored)");
    if config.documents.backend == crate::config::DocumentBackend::S3
        && config.store.backend == crate::config::StoreBackend::Embedded
    {
        // The orphan purge deletes objects under the prefix that this
        // instance's own link store does not know.
        tracing::warn!(
            prefix = %config.documents.prefix,
            "documents in a bucket with the embedded store: give every instance its own \
             documents.prefix, or share one PostgreSQL store, or they delete each other's documents"
        );
    }
    let (notices, notice_rx) = link_tasks::notice_channel();
    let vault = Arc::new(Vault::new(store.clone(), files, Some(notices)));
    let accounts = first_account(&config)?;
    check_listener_accounts(&config, &accounts)?;
    let tls = load_tls(&config)?;
    let dkim = load_dkim(&config)?;
    log_dkim(&config, &dkim);

    let mut bound = Vec::new();
    for l in &config.listeners {
        let listener = TcpListener::bind(l.bind)
            .await
            .with_context(|| format!("cannot listen on {}", l.bind))?;
        bound.push((listener, l.clone()));
    }
    let bound_addrs: Vec<_> = bound.iter().map(|(_, l)| l.bind).collect();
    // Bound (and the metrics recorder installed) before the first session.
    // A port that cannot be bound is a start-up error, as for the SMTP
    // listeners: a gateway that silently runs unmonitored is worse.
    let admin = match config.admin.listen_addr() {
        Some(addr) => Some(
            Endpoint::bind(addr)
                .await
                .with_context(|| format!("admin endpoint ([admin] bind = {addr})"))?,
        ),
        None => None,
    };

    let link_listener = link_tasks::bind(&config).await?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let shared = Arc::new(
        Shared::new(
            config.clone(),
            accounts,
            tls,
            Queue::new(store),
            vault,
            shutdown_rx,
        )
        .with_dkim(dkim),
    );
    let link_service = link_listener.map(|l| link_tasks::spawn_service(Arc::clone(&shared), l));
    link_tasks::spawn_purge(Arc::clone(&shared));
    crate::retention::spawn(Arc::clone(&shared));
    crate::suppression::liveness::spawn(Arc::clone(&shared));
    link_tasks::spawn_notices(Arc::clone(&shared), notice_rx);

    // Delivery's health: read by the admin endpoint, set by the blocklist
    // watch, kept by delivery.
    let delivery_handles = Arc::new(delivery::Handles::default());
    let admin = admin.map(|endpoint| {
        endpoint.spawn(
            Arc::clone(&shared),
            Arc::clone(&delivery_handles),
            bound_addrs,
        )
    });

    let mut listeners = Vec::new();
    for (listener, l) in bound {
        let auth = match (&l.account, l.trusted_networks.is_empty()) {
            (Some(a), false) => format!(", trusted networks act as account {a}"),
            _ => String::new(),
        };
        tracing::info!("accepting mail on {} ({:?}{auth})", l.bind, l.tls);
        listeners.push(tokio::spawn(listener::serve(
            listener,
            l.bind,
            Arc::clone(&shared),
        )));
    }
    match config.upstream.mode {
        UpstreamMode::Outbox => tracing::info!(
            "outbox mode: final messages are written to {}/<queue-id>.eml",
            delivery::outbox::dir(&config.server.data_dir).display()
        ),
        UpstreamMode::Relay => tracing::info!(
            "relaying to {}:{} ({:?})",
            config.upstream.host,
            config.upstream.port,
            config.upstream.tls
        ),
    }
    // Before delivery: it may start paused until its first round.
    crate::reputation::spawn(Arc::clone(&shared), Arc::clone(&delivery_handles));
    let delivery = tokio::spawn(delivery::run(Arc::clone(&shared), delivery_handles));

    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    spawn_watchdog();

    let mut hup = signal(SignalKind::hangup()).context("cannot install SIGHUP handler")?;
    let mut term = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?;
    loop {
        tokio::select! {
            _ = hup.recv() => reload(&source, &shared),
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }

    let grace = shared.config().server.shutdown_grace;
    tracing::info!(grace = ?grace, sessions = shared.connections.active(), "shutting down");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    let _ = shutdown_tx.send(true);
    // A second signal means "now".
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        tracing::warn!("second signal: exiting immediately");
        std::process::exit(1);
    });
    for l in listeners {
        let _ = l.await;
    }
    if !shared.connections.wait_idle(grace).await {
        tracing::warn!(
            sessions = shared.connections.active(),
            "sessions still open after the grace period; closing them"
        );
    }
    match tokio::time::timeout(grace, delivery).await {
        // Nothing is being sent any more: leases can go to other instances.
        Ok(_) => {
            if let Err(e) = shared.queue.store().close().await {
                tracing::warn!(error = %e, "cannot give back the queue's leases");
            }
        }
        Err(_) => tracing::warn!("delivery still busy after the grace period"),
    }
    if let Some(service) = link_service {
        // A download in progress gets a moment to finish.
        let _ = tokio::time::timeout(Duration::from_secs(5), service).await;
    }
    if let Some(admin) = admin {
        // It stopped taking requests with the signal; this waits for a
        // scrape in progress, briefly.
        let _ = tokio::time::timeout(Duration::from_secs(2), admin).await;
    }
    tracing::info!("stopped");
    Ok(())
}

fn reload(source: &ConfigSource, shared: &Shared) {
    let attempt = || -> anyhow::Result<(Config, Accounts, Option<TlsAcceptor>, Signer)> {
        let config = source.load()?;
        let accounts = Accounts::load(&config.accounts.file)?;
        check_listener_accounts(&config, &accounts)?;
        let tls = load_tls(&config)?;
        let dkim = load_dkim(&config)?;
        Ok((config, accounts, tls, dkim))
    };
    match attempt() {
        Ok((config, accounts, tls, dkim)) => {
            let old = shared.config();
            if old
                .listeners
                .iter()
                .map(|l| l.bind)
                .ne(config.listeners.iter().map(|l| l.bind))
            {
                tracing::warn!("listener addresses changed: this takes a restart");
            }
            if old.attachments.bind != config.attachments.bind
                || (old.attachments.mode == AttachmentMode::Link)
                    != (config.attachments.mode == AttachmentMode::Link)
            {
                tracing::warn!("link service address or mode changed: this takes a restart");
            }
            if old.admin.listen_addr() != config.admin.listen_addr() {
                tracing::warn!("admin endpoint address changed: this takes a restart");
            }
            let n = accounts.accounts.len();
            log_dkim(&config, &dkim);
            shared
                .queue
                .store()
                .set_clear_recipients(config.privacy.log_recipients == LogRecipients::Clear);
            shared.replace(config, accounts, tls, dkim);
            tracing::info!(accounts = n, "configuration reloaded");
        }
        Err(e) => tracing::error!("reload refused, the running configuration stays: {e:#}"),
    }
}

/// Every `[[dkim]]` key, read and parsed now; the error names the file.
pub fn load_dkim(config: &Config) -> anyhow::Result<Signer> {
    Signer::load(&config.dkim).with_context(|| format!("{}", config.file_name().display()))
}

fn log_dkim(config: &Config, dkim: &Signer) {
    if dkim.is_empty() {
        tracing::warn!(
            without_key = ?config.sender.without_dkim_key,
            "no [[dkim]] keys: messages are not DKIM-signed (see `schleuse dkim keygen`)"
        );
    } else {
        let mut keys: Vec<String> = dkim
            .keys()
            .map(|k| format!("{} ({})", k.record_name(), k.key.algorithm))
            .collect();
        keys.sort();
        tracing::info!(keys = %keys.join(", "), "DKIM signing keys loaded");
    }
}

/// Pings systemd's watchdog at half its interval, when one is configured.
fn spawn_watchdog() {
    let mut usec = 0;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return;
    }
    let period = Duration::from_micros(usec / 2);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
        }
    });
}
