"""The vacuum watchdog: a transaction held open holds back the hot table's
vacuum; outbox.database_health names it, and a worker alerts through the
outbox (pid, age, query start; never the query) and logs it once."""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import asyncpg
import pytest
from support import FAST, add_endpoint, running_worker, until

from outbox import operate
from outbox.db.connect import connect
from outbox.devtools.receiver import Receiver

QUERY_TEXT = "SELECT 'a-query-text-that-must-not-leak'"


async def _held_open(database_url: str) -> asyncpg.Connection:
    """A session idle in a transaction that holds a snapshot (its xmin)."""
    holder = await connect(database_url)
    await holder.execute("SET application_name = 'long-report'")
    await holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    await holder.fetchval(QUERY_TEXT)
    return holder


async def test_the_view_names_what_holds_vacuum_back(
    database_url: str, conn: asyncpg.Connection
) -> None:
    quiet = await conn.fetchrow("SELECT * FROM outbox.database_health")
    assert quiet is not None
    assert quiet["holder"] is None  # nothing but this session, which it leaves out
    holder = await _held_open(database_url)
    try:
        pid = await holder.fetchval("SELECT pg_backend_pid()")
        row = await conn.fetchrow("SELECT * FROM outbox.database_health")
    finally:
        await holder.close()
    assert row is not None
    assert (row["holder"], row["holder_pid"]) == ("transaction", pid)
    assert (row["holder_name"], row["holder_state"]) == ("long-report", "idle in transaction")
    assert row["holder_since"] is not None
    assert row["holder_query_start"] >= row["holder_since"]
    assert row["holder_seconds"] >= 0
    assert "a-query-text" not in json.dumps(dict(row), default=str)


async def test_a_transaction_held_open_is_alerted_and_logged(
    database_url: str, conn: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    with Receiver() as rx:
        await add_endpoint(conn, "ops", rx.url("/ops"))
        await operate.set_alerts(conn, endpoint="ops", interval_seconds=3600)
        holder = await _held_open(database_url)
        pid = await holder.fetchval("SELECT pg_backend_pid()")
        config = replace(FAST, vacuum_check_interval=0.2, vacuum_alert_seconds=1.0)
        try:
            with caplog.at_level(logging.WARNING, logger="outbox.worker"):
                async with running_worker(database_url, config):
                    await until(lambda: any(r.path == "/ops" for r in rx.snapshot()), within=20)
                    await until(lambda: "held back by transaction" in caplog.text, within=5)
        finally:
            await holder.close()
        [alert] = [json.loads(r.body) for r in rx.snapshot() if r.path == "/ops"]
    text = str(alert["text"])
    assert alert["event"] == "vacuum_held_back"
    assert f"transaction pid {pid} (long-report, idle in transaction)" in text
    assert "open for" in text
    assert "its last query started" in text
    assert "a-query-text" not in text
    assert "a-query-text" not in caplog.text
    logged = [r for r in caplog.records if "held back by transaction" in r.getMessage()]
    assert len(logged) == 1  # once per holder, not every check
    assert f"pid {pid}" in logged[0].getMessage()


async def test_a_short_transaction_is_not_alerted(
    database_url: str, conn: asyncpg.Connection
) -> None:
    await conn.execute("INSERT INTO outbox.endpoints (name, channel) VALUES ('ops', 'null')")
    await operate.set_alerts(conn, endpoint="ops", interval_seconds=3600)
    holder = await _held_open(database_url)
    try:
        assert await conn.fetchval("SELECT outbox._alert_horizon(3600)") is False
        assert await conn.fetchval("SELECT outbox._alert_horizon(0)") is True
    finally:
        await holder.close()
    assert await conn.fetchval("SELECT count(*) FROM outbox.messages WHERE endpoint = 'ops'") == 1


async def test_the_monitor_and_the_worker_may_read_it(
    database_url: str, conn: asyncpg.Connection
) -> None:
    await operate.apply_roles(conn)
    for role in ("outbox_monitor", "outbox_worker", "outbox_operator"):
        c = await connect(database_url)
        try:
            await c.execute(f"SET ROLE {role}")
            assert await c.fetchval("SELECT dead_rows >= 0 FROM outbox.database_health") is True
        finally:
            await c.close()
    c = await connect(database_url)
    try:
        await c.execute("SET ROLE outbox_producer")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await c.fetch("SELECT * FROM outbox.database_health")
    finally:
        await c.close()
