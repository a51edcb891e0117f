-- Topics: endpoints subscribe to topic patterns (outbox.subscriptions), and
-- outbox.publish() makes one message for each endpoint with a matching,
-- unpaused subscription whose filter the payload contains, in the caller's
-- transaction. Statements are separated by `-- split --` lines.
--
-- A topic is dot-separated words (letters, digits, '_', '-'), such as
-- order.created. A pattern's words match themselves; `*` matches one word and
-- `#`, as the last word, any number of words, none included (AMQP's rules):
-- order.* matches order.created, order.# matches order and order.created.eu.
CREATE FUNCTION outbox._topic_regex(pattern text) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $fn$
DECLARE
    v_words text[];
    v_regex text := '';
    v_word text;
    v_i integer := 0;
BEGIN
    IF pattern IS NULL OR char_length(pattern) > 255
       OR pattern !~ '^([A-Za-z0-9_-]+|\*|#)(\.([A-Za-z0-9_-]+|\*|#))*$' THEN
        PERFORM outbox._raise_problem(
            'OB002¦topic¦must be dot-separated words of letters, digits, ''_'' and ''-'', or * '
            '(one word) or # (the rest), at most 255 characters, such as order.* '
            '(the pattern is ' || coalesce(quote_literal(left(pattern, 64)), 'missing') || ')');
    END IF;
    v_words := string_to_array(pattern, '.');
    FOREACH v_word IN ARRAY v_words LOOP
        v_i := v_i + 1;
        IF v_word = '#' THEN
            IF v_i <> cardinality(v_words) THEN
                PERFORM outbox._raise_problem(
                    'OB002¦topic¦# stands for the rest of a topic, so it can only be the last word '
                    '(the pattern is ' || quote_literal(left(pattern, 64)) || ')');
            END IF;
            v_regex := CASE WHEN v_i = 1 THEN '[^.]+(\.[^.]+)*' ELSE v_regex || '(\.[^.]+)*' END;
        ELSE
            v_regex := v_regex || CASE WHEN v_i > 1 THEN '\.' ELSE '' END
                               || CASE WHEN v_word = '*' THEN '[^.]+' ELSE v_word END;
        END IF;
    END LOOP;
    RETURN '^' || v_regex || '$';
END
$fn$;
-- split --
-- A subscription's pattern, checked and compiled (topic_regex) on every write,
-- whoever writes it (`outbox subscription add`, Python, plain SQL).
CREATE FUNCTION outbox._check_subscription() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    NEW.topic_regex := outbox._topic_regex(NEW.topic);
    IF NEW.filter IS NOT NULL AND jsonb_typeof(NEW.filter) <> 'object' THEN
        PERFORM outbox._raise_problem('OB002¦filter¦must be a JSON object (the payload must contain it)');
    END IF;
    RETURN NEW;
END
$fn$;
-- split --
CREATE TRIGGER subscriptions_check BEFORE INSERT OR UPDATE ON outbox.subscriptions
    FOR EACH ROW EXECUTE FUNCTION outbox._check_subscription();
-- split --
-- A channel's payload check (outbox.channels.payload_check names a function of
-- the payload returning a problem or NULL) run on one payload.
CREATE FUNCTION outbox._payload_problem(payload_check text, payload jsonb) RETURNS text
LANGUAGE plpgsql STABLE AS $fn$
DECLARE
    v_problem text;
BEGIN
    EXECUTE format('SELECT %s($1)', payload_check::regproc) INTO v_problem USING payload;
    RETURN v_problem;
END
$fn$;
-- split --
-- The body of outbox.publish() and of each message of outbox.publish_many()
-- (``prefix`` names it in errors: 'messages[3].').
CREATE FUNCTION outbox._publish(
    prefix text, topic text, payload jsonb, key text, idempotency_key text, priority integer,
    deliver_at timestamptz, headers jsonb, traceparent text, tracestate text)
RETURNS uuid[]
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    v_max integer;
    v_window interval;
    v_wake boolean;
    v_problem text;
    v_taken boolean;
    v_endpoints text[];
    v_keys text[];
    v_bad text[];
    v_ids uuid[];
