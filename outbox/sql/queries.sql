-- Every hand-written statement `outbox` runs, each under a `-- name --` line
-- and a one-line description of what it does and which parameters it takes.
-- Values are always bound parameters. Statements ending in `_named` use
-- SQLAlchemy's :name style; the others asyncpg's $n style.

-- enqueue --
-- Insert one message in the caller's transaction: $1 endpoint, $2 payload (JSON text), $3 key, $4 idempotency key, $5 priority, $6 deliver_at, $7 headers (JSON text).
-- Payload and headers travel as text and are cast here, so a jsonb codec the caller installed on their connection cannot double-encode them.
SELECT outbox.enqueue($1, $2::text::jsonb, $3, $4, $5, $6, $7::text::jsonb);

-- enqueue_named --
-- The same for SQLAlchemy sessions and connections (sync and async).
SELECT outbox.enqueue(CAST(:endpoint AS text), CAST(CAST(:payload AS text) AS jsonb), CAST(:key AS text), CAST(:idempotency_key AS text), CAST(:priority AS integer), CAST(:deliver_at AS timestamptz), CAST(CAST(:headers AS text) AS jsonb));

-- enqueue_many --
-- Insert many messages in one round trip: parallel arrays $1 endpoints, $2 payloads (JSON text), $3 keys, $4 idempotency keys, $5 priorities, $6 deliver_ats, $7 headers (JSON text); NULL arrays mean defaults.
SELECT outbox.enqueue_many($1::text[], $2::text[]::jsonb[], $3::text[], $4::text[], $5::integer[], $6::timestamptz[], $7::text[]::jsonb[]);

-- enqueue_many_named --
-- The same for SQLAlchemy.
SELECT outbox.enqueue_many(CAST(:endpoints AS text[]), CAST(CAST(:payloads AS text[]) AS jsonb[]), CAST(:keys AS text[]), CAST(:idempotency_keys AS text[]), CAST(:priorities AS integer[]), CAST(:deliver_ats AS timestamptz[]), CAST(CAST(:headers AS text[]) AS jsonb[]));

-- endpoint_insert --
-- Register an endpoint: $1 name, $2 channel, $3 url, $4 secret, $5 headers (JSON text), $6 timeout_ms, $7 connect_timeout_ms,
-- $8 max_attempts, $9 retry_window, $10 rate_limit, $11 rate_burst, $12 key_interval_ms, $13 group_key_interval_ms,
-- $14 ordered, $15 on_dead, $16 breaker_failures, $17 breaker_cooldown, $18 breaker_max_cooldown, $19 disable_after,
-- $20 allow_networks (text[] of CIDRs, NULL for none), $21 coalesce_ms. Its endpoint_state row comes from a trigger.
INSERT INTO outbox.endpoints (name, channel, url, secret, headers, timeout_ms, connect_timeout_ms, max_attempts, retry_window,
                              rate_limit, rate_burst, key_interval_ms, group_key_interval_ms, ordered, on_dead,
                              breaker_failures, breaker_cooldown, breaker_max_cooldown, disable_after, allow_networks,
                              coalesce_ms)
VALUES ($1, $2, $3, $4, $5::text::jsonb, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20::text[]::cidr[],
        $21)
ON CONFLICT (name) DO NOTHING
RETURNING name;

