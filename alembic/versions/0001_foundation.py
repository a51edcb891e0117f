"""Foundation: endpoints, messages, attempts, dead letters, idempotency keys,
outbox.enqueue() / outbox.enqueue_many() and the first outbox.stats view.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, UUID

from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "outbox"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"


def _ts(name: str, *, nullable: bool = False, default: str | None = None) -> sa.Column[object]:
    return sa.Column(
        name,
        sa.DateTime(timezone=True),
        nullable=nullable,
        server_default=sa.text(default) if default else None,
    )


def upgrade() -> None:
    op.execute(f"CREATE SCHEMA IF NOT EXISTS {S}")

    op.create_table(
        "config",
        sa.Column("singleton", sa.Boolean, primary_key=True, server_default=sa.text("true")),
        sa.Column("max_payload_bytes", sa.Integer, nullable=False, server_default="262144"),
        sa.Column(
            "dedupe_window",
            sa.Interval,
            nullable=False,
            server_default=sa.text("'7 days'::interval"),
        ),
        sa.CheckConstraint("singleton", name="config_singleton"),
        sa.CheckConstraint("max_payload_bytes > 0", name="config_max_payload_bytes_positive"),
        sa.CheckConstraint("dedupe_window > interval '0'", name="config_dedupe_window_positive"),
        schema=S,
        comment="One row of settings that outbox.enqueue() enforces for every producer.",
    )
    op.execute(f"INSERT INTO {S}.config DEFAULT VALUES")

    op.create_table(
        "endpoints",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("channel", sa.Text, nullable=False),
        sa.Column("url", sa.Text),
        sa.Column("secret", sa.Text),
        sa.Column("headers", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("timeout_ms", sa.Integer, nullable=False, server_default="10000"),
        sa.Column("connect_timeout_ms", sa.Integer, nullable=False, server_default="5000"),
        sa.Column("max_attempts", sa.Integer, nullable=False, server_default="25"),
        sa.Column(
            "retry_window",
            sa.Interval,
            nullable=False,
            server_default=sa.text("'1 day'::interval"),
        ),
        _ts("created_at", default="now()"),
        _ts("updated_at", default="now()"),
        sa.CheckConstraint(f"name ~ '{NAME_PATTERN}'", name="endpoints_name_format"),
        sa.CheckConstraint(
            "channel IN ('webhook', 'telegram', 'null')", name="endpoints_channel_known"
        ),
        sa.CheckConstraint(
            "channel <> 'webhook' OR url ~ '^https?://[^/?#@\\s]+'", name="endpoints_webhook_url"
        ),
        sa.CheckConstraint("jsonb_typeof(headers) = 'object'", name="endpoints_headers_object"),
        sa.CheckConstraint("timeout_ms BETWEEN 1 AND 600000", name="endpoints_timeout_range"),
        sa.CheckConstraint(
            "connect_timeout_ms BETWEEN 1 AND 600000", name="endpoints_connect_timeout_range"
        ),
        sa.CheckConstraint("max_attempts BETWEEN 1 AND 1000", name="endpoints_max_attempts_range"),
        sa.CheckConstraint("retry_window > interval '0'", name="endpoints_retry_window_positive"),
        schema=S,
        comment="One row per destination.",
    )

    # The hot table. No foreign key to endpoints: outbox.enqueue() checks the
    # endpoint, and an FK check would take a FOR KEY SHARE row lock on the
    # endpoint row for every insert (multixacts under concurrent producers).
    op.create_table(
        "messages",
        sa.Column(
            "id", UUID(as_uuid=True), primary_key=True, server_default=sa.text("gen_random_uuid()")
        ),
        sa.Column("seq", sa.BigInteger, sa.Identity(always=True), nullable=False),
        sa.Column("endpoint", sa.Text, nullable=False),
        sa.Column("payload", JSONB, nullable=False),
        sa.Column("headers", JSONB),
        sa.Column("key", sa.Text),
        sa.Column("idempotency_key", sa.Text),
        sa.Column("priority", sa.SmallInteger, nullable=False, server_default="0"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        _ts("available_at", default="now()"),
        _ts("created_at", default="now()"),
        sa.Column("lease_token", UUID(as_uuid=True)),
        _ts("lease_expires_at", nullable=True),
        sa.Column("leased_by", sa.Text),
        sa.Column("last_error", sa.Text),
        schema=S,
        comment="Unfinished messages: pending, scheduled and in flight. Finished rows leave.",
    )
    # Claiming walks this index in order (highest priority, then earliest due,
    # then enqueue order) over unleased rows only; leased rows drop out of it.
    op.create_index(
        "messages_claim_idx",
        "messages",
        [sa.text("priority DESC"), "available_at", "seq"],
        schema=S,
        postgresql_where=sa.text("lease_token IS NULL"),
    )
    # The reaper looks only at leased rows, by expiry.
    op.create_index(
        "messages_lease_idx",
        "messages",
        ["lease_expires_at"],
        schema=S,
        postgresql_where=sa.text("lease_token IS NOT NULL"),
    )
    # Rows churn constantly (insert, lease, delete): vacuum early and without
    # throttling so dead tuples never pile up in front of the claim index.
    op.execute(
        f"""ALTER TABLE {S}.messages SET (
            autovacuum_vacuum_scale_factor = 0.01,
            autovacuum_vacuum_threshold = 1000,
            autovacuum_vacuum_insert_scale_factor = 0.01,
            autovacuum_vacuum_insert_threshold = 1000,
            autovacuum_analyze_scale_factor = 0.02,
            autovacuum_analyze_threshold = 1000,
            autovacuum_vacuum_cost_delay = 0
        )"""
    )

    op.create_table(
        "attempts",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("message_id", UUID(as_uuid=True), nullable=False),
        sa.Column("endpoint", sa.Text, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        _ts("started_at"),
        sa.Column("duration_ms", sa.Double, nullable=False),
        sa.Column("status_code", sa.SmallInteger),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("response_excerpt", sa.Text),
        sa.Column("worker_id", sa.Text),
        schema=S,
        comment="Append-only ledger: one row per delivery attempt. No foreign keys, by design.",
    )
    op.create_index(
        "attempts_endpoint_started_idx", "attempts", ["endpoint", "started_at"], schema=S
    )
    op.create_index("attempts_message_idx", "attempts", ["message_id"], schema=S)

    op.create_table(
        "dead_letters",
        sa.Column("message_id", UUID(as_uuid=True), primary_key=True),
        sa.Column("endpoint", sa.Text, nullable=False),
        sa.Column("payload", JSONB, nullable=False),
        sa.Column("headers", JSONB),
        sa.Column("key", sa.Text),
        sa.Column("idempotency_key", sa.Text),
        sa.Column("priority", sa.SmallInteger, nullable=False, server_default="0"),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text),
        _ts("created_at"),
        _ts("dead_at", default="now()"),
        schema=S,
        comment="Messages that will not be retried, with their payload and last error.",
    )
    op.create_index("dead_letters_dead_at_idx", "dead_letters", ["dead_at"], schema=S)
    op.create_index("dead_letters_endpoint_idx", "dead_letters", ["endpoint", "dead_at"], schema=S)

    op.create_table(
        "idempotency_keys",
        sa.Column("endpoint", sa.Text),
        sa.Column("idempotency_key", sa.Text),
        sa.PrimaryKeyConstraint("endpoint", "idempotency_key", name="idempotency_keys_pkey"),
        sa.Column("message_id", UUID(as_uuid=True), nullable=False),
        _ts("created_at", default="now()"),
        schema=S,
        comment="Idempotency keys outlive their messages for outbox.config.dedupe_window.",
    )
    op.create_index("idempotency_keys_created_idx", "idempotency_keys", ["created_at"], schema=S)

    # exec_driver_sql: the bodies hold colons and percent signs that text()
    # would otherwise try to read as bind parameters.
    bind = op.get_bind()
    for statement in (*FUNCTIONS, STATS_VIEW):
        bind.exec_driver_sql(statement)


def downgrade() -> None:
    op.execute(f"DROP VIEW IF EXISTS {S}.stats")
    for signature in FUNCTION_SIGNATURES:
        op.execute(f"DROP FUNCTION IF EXISTS {S}.{signature}")
    for table in (
        "idempotency_keys",
        "dead_letters",
        "attempts",
        "messages",
        "endpoints",
        "config",
    ):
        op.drop_table(table, schema=S)


FUNCTION_SIGNATURES = (
    "enqueue_many(text[], jsonb[], text[], text[], integer[], timestamptz[], jsonb[])",
    "enqueue(text, jsonb, text, text, integer, timestamptz, jsonb)",
    "_wake_workers()",
    "_raise_problem(text, text)",
    "_message_problem(text, jsonb, text, text, integer, timestamptz, jsonb, integer)",
    "_telegram_problem(jsonb)",
)

# Required fields of the Bot API methods whose payloads we can check. Other
# method names pass through unchecked (the Bot API grows faster than we do).
TELEGRAM_REQUIRED = """{
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
}"""

FUNCTIONS = (
    # Problems are reported as 'SQLSTATE¦field¦problem' (no code or field holds ¦) so that one raiser can
    # turn them into errors with the field in the message and in COLUMN.
    f"""
