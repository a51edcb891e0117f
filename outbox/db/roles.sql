-- Least privilege for outbox, applied by `outbox roles` (idempotent). Three
-- NOLOGIN group roles; grant them to your login roles:
--   GRANT outbox_producer TO app;     -- services that enqueue
--   GRANT outbox_worker TO worker;    -- `outbox worker`
--   GRANT outbox_monitor TO grafana;  -- dashboards, `outbox stats`, `outbox web` read-only
--   GRANT outbox_operator TO oncall;  -- `outbox web` with actions, `outbox dead`
-- The functions are SECURITY INVOKER (measured: DEFINER cost ~14 µs per
-- enqueue), so the producer gets exactly what outbox.enqueue() and
-- outbox.publish() touch, down to the column: it can insert messages, read
-- the endpoint names and channels, the subscriptions and the enqueue limits,
-- and remember publications, and nothing else -- not a payload, not a
-- secret, not the ledger, not a kept payload.
-- Statements are separated by `-- split --` lines; :schema is not used, the
-- objects are schema-qualified.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'outbox_producer') THEN
        CREATE ROLE outbox_producer NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'outbox_worker') THEN
        CREATE ROLE outbox_worker NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'outbox_monitor') THEN
        CREATE ROLE outbox_monitor NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'outbox_operator') THEN
        CREATE ROLE outbox_operator NOLOGIN;
    END IF;
END
$$;
-- split --
GRANT USAGE ON SCHEMA outbox TO outbox_producer, outbox_worker, outbox_monitor, outbox_operator;
-- split --
-- PostgreSQL lets PUBLIC execute every new function. The SECURITY DEFINER
-- ones run with the owner's rights, so only the roles granted below may call
-- them: outbox._stats() would otherwise show a producer the figures that
-- SELECT on outbox.stats denies it.
REVOKE EXECUTE ON FUNCTION outbox._stats(), outbox._message_unfinished(uuid), outbox._database_health()
    FROM PUBLIC;
-- split --
-- The producer: outbox.enqueue() and outbox.enqueue_many().
GRANT EXECUTE ON FUNCTION
    outbox.enqueue(text, jsonb, text, text, integer, timestamptz, jsonb, text, text),
    outbox.enqueue_many(text[], jsonb[], text[], text[], integer[], timestamptz[], jsonb[], text[], text[]),
    outbox._raise_problem(text, text),
    outbox._headers_problem(jsonb),
    outbox._message_problem(text, jsonb, text, text, integer, timestamptz, jsonb, integer),
    outbox._target_problem(text, jsonb, text),
    outbox._trace_problem(text, text),
    outbox._wake_workers(),
    outbox._message_unfinished(uuid)
    TO outbox_producer;
-- split --
-- What the channels run for producers (their payload checks) and for workers
-- (coalescing), as named in outbox.channels.
DO $$
DECLARE
    c record;
BEGIN
    FOR c IN SELECT payload_check, riders FROM outbox.channels LOOP
        IF c.payload_check IS NOT NULL THEN
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO outbox_producer',
                           c.payload_check::regproc::regprocedure);
        END IF;
        IF c.riders IS NOT NULL THEN
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO outbox_worker',
                           c.riders::regproc::regprocedure);
        END IF;
    END LOOP;
