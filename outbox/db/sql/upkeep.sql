-- What workers run now and then: vacuum of the hot table, retention, the per-key
-- interval state. Each statement is one short transaction.
--
-- Each statement stands under a `-- name --` line and a one-line description of what
-- it does and which parameters it takes; code refers to it by name
-- (outbox.db.queries.QUERIES). Values are always bound parameters.

-- key_limits_prune --
-- Forget per-key interval state long past (keys are many; a key seen again starts fresh): $1 batch size. Returns how many.
WITH gone AS (
    DELETE FROM outbox.key_limits AS k
     USING (SELECT endpoint, key FROM outbox.key_limits
             WHERE next_at < now() - interval '1 hour' AND holder IS NULL
             ORDER BY next_at
             LIMIT $1) AS old
     WHERE k.endpoint = old.endpoint AND k.key = old.key AND k.next_at < now() - interval '1 hour'
    RETURNING 1)
SELECT count(*) FROM gone;

-- hot_table_dead_tuples --
-- Dead and live row estimates of outbox.messages, from the statistics collector (kept even when autovacuum is off).
SELECT coalesce(n_dead_tup, 0) AS dead, coalesce(n_live_tup, 0) AS live
  FROM pg_stat_user_tables WHERE relid = 'outbox.messages'::regclass;

-- database_health --
-- The hot table's dead rows and what holds its vacuum back (outbox.database_health).
SELECT * FROM outbox.database_health;

-- alert_horizon --
-- The vacuum watchdog: alert when the holder has held the horizon for more than $1 seconds; whether it had.
SELECT outbox._alert_horizon($1);

-- vacuum_hot_table --
-- Claims leave dead index entries in front of messages_claim_idx until vacuum removes them; with autovacuum off (or behind)
-- they made claims slow enough to raise p99 latency from ~30 ms to ~700 ms. Cheap: the table holds only unfinished rows.
-- One worker at a time, with no lock held across statements (a pooler may run each on another connection): SKIP_LOCKED
-- skips the table, with a warning, while another vacuum holds it. A role that may not vacuum it gets a warning too.
VACUUM (SKIP_LOCKED, ANALYZE) outbox.messages;

-- prune_attempts --
-- Delete ledger rows older than outbox.config.attempts_retention, oldest first, up to $1 per call. Ids grow with time, so
-- the primary key's first entries are the oldest rows: no index on started_at is needed (the ledger's inserts stay cheap).
-- Returns how many went, and whether the batch reached rows young enough to keep (then there is nothing older left).
WITH cut AS (SELECT now() - attempts_retention AS before FROM outbox.config),
batch AS (SELECT a.id, a.started_at FROM outbox.attempts AS a ORDER BY a.id LIMIT $1),
gone AS (
    DELETE FROM outbox.attempts AS a
     USING batch AS b, cut
     WHERE a.id = b.id AND b.started_at < cut.before
    RETURNING 1)
SELECT (SELECT count(*) FROM gone) AS deleted,
       EXISTS (SELECT 1 FROM batch AS b, cut WHERE b.started_at >= cut.before) AS reached_young;

-- prune_rollups --
-- The per-minute rollups follow the ledger's retention (small tables: one statement each).
WITH cut AS (SELECT now() - attempts_retention AS before FROM outbox.config),
minutes AS (DELETE FROM outbox.attempt_minutes AS r USING cut WHERE r.minute < cut.before RETURNING 1),
latency AS (DELETE FROM outbox.latency_minutes AS l USING cut WHERE l.minute < cut.before RETURNING 1)
SELECT (SELECT count(*) FROM minutes) + (SELECT count(*) FROM latency);

-- prune_dead_letters --
-- Delete dead letters older than outbox.config.dead_letters_retention, up to $1 per call; returns how many.
WITH gone AS (
    DELETE FROM outbox.dead_letters AS d
     WHERE d.message_id IN (
           SELECT x.message_id FROM outbox.dead_letters AS x, outbox.config AS c
            WHERE x.dead_at < now() - c.dead_letters_retention
            ORDER BY x.dead_at
            LIMIT $1
              FOR UPDATE SKIP LOCKED)
    RETURNING 1)
SELECT count(*) FROM gone;

-- prune_idempotency_keys --
-- Delete idempotency keys past outbox.config.dedupe_window whose message is finished, up to $1 per call (enqueue would
-- take such a key over anyway; this keeps the table small). Returns how many.
WITH gone AS (
    DELETE FROM outbox.idempotency_keys AS k
     WHERE (k.endpoint, k.idempotency_key) IN (
           SELECT x.endpoint, x.idempotency_key FROM outbox.idempotency_keys AS x, outbox.config AS c
            WHERE x.created_at < now() - c.dedupe_window
              AND NOT EXISTS (SELECT 1 FROM outbox.messages AS m WHERE m.id = x.message_id)
            ORDER BY x.created_at
            LIMIT $1
              FOR UPDATE SKIP LOCKED)
    RETURNING 1)
SELECT count(*) FROM gone;

-- prune_publications --
-- Delete what idempotent publishes made (outbox.publications) past outbox.config.dedupe_window, oldest first, up to $1 per
-- call (publish would take such a key over anyway). Returns how many.
WITH gone AS (
    DELETE FROM outbox.publications AS p
     WHERE (p.topic, p.idempotency_key) IN (
           SELECT x.topic, x.idempotency_key FROM outbox.publications AS x, outbox.config AS c
            WHERE x.created_at < now() - c.dedupe_window
            ORDER BY x.created_at
            LIMIT $1
              FOR UPDATE OF x SKIP LOCKED)
    RETURNING 1)
SELECT count(*) FROM gone;

-- prune_delivered --
-- Delete kept payloads older than outbox.config.delivered_retention (all of them when it is 0), oldest first, up to $1
-- per call: ids grow with time, so the primary key's first entries are the oldest rows (as for the ledger). Returns how
-- many went, and whether the batch reached rows young enough to keep.
WITH cut AS (SELECT now() - delivered_retention AS before FROM outbox.config),
batch AS (SELECT k.id, k.delivered_at FROM outbox.delivered AS k ORDER BY k.id LIMIT $1),
gone AS (
    DELETE FROM outbox.delivered AS k
     USING batch AS b, cut
     WHERE k.id = b.id AND b.delivered_at < cut.before
    RETURNING 1)
SELECT (SELECT count(*) FROM gone) AS deleted,
       EXISTS (SELECT 1 FROM batch AS b, cut WHERE b.delivered_at >= cut.before) AS reached_young;

-- prune_lock --
-- One pruner at a time across the fleet: a try-lock on a fixed key, taken first in each batch's transaction and gone at
-- its end (nothing held across transactions, which a pooler in transaction mode would hand to other clients).
SELECT pg_try_advisory_xact_lock(1869968482, 4);
