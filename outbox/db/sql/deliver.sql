-- What a worker runs on the hot path: claim, record (finish), hand back, reap, and
-- the endpoint settings and health it shares with the fleet.
--
-- Each statement stands under a `-- name --` line and a one-line description of what
-- it does and which parameters it takes; code refers to it by name
-- (outbox.db.queries.QUERIES). Values are always bound parameters.

-- claim --
-- Lease up to $1 due messages to one worker: $1 batch size, $2 lease token (fresh per claim), $3 lease seconds, $4 worker id,
-- $5 rate-limit horizon (seconds), $6 share of each endpoint's part kept for first attempts.
-- outbox._claim() (outbox/db/schema/claim.sql) goes endpoint by endpoint with SKIP LOCKED, so workers on any host
-- claim side by side; it skips paused, disabled, throttled and open-circuit endpoints, applies rate limits, per-key order and
-- per-key intervals, and returns each message's delay (its rate-limit slot) and whether it is a circuit probe. "Due" is
-- decided by state and time, never by "highest id seen" (ids commit out of order). The transaction is only this statement:
-- in flight is a state of the row (lease_token), not an open transaction across HTTP.
SELECT id, endpoint, payload, headers, key, attempts, first_attempt_at, seq, delay, probe, lead, traceparent, tracestate,
       topic, replay
  FROM outbox._claim($1, $2, $3, $4, $5, $6);

-- finish --
-- Record a batch of finished attempts in one statement: $1 ids, $2 lease tokens, $3 outcomes, $4 status codes, $5 errors,
-- $6 response excerpts, $7 durations (ms), $8 start times, $9 retry times (epoch seconds), $10 reasons, $11 worker id, $12 rewritten payloads
-- (JSON text) and $13 rewritten keys of retried messages, NULL to keep (a channel may rewrite a message after an answer:
-- a Telegram chat that moved gets its new chat id, and its key follows). $1-$4 and $7-$9 come as array literals (text, cast
-- here: outbox.db.literals); a NULL array stands for all NULLs (unnest pads it).
-- Every change is a compare-and-set on (id, lease_token): a worker whose lease expired cannot overwrite the worker that took over,
-- and its stale result writes nothing. Delivered and dead rows leave the hot table (dead ones land in dead_letters), others go
-- back to pending at their retry time; each row that changed gets exactly one ledger row, numbered from the message's attempts.
-- The DELETE and UPDATE return the input row's fields with their own, so no CTE joins another: with the batch's row count
-- unknown to the planner such joins became nested loops, quadratic in the batch size.
-- Keyed messages also: free their key's minimum interval (key_limits, from now: the receiver has seen them), bring back the
-- next message of their key on an ordered endpoint (parked as held = 'order'), and on an ordered endpoint with
-- on_dead = 'block' a dead one blocks its key (key_blocks). Delivered rows' payloads are kept in outbox.delivered for replay
-- while outbox.config.delivered_retention is above 0; a resent message's attempts are marked replay.
WITH r AS (
    SELECT r.id, r.token, r.outcome, r.status_code, r.error, r.excerpt, r.duration_ms, to_timestamp(r.started_at) AS started_at,
           to_timestamp(r.retry_at) AS retry_at, r.reason, r.new_payload, r.new_key
      FROM unnest($1::text::uuid[], $2::text::uuid[], $3::text::text[], $4::text::smallint[], $5::text[], $6::text[],
                  $7::text::float8[], $8::text::float8[], $9::text::float8[], $10::text[], $12::text[], $13::text[])
           AS r(id, token, outcome, status_code, error, excerpt, duration_ms, started_at, retry_at, reason,
                new_payload, new_key)),
gone AS (
    DELETE FROM outbox.messages AS m
     USING r
     WHERE m.id = r.id AND m.lease_token = r.token AND r.outcome IN ('delivered', 'dead')
    RETURNING m.id, m.endpoint, m.payload, m.headers, m.key, m.idempotency_key, m.priority, m.created_at, m.seq,
              m.traceparent, m.tracestate, m.topic, m.replay, m.attempts + 1 AS attempt, r.outcome, r.status_code, r.error,
              r.excerpt, r.duration_ms, r.started_at, r.retry_at, r.reason),
dead AS (
    INSERT INTO outbox.dead_letters
        (message_id, endpoint, payload, headers, key, idempotency_key, priority, attempts, last_error, reason, created_at,
         seq, traceparent, tracestate, topic, replay)
    SELECT g.id, g.endpoint, g.payload, g.headers, g.key, g.idempotency_key, g.priority, g.attempt, g.error, g.reason,
           g.created_at, g.seq, g.traceparent, g.tracestate, g.topic, g.replay
      FROM gone AS g
     WHERE g.outcome = 'dead'
    -- A message sent again (outbox message resend) may have died before: its new death replaces the old one.
    ON CONFLICT (message_id) DO UPDATE
       SET endpoint = excluded.endpoint, payload = excluded.payload, headers = excluded.headers, key = excluded.key,
           idempotency_key = excluded.idempotency_key, priority = excluded.priority, attempts = excluded.attempts,
           last_error = excluded.last_error, reason = excluded.reason, created_at = excluded.created_at,
           dead_at = now(), seq = excluded.seq, traceparent = excluded.traceparent, tracestate = excluded.tracestate,
           topic = excluded.topic, replay = excluded.replay),
