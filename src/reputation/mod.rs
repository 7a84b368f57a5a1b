//! Reputation protection (SPEC §6): the blocklist watch.
//!
//! With `[reputation] blocklist_check = true`, a background task looks up
//! the gateway's egress IPs in every DNSBL and its sending domains in every
//! RHSBL each `check_interval`, through the `[dns]` resolver
//! ([`blocklist`] says how answers are read, [`watch`] what is kept
//! between rounds). A new listing is logged at error level (target, list,
//! return codes, the list's TXT reason) and shows as
//! `schleuse_blocklist_listed{list,target} 1`; every lookup counts in
//! `schleuse_blocklist_checks_total{result}`.
//!
//! With `pause_on_listing = true`, delivery holds (messages stay queued,
//! see [`crate::delivery::Pause`]) while anything is listed, and resumes
//! once every listing has cleared. The state is kept in memory only, so
//! after a start delivery waits for the first round. `/readyz` is not
//! affected: the gateway still accepts mail.
//!
//! Egress source addresses (`[[upstream.egress]]`) are looked up too (by
//! their `public_address` where NAT sits in between); a listed one leaves
//! the rotation (`crate::delivery::egress`) until it clears, and its
//! listing holds delivery only when no other egress address is left.
//!
//! The configuration is read again every round, so a reload (SIGHUP)
//! applies from the next round on.

pub mod blocklist;
pub mod watch;

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use crate::config::Config;
use crate::delivery::Handles;
use crate::state::Shared;
use watch::{Listing, Watch};

/// Starts the watch (a task that ends at shutdown). When it will pause on
/// listings, delivery is held from now until its first round.
pub fn spawn(shared: Arc<Shared>, delivery: Arc<Handles>) {
    let config = shared.config();
    let r = &config.reputation;
    if r.blocklist_check {
        let checks = blocklist::checks(&config);
        tracing::info!(
            egress_ips = r.egress_ips.len(),
            dnsbl = r.dnsbl.len(),
            domains = %blocklist::domains(&config).join(","),
            rhsbl = r.rhsbl.len(),
            lookups = checks.len(),
            interval = ?r.check_interval,
            pause_on_listing = r.pause_on_listing,
            "blocklist watch on"
        );
        if r.pause_on_listing {
            delivery.delivery_pause.set(true);
            tracing::info!("delivery waits for the first blocklist check (pause_on_listing)");
        }
    }
    let mut stop = shared.shutdown_signal();
    tokio::spawn(async move {
        let mut watch = Watch::default();
        loop {
            let config = shared.config();
            tokio::select! {
                _ = round(&delivery, &config, &mut watch) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(config.reputation.check_interval) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    });
}

/// One round: look everything up, update the state and the pause.
pub async fn round(delivery: &Handles, config: &Config, watch: &mut Watch) {
    if !config.reputation.blocklist_check {
        if watch.reset() {
            tracing::info!("blocklist watch switched off");
        }
        watch.paused = false;
        rotate_egress(delivery, config, &[]);
        if delivery.delivery_pause.set(false) {
            tracing::info!("delivery resumed: the blocklist watch is off");
        }
        return;
    }
    let results = blocklist::check_all(config).await;
    watch.apply(&results);
    let listings = watch.listings();
    rotate_egress(delivery, config, &listings);
    // A listed egress address out of the rotation no longer sends: only
    // the listings that still matter hold delivery.
    let egress = &config.upstream.egress;
    let holding: Vec<&Listing> = listings
        .iter()
        .filter(|l| {
            l.target
                .parse()
                .map_or(true, |ip| !delivery.egress.covers(egress, ip))
        })
        .collect();
    let pause = config.reputation.pause_on_listing && !holding.is_empty();
    let was = std::mem::replace(&mut watch.paused, pause);
    let changed = delivery.delivery_pause.set(pause);
    let list = || {
        holding
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    };
    if pause && !was {
        tracing::error!(listings = %list(), "delivery paused: listed on a blocklist (pause_on_listing)");
    } else if !pause && (was || changed) {
        tracing::info!("delivery resumed: nothing is listed");
    } else if !holding.is_empty() && !config.reputation.pause_on_listing {
        tracing::debug!(listings = %list(), "listed; delivery goes on (pause_on_listing = false)");
    }
}

/// Takes listed egress addresses out of the rotation and puts cleared ones
/// back (`crate::delivery::egress`).
fn rotate_egress(delivery: &Handles, config: &Config, listings: &[Listing]) {
    let egress = &config.upstream.egress;
    let listed: HashSet<IpAddr> = listings
        .iter()
        .filter_map(|l| l.target.parse::<IpAddr>().ok())
        .filter(|ip| egress.iter().any(|e| e.public() == *ip))
        .collect();
    let (left, back) = delivery.egress.set_listed(egress, listed);
    for ip in left {
        tracing::error!(egress = %ip, "egress address listed on a blocklist: taken out of the rotation");
    }
    for ip in back {
        tracing::info!(egress = %ip, "egress address back in the rotation");
    }
}
