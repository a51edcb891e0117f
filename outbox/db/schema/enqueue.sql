-- outbox.enqueue() and outbox.enqueue_many(): what every producer, in any
-- language, passes through. The current definitions (`outbox migrate` applies
-- this file as it stands; see outbox/db/schema.py). Statements are separated
-- by `-- split --` lines.
--
-- Why these functions look the way they do (measured on PostgreSQL 15, backend
-- CPU per single-row transaction; a prepared bare INSERT costs ~75 µs):
-- * plpgsql, not SQL-language functions: before PostgreSQL 18 a SQL function
--   that cannot be inlined is parsed and planned on every call (~250 µs).
-- * SECURITY INVOKER, no SET clause: `SET search_path` on the function cost
--   ~25 µs per call and SECURITY DEFINER ~14 µs. Least privilege comes from
--   column-level grants instead (the producer role reads endpoints(name,
--   channel) and messages(id), never payloads or secrets), so every object
--   here is schema-qualified for correctness, not as a security boundary.
-- * One combined IF for the checks every message passes: plpgsql initialises
--   each expression once per transaction, so ten small IFs cost more than one.
--   Only a failing message, or one whose channel checks its payload or gives
--   it a default key, pays for outbox._message_problem()'s detail.
-- * Wake-ups only when a worker asked for them (outbox.config.wakeup_until):
--   NOTIFY serialises committing transactions; busy workers don't need it.
--
-- What depends on the channel comes from its row in outbox.channels, written
-- from the channel's declaration in Python (outbox/deliver/channels/): a
-- payload check (a function of the payload returning a problem or NULL) and
-- a default key (a payload field). Nothing here names a channel.
--
-- Problems travel as 'SQLSTATE¦field¦problem' (no code or field holds ¦);
-- outbox._raise_problem() turns one into an error with the field both in the
-- message ("field: problem") and in the COLUMN field.
CREATE FUNCTION outbox._raise_problem(problem text, prefix text DEFAULT '') RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    v_code text := split_part(problem, '¦', 1);
    v_field text := split_part(problem, '¦', 2);
BEGIN
    RAISE EXCEPTION USING
        ERRCODE = v_code,
        MESSAGE = prefix || v_field || ': ' || substr(problem, length(v_code) + length(v_field) + 3),
        COLUMN = prefix || v_field;
END
$fn$;
-- split --
CREATE FUNCTION outbox._headers_problem(headers jsonb) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $fn$
DECLARE
    h record;