kept AS (
    -- Payloads kept for replay (outbox.config.delivered_retention; 0: none kept).
    INSERT INTO outbox.delivered
        (message_id, endpoint, topic, payload, headers, key, priority, attempts, created_at, traceparent, tracestate)
    SELECT g.id, g.endpoint, g.topic, g.payload, g.headers, g.key, g.priority, g.attempt, g.created_at, g.traceparent,
           g.tracestate
      FROM gone AS g
     WHERE g.outcome = 'delivered'
       AND (SELECT c.delivered_retention > interval '0' FROM outbox.config AS c)),
retried AS (
    UPDATE outbox.messages AS m
       SET lease_token = NULL, lease_expires_at = NULL, leased_by = NULL,
           attempts = m.attempts + 1, available_at = r.retry_at, last_error = r.error,
           payload = coalesce(r.new_payload::jsonb, m.payload), key = coalesce(r.new_key, m.key)
      FROM r
     WHERE m.id = r.id AND m.lease_token = r.token AND r.outcome NOT IN ('delivered', 'dead')
    RETURNING m.id, m.endpoint, m.key, m.replay, m.topic, m.attempts AS attempt, r.outcome, r.status_code, r.error, r.excerpt,
              r.duration_ms, r.started_at, r.retry_at, r.reason),
promoted AS (
    -- SKIP LOCKED: a claimer looking at that message right now decides about it itself; recording never waits on a claim.
    -- Only ordered endpoints park messages behind their key's head (one made unordered lets its parked ones go: the
    -- trigger endpoints_release_parked), so only theirs are looked up: the key index walk for every keyed message cost a
    -- third of the finish. The endpoint's flag gates the walk inside it (as a join, it was read after the walk).
    UPDATE outbox.messages AS s
       SET available_at = now(), held = NULL
      FROM (SELECT n.id
              FROM gone AS g
              CROSS JOIN LATERAL (SELECT x.id FROM outbox.messages AS x
                                   WHERE (SELECT o.ordered FROM outbox.endpoints AS o WHERE o.name = g.endpoint)
                                     AND x.endpoint = g.endpoint AND x.key = g.key AND x.id <> g.id
                                   ORDER BY x.seq
                                   LIMIT 1) AS n
             WHERE g.key IS NOT NULL) AS nxt
     WHERE s.id = nxt.id AND s.held = 'order'
       AND s.id IN (SELECT y.id FROM outbox.messages AS y WHERE y.id = nxt.id FOR UPDATE SKIP LOCKED)),
freed AS (
    -- By holder, not by key: a rewrite may have changed the key in `retried`.
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
     reason, retry_at, replay, topic)
SELECT d.id, d.endpoint, d.attempt, d.started_at, d.duration_ms, d.status_code, d.outcome, d.error, d.excerpt, $11,
       d.reason, d.retry_at, nullif(d.replay, false), d.topic
  FROM (SELECT id, endpoint, attempt, started_at, duration_ms, status_code, outcome, error, excerpt, reason, retry_at,
               replay, topic
          FROM gone
        UNION ALL
        SELECT id, endpoint, attempt, started_at, duration_ms, status_code, outcome, error, excerpt, reason, retry_at,
               replay, topic
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
-- Every endpoint for the worker's cache (refreshed every few seconds): {settings} stands for the columns of the settings
-- outbox.settings.endpoint marks for workers, each as its kind reads it (outbox.deliver.store.worker_endpoints_query). The
-- previous secret only while its grace period lasts; `unhealthy` tells the worker that its successes must be reported to
-- reset the breaker.
SELECT e.name, e.channel, e.updated_at, {settings},
       CASE WHEN e.previous_secret_until > now() THEN e.previous_secret END AS previous_secret_in_grace,
       coalesce(s.circuit <> 'closed' OR s.consecutive_failures > 0, false) AS unhealthy
  FROM outbox.endpoints AS e
  LEFT JOIN outbox.endpoint_state AS s ON s.endpoint = e.name;

-- report_health --
-- What a worker saw of each endpoint since its last report (see outbox._report_health()): $1 endpoints, $2 deliveries,
-- $3 endpoint failures, $4 failures after the last delivery, $5 last failure, $6 throttle seconds, $7 pause reasons,
-- $8 the endpoint's updated_at as the pausing attempt saw it.
SELECT outbox._report_health($1::text[], $2::integer[], $3::integer[], $4::integer[], $5::text[], $6::float8[],
                             $7::text[], $8::timestamptz[]);

-- request_wakeups --
-- An idle worker asks producers to NOTIFY it for $1 more seconds; rewritten only when less than half of that is left.
UPDATE outbox.config
   SET wakeup_until = now() + make_interval(secs => $1)
 WHERE wakeup_until < now() + make_interval(secs => $1 / 2);
