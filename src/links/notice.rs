//! Notices to the staff member about their documents: the generated link
//! password (sent to them, never to the recipient, who gets it by phone or
//! letter), and the first download of a document.
//!
//! They come from the system address and go only to the staff member's
//! own address (the account's reply-to, or the trusted per-message header),
//! so they never leave the county's domains by accident.

use super::format::date;
use crate::config::Language;
use crate::notice::build;

/// The generated password for the documents of one message.
pub struct PasswordNotice<'a> {
    pub language: Language,
    pub from: &'a str,
    pub to: &'a str,
    pub queue_id: &'a str,
    /// The message's subject, to recognise it by.
    pub subject: &'a str,
    pub recipients: &'a [String],
    pub files: &'a [String],
    pub password: &'a str,
    /// Unix milliseconds.
    pub expires_at: i64,
}

/// The first download of one document.
pub struct DownloadNotice<'a> {
    pub language: Language,
    pub from: &'a str,
    pub to: &'a str,
    pub queue_id: &'a str,
    pub link_id: &'a str,
    pub file_name: &'a str,
}

impl PasswordNotice<'_> {
    pub fn render(&self) -> Vec<u8> {
        let files = self
            .files
            .iter()
            .map(|f| format!("  - {f}"))
            .collect::<Vec<_>>()
            .join("\n");
        let rcpts = self.recipients.join(", ");
        let until = date(self.expires_at, self.language);
        let (subject, body) = match self.language {
            Language::De => (
                format!("Passwort für Ihre Dokumente: {}", self.subject),
                format!(
                    "Ihre Nachricht „{subject}“ (Vorgang {id}) an {rcpts} enthält \
                     passwortgeschützte Dokumente:\n\n{files}\n\nPasswort: {pw}\n\n\
                     Die Empfänger erhalten das Passwort nicht per E-Mail. Bitte teilen \
                     Sie es ihnen auf einem anderen Weg mit (Telefon, Brief).\n\
                     Die Links sind gültig bis {until}.\n",
                    subject = self.subject,
                    id = self.queue_id,
                    pw = self.password,
                ),
            ),
            Language::En => (
                format!("Password for your documents: {}", self.subject),
                format!(
                    "Your message \"{subject}\" (reference {id}) to {rcpts} contains \
                     password-protected documents:\n\n{files}\n\nPassword: {pw}\n\n\
                     The recipients do not get the password by e-mail. Please tell them \
                     another way (phone, letter).\nThe links are valid until {until}.\n",
                    subject = self.subject,
                    id = self.queue_id,
                    pw = self.password,
                ),
            ),
        };
        build(self.from, self.to, subject, body)
    }
}

impl DownloadNotice<'_> {
    pub fn render(&self) -> Vec<u8> {
        let (subject, body) = match self.language {
            Language::De => (
                format!("Dokument abgerufen: {}", self.file_name),
                format!(
                    "Das Dokument „{file}“ aus Ihrer Nachricht (Vorgang {id}) wurde zum \
                     ersten Mal heruntergeladen.\nLink-Kennung: {link}\n",
                    file = self.file_name,
                    id = self.queue_id,
                    link = self.link_id,
                ),
            ),
            Language::En => (
                format!("Document downloaded: {}", self.file_name),
                format!(
                    "The document \"{file}\" from your message (reference {id}) was \
                     downloaded for the first time.\nLink id: {link}\n",
                    file = self.file_name,
                    id = self.queue_id,
                    link = self.link_id,
                ),
            ),
        };
        build(self.from, self.to, subject, body)
    }
}

/// A password a person can read out on the phone: 3 groups of 4 from an
/// alphabet without look-alikes (0/O, 1/l/I), about 70 bits.
pub fn generate_password() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"23456789abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ";
    let mut rng = rand::rng();
    let mut out = String::with_capacity(14);
    for group in 0..3 {
        if group > 0 {
            out.push('-');
        }
        for _ in 0..4 {
            out.push(ALPHABET[rng.random_range(0..ALPHABET.len())] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_notice_names_the_password_and_goes_to_the_staff_member() {
        let n = PasswordNotice {
            language: Language::De,
            from: "via@landkreis.example",
            to: "sb@landkreis.example",
            queue_id: "q1",
            subject: "Bescheid",
            recipients: &["eltern@example.org".into()],
            files: &["Bescheid.pdf".into()],
            password: "abcd-efgh-jkmn",
            expires_at: 1_796_558_400_000,
        }
        .render();
        let parsed = mail_parser::MessageParser::new().parse(&n).expect("parses");
        assert_eq!(
            parsed
                .to()
                .and_then(|a| a.first())
                .and_then(|a| a.address()),
            Some("sb@landkreis.example")
        );
        let body = parsed.body_text(0).expect("text");
        assert!(body.contains("abcd-efgh-jkmn"));
        assert!(body.contains("06.12.2026"));
        assert!(n.windows(2).all(|w| w[1] != b'\n' || w[0] == b'\r'));
    }

    #[test]
    fn generated_passwords_differ_and_avoid_lookalikes() {
        let a = generate_password();
        assert_eq!(a.len(), 14);
        assert_ne!(a, generate_password());
        assert!(!a.contains(['0', 'O', '1', 'l', 'I']));
    }
}
