//! The real binary on the PostgreSQL store (SPEC §11): `[store] backend =
//! "postgres"`, a server the harness starts, mail submitted over SMTP and
//! relayed to the upstream stand-in, and the admin commands reading the
//! same database from another process.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn gateway_on_postgres_relays_and_admin_commands_see_its_queue() {
    let db = common::postgres::database();
    let mut env = Env::new();
    let up = env.start_upstream(&UpstreamOpts {
        defer_rcpt: Some("later".into()),
        ..UpstreamOpts::default()
    });
    let mut conf = GatewayConf::relay(up.port);
    conf.retry_schedule = vec!["1h"];
    conf.extra_toml = format!(
        "\n[store]\nbackend = \"postgres\"\nurl = \"{}\"\npool_size = 4\nlease_time = \"10s\"\n",
        db.url()
    );
    env.write_config(&conf);
    env.add_default_user();
    let gw = env.start_gateway();

    let mut smtp = Smtp::connect_auth(gw.port(), &env.certs.ca_crt, USER, PASSWORD);
    let r = smtp.send(
        "app@example.com",
        &["eltern@example.org"],
        &simple_message("app@example.com", "eltern@example.org", "pg-delivered"),
    );
    assert!(r.is(250, "2.0.0"), "{}\n{}", r.text(), gw.log());
    let delivered_id = r.last_word();
    let r = smtp.send(
        "app@example.com",
        &["later@example.org"],
        &simple_message("app@example.com", "later@example.org", "pg-deferred"),
    );
    assert!(r.is(250, "2.0.0"), "{}", r.text());
    let queued_id = r.last_word();
    smtp.quit();

    let got = up.wait_for(1, Duration::from_secs(30));
    assert_eq!(got.len(), 1, "{}", gw.log());
    assert!(got[0].text().contains("pg-delivered"));
    assert!(
        !env.data_dir.join("queue.db").exists(),
        "nothing may go to the embedded store"
    );

    // The deferred one stays queued, and another process sees it.
    let listed = wait_until(Duration::from_secs(30), || {
        let out = env.cli(&["queue", "list"], None);
        assert!(out.status.success(), "{}", output_text(&out));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        // The delivered one leaves the list once its attempt is recorded,
        // a moment after the upstream has it.
        (text.contains(&queued_id) && text.contains("451") && !text.contains(&delivered_id))
            .then_some(text)
    })
    .unwrap_or_else(|| panic!("queue list never showed the deferred message\n{}", gw.log()));
    assert!(!listed.contains(&delivered_id), "{listed}");

    // The delivery log, through the CLI: pseudonymised, found by address.
    let out = env.cli(&["gdpr", "export", "eltern@example.org"], None);
    assert!(out.status.success(), "{}", output_text(&out));
    let export = String::from_utf8_lossy(&out.stdout);
    assert!(export.contains(&delivered_id), "{export}");
    assert!(export.contains("\"delivered\""), "{export}");
    assert!(export.contains("hmac:"), "{export}");

    let out = env.cli(&["queue", "delete", &queued_id], None);
    assert!(out.status.success(), "{}", output_text(&out));
    let out = env.cli(&["queue", "list"], None);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("queue is empty"),
        "{}",
        output_text(&out)
    );
    drop(gw);

    // An unset ${VAR} in the URL is named, for the gateway and the CLI.
    conf.extra_toml =
        "\n[store]\nbackend = \"postgres\"\nurl = \"${SCHLEUSE_TEST_UNSET_DATABASE_URL}\"\n".into();
    env.write_config(&conf);
    for args in [&["check-config"][..], &["queue", "list"][..]] {
        let out = env.cli(args, None);
        let text = output_text(&out);
        assert!(!out.status.success(), "{args:?}: {text}");
        assert!(
            text.contains("store.url") && text.contains("SCHLEUSE_TEST_UNSET_DATABASE_URL"),
            "{args:?}: {text}"
        );
    }
}
