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
use crate::config::{Config, PiiPolicy};
use crate::pipeline::{self, Plan};
use crate::policy;
use crate::privacy::decision::Decision as PiiDecision;
use crate::privacy::pii;
use crate::reply;
use crate::session::refusal_reply;
use crate::transform;
use crate::transform::attachments::Scan;
use crate::transform::documents::{self, DocumentsError, Fate, Password};

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
pub(super) fn crlf(raw: &[u8]) -> Vec<u8> {
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
    let facts = pipeline::Facts {
        config,
        account,
        sender: &sender,
        recipients: &recipients,
        message: &message,
    };
    Ok(dry_run(&facts, &args.file.display().to_string()).1)
}

/// The plan DATA would act on for these facts, and the report on it.
pub fn dry_run(facts: &pipeline::Facts<'_>, name: &str) -> (Plan, String) {
    let (config, account, sender, recipients, message) = (
        facts.config,
        facts.account,
        facts.sender,
        facts.recipients,
        facts.message,
    );
    let mut out = String::new();
    let o = &mut out;
    let _ = writeln!(
        o,
        "Dry run: nothing is sent, queued or stored.\n\nmessage:     {name} ({} bytes)\naccount:     {}\nenvelope:    from <{sender}> to {}",
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
            crate::config::Sending::Disabled => Err(reply::SENDING_DISABLED.log_text()),
            _ => Ok(()),
        },
    );
    check(
        format!(
            "envelope sender <{sender}> allowed for account {}",
            account.name
        ),
        policy::check_envelope_sender(account, sender).map_err(|r| r.log_text()),
    );
    check(
        "From: address(es) allowed for the account".into(),
        policy::check_header_from(account, message).map_err(|r| r.log_text()),
    );
    check(
        format!(
            "size {} bytes within max_message_size {}",
            message.len(),
            config.limits.max_message_size
        ),
        if message.len() as u64 > config.limits.max_message_size {
            Err(reply::TOO_BIG.log_text())
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
                reply::TOO_MANY_RCPTS.log_text()
            ))
        } else {
            Ok(())
        },
    );

    // Every decision below is the plan's: the same function DATA runs.
    let plan = pipeline::plan(facts);
    refusals.extend(plan.refusals().iter().map(|r| refusal_reply(r).log_text()));
    let _ = writeln!(o, "\nRules (first match decides):");
    for r in &plan.rule.reasons {
        let _ = writeln!(o, "  {r}");
    }
    let _ = writeln!(
        o,
        "\nmatched rule: {}",
        plan.rule
            .rule
            .as_deref()
            .unwrap_or("(none: global settings)")
    );
    let e = &plan.rule.effective;
    let _ = writeln!(o, "\nEffective settings:");
    for (k, v) in e.describe() {
        let _ = writeln!(o, "  {k:<16}{v}");
    }
    let mut held: Vec<String> = plan.rule_hold().map(str::to_owned).into_iter().collect();
    if config.sending == crate::config::Sending::Paused {
        held.push("sending = \"paused\"".into());
    }
    if matches!(plan.pii, PiiDecision::Hold { .. }) {
        held.push("pii".into());
    }
    let found_pii = write_pii(o, &plan, config, message);
    write_documents(o, &plan, config, message);
    write_header(o, &plan, facts, &mut refusals);

    let _ = writeln!(o);
    let outcome = match (refusals.first(), held.is_empty()) {
        (Some(r), _) => format!("REFUSED with {r}"),
        (None, false) => format!("ACCEPTED and HELD ({})", held.join(", ")),
        (None, true) => "ACCEPTED for delivery".to_owned(),
    };
    let _ = writeln!(o, "outcome: {outcome}");
    if e.pii == PiiPolicy::Off && found_pii {
        let _ = writeln!(o, "(the PII findings are not acted on: pii = off)");
    }
    (plan, out)
}

/// PII: categories only, never the data. True when anything was found.
fn write_pii(o: &mut String, plan: &Plan, config: &Config, message: &[u8]) -> bool {
    let e = &plan.rule.effective;
    // The counts are for the report only; the decision is the plan's.
    let findings = pii::scan_message(
        message,
        &pii::Options {
            signature_marker: plan.privacy(&config.privacy).signature_marker.clone(),
        },
    );
    let _ = writeln!(
        o,
        "\nPII check (pii = {}):",
        format!("{:?}", e.pii).to_ascii_lowercase()
    );
    if findings.is_empty() {
        let _ = writeln!(o, "  nothing found");
        return false;
    }
    let found: Vec<String> = findings
        .categories
        .iter()
        .map(|c| format!("{} ({}x)", c.as_str(), findings.count(*c)))
        .collect();
    let _ = writeln!(o, "  found: {}", found.join(", "));
    let consequence = match &plan.pii {
        PiiDecision::Pass => "no action (pii = off)".to_owned(),
        PiiDecision::Tag { note } => format!("relayed; delivery log note {note:?}"),
        PiiDecision::Warn { .. } => {
            "relayed; the staff member gets a notice naming the categories".into()
        }
        PiiDecision::Hold { .. } => "accepted and held for an admin".into(),
        PiiDecision::Reject { text } => format!("refused: 550 5.7.1 {text}"),
    };
    let _ = writeln!(o, "  -> {consequence}");
    true
}

