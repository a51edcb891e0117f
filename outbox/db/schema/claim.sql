-- The claim: how a worker leases due messages (outbox._claim), with every
-- destination control decided in the claiming transaction, under row locks,
-- so that it holds for any number of workers on any number of hosts. The
-- current definitions; statements are separated by `-- split --` lines.
--
-- Endpoint by endpoint, in random order, each endpoint that is not paused,
-- disabled, throttled or open-circuit and has due messages gets a fair share
-- of the batch (what others leave goes to those that had more). Within an
-- endpoint (outbox._claim_endpoint):
-- * an open circuit whose cool-down is over lets one probe through;
-- * a rate limit (GCRA over outbox.endpoint_state.tat) bounds how many may be
--   sent within the claim's horizon and gives each a delay: the worker sends
--   it at that moment, so sends are spaced 1/rate apart across the fleet;
-- * retries get at most (1 - first_share) of the batch, first attempts the
--   rest; a share either side leaves unused goes to the other;
-- * on endpoints with per-key rules (outbox._pick, outbox._take_key), a
--   message whose key is not free (an earlier message of the key unfinished, a
--   key blocked after a dead letter, or a key's minimum interval not yet over)
--   is parked (available_at moved, `held` says why) without spending an
--   attempt, and its key's predecessor brings it back when it finishes.
--
-- Messages held back as a whole (pause, open circuit, throttle) are simply
-- not claimed: nothing is written for them and no attempt is spent.
--
-- What depends on the channel comes from outbox.channels: which keys are
-- "group" keys, spaced by the endpoint's group_key_interval (a LIKE pattern),
-- and the function that picks the messages riding with one (coalescing).
-- Nothing here names a channel. "Due" is decided by state and time, never by
-- "highest id seen" (ids commit out of order).

-- Whether a candidate may be sent now under its key's rules, taking the key
-- if so. If not, it is parked (available_at moved, `held` says why) and
-- false returned. p_spacing: the key's minimum interval in seconds (NULL:
-- none); an ordered endpoint's keys are held too (interval 0), so that one
-- message per key is in flight even when an earlier-numbered one commits
-- after a later one was already sent.
CREATE FUNCTION outbox._take_key(
    p_endpoint text, p_id uuid, p_key text, p_seq bigint, p_ordered boolean,
    p_spacing double precision, p_lease double precision, p_now timestamptz)
RETURNS boolean
LANGUAGE plpgsql AS $fn$
DECLARE
    v_spacing double precision := p_spacing;
    v_head timestamptz;
    v_next timestamptz;
    v_holder uuid;
    v_taken boolean;
BEGIN
    IF p_ordered THEN
        PERFORM 1 FROM outbox.key_blocks AS b WHERE b.endpoint = p_endpoint AND b.key = p_key;
        IF FOUND THEN  -- released by `outbox endpoint unblock`, which brings these back
            UPDATE outbox.messages AS m SET available_at = p_now + interval '1 hour', held = 'block'
             WHERE m.id = p_id;
            RETURN false;
        END IF;
        SELECT h.available_at INTO v_head
          FROM outbox.messages AS h
         WHERE h.endpoint = p_endpoint AND h.key = p_key AND h.seq < p_seq
         ORDER BY h.seq
         LIMIT 1;
        IF FOUND THEN  -- an earlier message of this key is unfinished
            UPDATE outbox.messages AS m
               SET available_at = greatest(v_head, p_now) + interval '5 seconds', held = 'order'
             WHERE m.id = p_id;
            RETURN false;
        END IF;
        v_spacing := coalesce(v_spacing, 0);
    END IF;
    IF v_spacing IS NULL THEN
        RETURN true;
    END IF;
    -- Take the key until this message finishes (or its lease runs out): a
    -- key's next message starts only after the previous one ended plus the
    -- interval, so the receiver sees the interval too. The try-lock first:
    -- claimers never wait on each other for a key (they met their candidates
    -- in different orders and deadlocked).
    IF NOT pg_try_advisory_xact_lock(1869968483, hashtext(p_endpoint || E'\x1f' || p_key)) THEN
        UPDATE outbox.messages AS m
           SET available_at = p_now + make_interval(secs => greatest(v_spacing, 0.05)), held = 'key'
         WHERE m.id = p_id;
        RETURN false;
    END IF;
    -- Never wait on the key's row either: `finish` may be freeing it (and
    -- waiting for a row this claim holds). Locked means busy.
    SELECT k.next_at, k.holder INTO v_next, v_holder
      FROM outbox.key_limits AS k
     WHERE k.endpoint = p_endpoint AND k.key = p_key
       FOR UPDATE SKIP LOCKED;
    IF FOUND THEN
        v_taken := v_next <= p_now;
        IF v_taken THEN
            UPDATE outbox.key_limits AS k
               SET next_at = p_now + make_interval(secs => p_lease + v_spacing),
                   holder = p_id, spacing_seconds = v_spacing
             WHERE k.endpoint = p_endpoint AND k.key = p_key;
        END IF;
    ELSE
        -- No row, or one someone holds (then busy: no INSERT, whose uniqueness
        -- check would wait for that holder).
        PERFORM 1 FROM outbox.key_limits AS k WHERE k.endpoint = p_endpoint AND k.key = p_key;
        v_taken := NOT FOUND;
        IF v_taken THEN
            INSERT INTO outbox.key_limits AS k (endpoint, key, next_at, holder, spacing_seconds)
            VALUES (p_endpoint, p_key, p_now + make_interval(secs => p_lease + v_spacing), p_id,
                    v_spacing)
            ON CONFLICT (endpoint, key) DO NOTHING;
            v_taken := FOUND;
        END IF;
        v_holder := p_id;  -- busy if not taken
    END IF;
    IF NOT v_taken THEN
        UPDATE outbox.messages AS m
           SET available_at = CASE WHEN v_holder IS NULL THEN v_next
                                   ELSE p_now + make_interval(secs => greatest(v_spacing, 0.05))
                              END,
               held = CASE WHEN p_ordered AND v_holder IS NOT NULL THEN 'order' ELSE 'key' END
         WHERE m.id = p_id;
    END IF;
    RETURN v_taken;
