-- Functions, triggers and views of revision 0002 (destination controls).
-- Frozen with the revision; statements are separated by `-- split --` lines.
--
-- How a claim works now (outbox._claim): endpoint by endpoint, in random
-- order, each endpoint that is not paused, disabled, throttled or open-circuit
-- and has due messages gets a fair share of the batch (what others leave goes
-- to those that had more). Within an endpoint:
-- * an open circuit whose cool-down is over lets one probe through;
-- * a rate limit (GCRA over outbox.endpoint_state.tat) bounds how many may be
--   sent within the claim's horizon and gives each a delay: the worker sends
--   it at that moment, so sends are spaced 1/rate apart across the fleet;
-- * retries get at most (1 - first_share) of the batch, first attempts the
--   rest; a share either side leaves unused goes to the other;
-- * on endpoints with per-key rules, a message whose key is not free (an
--   earlier message of the key unfinished, a key blocked after a dead letter,
--   or a key's minimum interval not yet over) is parked (available_at moved,
--   `held` says why) without spending an attempt, and its key's predecessor
--   brings it back when it finishes.
-- Every decision is taken under row locks in the claiming transaction, so it
-- holds for any number of workers on any number of hosts.
--
-- Messages held back as a whole (pause, open circuit, throttle) are simply
-- not claimed: nothing is written for them and no attempt is spent.

CREATE FUNCTION outbox._endpoint_state_row() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    INSERT INTO outbox.endpoint_state (endpoint) VALUES (NEW.name) ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$fn$;
-- split --
CREATE TRIGGER endpoints_state_row AFTER INSERT ON outbox.endpoints
FOR EACH ROW EXECUTE FUNCTION outbox._endpoint_state_row();
-- split --
-- Deleting an endpoint with unfinished messages would strand them: refused
-- here too, not only by `outbox endpoint remove`. SHARE on messages waits for
-- producers already inserting (see outbox.enqueue()).
CREATE FUNCTION outbox._refuse_delete_in_use() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    v_count bigint;
BEGIN
    LOCK TABLE outbox.messages IN SHARE MODE;
    SELECT count(*) INTO v_count FROM outbox.messages AS m WHERE m.endpoint = OLD.name;
    IF v_count > 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'OB004',
            MESSAGE = format('endpoint %L has %s unfinished message(s)', OLD.name, v_count),
            HINT = 'wait for them to be delivered, or pause the endpoint instead',
            COLUMN = 'name';
    END IF;
    DELETE FROM outbox.key_limits AS k WHERE k.endpoint = OLD.name;
    DELETE FROM outbox.key_blocks AS b WHERE b.endpoint = OLD.name;
    RETURN OLD;
END
$fn$;
-- split --
CREATE TRIGGER endpoints_refuse_delete_in_use BEFORE DELETE ON outbox.endpoints
FOR EACH ROW EXECUTE FUNCTION outbox._refuse_delete_in_use();
-- split --
-- Whether a message is still in the hot table: what taking over an expired
-- idempotency key asks. SECURITY DEFINER so that a producer role needs no
-- read access to outbox.messages at all; called only when a key collides.
CREATE FUNCTION outbox._message_unfinished(p_id uuid) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
SELECT EXISTS (SELECT 1 FROM outbox.messages AS m WHERE m.id = p_id)
$fn$;
-- split --
CREATE OR REPLACE FUNCTION outbox.enqueue(
    endpoint text,
    payload jsonb,
    key text DEFAULT NULL,
    idempotency_key text DEFAULT NULL,
    priority integer DEFAULT 0,
    deliver_at timestamptz DEFAULT NULL,
    headers jsonb DEFAULT NULL)
RETURNS uuid
LANGUAGE plpgsql VOLATILE
AS $fn$
DECLARE
    v_channel text;
    v_max integer;
    v_window interval;
    v_wake boolean;
    v_problem text;
    v_id uuid;
    v_kept uuid;
    v_key text := enqueue.key;
