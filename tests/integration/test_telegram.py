"""The telegram channel against a local fake Bot API that answers like the real one."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
from click.testing import CliRunner
from support import running_worker, until

import outbox
from outbox import operate
from outbox.cli import main
from outbox.devtools.fake_telegram import (
    Call,
    FakeTelegram,
    bot_blocked,
    chat_not_found,
    migrated,
    reply,
    too_many_requests,
    unauthorized,
)
from outbox.devtools.receiver import Action

TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw_secret"


async def telegram_endpoint(
    conn: asyncpg.Connection, tg: FakeTelegram, name: str = "bot", **settings: Any
) -> None:
    columns = {
        "name": name,
        "channel": "telegram",
        "url": tg.api_url,
        "secret": TOKEN,
        "rate_limit": 30.0,
        "key_interval_ms": 50,
        **settings,
    }
    params = ", ".join(f"${i + 1}" for i in range(len(columns)))
    await conn.execute(
        f"INSERT INTO outbox.endpoints ({', '.join(columns)}) VALUES ({params})",
        *columns.values(),
    )


async def send(
    conn: asyncpg.Connection, *payloads: dict[str, Any], endpoint: str = "bot"
) -> list[Any]:
    async with conn.transaction():
        return await outbox.enqueue_many(
            conn, [{"endpoint": endpoint, "payload": p} for p in payloads]
        )


async def none_left(conn: asyncpg.Connection) -> bool:
    return await conn.fetchval("SELECT count(*) FROM outbox.messages") == 0


def answering(rule: Callable[[Call], Action | None]) -> Callable[[Call], Action]:
    return lambda call: rule(call) or reply()


async def test_messages_go_to_the_bot_api_and_the_method_can_be_chosen(
    database_url: str, conn: asyncpg.Connection
) -> None:
    with FakeTelegram() as tg:
        await telegram_endpoint(conn, tg)
        await send(
            conn,
            {"chat_id": 42, "text": "hello", "parse_mode": "HTML"},
            {"method": "sendPhoto", "chat_id": 43, "photo": "https://example.org/p.png"},
        )
        async with running_worker(database_url):
            await until(lambda: none_left(conn))
    calls = {call.method: call for _, call in tg.calls()}
    assert calls["sendMessage"].token == TOKEN
    assert calls["sendMessage"].params == {"chat_id": 42, "text": "hello", "parse_mode": "HTML"}
    assert calls["sendPhoto"].params == {"chat_id": 43, "photo": "https://example.org/p.png"}
    outcomes = await conn.fetch("SELECT outcome, status_code FROM outbox.attempts")
    assert {(r["outcome"], r["status_code"]) for r in outcomes} == {("delivered", 200)}


async def test_429_retry_after_holds_the_whole_bot_back(
    database_url: str, conn: asyncpg.Connection
) -> None:
    with FakeTelegram(
        answering(
            lambda c: too_many_requests(1) if c.params["text"] == "first" and c.nth == 1 else None
        )
    ) as tg:
        await telegram_endpoint(conn, tg)
        await send(conn, {"chat_id": 1, "text": "first"})
        async with running_worker(database_url):
            await until(lambda: len(tg.snapshot()) == 1)
            limited_at = tg.snapshot()[0].arrived
            await until(lambda: _throttled(conn))
            await send(conn, {"chat_id": 2, "text": "second"})  # another chat, same bot
            await until(lambda: none_left(conn))
    later = [r.arrived for r, c in tg.calls() if r.arrived > limited_at]
    assert len(later) == 2
    assert min(later) >= limited_at + 0.95
    first = await conn.fetchrow("SELECT * FROM outbox.attempts ORDER BY id LIMIT 1")
    assert first["outcome"] == "retrying"
    assert first["status_code"] == 429
    assert "retry after 1" in first["error"]


@pytest.mark.parametrize(
    ("answer", "words"),
    [(bot_blocked(), "bot was blocked"), (chat_not_found(), "chat not found")],
)
async def test_blocked_bot_and_unknown_chat_are_permanent(
    database_url: str, conn: asyncpg.Connection, answer: Action, words: str
) -> None:
    with FakeTelegram(lambda _call: answer) as tg:
        await telegram_endpoint(conn, tg)
        [message_id] = await send(conn, {"chat_id": 5, "text": "hi"})
        async with running_worker(database_url):
            await until(lambda: none_left(conn))
    dead = await conn.fetchrow("SELECT * FROM outbox.dead_letters")
    assert dead["message_id"] == message_id
    assert dead["attempts"] == 1
    assert words in dead["last_error"]
    assert len(tg.snapshot()) == 1


async def test_a_migrated_group_is_retried_at_its_new_chat_id(
    database_url: str, conn: asyncpg.Connection
) -> None:
    with FakeTelegram(answering(lambda c: migrated(-1009876) if c.chat_id == -555 else None)) as tg:
        await telegram_endpoint(conn, tg)
        [message_id] = await send(conn, {"chat_id": -555, "text": "to the group"})
        async with running_worker(database_url):
            await until(lambda: none_left(conn))
    assert [c.chat_id for _, c in tg.calls()] == [-555, -1009876]
    ledger = await conn.fetch(
        "SELECT outcome, reason FROM outbox.attempts WHERE message_id = $1 ORDER BY attempt",
        message_id,
    )
    assert [r["outcome"] for r in ledger] == ["retrying", "delivered"]
    assert "chat_id -555 -> -1009876" in ledger[0]["reason"]


async def test_a_rejected_token_pauses_the_endpoint_and_keeps_the_message(
    database_url: str, conn: asyncpg.Connection
) -> None:
    with FakeTelegram(lambda _call: unauthorized()) as tg:
        await telegram_endpoint(conn, tg)
        await send(conn, {"chat_id": 5, "text": "hi"}, {"chat_id": 6, "text": "ho"})
        async with running_worker(database_url):
            await until(lambda: _paused(conn))
            await asyncio.sleep(0.3)
            sent = len(tg.snapshot())
            await asyncio.sleep(0.3)
            assert len(tg.snapshot()) == sent
    assert sent <= 2
    assert await conn.fetchval("SELECT count(*) FROM outbox.messages") == 2
    assert await conn.fetchval("SELECT count(*) FROM outbox.dead_letters") == 0


async def _throttled(conn: asyncpg.Connection) -> bool:
    state = await conn.fetchval("SELECT state FROM outbox.endpoint_health WHERE endpoint = 'bot'")
    return bool(state == "throttled")


async def _paused(conn: asyncpg.Connection) -> bool:
    return (
        await conn.fetchval("SELECT state FROM outbox.endpoint_health WHERE endpoint = 'bot'")
        == "paused"
    )


async def test_the_token_appears_nowhere(
    database_url: str,
    conn: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Failing deliveries of every kind, then a look at every place text is kept."""

    def script(call: Call) -> Action:
        return {
            "500": Action(500, body=f"upstream said /bot{TOKEN}/sendMessage failed"),
            "403": bot_blocked(),
            "429": too_many_requests(1),
            "hang": Action(delay=2),
        }.get(call.params["text"], reply())

    caplog.set_level(logging.DEBUG)
    with FakeTelegram(script) as tg:
        await telegram_endpoint(conn, tg, timeout_ms=300, max_attempts=2)
        await send(
            conn,
            *({"chat_id": i, "text": t} for i, t in enumerate(["500", "403", "429", "hang", "ok"])),
        )
        async with running_worker(database_url):
            await until(lambda: none_left(conn), within=30)
        # ...and an endpoint whose API is unreachable (connection errors carry the URL).
        await telegram_endpoint(conn, tg, "offline", url="http://127.0.0.1:9", max_attempts=1)
        await send(conn, {"chat_id": 1, "text": "x"}, endpoint="offline")
        async with running_worker(database_url):
            await until(lambda: none_left(conn), within=30)

    places: list[str] = [caplog.text]
    for table in (
        "attempts",
        "dead_letters",
        "messages",
        "stats",
        "endpoint_health",
        "blocked_keys",
    ):
        rows = await conn.fetch(f"SELECT * FROM outbox.{table}")
        places.append(json.dumps([dict(r) for r in rows], default=str))
    monkeypatch.setenv("OUTBOX_DATABASE_URL", database_url)
    for args in (["endpoint", "list", "--json"], ["endpoint", "list"]):
        result = await asyncio.to_thread(CliRunner().invoke, main, args)
        assert result.exit_code == 0, result.output
        assert "offline" in result.output
        places.append(result.output)
    secret_part = TOKEN.split(":", 1)[1]
    for text in places:
        assert secret_part not in text
    # The failures really were recorded (the checks above looked at something).
    errors = await conn.fetch("SELECT error FROM outbox.attempts WHERE error IS NOT NULL")
    assert len(errors) >= 5
    assert any("Connect" in r["error"] for r in errors)
    assert "[redacted]" in places[1] or "***" in places[1]
    assert await operate.list_endpoints(conn)