BEGIN
    IF jsonb_typeof(headers) <> 'object' THEN
        RETURN 'OB002¦headers¦must be a JSON object of header names to string values';
    ELSIF octet_length(headers::text) > 8192 THEN
        RETURN 'OB002¦headers¦are over the limit of 8192 bytes';
    END IF;
    FOR h IN SELECT e.key, e.value FROM jsonb_each(headers) AS e ORDER BY e.key LOOP
        IF h.key !~ '^[!#$%&''*+.^_`|~0-9A-Za-z-]{1,128}$' THEN
            RETURN 'OB002¦headers¦' || quote_literal(h.key) || ' is not a valid header name';
        ELSIF lower(h.key) IN ('webhook-id', 'webhook-timestamp', 'webhook-signature',
                               'content-length', 'content-type', 'host', 'transfer-encoding',
                               'connection', 'outbox-topic', 'outbox-replay') THEN
            RETURN 'OB002¦headers.' || h.key || '¦is set by outbox and cannot be overridden';
        ELSIF jsonb_typeof(h.value) <> 'string' THEN
            RETURN 'OB002¦headers.' || h.key || '¦must be a string, not ' || jsonb_typeof(h.value);
        ELSIF (h.value #>> '{}') ~ '[\x01-\x08\x0a-\x1f\x7f]' THEN
            RETURN 'OB002¦headers.' || h.key || '¦must not contain control characters';
        END IF;
    END LOOP;
    RETURN NULL;
END
$fn$;
-- split --
-- The first problem of one message, or NULL: the detailed path, run only for
-- a message that failed the fast check (and by enqueue_many to find which).
-- payload_check names the channel's payload check (outbox.channels), if any:
-- a function taking the payload and returning a problem or NULL.
CREATE FUNCTION outbox._message_problem(
    payload_check text, payload jsonb, key text, idempotency_key text, priority integer,
    deliver_at timestamptz, headers jsonb, max_payload_bytes integer)
RETURNS text LANGUAGE plpgsql STABLE AS $fn$
DECLARE
    v_size integer;
    v_problem text;
BEGIN
    IF payload IS NULL THEN
        RETURN 'OB002¦payload¦is required';
    ELSIF jsonb_typeof(payload) <> 'object' THEN
        RETURN 'OB002¦payload¦must be a JSON object, not ' || jsonb_typeof(payload);
    END IF;
    v_size := octet_length(payload::text);
    IF v_size > max_payload_bytes THEN
        RETURN format('OB003¦payload¦is %s bytes, over the limit of %s bytes (outbox.config.max_payload_bytes)',
                      v_size, max_payload_bytes);
    ELSIF key = '' THEN
        RETURN 'OB002¦key¦must not be empty (pass NULL for no key)';
    ELSIF char_length(key) > 255 THEN
        RETURN format('OB002¦key¦is %s characters, over the limit of 255', char_length(key));
    ELSIF idempotency_key = '' THEN
        RETURN 'OB002¦idempotency_key¦must not be empty (pass NULL for no key)';
    ELSIF char_length(idempotency_key) > 255 THEN
        RETURN format('OB002¦idempotency_key¦is %s characters, over the limit of 255',
                      char_length(idempotency_key));
    ELSIF priority NOT BETWEEN -32768 AND 32767 THEN
        RETURN format('OB002¦priority¦is %s, outside the range -32768..32767', priority);
    ELSIF NOT isfinite(deliver_at) THEN
        RETURN 'OB002¦deliver_at¦must be a finite timestamp, not ' || deliver_at::text;
    END IF;
    IF headers IS NOT NULL THEN
        v_problem := outbox._headers_problem(headers);
    END IF;
    IF v_problem IS NULL AND payload_check IS NOT NULL THEN
        -- regproc: the name must be an existing function, quoted as one.
        EXECUTE format('SELECT %s($1)', payload_check::regproc) INTO v_problem USING payload;
    END IF;
    RETURN v_problem;
END
$fn$;
-- split --
-- What a message lacks that its endpoint's target template needs (a broker
-- endpoint's subject, routing key, stream or topic: {key}, {id} and
-- {payload.FIELD}; {{ and }} are literal braces), or NULL. The template was
-- checked when the endpoint was added (outbox/settings/template.py reads it
-- the same way); a payload field must be a string, a number or a boolean.
CREATE FUNCTION outbox._target_problem(target text, payload jsonb, key text)
RETURNS text LANGUAGE plpgsql IMMUTABLE AS $fn$
DECLARE
    v_field text;
    v_type text;