-- endpoint_update --
-- Change some of an endpoint's settings: $1 name, $2 a JSON object of the changes (a key present with null clears that
-- setting). A new secret moves the current one to previous_secret for secret_grace_seconds, during which webhooks carry
-- both signatures. Returns the name, or nothing for an unknown endpoint.
WITH p AS (SELECT $2::text::jsonb AS v)
UPDATE outbox.endpoints AS e
   SET url = CASE WHEN p.v ? 'url' THEN p.v ->> 'url' ELSE e.url END,
       previous_secret = CASE WHEN p.v ? 'secret' THEN e.secret ELSE e.previous_secret END,
       previous_secret_until = CASE WHEN p.v ? 'secret'
                                    THEN now() + make_interval(secs => (p.v ->> 'secret_grace_seconds')::float8)
                                    ELSE e.previous_secret_until END,
       secret = CASE WHEN p.v ? 'secret' THEN p.v ->> 'secret' ELSE e.secret END,
       headers = CASE WHEN p.v ? 'headers' THEN p.v -> 'headers' ELSE e.headers END,
       timeout_ms = CASE WHEN p.v ? 'timeout_ms' THEN (p.v ->> 'timeout_ms')::integer ELSE e.timeout_ms END,
       connect_timeout_ms = CASE WHEN p.v ? 'connect_timeout_ms' THEN (p.v ->> 'connect_timeout_ms')::integer
                                 ELSE e.connect_timeout_ms END,
       max_attempts = CASE WHEN p.v ? 'max_attempts' THEN (p.v ->> 'max_attempts')::integer ELSE e.max_attempts END,
       retry_window = CASE WHEN p.v ? 'retry_window_seconds'
                           THEN make_interval(secs => (p.v ->> 'retry_window_seconds')::float8) ELSE e.retry_window END,
       rate_limit = CASE WHEN p.v ? 'rate_limit' THEN (p.v ->> 'rate_limit')::float8 ELSE e.rate_limit END,
       rate_burst = CASE WHEN p.v ? 'rate_burst' THEN (p.v ->> 'rate_burst')::integer ELSE e.rate_burst END,
       key_interval_ms = CASE WHEN p.v ? 'key_interval_ms' THEN (p.v ->> 'key_interval_ms')::integer
                              ELSE e.key_interval_ms END,
       group_key_interval_ms = CASE WHEN p.v ? 'group_key_interval_ms' THEN (p.v ->> 'group_key_interval_ms')::integer
                                    ELSE e.group_key_interval_ms END,
       coalesce_ms = CASE WHEN p.v ? 'coalesce_ms' THEN (p.v ->> 'coalesce_ms')::integer ELSE e.coalesce_ms END,
       ordered = CASE WHEN p.v ? 'ordered' THEN (p.v ->> 'ordered')::boolean ELSE e.ordered END,
       on_dead = CASE WHEN p.v ? 'on_dead' THEN p.v ->> 'on_dead' ELSE e.on_dead END,
       breaker_failures = CASE WHEN p.v ? 'breaker_failures' THEN (p.v ->> 'breaker_failures')::integer
                               ELSE e.breaker_failures END,
       breaker_cooldown = CASE WHEN p.v ? 'breaker_cooldown_seconds'
                               THEN make_interval(secs => (p.v ->> 'breaker_cooldown_seconds')::float8)
                               ELSE e.breaker_cooldown END,
       breaker_max_cooldown = CASE WHEN p.v ? 'breaker_max_cooldown_seconds'
                                   THEN make_interval(secs => (p.v ->> 'breaker_max_cooldown_seconds')::float8)
                                   ELSE e.breaker_max_cooldown END,
       disable_after = CASE WHEN p.v ? 'disable_after_seconds'
                            THEN make_interval(secs => (p.v ->> 'disable_after_seconds')::float8)
                            ELSE e.disable_after END,
       allow_networks = CASE WHEN NOT p.v ? 'allow_networks' THEN e.allow_networks
                             WHEN jsonb_typeof(p.v -> 'allow_networks') = 'array'
                             THEN ARRAY(SELECT jsonb_array_elements_text(p.v -> 'allow_networks'))::cidr[] END,
       updated_at = now()
  FROM p
 WHERE e.name = $1
RETURNING e.name;

-- endpoint_pause --
-- Stop delivering to an endpoint at once (its messages stay parked; none spends an attempt): $1 name, $2 reason.
UPDATE outbox.endpoints SET paused_at = now(), paused_reason = $2, updated_at = now() WHERE name = $1 RETURNING name;

-- endpoint_resume --
-- Deliver again: clear pause and disable, close the circuit, end a throttle: $1 name.
WITH state AS (
    UPDATE outbox.endpoint_state
       SET circuit = 'closed', consecutive_failures = 0, failing_since = NULL, open_until = NULL,
           cooldown_seconds = NULL, probe_until = NULL, throttled_until = NULL, updated_at = now()
     WHERE endpoint = $1)
UPDATE outbox.endpoints
   SET paused_at = NULL, paused_reason = NULL, disabled_at = NULL, disabled_reason = NULL, updated_at = now()
 WHERE name = $1
RETURNING name;

-- endpoint_restart_windows --
-- After a resume, parked messages' retry windows start again (time parked must not dead-letter them): $1 name.
UPDATE outbox.messages
   SET first_attempt_at = now()
 WHERE endpoint = $1 AND first_attempt_at IS NOT NULL AND lease_token IS NULL;

