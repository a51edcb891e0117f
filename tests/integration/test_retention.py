"""Retention: old ledger rows, dead letters and spent idempotency keys go, in
batches, one pruner at a time; nothing young, nothing unfinished."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta

import asyncpg
import pytest
from click.testing import CliRunner
from support import FAST, running_worker, until

import outbox
from outbox.cli import main
from outbox.deliver import retention


async def history(conn: asyncpg.Connection) -> dict[str, set[uuid.UUID]]:
    """Old and young rows of each kind; returns the ids that must stay."""
    await conn.execute("INSERT INTO outbox.endpoints (name, channel) VALUES ('n', 'null')")
    keep: dict[str, set[uuid.UUID]] = {"attempts": set(), "dead": set()}
    for age, n in ((timedelta(days=40), 7), (timedelta(days=2), 3)):
        for _ in range(n):
            message_id = uuid.uuid4()
            await conn.execute(
                "INSERT INTO outbox.attempts (message_id, endpoint, attempt, started_at,"
                " duration_ms, outcome) VALUES ($1, 'n', 1, now() - $2::interval, 1, 'delivered')",
                message_id,
                age,
            )
            if age.days < 30:
                keep["attempts"].add(message_id)
    for age, n in ((timedelta(days=100), 4), (timedelta(days=10), 2)):
        for _ in range(n):
            message_id = uuid.uuid4()
            await conn.execute(
                "INSERT INTO outbox.dead_letters (message_id, endpoint, payload, attempts,"
                " created_at, dead_at) VALUES ($1, 'n', '{}', 1, now() - $2::interval,"
                " now() - $2::interval)",
                message_id,
                age,
            )
            if age.days < 90:
                keep["dead"].add(message_id)
    # Idempotency keys: one spent and old, one old whose message is still queued, one young.
    async with conn.transaction():
        await outbox.enqueue(conn, "n", {}, idempotency_key="spent")
        await outbox.enqueue(conn, "n", {}, idempotency_key="queued")
        await outbox.enqueue(conn, "n", {}, idempotency_key="young")
    await conn.execute("DELETE FROM outbox.messages WHERE idempotency_key = 'spent'")
    await conn.execute(
        "UPDATE outbox.idempotency_keys SET created_at = now() - interval '8 days'"
        " WHERE idempotency_key IN ('spent', 'queued')"
    )
    return keep


async def test_prune_removes_exactly_what_is_past_retention(conn: asyncpg.Connection) -> None:
    keep = await history(conn)
    pruned = await retention.prune(conn, batch=2)  # small batches: several rounds each
    assert pruned == retention.Pruned(attempts=7, dead_letters=4, idempotency_keys=1)
    left = {r[0] for r in await conn.fetch("SELECT message_id FROM outbox.attempts")}
    assert left == keep["attempts"]
    dead = {r[0] for r in await conn.fetch("SELECT message_id FROM outbox.dead_letters")}
    assert dead == keep["dead"]
    keys = {r[0] for r in await conn.fetch("SELECT idempotency_key FROM outbox.idempotency_keys")}
    assert keys == {"queued", "young"}
    assert await retention.prune(conn) == retention.Pruned()  # nothing more


async def test_one_pruner_at_a_time(database_url: str, conn: asyncpg.Connection) -> None:
    await history(conn)
    other = await asyncpg.connect(database_url)
    try:
        assert await other.fetchval("SELECT pg_try_advisory_lock(1869968482, 4)")
        assert await retention.prune(conn) is None
        assert await conn.fetchval("SELECT count(*) FROM outbox.attempts") == 10
    finally:
        await other.close()
    assert (await retention.prune(conn) or retention.Pruned()).attempts == 7


async def test_workers_prune_by_themselves(database_url: str, conn: asyncpg.Connection) -> None:
    keep = await history(conn)
    config = replace(FAST, prune_interval=0.1, vacuum_check_interval=0.1)
    async with running_worker(database_url, config):
        await until(lambda: _attempts(conn, len(keep["attempts"]) + 2))  # + the 2 enqueued above


async def _attempts(conn: asyncpg.Connection, n: int) -> bool:
    return bool(await conn.fetchval("SELECT count(*) FROM outbox.attempts") == n)


async def test_retention_settings_and_the_prune_command(
    conn: asyncpg.Connection, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OUTBOX_DATABASE_URL", database_url)

    def run(*args: str) -> tuple[int, str]:
        with ThreadPoolExecutor(1) as pool:
            result = pool.submit(CliRunner().invoke, main, list(args)).result()
        return result.exit_code, result.output

    await history(conn)
    code, out = run(
        "config", "--attempts-retention", "1d", "--dead-letters-retention", "5d", "--json"
    )
    assert code == 0, out
    settings = json.loads(out)
    assert settings["attempts_retention_seconds"] == 86400
    assert settings["dead_letters_retention_seconds"] == 5 * 86400
    code, out = run("prune")
    assert code == 0, out
    assert "pruned 10 ledger row(s), 6 dead letter(s), 1 idempotency key(s)" in out
    code, out = run("config", "--attempts-retention", "0s")
    assert code == 2
    assert "attempts_retention" in out
