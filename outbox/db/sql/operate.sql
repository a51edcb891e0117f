-- What operators run (the CLI, the dashboard): endpoints, outbox.config, the
-- stats, dead letters and one message's story.
--
-- Each statement stands under a `-- name --` line and a one-line description of what
-- it does and which parameters it takes; code refers to it by name
-- (outbox.db.queries.QUERIES). Values are always bound parameters.

-- endpoint_insert --
-- Register an endpoint: $1 name, $2 channel, then every setting outbox.settings.endpoint declares, in its order: {columns}
-- and {values} are filled from that declaration (the settings' columns, and $3... with each one's cast). Nothing if the name
-- is taken. Its endpoint_state row comes from a trigger, and outbox._check_endpoint() checks that it fits its channel.
INSERT INTO outbox.endpoints (name, channel, {columns})
VALUES ($1, $2, {values})
ON CONFLICT (name) DO NOTHING
RETURNING name;

-- endpoint_update --
-- Change some settings of endpoint $1: {assignments} is filled from the declaration, `column = $n` for each setting that
-- changes (and a new secret moves the current one to previous_secret for a grace period, during which webhooks carry both
-- signatures). Returns the name, or nothing for an unknown endpoint.
UPDATE outbox.endpoints
   SET {assignments}, updated_at = now()
 WHERE name = $1
RETURNING name;

-- endpoint_channel --
-- The channel of endpoint $1 (nothing for an unknown endpoint).
SELECT channel FROM outbox.endpoints WHERE name = $1;

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
-- Every endpoint: all its columns (the code shows only the declared settings, never a secret itself), its unfinished
-- message count, whether a secret rotation is under way, and its health.
SELECT e.*,
       (SELECT count(*) FROM outbox.messages AS m WHERE m.endpoint = e.name) AS unfinished,
       coalesce(e.previous_secret_until > now(), false) AS rotating,
       h.state, h.consecutive_failures, h.last_failure
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
        (id, seq, endpoint, payload, headers, key, idempotency_key, priority, available_at, created_at, traceparent,
         tracestate)
    OVERRIDING SYSTEM VALUE
    SELECT p.message_id, coalesce(p.seq, nextval(pg_get_serial_sequence('outbox.messages', 'seq'))), p.endpoint,
           p.payload, p.headers, p.key, p.idempotency_key, p.priority, now(), p.created_at, p.traceparent, p.tracestate
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
       available_at AS next_attempt_at, last_error, held, traceparent, tracestate
  FROM outbox.messages WHERE id = $1
UNION ALL
SELECT 'dead', endpoint, key, attempts, payload::text, created_at, 'dead', NULL, last_error, NULL, traceparent,
       tracestate
  FROM outbox.dead_letters WHERE message_id = $1;

-- message_attempts --
-- A message's ledger, oldest first: $1 id.
SELECT attempt, endpoint, started_at, duration_ms, status_code, outcome, error, reason, retry_at, worker_id,
       response_excerpt
  FROM outbox.attempts WHERE message_id = $1
 ORDER BY started_at, id;

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

-- alert_payload_problem --
-- Whether alerts to endpoint $1 would pass its channel's payload check, starting from payload $2 (JSON text) with a text
-- added as outbox._alert() adds it: the problem, or NULL; no row for an unknown endpoint.
SELECT outbox._message_problem(ch.payload_check, $2::text::jsonb || '{"text": "outbox: alert"}'::jsonb, NULL, NULL, 0,
                               NULL, NULL, 2147483647) AS problem
  FROM outbox.endpoints AS e
  JOIN outbox.channels AS ch ON ch.name = e.channel
 WHERE e.name = $1;

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
