-- The Telegram channel's helpers in SQL, named in its row of outbox.channels
-- (declared in outbox/deliver/channels/telegram.py): the payload check
-- outbox.enqueue() runs, and the coalescing of a chat's waiting sendMessage
-- calls the claim runs. Its default key (the payload's chat_id) and its group
-- chats (keys starting with "-", spaced by group_key_interval) are data in
-- that row too. Statements are separated by `-- split --` lines.

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
-- Coalescing (the channel's `riders`): the messages that ride with one taken
-- for sending, a sendMessage call: the next unfinished messages of its key
-- (chat), created before p_until, with the same parameters but the text,
-- while the joined text fits the Bot API's 4096 characters. Only the very
-- next ones, in order: it stops at a gap (a message in between that another
-- claimer holds or that differs). They are locked here and go out as one
-- request (the channel joins the texts in key order).
CREATE FUNCTION outbox._telegram_riders(
    p_endpoint text, p_key text, p_seq bigint, p_payload jsonb, p_until timestamptz,
    p_now timestamptz)
RETURNS uuid[]
LANGUAGE plpgsql AS $fn$
DECLARE
    f record;
    v_total integer;
    v_last bigint := p_seq;
    v_ids uuid[] := '{}';
BEGIN
    IF coalesce(p_payload ->> 'method', 'sendMessage') <> 'sendMessage'
       OR jsonb_typeof(p_payload -> 'text') IS DISTINCT FROM 'string' THEN
        RETURN v_ids;
    END IF;
    v_total := char_length(p_payload ->> 'text');
    FOR f IN
        SELECT m.id, m.seq, char_length(m.payload ->> 'text') AS length
          FROM outbox.messages AS m
         WHERE m.endpoint = p_endpoint AND m.key = p_key AND m.seq > p_seq
           AND m.lease_token IS NULL
           AND (m.available_at <= p_now OR m.held IS NOT NULL)
           AND m.created_at <= p_until
           AND jsonb_typeof(m.payload -> 'text') = 'string'
           AND (m.payload - 'text') = (p_payload - 'text')
         ORDER BY m.seq
         LIMIT 50
           FOR UPDATE SKIP LOCKED
    LOOP
        EXIT WHEN EXISTS (SELECT 1 FROM outbox.messages AS x
                           WHERE x.endpoint = p_endpoint AND x.key = p_key
                             AND x.seq > v_last AND x.seq < f.seq);
        EXIT WHEN v_total + 2 + f.length > 4096;
        v_total := v_total + 2 + f.length;
        v_last := f.seq;
        v_ids := v_ids || f.id;
    END LOOP;
    RETURN v_ids;
END
$fn$;
