//! Relay rules (SPEC §8): ordered `[[rule]]` entries; the first whose
//! conditions all hold decides, and what it leaves unset comes from the
//! global sections (`[attachments]`, `[privacy]`, `[sender]`, `[limits]`).
//!
//! Conditions (`match.*`, all given ones must hold; no `match` = always):
//! - `account`: the submitting account's name, one or a list.
//! - `header."Name"`: a field the app sets (`X-VIA-Category`), one value or
//!   a list, compared case-insensitively with the field's trimmed value;
//!   `"*"` means "present, any value". Any occurrence of the field counts.
//! - `sender`: the envelope sender or any `From:` address, as the client
//!   sent them, against `*`, `*@domain`, `*@*.domain` or an address.
//! - `recipient_domain`: **every** recipient's domain must be listed
//!   (`domain`, `*.domain` for its subdomains, `*`), so a rule meant for
//!   internal mail is not triggered by mixing in one internal address.
//! - `min_size`, `max_size`: the message as received, inclusive.
//! - `has_attachments`: whether the documents stage would find anything to
//!   take out (one extra MIME scan per message, only when a rule asks).
//!
//! Per-category switches (`[categories]`) come before the rules: mail whose
//! category header names a `disabled` category is refused with
//! `550 5.7.1 Mail of category "X" is switched off`; a `paused` one is
//! accepted and held.
//!
//! The syntax (the types `[[rule]]` parses into, and what is refused at
//! load) is [`crate::config::rules`]; this module evaluates it.

use std::borrow::Cow;
use std::time::Duration;

use mail_parser::{HeaderName, HeaderValue, Message, MessageParser};

use crate::accounts::{Account, sender_matches};
use crate::config::rules::{Action, Match, RejectReply, Rule};
use crate::config::{
    AttachmentMode, Attachments, Config, LinkPassword, PiiPolicy, Privacy, SignedPolicy,
};
use crate::reply::Reply;

mod evaluate;
#[cfg(test)]
mod tests;

pub use evaluate::*;