BEGIN
    -- ROW EXCLUSIVE (what the INSERT takes anyway) before the endpoint is read:
    -- `outbox endpoint remove` takes SHARE, so either it sees this message or
    -- this statement's snapshot sees the endpoint gone.
    LOCK TABLE outbox.messages IN ROW EXCLUSIVE MODE;
    SELECT e.channel, c.max_payload_bytes, c.dedupe_window, c.wakeup_until > now()
      INTO v_channel, v_max, v_window, v_wake
      FROM outbox.endpoints AS e, outbox.config AS c
     WHERE e.name = enqueue.endpoint;
    -- The fast check every good message passes; see the header of this file.
    -- An unknown endpoint (v_channel NULL) or a NULL payload makes it NULL, not
    -- false, hence IS NOT TRUE. The checks stay in this plpgsql expression: in
    -- the SELECT above they would be constant-folded into custom plans, which
    -- the plan cache then prefers and rebuilds on every call (~40 µs).
    IF (v_channel <> 'telegram'
        AND jsonb_typeof(enqueue.payload) = 'object'
        AND octet_length(enqueue.payload::text) <= v_max
        AND (enqueue.key IS NULL OR (enqueue.key <> '' AND char_length(enqueue.key) <= 255))
        AND (enqueue.idempotency_key IS NULL
             OR (enqueue.idempotency_key <> '' AND char_length(enqueue.idempotency_key) <= 255))
        AND coalesce(enqueue.priority, 0) BETWEEN -32768 AND 32767
        AND (enqueue.deliver_at IS NULL OR isfinite(enqueue.deliver_at))
        AND enqueue.headers IS NULL) IS NOT TRUE THEN
        IF v_channel IS NULL THEN
            IF enqueue.endpoint IS NULL THEN
                PERFORM outbox._raise_problem('OB002¦endpoint¦is required');
            END IF;
            RAISE EXCEPTION USING ERRCODE = 'OB001',
                MESSAGE = 'endpoint: unknown endpoint ' || quote_literal(enqueue.endpoint),
                HINT = 'create it first with `outbox endpoint add`',
                COLUMN = 'endpoint';
        END IF;
        v_problem := outbox._message_problem(
            v_channel, enqueue.payload, enqueue.key, enqueue.idempotency_key,
            coalesce(enqueue.priority, 0), enqueue.deliver_at, enqueue.headers, v_max);
        IF v_problem IS NOT NULL THEN
            PERFORM outbox._raise_problem(v_problem);
        END IF;
        -- Telegram: the chat is the natural key (per-chat limits and order).
        IF v_channel = 'telegram' AND enqueue.key IS NULL THEN
            v_key := enqueue.payload ->> 'chat_id';
        END IF;
    END IF;

    v_id := gen_random_uuid();
    IF enqueue.idempotency_key IS NOT NULL THEN
        -- Take the key, or take it over if it expired and its message is gone.
        -- A concurrent producer holding the same key makes this wait for its
        -- commit; the key is then live and we return that producer's id.
        INSERT INTO outbox.idempotency_keys AS k (endpoint, idempotency_key, message_id)
        VALUES (enqueue.endpoint, enqueue.idempotency_key, v_id)
        ON CONFLICT ON CONSTRAINT idempotency_keys_pkey DO UPDATE
           SET message_id = excluded.message_id, created_at = now()
         WHERE k.created_at < now() - v_window
           AND NOT outbox._message_unfinished(k.message_id)
        RETURNING k.message_id INTO v_kept;
        IF v_kept IS NULL THEN
            -- A new statement, so a new snapshot: it sees the committed key.
            SELECT k.message_id INTO v_kept FROM outbox.idempotency_keys AS k
             WHERE k.endpoint = enqueue.endpoint AND k.idempotency_key = enqueue.idempotency_key;
            RETURN v_kept;
        END IF;
    END IF;

    INSERT INTO outbox.messages
        (id, endpoint, payload, headers, key, idempotency_key, priority, available_at)
    VALUES
        (v_id, enqueue.endpoint, enqueue.payload, enqueue.headers, v_key,
         enqueue.idempotency_key, coalesce(enqueue.priority, 0),
         greatest(coalesce(enqueue.deliver_at, now()), now()));
    IF v_wake THEN
        PERFORM outbox._wake_workers();
    END IF;
    RETURN v_id;
END
$fn$;
-- split --
CREATE OR REPLACE FUNCTION outbox.enqueue_many(
    endpoints text[],
    payloads jsonb[],
    keys text[] DEFAULT NULL,
    idempotency_keys text[] DEFAULT NULL,
    priorities integer[] DEFAULT NULL,
    deliver_ats timestamptz[] DEFAULT NULL,
    headers jsonb[] DEFAULT NULL)
RETURNS uuid[]
LANGUAGE plpgsql VOLATILE
AS $fn$
DECLARE
    n integer := coalesce(cardinality(payloads), 0);
    v_max integer;
    v_window interval;
    v_wake boolean;
    v_bad record;
    v_ids uuid[];
    v_final uuid[];
    v_arg record;
