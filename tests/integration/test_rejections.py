"""Every kind of bad input is rejected with a clear error and writes nothing.

Each case runs twice: through the Python API (which checks first, in Python,
where it can) and through the SQL function directly (the one truth for every
language). Afterwards the messages and idempotency tables are unchanged.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import asyncpg
import pytest

import outbox


@pytest.fixture(autouse=True)
async def _endpoints(conn: asyncpg.Connection) -> None:
    await conn.execute(
        """
        INSERT INTO outbox.endpoints (name, channel, url, secret) VALUES
          ('hook', 'webhook', 'http://127.0.0.1:9/hook', NULL),
          ('tg', 'telegram', NULL, '123456:ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef')
        """
    )
    # A message with an idempotency key already there, to see nothing changes.
    async with conn.transaction():
        await outbox.enqueue(conn, "hook", {"seed": 1}, idempotency_key="seed")


TG = {"chat_id": 42, "text": "hello"}

# (id, kwargs for outbox.enqueue, error class, field, words in the problem)
CASES: list[tuple[str, dict[str, Any], type[outbox.InvalidInputError], str, str]] = [
    (
        "unknown endpoint",
        {"endpoint": "nope", "payload": {}},
        outbox.UnknownEndpointError,
        "endpoint",
        "unknown endpoint 'nope'",
    ),
    (
        "payload is an array",
        {"endpoint": "hook", "payload": [1, 2]},
        outbox.InvalidInputError,
        "payload",
        "object",
    ),
    (
        "payload is a string",
        {"endpoint": "hook", "payload": "hi"},
        outbox.InvalidInputError,
        "payload",
        "object",
    ),
    (
        "payload is null",
        {"endpoint": "hook", "payload": None},
        outbox.InvalidInputError,
        "payload",
        "",
    ),
    (
        "payload too large",
        {"endpoint": "hook", "payload": {"blob": "x" * 300_000}},
        outbox.PayloadTooLargeError,
        "payload",
        "over the limit of 262144 bytes",
    ),
    (
        "empty key",
        {"endpoint": "hook", "payload": {}, "key": ""},
        outbox.InvalidInputError,
        "key",
        "",
    ),
    (
        "key too long",
        {"endpoint": "hook", "payload": {}, "key": "k" * 256},
        outbox.InvalidInputError,
        "key",
        "255",
    ),
    (
        "empty idempotency key",
        {"endpoint": "hook", "payload": {}, "idempotency_key": ""},
        outbox.InvalidInputError,
        "idempotency_key",
        "",
    ),
    (
        "idempotency key too long",
        {"endpoint": "hook", "payload": {}, "idempotency_key": "i" * 300},
        outbox.InvalidInputError,
        "idempotency_key",
        "255",
    ),
    (
        "priority too high",
        {"endpoint": "hook", "payload": {}, "priority": 40000},
        outbox.InvalidInputError,
        "priority",
        "32767",
    ),
    (
        "priority too low",
        {"endpoint": "hook", "payload": {}, "priority": -40000},
        outbox.InvalidInputError,
        "priority",
        "-32768",
    ),
    (
        "header value not a string",
        {"endpoint": "hook", "payload": {}, "headers": {"X-A": 1}},
        outbox.InvalidInputError,
        "headers.X-A",
        "string",
    ),
    (
        "header name invalid",
        {"endpoint": "hook", "payload": {}, "headers": {"bad name": "v"}},
        outbox.InvalidInputError,
        "headers",
        "not a valid header name",
    ),
    (
        "reserved header",
        {"endpoint": "hook", "payload": {}, "headers": {"Webhook-Id": "v"}},
        outbox.InvalidInputError,
        "headers",
        "cannot be overridden",
    ),
    (
        "a replay mark of its own",
        {"endpoint": "hook", "payload": {}, "headers": {"Outbox-Replay": "1"}},
        outbox.InvalidInputError,
        "headers",
        "cannot be overridden",
    ),
    (
        "a topic of its own",
        {"endpoint": "hook", "payload": {}, "headers": {"outbox-topic": "order.created"}},
        outbox.InvalidInputError,
        "headers",
        "cannot be overridden",
    ),
    (
        "header with a newline",
        {"endpoint": "hook", "payload": {}, "headers": {"X-A": "a\r\nB: c"}},
        outbox.InvalidInputError,
        "headers",
        "control characters",
    ),
    (
        "telegram without chat_id",
        {"endpoint": "tg", "payload": {"text": "hi"}},
        outbox.InvalidInputError,
        "payload.chat_id",
        "required",
    ),
    (
        "telegram without text",
        {"endpoint": "tg", "payload": {"chat_id": 1}},
        outbox.InvalidInputError,
        "payload.text",
        "required",
    ),
    (
        "telegram blank text",
        {"endpoint": "tg", "payload": {"chat_id": 1, "text": "  "}},
        outbox.InvalidInputError,
        "payload.text",
        "empty",
    ),
    (
        "telegram text too long",
        {"endpoint": "tg", "payload": {"chat_id": 1, "text": "é" * 4097}},
        outbox.InvalidInputError,
        "payload.text",
        "4097 characters, over the Bot API limit of 4096",
    ),
    (
        "telegram fractional chat_id",
        {"endpoint": "tg", "payload": {"chat_id": 1.5, "text": "x"}},
        outbox.InvalidInputError,
        "payload.chat_id",
        "integer",
    ),
    (
        "telegram method needs its fields",
        {"endpoint": "tg", "payload": {"method": "sendPhoto", "chat_id": 1}},
        outbox.InvalidInputError,
        "payload.photo",
        "sendPhoto",
    ),
    (
        "telegram method not a name",
        {"endpoint": "tg", "payload": {"method": "send Message"}},
        outbox.InvalidInputError,
        "payload.method",
        "not a Bot API method name",
    ),
    (
        "telegram caption too long",
        {
            "endpoint": "tg",
            "payload": {
                "method": "sendPhoto",
                "chat_id": 1,
                "photo": "file-id",
                "caption": "c" * 1025,
            },
        },
        outbox.InvalidInputError,
        "payload.caption",
        "1024",
    ),
]

# Inputs only Python can express (the SQL function cannot receive them).
PYTHON_ONLY: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "naive deliver_at",
        {"endpoint": "hook", "payload": {}, "deliver_at": datetime(2030, 1, 1)},
        "deliver_at",
        "timezone",
    ),
    ("NaN in payload", {"endpoint": "hook", "payload": {"x": float("nan")}}, "payload", "NaN"),
    ("NUL in payload", {"endpoint": "hook", "payload": {"x": "a\x00b"}}, "payload", "NUL"),
    (
        "unserialisable payload",
        {"endpoint": "hook", "payload": {"x": object()}},
        "payload",
        "JSON-serialisable",
    ),
    ("bad endpoint name", {"endpoint": "has space", "payload": {}}, "endpoint", "match"),
]

# Inputs only SQL can express.
SQL_ONLY: list[tuple[str, str, str, str]] = [
    (
        "infinite deliver_at",
        "SELECT outbox.enqueue('hook', '{}', deliver_at => 'infinity')",
        "deliver_at",
        "finite",
    ),
    (
        "headers not an object",
        "SELECT outbox.enqueue('hook', '{}', headers => '[1]')",
        "headers",
        "object",
    ),
    ("null endpoint", "SELECT outbox.enqueue(NULL, '{}')", "endpoint", "required"),
    (
        "batch arrays of different lengths",
        "SELECT outbox.enqueue_many(ARRAY['hook','hook'], ARRAY['{}']::jsonb[])",
        "endpoints",
        "2 elements but payloads has 1",
    ),
]


async def unchanged(conn: asyncpg.Connection) -> None:
    assert await conn.fetchval("SELECT count(*) FROM outbox.messages") == 1
    assert await conn.fetchval("SELECT count(*) FROM outbox.idempotency_keys") == 1


@pytest.mark.parametrize(
    ("kwargs", "error", "field", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
async def test_python_api_rejects(
    conn: asyncpg.Connection, kwargs: dict[str, Any], error: type[Exception], field: str, words: str
) -> None:
    kwargs = dict(kwargs)  # parametrize shares the dict between tests
    with pytest.raises(error) as info:
        async with conn.transaction():
            await outbox.enqueue(conn, kwargs.pop("endpoint"), kwargs.pop("payload"), **kwargs)
    assert isinstance(info.value, outbox.InvalidInputError)
    assert info.value.field.startswith(field)
    assert words in str(info.value)
    await unchanged(conn)


@pytest.mark.parametrize(
    ("kwargs", "error", "field", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
async def test_sql_function_rejects(
    conn: asyncpg.Connection, kwargs: dict[str, Any], error: type[Exception], field: str, words: str
) -> None:
    """The same inputs sent straight to outbox.enqueue(), bypassing Python's checks."""
    args = {
        "endpoint": kwargs["endpoint"],
        "payload": json.dumps(kwargs["payload"]),
        "key": kwargs.get("key"),
        "idem": kwargs.get("idempotency_key"),
        "priority": kwargs.get("priority", 0),
        "headers": json.dumps(kwargs["headers"]) if "headers" in kwargs else None,
    }
    with pytest.raises(asyncpg.PostgresError) as info:
        async with conn.transaction():
            await conn.fetchval(
                "SELECT outbox.enqueue($1, $2::text::jsonb, $3, $4, $5, NULL, $6::text::jsonb)",
                *args.values(),
            )
    ours = outbox.errors.InvalidInputError
    translated = __import__("outbox.db.pgerror", fromlist=["translate"]).translate(info.value)
    assert isinstance(translated, ours), info.value
    assert isinstance(translated, error)
    assert info.value.sqlstate in {"OB001", "OB002", "OB003"}
    assert translated.field.startswith(field)
    assert words in str(translated)
    await unchanged(conn)