BEGIN
    IF _publish.topic IS NULL THEN
        PERFORM outbox._raise_problem('OB002¦topic¦is required', prefix);
    ELSIF char_length(_publish.topic) > 255 OR _publish.topic !~ '^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$' THEN
        PERFORM outbox._raise_problem(
            'OB002¦topic¦must be dot-separated words of letters, digits, ''_'' and ''-'', at most 255 '
            'characters, such as order.created', prefix);
    END IF;
    LOCK TABLE outbox.messages IN ROW EXCLUSIVE MODE;  -- before the endpoints are read: see enqueue()
    SELECT c.max_payload_bytes, c.dedupe_window, c.wakeup_until > now()
      INTO v_max, v_window, v_wake FROM outbox.config AS c;
    -- What every copy must pass, whatever its channel; see enqueue() for the fast check.
    IF (jsonb_typeof(_publish.payload) = 'object'
        AND octet_length(_publish.payload::text) <= v_max
        AND (_publish.key IS NULL OR (_publish.key <> '' AND char_length(_publish.key) <= 255))
        AND (_publish.idempotency_key IS NULL
             OR (_publish.idempotency_key <> '' AND char_length(_publish.idempotency_key) <= 255))
        AND coalesce(_publish.priority, 0) BETWEEN -32768 AND 32767
        AND (_publish.deliver_at IS NULL OR isfinite(_publish.deliver_at))
        AND _publish.headers IS NULL
        AND (_publish.traceparent IS NULL
             OR _publish.traceparent ~ '^00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$')
        AND _publish.tracestate IS NULL) IS NOT TRUE THEN
        v_problem := coalesce(
            outbox._message_problem(NULL, _publish.payload, _publish.key, _publish.idempotency_key,
                                    coalesce(_publish.priority, 0), _publish.deliver_at, _publish.headers, v_max),
            outbox._trace_problem(_publish.traceparent, _publish.tracestate));
        IF v_problem IS NOT NULL THEN
            PERFORM outbox._raise_problem(v_problem, prefix);
        END IF;
    END IF;

    IF _publish.idempotency_key IS NOT NULL THEN
        -- Take the key (or take it over when it expired); a concurrent publisher
        -- holding it makes this wait for its commit, and we return its ids.
        INSERT INTO outbox.publications AS p (topic, idempotency_key, message_ids)
        VALUES (_publish.topic, _publish.idempotency_key, '{}')
        ON CONFLICT ON CONSTRAINT publications_pkey DO UPDATE
           SET message_ids = '{}', created_at = now()
         WHERE p.created_at < now() - v_window
        RETURNING true INTO v_taken;
        IF v_taken IS NULL THEN
            SELECT p.message_ids INTO v_ids FROM outbox.publications AS p
             WHERE p.topic = _publish.topic AND p.idempotency_key = _publish.idempotency_key;
            RETURN v_ids;
        END IF;
    END IF;

    -- One copy per endpoint (however many of its subscriptions match), each
    -- checked by its endpoint's channel; the first refusal names its subscription.
    SELECT array_agg(x.endpoint ORDER BY x.endpoint),
           array_agg(coalesce(_publish.key, _publish.payload ->> x.default_key) ORDER BY x.endpoint),
           (array_agg(ARRAY[x.endpoint, x.pattern, x.problem] ORDER BY x.endpoint)
                FILTER (WHERE x.problem IS NOT NULL))[1:1]
      INTO v_endpoints, v_keys, v_bad
      FROM (SELECT DISTINCT ON (s.endpoint) s.endpoint, s.topic AS pattern, ch.default_key,
                   CASE WHEN ch.payload_check IS NOT NULL OR strpos(e.target, '{') > 0 THEN
                        coalesce(CASE WHEN ch.payload_check IS NOT NULL
                                      THEN outbox._payload_problem(ch.payload_check, _publish.payload) END,
                                 CASE WHEN strpos(e.target, '{') > 0
                                      THEN outbox._target_problem(
                                               e.target, _publish.payload,
                                               coalesce(_publish.key, _publish.payload ->> ch.default_key)) END)
                   END AS problem
              FROM outbox.subscriptions AS s
              JOIN outbox.endpoints AS e ON e.name = s.endpoint
              JOIN outbox.channels AS ch ON ch.name = e.channel
             WHERE s.paused_at IS NULL
               AND _publish.topic ~ s.topic_regex
               AND (s.filter IS NULL OR _publish.payload @> s.filter)
             ORDER BY s.endpoint, s.id) AS x;
    IF v_bad IS NOT NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = split_part(v_bad[1][3], '¦', 1),
            MESSAGE = format('%ssubscription of %s to %s: %s: %s', prefix, v_bad[1][1], v_bad[1][2],
                             split_part(v_bad[1][3], '¦', 2),
                             substr(v_bad[1][3], length(split_part(v_bad[1][3], '¦', 1))
                                                 + length(split_part(v_bad[1][3], '¦', 2)) + 3)),
            HINT = 'the payload must suit every subscribed endpoint''s channel; nothing was inserted',
            COLUMN = prefix || split_part(v_bad[1][3], '¦', 2);
    END IF;

    IF v_endpoints IS NULL THEN
        v_ids := '{}';
    ELSE
        v_ids := ARRAY(SELECT gen_random_uuid() FROM generate_series(1, cardinality(v_endpoints)));
        INSERT INTO outbox.messages
            (id, endpoint, payload, headers, key, idempotency_key, priority, available_at, traceparent,
             tracestate, topic)
        SELECT v_ids[c.i], c.endpoint, _publish.payload, _publish.headers, c.key, _publish.idempotency_key,
               coalesce(_publish.priority, 0), greatest(coalesce(_publish.deliver_at, now()), now()),
               _publish.traceparent, _publish.tracestate, _publish.topic
          FROM unnest(v_endpoints, v_keys) WITH ORDINALITY AS c(endpoint, key, i)
         ORDER BY c.i;
        IF v_wake THEN
            PERFORM outbox._wake_workers();
        END IF;
    END IF;
    IF _publish.idempotency_key IS NOT NULL THEN
        UPDATE outbox.publications AS p SET message_ids = v_ids
         WHERE p.topic = _publish.topic AND p.idempotency_key = _publish.idempotency_key;
    END IF;
    RETURN v_ids;
