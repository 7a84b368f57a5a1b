//! `schleuse rules test FILE.eml --account NAME [--rcpt ADDR ...] [--from ADDR]`:
//! a dry run of the DATA pipeline (SPEC §3, §8). It prints every decision
//! the gateway would take for the message: the account's sender checks and
//! limits, each rule tried and why it did or did not match, the settings in
//! force, the PII findings (categories only), the documents that would
//! become links, and the header block as it would be relayed. Nothing is
//! sent, queued or stored: no document is sealed, so the link block is not
//! shown, and `DKIM-Signature:` is not computed.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use mail_parser::{HeaderName, HeaderValue, MessageParser};

use crate::accounts::Accounts;
use crate::config::{AttachmentMode, Config, LinkPassword, PiiPolicy, SignedPolicy};
use crate::policy::{self, rules};
use crate::privacy::{self, pii};
use crate::transform::attachments::{self as att, ExtractOptions, Scan};
use crate::transform::{self, documents};

/// `schleuse rules …`
#[derive(clap::Subcommand)]
pub enum RulesCommand {
    /// Dry run: which rule applies to FILE.eml and why, the settings in
    /// force, PII findings, documents and the final header; sends nothing
    Test {
        /// The message (LF or CRLF line endings)
        file: std::path::PathBuf,
        /// The account it is submitted as
        #[arg(long)]
        account: String,
        /// Envelope recipient (repeatable) [default: the To: and Cc: addresses]
        #[arg(long = "rcpt", value_name = "ADDR")]
        rcpt: Vec<String>,
        /// Envelope sender [default: the From: address]
        #[arg(long, value_name = "ADDR")]
        from: Option<String>,
    },
}

/// Runs a `rules` command and prints its report.
pub fn run(config: &Config, cmd: RulesCommand) -> anyhow::Result<()> {
    match cmd {
        RulesCommand::Test {
            file,
            account,
            rcpt,
            from,
        } => {
            let accounts = Accounts::load(&config.accounts.file)?;
            let args = TestArgs {
                file: &file,
                account: &account,
                rcpts: &rcpt,
                from: from.as_deref(),
            };
            print!("{}", test(config, &accounts, &args)?);
            Ok(())
        }
    }
}

/// What to test.
pub struct TestArgs<'a> {
    pub file: &'a Path,
    pub account: &'a str,
    /// Envelope recipients; empty: the message's `To:` and `Cc:`.
    pub rcpts: &'a [String],
    /// Envelope sender; `None`: the message's first `From:` address.
    pub from: Option<&'a str>,
}

