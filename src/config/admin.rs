//! `[admin]`: the admin HTTP endpoint (SPEC §10), its address and basic
//! auth, and how recent an upstream contact `/readyz` wants.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::values::{LENIENT_ENV, duration, expand_opt};

/// The admin HTTP endpoint: `/metrics`, `/healthz`, `/readyz` (SPEC §10).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    /// `false` runs no endpoint (and records no metrics).
    pub enabled: bool,
    /// Loopback by default: the endpoint tells how much mail flows where.
    pub bind: SocketAddr,
    /// HTTP basic auth for every route; both or neither. Required when
    /// `bind` is not a loopback address.
    #[serde(deserialize_with = "expand_opt")]
    pub username: Option<String>,
    #[serde(deserialize_with = "expand_opt")]
    pub password: Option<String>,
    /// In relay mode `/readyz` needs an upstream contact (a delivery or a
    /// probe connection) this recent; the probe runs as often as needed.
    #[serde(deserialize_with = "duration")]
    pub upstream_check_interval: Duration,
}

impl Default for Admin {
    fn default() -> Self {
        Self {
            enabled: true,
            bind: SocketAddr::from(([127, 0, 0, 1], 9025)),
            username: None,
            password: None,
            upstream_check_interval: Duration::from_secs(60),
        }
    }
}

impl Admin {
    /// Where the endpoint listens; `None` when it is disabled.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.enabled.then_some(self.bind)
    }

    /// `[admin]`: basic auth together, and required off loopback.
    pub(super) fn check(&self) -> Result<(), (&'static str, String)> {
        if self.username.is_some() != self.password.is_some() {
            return Err((
                "admin.password",
                "username and password must be given together".into(),
            ));
        }
        // Admin commands read unset ${VAR}s as empty (see load_for_admin):
        // only a config the gateway will run with must have a real password.
        if !LENIENT_ENV.with(|l| l.get()) && self.password.as_deref().is_some_and(str::is_empty) {
            return Err(("admin.password", "must not be empty".into()));
        }
        if self.enabled && !self.bind.ip().is_loopback() && self.username.is_none() {
            return Err((
                "admin.bind",
                format!(
                    "{} is not a loopback address: set admin.username and admin.password \
                     (basic auth) or bind to 127.0.0.1",
                    self.bind
                ),
            ));
        }
        if self.upstream_check_interval < Duration::from_secs(1) {
            return Err((
                "admin.upstream_check_interval",
                "must be at least 1s".into(),
            ));
        }
        Ok(())
    }
}
