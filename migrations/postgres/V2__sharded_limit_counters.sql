-- Limit counters in shards. One row per counter made every enqueue of an
-- account wait for the previous one's COMMIT (its row lock is held until the
-- commit is flushed), so one busy account, such as VIA's, was serialised
-- across all sessions and instances. Each enqueue now adds to one shard,
-- picked at random; a count is the sum of a key's shards.
ALTER TABLE limit_counters ADD COLUMN shard smallint NOT NULL DEFAULT 0;
ALTER TABLE limit_counters DROP CONSTRAINT limit_counters_pkey;
ALTER TABLE limit_counters ADD PRIMARY KEY (key, shard);
