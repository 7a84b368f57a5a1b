//! What a GET shows, in German and English, and the pages for links that
//! are gone, unknown or invalid, a failing store and an oversize body.

use super::*;

#[tokio::test]
async fn pages_show_documents_and_get_never_downloads() {
    let server = Server::standard().await;

    let reply = server.get(PROTECTED).await;
    assert_eq!(reply.status, 200);
    assert_page_headers(&reply);
    let html = reply.text();
    assert!(html.contains("<html lang=\"de\">"));
    assert!(html.contains("Bescheid Müller.pdf"));
    assert!(html.contains("256 Bytes"));
    assert!(html.contains("31.12.2025"));
    assert!(html.contains("<label for=\"password\">"));
    assert!(html.contains(PASSWORD_INPUT));
    assert!(html.contains("<form method=\"post\">"));
    assert!(!html.contains(PROTECTED), "the token is not echoed");

    let html = server.get(OPEN).await.text();
    assert!(!html.contains("type=\"password\""));
    assert!(html.contains("<button type=\"submit\">Herunterladen</button>"));

    let html = server.get(NASTY).await.text();
    assert!(html.contains("&lt;b&gt;&amp;&quot;x.pdf"));
    assert!(!html.contains("<b>&"));

    let head = server
        .request("HEAD", &format!("/d/{PROTECTED}"), "", "")
        .await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());

    assert_eq!(server.fake.opens(), 0, "a GET never opens");
    assert!(server.fake.records().is_empty(), "a GET never records");
}

#[tokio::test]
async fn english_pages() {
    let opts = ServiceOptions {
        language: Language::En,
        ..ServiceOptions::default()
    };
    let server = Server::start(Fake::standard(), opts).await;
    let html = server.get(PROTECTED).await.text();
    assert!(html.contains("<html lang=\"en\">"));
    assert!(html.contains("2025-12-31"));
    assert!(html.contains(">Password</label>"));
}

#[tokio::test]
async fn gone_unknown_and_invalid() {
    let server = Server::standard().await;

    let reply = server.get(GONE).await;
    assert_eq!(reply.status, 410);
    assert_page_headers(&reply);
    assert!(
        reply
            .text()
            .contains("Dieser Link ist abgelaufen oder wurde widerrufen.")
    );
    assert!(server.fake.records().is_empty());
    assert_eq!(server.post(GONE, "", "").await.status, 410);
    assert_eq!(server.fake.opens(), 0);

    let reply = server.get(UNKNOWN).await;
    assert_eq!(reply.status, 404);
    assert_page_headers(&reply);
    assert_eq!(server.post(UNKNOWN, SECRET, "").await.status, 404);
    let lookups = server.fake.lookups.load(Ordering::SeqCst);

    let long = "A".repeat(101);
    for bad in [
        "short",
        long.as_str(),
        "prot_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.AAAA",
        "prot_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA%3CAAA",
        "prot_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA%FFAAA",
    ] {
        assert_eq!(server.get(bad).await.status, 404, "{bad}");
        assert_eq!(server.post(bad, SECRET, "").await.status, 404, "{bad}");
    }
    assert_eq!(server.fake.lookups.load(Ordering::SeqCst), lookups);

    for path in ["/", "/d/", &format!("/d/{PROTECTED}/x"), "/favicon.ico"] {
        let reply = server.request("GET", path, "", "").await;
        assert_eq!(reply.status, 404, "{path}");
        assert_page_headers(&reply);
    }
    let reply = server
        .request(
            "PUT",
            &format!("/d/{PROTECTED}"),
            "Content-Length: 0\r\n",
            "",
        )
        .await;
    assert_eq!(reply.status, 404);
    assert_eq!(server.fake.opens(), 0);
}

#[tokio::test]
async fn store_errors_give_a_500_page() {
    let server = Server::standard().await;
    let reply = server.post(BROKEN, "", "").await;
    assert_eq!(reply.status, 500);
    assert_page_headers(&reply);
    assert!(
        reply
            .text()
            .contains("Der Download ist gerade nicht möglich.")
    );
}

#[tokio::test]
async fn oversize_bodies_are_refused() {
    let server = Server::standard().await;
    let big = "x".repeat(9 * 1024);
    let reply = server.post(PROTECTED, &big, "").await;
    assert_eq!(reply.status, 413);
    assert_eq!(server.fake.opens(), 0);
    assert!(server.fake.records().is_empty());
}

#[tokio::test]
async fn serve_stops_on_shutdown() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let router = router(Arc::new(Fake::standard()), ServiceOptions::default());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, router, async {
        let _ = rx.await;
    }));
    tx.send(()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), task).await;
    assert!(matches!(result, Ok(Ok(Ok(())))));
}