END
$$;
-- split --
GRANT SELECT (name, default_key, payload_check) ON outbox.channels TO outbox_producer;
-- split --
-- Publishing: outbox.publish() and outbox.publish_many() read which endpoints
-- subscribe (never their secrets: endpoints' columns are granted above) and
-- remember idempotent publications. Not a kept payload (outbox.delivered).
GRANT EXECUTE ON FUNCTION
    outbox.publish(text, jsonb, text, text, integer, timestamptz, jsonb, text, text),
    outbox.publish_many(text[], jsonb[], text[], text[], integer[], timestamptz[], jsonb[], text[], text[]),
    outbox._publish(text, text, jsonb, text, text, integer, timestamptz, jsonb, text, text),
    outbox._payload_problem(text, jsonb)
    TO outbox_producer;
-- split --
GRANT SELECT (id, endpoint, topic, topic_regex, filter, paused_at) ON outbox.subscriptions TO outbox_producer;
-- split --
GRANT SELECT, INSERT, UPDATE (message_ids, created_at) ON outbox.publications TO outbox_producer;
-- split --
GRANT SELECT (name, channel, target) ON outbox.endpoints TO outbox_producer;
-- split --
GRANT SELECT (max_payload_bytes, dedupe_window, wakeup_until) ON outbox.config TO outbox_producer;
-- split --
-- Table-level INSERT: outbox.enqueue() takes ROW EXCLUSIVE on the table
-- first, which a column-level grant does not allow.
GRANT INSERT ON outbox.messages TO outbox_producer;
-- split --
GRANT SELECT, INSERT, UPDATE (message_id, created_at) ON outbox.idempotency_keys TO outbox_producer;
-- split --
GRANT USAGE ON SEQUENCE outbox.messages_seq_seq TO outbox_producer;
-- split --
-- The worker: everything it claims, records, reports and prunes.
GRANT SELECT, INSERT, UPDATE, DELETE ON
    outbox.messages, outbox.attempts, outbox.dead_letters, outbox.endpoint_state,
    outbox.key_limits, outbox.key_blocks, outbox.idempotency_keys, outbox.alert_state,
    outbox.attempt_minutes, outbox.latency_minutes
    TO outbox_worker;
-- split --
-- Keeping delivered payloads and pruning them and spent publications.
GRANT SELECT, INSERT, DELETE ON outbox.delivered TO outbox_worker;
-- split --
-- (UPDATE: the pruner locks what it deletes, FOR UPDATE SKIP LOCKED.)
GRANT SELECT, UPDATE, DELETE ON outbox.publications TO outbox_worker;
-- split --
GRANT SELECT ON outbox.endpoints, outbox.config, outbox.channels TO outbox_worker;
-- split --
-- Pausing (a 410, a rejected bot token) and disabling an endpoint; asking for wake-ups.
GRANT UPDATE (paused_at, paused_reason, disabled_at, disabled_reason) ON outbox.endpoints TO outbox_worker;
-- split --
GRANT UPDATE (wakeup_until) ON outbox.config TO outbox_worker;
-- split --
GRANT USAGE ON SEQUENCE outbox.messages_seq_seq, outbox.attempts_id_seq, outbox.delivered_id_seq TO outbox_worker;
-- split --
GRANT EXECUTE ON FUNCTION
    outbox._claim(integer, uuid, double precision, text, double precision, double precision),
    outbox._claim_endpoint(text, integer, uuid, double precision, text, double precision, double precision,
                           boolean),
    outbox._endpoint_gate(text, integer, double precision),
    outbox._pick(text, integer, boolean, boolean, double precision, double precision, text, double precision,
                 double precision, text),
    outbox._take_key(text, uuid, text, bigint, boolean, double precision, double precision, timestamptz),
    outbox._report_health(text[], integer[], integer[], integer[], text[], double precision[], text[],
                          timestamptz[]),
    outbox._stats(),
    outbox._database_health(),
    outbox._alert_horizon(double precision),
    outbox._alert(text, text, text)
    TO outbox_worker;
-- split --
GRANT SELECT ON outbox.stats, outbox.throughput, outbox.endpoint_health, outbox.blocked_keys,
    outbox.endpoint_settings, outbox.database_health, outbox.topic_stats
    TO outbox_worker, outbox_monitor, outbox_operator;
-- split --
GRANT EXECUTE ON FUNCTION outbox._stats(), outbox._database_health() TO outbox_monitor, outbox_operator;
-- split --
-- The per-minute rollups behind outbox.throughput: counts and latencies only.
GRANT SELECT ON outbox.attempt_minutes, outbox.latency_minutes TO outbox_monitor, outbox_operator;
-- split --
-- The operator: reads what it acts on (messages and dead letters but for their
-- headers, the ledger, key blocks; never outbox.endpoints, whose URLs and secrets it sees only through
-- outbox.endpoint_settings), and changes delivery only through the
-- functions of schema/operator.sql.
GRANT SELECT ON outbox.attempts, outbox.key_blocks, outbox.endpoint_state, outbox.subscriptions
    TO outbox_operator;
-- split --
-- Not `headers`: a message's own headers may carry credentials (Authorization).
GRANT SELECT (id, seq, endpoint, payload, key, idempotency_key, priority, attempts, available_at, created_at,
              lease_token, lease_expires_at, leased_by, first_attempt_at, last_error, held, traceparent, tracestate,
              topic, replay)
    ON outbox.messages TO outbox_operator;
-- split --
GRANT SELECT (message_id, endpoint, payload, key, idempotency_key, priority, attempts, last_error, reason,
              created_at, dead_at, seq, traceparent, tracestate, topic, replay)
    ON outbox.dead_letters TO outbox_operator;
-- split --
-- What a replay counts for its progress (never a payload).
GRANT SELECT (id, message_id, endpoint, topic, delivered_at) ON outbox.delivered TO outbox_operator;
-- split --
GRANT EXECUTE ON FUNCTION
    outbox.requeue_dead(uuid[], text, timestamptz, timestamptz, boolean, text, integer),
    outbox.purge_dead(double precision, text, integer),
    outbox.pause_endpoint(text, text),
    outbox.resume_endpoint(text),
    outbox.unblock_key(text, text),
    outbox.resend(uuid, text),
    outbox.replay(text, timestamptz, timestamptz, text, timestamptz, bigint, integer)
    TO outbox_operator;