@pytest.mark.parametrize(
    ("kwargs", "field", "words"), [c[1:] for c in PYTHON_ONLY], ids=[c[0] for c in PYTHON_ONLY]
)
async def test_python_only_inputs_are_rejected(
    conn: asyncpg.Connection, kwargs: dict[str, Any], field: str, words: str
) -> None:
    kwargs = dict(kwargs)
    with pytest.raises(outbox.InvalidInputError) as info:
        async with conn.transaction():
            await outbox.enqueue(conn, kwargs.pop("endpoint"), kwargs.pop("payload"), **kwargs)
    assert info.value.field.startswith(field)
    assert words in str(info.value)
    await unchanged(conn)


@pytest.mark.parametrize(
    ("sql", "field", "words"), [c[1:] for c in SQL_ONLY], ids=[c[0] for c in SQL_ONLY]
)
async def test_sql_only_inputs_are_rejected(
    conn: asyncpg.Connection, sql: str, field: str, words: str
) -> None:
    with pytest.raises(asyncpg.PostgresError) as info:
        await conn.fetchval(sql)
    assert info.value.sqlstate == "OB002"
    assert str(info.value).startswith(f"{field}: ")
    assert words in str(info.value)
    await unchanged(conn)


async def test_payload_limit_is_configurable(conn: asyncpg.Connection) -> None:
    from outbox import operate

    await operate.set_config(conn, max_payload_bytes=100)
    with pytest.raises(outbox.PayloadTooLargeError, match="over the limit of 100 bytes"):
        async with conn.transaction():
            await outbox.enqueue(conn, "hook", {"x": "y" * 100})
    async with conn.transaction():
        await outbox.enqueue(conn, "hook", {"x": "y" * 50})
    assert await conn.fetchval("SELECT count(*) FROM outbox.messages") == 2


