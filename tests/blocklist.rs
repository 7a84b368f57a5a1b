//! Blocklist watch (SPEC §6) against a DNS stand-in on loopback: how
//! answers are classified (listed, not listed, refused query, SERVFAIL,
//! timeout), and with the real binary that `pause_on_listing` holds
//! delivery while an egress IP is listed and lets it go once it clears.

mod common;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::thread;
use std::time::{Duration, Instant};

use common::dns::{Answer, DnsStandIn, Zone};
use common::*;
use schleuse::config::Config;
use schleuse::reputation::blocklist::{self, Verdict};

fn listed(codes: &[[u8; 4]], txt: Option<&str>) -> Option<Answer> {
    Some(Answer::listed(codes, txt))
}

// ---------------------------------------------------------------------------

#[test]
fn classification_against_a_dns_stand_in() {
    let dns = DnsStandIn::start(Zone::new());
    let reason = "https://bl.test/query/203.0.113.25";
    dns.set(
        "25.113.0.203.bl.test",
        listed(&[[127, 0, 0, 2], [127, 0, 0, 4]], Some(reason)),
    );
    // 203.0.113.26: nothing, so NXDOMAIN.
    dns.set(
        "27.113.0.203.bl.test",
        listed(&[[127, 255, 255, 254]], None),
    );
    dns.set("28.113.0.203.bl.test", Some(Answer::ServFail));
    dns.set("29.113.0.203.bl.test", listed(&[[198, 51, 100, 1]], None));
    let v6 = "5.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test";
    dns.set(v6, listed(&[[127, 0, 0, 3]], None));
    dns.set("*.silent.test", Some(Answer::Silent));
    dns.set("listed.example.dbl.test", listed(&[[127, 0, 1, 2]], None));
    dns.set(
        "refused.example.dbl.test",
        listed(&[[127, 0, 1, 255]], None),
    );

    let mut config = Config::default();
    config.dns.nameservers = vec![dns.nameserver().parse().unwrap()];
    config.dns.timeout = Duration::from_millis(400);
    let r = &mut config.reputation;
    r.blocklist_check = true;
    r.egress_ips = [
        "203.0.113.25",
        "203.0.113.26",
        "203.0.113.27",
        "203.0.113.28",
        "203.0.113.29",
        "2001:db8::25",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    r.dnsbl = vec!["bl.test".into(), "silent.test".into()];
    r.rhsbl = vec!["dbl.test".into()];
    r.domains = ["listed.example", "clean.example", "refused.example"]
        .map(String::from)
        .to_vec();
    config.validate().expect("valid config");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let results = rt.block_on(blocklist::check_all(&config));
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "a round took {took:?}");
    let got: BTreeMap<(String, String), Verdict> = results
        .into_iter()
        .map(|(c, v)| ((c.target, c.list), v))
        .collect();
    assert_eq!(got.len(), 6 * 2 + 3, "{got:#?}");
    let get = |t: &str, l: &str| {
        got.get(&(t.to_string(), l.to_string()))
            .unwrap_or_else(|| panic!("no result for {t} on {l}: {got:#?}"))
    };
    let code = |c: [u8; 4]| Ipv4Addr::from(c);

    assert_eq!(
        get("203.0.113.25", "bl.test"),
        &Verdict::Listed {
            codes: vec![code([127, 0, 0, 2]), code([127, 0, 0, 4])],
            reason: Some(reason.into()),
        }
    );
    assert_eq!(get("203.0.113.26", "bl.test"), &Verdict::Clear);
    assert!(
        matches!(get("203.0.113.27", "bl.test"), Verdict::Unknown(w) if w.contains("refused")),
        "{got:#?}"
    );
    assert!(
        matches!(get("203.0.113.28", "bl.test"), Verdict::Unknown(_)),
        "SERVFAIL: {got:#?}"
    );
    assert!(
        matches!(get("203.0.113.29", "bl.test"), Verdict::Unknown(w) if w.contains("outside")),
        "{got:#?}"
    );
    assert!(
        matches!(get("2001:db8::25", "bl.test"), Verdict::Listed { codes, .. } if codes == &[code([127, 0, 0, 3])]),
        "{got:#?}"
    );
    for ip in &config.reputation.egress_ips {
        assert!(
            matches!(get(&ip.to_string(), "silent.test"), Verdict::Unknown(_)),
            "timeout: {got:#?}"
        );
    }
    assert!(matches!(
        get("listed.example", "dbl.test"),
        Verdict::Listed { .. }
    ));
    assert_eq!(get("clean.example", "dbl.test"), &Verdict::Clear);
    assert!(matches!(
        get("refused.example", "dbl.test"),
        Verdict::Unknown(_)
    ));
}

