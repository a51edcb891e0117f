-- Functions and views of revision 0001. Frozen with the revision: later
-- revisions replace them with CREATE OR REPLACE in files of their own.
-- Statements are separated by `-- split --` lines.
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
--   Only a failing message pays for outbox._message_problem()'s detail.
-- * Wake-ups only when a worker asked for them (outbox.config.wakeup_until):
--   NOTIFY serialises committing transactions; busy workers don't need it.
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
                               'connection') THEN
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
-- The Bot API methods whose required fields we know. Other method names pass
-- unchecked: the Bot API grows faster than this list.
CREATE FUNCTION outbox._telegram_problem(payload jsonb) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $fn$
DECLARE
    v_method text;
    v_missing text;
    v_text text;
BEGIN
    IF payload ? 'method' AND jsonb_typeof(payload -> 'method') <> 'string' THEN
        RETURN 'OB002¦payload.method¦must be a string naming a Bot API method';
    END IF;
    v_method := coalesce(payload ->> 'method', 'sendMessage');
    IF v_method !~ '^[A-Za-z]{1,64}$' THEN
        RETURN 'OB002¦payload.method¦' || quote_literal(v_method) || ' is not a Bot API method name';
    END IF;
    SELECT f.name INTO v_missing
      FROM jsonb_array_elements_text(coalesce('{
            "sendMessage": ["chat_id", "text"],
            "sendPhoto": ["chat_id", "photo"],
            "sendAudio": ["chat_id", "audio"],
            "sendDocument": ["chat_id", "document"],
            "sendVideo": ["chat_id", "video"],
            "sendAnimation": ["chat_id", "animation"],
            "sendVoice": ["chat_id", "voice"],
            "sendVideoNote": ["chat_id", "video_note"],
            "sendMediaGroup": ["chat_id", "media"],
            "sendLocation": ["chat_id", "latitude", "longitude"],
            "sendVenue": ["chat_id", "latitude", "longitude", "title", "address"],
            "sendContact": ["chat_id", "phone_number", "first_name"],
            "sendPoll": ["chat_id", "question", "options"],
            "sendDice": ["chat_id"],
            "sendSticker": ["chat_id", "sticker"],
            "sendChatAction": ["chat_id", "action"],
            "forwardMessage": ["chat_id", "from_chat_id", "message_id"],
            "copyMessage": ["chat_id", "from_chat_id", "message_id"],
            "editMessageText": ["text"],
            "deleteMessage": ["chat_id", "message_id"],
            "pinChatMessage": ["chat_id", "message_id"],
            "answerCallbackQuery": ["callback_query_id"]
          }'::jsonb -> v_method, '[]')) WITH ORDINALITY AS f(name, i)
     WHERE NOT payload ? f.name
     ORDER BY f.i
     LIMIT 1;
    IF v_missing IS NOT NULL THEN
        RETURN format('OB002¦payload.%s¦is required by the Bot API method %s', v_missing, v_method);
    END IF;
    IF payload ? 'chat_id' AND NOT (
           (jsonb_typeof(payload -> 'chat_id') = 'number'
              AND (payload ->> 'chat_id') ~ '^-?[0-9]{1,20}$')
        OR (jsonb_typeof(payload -> 'chat_id') = 'string'
              AND (payload ->> 'chat_id') ~ '^(-?[0-9]{1,20}|@[A-Za-z0-9_]{1,64})$')) THEN
        RETURN 'OB002¦payload.chat_id¦must be an integer chat id or an @username';
    END IF;
    IF payload ? 'text' THEN
        IF jsonb_typeof(payload -> 'text') <> 'string' THEN
            RETURN 'OB002¦payload.text¦must be a string';
        END IF;
        v_text := payload ->> 'text';
        IF btrim(v_text) = '' THEN
            RETURN 'OB002¦payload.text¦must not be empty or blank';
        ELSIF char_length(v_text) > 4096 THEN
            RETURN format('OB002¦payload.text¦is %s characters, over the Bot API limit of 4096',
                          char_length(v_text));
        END IF;
    END IF;
    IF payload ? 'caption' THEN
        IF jsonb_typeof(payload -> 'caption') <> 'string' THEN
            RETURN 'OB002¦payload.caption¦must be a string';
        ELSIF char_length(payload ->> 'caption') > 1024 THEN
            RETURN format('OB002¦payload.caption¦is %s characters, over the Bot API limit of 1024',
                          char_length(payload ->> 'caption'));
        END IF;
    END IF;
    RETURN NULL;
END
$fn$;
-- split --
-- The first problem of one message, or NULL: the detailed path, run only for
-- a message that failed the fast check (and by enqueue_many to find which).
CREATE FUNCTION outbox._message_problem(
    channel text, payload jsonb, key text, idempotency_key text, priority integer,
    deliver_at timestamptz, headers jsonb, max_payload_bytes integer)
RETURNS text LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $fn$
DECLARE
    v_size integer;
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
    RETURN coalesce(
        CASE WHEN headers IS NOT NULL THEN outbox._headers_problem(headers) END,
        CASE WHEN channel = 'telegram' THEN outbox._telegram_problem(payload) END);
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
           AND NOT EXISTS (SELECT 1 FROM outbox.messages AS m WHERE m.id = k.message_id)
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
        (v_id, enqueue.endpoint, enqueue.payload, enqueue.headers, enqueue.key,
         enqueue.idempotency_key, coalesce(enqueue.priority, 0),
         greatest(coalesce(enqueue.deliver_at, now()), now()));
    IF v_wake THEN
        PERFORM outbox._wake_workers();
    END IF;
    RETURN v_id;
END
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
CREATE FUNCTION outbox.enqueue_many(
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
           AND NOT EXISTS (SELECT 1 FROM outbox.messages AS x WHERE x.id = k.message_id);
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
    SELECT v_ids[m.i], m.endpoint, m.payload, m.hdrs, m.key, m.idem, coalesce(m.priority, 0),
           greatest(coalesce(m.deliver_at, now()), now())
      FROM unnest(endpoints, payloads, keys, idempotency_keys, priorities, deliver_ats, headers)
           WITH ORDINALITY AS m(endpoint, payload, key, idem, priority, deliver_at, hdrs, i)
     WHERE v_final[m.i] = v_ids[m.i]
     ORDER BY m.i;
    IF v_wake THEN
        PERFORM outbox._wake_workers();
    END IF;
    RETURN v_final;
END
$fn$;
-- split --
COMMENT ON FUNCTION outbox.enqueue(text, jsonb, text, text, integer, timestamptz, jsonb) IS
'Insert one message inside the caller''s transaction and return its id. Bad input raises SQLSTATE OB001 (unknown endpoint), OB002 (invalid argument) or OB003 (too large), message "field: problem"; nothing is inserted. A repeated idempotency_key for the endpoint, within outbox.config.dedupe_window, returns the first message''s id.';
-- split --
COMMENT ON FUNCTION outbox.enqueue_many(text[], jsonb[], text[], text[], integer[], timestamptz[], jsonb[]) IS
'Insert many messages in one call. The arrays are parallel; a NULL array means defaults. Returns the ids in input order. If any row is rejected nothing is inserted and the error names it as messages[i].field.';
-- split --
-- pending: due and not leased; scheduled: not yet due (a later first delivery
-- or a retry waiting for its time); oldest_pending_seconds: how long the
-- oldest due message has waited for a worker (the queue's lag). Attempt
-- figures are bounded to the last hour and read through
-- attempts_endpoint_started_idx.
CREATE VIEW outbox.stats AS
SELECT e.name AS endpoint,
       coalesce(m.pending, 0) AS pending,
       coalesce(m.scheduled, 0) AS scheduled,
       coalesce(m.in_flight, 0) AS in_flight,
       (SELECT count(*) FROM outbox.dead_letters AS d WHERE d.endpoint = e.name) AS dead,
       coalesce(a.delivered, 0) AS delivered_last_hour,
       coalesce(a.failed, 0) AS failed_attempts_last_hour,
       a.p95_ms AS p95_latency_ms_last_hour,
       coalesce(m.oldest_pending_seconds, 0) AS oldest_pending_seconds
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
                FILTER (WHERE t.outcome = 'delivered') AS p95_ms
         FROM outbox.attempts AS t
        WHERE t.endpoint = e.name AND t.started_at > now() - interval '1 hour') AS a ON true;
-- split --
COMMENT ON VIEW outbox.stats IS
'One row per endpoint: pending (due), scheduled (not yet due), in flight, dead letters, and the last hour''s deliveries, failed attempts and p95 latency; oldest_pending_seconds is the queue''s lag.'
