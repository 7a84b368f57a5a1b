//! Deadlines and shedding (SPEC §5), see the module documentation of
//! `session`: which deadline a wait for the client runs into, and the
//! `421` that ends a session cut off by one, or shed for a newcomer.

use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};

use super::Session;
use crate::reply::{self, Reply};
use crate::state::connections::Slot;

/// Extra time to write the last reply after a deadline has passed.
const WRITE_GRACE: Duration = Duration::from_secs(5);

/// Where a session stands among the live connections and when its
/// connection was accepted: the AUTH and session deadlines run from then,
/// across STARTTLS.
#[derive(Debug, Clone)]
pub struct SessionLimits {
    pub slot: Slot,
    pub connected: Instant,
}

/// Why a session is closed while it waits for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cut {
    /// No complete command line within `timeouts.command`.
    Command,
    /// Not logged in within `timeouts.auth`.
    Login,
    /// `timeouts.session` since connect.
    Session,
    /// Not logged in, and a newcomer needed the slot.
    Shed,
}

impl Cut {
    pub(super) fn label(self) -> &'static str {
        match self {
            Cut::Command => "command_timeout",
            Cut::Login => "auth_deadline",
            Cut::Session => "session_deadline",
            Cut::Shed => "shed",
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    /// Logs, counts and answers a session cut off by a deadline or shed.
    pub(super) async fn cut_off(&mut self, cut: Cut) -> std::io::Result<()> {
        let t = &self.config.timeouts;
        // `421 4.4.2` ("bad connection"), saying which limit ran out.
        let timed_out = |what: &str, limit: Duration, then: &str| {
            let limit = humantime::format_duration(limit);
            Reply::owned(421, [4, 4, 2], format!("{what} {limit}; {then}"))
        };
        let r = match cut {
            Cut::Command => timed_out(
                "No complete command within",
                t.command,
                "closing connection",
            ),
            Cut::Login => timed_out("No successful login within", t.auth, "closing connection"),
            Cut::Session => timed_out(
                "Session time limit reached:",
                t.session,
                "closing connection, please reconnect",
            ),
            Cut::Shed => reply::SHED,
        };
        tracing::info!(
            session = %self.origin.session_id,
            client = %self.origin.peer.ip(),
            reason = cut.label(),
            "session cut off"
        );
        crate::metrics::session_cut(cut.label());
        self.reply(r);
        self.flush().await
    }

    /// True while the session still has to log in (and so has the AUTH
    /// deadline, and may be shed).
    pub(super) fn needs_login(&self) -> bool {
        self.account.is_none() && !self.trusted
    }

    /// The first deadline that applies to the wait for the client's next
    /// bytes, and what it cuts.
    pub(super) fn next_deadline(&mut self) -> (Instant, Cut) {
        let t = &self.config.timeouts;
        let line = *self
            .line_deadline
            .get_or_insert_with(|| Instant::now() + t.command);
        let mut next = (line, Cut::Command);
        let session = self.session_end();
        if session < next.0 {
            next = (session, Cut::Session);
        }
        if self.needs_login() {
            let login = self.limits.connected + t.auth;
            if login < next.0 {
                next = (login, Cut::Login);
            }
        }
        next
    }

    /// How long writing a reply may take: a client that does not read
    /// holds its slot only up to its deadlines (plus a little, so the
    /// `421` itself can still go out).
    pub(super) fn write_deadline(&self) -> Instant {
        let t = &self.config.timeouts;
        let now = Instant::now();
        let mut hard = self.session_end();
        if self.needs_login() {
            hard = hard.min(self.limits.connected + t.auth);
        }
        (now + t.command).min(hard.max(now + WRITE_GRACE))
    }

    /// When `timeouts.session` closes this session.
    pub(super) fn session_end(&self) -> Instant {
        self.limits.connected + self.config.timeouts.session
    }
}
