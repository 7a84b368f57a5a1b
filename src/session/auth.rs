//! AUTH PLAIN and LOGIN (RFC 4954, RFC 4616) against the accounts file.
//!
//! Refused before TLS except on a plain-text loopback listener. The argon2
//! check runs on the bounded pool of `crate::argon2_pool`, so a burst of
//! logins can neither stall the other sessions on the runtime nor take more
//! than the pool's memory.

use mail_parser::decoders::base64::base64_decode;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{SaslState, Session, wire};
use crate::reply::{self, Reply};

/// base64("Username:") and base64("Password:"), the customary LOGIN prompts.
const LOGIN_USER: &str = "VXNlcm5hbWU6";
const LOGIN_PASS: &str = "UGFzc3dvcmQ6";

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    pub(super) async fn auth(&mut self, mechanism: u64, initial: String) -> Reply {
        if self.account.is_some() {
            return reply::ALREADY_AUTHED;
        }
        if let Some(r) = self.ban().await {
            crate::metrics::banned_connection();
            return r;
        }
        if self.envelope.is_some() {
            return reply::AUTH_IN_TRANSACTION;
        }
        if !self.auth_allowed() {
            return reply::ENCRYPTION_REQUIRED;
        }
        if self.helo.is_none() {
            return reply::NEED_EHLO;
        }
        match mechanism {
            wire::AUTH_PLAIN if initial.is_empty() => {
                self.sasl = Some(SaslState::Plain);
                Reply::challenge("")
            }
            // "=" is an empty initial response (RFC 4954 §4).
            wire::AUTH_PLAIN if initial == "=" => self.check_plain(&[]).await,
            wire::AUTH_PLAIN => match base64_decode(initial.as_bytes()) {
                Some(decoded) => self.check_plain(&decoded).await,
                None => reply::AUTH_BAD_BASE64,
            },
            wire::AUTH_LOGIN if initial.is_empty() => {
                self.sasl = Some(SaslState::LoginUser);
                Reply::challenge(LOGIN_USER)
            }
            wire::AUTH_LOGIN => match decode_text(initial.as_bytes()) {
                Some(user) => {
                    self.sasl = Some(SaslState::LoginPass { user });
                    Reply::challenge(LOGIN_PASS)
                }
                None => reply::AUTH_BAD_BASE64,
            },
            _ => reply::AUTH_UNKNOWN_MECH,
        }
    }

    /// The client's answer to a `334` challenge.
    pub(super) async fn sasl_response(&mut self, line: &[u8]) -> Reply {
        let Some(state) = self.sasl.take() else {
            return reply::UNKNOWN_COMMAND;
        };
        if line == b"*" {
            return reply::AUTH_CANCELLED;
        }
        match state {
            SaslState::Plain => match base64_decode(line) {
                Some(decoded) => self.check_plain(&decoded).await,
                None if line.is_empty() => self.check_plain(&[]).await,
                None => reply::AUTH_BAD_BASE64,
            },
            SaslState::LoginUser => match decode_text(line) {
                Some(user) => {
                    self.sasl = Some(SaslState::LoginPass { user });
                    Reply::challenge(LOGIN_PASS)
                }
                None => reply::AUTH_BAD_BASE64,
            },
            SaslState::LoginPass { user } => match decode_text(line) {
                Some(pass) => self.verify(user, pass).await,
                None => reply::AUTH_BAD_BASE64,
            },
        }
    }

    /// PLAIN: `authzid NUL authcid NUL passwd`. Acting as another identity
    /// (authzid differing from authcid) is not supported.
    async fn check_plain(&mut self, decoded: &[u8]) -> Reply {
        let mut parts = decoded.split(|&b| b == 0);
        let (Some(authz), Some(authc), Some(pass), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return self.auth_failed("-", "malformed PLAIN response").await;
        };
        let (Ok(authz), Ok(authc), Ok(pass)) = (
            std::str::from_utf8(authz),
            std::str::from_utf8(authc),
            std::str::from_utf8(pass),
        ) else {
            return self.auth_failed("-", "PLAIN response is not UTF-8").await;
        };
        if !authz.is_empty() && authz != authc {
            return self
                .auth_failed(authc, "authorization identity differs")
                .await;
        }
        self.verify(authc.to_string(), pass.to_string()).await
    }

    async fn verify(&mut self, user: String, pass: String) -> Reply {
        let wait = std::time::Duration::from_secs(10);
        let accounts = self.shared.accounts();
        let name = user.clone();
        let check = crate::argon2_pool::global()
            .run(move |memory| accounts.verify_with(memory, &name, &pass));
        let result = match tokio::time::timeout(wait, check).await {
            Ok(Err(crate::argon2_pool::PoolError::Busy)) | Err(_) => {
                tracing::warn!(session = %self.origin.session_id, "password checks saturated");
                return reply::AUTH_UNAVAILABLE;
            }
            Ok(result) => result,
        };
        match result {
            Ok(Some(account)) => {
                tracing::info!(
                    session = %self.origin.session_id,
                    account = %account.name,
                    "authenticated"
                );
                self.account = Some(account);
                // No longer subject to the AUTH deadline, nor shed.
                self.shared.connections.logged_in(&self.limits.slot);
                reply::AUTH_OK
            }
            Ok(None) => self.auth_failed(&user, "wrong name or password").await,
            Err(e) => {
                tracing::error!(error = %e, "password check failed to run");
                reply::AUTH_UNAVAILABLE
            }
        }
    }

    /// Counts the failure; the one that reaches `[limits] auth_failures`
    /// bans the client IP (`crate::limits`). It is still answered `535`.
    async fn auth_failed(&self, user: &str, why: &str) -> Reply {
        crate::metrics::auth_failure();
        let ip = self.origin.peer.ip();
        let limits = &self.config.limits;
        if self.shared.limits.auth_failed(limits, ip) {
            let now = crate::store::now_ms();
            let until = now.saturating_add(
                i64::try_from(limits.auth_ban_time.as_millis()).unwrap_or(i64::MAX / 2),
            );
            let ban = crate::store::limits::Ban {
                ip: ip.to_string(),
                created_at: now,
                until,
                reason: format!(
                    "{} failed logins within {}",
                    limits.auth_failures,
                    humantime::format_duration(limits.auth_failure_window)
                ),
            };
            let store = self.shared.queue.store();
            match store.ban(ban).await {
                Ok(()) => {
                    crate::metrics::auth_ban();
                    if let Ok(bans) = store.bans(now).await {
                        crate::metrics::bans_active(bans.len());
                    }
                    tracing::warn!(
                        session = %self.origin.session_id,
                        client = %ip,
                        failures = limits.auth_failures,
                        until = %crate::limits::retry_hint(until, now),
                        "client IP banned after repeated failed logins"
                    );
                }
                Err(e) => tracing::error!(client = %ip, error = %e, "cannot store a ban"),
            }
        }
        tracing::warn!(
            session = %self.origin.session_id,
            client = %self.origin.peer.ip(),
            user = %user,
            reason = why,
            "authentication failed"
        );
        reply::AUTH_FAILED
    }
}

fn decode_text(b64: &[u8]) -> Option<String> {
    base64_decode(b64).and_then(|v| String::from_utf8(v).ok())
}