-- endpoint_unblock --
-- Release a key blocked after a dead letter (on_dead = block) and bring its waiting messages back: $1 name, $2 key.
WITH released AS (
    DELETE FROM outbox.key_blocks WHERE endpoint = $1 AND key = $2 RETURNING endpoint)
UPDATE outbox.messages AS m
   SET available_at = now(), held = NULL
 WHERE m.endpoint = $1 AND m.key = $2 AND m.held IS NOT NULL
RETURNING m.id;

-- endpoint_key_blocked --
-- Whether a key is blocked: $1 name, $2 key.
SELECT message_id FROM outbox.key_blocks WHERE endpoint = $1 AND key = $2;

-- endpoint_list --
-- Every endpoint with its policy, health and unfinished message count; never the secret itself, only whether one is set.
SELECT e.name, e.channel, e.url, e.secret IS NOT NULL AS has_secret, e.headers, e.timeout_ms,
       e.connect_timeout_ms, e.max_attempts, e.retry_window, e.created_at,
       (SELECT count(*) FROM outbox.messages AS m WHERE m.endpoint = e.name) AS unfinished,
       e.rate_limit, e.rate_burst, e.key_interval_ms, e.group_key_interval_ms, e.coalesce_ms, e.ordered, e.on_dead,
       e.breaker_failures, e.breaker_cooldown, e.breaker_max_cooldown, e.disable_after,
       e.allow_networks::text[] AS allow_networks, e.previous_secret_until > now() AS rotating,
       h.state, h.paused_reason, h.disabled_reason, h.consecutive_failures, h.last_failure
  FROM outbox.endpoints AS e
  LEFT JOIN outbox.endpoint_health AS h ON h.endpoint = e.name
 ORDER BY e.name;

-- endpoint_lock_messages --
-- Removal takes SHARE on messages: it waits for producers already inserting and holds new ones back, so the count below is exact. outbox.enqueue() takes ROW EXCLUSIVE before it looks the endpoint up.
LOCK TABLE outbox.messages IN SHARE MODE;

-- endpoint_unfinished --
-- Unfinished messages of one endpoint: $1 name.
SELECT count(*) FROM outbox.messages WHERE endpoint = $1;

-- endpoint_delete --
-- Remove an endpoint and its idempotency keys (so a new endpoint of the same name starts fresh): $1 name. Dead letters stay as history.
WITH keys AS (DELETE FROM outbox.idempotency_keys WHERE endpoint = $1)
DELETE FROM outbox.endpoints WHERE name = $1 RETURNING name;

-- config_get --
-- The settings outbox.enqueue() enforces.
SELECT max_payload_bytes, extract(epoch FROM dedupe_window)::bigint AS dedupe_window_seconds FROM outbox.config;

-- config_set --
-- Change them; NULL keeps a value: $1 max_payload_bytes, $2 dedupe window in seconds.
UPDATE outbox.config
   SET max_payload_bytes = coalesce($1, max_payload_bytes),
       dedupe_window = coalesce(make_interval(secs => $2), dedupe_window)
RETURNING max_payload_bytes, extract(epoch FROM dedupe_window)::bigint AS dedupe_window_seconds;

-- claim --
-- Lease up to $1 due messages to one worker: $1 batch size, $2 lease token (fresh per claim), $3 lease seconds, $4 worker id,
-- $5 rate-limit horizon (seconds), $6 share of each endpoint's part kept for first attempts.
-- outbox._claim() (alembic/versions/0002_functions.sql) goes endpoint by endpoint with SKIP LOCKED, so workers on any host
-- claim side by side; it skips paused, disabled, throttled and open-circuit endpoints, applies rate limits, per-key order and
-- per-key intervals, and returns each message's delay (its rate-limit slot) and whether it is a circuit probe. "Due" is
-- decided by state and time, never by "highest id seen" (ids commit out of order). The transaction is only this statement:
-- in flight is a state of the row (lease_token), not an open transaction across HTTP.
SELECT id, endpoint, payload, headers, key, attempts, first_attempt_at, seq, delay, probe, lead
  FROM outbox._claim($1, $2, $3, $4, $5, $6);

