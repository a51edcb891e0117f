-- The circuit breaker, throttling and pausing, applied from the workers'
-- reports (outbox._report_health) to outbox.endpoint_state under its row lock.
-- The current definition; statements are separated by `-- split --` lines.

-- What a worker saw of each endpoint since its last report, applied to the
-- shared state under the row lock: per endpoint, p_ok deliveries, p_failures
-- endpoint failures (5xx, timeouts, connection errors) of which p_trailing
-- came after the last success, the last failure's reason, a throttle (seconds
-- the receiver asked the whole endpoint to wait, e.g. Telegram's 429) and a
-- reason to pause it (a webhook's 410), with the version (updated_at) of the
-- endpoint's settings the pausing attempt used: a pause is not applied to an
-- endpoint changed or resumed since (a worker's cache may still hold the old
-- credentials for a few seconds).
--
-- The breaker: p_trailing (or, with no success, the running count) reaching
-- breaker_failures opens the circuit for breaker_cooldown; when a probe fails
-- the cool-down doubles, up to breaker_max_cooldown; a success closes it.
-- Failing without a success for disable_after disables the endpoint.
CREATE FUNCTION outbox._report_health(
    p_endpoints text[], p_ok integer[], p_failures integer[], p_trailing integer[],
    p_last_failure text[], p_throttle double precision[], p_pause text[],
    p_pause_version timestamptz[] DEFAULT NULL)
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
                             p_pause, p_pause_version)
                      AS u(endpoint, ok, failures, since_ok, last_failure, throttle, pause, pause_version)
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
             WHERE x.name = r.endpoint AND x.paused_at IS NULL
               AND (r.pause_version IS NULL OR x.updated_at <= r.pause_version);
        END IF;
    END LOOP;
END
$fn$;
