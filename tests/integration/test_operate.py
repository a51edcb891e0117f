"""Operating it: the stats views on a crafted history, dead-letter requeue and
purge, and a message's story -- as SQL, as library calls and as commands."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from click.testing import CliRunner, Result
from support import add_endpoint, enqueue, running_worker, until

import outbox
from outbox import operate
from outbox.cli import main
from outbox.devtools.receiver import Action, Receiver
from outbox.errors import InvalidInputError

TWO_ENDPOINTS = "INSERT INTO outbox.endpoints (name, channel) VALUES ('a', 'null'), ('b', 'null')"


@pytest.fixture
def run(database_url: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("OUTBOX_DATABASE_URL", database_url)
    monkeypatch.setenv("COLUMNS", "200")  # rich tables: a wide terminal

    def invoke(*args: str) -> Result:
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(
                CliRunner().invoke, main, list(args), catch_exceptions=False
            ).result()

    return invoke


async def attempt(
    conn: asyncpg.Connection, endpoint: str, outcome: str, ms: float, ago: timedelta
) -> None:
    await conn.execute(
        "INSERT INTO outbox.attempts (message_id, endpoint, attempt, started_at, duration_ms,"
        " outcome) VALUES ($1, $2, 1, now() - $3::interval, $4, $5)",
        uuid.uuid4(),
        endpoint,
        ago,
        ms,
        outcome,
    )


async def dead_letter(
    conn: asyncpg.Connection, endpoint: str, *, ago: timedelta, error: str = "HTTP 500", **kw: Any
) -> uuid.UUID:
    message_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO outbox.dead_letters (message_id, endpoint, payload, attempts, last_error,"
        " reason, created_at, dead_at, key) VALUES ($1, $2, $3, 5, $4, $5, now() - $6::interval,"
        " now() - $6::interval, $7)",
        message_id,
        endpoint,
        json.dumps({"n": 1}),
        error,
        f"gave up: {error}",
        ago,
        kw.get("key"),
    )
    return message_id


async def test_stats_figures_on_a_crafted_history(conn: asyncpg.Connection, run: Any) -> None:
    await conn.execute(
        "INSERT INTO outbox.endpoints (name, channel) VALUES ('a', 'null'), ('b', 'null')"
    )
    for ms in range(1, 101):  # 100 deliveries of 1..100 ms in the last hour
        await attempt(conn, "a", "delivered", float(ms), timedelta(minutes=ms % 50))
    for _ in range(25):
        await attempt(conn, "a", "retrying", 5000.0, timedelta(minutes=5))
    await attempt(conn, "a", "delivered", 99999.0, timedelta(hours=2))  # too old to count
    await enqueue(conn, "a", 3)  # pending
    await enqueue(conn, "a", 2, deliver_at=datetime.now(UTC) + timedelta(hours=1))  # scheduled
    await conn.execute(
        "UPDATE outbox.messages SET available_at = now() - interval '90 seconds'"
        " WHERE available_at <= now()"
    )
    await dead_letter(conn, "a", ago=timedelta(days=1))

    row = await conn.fetchrow("SELECT * FROM outbox.stats WHERE endpoint = 'a'")
    assert (row["pending"], row["scheduled"], row["in_flight"], row["dead"]) == (3, 2, 0, 1)
    assert row["delivered_last_hour"] == 100
    assert row["failed_attempts_last_hour"] == 25
    assert float(row["success_rate_last_hour"]) == 0.8
    # From per-minute histograms (buckets ~1.4x wide), close to the exact 50.5 / 95.05 / 99.01.
    assert row["p50_latency_ms_last_hour"] == pytest.approx(50.5, rel=0.06)
    assert row["p95_latency_ms_last_hour"] == pytest.approx(95.05, rel=0.06)
    assert row["p99_latency_ms_last_hour"] == pytest.approx(99.01, rel=0.06)
    assert 89 <= row["oldest_pending_seconds"] <= 120
    empty = await conn.fetchrow("SELECT * FROM outbox.stats WHERE endpoint = 'b'")
    assert empty["success_rate_last_hour"] is None
    assert empty["delivered_last_hour"] == 0

    minutes = await conn.fetch("SELECT * FROM outbox.throughput WHERE endpoint = 'a'")
    assert sum(m["delivered"] for m in minutes) == 100
    assert sum(m["failed"] for m in minutes) == 25

    result = run("stats", "--json")
    assert result.exit_code == 0, result.output
    by_endpoint = {r["endpoint"]: r for r in json.loads(result.output)}
    assert by_endpoint["a"]["delivered_last_hour"] == 100
    assert by_endpoint["a"]["success_rate_last_hour"] == 0.8
    assert by_endpoint["a"]["state"] == "active"
    assert set(by_endpoint) == {"a", "b"}
    table = run("stats")
    assert table.exit_code == 0
    assert "80.0%" in table.output


async def test_dead_list_filters(conn: asyncpg.Connection, run: Any) -> None:
    await conn.execute(
        "INSERT INTO outbox.endpoints (name, channel) VALUES ('a', 'null'), ('b', 'null')"
    )
    old = await dead_letter(conn, "a", ago=timedelta(days=3), error="HTTP 500")
    new = await dead_letter(conn, "a", ago=timedelta(minutes=5), error="ConnectError: refused")
    other = await dead_letter(conn, "b", ago=timedelta(minutes=1), error="HTTP 400")
    assert [d.message_id for d in await operate.dead_letters(conn)] == [other, new, old]
    assert [d.message_id for d in await operate.dead_letters(conn, endpoint="a")] == [new, old]
    since = datetime.now(UTC) - timedelta(hours=1)
    assert {d.message_id for d in await operate.dead_letters(conn, since=since)} == {new, other}
    assert [d.message_id for d in await operate.dead_letters(conn, error="refused")] == [new]
    listed = json.loads(run("dead", "list", "--endpoint", "a", "--since", "1h", "--json").output)
    assert [d["message_id"] for d in listed] == [str(new)]
    assert listed[0]["payload"] == {"n": 1}


async def test_requeue_by_id_brings_the_same_message_back_and_nothing_else(
    database_url: str, conn: asyncpg.Connection, run: Any
) -> None:
    with Receiver() as rx:
        await add_endpoint(conn, "hook", rx.url())
        await add_endpoint(conn, "other", rx.url("/other"))
        chosen = await dead_letter(conn, "hook", ago=timedelta(hours=1))
        kept = await dead_letter(conn, "hook", ago=timedelta(hours=1))
        untouched = await dead_letter(conn, "other", ago=timedelta(hours=1))
        await conn.execute(
            "INSERT INTO outbox.attempts (message_id, endpoint, attempt, started_at, duration_ms,"
            " outcome) VALUES ($1, 'hook', 5, now() - interval '1 hour', 1, 'dead')",
            chosen,
        )
        result = run("dead", "requeue", str(chosen))
        assert result.exit_code == 0, result.output
        assert "1 dead letter(s) requeued" in result.output
        row = await conn.fetchrow("SELECT * FROM outbox.messages")
        assert (row["id"], row["attempts"]) == (chosen, 0)
        remaining = {r[0] for r in await conn.fetch("SELECT message_id FROM outbox.dead_letters")}
        assert remaining == {kept, untouched}
        async with running_worker(database_url):
            await until(lambda: rx.ids() == {str(chosen)})
    outcomes = await conn.fetch(
        "SELECT outcome FROM outbox.attempts WHERE message_id = $1 ORDER BY started_at", chosen
    )
    assert [r["outcome"] for r in outcomes] == ["dead", "delivered"]  # history kept


async def test_requeue_by_endpoint_and_range_and_its_guard(
    conn: asyncpg.Connection, run: Any
) -> None:
    await conn.execute(
        "INSERT INTO outbox.endpoints (name, channel) VALUES ('a', 'null'), ('b', 'null')"
    )
    recent = await dead_letter(conn, "a", ago=timedelta(minutes=10))
    await dead_letter(conn, "a", ago=timedelta(days=2))
    await dead_letter(conn, "b", ago=timedelta(minutes=10))
    result = run("dead", "requeue")
    assert result.exit_code == 2
    assert "say which dead letters" in result.output
    assert run("dead", "requeue", "--endpoint", "a", "--since", "1h").exit_code == 0
    assert [r[0] for r in await conn.fetch("SELECT id FROM outbox.messages")] == [recent]
    assert run("dead", "requeue", "--all").exit_code == 0
    assert await conn.fetchval("SELECT count(*) FROM outbox.dead_letters") == 0
    assert await conn.fetchval("SELECT count(*) FROM outbox.messages") == 3
    with pytest.raises(InvalidInputError, match="not both"):
        await operate.requeue(conn, ids=[recent], endpoint="a")


async def test_requeue_by_error_text(conn: asyncpg.Connection, run: Any) -> None:
    await conn.execute("INSERT INTO outbox.endpoints (name, channel) VALUES ('a', 'null')")
    timed_out = await dead_letter(conn, "a", ago=timedelta(minutes=10), error="timeout: 10 s")
    await dead_letter(conn, "a", ago=timedelta(minutes=10), error="HTTP 400")
    assert await operate.count_dead(conn, error="TIMEOUT") == 1
    result = run("dead", "requeue", "--error", "Timeout")
    assert result.exit_code == 0, result.output
    assert "1 dead letter(s) requeued" in result.output
    assert [r[0] for r in await conn.fetch("SELECT id FROM outbox.messages")] == [timed_out]


async def test_requeue_keeps_dead_letters_of_removed_endpoints(conn: asyncpg.Connection) -> None:
    orphan = await dead_letter(conn, "gone-endpoint", ago=timedelta(hours=1))
    assert await operate.requeue(conn, everything=True) == 0
    assert await conn.fetchval("SELECT message_id FROM outbox.dead_letters") == orphan


async def test_a_requeued_dead_head_comes_back_first_in_its_blocked_key(
    database_url: str, conn: asyncpg.Connection
) -> None:
    attempts: dict[str, int] = {}

    def script(_path: str, message_id: str | None, _nth: int) -> Action:
        attempts[message_id or ""] = attempts.get(message_id or "", 0) + 1
        return Action(400) if message_id == str(head) and attempts[str(head)] == 1 else Action()

    with Receiver(script) as rx:
        await add_endpoint(conn, "seq", rx.url(), ordered=True, on_dead="block")
        [head] = await enqueue(conn, "seq", 1, key="k")
        rest = await enqueue(conn, "seq", 2, key="k")
        async with running_worker(database_url):
            await until(lambda: _count(conn, "SELECT count(*) FROM outbox.key_blocks"))
            assert await operate.requeue(conn, ids=[head]) == 1
            await until(lambda: len(rx.ids()) == 3)
    order = [r.message_id for r in rx.snapshot()]
    assert order == [str(head), str(head), *(str(i) for i in rest)]
    assert await conn.fetchval("SELECT count(*) FROM outbox.key_blocks") == 0


async def _count(conn: asyncpg.Connection, sql: str) -> bool:
    return bool(await conn.fetchval(sql))


async def test_purge_removes_only_the_old_ones(conn: asyncpg.Connection, run: Any) -> None:
    await conn.execute("INSERT INTO outbox.endpoints (name, channel) VALUES ('a', 'null')")
    for _ in range(3):
        await dead_letter(conn, "a", ago=timedelta(days=40))
    young = await dead_letter(conn, "a", ago=timedelta(days=2))
    result = run("dead", "purge", "--older-than", "30d")
    assert result.exit_code == 0, result.output
    assert "3 dead letter(s) purged" in result.output
    assert [r[0] for r in await conn.fetch("SELECT message_id FROM outbox.dead_letters")] == [young]
    assert run("dead", "purge", "--older-than", "soon").exit_code == 2


async def test_message_show_tells_each_state(
    database_url: str, conn: asyncpg.Connection, run: Any
) -> None:
    await conn.execute("INSERT INTO outbox.endpoints (name, channel) VALUES ('n', 'null')")
    async with conn.transaction():
        pending = await outbox.enqueue(conn, "n", {"hello": "world"}, key="k1")
    story = json.loads(run("message", "show", str(pending), "--json").output)
    assert story["state"] == "pending"
    assert story["payload"] == {"hello": "world"}
    assert story["attempts"] == []
    async with running_worker(database_url):
        await until(lambda: _count(conn, "SELECT count(*) = 0 FROM outbox.messages"))
    story = json.loads(run("message", "show", str(pending), "--json").output)
    assert story["state"] == "delivered"
    assert [a["outcome"] for a in story["attempts"]] == ["delivered"]
    dead = await dead_letter(conn, "n", ago=timedelta(minutes=1))
    assert json.loads(run("message", "show", str(dead), "--json").output)["state"] == "dead"
    text = run("message", "show", str(pending))
    assert "delivered" in text.output
    missing = run("message", "show", str(uuid.uuid4()))
    assert missing.exit_code == 2
    assert "no message" in missing.output
    await operate.list_endpoints(conn)