async def test_coalescing_merges_a_chats_waiting_messages_into_one(
    database_url: str, conn: asyncpg.Connection
) -> None:
    with FakeTelegram() as tg:
        await telegram_endpoint(conn, tg, key_interval_ms=300, coalesce_ms=5000)
        small = await send(conn, *({"chat_id": 9, "text": f"line {n}"} for n in range(5)))
        big = await send(conn, *({"chat_id": 10, "text": str(n) * 2000} for n in range(3)))
        other = await send(
            conn,
            {"chat_id": 11, "text": "plain"},
            {"chat_id": 11, "text": "<b>bold</b>", "parse_mode": "HTML"},
        )
        async with running_worker(database_url):
            await until(lambda: none_left(conn))
    texts: dict[int, list[str]] = {}
    for _, call in sorted(tg.calls(), key=lambda rc: rc[0].arrived):
        texts.setdefault(call.chat_id, []).append(call.params["text"])
    assert texts[9] == ["\n\n".join(f"line {n}" for n in range(5))]
    # Up to the Bot API's 4096 characters: two of the three fit together.
    assert texts[10] == ["0" * 2000 + "\n\n" + "1" * 2000, "2" * 2000]
    assert texts[11] == ["plain", "<b>bold</b>"]  # different parameters: not merged
    ledger = await conn.fetch("SELECT message_id, outcome, reason FROM outbox.attempts")
    assert {r["message_id"] for r in ledger} == {*small, *big, *other}
    assert all(r["outcome"] == "delivered" for r in ledger)
    riders = [r for r in ledger if "coalesced)" in r["reason"]]
    assert {r["message_id"] for r in riders} == {*small[1:], big[1]}


