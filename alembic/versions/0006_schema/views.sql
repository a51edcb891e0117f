-- The views anyone with psql reads: outbox.stats, outbox.throughput,
-- outbox.blocked_keys and outbox.endpoint_health. The current definitions;
-- statements are separated by `-- split --` lines.

-- outbox.stats: its first nine columns are the contract (in that order), then
-- the last hour's success rate and p50/p99 latency. "The last hour" is the
-- current minute and the 59 before it (the rollups' granularity).
--
-- It reads through outbox._stats() so that it stays cheap on big histories:
-- one grouped pass over the hot table instead of one scan per endpoint, the
-- rollups instead of the ledger, and `SET jit = off` (the planner's estimate
-- passed jit_above_cost and JIT compilation alone took ~200 ms). SECURITY
-- DEFINER (with a fixed search_path) so that a monitoring role that may read
-- the view, and not the tables, gets its figures: counts and latencies only.
CREATE FUNCTION outbox._stats()
RETURNS TABLE (endpoint text, pending bigint, scheduled bigint, in_flight bigint, dead bigint,
               delivered_last_hour bigint, failed_attempts_last_hour bigint,
               p95_latency_ms_last_hour double precision, oldest_pending_seconds double precision,
               success_rate_last_hour numeric, p50_latency_ms_last_hour double precision,
               p99_latency_ms_last_hour double precision)
LANGUAGE sql STABLE SECURITY DEFINER SET jit = off SET search_path = pg_catalog, pg_temp AS $fn$
WITH m AS (
    SELECT x.endpoint,
           count(*) FILTER (WHERE x.lease_token IS NULL AND x.available_at <= now()) AS pending,
           count(*) FILTER (WHERE x.lease_token IS NULL AND x.available_at > now()) AS scheduled,
           count(*) FILTER (WHERE x.lease_token IS NOT NULL) AS in_flight,
           extract(epoch FROM now() - min(x.available_at)
                   FILTER (WHERE x.lease_token IS NULL AND x.available_at <= now()))::double precision
             AS lag
      FROM outbox.messages AS x
     GROUP BY x.endpoint),
a AS (
    SELECT r.endpoint, sum(r.delivered)::bigint AS delivered, sum(r.failed)::bigint AS failed
      FROM outbox.attempt_minutes AS r
     WHERE r.minute >= date_trunc('minute', now()) - interval '59 minutes'
     GROUP BY r.endpoint)
SELECT e.name,
       coalesce(m.pending, 0), coalesce(m.scheduled, 0), coalesce(m.in_flight, 0),
       (SELECT count(*) FROM outbox.dead_letters AS d WHERE d.endpoint = e.name),
       coalesce(a.delivered, 0), coalesce(a.failed, 0), q.ps[2], coalesce(m.lag, 0),
       CASE WHEN a.delivered + a.failed > 0
            THEN round(a.delivered::numeric / (a.delivered + a.failed), 4) END,
       q.ps[1], q.ps[3]
  FROM outbox.endpoints AS e
  LEFT JOIN m ON m.endpoint = e.name
  LEFT JOIN a ON a.endpoint = e.name
  LEFT JOIN LATERAL (
       SELECT outbox._latency_quantiles(e.name, date_trunc('minute', now()) - interval '59 minutes',
                                        'infinity', ARRAY[0.50, 0.95, 0.99]) AS ps) AS q ON true
$fn$;
-- split --
CREATE VIEW outbox.stats AS SELECT * FROM outbox._stats();
-- split --
COMMENT ON VIEW outbox.stats IS
'One row per endpoint: pending (due), scheduled (not yet due), in flight, dead letters, and the last hour''s deliveries, failed attempts, success rate and p50/p95/p99 latency of deliveries (ms, from per-minute histograms); oldest_pending_seconds is the queue''s lag.';
-- split --
-- Per endpoint and minute, the last hour, from the rollups. Minutes without
-- attempts are absent (generate_series them in a chart).
CREATE VIEW outbox.throughput AS
SELECT r.endpoint, r.minute, r.delivered, r.failed,
       q.ps[1] AS p50_latency_ms, q.ps[2] AS p95_latency_ms
  FROM outbox.attempt_minutes AS r
  CROSS JOIN LATERAL (
       SELECT outbox._latency_quantiles(r.endpoint, r.minute, r.minute + interval '1 minute',
                                        ARRAY[0.50, 0.95]) AS ps) AS q
 WHERE r.minute >= date_trunc('minute', now()) - interval '59 minutes';
-- split --
COMMENT ON VIEW outbox.throughput IS
'Per endpoint and minute over the last hour: deliveries, failed attempts and delivery latency p50/p95 (ms, from the minute''s histogram).';
-- split --
-- Keys of ordered endpoints whose later messages wait: behind a head that
-- has failed and is being retried, or behind a dead letter (on_dead = block).
CREATE VIEW outbox.blocked_keys AS
SELECT h.endpoint, h.key, 'retrying'::text AS cause, h.id AS message_id, h.attempts,
       h.available_at AS next_attempt_at, h.last_error,
       (SELECT count(*) FROM outbox.messages AS w
         WHERE w.endpoint = h.endpoint AND w.key = h.key AND w.seq > h.seq) AS waiting
  FROM outbox.messages AS h
  JOIN outbox.endpoints AS e ON e.name = h.endpoint AND e.ordered
 WHERE h.key IS NOT NULL AND h.attempts > 0
   AND NOT EXISTS (SELECT 1 FROM outbox.messages AS p
                    WHERE p.endpoint = h.endpoint AND p.key = h.key AND p.seq < h.seq)
   AND EXISTS (SELECT 1 FROM outbox.messages AS w
                WHERE w.endpoint = h.endpoint AND w.key = h.key AND w.seq > h.seq)
UNION ALL
SELECT b.endpoint, b.key, 'dead_letter'::text, b.message_id, NULL::integer, NULL::timestamptz,
       b.reason,
       (SELECT count(*) FROM outbox.messages AS w WHERE w.endpoint = b.endpoint AND w.key = b.key)
  FROM outbox.key_blocks AS b;
-- split --
COMMENT ON VIEW outbox.blocked_keys IS
'Keys of ordered endpoints held back: cause ''retrying'' (the key''s oldest message failed and waits for its retry) or ''dead_letter'' (on_dead = block; release with `outbox endpoint unblock`). waiting counts the messages behind it.';
-- split --
-- One row per endpoint: whether it is delivering and, if not, why.
CREATE VIEW outbox.endpoint_health AS
SELECT e.name AS endpoint,
       CASE WHEN e.disabled_at IS NOT NULL THEN 'disabled'
            WHEN e.paused_at IS NOT NULL THEN 'paused'
            WHEN s.circuit = 'open' AND s.open_until > now() THEN 'circuit_open'
            WHEN s.circuit <> 'closed' THEN 'probing'
            WHEN s.throttled_until > now() THEN 'throttled'
            ELSE 'active' END AS state,
       s.circuit, s.consecutive_failures, s.failing_since, s.open_until, s.throttled_until,
       s.last_failure, e.paused_at, e.paused_reason, e.disabled_at, e.disabled_reason,
       (SELECT count(*) FROM outbox.blocked_keys AS b WHERE b.endpoint = e.name) AS keys_blocked
  FROM outbox.endpoints AS e
  LEFT JOIN outbox.endpoint_state AS s ON s.endpoint = e.name;
-- split --
COMMENT ON VIEW outbox.endpoint_health IS
'One row per endpoint: state (active, throttled, circuit_open, probing, paused, disabled), the circuit breaker''s figures, why it is paused or disabled, and how many keys are blocked.';
-- split --
-- One row per endpoint: its settings as anyone watching delivery may see
-- them. Nothing secret: the URL only as its host, after the last '@' as URL
-- parsers read it (paths, queries and user info often carry tokens), whether it signs rather than its secret, the
-- names of its headers rather than their values. A view runs with its
-- owner's rights, so roles that may not read outbox.endpoints (the monitor,
-- the operator) read this.
CREATE VIEW outbox.endpoint_settings AS
SELECT e.name AS endpoint, e.channel,
       substring(e.url FROM '^[A-Za-z][A-Za-z0-9+.-]*://(?:[^/?#]*@)?([^/?#@]*)') AS host,
       e.secret IS NOT NULL AS signed,
       ARRAY(SELECT k FROM jsonb_object_keys(coalesce(e.headers, '{}'::jsonb)) AS k ORDER BY k) AS header_names,
       e.timeout_ms, e.connect_timeout_ms, e.max_attempts, e.retry_window, e.rate_limit, e.rate_burst,
       e.key_interval_ms, e.group_key_interval_ms, e.coalesce_ms, e.ordered, e.on_dead, e.breaker_failures,
       e.breaker_cooldown, e.breaker_max_cooldown, e.disable_after, e.allow_networks, e.target, e.exchange,
       e.max_len, e.retain, e.created_at, e.updated_at
  FROM outbox.endpoints AS e;