BEGIN
    FOR v_arg IN
        SELECT a.name, a.len FROM (VALUES
            ('endpoints', cardinality(endpoints)), ('keys', cardinality(keys)),
            ('idempotency_keys', cardinality(idempotency_keys)),
            ('priorities', cardinality(priorities)), ('deliver_ats', cardinality(deliver_ats)),
            ('headers', cardinality(headers))) AS a(name, len)
        WHERE a.len IS DISTINCT FROM n AND (a.name = 'endpoints' OR a.len IS NOT NULL)
    LOOP
        PERFORM outbox._raise_problem(format('OB002¦%s¦has %s elements but payloads has %s',
                                             v_arg.name, coalesce(v_arg.len, 0), n));
    END LOOP;
    IF n = 0 THEN
        RETURN '{}'::uuid[];
    END IF;
    LOCK TABLE outbox.messages IN ROW EXCLUSIVE MODE;  -- before the endpoints are read: see enqueue()
    SELECT c.max_payload_bytes, c.dedupe_window, c.wakeup_until > now()
      INTO v_max, v_window, v_wake FROM outbox.config AS c;

    -- Every row in one pass; the first bad one is reported by its index.
    SELECT m.i, m.endpoint, e.channel,
           outbox._message_problem(e.channel, m.payload, m.key, m.idem, coalesce(m.priority, 0),
                                   m.deliver_at, m.hdrs, v_max) AS problem
      INTO v_bad
      FROM unnest(endpoints, payloads, keys, idempotency_keys, priorities, deliver_ats, headers)
           WITH ORDINALITY AS m(endpoint, payload, key, idem, priority, deliver_at, hdrs, i)
      LEFT JOIN outbox.endpoints AS e ON e.name = m.endpoint
     WHERE e.name IS NULL
        OR (jsonb_typeof(m.payload) = 'object'
                AND octet_length(m.payload::text) <= v_max
                AND (m.key IS NULL OR (m.key <> '' AND char_length(m.key) <= 255))
                AND (m.idem IS NULL OR (m.idem <> '' AND char_length(m.idem) <= 255))
                AND coalesce(m.priority, 0) BETWEEN -32768 AND 32767
                AND (m.deliver_at IS NULL OR isfinite(m.deliver_at))
                AND m.hdrs IS NULL
                AND e.channel <> 'telegram') IS NOT TRUE  -- a NULL payload makes it NULL
           AND outbox._message_problem(e.channel, m.payload, m.key, m.idem,
                                       coalesce(m.priority, 0), m.deliver_at, m.hdrs,
                                       v_max) IS NOT NULL
     ORDER BY m.i
     LIMIT 1;
    IF FOUND THEN
        IF v_bad.endpoint IS NULL THEN
            PERFORM outbox._raise_problem('OB002¦endpoint¦is required',
                                          format('messages[%s].', v_bad.i - 1));
        ELSIF v_bad.channel IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'OB001',
                MESSAGE = format('messages[%s].endpoint: unknown endpoint %L', v_bad.i - 1, v_bad.endpoint),
                HINT = 'create it first with `outbox endpoint add`',
                COLUMN = format('messages[%s].endpoint', v_bad.i - 1);
        END IF;
        PERFORM outbox._raise_problem(v_bad.problem, format('messages[%s].', v_bad.i - 1));
    END IF;

    v_ids := ARRAY(SELECT gen_random_uuid() FROM generate_series(1, n));
    v_final := v_ids;
    IF EXISTS (SELECT 1 FROM unnest(idempotency_keys) AS k WHERE k IS NOT NULL) THEN
        -- The first row of each (endpoint, key) takes the key; keys are taken
        -- in sorted order so that concurrent batches cannot deadlock.
        INSERT INTO outbox.idempotency_keys AS k (endpoint, idempotency_key, message_id)
        SELECT DISTINCT ON (m.endpoint, m.idem) m.endpoint, m.idem, v_ids[m.i]
          FROM unnest(endpoints, idempotency_keys) WITH ORDINALITY AS m(endpoint, idem, i)
         WHERE m.idem IS NOT NULL
         ORDER BY m.endpoint, m.idem, m.i
        ON CONFLICT ON CONSTRAINT idempotency_keys_pkey DO UPDATE
           SET message_id = excluded.message_id, created_at = now()
         WHERE k.created_at < now() - v_window
           AND NOT outbox._message_unfinished(k.message_id);
        -- A new statement and snapshot: keys committed by racing producers show.
        v_final := ARRAY(
            SELECT coalesce(k.message_id, v_ids[m.i])
              FROM unnest(endpoints, idempotency_keys) WITH ORDINALITY AS m(endpoint, idem, i)
              LEFT JOIN outbox.idempotency_keys AS k
                     ON k.endpoint = m.endpoint AND k.idempotency_key = m.idem
             ORDER BY m.i);
    END IF;

    INSERT INTO outbox.messages
        (id, endpoint, payload, headers, key, idempotency_key, priority, available_at)
    SELECT v_ids[m.i], m.endpoint, m.payload, m.hdrs,
           coalesce(m.key, CASE WHEN e.channel = 'telegram' THEN m.payload ->> 'chat_id' END),
           m.idem, coalesce(m.priority, 0), greatest(coalesce(m.deliver_at, now()), now())
      FROM unnest(endpoints, payloads, keys, idempotency_keys, priorities, deliver_ats, headers)
           WITH ORDINALITY AS m(endpoint, payload, key, idem, priority, deliver_at, hdrs, i)
      JOIN outbox.endpoints AS e ON e.name = m.endpoint
     WHERE v_final[m.i] = v_ids[m.i]
     ORDER BY m.i;
    IF v_wake THEN
        PERFORM outbox._wake_workers();
    END IF;
    RETURN v_final;
