//! SPEC §2/§9: a 250 means the message is durably stored. The gateway is
//! killed with SIGKILL in the middle of a run of submissions while the
//! upstream is down; after a restart every acknowledged message must still be
//! delivered once the upstream comes up.

mod common;

use std::fs;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const COUNT: usize = 200;
const KILL_AFTER: usize = 100;

fn acked_ids(path: &std::path::Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect()
}

#[test]
fn acknowledged_messages_survive_kill_9() {
    let mut env = Env::new();
    let upstream_port = free_port();
    let conf = GatewayConf::relay(upstream_port);
    env.write_config(&conf);
    env.add_default_user();
    let mut gw = env.start_gateway();
    let t0 = std::time::Instant::now();

    let acked_path = env.path().join("acked.txt");
    let flood_log = env.path().join("flood.log");
    let mut flood = Command::new(PYTHON)
        .arg(support_dir().join("flood.py"))
        .args(["--port", &conf.port().to_string(), "--cafile"])
        .arg(&env.certs.ca_crt)
        .args(["--user", USER, "--password", PASSWORD])
        .args([
            "--mail-from",
            "sender@example.com",
            "--to",
            "rcpt@example.net",
        ])
        .args(["--count", &COUNT.to_string(), "--deadline", "240"])
        .arg("--acked")
        .arg(&acked_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(fs::File::create(&flood_log).unwrap()))
        .spawn()
        .expect("start flood.py");
    // Make sure the client is reaped whatever happens below.
    struct Reap<'a>(&'a mut std::process::Child);
    impl Drop for Reap<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let flood = Reap(&mut flood);

    let reached = wait_until(Duration::from_secs(180), || {
        (acked_ids(&acked_path).len() >= KILL_AFTER).then_some(())
    });
    assert!(
        reached.is_some(),
        "the client got fewer than {KILL_AFTER} acks within 180 s ({} acked)\n{}",
        acked_ids(&acked_path).len(),
        fs::read_to_string(&flood_log).unwrap_or_default()
    );
    let at_kill = acked_ids(&acked_path).len();
    gw.kill();
    eprintln!(
        "killed the gateway (SIGKILL) after {at_kill} acks ({:?})",
        t0.elapsed()
    );
    std::thread::sleep(Duration::from_millis(500));
    drop(gw);
    let gw = Gateway::start(&env, "gateway-restarted.log");

    let status = wait_child(flood.0, Duration::from_secs(240));
    let flood_text = fs::read_to_string(&flood_log).unwrap_or_default();
    match status {
        Some(s) => assert!(s.success(), "flood.py failed ({s})\n{flood_text}"),
        None => panic!("flood.py did not finish within 240 s\n{flood_text}"),
    }
    drop(flood);
    let acked = acked_ids(&acked_path);
    assert_eq!(acked.len(), COUNT, "every message was acknowledged once");

    eprintln!(
        "all {COUNT} acknowledged ({:?}); starting the upstream",
        t0.elapsed()
    );
    let up = env.start_upstream(&UpstreamOpts {
        port: Some(upstream_port),
        ..UpstreamOpts::default()
    });
    if let Err((m, arrived)) = wait_for_message_ids(&up, &acked, Duration::from_secs(120)) {
        panic!(
            "{} acknowledged message(s) never arrived within 120 s (e.g. {:?}); {arrived} arrived\n\
             first log:\n{}\n{}",
            m.len(),
            &m[..m.len().min(5)],
            fs::read_to_string(env.path().join("gateway.log")).unwrap_or_default(),
            gw.log()
        );
    }

    eprintln!("every acknowledged message arrived ({:?})", t0.elapsed());
    // Let stragglers (duplicates) arrive, then count them.
    std::thread::sleep(Duration::from_secs(3));
    let per_id = arrivals_per_message_id(&up);
    let duplicates: Vec<(&String, &usize)> = per_id.iter().filter(|(_, n)| **n > 1).collect();
    let unacked: Vec<&String> = per_id.keys().filter(|id| !acked.contains(id)).collect();
    eprintln!(
        "durability: {} acked, {} distinct delivered, {} duplicate Message-IDs {:?}, \
         {} delivered but never acked {:?}",
        acked.len(),
        per_id.len(),
        duplicates.len(),
        duplicates,
        unacked.len(),
        unacked
    );
    println!(
        "durability duplicates: {} (messages delivered more than once)",
        duplicates.len()
    );
    drop(gw);
    drop(up);
}