/// The documents: what the scan finds (listed for the report) and what
/// the plan does with them.
fn write_documents(o: &mut String, plan: &Plan, config: &Config, message: &[u8]) {
    let e = &plan.rule.effective;
    let _ = writeln!(
        o,
        "\nAttachments (attachments = {}):",
        format!("{:?}", e.attachments).to_ascii_lowercase()
    );
    match documents::scan(message, &config.attachments) {
        Ok(Scan::Clean) => {
            let _ = writeln!(o, "  none");
        }
        Ok(Scan::Sealed { has_attachments }) => {
            let _ = writeln!(
                o,
                "  signed or encrypted message (never altered){}",
                if has_attachments {
                    ", with attachments"
                } else {
                    ""
                }
            );
        }
        Ok(Scan::Extract(found)) => {
            let rows: Vec<Vec<String>> = found
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
        }
        Err(err) => {
            let _ = writeln!(o, "  the MIME structure cannot be processed: {err}");
        }
    }
    let refused = |e: &DocumentsError| refusal_reply(&pipeline::Refusal::Documents(e)).log_text();
    match &plan.attachments {
        Fate::Kept => {
            let _ = writeln!(o, "  -> relayed as they are (attachments = keep)");
        }
        Fate::Clean => {}
        Fate::Sealed { has_attachments } => {
            if *has_attachments {
                let _ = writeln!(o, "  -> relayed unchanged (signed = pass)");
            }
        }
        Fate::Refused(err @ DocumentsError::SealedRefused) => {
            let _ = writeln!(o, "  -> refused (signed = reject): {}", refused(err));
        }
        Fate::Refused(err @ DocumentsError::AttachmentsRefused) => {
            let _ = writeln!(o, "  -> refused (attachments = reject): {}", refused(err));
        }
        Fate::Refused(err) => {
            let _ = writeln!(o, "  -> refused: {}", refused(err));
        }
        Fate::Link(links) => {
            let password = match links.password {
                Password::Off => "none (link_password = off)",
                Password::App(_) => "the app's (X-Schleuse-Link-Password)",
                Password::None => "none",
                Password::Generate => "generated, sent to the staff member only",
            };
            let _ = writeln!(
                o,
                "  -> {} document(s) become links: expiry {}, password {password}",
                links.documents.len(),
                humantime::format_duration(links.expiry)
            );
        }
    }
    if let Err(err) = &plan.control {
        let r = refusal_reply(&pipeline::Refusal::Control(err)).log_text();
        let _ = writeln!(o, "  -> refused: {r}");
    }
}

/// The header block as relayed, from the pipeline's own header step.
fn write_header(
    o: &mut String,
    plan: &Plan,
    facts: &pipeline::Facts<'_>,
    refusals: &mut Vec<String>,
) {
    let stamp = transform::Stamp {
        hostname: &facts.config.server.hostname,
        helo: "rules-test",
        peer: std::net::IpAddr::from([127, 0, 0, 1]),
        tls: true,
        authenticated: true,
        queue_id: "QUEUE-ID",
        mode: facts.config.privacy.received_header,
    };
    let _ = writeln!(
        o,
        "\nHeader as relayed (QUEUE-ID stands for the queue id; Received: for a \
         TLS client at 127.0.0.1; DKIM-Signature: is added on top; documents are \
         not stored, so the link block and a text part added for it are not shown):"
    );
    let headers = pipeline::headers(
        plan,
        facts.config,
        facts.account,
        "QUEUE-ID",
        stamp,
        facts.message.to_vec(),
    );
    match headers {
        Ok(mut t) => {
            transform::prepend_received(&mut t.message, &stamp);
            let end = t
                .message
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map_or(t.message.len(), |p| p + 2);
            for line in String::from_utf8_lossy(&t.message[..end]).lines() {
                let _ = writeln!(o, "  {line}");
            }
            let _ = writeln!(o, "\nstaff member: {}", t.staff_address);
            if plan.rule.effective.copy_to_sender {
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