END
$fn$;
-- split --
-- Up to p_n due messages of one endpoint, locked, in claim order: retries
-- (p_retries) or first attempts. Endpoints without per-key rules take the
-- plain index scan; the others check each candidate's key and park those
-- whose key is not free.
-- Coalescing (p_coalesce seconds, Telegram sendMessage): a message taken for
-- sending brings along the next unfinished messages of its key, created
-- within the window after it, with the same parameters but the text, while
-- the joined text fits the Bot API's 4096 characters; they go out as one
-- request. ids[i] is a message to lease; leads[i] the message it rides with
-- (NULL for one sent on its own).
CREATE FUNCTION outbox._pick(
    p_endpoint text, p_n integer, p_retries boolean, p_ordered boolean,
    p_key_spacing double precision, p_group_spacing double precision,
    p_lease double precision, p_coalesce double precision,
    OUT ids uuid[], OUT leads uuid[])
LANGUAGE plpgsql AS $fn$
DECLARE
    v_now timestamptz := now();
    v_cur refcursor;
    c record;
    f record;
    v_spacing double precision;
    v_head timestamptz;
    v_next timestamptz;
    v_holder uuid;
    v_total integer;
    v_last bigint;
    v_taken boolean;
BEGIN
    ids := '{}';
    IF p_n <= 0 THEN
        RETURN;
    END IF;
    IF NOT p_ordered AND p_key_spacing IS NULL AND p_group_spacing IS NULL
       AND p_coalesce IS NULL THEN
        IF p_retries THEN
            ids := ARRAY(
                SELECT m.id FROM outbox.messages AS m
                 WHERE m.endpoint = p_endpoint AND m.lease_token IS NULL AND m.attempts > 0
                   AND m.available_at <= v_now
                 ORDER BY m.priority DESC, m.available_at, m.seq
                 LIMIT p_n
                   FOR UPDATE SKIP LOCKED);
            RETURN;
        END IF;
        ids := ARRAY(
            SELECT m.id FROM outbox.messages AS m
             WHERE m.endpoint = p_endpoint AND m.lease_token IS NULL AND m.attempts = 0
               AND m.available_at <= v_now
             ORDER BY m.priority DESC, m.available_at, m.seq
             LIMIT p_n
               FOR UPDATE SKIP LOCKED);
        RETURN;
    END IF;
    leads := '{}';

    -- Per-key rules: look at a bounded number of candidates; parked ones move
    -- out of the way, so the next claim sees fresh ones.
    IF p_retries THEN
        OPEN v_cur FOR
            SELECT m.id, m.key, m.seq, m.payload, m.created_at FROM outbox.messages AS m
             WHERE m.endpoint = p_endpoint AND m.lease_token IS NULL AND m.attempts > 0
               AND m.available_at <= v_now
             ORDER BY m.priority DESC, m.available_at, m.seq
             LIMIT p_n * 4 + 16
               FOR UPDATE SKIP LOCKED;
    ELSE
        OPEN v_cur FOR
            SELECT m.id, m.key, m.seq, m.payload, m.created_at FROM outbox.messages AS m
             WHERE m.endpoint = p_endpoint AND m.lease_token IS NULL AND m.attempts = 0
               AND m.available_at <= v_now
             ORDER BY m.priority DESC, m.available_at, m.seq
             LIMIT p_n * 4 + 16
               FOR UPDATE SKIP LOCKED;
    END IF;
    LOOP
        FETCH v_cur INTO c;
        EXIT WHEN NOT FOUND OR cardinality(ids) >= p_n;
        CONTINUE WHEN c.id = ANY (ids);  -- already riding with an earlier one
        IF c.key IS NULL THEN
            ids := ids || c.id;
            leads := leads || NULL::uuid;
            CONTINUE;
        END IF;
        IF p_ordered THEN
            PERFORM 1 FROM outbox.key_blocks AS b WHERE b.endpoint = p_endpoint AND b.key = c.key;
            IF FOUND THEN  -- released by `outbox endpoint unblock`, which brings these back
                UPDATE outbox.messages AS m SET available_at = v_now + interval '1 hour', held = 'block'
                 WHERE m.id = c.id;
                CONTINUE;
            END IF;
            SELECT h.available_at INTO v_head
              FROM outbox.messages AS h
             WHERE h.endpoint = p_endpoint AND h.key = c.key AND h.seq < c.seq
             ORDER BY h.seq
             LIMIT 1;
            IF FOUND THEN  -- an earlier message of this key is unfinished
                UPDATE outbox.messages AS m
                   SET available_at = greatest(v_head, v_now) + interval '5 seconds', held = 'order'
                 WHERE m.id = c.id;
                CONTINUE;
            END IF;
        END IF;
        v_spacing := CASE WHEN c.key LIKE '-%' AND p_group_spacing IS NOT NULL THEN p_group_spacing
                          ELSE p_key_spacing END;
        IF p_ordered THEN
            -- Ordered keys are held too (interval 0): one message in flight per
            -- key, even when an earlier-numbered one commits after a later one
            -- was already sent.
            v_spacing := coalesce(v_spacing, 0);
        END IF;
        IF v_spacing IS NOT NULL THEN
            -- Take the key until this message finishes (or its lease runs out):
            -- a key's next message starts only after the previous one ended
            -- plus the interval, so the receiver sees the interval too. The
            -- try-lock first: claimers never wait on each other for a key (they
            -- met their candidates in different orders and deadlocked).
            IF NOT pg_try_advisory_xact_lock(1869968483, hashtext(p_endpoint || E'\x1f' || c.key)) THEN
                UPDATE outbox.messages AS m
                   SET available_at = v_now + make_interval(secs => greatest(v_spacing, 0.05)),
                       held = 'key'
                 WHERE m.id = c.id;
                CONTINUE;
            END IF;
            -- Never wait on the key's row either: `finish` may be freeing it
            -- (and waiting for a row this claim holds). Locked means busy.
            SELECT k.next_at, k.holder INTO v_next, v_holder
              FROM outbox.key_limits AS k
             WHERE k.endpoint = p_endpoint AND k.key = c.key
               FOR UPDATE SKIP LOCKED;
            IF FOUND THEN
                v_taken := v_next <= v_now;
                IF v_taken THEN
                    UPDATE outbox.key_limits AS k
                       SET next_at = v_now + make_interval(secs => p_lease + v_spacing),
                           holder = c.id, spacing_seconds = v_spacing
                     WHERE k.endpoint = p_endpoint AND k.key = c.key;
                END IF;
            ELSE
                -- No row, or one someone holds (then busy: no INSERT, whose
                -- uniqueness check would wait for that holder).
                PERFORM 1 FROM outbox.key_limits AS k WHERE k.endpoint = p_endpoint AND k.key = c.key;
                v_taken := NOT FOUND;
                IF v_taken THEN
                    INSERT INTO outbox.key_limits AS k (endpoint, key, next_at, holder, spacing_seconds)
                    VALUES (p_endpoint, c.key, v_now + make_interval(secs => p_lease + v_spacing), c.id,
                            v_spacing)
                    ON CONFLICT (endpoint, key) DO NOTHING;
                    v_taken := FOUND;
                END IF;
                v_holder := c.id;  -- busy if not taken
            END IF;
            IF NOT v_taken THEN
                UPDATE outbox.messages AS m
                   SET available_at = CASE WHEN v_holder IS NULL THEN v_next
                                           ELSE v_now + make_interval(secs => greatest(v_spacing, 0.05))
                                      END,
                       held = CASE WHEN p_ordered AND v_holder IS NOT NULL THEN 'order' ELSE 'key' END
                 WHERE m.id = c.id;
                CONTINUE;
            END IF;
        END IF;
        ids := ids || c.id;
        leads := leads || NULL::uuid;
        IF p_coalesce IS NOT NULL AND coalesce(c.payload ->> 'method', 'sendMessage') = 'sendMessage'
           AND jsonb_typeof(c.payload -> 'text') = 'string' THEN
            v_total := char_length(c.payload ->> 'text');
            v_last := c.seq;
            FOR f IN
                SELECT m.id, m.seq, char_length(m.payload ->> 'text') AS length
                  FROM outbox.messages AS m
                 WHERE m.endpoint = p_endpoint AND m.key = c.key AND m.seq > c.seq
                   AND m.lease_token IS NULL
                   AND (m.available_at <= v_now OR m.held IS NOT NULL)
                   AND m.created_at <= c.created_at + make_interval(secs => p_coalesce)
                   AND jsonb_typeof(m.payload -> 'text') = 'string'
                   AND (m.payload - 'text') = (c.payload - 'text')
                 ORDER BY m.seq
                 LIMIT 50
                   FOR UPDATE SKIP LOCKED
            LOOP
                -- Only the very next messages of the key, in order: stop at a gap
                -- (a message in between that another claimer holds or that differs).
                EXIT WHEN EXISTS (SELECT 1 FROM outbox.messages AS x
                                   WHERE x.endpoint = p_endpoint AND x.key = c.key
                                     AND x.seq > v_last AND x.seq < f.seq);
                EXIT WHEN v_total + 2 + f.length > 4096;
                v_total := v_total + 2 + f.length;
                v_last := f.seq;
                ids := ids || f.id;
                leads := leads || c.id;
            END LOOP;
        END IF;
    END LOOP;
    CLOSE v_cur;
