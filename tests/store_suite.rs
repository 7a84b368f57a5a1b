//! One storage test suite, run against every backend of the storage seam
//! (SPEC §11): each test below runs once on the embedded SQLite store (in a
//! temp dir) and once on PostgreSQL (a server the harness starts, a fresh
//! database per test). The lease tests at the end are PostgreSQL's alone:
//! several instances sharing one queue is what the lease is for.

mod common;

use std::sync::Arc;
use std::time::Duration;

use schleuse::store::guesses::GuessPolicy;
use schleuse::store::limits::{Ban, Counter};
use schleuse::store::postgres::{PgOptions, PostgresStore};
use schleuse::store::sqlite::SqliteStore;
use schleuse::store::suppression::{
    EventSilence, NewRelayEvent, RecipientEffect, SuppressOutcome, Suppression, SuppressionSource,
};
use schleuse::store::{
    AttemptUpdate, LimitStore, LinkState, LogStore, MessageState, NewLink, NewMessage, QueueStore,
    RecipientState, Store, StoreError, new_queue_id, now_ms,
};

/// A store under test and what keeps its data alive.
struct Backend {
    store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
    _db: Option<common::postgres::PgDb>,
}

impl Backend {
    fn sqlite() -> Backend {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path()).expect("open sqlite");
        Backend {
            store: Arc::new(store),
            _dir: Some(dir),
            _db: None,
        }
    }

    async fn postgres() -> Backend {
        let db = tokio::task::spawn_blocking(common::postgres::database)
            .await
            .expect("start PostgreSQL");
        let store = open_pg(&db, None, Duration::from_secs(120)).await;
        Backend {
            store: Arc::new(store),
            _dir: None,
            _db: Some(db),
        }
    }
}

async fn open_pg(
    db: &common::postgres::PgDb,
    instance: Option<&str>,
    lease_time: Duration,
) -> PostgresStore {
    PostgresStore::open(&PgOptions {
        url: db.url(),
        pool_size: 4,
        lease_time,
        ca_file: None,
        instance: instance.map(str::to_owned),
    })
    .await
    .expect("open PostgreSQL store")
}

/// Each test function, once per backend.
macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(&super::Backend::sqlite()).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(&super::Backend::postgres().await).await
                }
            )*
        }
    };
}

suite!(
    enqueue_due_attempts_and_final_state,
    due_serves_the_longest_waiting_first,
    clear_recipients_stay_in_clear,
    stale_attempt_is_refused,
    a_bounce_notice_is_stored_with_its_attempt_only,
    hold_release_retry_delete_flush,
    concurrent_enqueues_all_commit,
    companions_links_and_counters_commit_with_the_message,
    links_tokens_revoke_expire_purge,
    first_download_notice_once,
    deleting_a_message_revokes_its_links,
    suppression_never_shortens,
    relay_events_are_idempotent_and_pseudonymised,
    relay_events_move_recipients_on_and_queue_one_dsn,
    counters_add_up_and_windows_end,
    bans_lengthen_list_and_lift,
    gdpr_export_and_erase,
    log_retention_purges_final_messages,
    link_guesses_are_atomic_per_client_and_capped_per_link,
    event_silence_counts_deliveries_after_the_last_event,
);

fn message(recipients: &[&str]) -> NewMessage {
    NewMessage {
        id: new_queue_id(),
        account: "via".into(),
        sender: "amt@landkreis.example".into(),
        recipients: recipients.iter().map(|r| r.to_string()).collect(),
        content: b"Subject: test\r\n\r\nHallo\r\n".to_vec(),
        ..NewMessage::default()
    }
}

/// A first attempt that delivers `address`, its only recipient.
fn delivered(address: &str) -> AttemptUpdate {
    AttemptUpdate {
        expected_attempts: 0,
        recipients: vec![outcome(address, RecipientState::Delivered, "250")],
        next_attempt: None,
        error: None,
        bounce_notice: None,
    }
}

fn outcome(address: &str, state: RecipientState, reply: &str) -> (String, RecipientState, String) {
    (address.into(), state, reply.into())
}

fn link(id: &str, token_hash: &str, expires_at: i64, notify: Option<&str>) -> NewLink {
    NewLink {
        id: id.into(),
        token_hash: token_hash.into(),
        account: "via".into(),
        file_name: "Bescheid.pdf".into(),
        content_type: "application/pdf".into(),
        size: 1234,
        created_at: now_ms(),
        expires_at,
        salt: vec![7; 16],
        protected: true,
        notify_to: notify.map(str::to_owned),
    }
}

async fn enqueue_due_attempts_and_final_state(b: &Backend) {
    let s = &b.store;
    let mut m = message(&["Eltern@Example.org", "kind@example.org"]);
    // Binary-safe: every byte value, and more than one page.
    m.content.extend((0..=255u8).cycle().take(70_000));
    let content = m.content.clone();
    let id = s.enqueue(m).await.expect("enqueue");

    let due = s.due(now_ms() + 1, 10).await.expect("due");
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].id, id);
    assert_eq!(due[0].recipients.len(), 2);
    assert_eq!(due[0].recipients[0].address, "Eltern@Example.org");
    assert_eq!(s.content(&id).await.expect("content"), Some(content));
    assert!(s.next_due().await.expect("next_due").is_some());

    let state = s
        .record_attempt(
            &id,
            AttemptUpdate {
                expected_attempts: 0,
                recipients: vec![
                    outcome("Eltern@Example.org", RecipientState::Delivered, "250 ok"),
                    outcome("kind@example.org", RecipientState::Pending, "451 later"),
                ],
                next_attempt: Some(now_ms() + 60_000),
                error: Some("451 4.3.0 <kind@example.org> try later".into()),
                bounce_notice: None,
            },
        )
        .await
        .expect("first attempt");
    assert_eq!(state, MessageState::Queued);
    assert!(
        s.due(now_ms(), 10).await.expect("due").is_empty(),
        "not due yet"
    );
    s.retry(&id).await.expect("retry");
    assert_eq!(s.due(now_ms() + 1, 10).await.expect("due").len(), 1);

    let state = s
        .record_attempt(
            &id,
            AttemptUpdate {
                expected_attempts: 1,
                recipients: vec![outcome(
                    "kind@example.org",
                    RecipientState::Failed,
                    "550 5.1.1 <kind@example.org>: no such user",
                )],
                next_attempt: None,
                error: None,
                bounce_notice: None,
            },
        )
        .await
        .expect("final attempt");
    assert_eq!(state, MessageState::Bounced);
    assert_eq!(
        s.content(&id).await.expect("content"),
        None,
        "content deleted"
    );
    assert!(s.list().await.expect("list").is_empty());
    assert_eq!(s.stats().await.expect("stats").queued, 0);

    let info = s.get(&id).await.expect("get").expect("log entry stays");
    assert_eq!(info.attempts, 2);
    assert_eq!(info.state, MessageState::Bounced);
    assert_eq!(info.recipients[0].state, RecipientState::Delivered);
    assert_eq!(info.recipients[1].state, RecipientState::Failed);
    // Pseudonymised once final, also where replies quote the address.
    let text = format!("{info:?}").to_lowercase();
    assert!(!text.contains("eltern@example.org"), "{text}");
    assert!(!text.contains("kind@example.org"), "{text}");
    assert!(
        info.recipients
            .iter()
            .all(|r| r.address.starts_with("hmac:"))
    );

    // ... and still found by the address (gdpr export hashes it).
    let records = s
        .subject_records("KIND@example.org")
        .await
        .expect("subject");
    assert_eq!(records.messages.len(), 1);
    assert_eq!(records.messages[0].attempts.len(), 2);
    assert_eq!(records.messages[0].recipient_state, "failed");
    assert!(
        !format!("{records:?}")
            .to_lowercase()
            .contains("kind@example.org>"),
        "replies scrubbed"
    );
}

