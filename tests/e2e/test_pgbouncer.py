"""Through a real PgBouncer (transaction pooling), in front of the test server.

Producers (asyncpg with its statement cache off, SQLAlchemy async and sync
with the settings the README gives, plain SQL) and workers (``--pooled``, with
LISTEN on a direct connection or none) work through it. A worker pointed at it
without ``--pooled`` says why it cannot connect, not just "cannot reach".
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import httpx
import pytest
import sqlalchemy
from pgbouncer import PgBouncer
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool
from support import WebProcess, WorkerProcess, until

import outbox
from outbox.devtools.receiver import Receiver

pytestmark = pytest.mark.e2e


WEB_TOKEN = "pgbouncer-dashboard-token"


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


async def _none_left(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval("SELECT count(*) = 0 FROM outbox.messages"))


def _unique_statement_name() -> str:
    return f"__asyncpg_{uuid.uuid4()}__"


async def test_sqlalchemy_producers_enqueue_through_pgbouncer(
    database_url: str, conn: asyncpg.Connection, pgbouncer: PgBouncer
) -> None:
    """The README's settings: async (asyncpg) with no statement cache and unique
    names for the statements SQLAlchemy still prepares; sync (psycopg) with
    server-side prepares off. Enough transactions that psycopg would otherwise
    prepare (its threshold is 5) and that each lands on other server connections."""
    await conn.execute("INSERT INTO outbox.endpoints (name, channel) VALUES ('n', 'null')")
    through = pgbouncer.url(database_of(database_url)).split("://", 1)[1]
    engine = create_async_engine(
        f"postgresql+asyncpg://{through}",
        poolclass=NullPool,
        connect_args={
            "statement_cache_size": 0,
            "prepared_statement_cache_size": 0,
            "prepared_statement_name_func": _unique_statement_name,
        },
    )
    sync_engine = sqlalchemy.create_engine(
        f"postgresql+psycopg://{through}", connect_args={"prepare_threshold": None}
    )
    try:
        for i in range(8):
            async with engine.begin() as c:
                await outbox.enqueue(c, "n", {"async": i})
                await outbox.enqueue_many(c, [{"endpoint": "n", "payload": {"many": i}}])
            with Session(sync_engine) as session, session.begin():
                outbox.enqueue_sync(session, "n", {"sync": i})
    finally:
        await engine.dispose()
        sync_engine.dispose()
    assert await conn.fetchval("SELECT count(*) FROM outbox.messages") == 24


async def test_a_pooled_worker_delivers_through_pgbouncer(
    database_url: str, conn: asyncpg.Connection, pgbouncer: PgBouncer,
    workers: list[WorkerProcess], tmp_path: Path,
) -> None:  # fmt: skip
    """--pooled, LISTEN on a direct URL: every message delivered once, woken (not
    polled), and the worker's statements went through PgBouncer."""
    with Receiver() as rx:
        await conn.execute(
            "INSERT INTO outbox.endpoints (name, channel, url) VALUES ('hook', 'webhook', $1)",
            rx.url(),
        )
        worker = WorkerProcess(
            pgbouncer.url(database_of(database_url)), "--pooled", "--poll-interval", "5",
            log_dir=tmp_path, env={"OUTBOX_LISTEN_URL": database_url},
        )  # fmt: skip
        workers.append(worker)
        async with conn.transaction():
            await outbox.enqueue_many(
                conn, [{"endpoint": "hook", "payload": {"i": i}} for i in range(200)]
            )
        await until(lambda: len(rx.snapshot()) >= 200, within=30)
        # Idle now, it has asked producers to wake it (before that, a producer
        # would not NOTIFY and the message would wait for the poll).
        await until(
            lambda: conn.fetchval("SELECT wakeup_until > now() FROM outbox.config"), within=10
        )
        started = time.monotonic()
        async with conn.transaction():
            await outbox.enqueue(conn, "hook", {"woken": True})
        await until(lambda: len(rx.snapshot()) >= 201, within=10)
        took = time.monotonic() - started
    assert took < 2.5, worker.output()  # woken through the direct listener; polls are 5 s apart
    ids = [r.headers["webhook-id"] for r in rx.snapshot()]
    assert len(set(ids)) == 201
    # Results are recorded in batches, just after the deliveries.
    await until(lambda: _none_left(conn), within=10)
    delivered = "SELECT count(*) FROM outbox.attempts WHERE outcome = 'delivered'"
    assert await conn.fetchval(delivered) == 201
    assert f"login attempt: db={database_of(database_url)}" in pgbouncer.log()
    assert "unsupported startup parameter" not in pgbouncer.log()


