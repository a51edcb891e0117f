-- Views of revision 0003. Frozen with the revision; statements are separated
-- by `-- split --` lines.
--
-- Per-minute rollups of the ledger, written in the same transaction as the
-- ledger rows (a statement-level trigger on outbox.attempts): counts per
-- endpoint and minute, and a latency histogram of deliveries. The views read
-- these instead of sorting every attempt of the last hour, which took ~500 ms
-- with 1,000,000 attempts in that hour (100,000 per endpoint to sort). The
-- percentiles are interpolated within histogram buckets about 1.4x wide: an
-- approximation, like a Prometheus histogram's, within the bucket's width.
CREATE FUNCTION outbox._latency_bounds() RETURNS double precision[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
SELECT ARRAY[1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100, 150, 200, 300, 500, 700,
             1000, 1500, 2000, 3000, 5000, 7000, 10000, 15000, 20000, 30000, 60000,
             120000]::double precision[]
$fn$;
-- split --
CREATE FUNCTION outbox._roll_up_attempts() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    -- Sorted, so that concurrent recorders take the rollup rows' locks in one order.
    INSERT INTO outbox.attempt_minutes AS t (endpoint, minute, delivered, failed)
    SELECT n.endpoint, date_trunc('minute', n.started_at),
           count(*) FILTER (WHERE n.outcome = 'delivered'),
           count(*) FILTER (WHERE n.outcome <> 'delivered')
      FROM new_rows AS n
     GROUP BY 1, 2
     ORDER BY 1, 2
    ON CONFLICT (endpoint, minute) DO UPDATE
       SET delivered = t.delivered + excluded.delivered, failed = t.failed + excluded.failed;
    INSERT INTO outbox.latency_minutes AS t (endpoint, minute, slot, n)
    SELECT n.endpoint, date_trunc('minute', n.started_at),
           width_bucket(n.duration_ms, outbox._latency_bounds()), count(*)
      FROM new_rows AS n
     WHERE n.outcome = 'delivered'
     GROUP BY 1, 2, 3
     ORDER BY 1, 2, 3
    ON CONFLICT (endpoint, minute, slot) DO UPDATE SET n = t.n + excluded.n;
    RETURN NULL;
END
$fn$;
-- split --
CREATE TRIGGER attempts_roll_up AFTER INSERT ON outbox.attempts
REFERENCING NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION outbox._roll_up_attempts();
-- split --
-- Quantiles (ms) of one endpoint's delivery latency over [p_from, p_to), from
-- the histogram: the bucket where the quantile falls, linearly interpolated.
CREATE FUNCTION outbox._latency_quantiles(
    p_endpoint text, p_from timestamptz, p_to timestamptz, p_qs double precision[])
RETURNS double precision[]
LANGUAGE sql STABLE AS $fn$
WITH s AS (
    SELECT l.slot, sum(l.n)::double precision AS n
      FROM outbox.latency_minutes AS l
     WHERE l.endpoint = p_endpoint AND l.minute >= p_from AND l.minute < p_to
     GROUP BY l.slot),
c AS (
    SELECT s.slot, s.n, sum(s.n) OVER (ORDER BY s.slot) AS cum, sum(s.n) OVER () AS total
      FROM s)
SELECT CASE WHEN max(c.total) IS NULL THEN NULL ELSE ARRAY(
    SELECT (SELECT CASE WHEN x.slot = 0 THEN 0 ELSE b[x.slot] END
                   + (CASE WHEN x.slot >= cardinality(b) THEN b[cardinality(b)]
                           ELSE b[x.slot + 1] END
                      - CASE WHEN x.slot = 0 THEN 0 ELSE b[x.slot] END)
                     * (q * x.total - (x.cum - x.n)) / x.n
              FROM c AS x, outbox._latency_bounds() AS b
             WHERE x.cum >= q * x.total
             ORDER BY x.slot
             LIMIT 1)
      FROM unnest(p_qs) WITH ORDINALITY AS qs(q, i)
     ORDER BY qs.i) END
  FROM c
$fn$;
-- split --
-- outbox.stats keeps revision 0001's columns in their order (the contract)
-- and adds the last hour's success rate and p50/p99 latency at the end, so
-- CREATE OR REPLACE can extend it in place. "The last hour" is the current
-- minute and the 59 before it (the rollups' granularity).
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
CREATE OR REPLACE VIEW outbox.stats AS SELECT * FROM outbox._stats();
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
-- Alerts through the outbox itself: when outbox.config.alert_endpoint is set,
-- a dead letter, or an endpoint paused or disabled, enqueues a message to it
-- in the same transaction (from the triggers below). At most one alert per
-- kind and endpoint per alert_interval; the next one says how many were held
-- back. The payload is outbox.config.alert_payload (e.g. {"chat_id": -100...}
-- for a Telegram chat) plus "text"; a webhook also gets the event's fields.
-- Nothing about the alert endpoint itself alerts (no loops).
CREATE FUNCTION outbox._alert(p_kind text, p_endpoint text, p_text text) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    c record;
    v_state record;
    v_text text;
BEGIN
    SELECT cf.alert_endpoint, cf.alert_payload, cf.alert_interval, e.channel
      INTO c
      FROM outbox.config AS cf
      JOIN outbox.endpoints AS e ON e.name = cf.alert_endpoint;
    IF NOT FOUND OR p_endpoint = c.alert_endpoint THEN
        RETURN;
    END IF;
    SELECT s.last_sent_at, s.suppressed INTO v_state
      FROM outbox.alert_state AS s
     WHERE s.kind = p_kind AND s.endpoint = p_endpoint
       FOR UPDATE;
    IF FOUND AND v_state.last_sent_at > now() - c.alert_interval THEN
        UPDATE outbox.alert_state AS s SET suppressed = s.suppressed + 1
         WHERE s.kind = p_kind AND s.endpoint = p_endpoint;
        RETURN;
    END IF;
    INSERT INTO outbox.alert_state AS s (kind, endpoint, last_sent_at, suppressed)
    VALUES (p_kind, p_endpoint, now(), 0)
    ON CONFLICT (kind, endpoint) DO UPDATE SET last_sent_at = now(), suppressed = 0;
    v_text := left(p_text, 3500);
    IF coalesce(v_state.suppressed, 0) > 0 THEN
        v_text := v_text || format(' (%s more alert(s) like this were held back)', v_state.suppressed);
    END IF;
    INSERT INTO outbox.messages (endpoint, payload, key)
    VALUES (c.alert_endpoint,
            c.alert_payload || CASE WHEN c.channel = 'telegram' THEN jsonb_build_object('text', v_text)
                                    ELSE jsonb_build_object('text', v_text, 'event', p_kind,
                                                            'endpoint', p_endpoint) END,
            CASE WHEN c.channel = 'telegram' THEN c.alert_payload ->> 'chat_id' ELSE 'outbox-alerts' END);
END
$fn$;
-- split --
CREATE FUNCTION outbox._alert_dead_letters() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    d record;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM outbox.config WHERE alert_endpoint IS NOT NULL) THEN
        RETURN NULL;
    END IF;
    FOR d IN
        SELECT n.endpoint, count(*) AS n, (array_agg(n.reason ORDER BY n.dead_at DESC))[1] AS reason
          FROM new_rows AS n
         GROUP BY n.endpoint
         ORDER BY n.endpoint  -- a fixed lock order on alert_state
    LOOP
        PERFORM outbox._alert('dead_letter', d.endpoint,
            format('outbox: %s message(s) to %s dead-lettered; last reason: %s',
                   d.n, d.endpoint, coalesce(d.reason, 'unknown')));
    END LOOP;
    RETURN NULL;
END
$fn$;
-- split --
CREATE TRIGGER dead_letters_alert AFTER INSERT ON outbox.dead_letters
REFERENCING NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION outbox._alert_dead_letters();
-- split --
CREATE FUNCTION outbox._alert_endpoint_state() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF NEW.disabled_at IS NOT NULL AND OLD.disabled_at IS NULL THEN
        PERFORM outbox._alert('disabled', NEW.name,
            format('outbox: endpoint %s disabled: %s', NEW.name, coalesce(NEW.disabled_reason, '')));
    ELSIF NEW.paused_at IS NOT NULL AND OLD.paused_at IS NULL THEN
        PERFORM outbox._alert('paused', NEW.name,
            format('outbox: endpoint %s paused: %s', NEW.name, coalesce(NEW.paused_reason, '')));
    END IF;
    RETURN NULL;
END
$fn$;
-- split --
CREATE TRIGGER endpoints_alert AFTER UPDATE OF paused_at, disabled_at ON outbox.endpoints
FOR EACH ROW EXECUTE FUNCTION outbox._alert_endpoint_state();
