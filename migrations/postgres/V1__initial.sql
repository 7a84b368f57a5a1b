-- schleuse: the PostgreSQL store, first schema (see src/store/postgres.rs).
-- Times are Unix milliseconds (bigint), as in the embedded store, except the
-- lease's expiry, which is the database's own clock (timestamptz): every
-- instance compares it with the same clock.

-- The queue and the delivery log: one row per message, kept after it is
-- final (delivered or bounced) until [retention] delivery_log purges it.
CREATE TABLE messages (
    seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id           text NOT NULL UNIQUE,
    received_at  bigint NOT NULL,
    account      text NOT NULL,
    sender       text NOT NULL,
    size         bigint NOT NULL,
    state        text NOT NULL CHECK (state IN ('queued', 'held', 'delivered', 'bounced')),
    attempts     integer NOT NULL DEFAULT 0,
    next_attempt bigint NOT NULL,
    last_error   text,
    finished_at  bigint,
    note         text,
    -- The instance delivering the message right now, and until when that
    -- claim holds unless renewed (see the lease contract in postgres.rs).
    lease_owner  text,
    lease_until  timestamptz
);
CREATE INDEX messages_due ON messages (next_attempt, seq) WHERE state = 'queued';
CREATE INDEX messages_open ON messages (state, seq) WHERE state IN ('queued', 'held');
CREATE INDEX messages_finished ON messages (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX messages_lease ON messages (lease_owner) WHERE lease_owner IS NOT NULL;

CREATE TABLE recipients (
    message_seq bigint NOT NULL REFERENCES messages (seq) ON DELETE CASCADE,
    idx         integer NOT NULL,
    -- In clear while the message is queued; its pseudonym once final
    -- (unless log_recipients = "clear").
    address     text NOT NULL,
    state       text NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    reply       text,
    PRIMARY KEY (message_seq, idx)
);
-- gdpr export/erase look addresses up case-insensitively.
CREATE INDEX recipients_address ON recipients (lower(address));

-- Message bytes while the message is not final; deleted with the final
-- attempt.
CREATE TABLE contents (
    message_seq bigint PRIMARY KEY REFERENCES messages (seq) ON DELETE CASCADE,
    data        bytea NOT NULL
);

CREATE TABLE attempts (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_seq bigint NOT NULL REFERENCES messages (seq) ON DELETE CASCADE,
    at          bigint NOT NULL,
    delivered   integer NOT NULL,
    deferred    integer NOT NULL,
    failed      integer NOT NULL,
    reply       text
);
CREATE INDEX attempts_message ON attempts (message_seq);

-- One row, rewritten by every readiness check: proof that a commit works.
CREATE TABLE ping (
    id integer PRIMARY KEY CHECK (id = 1),
    at bigint NOT NULL
);

-- Values every instance must share: the delivery log's pseudonym key.
CREATE TABLE settings (
    name  text PRIMARY KEY,
    value bytea NOT NULL
);

-- Document links (src/store/links.rs): active rows and tombstones.
CREATE TABLE links (
    id                text PRIMARY KEY,
    token_hash        text NOT NULL UNIQUE,
    message_id        text NOT NULL,
    account           text NOT NULL,
    file_name         text NOT NULL,
    content_type      text NOT NULL,
    size              bigint NOT NULL,
    created_at        bigint NOT NULL,
    expires_at        bigint NOT NULL,
    salt              bytea,
    protected         boolean NOT NULL,
    notify_to         text,
    downloads         bigint NOT NULL DEFAULT 0,
    first_download_at bigint,
    state             text NOT NULL CHECK (state IN ('active', 'expired', 'revoked')),
    ended_at          bigint
);
CREATE INDEX links_state ON links (state, expires_at);
CREATE INDEX links_message ON links (message_id);

CREATE TABLE downloads (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    link_id text NOT NULL,
    at      bigint NOT NULL,
    outcome text NOT NULL,
    ip      text
);
CREATE INDEX downloads_at ON downloads (at);
CREATE INDEX downloads_link ON downloads (link_id);

-- The suppression list (addresses lowercased, in clear: see
-- src/store/suppression.rs) and the relay's events (pseudonymised).
CREATE TABLE suppressions (
    address    text PRIMARY KEY,
    source     text NOT NULL,
    reason     text NOT NULL,
    detail     text,
    created_at bigint NOT NULL,
    expires_at bigint
);
CREATE INDEX suppressions_expiry ON suppressions (expires_at);

CREATE TABLE relay_events (
    key              text PRIMARY KEY,
    received_at      bigint NOT NULL,
    at               bigint NOT NULL,
    event            text NOT NULL,
    message_id       text,
    relay_message_id text,
    recipient        text NOT NULL,
    detail           text
);
CREATE INDEX relay_events_recipient ON relay_events (recipient);
CREATE INDEX relay_events_received ON relay_events (received_at);
CREATE INDEX relay_events_message ON relay_events (message_id);

-- Fixed-window limit counters shared by all instances, and AUTH bans.
CREATE TABLE limit_counters (
    key   text PRIMARY KEY,
    until bigint NOT NULL,
    count bigint NOT NULL
);
CREATE INDEX limit_counters_until ON limit_counters (until);

CREATE TABLE bans (
    ip         text PRIMARY KEY,
    created_at bigint NOT NULL,
    until      bigint NOT NULL,
    reason     text NOT NULL
);
