//! The state every session, worker and task of `schleuse run` shares
//! ([`Shared`]): the running configuration, accounts, TLS acceptor and DKIM
//! keys (swapped whole on reload, read as cheap snapshots), the shutdown
//! signal, and the handles: the queue, the live connections, the in-memory
//! limits, the link vault.
//!
//! Low in the layers on purpose: the listener, the session, delivery, the
//! link tasks, suppression, the blocklist watch, retention and the admin
//! endpoint import it, and it imports none of them. `crate::server` builds
//! it and does the wiring. Delivery's own handles (upstream contact,
//! pauses, kept outcomes, egress rotation) are `crate::delivery::Handles`,
//! passed to the few that need them.

pub mod connections;

use std::sync::{Arc, RwLock};

use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::accounts::Accounts;
use crate::config::Config;
use crate::dkim::Signer;
use crate::limits;
use crate::links::vault::Vault;
use crate::queue::Queue;
use connections::Connections;

/// State every session and worker shares. Config and accounts are swapped
/// whole on reload; readers take a cheap `Arc` snapshot.
pub struct Shared {
    config: RwLock<Arc<Config>>,
    accounts: RwLock<Arc<Accounts>>,
    tls: RwLock<Option<TlsAcceptor>>,
    /// DKIM keys of the running configuration, replaced whole on reload.
    dkim: RwLock<Arc<Signer>>,
    shutdown: watch::Receiver<bool>,
    pub queue: Queue,
    pub connections: Connections,
    /// Per-IP message rate and failed logins (`crate::limits`).
    pub limits: limits::State,
    /// The encrypted document store behind the links.
    pub vault: Arc<Vault>,
}

impl Shared {
    pub fn new(
        config: Config,
        accounts: Accounts,
        tls: Option<TlsAcceptor>,
        queue: Queue,
        vault: Arc<Vault>,
        shutdown: watch::Receiver<bool>,
    ) -> Shared {
        Shared {
            config: RwLock::new(Arc::new(config)),
            accounts: RwLock::new(Arc::new(accounts)),
            tls: RwLock::new(tls),
            dkim: RwLock::new(Arc::new(Signer::empty())),
            shutdown,
            queue,
            connections: Connections::default(),
            limits: limits::State::default(),
            vault,
        }
    }

    pub fn config(&self) -> Arc<Config> {
        match self.config.read() {
            Ok(c) => Arc::clone(&c),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    pub fn accounts(&self) -> Arc<Accounts> {
        match self.accounts.read() {
            Ok(a) => Arc::clone(&a),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Sets the DKIM signer (at start; reloads go through `replace`).
    pub fn with_dkim(self, signer: Signer) -> Shared {
        if let Ok(mut d) = self.dkim.write() {
            *d = Arc::new(signer);
        }
        self
    }

    /// The DKIM signer of the running configuration (a cheap snapshot:
    /// a message is signed with the keys in force when it was taken).
    pub fn dkim(&self) -> Arc<Signer> {
        match self.dkim.read() {
            Ok(d) => Arc::clone(&d),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    pub fn tls_acceptor(&self) -> Option<TlsAcceptor> {
        self.tls.read().ok().and_then(|t| t.clone())
    }

    pub fn has_tls(&self) -> bool {
        self.tls.read().map(|t| t.is_some()).unwrap_or(false)
    }

    /// A receiver that changes once, when shutdown begins.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.clone()
    }

    /// Swaps in a reloaded configuration (`crate::server`'s SIGHUP).
    pub fn replace(
        &self,
        config: Config,
        accounts: Accounts,
        tls: Option<TlsAcceptor>,
        dkim: Signer,
    ) {
        if let Ok(mut c) = self.config.write() {
            *c = Arc::new(config);
        }
        if let Ok(mut a) = self.accounts.write() {
            *a = Arc::new(accounts);
        }
        if let Ok(mut t) = self.tls.write() {
            *t = tls;
        }
        if let Ok(mut d) = self.dkim.write() {
            *d = Arc::new(dkim);
        }
    }
}
