-- Wrong link passwords (src/store/guesses.rs): one row per budget, keyed
-- `lc:<link>:<client>` (back-off of one client at one link), `l:<link>` (the
-- link's ceiling) or `c:<client>` (one client across links); clients are
-- pseudonymised. A row is deleted once `expires` has passed.
CREATE TABLE link_guesses (
    key     text PRIMARY KEY,
    count   bigint NOT NULL,
    at      bigint NOT NULL,
    expires bigint NOT NULL
);
CREATE INDEX link_guesses_expires ON link_guesses (expires);