BEGIN
    FOR v_field IN
        SELECT m[1] FROM regexp_matches(replace(replace(target, '{{', ''), '}}', ''),
                                        '\{([^{}]*)\}', 'g') AS m
    LOOP
        IF v_field = 'key' AND key IS NULL THEN
            RETURN format('OB002¦key¦is required: the endpoint''s target %L uses {key}', target);
        ELSIF v_field LIKE 'payload.%' THEN
            v_type := jsonb_typeof(payload #> string_to_array(substr(v_field, 9), '.'));
            IF v_type IS NULL OR v_type NOT IN ('string', 'number', 'boolean') THEN
                RETURN format('OB002¦%s¦is %s, but the endpoint''s target %L needs a string, '
                              'number or boolean there', v_field,
                              coalesce('a JSON ' || nullif(v_type, 'null'), 'missing'), target);
            END IF;
        END IF;
    END LOOP;
    RETURN NULL;
END
$fn$;
-- split --
-- What is wrong with a message's W3C trace context, or NULL. The fast check
-- in enqueue() passes the usual version-00 traceparent without calling this;
-- anything else (a later version, a tracestate, a mistake) comes here.
-- outbox/produce/trace.py applies the same rules in Python.
CREATE FUNCTION outbox._trace_problem(traceparent text, tracestate text) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $fn$
DECLARE
    v_members text[];
    v_member text;
BEGIN
    IF traceparent IS NULL THEN
        IF tracestate IS NOT NULL THEN
            RETURN 'OB002¦tracestate¦is given without a traceparent';
        END IF;
        RETURN NULL;
    END IF;
    IF traceparent !~ '^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}(-|$)' THEN
        RETURN 'OB002¦traceparent¦is not a W3C traceparent: expected 00-<32 hex trace id>-'
               '<16 hex parent id>-<2 hex flags>, lower case';
    ELSIF left(traceparent, 2) = 'ff' THEN
        RETURN 'OB002¦traceparent¦has version ff, which W3C Trace Context forbids';
    ELSIF left(traceparent, 2) = '00' AND char_length(traceparent) <> 55 THEN
        RETURN 'OB002¦traceparent¦is not a W3C traceparent: version 00 has exactly 55 characters';
    ELSIF char_length(traceparent) > 512 THEN
        RETURN 'OB002¦traceparent¦is over the limit of 512 characters';
    ELSIF substr(traceparent, 4, 32) = repeat('0', 32) THEN
        RETURN 'OB002¦traceparent¦has an all-zero trace id, which W3C Trace Context calls invalid';
    ELSIF substr(traceparent, 37, 16) = repeat('0', 16) THEN
        RETURN 'OB002¦traceparent¦has an all-zero parent id, which W3C Trace Context calls invalid';
    END IF;
    IF tracestate IS NULL THEN
        RETURN NULL;
    ELSIF char_length(tracestate) > 512 THEN
        RETURN 'OB002¦tracestate¦is over the limit of 512 characters';
    END IF;
    v_members := ARRAY(SELECT btrim(m, E' \t') FROM unnest(string_to_array(tracestate, ',')) AS m
                        WHERE btrim(m, E' \t') <> '');
    IF cardinality(v_members) > 32 THEN
        RETURN format('OB002¦tracestate¦has %s list members, more than the 32 W3C Trace Context allows',
                      cardinality(v_members));
    END IF;
    FOREACH v_member IN ARRAY v_members LOOP
        IF v_member !~ ('^([a-z0-9][-_*/a-z0-9]{0,255}|[a-z0-9][-_*/a-z0-9]{0,240}@[a-z][-_*/a-z0-9]{0,13})'
                        '=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]$') THEN
            RETURN 'OB002¦tracestate¦' || quote_literal(left(v_member, 64))
                   || ' is not a W3C tracestate list member (key=value)';
        END IF;
    END LOOP;
    RETURN NULL;
END
$fn$;
-- split --
-- Whether a message is still in the hot table: what taking over an expired
-- idempotency key asks. SECURITY DEFINER so that a producer role needs no
-- read access to outbox.messages at all; called only when a key collides.
CREATE FUNCTION outbox._message_unfinished(p_id uuid) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
SELECT EXISTS (SELECT 1 FROM outbox.messages AS m WHERE m.id = p_id)
$fn$;
-- split --
-- Idle workers set outbox.config.wakeup_until a few seconds ahead and LISTEN
-- on outbox_wakeup. Among concurrent producers only the one that wins one of
-- two try-locks sends the NOTIFY (its commit wakes the workers); the others
-- commit in parallel and rely on it, or on the workers' polling.
CREATE FUNCTION outbox._wake_workers() RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    IF pg_try_advisory_xact_lock(1869968482, 0) OR pg_try_advisory_xact_lock(1869968482, 1) THEN
        PERFORM pg_notify('outbox_wakeup', '');
    END IF;
END
$fn$;
-- split --
CREATE FUNCTION outbox.enqueue(
    endpoint text,
    payload jsonb,
    key text DEFAULT NULL,
    idempotency_key text DEFAULT NULL,
    priority integer DEFAULT 0,
    deliver_at timestamptz DEFAULT NULL,
    headers jsonb DEFAULT NULL,
    traceparent text DEFAULT NULL,
    tracestate text DEFAULT NULL)
RETURNS uuid
LANGUAGE plpgsql VOLATILE
AS $fn$
DECLARE
    v_plain boolean;
    v_check text;
    v_key_field text;
    v_target text;
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
    SELECT ch.payload_check IS NULL AND ch.default_key IS NULL AND (strpos(e.target, '{') > 0) IS NOT TRUE,
           ch.payload_check, ch.default_key, e.target,
           c.max_payload_bytes, c.dedupe_window, c.wakeup_until > now()
      INTO v_plain, v_check, v_key_field, v_target, v_max, v_window, v_wake
      FROM outbox.endpoints AS e
      JOIN outbox.channels AS ch ON ch.name = e.channel
     CROSS JOIN outbox.config AS c
     WHERE e.name = enqueue.endpoint;
    -- The fast check every good message passes; see the header of this file.
    -- An unknown endpoint (v_plain NULL) or a NULL payload makes it NULL, not
    -- false, hence IS NOT TRUE. The checks stay in this plpgsql expression: in
    -- the SELECT above they would be constant-folded into custom plans, which
    -- the plan cache then prefers and rebuilds on every call (~40 µs).
    IF (v_plain
        AND jsonb_typeof(enqueue.payload) = 'object'
        AND octet_length(enqueue.payload::text) <= v_max
        AND (enqueue.key IS NULL OR (enqueue.key <> '' AND char_length(enqueue.key) <= 255))
        AND (enqueue.idempotency_key IS NULL
             OR (enqueue.idempotency_key <> '' AND char_length(enqueue.idempotency_key) <= 255))
        AND coalesce(enqueue.priority, 0) BETWEEN -32768 AND 32767
        AND (enqueue.deliver_at IS NULL OR isfinite(enqueue.deliver_at))
        AND enqueue.headers IS NULL
        AND (enqueue.traceparent IS NULL
             OR enqueue.traceparent ~ '^00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$')
        AND enqueue.tracestate IS NULL) IS NOT TRUE THEN
        IF v_plain IS NULL THEN
            IF enqueue.endpoint IS NULL THEN
                PERFORM outbox._raise_problem('OB002¦endpoint¦is required');
            END IF;
            RAISE EXCEPTION USING ERRCODE = 'OB001',
                MESSAGE = 'endpoint: unknown endpoint ' || quote_literal(enqueue.endpoint),
                HINT = 'create it first with `outbox endpoint add`',
                COLUMN = 'endpoint';
        END IF;
        v_problem := outbox._message_problem(
            v_check, enqueue.payload, enqueue.key, enqueue.idempotency_key,
            coalesce(enqueue.priority, 0), enqueue.deliver_at, enqueue.headers, v_max);
        IF v_problem IS NULL AND strpos(v_target, '{') > 0 THEN
            v_problem := outbox._target_problem(v_target, enqueue.payload, enqueue.key);
        END IF;
        IF v_problem IS NULL AND (enqueue.traceparent IS NOT NULL OR enqueue.tracestate IS NOT NULL) THEN
            v_problem := outbox._trace_problem(enqueue.traceparent, enqueue.tracestate);
        END IF;
        IF v_problem IS NOT NULL THEN
            PERFORM outbox._raise_problem(v_problem);
        END IF;
        -- The channel's natural key (a chat, say: per-chat limits and order).
        IF enqueue.key IS NULL AND v_key_field IS NOT NULL THEN
            v_key := enqueue.payload ->> v_key_field;
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
        (id, endpoint, payload, headers, key, idempotency_key, priority, available_at,
         traceparent, tracestate)
    VALUES
        (v_id, enqueue.endpoint, enqueue.payload, enqueue.headers, v_key,
         enqueue.idempotency_key, coalesce(enqueue.priority, 0),
         greatest(coalesce(enqueue.deliver_at, now()), now()),
         enqueue.traceparent, enqueue.tracestate);
    IF v_wake THEN
        PERFORM outbox._wake_workers();
    END IF;
    RETURN v_id;
END
$fn$;
-- split --
CREATE FUNCTION outbox.enqueue_many(
    endpoints text[],
    payloads jsonb[],
    keys text[] DEFAULT NULL,
    idempotency_keys text[] DEFAULT NULL,
    priorities integer[] DEFAULT NULL,
    deliver_ats timestamptz[] DEFAULT NULL,
    headers jsonb[] DEFAULT NULL,
    traceparents text[] DEFAULT NULL,
    tracestates text[] DEFAULT NULL)
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
            ('headers', cardinality(headers)), ('traceparents', cardinality(traceparents)),
            ('tracestates', cardinality(tracestates))) AS a(name, len)
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
           coalesce(outbox._message_problem(ch.payload_check, m.payload, m.key, m.idem,
                                            coalesce(m.priority, 0), m.deliver_at, m.hdrs, v_max),
                    CASE WHEN strpos(e.target, '{') > 0
                         THEN outbox._target_problem(e.target, m.payload, m.key) END,
                    outbox._trace_problem(m.tp, m.ts)) AS problem
      INTO v_bad
      FROM unnest(endpoints, payloads, keys, idempotency_keys, priorities, deliver_ats, headers,
                  traceparents, tracestates)
           WITH ORDINALITY AS m(endpoint, payload, key, idem, priority, deliver_at, hdrs, tp, ts, i)
      LEFT JOIN outbox.endpoints AS e ON e.name = m.endpoint
      LEFT JOIN outbox.channels AS ch ON ch.name = e.channel
     WHERE e.name IS NULL
        OR (jsonb_typeof(m.payload) = 'object'
                AND octet_length(m.payload::text) <= v_max
                AND (m.key IS NULL OR (m.key <> '' AND char_length(m.key) <= 255))
                AND (m.idem IS NULL OR (m.idem <> '' AND char_length(m.idem) <= 255))
                AND coalesce(m.priority, 0) BETWEEN -32768 AND 32767
                AND (m.deliver_at IS NULL OR isfinite(m.deliver_at))
                AND m.hdrs IS NULL
                AND (m.tp IS NULL
                     OR m.tp ~ '^00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$')
                AND m.ts IS NULL
                AND ch.payload_check IS NULL
                AND (strpos(e.target, '{') > 0) IS NOT TRUE) IS NOT TRUE  -- a NULL payload makes it NULL
           AND coalesce(outbox._message_problem(ch.payload_check, m.payload, m.key, m.idem,
                                                coalesce(m.priority, 0), m.deliver_at, m.hdrs,
                                                v_max),
                        CASE WHEN strpos(e.target, '{') > 0
                             THEN outbox._target_problem(e.target, m.payload, m.key) END,
                        outbox._trace_problem(m.tp, m.ts)) IS NOT NULL
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
        (id, endpoint, payload, headers, key, idempotency_key, priority, available_at,
         traceparent, tracestate)
    SELECT v_ids[m.i], m.endpoint, m.payload, m.hdrs,
           coalesce(m.key, m.payload ->> ch.default_key),
           m.idem, coalesce(m.priority, 0), greatest(coalesce(m.deliver_at, now()), now()),
           m.tp, m.ts
      FROM unnest(endpoints, payloads, keys, idempotency_keys, priorities, deliver_ats, headers,
                  traceparents, tracestates)
           WITH ORDINALITY AS m(endpoint, payload, key, idem, priority, deliver_at, hdrs, tp, ts, i)
      JOIN outbox.endpoints AS e ON e.name = m.endpoint
      JOIN outbox.channels AS ch ON ch.name = e.channel
     WHERE v_final[m.i] = v_ids[m.i]
     ORDER BY m.i;
    IF v_wake THEN
        PERFORM outbox._wake_workers();
    END IF;
    RETURN v_final;
END
$fn$;
-- split --
COMMENT ON FUNCTION outbox.enqueue(text, jsonb, text, text, integer, timestamptz, jsonb, text, text) IS
'Insert one message inside the caller''s transaction and return its id. Bad input raises SQLSTATE OB001 (unknown endpoint), OB002 (invalid argument) or OB003 (too large), message "field: problem"; nothing is inserted. A repeated idempotency_key for the endpoint, within outbox.config.dedupe_window, returns the first message''s id. traceparent and tracestate (W3C Trace Context, optional) travel with the message onward, in the headers its receiver gets.';
-- split --
COMMENT ON FUNCTION outbox.enqueue_many(text[], jsonb[], text[], text[], integer[], timestamptz[], jsonb[], text[], text[]) IS
'Insert many messages in one call. The arrays are parallel; a NULL array means defaults. Returns the ids in input order. If any row is rejected nothing is inserted and the error names it as messages[i].field.';
