//! The notice to the admin address when delivery pauses for an
//! account-wide refusal. It goes out through the same upstream, so while
//! the upstream refuses everything it waits in the queue like the rest;
//! the log line and the metric are the alert that arrives at once.

use std::time::SystemTime;

use super::detect::Cause;
use crate::config::{Config, Language};

pub struct PauseNotice<'a> {
    pub config: &'a Config,
    pub to: &'a str,
    pub cause: Cause,
    pub reply: &'a str,
    pub since: SystemTime,
}

impl PauseNotice<'_> {
    pub fn render(&self) -> Vec<u8> {
        let c = self.config;
        let ap = &c.delivery.account_pause;
        let host = &c.server.hostname;
        let upstream = &c.upstream.host;
        let since = humantime::format_rfc3339_seconds(self.since);
        let first = humantime::format_duration(ap.probe_interval);
        let max = humantime::format_duration(ap.probe_max_interval);
        let max_age = humantime::format_duration(c.delivery.max_age);
        let reply = self.reply;
        let (subject, body) = match c.attachments.language {
            Language::De => (
                format!("{host}: Versand angehalten, {upstream} lehnt das Konto ab"),
                format!(
                    "Der Versand von {host} über {upstream} ist seit {since} (UTC) angehalten. \
                     {upstream} hat mit einer Antwort abgelehnt, die nicht eine einzelne \
                     Nachricht betreffen kann:\n\n  {reply}\n\n\
                     Grund der Einstufung: {why}.\n\n\
                     Es wird nichts zurückgewiesen: Alle Nachrichten bleiben in ihrer \
                     Reihenfolge in der Warteschlange, Einlieferungen werden weiter \
                     angenommen. Das Gateway prüft {upstream} ohne Nachricht erneut (zuerst \
                     nach {first}, dann in wachsenden Abständen bis {max}); sobald wieder \
                     angenommen wird, geht die Warteschlange in ihrer Reihenfolge hinaus, \
                     jede Nachricht einmal. Nachrichten, die älter als delivery.max_age \
                     ({max_age}) werden, verfallen wie sonst mit einer \
                     Unzustellbarkeitsnachricht an den Absender.\n\n\
                     Bitte prüfen Sie das Konto beim Anbieter (bei Mailjet: Absenderadressen \
                     und Domains, Kontostatus) und das Protokoll des Gateways \
                     (\"delivery paused\"). Die Metrik schleuse_delivery_account_paused ist \
                     währenddessen 1.\n\n\
                     Dieser Hinweis geht über denselben Anbieter hinaus und kommt daher \
                     womöglich erst an, wenn der Versand wieder läuft.\n",
                    why = why_de(self.cause),
                ),
            ),
            Language::En => (
                format!("{host}: delivery paused, {upstream} refuses the account"),
                format!(
                    "Delivery from {host} through {upstream} has been paused since {since} \
                     (UTC). {upstream} refused with a reply that cannot be about a single \
                     message:\n\n  {reply}\n\n\
                     Why it counts as account-wide: {why}.\n\n\
                     Nothing is bounced: every message stays queued in its order, and \
                     submission goes on. The gateway tries {upstream} again without a \
                     message (first after {first}, then at growing intervals up to {max}); \
                     as soon as it takes mail again, the queue goes out in order, each \
                     message once. Messages older than delivery.max_age ({max_age}) still \
                     expire with a bounce notice to their sender.\n\n\
                     Please check the account at the provider (at Mailjet: sender addresses \
                     and domains, account status) and the gateway's log (\"delivery \
                     paused\"). The metric schleuse_delivery_account_paused is 1 meanwhile.\n\n\
                     This notice goes out through the same provider, so it may arrive only \
                     once delivery has resumed.\n",
                    why = self.cause.describe(),
                ),
            ),
        };
        crate::notice::build(&c.sender.system_address, self.to, subject, body)
    }
}

fn why_de(cause: Cause) -> &'static str {
    match cause {
        Cause::Connect => "Ablehnung schon bei Begrüßung oder Anmeldung (AUTH)",
        Cause::SystemSender => "5xx auf MAIL FROM mit der Systemadresse als Absender",
        Cause::Pattern => "die Antwort passt zu einem Muster aus [delivery.account_pause] patterns",
        Cause::SameReply => "dieselbe 5xx-Antwort für viele verschiedene Empfänger hintereinander",
    }
}
