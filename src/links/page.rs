//! The HTML pages of the link service (SPEC §7), German or English.
//!
//! Every page is a complete, self-contained HTML5 document: no script, no
//! external resource, one inline `<style>` block ([`STYLE`]) that the
//! service allows by its hash in the `Content-Security-Policy`. Pages must
//! stay usable with a screen reader and on a phone (BITV 2.0 / WCAG 2.1 AA):
//! one `<h1>`, a `<main>` landmark, real `<label>`s, errors tied to the field
//! they concern, text contrast well above 4.5:1, tap targets at least 48px.
//!
//! Every piece of text that comes from a document or a request goes through
//! [`escape`]; the functions here never see the token or the password.

use std::fmt::Write as _;
use std::time::Duration;

use super::LinkView;
pub use super::format::{date, human_size};
use crate::config::Language;
use crate::html;

/// The only style of every page. The service allows it by hash, so any
/// change here changes the `Content-Security-Policy` with it (computed at
/// start); an inline `style=""` attribute would be blocked.
pub const STYLE: &str = concat!(
    ":root{color-scheme:light}",
    "body{margin:0;background:#fff;color:#1b1b1b;",
    "font-family:system-ui,-apple-system,\"Segoe UI\",Roboto,\"Helvetica Neue\",Arial,sans-serif;",
    "font-size:1.125rem;line-height:1.5}",
    "main{max-width:36rem;margin:0 auto;padding:1.5rem 1rem 3rem}",
    "h1{font-size:1.6rem;line-height:1.25;margin:0 0 1rem}",
    "dl{margin:1.25rem 0;display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem}",
    "dt{font-weight:700}",
    "dd{margin:0;overflow-wrap:anywhere}",
    "label{display:block;font-weight:700;margin:1.25rem 0 .375rem}",
    "input{box-sizing:border-box;width:100%;min-height:3rem;padding:.5rem .75rem;font:inherit;",
    "color:inherit;background:#fff;border:2px solid #505050;border-radius:4px}",
    "button{box-sizing:border-box;width:100%;min-height:3rem;margin-top:1.25rem;padding:.75rem 1rem;",
    "font:inherit;font-weight:700;color:#fff;background:#0a4d8c;border:2px solid #0a4d8c;",
    "border-radius:4px;cursor:pointer}",
    "button:hover{background:#083b6b}",
    "input:focus-visible,button:focus-visible{outline:3px solid #1b1b1b;outline-offset:2px}",
    ".error{color:#9b0000;border-left:4px solid #9b0000;padding:.25rem 0 .25rem .75rem;font-weight:700}",
    "@media (max-width:24rem){dl{grid-template-columns:1fr}dd{margin-bottom:.5rem}}",
);

/// A message shown above the password form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    None,
    WrongPassword,
    PasswordMissing,
}

/// The page behind a valid link: what the document is, and the form that
/// downloads it. The form posts to the page's own URL (no `action`), so it
/// works under any path prefix the reverse proxy adds.
pub fn document(lang: Language, view: &LinkView, notice: Notice) -> String {
    let de = lang == Language::De;
    let mut body = String::with_capacity(2048);
    let heading = if de {
        "Dokument herunterladen"
    } else {
        "Download document"
    };
    let _ = writeln!(body, "<h1>{heading}</h1>");

    let error = match notice {
        Notice::None => None,
        Notice::WrongPassword if de => Some("Das Passwort ist falsch."),
        Notice::WrongPassword => Some("The password is incorrect."),
        Notice::PasswordMissing if de => Some("Bitte geben Sie das Passwort ein."),
        Notice::PasswordMissing => Some("Please enter the password."),
    };
    // Placed first so a screen reader meets the reason for the reload before
    // anything else; the field refers to it with aria-describedby.
    if let Some(error) = error {
        let _ = writeln!(
            body,
            "<p class=\"error\" id=\"password-error\" role=\"alert\">{error}</p>"
        );
    }

    body.push_str(if de {
        "<p>Für Sie liegt ein Dokument zum Herunterladen bereit.</p>\n"
    } else {
        "<p>A document is ready for you to download.</p>\n"
    });
    let (file, size, until) = if de {
        ("Datei", "Größe", "Verfügbar bis")
    } else {
        ("File", "Size", "Available until")
    };
    let _ = write!(
        body,
        "<dl>\n<dt>{file}</dt><dd>{}</dd>\n<dt>{size}</dt><dd>{}</dd>\n\
         <dt>{until}</dt><dd>{}</dd>\n</dl>\n",
        escape(&view.file_name),
        human_size(view.size, lang),
        date(view.expires_at, lang),
    );

    body.push_str("<form method=\"post\">\n");
    if view.protected {
        body.push_str(if de {
            "<p>Das Dokument ist mit einem Passwort geschützt. Das Passwort erhalten Sie \
             von der Stelle, die Ihnen den Link geschickt hat.</p>\n"
        } else {
            "<p>This document is protected by a password. You get the password from the \
             office that sent you the link.</p>\n"
        });
        let label = if de { "Passwort" } else { "Password" };
        let described = if error.is_some() {
            " aria-describedby=\"password-error\" aria-invalid=\"true\""
        } else {
            ""
        };
        let _ = write!(
            body,
            "<label for=\"password\">{label}</label>\n\
             <input type=\"password\" id=\"password\" name=\"password\" \
             autocomplete=\"current-password\" required{described}>\n"
        );
    }
    let button = if de { "Herunterladen" } else { "Download" };
    let _ = write!(body, "<button type=\"submit\">{button}</button>\n</form>\n");

    let title = match (error.is_some(), de) {
        (true, true) => "Fehler: Dokument herunterladen",
        (true, false) => "Error: Download document",
        (false, _) => heading,
    };
    layout(lang, title, &body)
}

