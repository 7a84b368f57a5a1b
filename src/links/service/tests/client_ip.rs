//! The client's IP: the per-IP guess limit across links, `X-Forwarded-For`
//! only from a trusted proxy, and no IP in the log unless configured.

use super::*;

#[tokio::test]
async fn per_ip_limit_spans_links_and_trusts_the_proxy() {
    let opts = ServiceOptions {
        log_client_ip: true,
        guesses: GuessPolicy {
            per_client: 3,
            ..GuessPolicy::default()
        },
        ..ServiceOptions::default()
    };
    let server = Server::start(Fake::standard(), opts).await;
    let attacker = "X-Forwarded-For: 203.0.113.9\r\n";
    for i in 0..3 {
        assert_eq!(server.post(&link(i), "falsch", attacker).await.status, 403);
    }
    assert_eq!(server.post(&link(0), "falsch", attacker).await.status, 429);
    assert_eq!(server.fake.opens(), 3);

    // Someone else behind the same proxy is not affected; the client's
    // own (leftmost) entry is not believed.
    let other = "X-Forwarded-For: 203.0.113.9, 198.51.100.1\r\n";
    assert_eq!(server.post(&link(0), "falsch", other).await.status, 403);
    let records = server.fake.records();
    let attacker_ip: IpAddr = "203.0.113.9".parse().unwrap();
    let other_ip: IpAddr = "198.51.100.1".parse().unwrap();
    assert_eq!(records[0].2, Some(attacker_ip));
    assert_eq!(
        records[3],
        (
            "id-lnk0".into(),
            DownloadOutcome::RateLimited,
            Some(attacker_ip)
        )
    );
    assert_eq!(records[4].2, Some(other_ip));
}

#[tokio::test]
async fn forwarded_for_is_ignored_from_untrusted_peers() {
    let opts = ServiceOptions {
        trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
        log_client_ip: true,
        guesses: GuessPolicy {
            per_client: 2,
            ..GuessPolicy::default()
        },
        ..ServiceOptions::default()
    };
    let server = Server::start(Fake::standard(), opts).await;
    let spoof = |n: u8| format!("X-Forwarded-For: 192.0.2.{n}\r\n");
    assert_eq!(server.post(&link(0), "falsch", &spoof(1)).await.status, 403);
    assert_eq!(server.post(&link(1), "falsch", &spoof(2)).await.status, 403);
    assert_eq!(server.post(&link(2), "falsch", &spoof(3)).await.status, 429);
    let loopback: IpAddr = "127.0.0.1".parse().unwrap();
    assert!(server.fake.records().iter().all(|r| r.2 == Some(loopback)));
}

#[tokio::test]
async fn client_ip_is_not_logged_by_default() {
    let server = Server::standard().await;
    server.post(PROTECTED, "falsch", "").await;
    server.post(GONE, "", "").await;
    assert_eq!(
        server.fake.records(),
        vec![
            ("id-prot".to_owned(), DownloadOutcome::WrongPassword, None),
            ("id-gone".to_owned(), DownloadOutcome::Gone, None),
        ]
    );
}