/// LF or CRLF line endings in, CRLF out (as the message travels in SMTP).
fn crlf(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 32);
    for (i, &b) in raw.iter().enumerate() {
        if b == b'\n' && (i == 0 || raw[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

/// Addresses in the message's header fields of these kinds.
fn addresses(message: &[u8], kinds: &[HeaderName<'static>]) -> Vec<String> {
    let Some(parsed) = MessageParser::new().parse_headers(message) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for h in parsed.headers() {
        if !kinds.contains(&h.name) {
            continue;
        }
        if let HeaderValue::Address(a) = &h.value {
            out.extend(a.iter().filter_map(|x| x.address()).map(str::to_owned));
        }
    }
    out
}

/// The report; an `Err` only when the test cannot run at all.
pub fn test(config: &Config, accounts: &Accounts, args: &TestArgs<'_>) -> anyhow::Result<String> {
    let raw =
        std::fs::read(args.file).with_context(|| format!("cannot read {}", args.file.display()))?;
    let message = crlf(&raw);
    let account = accounts.get(args.account).with_context(|| {
        format!(
            "no account named {:?} in {}",
            args.account,
            config.accounts.file.display()
        )
    })?;
    let sender = match args.from {
        Some(f) => f.to_owned(),
        None => addresses(&message, &[HeaderName::From])
            .into_iter()
            .next()
            .context("the message has no From: address; give the envelope sender with --from")?,
    };
    let recipients: Vec<String> = if args.rcpts.is_empty() {
        addresses(&message, &[HeaderName::To, HeaderName::Cc])
    } else {
        args.rcpts.to_vec()
    };
    anyhow::ensure!(
        !recipients.is_empty(),
        "the message names no recipients in To:/Cc:; give them with --rcpt"
    );

    let mut out = String::new();
    let o = &mut out;
    let _ = writeln!(
        o,
        "Dry run: nothing is sent, queued or stored.\n\nmessage:     {} ({} bytes)\naccount:     {}\nenvelope:    from <{sender}> to {}",
        args.file.display(),
        message.len(),
        account.name,
        recipients
            .iter()
            .map(|r| format!("<{r}>"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // Every refusal below is what the client would get; the first one wins.
    let mut refusals: Vec<String> = Vec::new();

    let _ = writeln!(o, "\nChecks before the rules:");
    let mut check = |what: String, result: Result<(), String>| match result {
        Ok(()) => {
            let _ = writeln!(o, "  ok       {what}");
        }
        Err(reply) => {
            let _ = writeln!(o, "  REFUSED  {what}: {reply}");
            refusals.push(reply);
        }
    };
    check(
        format!(
            "sending = {:?}",
            format!("{:?}", config.sending).to_ascii_lowercase()
        ),
        match config.sending {
            crate::config::Sending::Disabled => {
                Err(crate::session::reply::SENDING_DISABLED.log_text())
            }
            _ => Ok(()),
        },
    );
    check(
        format!(
            "envelope sender <{sender}> allowed for account {}",
            account.name
        ),
        policy::check_envelope_sender(account, &sender).map_err(|r| r.log_text()),
    );
    check(
        "From: address(es) allowed for the account".into(),
        policy::check_header_from(account, &message).map_err(|r| r.log_text()),
    );
    check(
        format!(
            "size {} bytes within max_message_size {}",
            message.len(),
            config.limits.max_message_size
        ),
        if message.len() as u64 > config.limits.max_message_size {
            Err(crate::session::reply::TOO_BIG.log_text())
        } else {
            Ok(())
        },
    );
    let max = config.limits.max_recipients_per_message;
    check(
        format!(
            "{} recipient(s) within max_recipients_per_message {max}",
            recipients.len()
        ),
        if recipients.len() > max {
            Err(format!(
                "{} (for every recipient after the {max}th)",
                crate::session::reply::TOO_MANY_RCPTS.log_text()
            ))
        } else {
            Ok(())
        },
    );

    // The rules, exactly as the session runs them.
    let opts = ExtractOptions {
        inline_image_max: usize::try_from(config.attachments.inline_image_max)
            .unwrap_or(usize::MAX),
    };
    let scanned = att::scan(&message, &opts);
    let has_attachments = rules::needs_attachment_scan(&config.rules)
        .then(|| rules::scan_has_attachments(&message, &config.attachments));
    let decision = rules::evaluate(
        config,
        &rules::Facts {
            account,
            sender: &sender,
            recipients: &recipients,
            message: &message,
            has_attachments,
        },
    );
    let _ = writeln!(o, "\nRules (first match decides):");
    for r in &decision.reasons {
        let _ = writeln!(o, "  {r}");
    }
    let _ = writeln!(
        o,
        "\nmatched rule: {}",
        decision
            .rule
            .as_deref()
            .unwrap_or("(none: global settings)")
    );
    let e = &decision.effective;
    let _ = writeln!(o, "\nEffective settings:");
    for (k, v) in e.describe() {
        let _ = writeln!(o, "  {k:<16}{v}");
    }
    let mut held: Vec<String> = Vec::new();
    match &decision.verdict {
        rules::Verdict::Refuse(r) => refusals.push(r.log_text()),
        rules::Verdict::Hold(why) => held.push(why.clone()),
        rules::Verdict::Accept => {}
    }
    if config.sending == crate::config::Sending::Paused {
        held.push("sending = \"paused\"".into());
    }

    // PII: categories only, never the data.
    let privacy_cfg = e.privacy(&config.privacy);
    let findings = pii::scan_message(
        &message,
        &pii::Options {
            signature_marker: privacy_cfg.signature_marker.clone(),
        },
    );
    let _ = writeln!(
        o,
        "\nPII check (pii = {}):",
        format!("{:?}", e.pii).to_ascii_lowercase()
    );
    if findings.is_empty() {
        let _ = writeln!(o, "  nothing found");
    } else {
        let found: Vec<String> = findings
            .categories
            .iter()
            .map(|c| format!("{} ({}x)", c.as_str(), findings.count(*c)))
            .collect();
        let _ = writeln!(o, "  found: {}", found.join(", "));
        let consequence = match privacy::decision::decide(&message, &privacy_cfg) {
            privacy::decision::Decision::Pass => "no action (pii = off)".to_owned(),
            privacy::decision::Decision::Tag { note } => {
                format!("relayed; delivery log note {note:?}")
            }
            privacy::decision::Decision::Warn { .. } => {
                "relayed; the staff member gets a notice naming the categories".into()
            }
            privacy::decision::Decision::Hold { .. } => {
                held.push("pii".into());
                "accepted and held for an admin".into()
            }
            privacy::decision::Decision::Reject { text } => {
                let r = format!("550 5.7.1 {text}");
                refusals.push(r.clone());
                format!("refused: {r}")
            }
        };
        let _ = writeln!(o, "  -> {consequence}");
    }

    // Documents.
    let _ = writeln!(
        o,
        "\nAttachments (attachments = {}):",
        format!("{:?}", e.attachments).to_ascii_lowercase()
    );
    match &scanned {
        Ok(Scan::Clean) => {
            let _ = writeln!(o, "  none");
        }
        Ok(Scan::Sealed { has_attachments }) => {
            let _ = writeln!(
                o,
                "  signed or encrypted message (never altered){}",
                if *has_attachments {
                    ", with attachments"
                } else {
                    ""
                }
            );
            if *has_attachments && e.attachments != AttachmentMode::Keep {
                if e.signed == SignedPolicy::Reject {
                    let r = format!(
                        "554 5.7.1 Message refused: {}",
                        documents::DocumentsError::SealedRefused
                    );
                    let _ = writeln!(o, "  -> refused (signed = reject): {r}");
                    refusals.push(r);
                } else {
                    let _ = writeln!(o, "  -> relayed unchanged (signed = pass)");
                }
            }
        }
        Ok(Scan::Extract(plan)) => {
            let rows: Vec<Vec<String>> = plan
                .documents
                .iter()
                .map(|d| {
                    vec![
                        d.file_name.clone(),
                        d.content_type.clone(),
                        d.data.len().to_string(),
                    ]
                })
                .collect();
            for line in super::table(&["NAME", "TYPE", "BYTES"], &rows).lines() {
                let _ = writeln!(o, "  {line}");
            }
            match e.attachments {
                AttachmentMode::Keep => {
                    let _ = writeln!(o, "  -> relayed as they are (attachments = keep)");
                }
                AttachmentMode::Reject => {
                    let r = format!(
                        "550 5.7.1 Message refused: {}",
                        documents::DocumentsError::AttachmentsRefused
                    );
                    let _ = writeln!(o, "  -> refused (attachments = reject): {r}");
                    refusals.push(r);
                }
                AttachmentMode::Link => {
                    let cfg = e.attachments(&config.attachments);
                    match documents::control(&message) {
                        Ok(control) => {
                            let expiry = control
                                .expiry
                                .map_or(cfg.expiry, |asked| asked.min(cfg.max_expiry));
                            let password = match (cfg.password, &control.password) {
                                (LinkPassword::Off, _) => "none (link_password = off)",
                                (_, Some(_)) => "the app's (X-Schleuse-Link-Password)",
                                (LinkPassword::Optional, None) => "none",
                                (LinkPassword::Required, None) => {
                                    "generated, sent to the staff member only"
                                }
                            };
                            let _ = writeln!(
                                o,
                                "  -> {} document(s) become links: expiry {}, password {password}",
                                plan.documents.len(),
                                humantime::format_duration(expiry)
                            );
                        }
                        Err(err) => {
                            let r = format!("554 5.6.0 Message refused: {err}");
                            let _ = writeln!(o, "  -> refused: {r}");
                            refusals.push(r);
                        }
                    }
                }
            }
        }
        Err(err) => {
            let _ = writeln!(o, "  the MIME structure cannot be processed: {err}");
            if e.attachments != AttachmentMode::Keep {
                refusals.push(format!(
                    "554 5.6.0 Message refused: {}",
                    documents::DocumentsError::Mime(err.to_string())
                ));
            }
        }
    }

    // The header block as relayed.
    let rule_config = e.edits_headers(&config.privacy).then(|| {
        let mut c = config.clone();
        c.privacy = privacy_cfg.clone().into_owned();
        c
    });
    let tconfig = rule_config.as_ref().unwrap_or(config);
    let stamp = transform::Stamp {
        hostname: &config.server.hostname,
        helo: "rules-test",
        peer: std::net::IpAddr::from([127, 0, 0, 1]),
        tls: true,
        authenticated: true,
        queue_id: "QUEUE-ID",
        mode: config.privacy.received_header,
    };
    let ctx = transform::Context {
        config: tconfig,
        account,
        queue_id: "QUEUE-ID",
        stamp,
    };
    let _ = writeln!(
        o,
        "\nHeader as relayed (QUEUE-ID stands for the queue id; Received: for a \
         TLS client at 127.0.0.1; DKIM-Signature: is added on top; documents are \
         not stored, so the link block and a text part added for it are not shown):"
    );
    match transform::apply(&ctx, message.clone()) {
        Ok(mut t) => {
            e.prepend_headers(&mut t.message);
            transform::prepend_received(&mut t.message, &ctx.stamp);
            let end = t
                .message
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map_or(t.message.len(), |p| p + 2);
            for line in String::from_utf8_lossy(&t.message[..end]).lines() {
                let _ = writeln!(o, "  {line}");
            }
            let _ = writeln!(o, "\nstaff member: {}", t.staff_address);
            if e.copy_to_sender {
                let _ = writeln!(o, "copy_to_sender: a copy goes to {}", t.staff_address);
            }
            if let Some(s) = &t.envelope_sender {
                let _ = writeln!(o, "relayed with envelope sender <{s}>");
            }
        }
        Err(err) => {
            let r = format!("554 5.6.0 Message refused: {err}");
            let _ = writeln!(o, "  cannot transform: {r}");
            refusals.push(r);
        }
    }

    let _ = writeln!(o);
    let outcome = match (refusals.first(), held.is_empty()) {
        (Some(r), _) => format!("REFUSED with {r}"),
        (None, false) => format!("ACCEPTED and HELD ({})", held.join(", ")),
        (None, true) => "ACCEPTED for delivery".to_owned(),
    };
    let _ = writeln!(o, "outcome: {outcome}");
    if e.pii == PiiPolicy::Off && !findings.is_empty() {
        let _ = writeln!(o, "(the PII findings are not acted on: pii = off)");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_endings() {
        assert_eq!(crlf(b"a\nb\r\nc\n"), b"a\r\nb\r\nc\r\n");
        assert_eq!(crlf(b"\n"), b"\r\n");
    }
}