CREATE FUNCTION {S}._telegram_problem(payload jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
SELECT coalesce(
  CASE
    WHEN payload ? 'method' AND jsonb_typeof(payload -> 'method') <> 'string'
      THEN 'OB002¦payload.method¦must be a string naming a Bot API method'
    WHEN coalesce(payload ->> 'method', 'sendMessage') !~ '^[A-Za-z]{{1,64}}$'
      THEN 'OB002¦payload.method¦' || quote_literal(payload ->> 'method')
           || ' is not a Bot API method name'
  END,
  (SELECT format('OB002¦payload.%s¦is required by the Bot API method %s', f.name, m.method)
     FROM (SELECT coalesce(payload ->> 'method', 'sendMessage') AS method) m,
          jsonb_array_elements_text(coalesce('{TELEGRAM_REQUIRED}'::jsonb -> m.method, '[]'))
            WITH ORDINALITY AS f(name, i)
    WHERE NOT payload ? f.name
    ORDER BY f.i LIMIT 1),
  CASE
    WHEN payload ? 'chat_id' AND NOT (
           (jsonb_typeof(payload -> 'chat_id') = 'number'
              AND (payload ->> 'chat_id') ~ '^-?[0-9]{{1,20}}$')
        OR (jsonb_typeof(payload -> 'chat_id') = 'string'
              AND (payload ->> 'chat_id') ~ '^(-?[0-9]{{1,20}}|@[A-Za-z0-9_]{{1,64}})$'))
      THEN 'OB002¦payload.chat_id¦must be an integer chat id or an @username'
    WHEN payload ? 'text' AND jsonb_typeof(payload -> 'text') <> 'string'
      THEN 'OB002¦payload.text¦must be a string'
    WHEN payload ? 'text' AND btrim(payload ->> 'text') = ''
      THEN 'OB002¦payload.text¦must not be empty or blank'
    WHEN payload ? 'text' AND char_length(payload ->> 'text') > 4096
      THEN format('OB002¦payload.text¦is %s characters, over the Bot API limit of 4096',
                  char_length(payload ->> 'text'))
    WHEN payload ? 'caption' AND jsonb_typeof(payload -> 'caption') <> 'string'
      THEN 'OB002¦payload.caption¦must be a string'
    WHEN payload ? 'caption' AND char_length(payload ->> 'caption') > 1024
      THEN format('OB002¦payload.caption¦is %s characters, over the Bot API limit of 1024',
                  char_length(payload ->> 'caption'))
  END)
$fn$""",
    f"""
CREATE FUNCTION {S}._message_problem(
    channel text, payload jsonb, key text, idempotency_key text, priority integer,
    deliver_at timestamptz, headers jsonb, max_payload_bytes integer)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
SELECT CASE
  WHEN payload IS NULL THEN 'OB002¦payload¦is required'
  WHEN jsonb_typeof(payload) <> 'object'
    THEN 'OB002¦payload¦must be a JSON object, not ' || jsonb_typeof(payload)
  WHEN octet_length(payload::text) > max_payload_bytes
    THEN format('OB003¦payload¦is %s bytes, over the limit of %s bytes (outbox.config.max_payload_bytes)',
                octet_length(payload::text), max_payload_bytes)
  WHEN key = '' THEN 'OB002¦key¦must not be empty (pass NULL for no key)'
  WHEN char_length(key) > 255
    THEN format('OB002¦key¦is %s characters, over the limit of 255', char_length(key))
  WHEN idempotency_key = ''
    THEN 'OB002¦idempotency_key¦must not be empty (pass NULL for no key)'
  WHEN char_length(idempotency_key) > 255
    THEN format('OB002¦idempotency_key¦is %s characters, over the limit of 255',
                char_length(idempotency_key))
  WHEN priority NOT BETWEEN -32768 AND 32767
    THEN format('OB002¦priority¦is %s, outside the range -32768..32767', priority)
  WHEN NOT isfinite(deliver_at)
    THEN 'OB002¦deliver_at¦must be a finite timestamp, not ' || deliver_at::text
  WHEN headers IS NOT NULL AND jsonb_typeof(headers) <> 'object'
    THEN 'OB002¦headers¦must be a JSON object of header names to string values'
  WHEN octet_length(headers::text) > 8192
    THEN 'OB002¦headers¦are over the limit of 8192 bytes'
  ELSE coalesce(
    (SELECT CASE
              WHEN h.key !~ '^[!#$%&''*+.^_`|~0-9A-Za-z-]{{1,128}}$'
                THEN 'OB002¦headers¦' || quote_literal(h.key) || ' is not a valid header name'
              WHEN lower(h.key) IN ('webhook-id', 'webhook-timestamp', 'webhook-signature',
                                    'content-length', 'content-type', 'host',
                                    'transfer-encoding', 'connection')
                THEN 'OB002¦headers.' || h.key || '¦is set by outbox and cannot be overridden'
              WHEN jsonb_typeof(h.value) <> 'string'
                THEN 'OB002¦headers.' || h.key || '¦must be a string, not ' || jsonb_typeof(h.value)
              ELSE 'OB002¦headers.' || h.key || '¦must not contain control characters'
            END
       FROM jsonb_each(headers) AS h
      WHERE h.key !~ '^[!#$%&''*+.^_`|~0-9A-Za-z-]{{1,128}}$'
         OR lower(h.key) IN ('webhook-id', 'webhook-timestamp', 'webhook-signature',
                             'content-length', 'content-type', 'host',
                             'transfer-encoding', 'connection')
         OR jsonb_typeof(h.value) <> 'string'
         OR (h.value #>> '{{}}') ~ '[\\x01-\\x08\\x0a-\\x1f\\x7f]'
      ORDER BY h.key LIMIT 1),
    CASE WHEN channel = 'telegram' THEN {S}._telegram_problem(payload) END)
END
$fn$""",
    f"""
CREATE FUNCTION {S}._raise_problem(problem text, prefix text DEFAULT '') RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    v_field text := prefix || split_part(problem, '¦', 2);
    v_text text := substr(problem, length(split_part(problem, '¦', 1))
                                   + length(split_part(problem, '¦', 2)) + 3);
BEGIN
    RAISE EXCEPTION USING
        ERRCODE = split_part(problem, '¦', 1),
        MESSAGE = v_field || ': ' || v_text,
        COLUMN = v_field;
END
$fn$""",
    # Wake idle workers without making concurrent producers pay for it.
    # NOTIFY serialises committing transactions on a global lock; here only a
    # transaction that wins one of two try-locks sends it, and the others (which
    # commit in parallel) rely on the notifier or on the workers' polling.
    f"""
CREATE FUNCTION {S}._wake_workers() RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    IF pg_try_advisory_xact_lock(1869968482, 0) OR pg_try_advisory_xact_lock(1869968482, 1) THEN
        PERFORM pg_notify('outbox_wakeup', '');
    END IF;
END
$fn$""",
    f"""
CREATE FUNCTION {S}.enqueue(
    endpoint text,
    payload jsonb,
    key text DEFAULT NULL,
    idempotency_key text DEFAULT NULL,
    priority integer DEFAULT 0,
    deliver_at timestamptz DEFAULT NULL,
    headers jsonb DEFAULT NULL)
RETURNS uuid
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_channel text;
    v_cfg {S}.config;
    v_problem text;
    v_id uuid := gen_random_uuid();
    v_kept uuid;
BEGIN
    IF enqueue.endpoint IS NULL THEN
        PERFORM {S}._raise_problem('OB002¦endpoint¦is required');
    END IF;
    -- ROW EXCLUSIVE (what the INSERT takes anyway) before the endpoint is read:
    -- `endpoint remove` takes SHARE, so it either sees this message or we see
    -- the endpoint gone. A weak lock, taken on the fast path.
    LOCK TABLE {S}.messages IN ROW EXCLUSIVE MODE;
    SELECT e.channel INTO v_channel FROM {S}.endpoints AS e WHERE e.name = enqueue.endpoint;
    IF v_channel IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'OB001',
            MESSAGE = 'endpoint: unknown endpoint ' || quote_literal(enqueue.endpoint),
            HINT = 'create it first with `outbox endpoint add`',
            COLUMN = 'endpoint';
    END IF;
    SELECT * INTO v_cfg FROM {S}.config;
    v_problem := {S}._message_problem(
        v_channel, enqueue.payload, enqueue.key, enqueue.idempotency_key,
        coalesce(enqueue.priority, 0), enqueue.deliver_at, enqueue.headers,
        v_cfg.max_payload_bytes);
    IF v_problem IS NOT NULL THEN
        PERFORM {S}._raise_problem(v_problem);
    END IF;

    IF enqueue.idempotency_key IS NOT NULL THEN
        -- Take the key, or take it over if it expired and its message is gone.
        -- A concurrent producer holding the same key makes this wait for its
        -- commit; then the key is live and we return that producer's id.
        INSERT INTO {S}.idempotency_keys AS k (endpoint, idempotency_key, message_id)
        VALUES (enqueue.endpoint, enqueue.idempotency_key, v_id)
        ON CONFLICT ON CONSTRAINT idempotency_keys_pkey DO UPDATE
           SET message_id = excluded.message_id, created_at = now()
         WHERE k.created_at < now() - v_cfg.dedupe_window
           AND NOT EXISTS (SELECT 1 FROM {S}.messages AS m WHERE m.id = k.message_id)
        RETURNING k.message_id INTO v_kept;
        IF v_kept IS NULL THEN
            -- A new statement, so a new snapshot: it sees the committed key.
            SELECT k.message_id INTO v_kept FROM {S}.idempotency_keys AS k
             WHERE k.endpoint = enqueue.endpoint AND k.idempotency_key = enqueue.idempotency_key;
            RETURN v_kept;
        END IF;
    END IF;

    INSERT INTO {S}.messages
        (id, endpoint, payload, headers, key, idempotency_key, priority, available_at)
    VALUES
        (v_id, enqueue.endpoint, enqueue.payload, enqueue.headers, enqueue.key,
         enqueue.idempotency_key, coalesce(enqueue.priority, 0),
         greatest(coalesce(enqueue.deliver_at, now()), now()));
    PERFORM {S}._wake_workers();
    RETURN v_id;
END
$fn$""",
    f"""
CREATE FUNCTION {S}.enqueue_many(
    endpoints text[],
    payloads jsonb[],
    keys text[] DEFAULT NULL,
    idempotency_keys text[] DEFAULT NULL,
    priorities integer[] DEFAULT NULL,
    deliver_ats timestamptz[] DEFAULT NULL,
    headers jsonb[] DEFAULT NULL)
RETURNS uuid[]
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    n integer := coalesce(cardinality(payloads), 0);
    v_cfg {S}.config;
    v_bad record;
    v_ids uuid[];
    v_final uuid[];
BEGIN
    IF coalesce(cardinality(endpoints), 0) <> n THEN
        PERFORM {S}._raise_problem(format('OB002¦endpoints¦has %s elements but payloads has %s',
                                         coalesce(cardinality(endpoints), 0), n));
    END IF;
    IF n = 0 THEN
        RETURN '{{}}'::uuid[];
    END IF;
    IF keys IS NOT NULL AND cardinality(keys) <> n THEN
        PERFORM {S}._raise_problem(format('OB002¦keys¦has %s elements but payloads has %s', cardinality(keys), n));
    END IF;
    IF idempotency_keys IS NOT NULL AND cardinality(idempotency_keys) <> n THEN
        PERFORM {S}._raise_problem(format('OB002¦idempotency_keys¦has %s elements but payloads has %s', cardinality(idempotency_keys), n));
    END IF;
    IF priorities IS NOT NULL AND cardinality(priorities) <> n THEN
        PERFORM {S}._raise_problem(format('OB002¦priorities¦has %s elements but payloads has %s', cardinality(priorities), n));
    END IF;
    IF deliver_ats IS NOT NULL AND cardinality(deliver_ats) <> n THEN
        PERFORM {S}._raise_problem(format('OB002¦deliver_ats¦has %s elements but payloads has %s', cardinality(deliver_ats), n));
    END IF;
    IF headers IS NOT NULL AND cardinality(headers) <> n THEN
        PERFORM {S}._raise_problem(format('OB002¦headers¦has %s elements but payloads has %s', cardinality(headers), n));
    END IF;

    LOCK TABLE {S}.messages IN ROW EXCLUSIVE MODE;  -- see outbox.enqueue()
    SELECT * INTO v_cfg FROM {S}.config;
    -- Validate every row in one pass and report the first bad one by index.
    SELECT m.i, m.endpoint, e.channel, p.problem INTO v_bad
      FROM unnest(endpoints, payloads, keys, idempotency_keys, priorities, deliver_ats, headers)
           WITH ORDINALITY AS m(endpoint, payload, key, idem, priority, deliver_at, hdrs, i)
      LEFT JOIN {S}.endpoints AS e ON e.name = m.endpoint
      CROSS JOIN LATERAL (SELECT {S}._message_problem(
           e.channel, m.payload, m.key, m.idem, coalesce(m.priority, 0), m.deliver_at, m.hdrs,
           v_cfg.max_payload_bytes) AS problem) AS p
     WHERE e.name IS NULL OR p.problem IS NOT NULL
     ORDER BY m.i
     LIMIT 1;
    IF FOUND THEN
        IF v_bad.endpoint IS NULL THEN
            PERFORM {S}._raise_problem('OB002¦endpoint¦is required', format('messages[%s].', v_bad.i - 1));
        ELSIF v_bad.channel IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'OB001',
                MESSAGE = format('messages[%s].endpoint: unknown endpoint %L', v_bad.i - 1, v_bad.endpoint),
                HINT = 'create it first with `outbox endpoint add`',
                COLUMN = format('messages[%s].endpoint', v_bad.i - 1);
        END IF;
        PERFORM {S}._raise_problem(v_bad.problem, format('messages[%s].', v_bad.i - 1));
    END IF;

    v_ids := ARRAY(SELECT gen_random_uuid() FROM generate_series(1, n));
    v_final := v_ids;
    IF EXISTS (SELECT 1 FROM unnest(idempotency_keys) AS k WHERE k IS NOT NULL) THEN
        -- The first row of each (endpoint, key) takes the key; rows are taken
        -- in key order so that concurrent batches cannot deadlock.
        INSERT INTO {S}.idempotency_keys AS k (endpoint, idempotency_key, message_id)
        SELECT DISTINCT ON (m.endpoint, m.idem) m.endpoint, m.idem, v_ids[m.i]
          FROM unnest(endpoints, idempotency_keys) WITH ORDINALITY AS m(endpoint, idem, i)
         WHERE m.idem IS NOT NULL
         ORDER BY m.endpoint, m.idem, m.i
        ON CONFLICT (endpoint, idempotency_key) DO UPDATE
           SET message_id = excluded.message_id, created_at = now()
         WHERE k.created_at < now() - v_cfg.dedupe_window
           AND NOT EXISTS (SELECT 1 FROM {S}.messages AS x WHERE x.id = k.message_id);
        -- A new statement and snapshot: keys committed by racing producers show.
        v_final := ARRAY(
            SELECT coalesce(k.message_id, v_ids[m.i])
              FROM unnest(endpoints, idempotency_keys) WITH ORDINALITY AS m(endpoint, idem, i)
              LEFT JOIN {S}.idempotency_keys AS k
                     ON k.endpoint = m.endpoint AND k.idempotency_key = m.idem
             ORDER BY m.i);
    END IF;

    INSERT INTO {S}.messages
        (id, endpoint, payload, headers, key, idempotency_key, priority, available_at)
    SELECT v_ids[m.i], m.endpoint, m.payload, m.hdrs, m.key, m.idem, coalesce(m.priority, 0),
           greatest(coalesce(m.deliver_at, now()), now())
      FROM unnest(endpoints, payloads, keys, idempotency_keys, priorities, deliver_ats, headers)
           WITH ORDINALITY AS m(endpoint, payload, key, idem, priority, deliver_at, hdrs, i)
     WHERE v_final[m.i] = v_ids[m.i]
     ORDER BY m.i;
    PERFORM {S}._wake_workers();
    RETURN v_final;
END
$fn$""",
    f"COMMENT ON FUNCTION {S}.enqueue(text, jsonb, text, text, integer, timestamptz, jsonb) IS "
    "'Insert one message inside the caller''s transaction and return its id. Rejects bad "
    "input with SQLSTATE OB001 (unknown endpoint), OB002 (invalid argument) or OB003 (too "
    "large); a repeated idempotency_key returns the first message''s id.'",
    f"COMMENT ON FUNCTION {S}.enqueue_many(text[], jsonb[], text[], text[], integer[], "
    "timestamptz[], jsonb[]) IS 'Insert many messages in one call; arrays are parallel, "
    "NULL arrays mean defaults. Returns the ids in input order; nothing is inserted if any "
    "row is rejected.'",
)

# pending: due and not leased; scheduled: not yet due (first delivery later or
# waiting for a retry); oldest_pending_seconds: how long the oldest due message
# has waited for a worker (queue lag). Attempt figures are bounded to the last
# hour and read through attempts_endpoint_started_idx.
STATS_VIEW = f"""
CREATE VIEW {S}.stats AS
SELECT e.name AS endpoint,
       coalesce(m.pending, 0) AS pending,
       coalesce(m.scheduled, 0) AS scheduled,
       coalesce(m.in_flight, 0) AS in_flight,
       (SELECT count(*) FROM {S}.dead_letters AS d WHERE d.endpoint = e.name) AS dead,
       coalesce(a.delivered, 0) AS delivered_last_hour,
       coalesce(a.failed, 0) AS failed_attempts_last_hour,
       a.p95_ms AS p95_latency_ms_last_hour,
       coalesce(m.oldest_pending_seconds, 0) AS oldest_pending_seconds
  FROM {S}.endpoints AS e
  LEFT JOIN LATERAL (
       SELECT count(*) FILTER (WHERE lease_token IS NULL AND available_at <= now()) AS pending,
              count(*) FILTER (WHERE lease_token IS NULL AND available_at > now()) AS scheduled,
              count(*) FILTER (WHERE lease_token IS NOT NULL) AS in_flight,
              extract(epoch FROM now() - min(available_at)
                      FILTER (WHERE lease_token IS NULL AND available_at <= now()))::double precision
                AS oldest_pending_seconds
         FROM {S}.messages WHERE endpoint = e.name) AS m ON true
  LEFT JOIN LATERAL (
       SELECT count(*) FILTER (WHERE outcome = 'delivered') AS delivered,
              count(*) FILTER (WHERE outcome <> 'delivered') AS failed,
              percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms)
                FILTER (WHERE outcome = 'delivered') AS p95_ms
         FROM {S}.attempts
        WHERE endpoint = e.name AND started_at > now() - interval '1 hour') AS a ON true
"""