END
$fn$;
-- split --
-- Up to p_n due messages of one endpoint with per-key rules, locked, in claim
-- order: retries (p_retries) or first attempts, each candidate's key checked
-- (outbox._take_key). (Endpoints without such rules take the plain index scan
-- in outbox._claim_endpoint.)
-- p_group_keys: a LIKE pattern of the keys spaced by p_group_spacing instead
-- of p_key_spacing. Coalescing (p_coalesce seconds, with the channel's
-- p_riders function): a message taken for sending brings along the messages
-- that function picks from those of its key created within the window after
-- it; they go out as one request. ids[i] is a message to lease; leads[i] the
-- message it rides with (NULL for one sent on its own; leads is NULL when no
-- message rides).
CREATE FUNCTION outbox._pick(
    p_endpoint text, p_n integer, p_retries boolean, p_ordered boolean,
    p_key_spacing double precision, p_group_spacing double precision, p_group_keys text,
    p_lease double precision, p_coalesce double precision, p_riders text,
    OUT ids uuid[], OUT leads uuid[])
LANGUAGE plpgsql AS $fn$
DECLARE
    v_now timestamptz := now();
    v_cur refcursor;
    c record;
    v_riders uuid[];
BEGIN
    ids := '{}';
    leads := '{}';
    IF p_n <= 0 THEN
        RETURN;
    END IF;
    -- Look at a bounded number of candidates; parked ones move out of the way,
    -- so the next claim sees fresh ones.
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
        IF c.key IS NOT NULL AND NOT outbox._take_key(
               p_endpoint, c.id, c.key, c.seq, p_ordered,
               CASE WHEN c.key LIKE p_group_keys AND p_group_spacing IS NOT NULL
                    THEN p_group_spacing ELSE p_key_spacing END,
               p_lease, v_now) THEN
            CONTINUE;
        END IF;
        ids := ids || c.id;
        leads := leads || NULL::uuid;
        IF p_coalesce IS NOT NULL AND p_riders IS NOT NULL AND c.key IS NOT NULL THEN
            EXECUTE format('SELECT %s($1, $2, $3, $4, $5, $6)', p_riders::regproc)
               INTO v_riders
              USING p_endpoint, c.key, c.seq, c.payload,
                    c.created_at + make_interval(secs => p_coalesce), v_now;
            ids := ids || v_riders;
            leads := leads || array_fill(c.id, ARRAY[cardinality(v_riders)]);
        END IF;
    END LOOP;
    CLOSE v_cur;