-- finish --
-- Record a batch of finished attempts in one statement: $1 ids, $2 lease tokens, $3 outcomes, $4 status codes, $5 errors,
-- $6 response excerpts, $7 durations (ms), $8 start times, $9 retry times, $10 reasons, $11 worker id, $12 rewritten payloads
-- (JSON text, NULL to keep; a Telegram chat that migrated to a supergroup gets its new chat id, and its key follows).
-- Every change is a compare-and-set on (id, lease_token): a worker whose lease expired cannot overwrite the worker that took over,
-- and its stale result writes nothing. Delivered and dead rows leave the hot table (dead ones land in dead_letters), others go
-- back to pending at their retry time; each row that changed gets exactly one ledger row, numbered from the message's attempts.
-- The DELETE and UPDATE return the input row's fields with their own, so no CTE joins another: with the batch's row count
-- unknown to the planner such joins became nested loops, quadratic in the batch size.
-- Keyed messages also: free their key's minimum interval (key_limits, from now: the receiver has seen them), bring back the
-- next message of their key on an ordered endpoint (parked as held = 'order'), and on an ordered endpoint with
-- on_dead = 'block' a dead one blocks its key (key_blocks).
WITH r AS (
    SELECT *
      FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::smallint[], $5::text[], $6::text[], $7::float8[],
                  $8::timestamptz[], $9::timestamptz[], $10::text[], $12::text[])
           AS r(id, token, outcome, status_code, error, excerpt, duration_ms, started_at, retry_at, reason,
                new_payload)),
gone AS (
    DELETE FROM outbox.messages AS m
     USING r
     WHERE m.id = r.id AND m.lease_token = r.token AND r.outcome IN ('delivered', 'dead')
    RETURNING m.id, m.endpoint, m.payload, m.headers, m.key, m.idempotency_key, m.priority, m.created_at, m.seq,
              m.attempts + 1 AS attempt, r.outcome, r.status_code, r.error, r.excerpt, r.duration_ms, r.started_at,
              r.retry_at, r.reason),
dead AS (
    INSERT INTO outbox.dead_letters
        (message_id, endpoint, payload, headers, key, idempotency_key, priority, attempts, last_error, reason, created_at,
         seq)
    SELECT g.id, g.endpoint, g.payload, g.headers, g.key, g.idempotency_key, g.priority, g.attempt, g.error, g.reason,
           g.created_at, g.seq
      FROM gone AS g
     WHERE g.outcome = 'dead'),
retried AS (
    UPDATE outbox.messages AS m
       SET lease_token = NULL, lease_expires_at = NULL, leased_by = NULL,
           attempts = m.attempts + 1, available_at = r.retry_at, last_error = r.error,
           payload = coalesce(r.new_payload::jsonb, m.payload),
           key = CASE WHEN r.new_payload IS NOT NULL AND m.key = m.payload ->> 'chat_id'
                      THEN r.new_payload::jsonb ->> 'chat_id' ELSE m.key END
      FROM r
     WHERE m.id = r.id AND m.lease_token = r.token AND r.outcome NOT IN ('delivered', 'dead')
    RETURNING m.id, m.endpoint, m.key, m.attempts AS attempt, r.outcome, r.status_code, r.error, r.excerpt,
              r.duration_ms, r.started_at, r.retry_at, r.reason),
promoted AS (
    -- SKIP LOCKED: a claimer looking at that message right now decides about it itself; recording never waits on a claim.
    UPDATE outbox.messages AS s
       SET available_at = now(), held = NULL
      FROM (SELECT n.id
              FROM gone AS g
              CROSS JOIN LATERAL (SELECT x.id FROM outbox.messages AS x
                                   WHERE x.endpoint = g.endpoint AND x.key = g.key AND x.id <> g.id
                                   ORDER BY x.seq
                                   LIMIT 1) AS n
             WHERE g.key IS NOT NULL) AS nxt
     WHERE s.id = nxt.id AND s.held = 'order'
       AND s.id IN (SELECT y.id FROM outbox.messages AS y WHERE y.id = nxt.id FOR UPDATE SKIP LOCKED)),
freed AS (
    -- By holder, not by key: a Telegram chat migration changes the key in `retried`.
    UPDATE outbox.key_limits AS k
       SET next_at = now() + make_interval(secs => k.spacing_seconds), holder = NULL
      FROM (SELECT id FROM gone WHERE key IS NOT NULL
            UNION ALL
            SELECT id FROM retried WHERE key IS NOT NULL) AS f
     WHERE k.holder = f.id),
