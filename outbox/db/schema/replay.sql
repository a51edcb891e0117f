-- Sending again what was delivered: the payloads kept in outbox.delivered
-- (for outbox.config.delivered_retention) go back into outbox.messages under
-- their own message id, marked replay (their attempts are too, in the
-- ledger, and receivers get an outbox-replay header). They then wait for
-- their endpoint's limits like any message. SECURITY DEFINER, callable by the
-- owner and outbox_operator only (EXECUTE is revoked from PUBLIC right here).
-- Statements are separated by `-- split --` lines.

-- Send one delivered message again (to `endpoint`, NULL: where it was last
-- delivered); returns its id. Sent to another endpoint, it must suit that
-- endpoint's channel, and it goes without its own headers (they were for the
-- first receiver, and may carry its credentials).
CREATE FUNCTION outbox.resend(message_id uuid, endpoint text DEFAULT NULL)
RETURNS uuid
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    d record;
    t record;
    v_to text;
    v_problem text;
    v_sent uuid;
BEGIN
    IF resend.message_id IS NULL THEN
        PERFORM outbox._raise_problem('OB002¦message_id¦is required');
    END IF;
    LOCK TABLE outbox.messages IN ROW EXCLUSIVE MODE;  -- before the endpoint is read: see enqueue()
    SELECT k.* INTO d FROM outbox.delivered AS k
     WHERE k.message_id = resend.message_id
     ORDER BY k.id DESC
     LIMIT 1;
    IF NOT FOUND THEN
        IF EXISTS (SELECT 1 FROM outbox.messages AS m WHERE m.id = resend.message_id) THEN
            PERFORM outbox._raise_problem(format(
                'OB002¦message_id¦message %s is not delivered yet: it is still queued', resend.message_id));
        ELSIF EXISTS (SELECT 1 FROM outbox.dead_letters AS l WHERE l.message_id = resend.message_id) THEN
            PERFORM outbox._raise_problem(format(
                'OB002¦message_id¦message %s was dead-lettered, never delivered: requeue it '
                '(`outbox dead requeue %s`)', resend.message_id, resend.message_id));
        END IF;
        PERFORM outbox._raise_problem(format(
            'OB002¦message_id¦no delivered message %s is kept: it was never delivered, or it is past '
            'outbox.config.delivered_retention', resend.message_id));
    END IF;
    v_to := coalesce(resend.endpoint, d.endpoint);
    SELECT e.target, ch.payload_check INTO t
      FROM outbox.endpoints AS e JOIN outbox.channels AS ch ON ch.name = e.channel
     WHERE e.name = v_to;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'OB001',
            MESSAGE = 'endpoint: unknown endpoint ' || quote_literal(v_to)
                      || CASE WHEN resend.endpoint IS NULL THEN ' (removed since it was delivered there)'
                              ELSE '' END,
            HINT = 'send it to another endpoint: `outbox message resend ID --endpoint NAME`',
            COLUMN = 'endpoint';
    END IF;
    IF v_to <> d.endpoint THEN
        v_problem := coalesce(
            CASE WHEN t.payload_check IS NOT NULL THEN outbox._payload_problem(t.payload_check, d.payload) END,
            CASE WHEN strpos(t.target, '{') > 0 THEN outbox._target_problem(t.target, d.payload, d.key) END);
        IF v_problem IS NOT NULL THEN
            PERFORM outbox._raise_problem(v_problem, format('endpoint %s refuses it: ', v_to));
        END IF;
    END IF;
    INSERT INTO outbox.messages
        (id, endpoint, payload, headers, key, priority, traceparent, tracestate, topic, replay)
    VALUES (d.message_id, v_to, d.payload, CASE WHEN v_to = d.endpoint THEN d.headers END, d.key,
            d.priority, d.traceparent, d.tracestate, d.topic, true)
    ON CONFLICT (id) DO NOTHING
    RETURNING id INTO v_sent;
    IF v_sent IS NULL THEN
        PERFORM outbox._raise_problem(format(
            'OB002¦message_id¦message %s is queued again already (sent again, not delivered yet)',
            resend.message_id));
    END IF;
    IF (SELECT c.wakeup_until > now() FROM outbox.config AS c) THEN
        PERFORM outbox._wake_workers();
    END IF;
    RETURN v_sent;