/// A retry comes in turn by when it fell due, not by when the message was
/// accepted: otherwise, with more due than one round takes, old messages that
/// keep failing would hold back every newer one.
async fn due_serves_the_longest_waiting_first(b: &Backend) {
    let s = &b.store;
    let old = s
        .enqueue(message(&["a@example.org"]))
        .await
        .expect("enqueue");
    assert_eq!(
        ids(&s.due(now_ms() + 1, 10).await.expect("due")),
        std::slice::from_ref(&old)
    );
    // Well ahead: the two enqueued below must fall due before it even if
    // a busy machine takes seconds over these commits.
    let retry_at = now_ms() + 60_000;
    s.record_attempt(
        &old,
        AttemptUpdate {
            expected_attempts: 0,
            recipients: vec![outcome(
                "a@example.org",
                RecipientState::Pending,
                "451 later",
            )],
            next_attempt: Some(retry_at),
            error: Some("451 4.3.0 try later".into()),
            bounce_notice: None,
        },
    )
    .await
    .expect("deferral");
    let newer = s
        .enqueue(message(&["b@example.org"]))
        .await
        .expect("enqueue");
    let newest = s
        .enqueue(message(&["c@example.org"]))
        .await
        .expect("enqueue");
    assert_eq!(
        ids(&s.due(retry_at + 1, 2).await.expect("due")),
        [newer, newest],
        "the two that waited longest"
    );
}

async fn clear_recipients_stay_in_clear(b: &Backend) {
    let s = &b.store;
    s.set_clear_recipients(true);
    let id = s
        .enqueue(message(&["a@example.org"]))
        .await
        .expect("enqueue");
    s.record_attempt(&id, delivered("a@example.org"))
        .await
        .expect("attempt");
    let info = s.get(&id).await.expect("get").expect("row");
    assert_eq!(info.state, MessageState::Delivered);
    assert_eq!(info.recipients[0].address, "a@example.org");
}