blocked AS (
    INSERT INTO outbox.key_blocks (endpoint, key, message_id, reason)
    SELECT g.endpoint, g.key, g.id, g.reason
      FROM gone AS g
      JOIN outbox.endpoints AS e ON e.name = g.endpoint AND e.ordered AND e.on_dead = 'block'
     WHERE g.outcome = 'dead' AND g.key IS NOT NULL
    ON CONFLICT DO NOTHING)
INSERT INTO outbox.attempts
    (message_id, endpoint, attempt, started_at, duration_ms, status_code, outcome, error, response_excerpt, worker_id,
     reason, retry_at)
SELECT d.id, d.endpoint, d.attempt, d.started_at, d.duration_ms, d.status_code, d.outcome, d.error, d.excerpt, $11,
       d.reason, d.retry_at
  FROM (SELECT id, endpoint, attempt, started_at, duration_ms, status_code, outcome, error, excerpt, reason, retry_at
          FROM gone
        UNION ALL
        SELECT id, endpoint, attempt, started_at, duration_ms, status_code, outcome, error, excerpt, reason, retry_at
          FROM retried) AS d
RETURNING message_id;

-- release --
-- Hand back messages claimed but never started (shutdown): $1 ids, $2 lease tokens. No attempt was made, so none is counted,
-- and a key they held is free again at once.
WITH released AS (
    UPDATE outbox.messages AS m
       SET lease_token = NULL, lease_expires_at = NULL, leased_by = NULL,
           first_attempt_at = CASE WHEN m.attempts = 0 THEN NULL ELSE m.first_attempt_at END
      FROM unnest($1::uuid[], $2::uuid[]) AS r(id, token)
     WHERE m.id = r.id AND m.lease_token = r.token
    RETURNING m.id, m.endpoint, m.key)
UPDATE outbox.key_limits AS k
   SET next_at = now(), holder = NULL
  FROM released AS x
 WHERE x.key IS NOT NULL AND k.holder = x.id;

-- reap --
-- Take over up to $1 messages whose lease expired (their worker died or stalled): $1 limit, $2 new lease token, $3 lease seconds,
-- $4 worker id. Returns the lost worker and expiry so the caller can record the lost attempt; SKIP LOCKED keeps reapers on
-- several workers from colliding, and messages_lease_idx keeps this cheap.
WITH expired AS (
    SELECT id, leased_by, lease_expires_at FROM outbox.messages
     WHERE lease_token IS NOT NULL AND lease_expires_at < now()
     ORDER BY lease_expires_at
     LIMIT $1
       FOR UPDATE SKIP LOCKED)
UPDATE outbox.messages AS m
   SET lease_token = $2, lease_expires_at = now() + make_interval(secs => $3), leased_by = $4
  FROM expired AS e
 WHERE m.id = e.id
RETURNING m.id, m.endpoint, m.attempts, m.first_attempt_at, e.leased_by AS lost_worker, e.lease_expires_at AS expired_at;

-- worker_endpoints --
-- Every endpoint's delivery settings, for the worker's cache (refreshed every few seconds). The previous secret only while
-- its grace period lasts; `unhealthy` tells the worker that its successes must be reported to reset the breaker.
SELECT e.name, e.channel, e.url, e.secret, e.headers::text AS headers, e.timeout_ms, e.connect_timeout_ms,
       e.max_attempts, extract(epoch FROM e.retry_window)::float8 AS retry_window_seconds,
       CASE WHEN e.previous_secret_until > now() THEN e.previous_secret END AS previous_secret,
       e.allow_networks::text[] AS allow_networks,
       coalesce(s.circuit <> 'closed' OR s.consecutive_failures > 0, false) AS unhealthy
  FROM outbox.endpoints AS e
  LEFT JOIN outbox.endpoint_state AS s ON s.endpoint = e.name;

-- report_health --
-- What a worker saw of each endpoint since its last report (see outbox._report_health()): $1 endpoints, $2 deliveries,
-- $3 endpoint failures, $4 failures after the last delivery, $5 last failure, $6 throttle seconds, $7 pause reasons.
SELECT outbox._report_health($1::text[], $2::integer[], $3::integer[], $4::integer[], $5::text[], $6::float8[],
                             $7::text[]);

-- key_limits_prune --
-- Forget per-key interval state long past (keys are many; a key seen again starts fresh): $1 batch size.
DELETE FROM outbox.key_limits AS k
 USING (SELECT endpoint, key FROM outbox.key_limits
         WHERE next_at < now() - interval '1 hour' AND holder IS NULL
         ORDER BY next_at
         LIMIT $1) AS old
 WHERE k.endpoint = old.endpoint AND k.key = old.key AND k.next_at < now() - interval '1 hour';

