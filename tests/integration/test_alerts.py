"""Alerts through the outbox itself: dead letters and paused or disabled
endpoints enqueue a message to the alert endpoint, in the same transaction,
rate-limited."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import pytest
from support import add_endpoint, enqueue, running_worker, until

from outbox import operate
from outbox.devtools.receiver import OK, Action, Receiver
from outbox.errors import InvalidInputError


def routes(path: str, _id: str | None, _nth: int) -> Action:
    return OK if path == "/ops" else Action(400)  # everything but the alert endpoint rejects


def _obj(value: object) -> dict[str, object]:
    """A jsonb value, whether or not the connection decodes jsonb."""
    return value if isinstance(value, dict) else json.loads(str(value))


async def alerts_received(rx: Receiver) -> list[dict[str, object]]:
    return [json.loads(r.body) for r in rx.snapshot() if r.path == "/ops"]


async def test_a_dead_letter_alert_reaches_the_alert_endpoint(
    database_url: str, conn: asyncpg.Connection
) -> None:
    with Receiver(routes) as rx:
        await add_endpoint(conn, "ops", rx.url("/ops"))
        await add_endpoint(conn, "hook", rx.url("/hook"))
        await operate.set_alerts(conn, endpoint="ops", interval_seconds=60)
        async with running_worker(database_url):
            await enqueue(conn, "hook", 3)
            await until(lambda: _dead(conn, 3))
            await until(lambda: _n(rx, 1))
            await asyncio.sleep(0.3)
        alerts = await alerts_received(rx)
    assert len(alerts) == 1  # three dead letters, one alert within the interval
    [alert] = alerts
    assert alert["event"] == "dead_letter"
    assert alert["endpoint"] == "hook"
    assert "dead-lettered" in str(alert["text"])
    assert "HTTP 400" in str(alert["text"])


async def test_alerts_are_rate_limited_and_count_what_they_held_back(
    conn: asyncpg.Connection,
) -> None:
    await conn.execute(
        "INSERT INTO outbox.endpoints (name, channel) VALUES ('ops', 'null'), ('n', 'null')"
    )
    await operate.set_alerts(conn, endpoint="ops", interval_seconds=1)
    for _ in range(3):  # three transactions, each with a dead letter
        await conn.execute(DEAD_LETTER)
    assert await _alert_texts(conn) == [
        "outbox: 1 message(s) to n dead-lettered; last reason: gave up"
    ]
    await asyncio.sleep(1.1)
    await conn.execute(DEAD_LETTER)
    texts = await _alert_texts(conn)
    assert len(texts) == 2
    assert texts[1].endswith("(2 more alert(s) like this were held back)")


DEAD_LETTER = (
    "INSERT INTO outbox.dead_letters (message_id, endpoint, payload, attempts, created_at,"
    " reason) VALUES (gen_random_uuid(), 'n', '{}', 3, now(), 'gave up')"
)


async def _alert_texts(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch(
        "SELECT payload FROM outbox.messages WHERE endpoint = 'ops' ORDER BY seq"
    )
    return [str(_obj(r["payload"])["text"]) for r in rows]


async def _dead(conn: asyncpg.Connection, n: int) -> bool:
    return bool(await conn.fetchval("SELECT count(*) FROM outbox.dead_letters") >= n)


async def _n(rx: Receiver, n: int) -> bool:
    return len(await alerts_received(rx)) >= n


async def test_the_alert_is_written_with_the_dead_letter(conn: asyncpg.Connection) -> None:
    """Same transaction: a dead letter that rolls back takes its alert with it."""
    await conn.execute(
        "INSERT INTO outbox.endpoints (name, channel) VALUES ('ops', 'null'), ('n', 'null')"
    )
    await operate.set_alerts(conn, endpoint="ops")
    tx = conn.transaction()
    await tx.start()
    await conn.execute(
        "INSERT INTO outbox.dead_letters (message_id, endpoint, payload, attempts, created_at,"
        " reason) VALUES (gen_random_uuid(), 'n', '{}', 3, now(), 'gave up')"
    )
    assert await conn.fetchval("SELECT count(*) FROM outbox.messages WHERE endpoint = 'ops'") == 1
    await tx.rollback()
    assert await conn.fetchval("SELECT count(*) FROM outbox.messages") == 0


async def test_pausing_or_disabling_alerts_and_the_alert_endpoint_never_alerts_itself(
    conn: asyncpg.Connection,
) -> None:
    await conn.execute(
        "INSERT INTO outbox.endpoints (name, channel, secret) VALUES"
        " ('ops', 'telegram', '123456:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'), ('n', 'null', NULL)"
    )
    with pytest.raises(InvalidInputError, match="chat_id"):
        await operate.set_alerts(conn, endpoint="ops")
    await operate.set_alerts(conn, endpoint="ops", payload={"chat_id": -1001})
    await operate.pause_endpoint(conn, "n", "maintenance window")
    await conn.execute("UPDATE outbox.endpoints SET disabled_at = now(), disabled_reason = 'x'")
    await operate.pause_endpoint(conn, "ops")  # the alert endpoint itself: no alert
    rows = await conn.fetch("SELECT payload, key FROM outbox.messages ORDER BY seq")
    payloads = [_obj(r["payload"]) for r in rows]
    assert [p["chat_id"] for p in payloads] == [-1001, -1001]
    assert "paused: maintenance window" in payloads[0]["text"]
    assert "disabled" in payloads[1]["text"]
    assert set(payloads[0]) == {"chat_id", "text"}  # only what the Bot API takes
    assert {r["key"] for r in rows} == {"-1001"}
    await operate.set_alerts(conn, endpoint=None)
    await operate.resume_endpoint(conn, "n")
    await operate.pause_endpoint(conn, "n")
    assert await conn.fetchval("SELECT count(*) FROM outbox.messages") == 2  # alerts off
