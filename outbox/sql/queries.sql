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
-- Register an endpoint: $1 name, $2 channel, $3 url, $4 secret, $5 headers (JSON text), $6 timeout_ms, $7 connect_timeout_ms, $8 max_attempts, $9 retry_window.
INSERT INTO outbox.endpoints (name, channel, url, secret, headers, timeout_ms, connect_timeout_ms, max_attempts, retry_window)
VALUES ($1, $2, $3, $4, $5::text::jsonb, $6, $7, $8, $9)
ON CONFLICT (name) DO NOTHING
RETURNING name;

-- endpoint_list --
-- Every endpoint with its unfinished message count; never the secret itself, only whether one is set.
SELECT e.name, e.channel, e.url, e.secret IS NOT NULL AS has_secret, e.headers, e.timeout_ms,
       e.connect_timeout_ms, e.max_attempts, e.retry_window, e.created_at,
       (SELECT count(*) FROM outbox.messages AS m WHERE m.endpoint = e.name) AS unfinished
  FROM outbox.endpoints AS e
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