def test_pooled_needs_a_listen_url_or_no_listen(database_url: str, pgbouncer: PgBouncer) -> None:
    env = {
        **os.environ,
        "OUTBOX_DATABASE_URL": pgbouncer.url(database_of(database_url)),
        "OUTBOX_POOLED": "1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "outbox", "worker"], env=env, capture_output=True, timeout=60,
        text=True, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "OUTBOX_LISTEN_URL" in done.stderr, done.stderr
    assert "--no-listen" in done.stderr


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


async def test_the_dashboard_works_through_pgbouncer_with_pooled(
    database_url: str, conn: asyncpg.Connection, pgbouncer: PgBouncer, tmp_path: Path
) -> None:
    """Without --pooled, PgBouncer refuses the dashboard's jit setting and it says
    so; with it, pages and actions work, their statements through PgBouncer."""
    await conn.execute(
        "INSERT INTO outbox.endpoints (name, channel, url) VALUES ('crm', 'webhook', $1)",
        "https://crm.example/hook",
    )
    url = pgbouncer.url(database_of(database_url))
    refused = WebProcess(url, WEB_TOKEN, log_dir=tmp_path)
    with pytest.raises(AssertionError, match="unsupported startup parameter: jit"):
        await refused.ready()
    web = WebProcess(url, WEB_TOKEN, "--pooled", log_dir=tmp_path)
    try:
        await web.ready()
        async with httpx.AsyncClient(base_url=web.url, timeout=10) as client:
            assert (await client.get("/login", params={"token": WEB_TOKEN})).status_code == 303
            for path in (
                "/",
                "/fragments/overview",
                "/api/throughput",
                "/endpoints/crm",
                "/messages",
                "/dead",
            ):
                answer = await client.get(path)
                assert answer.status_code == 200, (path, answer.text[:500])
            page = (await client.get("/endpoints/crm")).text
            csrf = re.search(r'name="csrf" value="([^"]+)"', page)
            assert csrf is not None
            paused = await client.post(
                "/endpoints/crm/pause", data={"csrf": csrf[1], "reason": "via pgbouncer"}
            )
            assert paused.status_code == 303
    finally:
        web.stop()
    reason = await conn.fetchval("SELECT paused_reason FROM outbox.endpoints WHERE name = 'crm'")
    assert reason == "via pgbouncer"


def test_the_commands_work_through_pgbouncer(database_url: str, pgbouncer: PgBouncer) -> None:
    """Every command opens its connection without a prepared-statement cache: in
    transaction mode a statement prepared on one server connection is not on
    the next, and each command failed with DuplicatePreparedStatementError."""
    env = {**os.environ, "OUTBOX_DATABASE_URL": pgbouncer.url(database_of(database_url))}

    def outbox_cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "outbox", *args], env=env, capture_output=True, text=True,
            timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, (args, done.stderr)
        return done.stdout

    outbox_cli("migrate")
    outbox_cli("endpoint", "add", "crm", "--channel", "webhook", "--url", "https://crm.example/h")
    ids = [outbox_cli("enqueue", "crm", "--payload", '{"n": 1}').strip() for _ in range(3)]
    assert '"pending": 3' in outbox_cli("stats", "--json")
    assert "crm" in outbox_cli("endpoint", "list")
    outbox_cli("endpoint", "pause", "crm", "--reason", "maintenance")
    outbox_cli("endpoint", "resume", "crm")
    assert ids[0] in outbox_cli("message", "show", ids[0])
    outbox_cli("dead", "list")
    outbox_cli("dead", "purge", "--older-than", "1d")
    outbox_cli("config")
    outbox_cli("prune")
    assert "unsupported startup parameter" not in pgbouncer.log()