async def test_telegram_payload_that_is_right_is_accepted(conn: asyncpg.Connection) -> None:
    async with conn.transaction():
        await outbox.enqueue(conn, "tg", TG)
        await outbox.enqueue(conn, "tg", {"chat_id": "@channel", "text": "é" * 4096})
        await outbox.enqueue(conn, "tg", {"method": "sendPhoto", "chat_id": -100123, "photo": "id"})
        await outbox.enqueue(conn, "tg", {"method": "setMyName", "name": "unchecked method"})
    assert await conn.fetchval("SELECT count(*) FROM outbox.messages WHERE endpoint='tg'") == 4


async def test_missing_schema_says_to_migrate(pg_server_url: str) -> None:
    conn = await asyncpg.connect(pg_server_url)
    try:
        with pytest.raises(outbox.DatabaseError, match="outbox migrate"):
            async with conn.transaction():
                await outbox.enqueue(conn, "hook", {})
    finally:
        await conn.close()


async def test_null_payloads_are_named_by_both_functions(conn: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.PostgresError) as one:
        await conn.fetchval("SELECT outbox.enqueue('hook', NULL)")
    assert (one.value.sqlstate, str(one.value)) == ("OB002", "payload: is required")
    with pytest.raises(asyncpg.PostgresError) as many:
        await conn.fetchval(
            "SELECT outbox.enqueue_many(ARRAY['hook','hook'], ARRAY['{}', NULL]::jsonb[])"
        )
    assert (many.value.sqlstate, str(many.value)) == ("OB002", "messages[1].payload: is required")
    await unchanged(conn)


async def test_enqueue_cannot_slip_a_message_past_endpoint_remove(database_url: str) -> None:
    """remove takes SHARE on messages; enqueue takes ROW EXCLUSIVE before it reads the endpoint."""
    import asyncio

    from outbox import operate
    from outbox.db.connect import connect

    producer, remover = await connect(database_url), await connect(database_url)
    try:
        await producer.execute(
            "INSERT INTO outbox.endpoints (name, channel) VALUES ('gone', 'null')"
        )
        for fn in ("enqueue('gone', '{}')", "enqueue_many(ARRAY['gone'], ARRAY['{}']::jsonb[])"):
            tr = remover.transaction()
            await tr.start()
            await remover.execute("LOCK TABLE outbox.messages IN SHARE MODE")
            # The producer now waits for the remover's lock, then must not find the endpoint.
            blocked = asyncio.create_task(producer.fetchval(f"SELECT outbox.{fn}"))
            await asyncio.sleep(0.2)
            assert not blocked.done()
            await remover.execute("DELETE FROM outbox.endpoints WHERE name = 'gone'")
            await tr.commit()
            with pytest.raises(asyncpg.PostgresError) as info:
                await blocked
            assert info.value.sqlstate == "OB001"
            await producer.execute(
                "INSERT INTO outbox.endpoints (name, channel) VALUES ('gone', 'null')"
            )
        await operate.remove_endpoint(remover, "gone")
        assert (
            await producer.fetchval("SELECT count(*) FROM outbox.messages WHERE endpoint = 'gone'")
            == 0
        )
    finally:
        await producer.close()
        await remover.close()
