-- Sending again what was delivered: the payloads kept in outbox.delivered
-- (for outbox.config.delivered_retention) go back into outbox.messages under
-- their own message id, marked replay (their attempts are too, in the
-- ledger, and receivers get an outbox-replay header). They then wait for
-- their endpoint's limits like any message. SECURITY DEFINER, callable by the
-- owner and outbox_operator only (EXECUTE is revoked from PUBLIC right here).
-- Statements are separated by `-- split --` lines.

-- Send one delivered message again (to `endpoint`, NULL: its own); returns its id.
CREATE FUNCTION outbox.resend(message_id uuid, endpoint text DEFAULT NULL)
RETURNS uuid
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    d record;
    v_sent uuid;
BEGIN
    IF resend.message_id IS NULL THEN
        PERFORM outbox._raise_problem('OB002¦message_id¦is required');
    END IF;
    IF resend.endpoint IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM outbox.endpoints AS e WHERE e.name = resend.endpoint) THEN
        RAISE EXCEPTION USING ERRCODE = 'OB001',
            MESSAGE = 'endpoint: unknown endpoint ' || quote_literal(resend.endpoint),
            COLUMN = 'endpoint';
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
    INSERT INTO outbox.messages
        (id, endpoint, payload, headers, key, priority, traceparent, tracestate, topic, replay)
    VALUES (d.message_id, coalesce(resend.endpoint, d.endpoint), d.payload, d.headers, d.key, d.priority,
            d.traceparent, d.tracestate, d.topic, true)
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
BEGIN
    IF NOT EXISTS (SELECT 1 FROM outbox.endpoints AS e WHERE e.name = replay.endpoint) THEN
        RAISE EXCEPTION USING ERRCODE = 'OB001',
            MESSAGE = 'endpoint: unknown endpoint ' || coalesce(quote_literal(replay.endpoint), 'NULL'),
            COLUMN = 'endpoint';
    ELSIF replay.since IS NULL OR replay.until IS NULL OR NOT isfinite(replay.since)
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
    LOCK TABLE outbox.messages IN ROW EXCLUSIVE MODE;
    WITH page AS (
        SELECT k.id, k.message_id, k.delivered_at
          FROM outbox.delivered AS k
         WHERE k.endpoint = replay.endpoint
           AND k.delivered_at >= replay.since AND k.delivered_at < replay.until
           AND (replay.after_at IS NULL OR (k.delivered_at, k.id) > (replay.after_at, replay.after_id))
         ORDER BY k.delivered_at, k.id
         LIMIT replay.batch),
    chosen AS (
        SELECT k.*
          FROM page AS p JOIN outbox.delivered AS k ON k.id = p.id
         WHERE (v_regex IS NULL OR k.topic ~ v_regex)
           AND NOT EXISTS (SELECT 1 FROM outbox.delivered AS later
                            WHERE later.message_id = k.message_id AND later.endpoint = k.endpoint
                              AND later.delivered_at < replay.until
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