END
$fn$;
-- split --
-- One endpoint's part of a claim: at most p_quota messages, leased to p_worker.
CREATE FUNCTION outbox._claim_endpoint(
    p_endpoint text, p_quota integer, p_token uuid, p_lease double precision, p_worker text,
    p_horizon double precision, p_first_share double precision)
RETURNS TABLE (id uuid, endpoint text, payload text, headers text, key text, attempts integer,
               first_attempt_at timestamptz, seq bigint, delay double precision, probe boolean,
               lead uuid)
LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
DECLARE
    v_now timestamptz := now();
    e record;
    v_probe boolean := false;
    v_n integer := p_quota;
    v_T double precision;
    v_tau double precision := 0;
    v_start double precision := 0;  -- seconds from now to the first rate slot
    v_ids uuid[];
    v_leads uuid[];
    v_slots integer[];
    v_got integer := 0;  -- sends so far (a coalesced group is one send)
    v_pass integer;
    v_want integer;
    v_i integer;
BEGIN
    SELECT x.rate_limit, x.rate_burst, x.ordered, x.key_interval_ms, x.group_key_interval_ms,
           x.coalesce_ms,
           x.paused_at, x.disabled_at, s.circuit, s.open_until, s.probe_until, s.throttled_until, s.tat
      INTO e
      FROM outbox.endpoints AS x JOIN outbox.endpoint_state AS s ON s.endpoint = x.name
     WHERE x.name = p_endpoint;
    IF NOT FOUND OR e.paused_at IS NOT NULL OR e.disabled_at IS NOT NULL
       OR e.throttled_until > v_now THEN
        RETURN;
    END IF;
    IF e.circuit <> 'closed' OR e.rate_limit IS NOT NULL THEN
        -- Probes and rate slots are handed out one claimer at a time; a claimer
        -- that finds another at it skips the endpoint this time (waiting here,
        -- with claims visiting endpoints in random order, deadlocked).
        SELECT x.rate_limit, x.rate_burst, x.ordered, x.key_interval_ms, x.group_key_interval_ms,
               x.coalesce_ms,
               x.paused_at, x.disabled_at, s.circuit, s.open_until, s.probe_until,
               s.throttled_until, s.tat
          INTO e
          FROM outbox.endpoints AS x JOIN outbox.endpoint_state AS s ON s.endpoint = x.name
         WHERE x.name = p_endpoint
           FOR UPDATE OF s SKIP LOCKED;
        IF NOT FOUND THEN
            RETURN;
        END IF;
        -- Slots count from now, not from the start of the claim's transaction.
        v_now := clock_timestamp();
        IF (e.circuit = 'open' AND e.open_until > v_now)
           OR (e.circuit = 'half_open' AND e.probe_until > v_now)
           OR e.throttled_until > v_now THEN
            RETURN;
        END IF;
        IF e.circuit <> 'closed' THEN  -- cool-down over: one probe (half-open)
            v_probe := true;
            v_n := 1;
        END IF;
    END IF;
    IF e.rate_limit IS NOT NULL THEN
        v_T := 1.0 / e.rate_limit;
        v_tau := (e.rate_burst - 1) * v_T;
        v_start := extract(epoch FROM greatest(e.tat, v_now) - v_now);
        v_n := least(v_n, greatest(0, floor((p_horizon + v_tau - v_start) / v_T)::integer + 1));
    END IF;
    IF v_n <= 0 THEN
        RETURN;
    END IF;
    -- Pass 1: retries, up to their share; 2: first attempts; 3: more retries.
    FOR v_pass IN 1..3 LOOP
        v_want := CASE WHEN v_pass = 1 THEN v_n - ceil(v_n * p_first_share)::integer
                       ELSE v_n - v_got END;
        SELECT p.ids, p.leads INTO v_ids, v_leads
          FROM outbox._pick(p_endpoint, v_want, v_pass <> 2, e.ordered, e.key_interval_ms / 1000.0,
                            e.group_key_interval_ms / 1000.0, p_lease, e.coalesce_ms / 1000.0) AS p;
        IF cardinality(v_ids) > 0 THEN
            -- Each send's rate slot: riders share their lead's.
            v_slots := '{}';
            FOR v_i IN 1..cardinality(v_ids) LOOP
                IF v_leads[v_i] IS NULL THEN
                    v_got := v_got + 1;
                END IF;
                v_slots := v_slots || (v_got - 1);
            END LOOP;
            RETURN QUERY
            WITH leased AS (
                UPDATE outbox.messages AS m
                   SET lease_token = p_token,
                       lease_expires_at = v_now + make_interval(secs => p_lease),
                       leased_by = p_worker,
                       first_attempt_at = coalesce(m.first_attempt_at, v_now),
                       held = NULL
                  FROM unnest(v_ids, v_leads, v_slots) AS p(id, lead, slot)
                 WHERE m.id = p.id
                RETURNING m.id, m.endpoint, m.payload::text AS payload, m.headers::text AS headers,
                          m.key, m.attempts, m.first_attempt_at, m.seq, p.slot, p.lead)
            SELECT l.id, l.endpoint, l.payload, l.headers, l.key, l.attempts, l.first_attempt_at,
                   l.seq,
                   CASE WHEN v_T IS NULL THEN 0.0
                        ELSE greatest(0.0, v_start + l.slot * v_T - v_tau) END,
                   v_probe,
                   l.lead
              FROM leased AS l;  -- no ORDER BY: each row carries its own slot
        END IF;
        EXIT WHEN v_got >= v_n;
    END LOOP;
    IF v_got > 0 AND (v_T IS NOT NULL OR v_probe) THEN
        UPDATE outbox.endpoint_state AS s
           SET tat = CASE WHEN v_T IS NULL THEN s.tat
                          ELSE v_now + make_interval(secs => v_start + v_got * v_T) END,
               circuit = CASE WHEN v_probe THEN 'half_open' ELSE s.circuit END,
               probe_until = CASE WHEN v_probe THEN v_now + make_interval(secs => p_lease)
                                  ELSE s.probe_until END,
               updated_at = v_now
         WHERE s.endpoint = p_endpoint;
    END IF;