/// `410 Gone`: expired or revoked.
pub fn gone(lang: Language) -> String {
    message(
        lang,
        ("Link nicht mehr gültig", "Link no longer valid"),
        &[
            (
                "Dieser Link ist abgelaufen oder wurde widerrufen.",
                "This link has expired or has been revoked.",
            ),
            (
                "Wenn Sie das Dokument noch benötigen, wenden Sie sich bitte an die Stelle, \
                 die Ihnen den Link geschickt hat.",
                "If you still need the document, please contact the office that sent you \
                 the link.",
            ),
        ],
    )
}

/// `404`: no such document, or not a link of this service at all.
pub fn not_found(lang: Language) -> String {
    message(
        lang,
        ("Dokument nicht gefunden", "Document not found"),
        &[(
            // Mail clients that wrap long lines cut links in two: the most
            // likely reason a real recipient lands here.
            "Unter dieser Adresse gibt es kein Dokument. Bitte prüfen Sie, ob der Link \
             vollständig ist: Manche E-Mail-Programme teilen lange Links auf zwei Zeilen auf.",
            "There is no document at this address. Please check that the link is \
             complete: some e-mail programs split long links across two lines.",
        )],
    )
}

/// `429`: too many wrong passwords, for this link or from this address.
pub fn rate_limited(lang: Language, retry_after: Duration) -> String {
    let when = wait_text(lang, retry_after);
    let text = if lang == Language::De {
        format!(
            "Das Passwort wurde zu oft falsch eingegeben. Bitte versuchen Sie es {when} \
             erneut."
        )
    } else {
        format!("The password was entered incorrectly too many times. Please try again {when}.")
    };
    let (title, intro) = if lang == Language::De {
        (
            "Zu viele Versuche",
            "Aus Sicherheitsgründen ist der Download kurz gesperrt.",
        )
    } else {
        (
            "Too many attempts",
            "For your security, the download is blocked for a short while.",
        )
    };
    layout(
        lang,
        title,
        &format!(
            "<h1>{title}</h1>\n<p>{intro}</p>\n<p>{}</p>\n",
            escape(&text)
        ),
    )
}

/// `500`: the document store failed; nothing the recipient did.
pub fn unavailable(lang: Language) -> String {
    message(
        lang,
        ("Download nicht möglich", "Download not possible"),
        &[(
            "Der Download ist gerade nicht möglich. Bitte versuchen Sie es später noch einmal.",
            "The download is not possible right now. Please try again later.",
        )],
    )
}

/// `400` / `413`: a request no browser sends from the form.
pub fn bad_request(lang: Language) -> String {
    message(
        lang,
        ("Ungültige Anfrage", "Invalid request"),
        &[(
            "Die Anfrage konnte nicht verarbeitet werden. Bitte öffnen Sie den Link erneut.",
            "The request could not be processed. Please open the link again.",
        )],
    )
}

/// A page of a heading and some paragraphs, each given as (German, English).
fn message(lang: Language, title: (&str, &str), paragraphs: &[(&str, &str)]) -> String {
    fn pick<'a>(lang: Language, (de, en): (&'a str, &'a str)) -> &'a str {
        if lang == Language::De { de } else { en }
    }
    let title = pick(lang, title);
    let mut body = format!("<h1>{}</h1>\n", escape(title));
    for &p in paragraphs {
        let _ = writeln!(body, "<p>{}</p>", escape(pick(lang, p)));
    }
    layout(lang, title, &body)
}