-- split --
COMMENT ON VIEW outbox.endpoint_settings IS
'One row per endpoint: its settings without anything secret (the URL as its host, whether it signs, its header names without values).';
-- split --
-- What holds back the vacuum of the hot table. Dead rows of outbox.messages can
-- only go once no snapshot can see them: a long transaction, a session idle in
-- a transaction that holds a snapshot or an xid, a prepared transaction or a
-- replication slot keeps every row dead since it began (claims then walk past
-- them: p99 latency went from ~30 ms to ~700 ms). The holder is the one with
-- the oldest xmin, among this database's sessions (other databases' do not
-- hold its tables back), its prepared transactions, and the cluster's slots.
-- Never the holder's query text (it may carry anything); its pid, name,
-- state, when its transaction and its query started. SECURITY DEFINER so a
-- monitoring role sees it; the owner sees other roles' sessions only as a
-- superuser or a member of pg_read_all_stats (README, Production).
CREATE FUNCTION outbox._database_health()
RETURNS TABLE (dead_rows bigint, live_rows bigint, last_vacuum timestamptz, holder text,
               holder_pid integer, holder_name text, holder_state text, holder_since timestamptz,
               holder_query_start timestamptz, holder_seconds double precision, holder_xmin_age integer)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
WITH holders AS (
    SELECT 'transaction'::text AS kind, a.pid, a.application_name AS name, a.state, a.xact_start AS since,
           a.query_start, greatest(age(a.backend_xmin), age(a.backend_xid)) AS xmin_age
      FROM pg_stat_activity AS a
     WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
       AND (a.backend_xmin IS NOT NULL OR a.backend_xid IS NOT NULL)
    UNION ALL
    SELECT 'prepared transaction', NULL, p.gid, 'prepared', p.prepared, NULL, age(p.transaction)
      FROM pg_prepared_xacts AS p
     WHERE p.database = current_database()
    UNION ALL
    SELECT 'replication slot', s.active_pid, s.slot_name, CASE WHEN s.active THEN 'active' ELSE 'inactive' END,
           NULL, NULL, age(s.xmin)
      FROM pg_replication_slots AS s
     WHERE s.xmin IS NOT NULL),
top AS (SELECT * FROM holders ORDER BY xmin_age DESC LIMIT 1)
SELECT coalesce(t.n_dead_tup, 0), coalesce(t.n_live_tup, 0), greatest(t.last_vacuum, t.last_autovacuum),
       h.kind, h.pid, h.name, h.state, h.since, h.query_start,
       extract(epoch FROM now() - h.since)::double precision, h.xmin_age
  FROM (SELECT 1) AS one
  LEFT JOIN pg_stat_user_tables AS t ON t.relid = 'outbox.messages'::regclass
  LEFT JOIN top AS h ON true
$fn$;
-- split --
CREATE VIEW outbox.database_health AS SELECT * FROM outbox._database_health();
-- split --
COMMENT ON VIEW outbox.database_health IS
'One row: the hot table''s dead and live rows and last vacuum, and what holds its vacuum back (the transaction, prepared transaction or replication slot with the oldest xmin: its pid, name, state, since when, never its query).';
