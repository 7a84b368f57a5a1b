//! The PII warning to the staff member (`pii = "warn"`): which categories
//! of personal data the message seemed to carry, never the data itself.

use super::decision::labels;
use super::pii::Category;
use crate::config::Language;

pub struct PiiNotice<'a> {
    pub language: Language,
    pub from: &'a str,
    pub to: &'a str,
    pub queue_id: &'a str,
    pub subject: &'a str,
    pub categories: &'a [Category],
}

impl PiiNotice<'_> {
    pub fn render(&self) -> Vec<u8> {
        let found = labels(self.categories, self.language);
        let (subject, body) = match self.language {
            Language::De => (
                format!("Hinweis Datenschutz: {}", self.subject),
                format!(
                    "Ihre Nachricht „{subject}“ (Vorgang {id}) wurde versandt. Sie enthält \
                     im Text möglicherweise personenbezogene Daten dieser Art:\n\n  {found}\n\n\
                     Solche Angaben sollten nicht im Text einer E-Mail stehen. Bitte senden Sie \
                     sie künftig als Dokument (Anhang): Anhänge werden verschlüsselt gespeichert \
                     und nur als Link versandt.\n",
                    subject = self.subject,
                    id = self.queue_id,
                ),
            ),
            Language::En => (
                format!("Privacy notice: {}", self.subject),
                format!(
                    "Your message \"{subject}\" (reference {id}) was sent. Its text seems to \
                     contain personal data of this kind:\n\n  {found}\n\n\
                     Such data should not be in the text of an e-mail. Please send it as a \
                     document (attachment) in future: attachments are stored encrypted and sent \
                     only as a link.\n",
                    subject = self.subject,
                    id = self.queue_id,
                ),
            ),
        };
        crate::notice::build(self.from, self.to, subject, body)
    }
}