END
$fn$;
-- split --
-- Whether an endpoint may be sent to now, and how much: at most p_quota
-- messages, fewer under a rate limit (n), one as a circuit's probe (probe).
-- Its delivery rules come along for outbox._pick. Probes and rate slots are
-- handed out one claimer at a time: the endpoint's state row stays locked
-- until the claim commits, and a claimer that finds another at it skips the
-- endpoint this time (waiting here, with claims visiting endpoints in random
-- order, deadlocked). slot_seconds is NULL without a rate limit; the k-th
-- send (from 0) goes first_slot + k * slot_seconds - tau seconds from now.
CREATE FUNCTION outbox._endpoint_gate(
    p_endpoint text, p_quota integer, p_horizon double precision,
    OUT n integer, OUT probe boolean, OUT claimed_at timestamptz, OUT slot_seconds double precision,
    OUT tau double precision, OUT first_slot double precision, OUT ordered boolean,
    OUT key_spacing double precision, OUT group_spacing double precision, OUT group_keys text,
    OUT coalesce_seconds double precision, OUT riders text)
LANGUAGE plpgsql AS $fn$
DECLARE
    e record;
BEGIN
    n := 0;
    probe := false;
    claimed_at := now();
    tau := 0;
    first_slot := 0;
    SELECT x.rate_limit, x.rate_burst, x.ordered, x.key_interval_ms, x.group_key_interval_ms,
           x.coalesce_ms, x.paused_at, x.disabled_at, ch.group_keys, ch.riders,
           s.circuit, s.open_until, s.probe_until, s.throttled_until, s.tat
      INTO e
      FROM outbox.endpoints AS x
      JOIN outbox.endpoint_state AS s ON s.endpoint = x.name
      JOIN outbox.channels AS ch ON ch.name = x.channel
     WHERE x.name = p_endpoint;
    IF NOT FOUND OR e.paused_at IS NOT NULL OR e.disabled_at IS NOT NULL
       OR e.throttled_until > claimed_at THEN
        RETURN;
    END IF;
    n := p_quota;
    IF e.circuit <> 'closed' OR e.rate_limit IS NOT NULL THEN
        SELECT s.circuit, s.open_until, s.probe_until, s.throttled_until, s.tat
          INTO e.circuit, e.open_until, e.probe_until, e.throttled_until, e.tat
          FROM outbox.endpoint_state AS s
         WHERE s.endpoint = p_endpoint
           FOR UPDATE SKIP LOCKED;
        claimed_at := clock_timestamp();  -- slots count from now, not from the claim's start
        IF NOT FOUND OR (e.circuit = 'open' AND e.open_until > claimed_at)
           OR (e.circuit = 'half_open' AND e.probe_until > claimed_at)
           OR e.throttled_until > claimed_at THEN
            n := 0;
            RETURN;
        END IF;
        IF e.circuit <> 'closed' THEN  -- cool-down over: one probe (half-open)
            probe := true;
            n := 1;
        END IF;
    END IF;
    IF e.rate_limit IS NOT NULL THEN
        slot_seconds := 1.0 / e.rate_limit;
        tau := (e.rate_burst - 1) * slot_seconds;
        first_slot := extract(epoch FROM greatest(e.tat, claimed_at) - claimed_at);
        n := least(n, greatest(0, floor((p_horizon + tau - first_slot) / slot_seconds)::integer + 1));
    END IF;
    ordered := e.ordered;
    key_spacing := e.key_interval_ms / 1000.0;
    group_spacing := e.group_key_interval_ms / 1000.0;
    group_keys := e.group_keys;
    coalesce_seconds := e.coalesce_ms / 1000.0;
    riders := e.riders;
END
$fn$;
-- split --
-- One endpoint's part of a claim: at most p_quota messages, leased to p_worker;
-- p_retries: whether it may have retries due (false: only first attempts are looked for).
CREATE FUNCTION outbox._claim_endpoint(
    p_endpoint text, p_quota integer, p_token uuid, p_lease double precision, p_worker text,
    p_horizon double precision, p_first_share double precision, p_retries boolean DEFAULT true)
RETURNS TABLE (id uuid, endpoint text, payload text, headers text, key text, attempts integer,
               first_attempt_at timestamptz, seq bigint, delay double precision, probe boolean,
               lead uuid, traceparent text, tracestate text, topic text, replay boolean)
LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
DECLARE
    g record;
    v_ids uuid[];
    v_leads uuid[];
    v_slots integer[];
    v_got integer := 0;  -- sends so far (a coalesced group is one send)
    v_pass integer;
    v_want integer;