fn layout(lang: Language, title: &str, main: &str) -> String {
    let code = match lang {
        Language::De => "de",
        Language::En => "en",
    };
    format!(
        "<!DOCTYPE html>\n<html lang=\"{code}\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"referrer\" content=\"no-referrer\">\n\
         <meta name=\"robots\" content=\"noindex, nofollow\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n{main}</main>\n\
         </body>\n</html>\n",
        escape(title)
    )
}

/// HTML-escapes text for element content and quoted attribute values of
/// a page ([`html::Target::Page`]).
pub fn escape(text: &str) -> String {
    html::escape(text, html::Target::Page)
}

/// "in 3 Minuten" / "in 3 minutes"; whole minutes from one minute up, so a
/// browser that retries a few seconds early is not refused again.
fn wait_text(lang: Language, wait: Duration) -> String {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let secs = secs.max(1);
    let de = lang == Language::De;
    if secs < 60 {
        return match (secs, de) {
            (1, true) => "in 1 Sekunde".to_owned(),
            (_, true) => format!("in {secs} Sekunden"),
            (1, false) => "in 1 second".to_owned(),
            (_, false) => format!("in {secs} seconds"),
        };
    }
    let minutes = secs.div_ceil(60);
    match (minutes, de) {
        (1, true) => "in 1 Minute".to_owned(),
        (_, true) => format!("in {minutes} Minuten"),
        (1, false) => "in 1 minute".to_owned(),
        (_, false) => format!("in {minutes} minutes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(name: &str, protected: bool) -> LinkView {
        LinkView {
            id: "L1".into(),
            file_name: name.into(),
            content_type: "application/pdf".into(),
            size: 1_572_864,
            expires_at: 1_767_139_200_000, // 2025-12-31T00:00:00Z
            protected,
        }
    }

    #[test]
    fn escaping() {
        assert_eq!(escape("<b>&\"x'.pdf"), "&lt;b&gt;&amp;&quot;x&#39;.pdf");
        assert_eq!(
            escape("a\u{202E}fdp.exe\u{0007}"),
            "a\u{FFFD}fdp.exe\u{FFFD}"
        );
    }

    #[test]
    fn wait_texts() {
        assert_eq!(
            wait_text(Language::De, Duration::from_millis(10)),
            "in 1 Sekunde"
        );
        assert_eq!(
            wait_text(Language::De, Duration::from_secs(45)),
            "in 45 Sekunden"
        );
        assert_eq!(
            wait_text(Language::De, Duration::from_secs(61)),
            "in 2 Minuten"
        );
        assert_eq!(
            wait_text(Language::En, Duration::from_secs(60)),
            "in 1 minute"
        );
    }

    #[test]
    fn document_page_structure() {
        let page = document(Language::De, &view("Bescheid.pdf", true), Notice::None);
        assert!(page.starts_with("<!DOCTYPE html>\n<html lang=\"de\">"));
        assert_eq!(page.matches("<h1>").count(), 1);
        assert!(page.contains("<main>"));
        assert!(page.contains("<label for=\"password\">Passwort</label>"));
        assert!(page.contains(
            "<input type=\"password\" id=\"password\" name=\"password\" \
             autocomplete=\"current-password\" required>"
        ));
        assert!(page.contains("<form method=\"post\">"));
        assert!(page.contains("31.12.2025"));
        assert!(page.contains("1,5 MB"));
        assert!(!page.contains("<script"));
        assert!(!page.contains("style=\""));
        assert_eq!(page.matches("<style>").count(), 1);

        let page = document(Language::En, &view("a.pdf", true), Notice::WrongPassword);
        assert!(page.contains("<html lang=\"en\">"));
        assert!(page.contains("The password is incorrect."));
        assert!(page.contains("aria-describedby=\"password-error\""));
        assert!(page.contains("2025-12-31"));

        let page = document(Language::De, &view("a.pdf", false), Notice::None);
        assert!(!page.contains("type=\"password\""));
        assert!(page.contains("<button type=\"submit\">Herunterladen</button>"));
    }

    #[test]
    fn message_pages() {
        for lang in [Language::De, Language::En] {
            for page in [
                gone(lang),
                not_found(lang),
                unavailable(lang),
                bad_request(lang),
                rate_limited(lang, Duration::from_secs(170)),
            ] {
                assert_eq!(page.matches("<h1>").count(), 1, "{page}");
                assert!(page.contains("<main>"));
                assert!(page.contains("<title>"));
            }
        }
        assert!(gone(Language::De).contains("Dieser Link ist abgelaufen oder wurde widerrufen."));
        assert!(
            rate_limited(Language::De, Duration::from_secs(170))
                .contains("Bitte versuchen Sie es in 3 Minuten erneut.")
        );
        assert!(unavailable(Language::De).contains("Der Download ist gerade nicht möglich."));
    }
}