-- request_wakeups --
-- An idle worker asks producers to NOTIFY it for $1 more seconds; rewritten only when less than half of that is left.
UPDATE outbox.config
   SET wakeup_until = now() + make_interval(secs => $1)
 WHERE wakeup_until < now() + make_interval(secs => $1 / 2);

-- hot_table_dead_tuples --
-- Dead and live row estimates of outbox.messages, from the statistics collector (kept even when autovacuum is off).
SELECT coalesce(n_dead_tup, 0) AS dead, coalesce(n_live_tup, 0) AS live
  FROM pg_stat_user_tables WHERE relid = 'outbox.messages'::regclass;

-- vacuum_lock --
-- One worker at a time vacuums the hot table: a session-level try-lock on a fixed key (released by vacuum_unlock).
SELECT pg_try_advisory_lock(1869968482, 2);

-- vacuum_unlock --
-- Release vacuum_lock.
SELECT pg_advisory_unlock(1869968482, 2);

-- vacuum_hot_table --
-- Claims leave dead index entries in front of messages_claim_idx until vacuum removes them; with autovacuum off (or behind)
-- they made claims slow enough to raise p99 latency from ~30 ms to ~700 ms. Cheap: the table holds only unfinished rows.
VACUUM (ANALYZE) outbox.messages;

-- stats --
-- outbox.stats with each endpoint's state from outbox.endpoint_health.
SELECT s.*, h.state
  FROM outbox.stats AS s
  LEFT JOIN outbox.endpoint_health AS h ON h.endpoint = s.endpoint
 ORDER BY s.endpoint;

-- dead_list --
-- Dead letters, newest first: $1 endpoint, $2 dead since, $3 text in the last error or reason (case-insensitive), $4 limit;
-- NULL filters match everything.
SELECT message_id, endpoint, key, attempts, last_error, reason, created_at, dead_at, payload::text AS payload
  FROM outbox.dead_letters
 WHERE ($1::text IS NULL OR endpoint = $1)
   AND ($2::timestamptz IS NULL OR dead_at >= $2)
   AND ($3::text IS NULL OR strpos(lower(coalesce(last_error, '') || ' ' || coalesce(reason, '')), lower($3)) > 0)
 ORDER BY dead_at DESC
 LIMIT $4;

-- dead_requeue --
-- Move up to $6 dead letters back to outbox.messages, due now, attempts from zero (the ledger keeps their history): $1 ids,
-- or ($1 NULL) by $2 endpoint, dead at or after $3 and before $4 (NULLs match everything), $5 true for "all" (a guard:
-- with no ids and no filter nothing moves unless it is set). Same id (receivers deduplicate by webhook-id) and, when known,
-- the same number, so a message that blocked its ordered key comes back at the head of it; the key's block goes and its
-- parked messages come back. Dead letters of endpoints that no longer exist stay where they are.
WITH picked AS (
    DELETE FROM outbox.dead_letters AS d
     WHERE d.message_id IN (
           SELECT x.message_id FROM outbox.dead_letters AS x
            WHERE EXISTS (SELECT 1 FROM outbox.endpoints AS e WHERE e.name = x.endpoint)
              AND (($1::uuid[] IS NOT NULL AND x.message_id = ANY ($1::uuid[]))
                   OR ($1::uuid[] IS NULL
                       AND ($2::text IS NOT NULL OR $3::timestamptz IS NOT NULL OR $4::timestamptz IS NOT NULL
                            OR $5::boolean)
                       AND ($2::text IS NULL OR x.endpoint = $2)
                       AND ($3::timestamptz IS NULL OR x.dead_at >= $3)
                       AND ($4::timestamptz IS NULL OR x.dead_at < $4)))
            ORDER BY x.dead_at
            LIMIT $6
              FOR UPDATE SKIP LOCKED)
    RETURNING d.*),
unblocked AS (
    DELETE FROM outbox.key_blocks AS b
     USING picked AS p
     WHERE b.endpoint = p.endpoint AND b.key = p.key AND b.message_id = p.message_id
    RETURNING b.endpoint, b.key),
released AS (
    UPDATE outbox.messages AS m
       SET available_at = now(), held = NULL
      FROM unblocked AS u
     WHERE m.endpoint = u.endpoint AND m.key = u.key AND m.held IS NOT NULL),