BEGIN
    SELECT * INTO g FROM outbox._endpoint_gate(p_endpoint, p_quota, p_horizon);
    IF g.n <= 0 THEN
        RETURN;
    END IF;
    -- Pass 1: retries, up to their share; 2: first attempts; 3: more retries
    -- (neither retry pass when the claim saw none due: p_retries).
    FOR v_pass IN 1..3 LOOP
        CONTINUE WHEN v_pass <> 2 AND NOT p_retries;
        v_want := CASE WHEN v_pass = 1 THEN g.n - ceil(g.n * p_first_share)::integer
                       ELSE g.n - v_got END;
        CONTINUE WHEN v_want <= 0;  -- (a statement saved: a small claim's retry share is 0)
        IF g.ordered OR g.key_spacing IS NOT NULL OR g.group_spacing IS NOT NULL
           OR g.coalesce_seconds IS NOT NULL THEN
            SELECT p.ids, p.leads INTO v_ids, v_leads
              FROM outbox._pick(p_endpoint, v_want, v_pass <> 2, g.ordered, g.key_spacing,
                                g.group_spacing, g.group_keys, p_lease, g.coalesce_seconds,
                                g.riders) AS p;
        -- No per-key rules: the plain index scan, here rather than in a call
        -- (a call is a statement and a function's start: a small claim's cost is
        -- its statements). Nothing rides.
        ELSIF v_pass = 2 THEN
            v_leads := NULL;
            v_ids := ARRAY(
                SELECT m.id FROM outbox.messages AS m
                 WHERE m.endpoint = p_endpoint AND m.lease_token IS NULL AND m.attempts = 0
                   AND m.available_at <= now()
                 ORDER BY m.priority DESC, m.available_at, m.seq
                 LIMIT v_want
                   FOR UPDATE SKIP LOCKED);
        ELSE
            v_leads := NULL;
            v_ids := ARRAY(
                SELECT m.id FROM outbox.messages AS m
                 WHERE m.endpoint = p_endpoint AND m.lease_token IS NULL AND m.attempts > 0
                   AND m.available_at <= now()
                 ORDER BY m.priority DESC, m.available_at, m.seq
                 LIMIT v_want
                   FOR UPDATE SKIP LOCKED);
        END IF;
        IF cardinality(v_ids) > 0 THEN
            -- Each send's rate slot, counted on from v_got: riders share their lead's.
            -- (Set-based: a loop appending to an array, reading an array of NULLs
            -- by index, is quadratic in the batch.) Without a rate limit no slot is
            -- read, and nothing rides: the count is all it takes.
            IF g.slot_seconds IS NULL AND v_leads IS NULL THEN
                v_slots := NULL;  -- unnest pads it with NULLs
                v_got := v_got + cardinality(v_ids);
            ELSIF v_leads IS NULL THEN
                v_slots := ARRAY(SELECT generate_series(v_got, v_got + cardinality(v_ids) - 1));
            ELSE
                v_slots := ARRAY(
                    SELECT v_got - 1 + count(*) FILTER (WHERE u.lead IS NULL) OVER (ORDER BY u.i)
                      FROM unnest(v_leads) WITH ORDINALITY AS u(lead, i)
                     ORDER BY u.i);
            END IF;
            IF v_slots IS NOT NULL THEN
                v_got := v_slots[cardinality(v_slots)] + 1;
            END IF;
            RETURN QUERY
            WITH leased AS (
                UPDATE outbox.messages AS m
                   SET lease_token = p_token,
                       lease_expires_at = g.claimed_at + make_interval(secs => p_lease),
                       leased_by = p_worker,
                       first_attempt_at = coalesce(m.first_attempt_at, g.claimed_at),
                       held = NULL
                  FROM unnest(v_ids, v_leads, v_slots) AS p(id, lead, slot)
                 WHERE m.id = p.id
                RETURNING m.id, m.endpoint, m.payload::text AS payload, m.headers::text AS headers,
                          m.key, m.attempts, m.first_attempt_at, m.seq, p.slot, p.lead,
                          m.traceparent, m.tracestate, m.topic, m.replay)
            SELECT l.id, l.endpoint, l.payload, l.headers, l.key, l.attempts, l.first_attempt_at,
                   l.seq,
                   CASE WHEN g.slot_seconds IS NULL THEN 0.0
                        ELSE greatest(0.0, g.first_slot + l.slot * g.slot_seconds - g.tau) END,
                   g.probe,
                   l.lead,
                   l.traceparent,
                   l.tracestate,
                   l.topic,
                   l.replay
              FROM leased AS l;  -- no ORDER BY: each row carries its own slot
        END IF;
        EXIT WHEN v_got >= g.n;
    END LOOP;
    IF v_got > 0 AND (g.slot_seconds IS NOT NULL OR g.probe) THEN
        UPDATE outbox.endpoint_state AS s
           SET tat = CASE WHEN g.slot_seconds IS NULL THEN s.tat
                          ELSE g.claimed_at + make_interval(secs => g.first_slot + v_got * g.slot_seconds)
                     END,
               circuit = CASE WHEN g.probe THEN 'half_open' ELSE s.circuit END,
               probe_until = CASE WHEN g.probe THEN g.claimed_at + make_interval(secs => p_lease)
                                  ELSE s.probe_until END,
               updated_at = g.claimed_at
         WHERE s.endpoint = p_endpoint;
    END IF;
END
$fn$;
-- split --
-- A worker's claim: up to p_limit messages over all endpoints, fairly.
-- p_horizon: how far ahead rate-limited sends may be scheduled (seconds);
-- p_first_share: the part of each endpoint's share kept for first attempts.
-- Generic plans for every statement under it (the SET holds for the functions
-- it calls): with the default plan_cache_mode the plan cache kept building
-- custom plans for some of them, so each claim planned them again, a quarter
-- of a small claim's server time (perf); a claim of 1 cost about 0.85 ms of
-- server CPU here, 0.55 ms with this. The plans are the same index scans.
CREATE FUNCTION outbox._claim(
    p_limit integer, p_token uuid, p_lease double precision, p_worker text,
    p_horizon double precision, p_first_share double precision)
RETURNS TABLE (id uuid, endpoint text, payload text, headers text, key text, attempts integer,
               first_attempt_at timestamptz, seq bigint, delay double precision, probe boolean,
               lead uuid, traceparent text, tracestate text, topic text, replay boolean)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
AS $fn$
#variable_conflict use_column
DECLARE
    v_now timestamptz := now();
    v_names text[];
    v_retries boolean[];  -- per name: whether it has retries due
    v_full integer[] := '{}';  -- positions in v_names
    v_left integer := p_limit;
    v_quota integer;
    v_n integer;
    v_got integer;
    i integer;
BEGIN
    SELECT coalesce(array_agg(d.name ORDER BY d.r), '{}'), array_agg(d.retries ORDER BY d.r)
      INTO v_names, v_retries
      FROM (SELECT x.name, random() AS r,
                   -- Something due, first attempts or retries: the first row in the order
                   -- of the partial index the pick walks. (Not EXISTS: its plan starts
                   -- fast, so with many rows estimated to match, it scanned the table
                   -- from the start, through every row claimed or deleted since the last
                   -- vacuum, and all of it for an endpoint with nothing queued: per
                   -- claim, per endpoint.)
                   (SELECT true FROM outbox.messages AS m
                     WHERE m.endpoint = x.name AND m.lease_token IS NULL AND m.attempts = 0
                       AND m.available_at <= v_now
                     ORDER BY m.priority DESC, m.available_at, m.seq LIMIT 1) AS firsts,
                   -- Known here, so that an endpoint without retries due skips their
                   -- passes (a statement each).
                   coalesce((SELECT true FROM outbox.messages AS m
                              WHERE m.endpoint = x.name AND m.lease_token IS NULL
                                AND m.attempts > 0 AND m.available_at <= v_now
                              ORDER BY m.priority DESC, m.available_at, m.seq LIMIT 1),
                            false) AS retries
              FROM outbox.endpoints AS x JOIN outbox.endpoint_state AS s ON s.endpoint = x.name
             WHERE x.paused_at IS NULL AND x.disabled_at IS NULL
               AND (s.throttled_until IS NULL OR s.throttled_until <= v_now)
               AND (s.circuit = 'closed'
                    OR (s.circuit = 'open' AND s.open_until <= v_now)
                    OR (s.circuit = 'half_open' AND s.probe_until <= v_now))) AS d
     WHERE d.firsts OR d.retries;
    IF cardinality(v_names) = 0 THEN
        RETURN;
    END IF;
    v_quota := ceil(p_limit::numeric / cardinality(v_names))::integer;
    FOR i IN 1..cardinality(v_names) LOOP
        EXIT WHEN v_left <= 0;
        v_n := least(v_quota, v_left);
        RETURN QUERY SELECT * FROM outbox._claim_endpoint(
            v_names[i], v_n, p_token, p_lease, p_worker, p_horizon, p_first_share, v_retries[i]);
        GET DIAGNOSTICS v_got = ROW_COUNT;
        IF v_got >= v_n THEN
            v_full := v_full || i;
        END IF;
        v_left := v_left - v_got;
    END LOOP;
    FOREACH i IN ARRAY v_full LOOP  -- what the others left, to those that had more
        EXIT WHEN v_left <= 0;
        RETURN QUERY SELECT * FROM outbox._claim_endpoint(
            v_names[i], v_left, p_token, p_lease, p_worker, p_horizon, p_first_share, v_retries[i]);
        GET DIAGNOSTICS v_n = ROW_COUNT;
        v_left := v_left - v_n;
    END LOOP;
END
$fn$;
