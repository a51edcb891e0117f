-- Alerts through the outbox itself: when outbox.config.alert_endpoint is set,
-- a dead letter, or an endpoint paused or disabled, enqueues a message to it
-- in the same transaction (from the triggers below). The current
-- definitions; statements are separated by `-- split --` lines.

-- At most one alert per kind and endpoint per alert_interval; the next one
-- says how many were held back. The payload is outbox.config.alert_payload
-- (e.g. {"chat_id": -100...} for a Telegram chat) plus "text", and the
-- event's fields ("event", "endpoint") unless the alert endpoint's channel
-- checks its payloads against a schema of its own (a Bot API call has no
-- room for them). Its key is what the channel takes as a message's natural
-- key (the chat), else 'outbox-alerts'. Nothing about the alert endpoint
-- itself alerts (no loops).
CREATE FUNCTION outbox._alert(p_kind text, p_endpoint text, p_text text) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    c record;
    v_state record;
    v_text text;
BEGIN
    SELECT cf.alert_endpoint, cf.alert_payload, cf.alert_interval, ch.payload_check, ch.default_key
      INTO c
      FROM outbox.config AS cf
      JOIN outbox.endpoints AS e ON e.name = cf.alert_endpoint
      JOIN outbox.channels AS ch ON ch.name = e.channel;
    IF NOT FOUND OR p_endpoint = c.alert_endpoint THEN
        RETURN;
    END IF;
    SELECT s.last_sent_at, s.suppressed INTO v_state
      FROM outbox.alert_state AS s
     WHERE s.kind = p_kind AND s.endpoint = p_endpoint
       FOR UPDATE;
    IF FOUND AND v_state.last_sent_at > now() - c.alert_interval THEN
        UPDATE outbox.alert_state AS s SET suppressed = s.suppressed + 1
         WHERE s.kind = p_kind AND s.endpoint = p_endpoint;
        RETURN;
    END IF;
    INSERT INTO outbox.alert_state AS s (kind, endpoint, last_sent_at, suppressed)
    VALUES (p_kind, p_endpoint, now(), 0)
    ON CONFLICT (kind, endpoint) DO UPDATE SET last_sent_at = now(), suppressed = 0;
    v_text := left(p_text, 3500);
    IF coalesce(v_state.suppressed, 0) > 0 THEN
        v_text := v_text || format(' (%s more alert(s) like this were held back)', v_state.suppressed);
    END IF;
    INSERT INTO outbox.messages (endpoint, payload, key)
    VALUES (c.alert_endpoint,
            c.alert_payload || CASE WHEN c.payload_check IS NOT NULL THEN jsonb_build_object('text', v_text)
                                    ELSE jsonb_build_object('text', v_text, 'event', p_kind,
                                                            'endpoint', p_endpoint) END,
            coalesce(c.alert_payload ->> c.default_key, 'outbox-alerts'));
END
$fn$;
-- split --
CREATE FUNCTION outbox._alert_dead_letters() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    d record;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM outbox.config WHERE alert_endpoint IS NOT NULL) THEN
        RETURN NULL;
    END IF;
    FOR d IN
        SELECT n.endpoint, count(*) AS n, (array_agg(n.reason ORDER BY n.dead_at DESC))[1] AS reason
          FROM new_rows AS n
         GROUP BY n.endpoint
         ORDER BY n.endpoint  -- a fixed lock order on alert_state
    LOOP
        PERFORM outbox._alert('dead_letter', d.endpoint,
            format('outbox: %s message(s) to %s dead-lettered; last reason: %s',
                   d.n, d.endpoint, coalesce(d.reason, 'unknown')));
    END LOOP;
    RETURN NULL;
END
$fn$;
-- split --
CREATE TRIGGER dead_letters_alert AFTER INSERT ON outbox.dead_letters
REFERENCING NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION outbox._alert_dead_letters();
-- split --
CREATE FUNCTION outbox._alert_endpoint_state() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF NEW.disabled_at IS NOT NULL AND OLD.disabled_at IS NULL THEN
        PERFORM outbox._alert('disabled', NEW.name,
            format('outbox: endpoint %s disabled: %s', NEW.name, coalesce(NEW.disabled_reason, '')));
    ELSIF NEW.paused_at IS NOT NULL AND OLD.paused_at IS NULL THEN
        PERFORM outbox._alert('paused', NEW.name,
            format('outbox: endpoint %s paused: %s', NEW.name, coalesce(NEW.paused_reason, '')));
    END IF;
    RETURN NULL;
END
$fn$;
-- split --
CREATE TRIGGER endpoints_alert AFTER UPDATE OF paused_at, disabled_at ON outbox.endpoints
FOR EACH ROW EXECUTE FUNCTION outbox._alert_endpoint_state();
-- split --
-- The vacuum watchdog's alert (a worker calls it every few seconds): when the
-- holder of outbox.database_health has held the horizon for more than
-- p_seconds, or is a replication slot no one is using, say who (pid, age,
-- when its query started; never its text). Returns whether it was over.
CREATE FUNCTION outbox._alert_horizon(p_seconds double precision) RETURNS boolean
LANGUAGE plpgsql AS $fn$
DECLARE
    h record;
BEGIN
    SELECT * INTO h FROM outbox._database_health();
    IF h.holder IS NULL OR NOT (h.holder_seconds > p_seconds
                                OR (h.holder = 'replication slot' AND h.holder_state = 'inactive')) THEN
        RETURN false;
    END IF;
    PERFORM outbox._alert('vacuum_held_back', 'outbox.messages',
        format('outbox: vacuum of outbox.messages in database %s is held back by %s%s%s, %s; '
               '%s dead row(s) so far',
               current_database(), h.holder,
               CASE WHEN h.holder_pid IS NOT NULL THEN format(' pid %s', h.holder_pid) ELSE '' END,
               CASE WHEN coalesce(h.holder_name, '') <> '' THEN format(' (%s, %s)', h.holder_name, h.holder_state)
                    ELSE format(' (%s)', h.holder_state) END,
               CASE WHEN h.holder_since IS NOT NULL
                    THEN format('open for %s s since %s, its last query started %s',
                                round(h.holder_seconds), h.holder_since, coalesce(h.holder_query_start::text, '-'))
                    ELSE format('holding an xmin %s transactions old', h.holder_xmin_age) END,
               h.dead_rows));
    RETURN true;
END
$fn$;
