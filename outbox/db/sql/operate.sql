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

-- endpoint_pause --
-- outbox.pause_endpoint (schema/operator.sql): $1 name, $2 reason; false for an unknown endpoint.
SELECT outbox.pause_endpoint($1, $2);

-- endpoint_resume --
-- outbox.resume_endpoint: $1 name; false for an unknown endpoint.
SELECT outbox.resume_endpoint($1);

-- endpoint_unblock --
-- outbox.unblock_key: $1 name, $2 key; NULL if the key is not blocked, else how many messages it freed.
SELECT outbox.unblock_key($1, $2);

-- stats --
-- outbox.stats with each endpoint's state from outbox.endpoint_health.
SELECT s.*, h.state
  FROM outbox.stats AS s
  LEFT JOIN outbox.endpoint_health AS h ON h.endpoint = s.endpoint
 ORDER BY s.endpoint;

-- dead_list --
-- Dead letters, newest first: $1 endpoint, $2 dead since, $3 text in the last error or reason (case-insensitive), $4 limit,
-- $5 dead before; NULL filters match everything.
SELECT message_id, endpoint, key, attempts, last_error, reason, created_at, dead_at, payload::text AS payload
  FROM outbox.dead_letters
 WHERE ($1::text IS NULL OR endpoint = $1)
   AND ($2::timestamptz IS NULL OR dead_at >= $2)
   AND ($5::timestamptz IS NULL OR dead_at < $5)
   AND ($3::text IS NULL OR strpos(lower(coalesce(last_error, '') || ' ' || coalesce(reason, '')), lower($3)) > 0)
 ORDER BY dead_at DESC
 LIMIT $4;

-- dead_requeue --
-- outbox.requeue_dead (schema/operator.sql): $1 ids, $2 endpoint, $3 dead since, $4 dead before, $5 everything,
-- $6 error text, $7 batch; how many moved.
SELECT outbox.requeue_dead($1, $2, $3, $4, $5, $6, $7);

-- dead_purge --
-- outbox.purge_dead: $1 older than (seconds), $2 endpoint, $3 batch; how many went.
SELECT outbox.purge_dead($1, $2, $3);

-- dead_count --
-- How many dead letters a requeue or purge would touch (for progress and confirmations): $1 endpoint, $2 dead since,
-- $3 dead before, $4 text in the last error or reason (case-insensitive).
SELECT count(*) FROM outbox.dead_letters
 WHERE ($1::text IS NULL OR endpoint = $1)
   AND ($2::timestamptz IS NULL OR dead_at >= $2)
   AND ($3::timestamptz IS NULL OR dead_at < $3)
   AND ($4::text IS NULL OR strpos(lower(coalesce(last_error, '') || ' ' || coalesce(reason, '')), lower($4)) > 0);

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
       response_excerpt, coalesce(replay, false) AS replay
  FROM outbox.attempts WHERE message_id = $1
 ORDER BY started_at, id;

-- retention_get --
-- The retention settings, in seconds.
SELECT extract(epoch FROM attempts_retention)::bigint AS attempts_seconds,
       extract(epoch FROM dead_letters_retention)::bigint AS dead_letters_seconds,
       extract(epoch FROM delivered_retention)::bigint AS delivered_seconds
  FROM outbox.config;

-- retention_set --
-- Change them; NULL keeps a value: $1 attempts retention, $2 dead letters retention, $3 delivered payloads' retention
-- (0: none kept), in seconds.
UPDATE outbox.config
   SET attempts_retention = coalesce(make_interval(secs => $1), attempts_retention),
       dead_letters_retention = coalesce(make_interval(secs => $2), dead_letters_retention),
       delivered_retention = coalesce(make_interval(secs => $3), delivered_retention)
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

-- subscription_add --
-- Subscribe an endpoint to a topic pattern: $1 endpoint, $2 pattern, $3 filter (JSON text, or NULL). The pattern is checked
-- and compiled by outbox._check_subscription(); a second subscription of the endpoint to the same pattern is refused.
INSERT INTO outbox.subscriptions (endpoint, topic, filter)
VALUES ($1, $2, $3::text::jsonb)
RETURNING id, endpoint, topic, filter::text AS filter, paused_at, created_at;

-- subscription_list --
-- Every subscription (of $1 endpoint; NULL: all), by endpoint and pattern.
SELECT id, endpoint, topic, filter::text AS filter, paused_at, created_at
  FROM outbox.subscriptions
 WHERE $1::text IS NULL OR endpoint = $1
 ORDER BY endpoint, topic;

-- subscription_remove --
-- Remove $1 endpoint's subscription to $2 pattern; returns its id (none: there was none).
DELETE FROM outbox.subscriptions WHERE endpoint = $1 AND topic = $2 RETURNING id;

-- subscription_pause --
-- Pause ($3 true) or resume ($3 false) $1 endpoint's subscription to $2 pattern: while paused, publish makes it no copy.
UPDATE outbox.subscriptions
   SET paused_at = CASE WHEN $3 THEN coalesce(paused_at, now()) END
 WHERE endpoint = $1 AND topic = $2
RETURNING id;

-- message_resend --
-- Send delivered message $1 again (to $2 endpoint; NULL: its own), from its kept payload: see outbox.resend().
SELECT outbox.resend($1, $2);

-- replay_batch --
-- One batch of a replay: $1 endpoint, $2 since, $3 until, $4 topic pattern (NULL: all), $5 and $6 the cursor (NULL: from
-- the start), $7 batch size. See outbox.replay().
SELECT resent, skipped, next_at, next_id, done FROM outbox.replay($1, $2, $3, $4, $5, $6, $7);

-- replay_count --
-- How many kept deliveries of $1 endpoint lie in [$2, $3) (before the topic filter): a replay's progress total.
SELECT count(*) FROM outbox.delivered WHERE endpoint = $1 AND delivered_at >= $2 AND delivered_at < $3;

-- database_now --
-- The database's clock (a window's end fixed before a replay's first batch).
SELECT now();
