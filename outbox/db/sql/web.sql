-- What `outbox web` reads for its pages, besides what outbox.operate reads.
-- Only the views for what a monitor may see; messages, dead letters and the
-- ledger for the rest (the operator's grants).

-- web_access --
-- What the connected role may do: read messages and dead letters, act (the operator's functions).
SELECT current_user AS role,
       has_column_privilege('outbox.dead_letters', 'payload', 'SELECT')
         AND has_column_privilege('outbox.messages', 'payload', 'SELECT')
         AND has_table_privilege('outbox.attempts', 'SELECT') AS read_messages,
       has_function_privilege('outbox.requeue_dead(uuid[], text, timestamptz, timestamptz, boolean, text, integer)',
                              'EXECUTE')
         AND has_function_privilege('outbox.purge_dead(double precision, text, integer)', 'EXECUTE')
         AND has_function_privilege('outbox.pause_endpoint(text, text)', 'EXECUTE')
         AND has_function_privilege('outbox.resume_endpoint(text)', 'EXECUTE')
         AND has_function_privilege('outbox.unblock_key(text, text)', 'EXECUTE') AS act;

-- web_overview --
-- One row per endpoint: outbox.stats, its state and why from outbox.endpoint_health, its channel.
SELECT s.endpoint, c.channel, c.host, h.state, h.circuit, h.consecutive_failures, h.open_until, h.throttled_until,
       h.last_failure, h.paused_reason, h.disabled_reason, h.keys_blocked,
       s.pending, s.scheduled, s.in_flight, s.dead, s.delivered_last_hour, s.failed_attempts_last_hour,
       s.success_rate_last_hour, s.p50_latency_ms_last_hour, s.p95_latency_ms_last_hour, s.oldest_pending_seconds
  FROM outbox.stats AS s
  LEFT JOIN outbox.endpoint_health AS h ON h.endpoint = s.endpoint
  LEFT JOIN outbox.endpoint_settings AS c ON c.endpoint = s.endpoint
 ORDER BY s.endpoint;

-- web_throughput --
-- Deliveries and failed attempts per minute of the last hour, every minute present (0 when none), from
-- outbox.throughput: $1 endpoint (NULL: all). Minutes as Unix seconds.
SELECT extract(epoch FROM m.minute)::bigint AS minute,
       coalesce(sum(t.delivered), 0)::bigint AS delivered, coalesce(sum(t.failed), 0)::bigint AS failed
  FROM generate_series(date_trunc('minute', now()) - interval '59 minutes', date_trunc('minute', now()),
                       interval '1 minute') AS m(minute)
  LEFT JOIN (SELECT r.endpoint, r.minute, r.delivered, r.failed FROM outbox.throughput AS r) AS t
         ON t.minute = m.minute AND ($1::text IS NULL OR t.endpoint = $1)
 GROUP BY m.minute
 ORDER BY m.minute;

-- web_endpoint --
-- One endpoint's settings (nothing secret) and health: $1 name.
SELECT c.*, h.state, h.circuit, h.consecutive_failures, h.failing_since, h.open_until, h.throttled_until,
       h.last_failure, h.paused_at, h.paused_reason, h.disabled_at, h.disabled_reason, h.keys_blocked
  FROM outbox.endpoint_settings AS c
  JOIN outbox.endpoint_health AS h ON h.endpoint = c.endpoint
 WHERE c.endpoint = $1;

-- web_blocked_keys --
-- An endpoint's blocked keys (outbox.blocked_keys): $1 name, $2 limit.
SELECT key, cause, message_id, attempts, next_attempt_at, last_error, waiting
  FROM outbox.blocked_keys
 WHERE endpoint = $1
 ORDER BY key
 LIMIT $2;

-- web_recent_attempts --
-- An endpoint's latest attempts, newest first: $1 name, $2 limit.
SELECT message_id, attempt, started_at, duration_ms, status_code, outcome, error, reason, retry_at
  FROM outbox.attempts
 WHERE endpoint = $1
 ORDER BY started_at DESC
 LIMIT $2;

-- web_messages --
-- Unfinished messages and dead letters, newest first: $1 id, $2 key, $3 endpoint, $4 state (pending, scheduled,
-- in flight, dead), $5 limit; NULL filters match everything.
SELECT id, endpoint, key, state, attempts, created_at, next_attempt_at, last_error
  FROM (SELECT m.id, m.endpoint, m.key,
               CASE WHEN m.lease_token IS NOT NULL THEN 'in flight'
                    WHEN m.available_at > now() THEN 'scheduled' ELSE 'pending' END AS state,
               m.attempts, m.created_at, m.available_at AS next_attempt_at, m.last_error
          FROM outbox.messages AS m
         WHERE ($1::uuid IS NULL OR m.id = $1) AND ($2::text IS NULL OR m.key = $2)
           AND ($3::text IS NULL OR m.endpoint = $3) AND ($4::text IS DISTINCT FROM 'dead')
        UNION ALL
        SELECT d.message_id, d.endpoint, d.key, 'dead', d.attempts, d.created_at, NULL, d.last_error
          FROM outbox.dead_letters AS d
         WHERE ($1::uuid IS NULL OR d.message_id = $1) AND ($2::text IS NULL OR d.key = $2)
           AND ($3::text IS NULL OR d.endpoint = $3) AND ($4::text IS NULL OR $4 = 'dead')) AS found
 WHERE $4::text IS NULL OR state = $4
 ORDER BY created_at DESC
 LIMIT $5;

-- web_endpoint_names --
-- Every endpoint's name, for filters.
SELECT endpoint FROM outbox.endpoint_settings ORDER BY endpoint;
