//! `[sender]`: whose name relayed mail goes out under (`From:`,
//! `Reply-To:`, the envelope sender), and what a message without a DKIM
//! key gets.

use serde::Deserialize;

use super::values::{expand, plausible_recipient};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FromMode {
    /// Leave `From:` as the client sent it (it is still checked).
    Keep,
    /// `From:` becomes `system_address`, keeping the display name.
    Rewrite,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplyToMode {
    /// `Reply-To:` becomes the staff member's address.
    Account,
    /// Leave the client's `Reply-To:` alone.
    Keep,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MissingKey {
    /// Relay unsigned, with a warning in the log.
    Warn,
    /// Refuse the message (`554 5.7.0`).
    Refuse,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SenderSection {
    pub from: FromMode,
    /// The `From:` (and envelope sender) of rewritten mail; bounces come here.
    #[serde(deserialize_with = "expand")]
    pub system_address: String,
    pub reply_to: ReplyToMode,
    /// Send the staff member a copy of what was relayed (accounts may override).
    pub copy_to_sender: bool,
    /// A message whose `From:` domain has no `[[dkim]]` key.
    pub without_dkim_key: MissingKey,
}

impl Default for SenderSection {
    fn default() -> Self {
        Self {
            from: FromMode::Rewrite,
            system_address: "via@landkreis.example".into(),
            reply_to: ReplyToMode::Account,
            copy_to_sender: false,
            without_dkim_key: MissingKey::Warn,
        }
    }
}

impl SenderSection {
    pub(super) fn check(&self) -> Result<(), (&'static str, String)> {
        if !plausible_recipient(&self.system_address) {
            return Err((
                "sender.system_address",
                format!(
                    "{:?} is not an address like via@landkreis.example",
                    self.system_address
                ),
            ));
        }
        Ok(())
    }
}
