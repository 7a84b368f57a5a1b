//! `schleuse gdpr export|erase ADDR`: the rights of data subjects (SPEC §7,
//! GDPR Art. 15 and 17), against the same database and document directory
//! the running gateway uses.

use serde::Serialize;

use crate::store::document_files::DocumentFiles;
use crate::store::suppression::{RelayEvent, Suppression};
use crate::store::{Store, SubjectRecords};

/// The export: the delivery log's records, the suppression-list entry and
/// the relay's delivery events (joined to messages by `message_id`).
#[derive(Serialize)]
struct Export {
    #[serde(flatten)]
    records: SubjectRecords,
    suppression: Option<Suppression>,
    relay_events: Vec<RelayEvent>,
}

/// Prints, as JSON, everything held about the address.
pub async fn export(store: &dyn Store, address: &str) -> anyhow::Result<()> {
    let records = store.subject_records(address).await?;
    let suppression = store.suppression_subject(address).await?;
    let export = Export {
        records,
        suppression: suppression.entry,
        relay_events: suppression.relay_events,
    };
    println!("{}", serde_json::to_string_pretty(&export)?);
    Ok(())
}

/// Deletes everything held about the address. Without `yes` it only says
/// what would go, and fails, so a script cannot erase by accident.
pub async fn erase(
    store: &dyn Store,
    files: &dyn DocumentFiles,
    address: &str,
    yes: bool,
) -> anyhow::Result<()> {
    if !yes {
        let found = store.subject_records(address).await?;
        let suppression = store.suppression_subject(address).await?;
        println!(
            "{} message(s), {} download record(s), {} suppression entry(ies) and {} relay event(s) concern {}.",
            found.messages.len(),
            found.downloads.len(),
            usize::from(suppression.entry.is_some()),
            suppression.relay_events.len(),
            found.address
        );
        anyhow::bail!("nothing erased: add --yes to erase them");
    }
    let erased = store.erase_subject(address).await?;
    let suppression = store.erase_suppression_subject(address).await?;
    let mut file_errors = 0;
    for id in &erased.links_revoked {
        if let Err(e) = files.delete(id).await {
            eprintln!("schleuse: warning: document {id}: {e}");
            file_errors += 1;
        }
    }
    println!("erased for {}:", address.trim());
    println!("  recipient entries:      {}", erased.recipients);
    println!("  delivery-log entries:   {}", erased.log_entries);
    println!("  queued messages:        {}", erased.queued_deleted.len());
    println!("  documents (links):      {}", erased.links_revoked.len());
    println!("  download-log entries:   {}", erased.downloads);
    println!("  suppression entries:    {}", suppression.entries);
    println!("  relay events:           {}", suppression.relay_events);
    if !erased.queued_kept.is_empty() {
        println!(
            "  still queued for other recipients (their header names the address until delivered): {}",
            erased.queued_kept.join(", ")
        );
    }
    if file_errors > 0 {
        anyhow::bail!("{file_errors} document file(s) could not be deleted (see above)");
    }
    Ok(())
}