END
$fn$;
-- split --
-- A worker's claim: up to p_limit messages over all endpoints, fairly.
-- p_horizon: how far ahead rate-limited sends may be scheduled (seconds);
-- p_first_share: the part of each endpoint's share kept for first attempts.
CREATE FUNCTION outbox._claim(
    p_limit integer, p_token uuid, p_lease double precision, p_worker text,
    p_horizon double precision, p_first_share double precision)
RETURNS TABLE (id uuid, endpoint text, payload text, headers text, key text, attempts integer,
               first_attempt_at timestamptz, seq bigint, delay double precision, probe boolean,
               lead uuid)
LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
DECLARE
    v_now timestamptz := now();
    v_names text[];
    v_full text[] := '{}';
    v_left integer := p_limit;
    v_quota integer;
    v_n integer;
    v_got integer;
    v_name text;
BEGIN
    v_names := ARRAY(
        SELECT x.name
          FROM outbox.endpoints AS x JOIN outbox.endpoint_state AS s ON s.endpoint = x.name
         WHERE x.paused_at IS NULL AND x.disabled_at IS NULL
           AND (s.throttled_until IS NULL OR s.throttled_until <= v_now)
           AND (s.circuit = 'closed'
                OR (s.circuit = 'open' AND s.open_until <= v_now)
                OR (s.circuit = 'half_open' AND s.probe_until <= v_now))
           AND (EXISTS (SELECT 1 FROM outbox.messages AS m
                         WHERE m.endpoint = x.name AND m.lease_token IS NULL AND m.attempts = 0
                           AND m.available_at <= v_now)
                OR EXISTS (SELECT 1 FROM outbox.messages AS m
                            WHERE m.endpoint = x.name AND m.lease_token IS NULL AND m.attempts > 0
                              AND m.available_at <= v_now))
         ORDER BY random());
    IF cardinality(v_names) = 0 THEN
        RETURN;
    END IF;
    v_quota := ceil(p_limit::numeric / cardinality(v_names))::integer;
    FOREACH v_name IN ARRAY v_names LOOP
        EXIT WHEN v_left <= 0;
        v_n := least(v_quota, v_left);
        RETURN QUERY SELECT * FROM outbox._claim_endpoint(
            v_name, v_n, p_token, p_lease, p_worker, p_horizon, p_first_share);
        GET DIAGNOSTICS v_got = ROW_COUNT;
        IF v_got >= v_n THEN
            v_full := v_full || v_name;
        END IF;
        v_left := v_left - v_got;
    END LOOP;
    FOREACH v_name IN ARRAY v_full LOOP  -- what the others left, to those that had more
        EXIT WHEN v_left <= 0;
        RETURN QUERY SELECT * FROM outbox._claim_endpoint(
            v_name, v_left, p_token, p_lease, p_worker, p_horizon, p_first_share);
        GET DIAGNOSTICS v_n = ROW_COUNT;
        v_left := v_left - v_n;
    END LOOP;
