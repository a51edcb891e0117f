-- Views of revision 0003. Frozen with the revision; statements are separated
-- by `-- split --` lines.
--
-- outbox.stats keeps revision 0001's columns in their order (the contract)
-- and adds the last hour's success rate and p50/p99 latency at the end, so
-- CREATE OR REPLACE can extend it in place.
CREATE OR REPLACE VIEW outbox.stats AS
SELECT e.name AS endpoint,
       coalesce(m.pending, 0) AS pending,
       coalesce(m.scheduled, 0) AS scheduled,
       coalesce(m.in_flight, 0) AS in_flight,
       (SELECT count(*) FROM outbox.dead_letters AS d WHERE d.endpoint = e.name) AS dead,
       coalesce(a.delivered, 0) AS delivered_last_hour,
       coalesce(a.failed, 0) AS failed_attempts_last_hour,
       a.p95_ms AS p95_latency_ms_last_hour,
       coalesce(m.oldest_pending_seconds, 0) AS oldest_pending_seconds,
       CASE WHEN a.delivered + a.failed > 0
            THEN round(a.delivered::numeric / (a.delivered + a.failed), 4) END
         AS success_rate_last_hour,
       a.p50_ms AS p50_latency_ms_last_hour,
       a.p99_ms AS p99_latency_ms_last_hour
  FROM outbox.endpoints AS e
  LEFT JOIN LATERAL (
       SELECT count(*) FILTER (WHERE x.lease_token IS NULL AND x.available_at <= now()) AS pending,
              count(*) FILTER (WHERE x.lease_token IS NULL AND x.available_at > now()) AS scheduled,
              count(*) FILTER (WHERE x.lease_token IS NOT NULL) AS in_flight,
              extract(epoch FROM now() - min(x.available_at)
                      FILTER (WHERE x.lease_token IS NULL AND x.available_at <= now()))::double precision
                AS oldest_pending_seconds
         FROM outbox.messages AS x
        WHERE x.endpoint = e.name) AS m ON true
  LEFT JOIN LATERAL (
       SELECT count(*) FILTER (WHERE t.outcome = 'delivered') AS delivered,
              count(*) FILTER (WHERE t.outcome <> 'delivered') AS failed,
              percentile_cont(0.95) WITHIN GROUP (ORDER BY t.duration_ms)
                FILTER (WHERE t.outcome = 'delivered') AS p95_ms,
              percentile_cont(0.50) WITHIN GROUP (ORDER BY t.duration_ms)
                FILTER (WHERE t.outcome = 'delivered') AS p50_ms,
              percentile_cont(0.99) WITHIN GROUP (ORDER BY t.duration_ms)
                FILTER (WHERE t.outcome = 'delivered') AS p99_ms
         FROM outbox.attempts AS t
        WHERE t.endpoint = e.name AND t.started_at > now() - interval '1 hour') AS a ON true;
-- split --
COMMENT ON VIEW outbox.stats IS
'One row per endpoint: pending (due), scheduled (not yet due), in flight, dead letters, and the last hour''s deliveries, failed attempts, success rate and p50/p95/p99 latency of deliveries (ms); oldest_pending_seconds is the queue''s lag.';
-- split --
-- Per endpoint and minute, the last hour: attempts by outcome and latency.
-- Minutes without attempts are absent (generate_series them in a chart).
CREATE VIEW outbox.throughput AS
SELECT t.endpoint,
       date_trunc('minute', t.started_at) AS minute,
       count(*) FILTER (WHERE t.outcome = 'delivered') AS delivered,
       count(*) FILTER (WHERE t.outcome <> 'delivered') AS failed,
       count(*) FILTER (WHERE t.outcome = 'dead') AS dead_lettered,
       percentile_cont(0.50) WITHIN GROUP (ORDER BY t.duration_ms)
         FILTER (WHERE t.outcome = 'delivered') AS p50_latency_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY t.duration_ms)
         FILTER (WHERE t.outcome = 'delivered') AS p95_latency_ms
  FROM outbox.attempts AS t
 WHERE t.started_at > date_trunc('minute', now()) - interval '59 minutes'
 GROUP BY t.endpoint, date_trunc('minute', t.started_at);
-- split --
COMMENT ON VIEW outbox.throughput IS
'Per endpoint and minute over the last hour: deliveries, failed attempts (of which dead-lettered) and delivery latency p50/p95 (ms).';
