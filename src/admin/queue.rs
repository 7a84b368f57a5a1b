//! `schleuse queue list|show|retry|delete|hold|release|flush`, like
//! `mailq`/`postsuper`, against the same database the gateway uses.

use super::{size, time};
use anyhow::bail;

use crate::store::{MessageInfo, RecipientState, Store};

fn pending(m: &MessageInfo) -> usize {
    m.recipients
        .iter()
        .filter(|r| r.state == RecipientState::Pending)
        .count()
}

fn short(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut s: String = text.chars().take(max.saturating_sub(1)).collect();
        s.push('…');
        s
    }
}

pub async fn list(store: &dyn Store, json: bool) -> anyhow::Result<()> {
    let messages = store.list().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&messages)?);
        return Ok(());
    }
    if messages.is_empty() {
        println!("queue is empty");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = messages
        .iter()
        .map(|m| {
            vec![
                m.id.clone(),
                time(m.received_at),
                m.state.to_string(),
                size(m.size),
                m.attempts.to_string(),
                format!("{}/{}", pending(m), m.recipients.len()),
                if m.sender.is_empty() {
                    "<>".into()
                } else {
                    m.sender.clone()
                },
                short(m.last_error.as_deref().unwrap_or(""), 60),
            ]
        })
        .collect();
    print!(
        "{}",
        super::table(
            &[
                "ID",
                "RECEIVED",
                "STATE",
                "SIZE",
                "TRIES",
                "PENDING",
                "SENDER",
                "LAST ERROR"
            ],
            &rows
        )
    );
    println!("{} message(s)", messages.len());
    Ok(())
}

pub async fn show(store: &dyn Store, id: &str, json: bool) -> anyhow::Result<()> {
    let Some(m) = store.get(id).await? else {
        bail!("no message with id {id}");
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&m)?);
        return Ok(());
    }
    println!("id:           {}", m.id);
    println!("state:        {}", m.state);
    println!("received:     {}", time(m.received_at));
    println!("account:      {}", m.account);
    println!(
        "sender:       {}",
        if m.sender.is_empty() { "<>" } else { &m.sender }
    );
    println!("size:         {} bytes", m.size);
    println!("attempts:     {}", m.attempts);
    if pending(&m) > 0 {
        println!("next attempt: {}", time(m.next_attempt));
    }
    if let Some(e) = &m.last_error {
        println!("last error:   {e}");
    }
    if let Some(n) = &m.note {
        println!("note:         {n}");
    }
    let rows: Vec<Vec<String>> = m
        .recipients
        .iter()
        .map(|r| {
            vec![
                r.address.clone(),
                r.state.as_str().to_string(),
                r.reply.clone().unwrap_or_default(),
            ]
        })
        .collect();
    println!();
    print!(
        "{}",
        super::table(&["RECIPIENT", "STATE", "LAST REPLY"], &rows)
    );
    Ok(())
}

/// Releases every held message of `account` (after an anomaly hold).
pub async fn release_account(store: &dyn Store, account: &str) -> anyhow::Result<()> {
    let held: Vec<String> = store
        .list()
        .await?
        .into_iter()
        .filter(|m| m.account == account && m.state == crate::store::MessageState::Held)
        .map(|m| m.id)
        .collect();
    for id in &held {
        store.release(id).await?;
        println!("{id}: released");
    }
    println!(
        "{} held message(s) of account {account} released",
        held.len()
    );
    Ok(())
}
