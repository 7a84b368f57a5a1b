//! Downloads behind a password: the exact bytes for the right one; wrong
//! ones refused, counted and limited per link, without locking out the
//! recipient.

use super::*;

#[tokio::test]
async fn right_password_sends_the_exact_bytes() {
    let server = Server::standard().await;
    let reply = server.post(PROTECTED, SECRET, "").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, (0..=255).collect::<Vec<u8>>());
    assert_eq!(reply.header("content-type"), Some("application/pdf"));
    assert_eq!(
        reply.header("content-disposition"),
        Some(
            "attachment; filename=\"Bescheid Mueller.pdf\"; \
             filename*=UTF-8''Bescheid%20M%C3%BCller.pdf"
        )
    );
    assert_eq!(reply.header("content-length"), Some("256"));
    assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(
        reply.header("content-security-policy"),
        Some("default-src 'none'; sandbox")
    );
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(
        server.fake.records(),
        vec![("id-prot".to_owned(), DownloadOutcome::Downloaded, None)]
    );

    // Unprotected: the button posts an empty form, or none at all.
    let reply = server.request("POST", &format!("/d/{OPEN}"), "", "").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, b"hello");
    assert_eq!(reply.header("content-type"), Some("text/plain"));
    let bare = format!(
        "POST /d/{OPEN} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    );
    assert_eq!(server.raw(bare.as_bytes()).await.status, 200);

    // A declared type that is not a plain type/subtype is not passed on.
    let reply = server.post(NASTY, "", "").await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(
        reply.header("content-disposition"),
        Some("attachment; filename=\"<b>&_x.pdf\"; filename*=UTF-8''%3Cb%3E&%22x.pdf")
    );
}

#[tokio::test]
async fn wrong_passwords_are_refused_counted_and_limited() {
    let opts = ServiceOptions {
        guesses: GuessPolicy {
            // Long enough that a loaded machine still answers the next
            // requests within it.
            backoff: Duration::from_secs(3),
            ..GuessPolicy::default()
        },
        ..ServiceOptions::default()
    };
    let server = Server::start(Fake::standard(), opts).await;

    // Four wrong, then the right one: under the limit it always works,
    // does not use up a try itself, and starts the client's count afresh.
    for _ in 0..4 {
        let reply = server.post(PROTECTED, "falsch", "").await;
        assert_eq!(reply.status, 403);
        assert_page_headers(&reply);
        let html = reply.text();
        assert!(html.contains("Das Passwort ist falsch."));
        assert!(html.contains(PASSWORD_INPUT));
    }
    assert_eq!(server.post(PROTECTED, SECRET, "").await.status, 200);
    for _ in 0..5 {
        assert_eq!(server.post(PROTECTED, "falsch", "").await.status, 403);
    }
    assert_eq!(server.fake.opens(), 10);

    // The sixth wrong one in a row: 429, and the password is not tried,
    // not even the right one.
    let reply = server.post(PROTECTED, "falsch", "").await;
    assert_eq!(reply.status, 429);
    assert_page_headers(&reply);
    let retry: u64 = reply.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=3).contains(&retry), "the first back-off: {retry}");
    assert!(
        reply
            .text()
            .contains(&format!("Bitte versuchen Sie es in {retry} Sekunde")),
        "{}",
        reply.text()
    );
    assert_eq!(server.post(PROTECTED, SECRET, "").await.status, 429);
    assert_eq!(server.fake.opens(), 10);

    let outcomes: Vec<DownloadOutcome> = server.fake.records().into_iter().map(|r| r.1).collect();
    use DownloadOutcome::*;
    let mut expected = vec![WrongPassword; 4];
    expected.push(Downloaded);
    expected.extend([WrongPassword; 5]);
    expected.extend([RateLimited, RateLimited]);
    assert_eq!(outcomes, expected);

    // After the back-off the right password works again (asking early is
    // refused and takes nothing).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match server.post(PROTECTED, SECRET, "").await.status {
            200 => break,
            429 => assert!(std::time::Instant::now() < deadline, "still refused"),
            other => panic!("{other}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_strangers_guesses_do_not_lock_out_the_recipient() {
    let server = Server::standard().await;
    let stranger = "X-Forwarded-For: 203.0.113.9\r\n";
    let recipient = "X-Forwarded-For: 198.51.100.1\r\n";
    let mut refused = 0;
    for _ in 0..12 {
        match server.post(PROTECTED, "falsch", stranger).await.status {
            403 => {}
            429 => refused += 1,
            other => panic!("stranger got {other}"),
        }
    }
    assert_eq!(refused, 7, "five tries, then the back-off");
    // Same /64 is the same client; another address is not affected.
    let reply = server.post(PROTECTED, SECRET, recipient).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

#[tokio::test]
async fn the_link_ceiling_holds_across_clients() {
    let opts = ServiceOptions {
        guesses: GuessPolicy {
            per_link: 3,
            ..GuessPolicy::default()
        },
        ..ServiceOptions::default()
    };
    let server = Server::start(Fake::standard(), opts).await;
    let from = |n: u8| format!("X-Forwarded-For: 203.0.113.{n}\r\n");
    for n in 1..=3 {
        assert_eq!(server.post(PROTECTED, "falsch", &from(n)).await.status, 403);
    }
    // A fresh client with the right password meets the ceiling (20 min
    // until the next attempt frees up), and its password is not tried.
    let reply = server.post(PROTECTED, SECRET, &from(4)).await;
    assert_eq!(reply.status, 429);
    let retry: u64 = reply.header("retry-after").unwrap().parse().unwrap();
    assert!((19 * 60..=20 * 60).contains(&retry), "{retry}");
    assert_eq!(server.fake.opens(), 3);
    // Other links are not affected.
    assert_eq!(server.post(&link(0), SECRET, &from(4)).await.status, 200);
}

#[tokio::test]
async fn a_missing_password_is_no_attempt() {
    let server = Server::standard().await;
    for _ in 0..10 {
        let reply = server.post(PROTECTED, "", "").await;
        assert_eq!(reply.status, 400);
        assert!(reply.text().contains("Bitte geben Sie das Passwort ein."));
    }
    assert_eq!(server.fake.opens(), 0);
    assert!(server.fake.records().is_empty());
    assert_eq!(server.post(PROTECTED, SECRET, "").await.status, 200);
}