END
$fn$;
-- split --
-- What a worker saw of each endpoint since its last report, applied to the
-- shared state under the row lock: per endpoint, p_ok deliveries, p_failures
-- endpoint failures (5xx, timeouts, connection errors) of which p_trailing
-- came after the last success, the last failure's reason, a throttle (seconds
-- the receiver asked the whole endpoint to wait, e.g. Telegram's 429) and a
-- reason to pause it (a webhook's 410).
--
-- The breaker: p_trailing (or, with no success, the running count) reaching
-- breaker_failures opens the circuit for breaker_cooldown; when a probe fails
-- the cool-down doubles, up to breaker_max_cooldown; a success closes it.
-- Failing without a success for disable_after disables the endpoint.
CREATE FUNCTION outbox._report_health(
    p_endpoints text[], p_ok integer[], p_failures integer[], p_trailing integer[],
    p_last_failure text[], p_throttle double precision[], p_pause text[])
RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    r record;
    v record;
    v_count integer;
    v_since timestamptz;
    v_cooldown double precision;
BEGIN
    FOR r IN
        SELECT * FROM unnest(p_endpoints, p_ok, p_failures, p_trailing, p_last_failure, p_throttle,
                             p_pause) AS u(endpoint, ok, failures, since_ok, last_failure, throttle, pause)
         ORDER BY u.endpoint  -- a fixed lock order: concurrent reports cannot deadlock
    LOOP
        SELECT s.circuit, s.consecutive_failures, s.failing_since, s.cooldown_seconds,
               x.breaker_failures, extract(epoch FROM x.breaker_cooldown) AS base,
               extract(epoch FROM x.breaker_max_cooldown) AS max_cooldown, x.disable_after,
               x.disabled_at
          INTO v
          FROM outbox.endpoint_state AS s JOIN outbox.endpoints AS x ON x.name = s.endpoint
         WHERE s.endpoint = r.endpoint
           FOR UPDATE OF s;
        CONTINUE WHEN NOT FOUND;
        IF r.ok > 0 AND r.since_ok = 0 THEN
            IF v.circuit <> 'closed' OR v.consecutive_failures > 0 OR v.failing_since IS NOT NULL THEN
                UPDATE outbox.endpoint_state AS s
                   SET circuit = 'closed', consecutive_failures = 0, failing_since = NULL,
                       open_until = NULL, cooldown_seconds = NULL, probe_until = NULL,
                       updated_at = now()
                 WHERE s.endpoint = r.endpoint;
            END IF;
        ELSIF r.failures > 0 THEN
            v_count := CASE WHEN r.ok > 0 THEN r.since_ok ELSE v.consecutive_failures + r.failures END;
            -- A success in this report ends the earlier failing run.
            v_since := CASE WHEN r.ok > 0 THEN now() ELSE coalesce(v.failing_since, now()) END;
            v_cooldown := NULL;
            IF v.circuit = 'half_open' THEN
                v_cooldown := least(v.max_cooldown, coalesce(v.cooldown_seconds, v.base) * 2);
            ELSIF v.circuit = 'closed' AND v_count >= v.breaker_failures THEN
                v_cooldown := v.base;
            END IF;
            UPDATE outbox.endpoint_state AS s
               SET consecutive_failures = v_count,
                   failing_since = v_since,
                   last_failure = r.last_failure,
                   circuit = CASE WHEN v_cooldown IS NULL THEN s.circuit ELSE 'open' END,
                   cooldown_seconds = coalesce(v_cooldown, s.cooldown_seconds),
                   open_until = CASE WHEN v_cooldown IS NULL THEN s.open_until
                                     ELSE now() + make_interval(secs => v_cooldown) END,
                   probe_until = CASE WHEN v_cooldown IS NULL THEN s.probe_until END,
                   updated_at = now()
             WHERE s.endpoint = r.endpoint;
            IF v.disabled_at IS NULL AND v_since <= now() - v.disable_after THEN
                UPDATE outbox.endpoints AS x
                   SET disabled_at = now(),
                       disabled_reason = format('failing without a success since %s (disable_after %s); last failure: %s',
                                                v_since, v.disable_after, r.last_failure)
                 WHERE x.name = r.endpoint;
            END IF;
        END IF;
        IF r.throttle > 0 THEN
            UPDATE outbox.endpoint_state AS s
               SET throttled_until = greatest(coalesce(s.throttled_until, now()),
                                              now() + make_interval(secs => r.throttle)),
                   updated_at = now()
             WHERE s.endpoint = r.endpoint;
        END IF;
        IF r.pause IS NOT NULL THEN
            UPDATE outbox.endpoints AS x
               SET paused_at = now(), paused_reason = r.pause
             WHERE x.name = r.endpoint AND x.paused_at IS NULL;
        END IF;
    END LOOP;
END
$fn$;
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
