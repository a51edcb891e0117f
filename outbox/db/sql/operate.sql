-- What operators run (the CLI, the dashboard): endpoints, outbox.config, the
-- stats, dead letters and one message's story.
--
-- Each statement stands under a `-- name --` line and a one-line description of what
-- it does and which parameters it takes; code refers to it by name
-- (outbox.db.queries.QUERIES). Values are always bound parameters.

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
