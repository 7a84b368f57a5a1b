//! `schleuse bans list|remove`: client IPs banned after repeated failed
//! logins (`crate::limits`), against the same database the gateway uses; a
//! removal applies to the next connection at once.

use std::net::IpAddr;

use super::time;
use crate::store::{Store, now_ms};

#[derive(Debug, clap::Subcommand)]
pub enum BansCommand {
    /// Banned client IPs (IP, since, until, reason)
    List {
        #[arg(long)]
        json: bool,
    },
    /// Lift the ban of an IP
    Remove { ip: String },
}

pub async fn run(store: &dyn Store, cmd: BansCommand) -> anyhow::Result<()> {
    match cmd {
        BansCommand::List { json } => {
            let bans = store.bans(now_ms()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&bans)?);
                return Ok(());
            }
            if bans.is_empty() {
                println!("no client IP is banned");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = bans
                .iter()
                .map(|b| {
                    vec![
                        b.ip.clone(),
                        time(b.created_at),
                        time(b.until),
                        b.reason.clone(),
                    ]
                })
                .collect();
            print!(
                "{}",
                super::table(&["IP", "SINCE", "UNTIL", "REASON"], &rows)
            );
            Ok(())
        }
        BansCommand::Remove { ip } => {
            let Ok(parsed) = ip.trim().parse::<IpAddr>() else {
                anyhow::bail!("{ip:?} is not an IP address like 192.0.2.1");
            };
            // Bans are stored as the peer address was written (a v4-mapped
            // IPv6 address on a dual-stack listener).
            let ip = parsed.to_canonical().to_string();
            let mapped = match parsed.to_canonical() {
                IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()).to_string(),
                IpAddr::V6(_) => ip.clone(),
            };
            if !store.unban(&ip).await? && !store.unban(&mapped).await? {
                anyhow::bail!("{ip} is not banned");
            }
            println!("{ip}: ban lifted");
            Ok(())
        }
    }
}
