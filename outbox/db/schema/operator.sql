-- What an operator does to delivery: requeue and purge dead letters, pause and
-- resume an endpoint, unblock a key. `outbox dead`, `outbox endpoint` and
-- `outbox web` call these; each is SECURITY DEFINER (with a fixed
-- search_path), so the outbox_operator role (`outbox roles`) may do exactly
-- these things and nothing else to the tables: it cannot change an endpoint's
-- URL or read its secret, insert a message or delete the ledger. PUBLIC may
-- not call them (revoked below, right where they are made).
-- Statements are separated by `-- split --` lines.

-- Move up to `batch` dead letters back to outbox.messages, due now, attempts
-- from zero (the ledger keeps their history): by `ids`, or (ids NULL) by
-- endpoint, dead at or after `since` and before `until`, and text in the last
-- error or reason (case-insensitive); NULL filters match everything, and with
-- no id and no filter nothing moves unless `everything` is set. The same id
-- (receivers deduplicate by webhook-id) and, when known, the same number, so
-- a message that blocked its ordered key comes back at the head of it; the
-- key's block goes and its parked messages come back. Dead letters of
-- endpoints that no longer exist stay where they are. Returns how many moved.
CREATE FUNCTION outbox.requeue_dead(ids uuid[], endpoint text, since timestamptz, until timestamptz,
                                    everything boolean, error text, batch integer)
RETURNS integer
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
WITH picked AS (
    DELETE FROM outbox.dead_letters AS d
     WHERE d.message_id IN (
           SELECT x.message_id FROM outbox.dead_letters AS x
            WHERE EXISTS (SELECT 1 FROM outbox.endpoints AS e WHERE e.name = x.endpoint)
              AND ((ids IS NOT NULL AND x.message_id = ANY (ids))
                   OR (ids IS NULL
                       AND (requeue_dead.endpoint IS NOT NULL OR since IS NOT NULL OR until IS NOT NULL
                            OR requeue_dead.error IS NOT NULL OR everything)
                       AND (requeue_dead.endpoint IS NULL OR x.endpoint = requeue_dead.endpoint)
                       AND (since IS NULL OR x.dead_at >= since)
                       AND (until IS NULL OR x.dead_at < until)
                       AND (requeue_dead.error IS NULL
                            OR strpos(lower(coalesce(x.last_error, '') || ' ' || coalesce(x.reason, '')),
                                      lower(requeue_dead.error)) > 0)))
            ORDER BY x.dead_at
            LIMIT batch
              FOR UPDATE SKIP LOCKED)
    RETURNING d.*),
unblocked AS (
    DELETE FROM outbox.key_blocks AS b
     USING picked AS p
     WHERE b.endpoint = p.endpoint AND b.key = p.key AND b.message_id = p.message_id
    RETURNING b.endpoint, b.key),
released AS (
    UPDATE outbox.messages AS m
       SET available_at = now(), held = NULL
      FROM unblocked AS u
     WHERE m.endpoint = u.endpoint AND m.key = u.key AND m.held IS NOT NULL),
requeued AS (
    INSERT INTO outbox.messages
        (id, seq, endpoint, payload, headers, key, idempotency_key, priority, available_at, created_at, traceparent,
         tracestate, topic, replay)
    OVERRIDING SYSTEM VALUE
    SELECT p.message_id, coalesce(p.seq, nextval(pg_get_serial_sequence('outbox.messages', 'seq'))), p.endpoint,
           p.payload, p.headers, p.key, p.idempotency_key, p.priority, now(), p.created_at, p.traceparent, p.tracestate,
           p.topic, p.replay
      FROM picked AS p
    RETURNING id)
SELECT count(*)::integer FROM requeued
$fn$;
-- split --
REVOKE EXECUTE ON FUNCTION outbox.requeue_dead(uuid[], text, timestamptz, timestamptz, boolean, text, integer)
    FROM PUBLIC;
-- split --
-- Delete up to `batch` dead letters that died more than `older_than` seconds
-- ago (of `endpoint`, NULL: all); returns how many.
CREATE FUNCTION outbox.purge_dead(older_than double precision, endpoint text, batch integer)
RETURNS integer
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
WITH gone AS (
    DELETE FROM outbox.dead_letters AS d
     WHERE d.message_id IN (
           SELECT x.message_id FROM outbox.dead_letters AS x
            WHERE x.dead_at < now() - make_interval(secs => older_than)
              AND (purge_dead.endpoint IS NULL OR x.endpoint = purge_dead.endpoint)
            ORDER BY x.dead_at
            LIMIT batch
              FOR UPDATE SKIP LOCKED)
    RETURNING 1)
SELECT count(*)::integer FROM gone
$fn$;
-- split --
REVOKE EXECUTE ON FUNCTION outbox.purge_dead(double precision, text, integer) FROM PUBLIC;
-- split --
-- Stop delivering to an endpoint at once (its messages stay parked; none
-- spends an attempt). False for an unknown endpoint.
CREATE FUNCTION outbox.pause_endpoint(name text, reason text)
RETURNS boolean
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
WITH paused AS (
    UPDATE outbox.endpoints AS e SET paused_at = now(), paused_reason = reason, updated_at = now()
     WHERE e.name = pause_endpoint.name
    RETURNING 1)
SELECT EXISTS (SELECT 1 FROM paused)
$fn$;
-- split --
REVOKE EXECUTE ON FUNCTION outbox.pause_endpoint(text, text) FROM PUBLIC;
-- split --
-- Deliver again: clear pause and disable, close the circuit, end a throttle,
-- and restart the retry windows of the endpoint's parked messages (time
-- parked must not dead-letter them). False for an unknown endpoint.
CREATE FUNCTION outbox.resume_endpoint(name text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    UPDATE outbox.endpoints AS e
       SET paused_at = NULL, paused_reason = NULL, disabled_at = NULL, disabled_reason = NULL, updated_at = now()
     WHERE e.name = resume_endpoint.name;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE outbox.endpoint_state AS s
       SET circuit = 'closed', consecutive_failures = 0, failing_since = NULL, open_until = NULL,
           cooldown_seconds = NULL, probe_until = NULL, throttled_until = NULL, updated_at = now()
     WHERE s.endpoint = resume_endpoint.name;
    UPDATE outbox.messages AS m
       SET first_attempt_at = now()
     WHERE m.endpoint = resume_endpoint.name AND m.first_attempt_at IS NOT NULL AND m.lease_token IS NULL;
    RETURN true;
END
$fn$;
-- split --
REVOKE EXECUTE ON FUNCTION outbox.resume_endpoint(text) FROM PUBLIC;
-- split --
-- Release a key blocked after a dead letter (on_dead = block) and bring its
-- waiting messages back. NULL if the key is not blocked; else how many
-- messages it freed.
CREATE FUNCTION outbox.unblock_key(name text, key text)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    freed integer;
BEGIN
    DELETE FROM outbox.key_blocks AS b WHERE b.endpoint = unblock_key.name AND b.key = unblock_key.key;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    UPDATE outbox.messages AS m
       SET available_at = now(), held = NULL
     WHERE m.endpoint = unblock_key.name AND m.key = unblock_key.key AND m.held IS NOT NULL;
    GET DIAGNOSTICS freed = ROW_COUNT;
    RETURN freed;
END
$fn$;
-- split --
REVOKE EXECUTE ON FUNCTION outbox.unblock_key(text, text) FROM PUBLIC;