#[test]
fn a_listing_pauses_delivery_until_it_clears() {
    const LISTED_NAME: &str = "25.113.0.203.bl.test";
    let dns = DnsStandIn::start(Zone::new());
    dns.set(
        LISTED_NAME,
        listed(&[[127, 0, 0, 2]], Some("https://bl.test/203.0.113.25")),
    );
    let admin_port = free_port();
    let world = World::relay_with(UpstreamOpts::default(), |c| {
        c.extra_toml = format!(
            "\n[dns]\nnameservers = [\"{}\"]\ntimeout = \"500ms\"\n\
             \n[reputation]\nblocklist_check = true\negress_ips = [\"203.0.113.25\"]\n\
             dnsbl = [\"bl.test\"]\nrhsbl = [\"dbl.test\"]\ncheck_interval = \"1s\"\n\
             pause_on_listing = true\n\
             \n[admin]\nbind = \"127.0.0.1:{admin_port}\"\n",
            dns.nameserver()
        );
    });
    let log = || std::fs::read_to_string(&world.gw.log_path).unwrap_or_default();
    let wait_log = |what: &str| {
        wait_until(Duration::from_secs(20), || {
            log().contains(what).then_some(())
        })
        .unwrap_or_else(|| panic!("no {what:?} in the log within 20 s\n{}", world.gw.log()))
    };
    wait_log("delivery paused");
    let alert = log()
        .lines()
        .find(|l| l.contains("blocklist: LISTED"))
        .map(String::from)
        .unwrap_or_default();
    assert!(
        alert.contains("ERROR")
            && alert.contains("target=203.0.113.25")
            && alert.contains("list=bl.test")
            && alert.contains("codes=127.0.0.2")
            && alert.contains("https://bl.test/203.0.113.25"),
        "{alert}"
    );
    let gauge = "schleuse_blocklist_listed{list=\"bl.test\",target=\"203.0.113.25\"}";
    let sample = |name: &str| {
        let text = http_get(admin_port, "/metrics", None).map(|r| r.body);
        prometheus_samples(&text.unwrap_or_default())
            .get(name)
            .copied()
    };
    assert_eq!(sample(gauge), Some(1.0));
    // The default domain (of the system address) was checked, not listed.
    assert!(sample("schleuse_blocklist_checks_total{result=\"clear\"}").unwrap_or(0.0) >= 1.0);

    let mut client = world.client();
    let message = simple_message("app@example.com", "rcpt@example.net", "blocklist-held");
    let reply = client.send("app@example.com", &["rcpt@example.net"], &message);
    assert_eq!(reply.code, 250, "{reply}");
    client.quit();
    // Several rounds pass (1 s apart): still listed, nothing goes out.
    thread::sleep(Duration::from_secs(3));
    assert!(
        world.up().messages().is_empty(),
        "relayed while listed\n{}",
        world.gw.log()
    );

    dns.set(LISTED_NAME, None);
    let got = world.up().wait_for(1, Duration::from_secs(30));
    assert!(got[0].text().contains("blocklist-held"));
    wait_log("no longer listed");
    wait_log("delivery resumed");
    assert_eq!(sample(gauge), Some(0.0));
}