async def test_the_bot_api_base_is_behind_the_ssrf_guard_too(
    database_url: str, conn: asyncpg.Connection
) -> None:
    with FakeTelegram() as tg:
        await telegram_endpoint(conn, tg)  # on loopback, not allowed below
        await send(conn, {"chat_id": 1, "text": "hi"})
        async with running_worker(database_url, allow=()):
            await until(lambda: none_left(conn))
    assert tg.snapshot() == []
    reason = await conn.fetchval("SELECT reason FROM outbox.dead_letters")
    assert "SSRF guard" in reason


async def test_a_malformed_answer_leaves_no_token_behind(
    database_url: str, conn: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    """A broken response is recorded as such; the token (in the URL) appears nowhere.
    (aiohttp's own error for this quoted the URL, token included.)"""

    async def broken(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n{}")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(broken, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    caplog.set_level(logging.DEBUG)
    try:
        with FakeTelegram() as tg:
            await telegram_endpoint(conn, tg, url=f"http://127.0.0.1:{port}", max_attempts=1)
        await send(conn, {"chat_id": 1, "text": "hi"})
        async with running_worker(database_url):
            await until(lambda: none_left(conn))
    finally:
        server.close()
    dead = await conn.fetchrow("SELECT last_error, reason FROM outbox.dead_letters")
    assert dead is not None
    assert "InvalidResponseError" in dead["last_error"]
    assert "Content-Length" in dead["last_error"]
    secret_part = TOKEN.split(":", 1)[1]
    for text in (caplog.text, dead["last_error"], dead["reason"]):
        assert secret_part not in text
