//! `schleuse links list|revoke`: the stored documents and their links,
//! against the same database and document directory the gateway uses.
//! A revocation takes effect at once, also for a running gateway: the row
//! is a tombstone and the file is gone before the command returns.

use super::{size, time};
use crate::links::vault::Vault;
use crate::store::{LinkState, Store, StoreError};

pub async fn list(store: &dyn Store, all: bool, json: bool) -> anyhow::Result<()> {
    let links = store.links(all).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&links)?);
        return Ok(());
    }
    if links.is_empty() {
        println!(
            "{}",
            if all {
                "no links"
            } else {
                "no active links (--all shows expired and revoked ones)"
            }
        );
        return Ok(());
    }
    let rows: Vec<Vec<String>> = links
        .iter()
        .map(|l| {
            let name = if l.state == LinkState::Active {
                l.file_name.clone()
            } else {
                "-".into()
            };
            vec![
                l.id.clone(),
                l.state.to_string(),
                name,
                if l.state == LinkState::Active {
                    size(l.size)
                } else {
                    "-".into()
                },
                time(l.created_at),
                time(l.expires_at),
                if l.protected { "yes" } else { "no" }.into(),
                l.downloads.to_string(),
                l.message_id.clone(),
            ]
        })
        .collect();
    print!(
        "{}",
        super::table(
            &[
                "ID",
                "STATE",
                "FILE",
                "SIZE",
                "CREATED",
                "EXPIRES",
                "PASSWORD",
                "DOWNLOADS",
                "MESSAGE",
            ],
            &rows
        )
    );
    println!("{} link(s)", links.len());
    Ok(())
}

pub async fn revoke(vault: &Vault, id: &str) -> anyhow::Result<()> {
    match vault.revoke(id).await {
        Ok(()) => {
            println!("link {id} revoked: the document is deleted and the link answers 410 Gone");
            Ok(())
        }
        Err(crate::links::VaultError::Store(StoreError::LinkNotFound(_))) => {
            anyhow::bail!("no link with id {id} (see `schleuse links list --all`)")
        }
        Err(e) => Err(e.into()),
    }
}