END
$fn$;
-- split --
REVOKE EXECUTE ON FUNCTION outbox.resend(uuid, text) FROM PUBLIC;
-- split --
-- One batch of a replay: what `endpoint` delivered at or after `since` and
-- before `until` (and, given `topic`, published on a topic that pattern
-- matches), after the cursor (after_at, after_id; NULL: from the start), up to
-- `batch` kept rows in delivery order. A message delivered several times in the
-- window goes once, at its last delivery; one queued already is skipped.
-- Returns how many went, how many were skipped, the cursor for the next batch,
-- and whether the window is done. The caller fixes `until` (now, say) before the
-- first batch: a replay's own deliveries come after it.
CREATE FUNCTION outbox.replay(
    endpoint text, since timestamptz, until timestamptz, topic text, after_at timestamptz, after_id bigint,
    batch integer,
    OUT resent integer, OUT skipped integer, OUT next_at timestamptz, OUT next_id bigint, OUT done boolean)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    v_regex text;
    v_rows integer;
    v_until timestamptz;
BEGIN
    IF replay.since IS NULL OR replay.until IS NULL OR NOT isfinite(replay.since)
          OR NOT isfinite(replay.until) THEN
        PERFORM outbox._raise_problem('OB002¦since¦and until must be finite times');
    ELSIF replay.until <= replay.since THEN
        PERFORM outbox._raise_problem('OB002¦until¦must be after since');
    ELSIF replay.batch IS NULL OR replay.batch < 1 THEN
        PERFORM outbox._raise_problem('OB002¦batch¦must be at least 1');
    END IF;
    IF replay.topic IS NOT NULL THEN
        v_regex := outbox._topic_regex(replay.topic);
    END IF;
    LOCK TABLE outbox.messages IN ROW EXCLUSIVE MODE;  -- before the endpoint is read: see enqueue()
    IF NOT EXISTS (SELECT 1 FROM outbox.endpoints AS e WHERE e.name = replay.endpoint) THEN
        RAISE EXCEPTION USING ERRCODE = 'OB001',
            MESSAGE = 'endpoint: unknown endpoint ' || coalesce(quote_literal(replay.endpoint), 'NULL'),
            COLUMN = 'endpoint';
    END IF;
    -- Never past now: what this replay sends is delivered (and kept) after now,
    -- and must not come round again.
    v_until := least(replay.until, now());
    WITH page AS (
        SELECT k.id, k.message_id, k.delivered_at
          FROM outbox.delivered AS k
         WHERE k.endpoint = replay.endpoint
           AND k.delivered_at >= replay.since AND k.delivered_at < v_until
           AND (replay.after_at IS NULL OR (k.delivered_at, k.id) > (replay.after_at, replay.after_id))
         ORDER BY k.delivered_at, k.id
         LIMIT replay.batch),
    chosen AS (
        SELECT k.*
          FROM page AS p JOIN outbox.delivered AS k ON k.id = p.id
         WHERE (v_regex IS NULL OR k.topic ~ v_regex)
           AND NOT EXISTS (SELECT 1 FROM outbox.delivered AS later
                            WHERE later.message_id = k.message_id AND later.endpoint = k.endpoint
                              AND later.delivered_at < v_until
                              AND (later.delivered_at, later.id) > (k.delivered_at, k.id))),
    sent AS (
        INSERT INTO outbox.messages
            (id, endpoint, payload, headers, key, priority, traceparent, tracestate, topic, replay)
        SELECT c.message_id, c.endpoint, c.payload, c.headers, c.key, c.priority, c.traceparent, c.tracestate,
               c.topic, true
          FROM chosen AS c
         ORDER BY c.delivered_at, c.id
        ON CONFLICT (id) DO NOTHING
        RETURNING 1)
    SELECT (SELECT count(*) FROM sent)::integer,
           (SELECT count(*) FROM chosen)::integer - (SELECT count(*) FROM sent)::integer,
           (SELECT p.delivered_at FROM page AS p ORDER BY p.delivered_at DESC, p.id DESC LIMIT 1),
           (SELECT p.id FROM page AS p ORDER BY p.delivered_at DESC, p.id DESC LIMIT 1),
           (SELECT count(*) FROM page)::integer
      INTO resent, skipped, next_at, next_id, v_rows;
    done := v_rows < replay.batch;
    IF resent > 0 AND (SELECT c.wakeup_until > now() FROM outbox.config AS c) THEN
        PERFORM outbox._wake_workers();
    END IF;
END
$fn$;
-- split --
REVOKE EXECUTE ON FUNCTION outbox.replay(text, timestamptz, timestamptz, text, timestamptz, bigint, integer)
    FROM PUBLIC;