async fn stale_attempt_is_refused(b: &Backend) {
    let s = &b.store;
    let id = s
        .enqueue(message(&["a@example.org"]))
        .await
        .expect("enqueue");
    s.due(now_ms() + 1, 10).await.expect("due");
    let deferred = AttemptUpdate {
        expected_attempts: 0,
        recipients: vec![outcome("a@example.org", RecipientState::Pending, "451")],
        next_attempt: Some(now_ms()),
        error: Some("451".into()),
        bounce_notice: None,
    };
    s.record_attempt(&id, deferred.clone())
        .await
        .expect("first");
    assert!(matches!(
        s.record_attempt(&id, deferred).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(s.get(&id).await.expect("get").expect("row").attempts, 1);
    assert!(matches!(
        s.record_attempt(
            "nosuchid",
            AttemptUpdate {
                expected_attempts: 0,
                recipients: Vec::new(),
                next_attempt: None,
                error: None,
                bounce_notice: None,
            }
        )
        .await,
        Err(StoreError::NotFound(_))
    ));
}

/// The DSN commits with the attempt that produced it: a refused (stale)
/// attempt leaves no notice behind, so a message taken over by another
/// instance is not bounced twice.
async fn a_bounce_notice_is_stored_with_its_attempt_only(b: &Backend) {
    let s = &b.store;
    let id = s
        .enqueue(message(&["gone@example.org", "later@example.org"]))
        .await
        .expect("enqueue");
    s.due(now_ms() + 1, 10).await.expect("due");
    let notice = |marker: &str| NewMessage {
        id: new_queue_id(),
        sender: String::new(),
        recipients: vec!["app@example.com".into()],
        content: format!("Subject: {marker}\r\n\r\nbounce\r\n").into_bytes(),
        ..NewMessage::default()
    };
    let attempt = |dsn: NewMessage| AttemptUpdate {
        expected_attempts: 0,
        recipients: vec![
            outcome(
                "gone@example.org",
                RecipientState::Failed,
                "550 5.1.1 no such user",
            ),
            outcome("later@example.org", RecipientState::Pending, "451 later"),
        ],
        next_attempt: Some(now_ms() + 60_000),
        error: Some("451 later".into()),
        bounce_notice: Some(dsn),
    };
    let first = notice("first");
    s.record_attempt(&id, attempt(first.clone()))
        .await
        .expect("recorded");
    let stored = s.get(&first.id).await.expect("get").expect("notice stored");
    assert_eq!(stored.state, MessageState::Queued);
    assert_eq!(stored.sender, "");
    assert_eq!(
        s.content(&first.id).await.expect("content"),
        Some(first.content.clone())
    );

    let second = notice("second");
    assert!(matches!(
        s.record_attempt(&id, attempt(second.clone())).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(
        s.get(&second.id).await.expect("get").is_none(),
        "a refused attempt queues no notice"
    );
    assert_eq!(s.stats().await.expect("stats").queued, 2);
}

async fn hold_release_retry_delete_flush(b: &Backend) {
    let s = &b.store;
    let a = s
        .enqueue(message(&["a@example.org"]))
        .await
        .expect("enqueue");
    let c = s
        .enqueue(message(&["c@example.org"]))
        .await
        .expect("enqueue");
    let mut held = message(&["h@example.org"]);
    held.held = true;
    let h = s.enqueue(held).await.expect("enqueue held");
    let stats = s.stats().await.expect("stats");
    assert_eq!((stats.queued, stats.held), (2, 1));
    assert!(stats.oldest_queued_at.is_some());

    s.hold(&a).await.expect("hold");
    assert!(matches!(
        s.hold(&a).await,
        Err(StoreError::WrongState { .. })
    ));
    assert!(matches!(
        s.retry(&a).await,
        Err(StoreError::WrongState { .. })
    ));
    let due: Vec<String> = s
        .due(now_ms() + 1, 10)
        .await
        .expect("due")
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(due, vec![c.clone()], "held ones are not due");
    s.release(&a).await.expect("release");
    assert!(matches!(
        s.release(&a).await,
        Err(StoreError::WrongState { .. })
    ));
    s.release(&h).await.expect("release the one enqueued held");
    let listed: Vec<String> = s
        .list()
        .await
        .expect("list")
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(
        listed,
        vec![a.clone(), c.clone(), h.clone()],
        "oldest first"
    );

    // Put both off, then flush makes every queued one due again.
    for id in [&a, &c, &h] {
        let m = s.get(id).await.expect("get").expect("row");
        s.record_attempt(
            id,
            AttemptUpdate {
                expected_attempts: m.attempts,
                recipients: Vec::new(),
                next_attempt: Some(now_ms() + 3_600_000),
                error: Some("451".into()),
                bounce_notice: None,
            },
        )
        .await
        .expect("defer");
    }
    assert!(s.due(now_ms(), 10).await.expect("due").is_empty());
    assert_eq!(s.flush().await.expect("flush"), 3);
    assert_eq!(s.due(now_ms() + 1, 10).await.expect("due").len(), 3);

    s.delete(&c).await.expect("delete");
    assert!(s.get(&c).await.expect("get").is_none());
    assert!(s.content(&c).await.expect("content").is_none());
    assert!(matches!(s.delete(&c).await, Err(StoreError::NotFound(_))));
    assert!(matches!(s.hold("nope").await, Err(StoreError::NotFound(_))));
    s.ping().await.expect("ping");
    s.ping().await.expect("ping again");
}

async fn concurrent_enqueues_all_commit(b: &Backend) {
    let mut tasks = Vec::new();
    for n in 0..40 {
        let s = Arc::clone(&b.store);
        tasks.push(tokio::spawn(async move {
            let mut m = message(&[&format!("r{n}@example.org")]);
            m.counters = vec![Counter {
                key: "acct-msg-d:via:1".into(),
                until: i64::MAX,
                add: 1,
            }];
            s.enqueue(m).await
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.expect("join").expect("enqueue"));
    }
    let listed = b.store.list().await.expect("list");
    assert_eq!(listed.len(), 40);
    for id in &ids {
        assert!(b.store.content(id).await.expect("content").is_some());
    }
    let n = b
        .store
        .counters(vec!["acct-msg-d:via:1".into()], now_ms())
        .await
        .expect("counters");
    assert_eq!(n, vec![40], "every concurrent enqueue counted");
}

async fn companions_links_and_counters_commit_with_the_message(b: &Backend) {
    let s = &b.store;
    let mut m = message(&["a@example.org"]);
    m.links = vec![link("lnk1", "hash1", now_ms() + 86_400_000, None)];
    m.note = Some("pii: iban".into());
    m.companions = vec![message(&["staff@landkreis.example"])];
    let companion = m.companions[0].id.clone();
    m.counters = vec![
        Counter {
            key: "acct-msg-h:via:9".into(),
            until: now_ms() + 3_600_000,
            add: 1,
        },
        Counter {
            key: "acct-rcpt-d:via:9".into(),
            until: now_ms() + 3_600_000,
            add: 1,
        },
    ];
    let id = s.enqueue(m).await.expect("enqueue");
    let l = s
        .link_by_token("hash1")
        .await
        .expect("link")
        .expect("exists");
    assert_eq!(l.message_id, id);
    assert_eq!(l.state, LinkState::Active);
    assert_eq!(l.salt, vec![7; 16]);
    assert!(l.protected);
    assert!(s.get(&companion).await.expect("get").is_some());
    let info = s.get(&id).await.expect("get").expect("row");
    assert_eq!(info.note.as_deref(), Some("pii: iban"));
    let counts = s
        .counters(
            vec![
                "acct-rcpt-d:via:9".into(),
                "acct-msg-h:via:9".into(),
                "none".into(),
            ],
            now_ms(),
        )
        .await
        .expect("counters");
    assert_eq!(counts, vec![1, 1, 0], "in the order asked");
}

async fn links_tokens_revoke_expire_purge(b: &Backend) {
    let s = &b.store;
    let mut m = message(&["a@example.org"]);
    let now = now_ms();
    m.links = vec![
        link("keep", "h-keep", now + 86_400_000, None),
        link("revoke", "h-revoke", now + 86_400_000, None),
        link("expire", "h-expire", now - 1, None),
    ];
    s.enqueue(m).await.expect("enqueue");
    assert_eq!(s.links(false).await.expect("links").len(), 3);
    let mut active = s.active_link_ids().await.expect("active");
    active.sort();
    assert_eq!(active, vec!["expire", "keep", "revoke"]);

    s.revoke_link("revoke").await.expect("revoke");
    s.revoke_link("revoke")
        .await
        .expect("revoking again is done already");
    assert!(matches!(
        s.revoke_link("nope").await,
        Err(StoreError::LinkNotFound(_))
    ));
    let tomb = s
        .link_by_token("h-revoke")
        .await
        .expect("by token")
        .expect("tombstone answers 410");
    assert_eq!(tomb.state, LinkState::Revoked);
    assert!(tomb.file_name.is_empty() && tomb.salt.is_empty());

    assert_eq!(
        s.expire_links(now_ms()).await.expect("expire"),
        vec!["expire"]
    );
    assert!(s.expire_links(now_ms()).await.expect("again").is_empty());
    let expired = s
        .link_by_token("h-expire")
        .await
        .expect("get")
        .expect("row");
    assert_eq!(expired.state, LinkState::Expired);
    assert_eq!(s.links(false).await.expect("active").len(), 1);
    assert_eq!(s.links(true).await.expect("all").len(), 3);
    assert_eq!(s.active_link_ids().await.expect("active"), vec!["keep"]);

    s.record_download("keep", "downloaded", Some("192.0.2.1".into()))
        .await
        .expect("download");
    // Tombstones ended before the cut go; downloads before it too.
    assert_eq!(s.purge_links(now_ms() + 1).await.expect("purge"), 3);
    assert!(s.link_by_token("h-revoke").await.expect("get").is_none());
    assert!(s.link_by_token("h-keep").await.expect("get").is_some());
}

async fn first_download_notice_once(b: &Backend) {
    let s = &b.store;
    let mut m = message(&["a@example.org"]);
    m.links = vec![
        link(
            "notify",
            "h-n",
            now_ms() + 86_400_000,
            Some("staff@landkreis.example"),
        ),
        link("quiet", "h-q", now_ms() + 86_400_000, None),
    ];
    let id = s.enqueue(m).await.expect("enqueue");
    assert_eq!(
        s.record_download("notify", "wrong-password", None)
            .await
            .expect("fail"),
        None
    );
    let notice = s
        .record_download("notify", "downloaded", None)
        .await
        .expect("first")
        .expect("a notice on the first download");
    assert_eq!(notice.message_id, id);
    assert_eq!(notice.notify_to, "staff@landkreis.example");
    assert_eq!(notice.file_name, "Bescheid.pdf");
    assert_eq!(
        s.record_download("notify", "downloaded", None)
            .await
            .expect("second"),
        None
    );
    assert_eq!(
        s.record_download("quiet", "downloaded", None)
            .await
            .expect("quiet"),
        None
    );
    let l = s.link_by_token("h-n").await.expect("get").expect("row");
    assert_eq!(l.downloads, 2);
    assert!(l.first_download_at.is_some());
}

async fn deleting_a_message_revokes_its_links(b: &Backend) {
    let s = &b.store;
    let mut m = message(&["a@example.org"]);
    m.links = vec![link("gone", "h-gone", now_ms() + 86_400_000, None)];
    let id = s.enqueue(m).await.expect("enqueue");
    s.delete(&id).await.expect("delete");
    let l = s
        .link_by_token("h-gone")
        .await
        .expect("get")
        .expect("tombstone");
    assert_eq!(l.state, LinkState::Revoked);
    assert!(s.active_link_ids().await.expect("active").is_empty());
}

fn entry(address: &str, expires_at: Option<i64>) -> Suppression {
    Suppression {
        address: address.into(),
        source: SuppressionSource::Upstream,
        reason: "upstream 550 5.1.1".into(),
        detail: Some("550 5.1.1 no such user".into()),
        created_at: now_ms(),
        expires_at,
    }
}

async fn suppression_never_shortens(b: &Backend) {
    let s = &b.store;
    let now = now_ms();
    let long = entry("Eltern@Example.org", Some(now + 100_000));
    assert_eq!(
        s.suppress(long.clone(), false).await.expect("add"),
        SuppressOutcome::Added
    );
    let found = s
        .suppressed(" <ELTERN@example.org>", now)
        .await
        .expect("lookup")
        .expect("active");
    assert_eq!(found.address, "eltern@example.org");
    assert_eq!(found.expires_at, Some(now + 100_000));
    let shorter = entry("eltern@example.org", Some(now + 1_000));
    assert_eq!(
        s.suppress(shorter.clone(), false).await.expect("kept"),
        SuppressOutcome::Kept
    );
    assert_eq!(
        s.suppressed("eltern@example.org", now)
            .await
            .expect("lookup")
            .and_then(|e| e.expires_at),
        Some(now + 100_000),
        "never shortened"
    );
    let permanent = entry("eltern@example.org", None);
    assert_eq!(
        s.suppress(permanent, false).await.expect("renew"),
        SuppressOutcome::Renewed
    );
    assert_eq!(
        s.suppress(long, false).await.expect("kept"),
        SuppressOutcome::Kept
    );
    assert_eq!(
        s.suppress(shorter, true).await.expect("admin replaces"),
        SuppressOutcome::Renewed
    );
    assert!(
        s.suppressed("eltern@example.org", now + 2_000)
            .await
            .expect("lookup")
            .is_none(),
        "expired entries do not suppress"
    );
    // An expired entry is replaced as a new one.
    s.suppress(entry("old@example.org", Some(now - 1)), false)
        .await
        .expect("add expired");
    assert_eq!(
        s.suppress(entry("old@example.org", Some(now + 50_000)), false)
            .await
            .expect("re-add"),
        SuppressOutcome::Added
    );
    s.suppress(entry("gone@example.org", Some(now - 1)), false)
        .await
        .expect("add expired");
    let active = s.suppressions(now).await.expect("list");
    assert_eq!(active.len(), 2);
    assert_eq!(s.purge_suppressions(now, 0).await.expect("purge"), (1, 0));
    assert!(s.unsuppress("ELTERN@example.org").await.expect("remove"));
    assert!(!s.unsuppress("eltern@example.org").await.expect("gone"));
}

async fn relay_events_are_idempotent_and_pseudonymised(b: &Backend) {
    let s = &b.store;
    let id = s
        .enqueue(message(&["kind@example.org"]))
        .await
        .expect("enqueue");
    let ev = NewRelayEvent {
        key: "k1".into(),
        event: "bounce".into(),
        at: now_ms(),
        custom_id: Some(id.clone()),
        relay_message_id: Some("123".into()),
        recipient: "Kind@Example.org".into(),
        detail: Some("user unknown <kind@example.org>".into()),
        effect: None,
    };
    let sup = entry("kind@example.org", Some(now_ms() + 100_000));
    let first = s
        .record_relay_event(ev.clone(), Some(sup.clone()))
        .await
        .expect("first");
    assert!(first.new && first.matched);
    assert_eq!(first.suppression, Some(SuppressOutcome::Added));
    s.unsuppress("kind@example.org").await.expect("remove");
    let again = s
        .record_relay_event(ev.clone(), Some(sup))
        .await
        .expect("retried batch");
    assert!(!again.new && again.suppression.is_none());
    assert!(
        s.suppressed("kind@example.org", now_ms())
            .await
            .expect("lookup")
            .is_none(),
        "a known event is not applied again"
    );
    let foreign = NewRelayEvent {
        key: "k2".into(),
        custom_id: Some("someone-elses".into()),
        ..ev
    };
    assert!(
        !s.record_relay_event(foreign, None)
            .await
            .expect("foreign")
            .matched
    );

    let found = s
        .suppression_subject("kind@example.org")
        .await
        .expect("subject");
    assert_eq!(found.relay_events.len(), 2);
    assert_eq!(
        found.relay_events[0].message_id.as_deref(),
        Some(id.as_str())
    );
    let text = format!("{:?}", found.relay_events).to_lowercase();
    assert!(!text.contains("kind@example.org"), "{text}");
    let erased = s
        .erase_suppression_subject("kind@example.org")
        .await
        .expect("erase");
    assert_eq!((erased.entries, erased.relay_events), (0, 2));
    s.record_relay_event(
        NewRelayEvent {
            key: "k3".into(),
            event: "sent".into(),
            at: 1,
            custom_id: None,
            relay_message_id: None,
            recipient: "x@example.org".into(),
            detail: None,
            effect: None,
        },
        None,
    )
    .await
    .expect("old event");
    assert_eq!(
        s.purge_suppressions(now_ms(), now_ms() + 1)
            .await
            .expect("purge"),
        (0, 1)
    );
}

async fn relay_events_move_recipients_on_and_queue_one_dsn(b: &Backend) {
    let s = &b.store;
    let mut msg = message(&["Kind@Example.org", "schule@example.org"]);
    msg.dsn_to = Some("anna@landkreis.example".into());
    let id = s.enqueue(msg).await.expect("enqueue");
    let info = s.get(&id).await.expect("get").expect("stored");
    assert_eq!(info.dsn_to.as_deref(), Some("anna@landkreis.example"));
    s.due(now_ms() + 1, 10).await.expect("due");
    s.record_attempt(
        &id,
        AttemptUpdate {
            expected_attempts: 0,
            recipients: vec![
                outcome("Kind@Example.org", RecipientState::Delivered, "250 ok"),
                outcome("schule@example.org", RecipientState::Delivered, "250 ok"),
            ],
            next_attempt: None,
            error: None,
            bounce_notice: None,
        },
    )
    .await
    .expect("delivered");
    let notice = |marker: &str| NewMessage {
        id: new_queue_id(),
        recipients: vec!["anna@landkreis.example".into()],
        content: format!("Subject: {marker}\r\n\r\nbounce\r\n").into_bytes(),
        ..NewMessage::default()
    };
    let event =
        |key: &str, kind: &str, rcpt: &str, state: RecipientState, dsn: Option<NewMessage>| {
            NewRelayEvent {
                key: key.into(),
                event: kind.into(),
                at: now_ms(),
                custom_id: Some(id.clone()),
                relay_message_id: Some("1".into()),
                recipient: rcpt.into(),
                detail: None,
                effect: Some(RecipientEffect {
                    state,
                    reply: format!("relay: {kind} <{rcpt}>"),
                    notice: dsn,
                }),
            }
        };
    let state_of = |info: &schleuse::store::MessageInfo, n: usize| info.recipients[n].state;

    let sent = s
        .record_relay_event(
            event("e1", "sent", "kind@example.org", RecipientState::Sent, None),
            None,
        )
        .await
        .expect("sent");
    assert_eq!(sent.changed, Some(RecipientState::Sent));
    let first = notice("first");
    let bounce = s
        .record_relay_event(
            event(
                "e2",
                "bounce",
                "KIND@example.org",
                RecipientState::Bounced,
                Some(first.clone()),
            ),
            None,
        )
        .await
        .expect("bounce");
    assert_eq!(bounce.changed, Some(RecipientState::Bounced));
    assert_eq!(bounce.notice.as_deref(), Some(first.id.as_str()));
    let info = s.get(&id).await.expect("get").expect("kept");
    assert_eq!(info.state, MessageState::Bounced);
    assert_eq!(state_of(&info, 0), RecipientState::Bounced);
    assert_eq!(state_of(&info, 1), RecipientState::Delivered);
    let reply = info.recipients[0].reply.clone().unwrap_or_default();
    assert!(reply.starts_with("relay: bounce"), "{reply}");
    assert!(
        !reply.to_lowercase().contains("kind@example.org"),
        "pseudonymised: {reply}"
    );

    // Mailjet repeats the bounce as a new event, and a late `sent` arrives:
    // neither changes anything nor queues a second notice.
    let second = notice("second");
    let again = s
        .record_relay_event(
            event(
                "e3",
                "bounce",
                "kind@example.org",
                RecipientState::Bounced,
                Some(second.clone()),
            ),
            None,
        )
        .await
        .expect("again");
    assert!(again.new && again.matched);
    assert_eq!((again.changed, again.notice), (None, None));
    assert!(s.get(&second.id).await.expect("get").is_none());
    let late = s
        .record_relay_event(
            event("e4", "sent", "kind@example.org", RecipientState::Sent, None),
            None,
        )
        .await
        .expect("late sent");
    assert_eq!(late.changed, None);
    let blocked = notice("blocked");
    let other = s
        .record_relay_event(
            event(
                "e5",
                "blocked",
                "schule@example.org",
                RecipientState::Blocked,
                Some(blocked.clone()),
            ),
            None,
        )
        .await
        .expect("blocked");
    assert_eq!(other.changed, Some(RecipientState::Blocked));
    let info = s.get(&id).await.expect("get").expect("kept");
    assert_eq!(state_of(&info, 0), RecipientState::Bounced);
    assert_eq!(state_of(&info, 1), RecipientState::Blocked);
    let queued: Vec<String> = s
        .list()
        .await
        .expect("list")
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(queued, [first.id.clone(), blocked.id.clone()]);

    // An event for a message that was never handed over changes nothing.
    let pending = s
        .enqueue(message(&["wartet@example.org"]))
        .await
        .expect("enqueue");
    let early = s
        .record_relay_event(
            NewRelayEvent {
                custom_id: Some(pending.clone()),
                ..event(
                    "e6",
                    "bounce",
                    "wartet@example.org",
                    RecipientState::Bounced,
                    Some(notice("x")),
                )
            },
            None,
        )
        .await
        .expect("early");
    assert!(early.matched);
    assert_eq!((early.changed, early.notice), (None, None));
}

async fn counters_add_up_and_windows_end(b: &Backend) {
    let s = &b.store;
    let now = now_ms();
    let add = |key: &str, until: i64, n: u64| Counter {
        key: key.into(),
        until,
        add: n,
    };
    for _ in 0..3 {
        let mut m = message(&["a@example.org", "b@example.org"]);
        m.counters = vec![
            add("acct-msg-h:via:1", now + 10_000, 1),
            add("acct-rcpt-d:via:1", now + 10_000, 2),
            add("acct-msg-d:via:0", now + 1_000, 1),
        ];
        s.enqueue(m).await.expect("enqueue");
    }
    let keys = vec![
        "acct-msg-h:via:1".to_string(),
        "acct-rcpt-d:via:1".to_string(),
        "acct-msg-d:via:0".to_string(),
    ];
    assert_eq!(
        s.counters(keys.clone(), now).await.expect("now"),
        vec![3, 6, 3]
    );
    assert_eq!(
        s.counters(keys.clone(), now + 5_000).await.expect("later"),
        vec![3, 6, 0],
        "an ended window counts nothing"
    );
    // Ended windows go; hourly ones stay for the anomaly baseline.
    assert_eq!(
        s.purge_limits(now + 20_000, 60_000).await.expect("purge"),
        2
    );
    assert_eq!(
        s.counters(keys.clone(), i64::MIN)
            .await
            .expect("after purge"),
        vec![3, 0, 0]
    );
    assert_eq!(
        s.purge_limits(now + 100_000, 60_000).await.expect("purge"),
        1
    );
}

async fn bans_lengthen_list_and_lift(b: &Backend) {
    let s = &b.store;
    let now = now_ms();
    let ban = |ip: &str, until: i64| Ban {
        ip: ip.into(),
        created_at: now,
        until,
        reason: "10 failed logins".into(),
    };
    s.ban(ban("192.0.2.1", now + 10_000)).await.expect("ban");
    s.ban(ban("192.0.2.1", now + 5_000)).await.expect("shorter");
    assert_eq!(
        s.banned("192.0.2.1", now)
            .await
            .expect("banned")
            .map(|b| b.until),
        Some(now + 10_000),
        "a ban is never shortened"
    );
    s.ban(ban("192.0.2.2", now + 60_000)).await.expect("ban");
    s.ban(ban("192.0.2.3", now - 1)).await.expect("ended");
    let ips: Vec<String> = s
        .bans(now)
        .await
        .expect("list")
        .into_iter()
        .map(|b| b.ip)
        .collect();
    assert_eq!(ips, vec!["192.0.2.2", "192.0.2.1"], "longest-lasting first");
    assert!(
        s.banned("192.0.2.1", now + 10_000)
            .await
            .expect("ended")
            .is_none()
    );
    assert!(s.unban("192.0.2.2").await.expect("unban"));
    assert!(!s.unban("192.0.2.2").await.expect("again"));
    assert_eq!(s.purge_limits(now, 0).await.expect("purge"), 1);
}

async fn gdpr_export_and_erase(b: &Backend) {
    let s = &b.store;
    // A final message to the subject alone, a queued one to them and
    // someone else, a queued one to them alone (with a document).
    let fin = s
        .enqueue(message(&["subject@example.org"]))
        .await
        .expect("enqueue");
    s.record_attempt(&fin, delivered("subject@example.org"))
        .await
        .expect("deliver");
    let shared = s
        .enqueue(message(&["other@example.org", "Subject@Example.org"]))
        .await
        .expect("enqueue");
    // A deferral whose reply quotes the subject's address as given.
    let quoted = "451 4.2.0 <Subject@Example.org>: mailbox busy";
    s.record_attempt(
        &shared,
        AttemptUpdate {
            expected_attempts: 0,
            recipients: vec![
                outcome(
                    "other@example.org",
                    RecipientState::Pending,
                    "451 4.2.0 later",
                ),
                outcome("Subject@Example.org", RecipientState::Pending, quoted),
            ],
            next_attempt: Some(now_ms() + 60_000),
            error: Some(quoted.into()),
            bounce_notice: None,
        },
    )
    .await
    .expect("defer");
    let mut alone = message(&["subject@example.org"]);
    alone.links = vec![link("doc", "h-doc", now_ms() + 86_400_000, None)];
    let alone = s.enqueue(alone).await.expect("enqueue");
    s.record_download("doc", "downloaded", None)
        .await
        .expect("download");

    let records = s
        .subject_records("subject@example.org")
        .await
        .expect("export");
    assert!(records.pseudonym.starts_with("hmac:"));
    let mut ids: Vec<&str> = records.messages.iter().map(|m| m.id.as_str()).collect();
    ids.sort();
    let mut want = vec![fin.as_str(), shared.as_str(), alone.as_str()];
    want.sort();
    assert_eq!(ids, want);
    assert_eq!(records.downloads.len(), 1);

    let erased = s.erase_subject("subject@example.org").await.expect("erase");
    assert_eq!(erased.recipients, 3);
    assert_eq!(erased.log_entries, 1);
    assert_eq!(erased.queued_deleted, vec![alone.clone()]);
    assert_eq!(erased.queued_kept, vec![shared.clone()]);
    assert_eq!(erased.links_revoked, vec!["doc".to_string()]);
    assert_eq!(erased.downloads, 1);
    assert!(s.get(&fin).await.expect("get").is_none());
    assert!(s.get(&alone).await.expect("get").is_none());
    let kept = s.get(&shared).await.expect("get").expect("kept");
    assert_eq!(kept.recipients.len(), 1);
    assert_eq!(kept.recipients[0].address, "other@example.org");
    // Nothing kept quotes the erased address any more.
    let last_error = kept.last_error.clone().unwrap_or_default();
    assert!(!last_error.contains("Subject@Example.org"), "{last_error}");
    assert!(last_error.contains("[erased]"), "{last_error}");
    let others = s
        .subject_records("other@example.org")
        .await
        .expect("export");
    let replies = format!("{:?}", others.messages);
    assert!(
        !replies.to_ascii_lowercase().contains("subject@example.org"),
        "{replies}"
    );
    assert!(
        s.subject_records("subject@example.org")
            .await
            .expect("export")
            .messages
            .is_empty()
    );
}

async fn log_retention_purges_final_messages(b: &Backend) {
    let s = &b.store;
    assert_eq!(s.oldest_record().await.expect("oldest"), None);
    let id = s
        .enqueue(message(&["a@example.org"]))
        .await
        .expect("enqueue");
    let queued = s
        .enqueue(message(&["b@example.org"]))
        .await
        .expect("enqueue");
    s.record_attempt(&id, delivered("a@example.org"))
        .await
        .expect("deliver");
    let oldest = s.oldest_record().await.expect("oldest").expect("one");
    assert!(oldest <= now_ms());
    assert_eq!(s.purge_log(oldest).await.expect("nothing older"), 0);
    assert_eq!(s.purge_log(now_ms() + 1).await.expect("purge"), 1);
    assert!(s.get(&id).await.expect("get").is_none());
    assert!(
        s.get(&queued).await.expect("get").is_some(),
        "queued mail stays"
    );
}

/// Waits (bounded) until the clock has passed `ms`, so the next timestamp
/// the store takes is later.
async fn after(ms: i64) {
    for _ in 0..1000 {
        if now_ms() > ms {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("the clock stands still");
}

async fn event_silence_counts_deliveries_after_the_last_event(b: &Backend) {
    let s = &b.store;
    let silence = |since: i64| async move { s.event_silence(since).await.expect("silence") };
    assert_eq!(silence(0).await, EventSilence::default());
    s.enqueue(message(&["queued@example.org"]))
        .await
        .expect("enqueue");
    assert_eq!(
        silence(0).await.unanswered_since,
        None,
        "queued is not relayed"
    );

    let id = s
        .enqueue(message(&["a@example.org"]))
        .await
        .expect("enqueue");
    s.record_attempt(&id, delivered("a@example.org"))
        .await
        .expect("deliver");
    let first = silence(0).await;
    assert_eq!(first.last_event_at, None);
    let finished = first.unanswered_since.expect("a delivery and no event");
    assert!(finished <= now_ms());
    assert_eq!(
        silence(finished).await.unanswered_since,
        None,
        "with no event ever, only deliveries after no_event_since count"
    );

    after(finished).await;
    let sent = NewRelayEvent {
        key: "sent-1".into(),
        event: "sent".into(),
        at: now_ms(),
        custom_id: Some(id.clone()),
        relay_message_id: None,
        recipient: "a@example.org".into(),
        detail: None,
        effect: None,
    };
    s.record_relay_event(sent, None).await.expect("event");
    let answered = silence(0).await;
    let event_at = answered.last_event_at.expect("the event");
    assert!(event_at > finished);
    assert_eq!(answered.unanswered_since, None);
    assert_eq!(
        silence(now_ms() + 1).await,
        answered,
        "an event overrides the start"
    );

    after(event_at).await;
    let bounced = s
        .enqueue(message(&["b@example.org"]))
        .await
        .expect("enqueue");
    let mut refused = delivered("b@example.org");
    refused.recipients = vec![outcome("b@example.org", RecipientState::Failed, "550")];
    s.record_attempt(&bounced, refused).await.expect("bounce");
    assert_eq!(
        silence(0).await.unanswered_since,
        None,
        "refused mail is not relayed"
    );
    let later = s
        .enqueue(message(&["c@example.org"]))
        .await
        .expect("enqueue");
    s.record_attempt(&later, delivered("c@example.org"))
        .await
        .expect("deliver");
    let again = silence(0).await;
    assert_eq!(again.last_event_at, Some(event_at));
    assert!(again.unanswered_since.expect("unanswered again") > event_at);
}

// ---------------------------------------------------------------------------
// PostgreSQL only: several instances, one queue.

async fn link_guesses_are_atomic_per_client_and_capped_per_link(b: &Backend) {
    let s = &b.store;
    let policy = GuessPolicy {
        free: 5,
        per_link: 8,
        ..GuessPolicy::default()
    };
    let now = now_ms();
    // Twenty parallel guesses from one client get its five tries, no more.
    let takes: Vec<_> = (0..20)
        .map(|_| {
            let s = Arc::clone(s);
            tokio::spawn(async move { s.take_guess("lnk1", "203.0.113.9", policy, now).await })
        })
        .collect();
    let mut taken = 0;
    for t in takes {
        match t.await.expect("task").expect("take") {
            Ok(()) => taken += 1,
            Err(wait) => assert_eq!(wait, Duration::from_secs(60), "the first back-off"),
        }
    }
    assert_eq!(taken, 5);
    // Another client is not locked out, and its right password hands the
    // attempt back (the link's ceiling keeps its room).
    for _ in 0..3 {
        s.take_guess("lnk1", "198.51.100.1", policy, now)
            .await
            .expect("take")
            .expect("another client");
        s.give_back_guess("lnk1", "198.51.100.1", policy)
            .await
            .expect("give back");
    }
    // Eight wrong an hour from all clients together: three more fit.
    for client in ["192.0.2.1", "192.0.2.2", "192.0.2.3"] {
        s.take_guess("lnk1", client, policy, now)
            .await
            .expect("take")
            .expect("under the ceiling");
    }
    let wait = s
        .take_guess("lnk1", "192.0.2.4", policy, now)
        .await
        .expect("take")
        .expect_err("the ceiling");
    assert_eq!(wait, Duration::from_millis(3_600_000 / 8));
    // Other links have their own budgets.
    s.take_guess("lnk2", "192.0.2.4", policy, now)
        .await
        .expect("take")
        .expect("another link");
    // Rows go once they limit nothing any more, and only then.
    s.purge_guesses(now).await.expect("purge");
    assert!(
        s.take_guess("lnk1", "192.0.2.5", policy, now)
            .await
            .expect("take")
            .is_err(),
        "the purge lifted the ceiling"
    );
    let later = now + 3 * 3_600_000;
    assert!(s.purge_guesses(later).await.expect("purge") > 0);
    s.take_guess("lnk1", "192.0.2.4", policy, later)
        .await
        .expect("take")
        .expect("an hour later");
}

fn ids(v: &[schleuse::store::MessageInfo]) -> Vec<String> {
    v.iter().map(|m| m.id.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_instances_never_get_the_same_message() {
    let db = tokio::task::spawn_blocking(common::postgres::database)
        .await
        .expect("database");
    let a = Arc::new(open_pg(&db, None, Duration::from_secs(60)).await);
    let b = Arc::new(open_pg(&db, None, Duration::from_secs(60)).await);
    assert_ne!(a.instance(), b.instance());
    let mut all = Vec::new();
    for _ in 0..60 {
        all.push(
            a.enqueue(message(&["x@example.org"]))
                .await
                .expect("enqueue"),
        );
    }
    // Both instances ask at the same time, repeatedly, in small batches.
    // Like the scheduler, each asks for what it has in flight plus a few:
    // its own leased messages come back to it, new ones are added.
    let take = |s: Arc<PostgresStore>| {
        tokio::spawn(async move {
            let mut got = Vec::new();
            for round in 1..=10 {
                got.extend(ids(&s.due(now_ms() + 1, 7 * round).await.expect("due")));
            }
            got
        })
    };
    let (ga, gb) = (take(Arc::clone(&a)), take(Arc::clone(&b)));
    let mut got_a = ga.await.expect("join a");
    let mut got_b = gb.await.expect("join b");
    got_a.sort();
    got_a.dedup();
    got_b.sort();
    got_b.dedup();
    assert!(
        got_a.iter().all(|id| !got_b.contains(id)),
        "a message went to both instances"
    );
    let mut union: Vec<String> = got_a.iter().chain(&got_b).cloned().collect();
    union.sort();
    all.sort();
    assert_eq!(union, all, "every due message was handed out");
    // A lease of A's keeps B off; A gets its own leased messages back.
    assert!(
        b.due(now_ms() + 1, 100)
            .await
            .expect("due")
            .iter()
            .all(|m| got_b.contains(&m.id))
    );
    assert!(
        a.due(now_ms() + 1, 100)
            .await
            .expect("due")
            .iter()
            .all(|m| got_a.contains(&m.id))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_leases_are_renewed_expire_and_are_taken_over() {
    let db = tokio::task::spawn_blocking(common::postgres::database)
        .await
        .expect("database");
    // Renewed every lease / 3: a 1 s lease would be lost to a renewal
    // delayed by 0.7 s, which a busy machine (this binary runs its tests
    // in parallel against one PostgreSQL) can manage.
    let lease = Duration::from_secs(3);
    let a = open_pg(&db, Some("instance-a"), lease).await;
    let b = open_pg(&db, None, lease).await;
    let id = a
        .enqueue(message(&["x@example.org"]))
        .await
        .expect("enqueue");
    assert_eq!(
        ids(&a.due(now_ms() + 1, 10).await.expect("a due")),
        vec![id.clone()]
    );

    // A is alive: its renewal keeps the message for well past one lease.
    tokio::time::sleep(lease * 5 / 2).await;
    assert!(
        b.due(now_ms() + 1, 10).await.expect("b due").is_empty(),
        "a renewed lease must keep other instances off"
    );

    // A dies (its renewal stops); "A again" plays the same instance waking
    // up after a stall, with no renewal of its own.
    drop(a);
    let a_again = open_pg(&db, Some("instance-a"), lease).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let taken = loop {
        let due = ids(&b.due(now_ms() + 1, 10).await.expect("b due"));
        if !due.is_empty() {
            break due;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "B never took the message over after A's lease expired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(taken, vec![id.clone()]);

    // The stalled owner's attempt is refused: the message is B's now.
    let attempt = |expected| AttemptUpdate {
        expected_attempts: expected,
        ..delivered("x@example.org")
    };
    assert!(matches!(
        a_again.record_attempt(&id, attempt(0)).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        b.record_attempt(&id, attempt(0)).await.expect("B records"),
        MessageState::Delivered
    );
    // After B recorded, A's late attempt is still refused, and final
    // messages stay as they are.
    assert!(matches!(
        a_again.record_attempt(&id, attempt(0)).await,
        Ok(MessageState::Delivered) | Err(StoreError::Conflict(_))
    ));
    let info = b.get(&id).await.expect("get").expect("row");
    assert_eq!(info.attempts, 1, "recorded exactly once");
    let log = b.subject_records("x@example.org").await.expect("export");
    assert_eq!(log.messages[0].attempts.len(), 1, "one attempt in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_lost_lease_is_seen_before_sending_and_close_gives_leases_back() {
    let db = tokio::task::spawn_blocking(common::postgres::database)
        .await
        .expect("database");
    // Long enough that a busy machine keeps it from `due` to the first
    // `confirm_lease` (see above).
    let lease = Duration::from_secs(3);
    let a = open_pg(&db, Some("instance-a"), lease).await;
    let b = open_pg(&db, Some("instance-b"), Duration::from_secs(120)).await;
    let first = a
        .enqueue(message(&["x@example.org"]))
        .await
        .expect("enqueue");
    let second = a
        .enqueue(message(&["y@example.org"]))
        .await
        .expect("enqueue");
    assert_eq!(ids(&a.due(now_ms() + 1, 10).await.expect("a due")).len(), 2);
    assert!(
        a.confirm_lease(&first).await.expect("confirm"),
        "a holds it"
    );
    assert!(
        !b.confirm_lease(&first).await.expect("confirm"),
        "b does not"
    );

    // A stalls past its lease (no renewal from a stalled owner): B takes
    // the message, and A learns it before sending instead of after.
    let a_stalled = open_pg(&db, Some("instance-a"), lease).await;
    drop(a);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if !b.due(now_ms() + 1, 10).await.expect("b due").is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "b never took over");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!a_stalled.confirm_lease(&first).await.expect("confirm"));
    assert!(b.confirm_lease(&first).await.expect("confirm"));

    // B shuts down cleanly: its leases are free at once, not after 120 s.
    b.close().await.expect("close");
    let c = open_pg(&db, Some("instance-c"), Duration::from_secs(120)).await;
    let mut got = ids(&c.due(now_ms() + 1, 10).await.expect("c due"));
    got.sort();
    let mut want = vec![first, second];
    want.sort();
    assert_eq!(got, want, "everything b held is free after close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_instances_share_the_pseudonym_key_and_counters() {
    let db = tokio::task::spawn_blocking(common::postgres::database)
        .await
        .expect("database");
    let a = open_pg(&db, None, Duration::from_secs(60)).await;
    let b = open_pg(&db, None, Duration::from_secs(60)).await;
    let id = a
        .enqueue(message(&["p@example.org"]))
        .await
        .expect("enqueue");
    a.record_attempt(&id, delivered("p@example.org"))
        .await
        .expect("deliver");
    let ra = a.subject_records("p@example.org").await.expect("a");
    let rb = b.subject_records("p@example.org").await.expect("b");
    assert_eq!(ra.pseudonym, rb.pseudonym);
    assert_eq!(rb.messages.len(), 1, "B finds what A pseudonymised");

    let counter = || Counter {
        key: "acct-msg-d:via:7".into(),
        until: i64::MAX,
        add: 1,
    };
    let mut m = message(&["q@example.org"]);
    m.counters = vec![counter()];
    a.enqueue(m).await.expect("a enqueue");
    let mut m = message(&["q@example.org"]);
    m.counters = vec![counter()];
    b.enqueue(m).await.expect("b enqueue");
    assert_eq!(
        a.counters(vec!["acct-msg-d:via:7".into()], now_ms())
            .await
            .expect("counters"),
        vec![2],
        "quotas hold across instances"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_tls_verifies_the_server_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = common::make_certs(&dir.path().join("ca"));
    let (crt, key) = (certs.server_crt.clone(), certs.server_key.clone());
    let db = tokio::task::spawn_blocking(move || common::postgres::tls_database(&crt, &key))
        .await
        .expect("start PostgreSQL with TLS");
    let options = |url: String, ca: Option<std::path::PathBuf>| PgOptions {
        url,
        pool_size: 2,
        lease_time: Duration::from_secs(60),
        ca_file: ca,
        instance: None,
    };
    // The server takes TCP clients over TLS only: this one used it, and
    // checked the certificate against the test CA.
    let store = PostgresStore::open(&options(
        db.url_with("sslmode=require"),
        Some(certs.ca_crt.clone()),
    ))
    .await
    .expect("TLS with the CA");
    let id = store
        .enqueue(message(&["a@example.org"]))
        .await
        .expect("enqueue");
    assert!(store.content(&id).await.expect("content").is_some());
    drop(store);

    // Without the CA the certificate is not trusted: no connection.
    let err = PostgresStore::open(&options(db.url_with("sslmode=require"), None))
        .await
        .err()
        .expect("an unknown CA must be refused");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
    // And without TLS the server (hostssl only) lets nobody in.
    assert!(
        PostgresStore::open(&options(db.url_with("sslmode=disable"), None))
            .await
            .is_err()
    );
}