requeued AS (
    INSERT INTO outbox.messages
        (id, seq, endpoint, payload, headers, key, idempotency_key, priority, available_at, created_at)
    OVERRIDING SYSTEM VALUE
    SELECT p.message_id, coalesce(p.seq, nextval(pg_get_serial_sequence('outbox.messages', 'seq'))), p.endpoint,
           p.payload, p.headers, p.key, p.idempotency_key, p.priority, now(), p.created_at
      FROM picked AS p
    RETURNING id)
SELECT count(*) FROM requeued;

-- dead_purge --
-- Delete up to $3 dead letters that died before now - $1 seconds (of endpoint $2, NULL: all); returns how many.
WITH gone AS (
    DELETE FROM outbox.dead_letters AS d
     WHERE d.message_id IN (
           SELECT x.message_id FROM outbox.dead_letters AS x
            WHERE x.dead_at < now() - make_interval(secs => $1) AND ($2::text IS NULL OR x.endpoint = $2)
            ORDER BY x.dead_at
            LIMIT $3
              FOR UPDATE SKIP LOCKED)
    RETURNING 1)
SELECT count(*) FROM gone;

-- dead_count --
-- How many dead letters a requeue or purge would touch (for progress): $1 endpoint, $2 dead since, $3 dead before.
SELECT count(*) FROM outbox.dead_letters
 WHERE ($1::text IS NULL OR endpoint = $1)
   AND ($2::timestamptz IS NULL OR dead_at >= $2)
   AND ($3::timestamptz IS NULL OR dead_at < $3);

-- message_find --
-- Where a message is now: unfinished (with its state), dead, or neither (delivered, or unknown): $1 id.
SELECT 'unfinished' AS place, endpoint, key, attempts, payload::text AS payload, created_at,
       CASE WHEN lease_token IS NOT NULL THEN 'in flight'
            WHEN available_at > now() THEN 'scheduled' ELSE 'pending' END AS state,
       available_at AS next_attempt_at, last_error, held
  FROM outbox.messages WHERE id = $1
UNION ALL
SELECT 'dead', endpoint, key, attempts, payload::text, created_at, 'dead', NULL, last_error, NULL
  FROM outbox.dead_letters WHERE message_id = $1;

-- message_attempts --
-- A message's ledger, oldest first: $1 id.
SELECT attempt, endpoint, started_at, duration_ms, status_code, outcome, error, reason, retry_at, worker_id,
       response_excerpt
  FROM outbox.attempts WHERE message_id = $1
 ORDER BY started_at, id;

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

-- prune_lock --
-- One pruner at a time across the fleet: a session-level try-lock on a fixed key (released by prune_unlock).
SELECT pg_try_advisory_lock(1869968482, 4);

-- prune_unlock --
-- Release prune_lock.
SELECT pg_advisory_unlock(1869968482, 4);

-- retention_get --
-- The retention settings, in seconds.
SELECT extract(epoch FROM attempts_retention)::bigint AS attempts_seconds,
       extract(epoch FROM dead_letters_retention)::bigint AS dead_letters_seconds
  FROM outbox.config;

-- retention_set --
-- Change them; NULL keeps a value: $1 attempts retention, $2 dead letters retention, in seconds.
UPDATE outbox.config
   SET attempts_retention = coalesce(make_interval(secs => $1), attempts_retention),
       dead_letters_retention = coalesce(make_interval(secs => $2), dead_letters_retention)
RETURNING extract(epoch FROM attempts_retention)::bigint AS attempts_seconds,
          extract(epoch FROM dead_letters_retention)::bigint AS dead_letters_seconds;

-- alerts_get --
-- Where alerts go (NULL: nowhere), the payload they start from, and their minimum interval in seconds.
SELECT alert_endpoint, alert_payload::text AS alert_payload,
       extract(epoch FROM alert_interval)::bigint AS alert_interval_seconds
  FROM outbox.config;

-- alerts_set --
-- Change them: $1 true to set the endpoint to $2 (NULL: no alerts), $3 payload (JSON text, NULL keeps),
-- $4 interval seconds (NULL keeps).
UPDATE outbox.config
   SET alert_endpoint = CASE WHEN $1::boolean THEN $2 ELSE alert_endpoint END,
       alert_payload = coalesce($3::text::jsonb, alert_payload),
       alert_interval = coalesce(make_interval(secs => $4), alert_interval);
