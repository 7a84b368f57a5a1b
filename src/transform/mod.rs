//! Transform: the changes the gateway makes to a message before signing,
//! as small ordered steps (SPEC §7). Every byte not named here is left as
//! the client sent it.
//!
//! 1. [`headers`]: header privacy (remove internal and tracking-steering
//!    fields), `From:` rewrite to the system sender keeping the display
//!    name, `Reply-To:` to the staff member, Mailjet tracking off and
//!    `X-MJ-CustomID: <queue id>`.
//! 2. [`documents`]: attachments out, links in ([`attachments`] finds and
//!    cuts, [`linkblock`] writes the list of links; [`documents::fate`]
//!    decides). `crate::pipeline` seals the documents in the vault after
//!    step 1, since the vault needs the staff member's address that step 1
//!    settles.
//! 3. [`received`]: the gateway's `Received:` on top.
//!
//! DKIM signing (`crate::dkim`) follows, and must stay last.
//!
//! Config keys: `[sender]`, `[privacy]`, account `reply_to`,
//! `reply_to_header`, `copy_to_sender`.

pub mod attachments;
pub mod documents;
pub mod headers;
pub mod linkblock;
pub mod received;

pub use received::{Stamp, prepend_received, received_header};

use crate::accounts::Account;
use crate::config::{FromMode, Privacy, SenderSection};

/// What the transform needs to know about one transaction.
pub struct Context<'a> {
    pub sender: &'a SenderSection,
    /// `[privacy]` as the matching rule has it (the rule may remove more
    /// fields or keep tracking on): the rule's copy, not the whole config's.
    pub privacy: &'a Privacy,
    pub account: &'a Account,
    pub queue_id: &'a str,
    pub stamp: Stamp<'a>,
}

/// The message as it will be queued, and what changed in the envelope.
#[derive(Debug)]
pub struct Transformed {
    pub message: Vec<u8>,
    /// The envelope sender to relay with (the system sender when `From:` is
    /// rewritten, so bounces come back to the county, not to the app).
    pub envelope_sender: Option<String>,
    /// The staff member's address, when a copy of the message goes there.
    pub copy_to: Option<String>,
    /// The staff member's address (notices about documents go there).
    pub staff_address: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    #[error("the message header cannot be parsed")]
    Unparseable,
    #[error("the message has no From: address")]
    NoFrom,
}

/// Room the message buffer should have for what the transform and the
/// signer add in front (a few header fields and up to two signatures).
pub const HEADROOM: usize = 8 * 1024;

/// Step 1: the header block. The caller runs [`documents`] next, then
/// [`prepend_received`].
pub fn apply(ctx: &Context<'_>, message: Vec<u8>) -> Result<Transformed, TransformError> {
    let edited = headers::rewrite(ctx, &message)?;
    Ok(finish(ctx, edited, message))
}

/// Step 1 with the header block already rewritten (by [`headers::rewrite`]
/// from a message whose header is the same as `message`'s).
pub fn finish(ctx: &Context<'_>, edited: headers::Edited, message: Vec<u8>) -> Transformed {
    // In place: only the header block is rebuilt; the body moves within the
    // buffer (which the session sized with headroom), it is not copied.
    let mut out = message;
    out.reserve(edited.header.len().saturating_sub(edited.replaces) + HEADROOM);
    out.splice(..edited.replaces, edited.header);
    let sender = ctx.sender;
    let copy = ctx.account.copy_to_sender.unwrap_or(sender.copy_to_sender);
    Transformed {
        message: out,
        envelope_sender: (sender.from == FromMode::Rewrite).then(|| sender.system_address.clone()),
        copy_to: copy.then(|| edited.staff_address.clone()),
        staff_address: edited.staff_address,
    }
}

/// Where delivery status notifications for a message go (SPEC §9): the
/// envelope sender as the app submitted it, not the rewritten one the
/// upstream sees; when the app submitted as the system address itself, the
/// staff member (the `Reply-To:` the transform set). `None` for the null
/// sender: a bounce of a bounce would loop.
pub fn dsn_recipient(submitted: &str, system_address: &str, staff: &str) -> Option<String> {
    if submitted.is_empty() {
        return None;
    }
    if submitted.eq_ignore_ascii_case(system_address)
        && !staff.is_empty()
        && !staff.eq_ignore_ascii_case(system_address)
    {
        return Some(staff.to_owned());
    }
    Some(submitted.to_owned())
}

#[cfg(test)]
mod tests {
    use super::dsn_recipient;

    #[test]
    fn dsns_go_to_who_submitted() {
        let system = "noreply@landkreis.example";
        let staff = "anna.schmidt@landkreis.example";
        assert_eq!(
            dsn_recipient(staff, system, staff).as_deref(),
            Some(staff),
            "the clerk's own envelope sender"
        );
        assert_eq!(
            dsn_recipient("NoReply@Landkreis.example", system, staff).as_deref(),
            Some(staff),
            "the app sent as the system address: the staff member"
        );
        assert_eq!(
            dsn_recipient(system, system, system).as_deref(),
            Some(system),
            "no staff member known: the system address"
        );
        assert_eq!(dsn_recipient("", system, staff), None, "null sender");
    }
}
