-- Guards on outbox.endpoints: each endpoint gets its row of shared state, fits
-- its channel, lets its parked messages go when made unordered, and cannot be
-- deleted while it has unfinished messages. The
-- current definitions; statements are separated by `-- split --` lines.

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
-- Messages of an ordered endpoint wait behind their key's head (held =
-- 'order'), and only an ordered endpoint's finish brings the next one back.
-- An endpoint made unordered lets its waiting ones go at once.
CREATE FUNCTION outbox._release_parked() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    UPDATE outbox.messages AS m SET available_at = now(), held = NULL
     WHERE m.endpoint = NEW.name AND m.held = 'order' AND m.lease_token IS NULL;
    RETURN NULL;
END
$fn$;
-- split --
CREATE TRIGGER endpoints_release_parked AFTER UPDATE OF ordered ON outbox.endpoints
FOR EACH ROW WHEN (OLD.ordered AND NOT NEW.ordered)
EXECUTE FUNCTION outbox._release_parked();
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
-- An endpoint fits its channel (its row of outbox.channels): a URL where the
-- channel takes one, matching the channel's pattern, and present where the
-- channel needs one; coalescing only where the channel can coalesce, and a
-- group-key interval only where it has group keys; of the settings only some
-- channels take (outbox.channels.settings: column -> its setting's name and
-- whether it is required), only the channel's own, and those it requires
-- present. `outbox endpoint add` and `update` check the same first; this
-- guards plain SQL too.
CREATE FUNCTION outbox._check_endpoint() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    ch record;
    v_row jsonb;
    v_other record;
    v_problem text;
BEGIN
    SELECT c.url_pattern, c.url_required, c.riders, c.group_keys, c.settings INTO ch
      FROM outbox.channels AS c
     WHERE c.name = NEW.channel;
    IF NOT FOUND THEN
        v_problem := format('OB002¦channel¦unknown channel %L', NEW.channel);
    ELSIF NEW.url IS NULL AND ch.url_required THEN
        v_problem := format('OB002¦url¦a %s endpoint needs a URL', NEW.channel);
    ELSIF NEW.url IS NOT NULL AND ch.url_pattern IS NULL THEN
        v_problem := format('OB002¦url¦a %s endpoint takes no URL', NEW.channel);
    ELSIF NEW.url !~ ch.url_pattern THEN
        v_problem := format('OB002¦url¦is not a URL a %s endpoint can send to', NEW.channel);
    ELSIF NEW.coalesce_ms IS NOT NULL AND ch.riders IS NULL THEN
        v_problem := format('OB002¦coalesce¦%s endpoints do not coalesce messages', NEW.channel);
    ELSIF NEW.group_key_interval_ms IS NOT NULL AND ch.group_keys IS NULL THEN
        v_problem := format('OB002¦group_key_interval¦%s endpoints have no group keys',
                            NEW.channel);
    ELSE
        v_row := to_jsonb(NEW);
        -- Every channel-specific setting some channel takes: set only where this one does.
        SELECT s.key AS col, s.value ->> 'setting' AS setting INTO v_other
          FROM outbox.channels AS c, jsonb_each(c.settings) AS s
         WHERE jsonb_typeof(v_row -> s.key) <> 'null'
           AND NOT ch.settings ? s.key
         LIMIT 1;
        IF FOUND THEN
            v_problem := format('OB002¦%s¦%s endpoints do not take it', v_other.setting,
                                NEW.channel);
        ELSE
            SELECT s.value ->> 'setting' AS setting INTO v_other
              FROM jsonb_each(ch.settings) AS s
             WHERE (s.value ->> 'required')::boolean
               AND jsonb_typeof(v_row -> s.key) IS DISTINCT FROM 'string'
               AND jsonb_typeof(v_row -> s.key) IS DISTINCT FROM 'number'
               AND jsonb_typeof(v_row -> s.key) IS DISTINCT FROM 'boolean'
             LIMIT 1;
            IF FOUND THEN
                v_problem := format('OB002¦%s¦a %s endpoint needs it', v_other.setting,
                                    NEW.channel);
            END IF;
        END IF;
    END IF;
    IF v_problem IS NOT NULL THEN
        PERFORM outbox._raise_problem(v_problem);
    END IF;
    RETURN NEW;
END
$fn$;
-- split --
-- Every update: a channel-specific setting may be any column.
CREATE TRIGGER endpoints_fit_channel
BEFORE INSERT OR UPDATE ON outbox.endpoints
FOR EACH ROW EXECUTE FUNCTION outbox._check_endpoint();
