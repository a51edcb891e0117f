"""Through a real PgBouncer (transaction pooling), in front of the test server.

What works today: producers (asyncpg with its statement cache off, and plain
SQL). What does not yet: a worker, which sends session settings at connect
that PgBouncer refuses; it must then say why, not just "cannot reach".
"""

from __future__ import annotations

import time
from pathlib import Path

import asyncpg
import pytest
from pgbouncer import PgBouncer
from support import WorkerProcess

import outbox

pytestmark = pytest.mark.e2e


def database_of(url: str) -> str:
    return url.rsplit("/", 1)[1]


async def test_producers_enqueue_through_pgbouncer(
    database_url: str, conn: asyncpg.Connection, pgbouncer: PgBouncer
) -> None:
    await conn.execute("INSERT INTO outbox.endpoints (name, channel) VALUES ('n', 'null')")
    pooled = await asyncpg.connect(pgbouncer.url(database_of(database_url)), statement_cache_size=0)
    try:
        for i in range(3):  # each transaction may land on another server connection
            async with pooled.transaction():
                await outbox.enqueue(pooled, "n", {"i": i}, key="k")
        async with pooled.transaction():
            await pooled.execute("SELECT outbox.enqueue('n', '{\"plain\": true}'::jsonb)")
    finally:
        await pooled.close()
    assert await conn.fetchval("SELECT count(*) FROM outbox.messages") == 4


def test_a_worker_through_pgbouncer_says_why_it_cannot_connect(
    database_url: str, pgbouncer: PgBouncer, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    url = pgbouncer.url(database_of(database_url)).replace("postgres@", "postgres:HIDDENPW@")
    worker = WorkerProcess(url, log_dir=tmp_path)
    workers.append(worker)
    deadline = time.monotonic() + 20
    while "retrying" not in worker.output() and time.monotonic() < deadline:
        time.sleep(0.1)
    worker.kill()
    out = worker.output()
    assert "unsupported startup parameter: enable_seqscan (ProtocolViolationError)" in out
    assert "a connection pooler (PgBouncer) refuses the session settings" in out
    assert "HIDDENPW" not in out