END
$fn$;
-- split --
CREATE FUNCTION outbox.publish(
    topic text,
    payload jsonb,
    key text DEFAULT NULL,
    idempotency_key text DEFAULT NULL,
    priority integer DEFAULT 0,
    deliver_at timestamptz DEFAULT NULL,
    headers jsonb DEFAULT NULL,
    traceparent text DEFAULT NULL,
    tracestate text DEFAULT NULL)
RETURNS uuid[]
LANGUAGE sql VOLATILE AS $fn$
SELECT outbox._publish('', topic, payload, key, idempotency_key, priority, deliver_at, headers, traceparent,
                       tracestate)
$fn$;
-- split --
-- Many publishes in one call: parallel arrays, a NULL array meaning defaults;
-- one row per input, in order: its index (from 0) and its ids.
CREATE FUNCTION outbox.publish_many(
    topics text[],
    payloads jsonb[],
    keys text[] DEFAULT NULL,
    idempotency_keys text[] DEFAULT NULL,
    priorities integer[] DEFAULT NULL,
    deliver_ats timestamptz[] DEFAULT NULL,
    headers jsonb[] DEFAULT NULL,
    traceparents text[] DEFAULT NULL,
    tracestates text[] DEFAULT NULL)
RETURNS TABLE (i integer, message_ids uuid[])
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    n integer := coalesce(cardinality(payloads), 0);
    v_arg record;
BEGIN
    FOR v_arg IN
        SELECT a.name, a.len FROM (VALUES
            ('topics', cardinality(topics)), ('keys', cardinality(keys)),
            ('idempotency_keys', cardinality(idempotency_keys)),
            ('priorities', cardinality(priorities)), ('deliver_ats', cardinality(deliver_ats)),
            ('headers', cardinality(headers)), ('traceparents', cardinality(traceparents)),
            ('tracestates', cardinality(tracestates))) AS a(name, len)
        WHERE a.len IS DISTINCT FROM n AND (a.name = 'topics' OR a.len IS NOT NULL)
    LOOP
        PERFORM outbox._raise_problem(format('OB002¦%s¦has %s elements but payloads has %s',
                                             v_arg.name, coalesce(v_arg.len, 0), n));
    END LOOP;
    FOR k IN 1..n LOOP
        i := k - 1;
        message_ids := outbox._publish(format('messages[%s].', k - 1), topics[k], payloads[k], keys[k],
                                       idempotency_keys[k], coalesce(priorities[k], 0), deliver_ats[k],
                                       headers[k], traceparents[k], tracestates[k]);
        RETURN NEXT;
    END LOOP;
END
$fn$;
-- split --
COMMENT ON FUNCTION outbox.publish(text, jsonb, text, text, integer, timestamptz, jsonb, text, text) IS
'Publish one event on a topic inside the caller''s transaction: one message for each endpoint with a matching, unpaused subscription (outbox.subscriptions) whose filter the payload contains; returns their ids, none when nothing subscribes (not an error). Each endpoint''s channel checks its copy; a refusal names the subscription and inserts nothing. A repeated idempotency_key for the topic, within outbox.config.dedupe_window, returns the first ids and inserts nothing.';
-- split --
COMMENT ON FUNCTION outbox.publish_many(text[], jsonb[], text[], text[], integer[], timestamptz[], jsonb[], text[], text[]) IS
'Publish many events in one call: parallel arrays (a NULL array means defaults); one row per event, in order, with its index from 0 and its message ids. One refused event rejects them all, named messages[i].';
