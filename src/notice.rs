//! How the gateway writes its own mails: the password and download notices
//! (`links`), the PII warning (`privacy`), the pause notice to the admin
//! (`delivery`). One builder, so every notice carries the same headers; the
//! envelope, signature and queueing are `queue::staff_notice`'s.

use mail_builder::MessageBuilder;

/// A plain-text notice from the gateway (`Auto-Submitted`, so no
/// auto-responder answers it).
pub fn build(from: &str, to: &str, subject: String, body: String) -> Vec<u8> {
    MessageBuilder::new()
        .from(from)
        .to(to)
        .subject(subject)
        .header(
            "Auto-Submitted",
            mail_builder::headers::raw::Raw::new("auto-generated"),
        )
        .text_body(body)
        .write_to_vec()
        .unwrap_or_default()
}
