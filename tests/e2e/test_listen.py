"""Wake-ups: a worker LISTENs on its own URL, on ``OUTBOX_LISTEN_URL`` when
given, or not at all with ``--no-listen`` (poll only), also under a supervisor."""

from __future__ import annotations

import time
from pathlib import Path

import asyncpg
import pytest
from support import WorkerProcess, until

import outbox
from outbox.devtools.receiver import Receiver

pytestmark = pytest.mark.e2e


async def listeners(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """This database's backends whose last statement was a LISTEN."""
    return await conn.fetch(
        "SELECT pid, application_name FROM pg_stat_activity"
        " WHERE datname = current_database() AND query LIKE 'LISTEN%'"
    )


async def delivered_one(conn: asyncpg.Connection, rx: Receiver) -> float:
    """Seconds from enqueueing a message to its arrival."""
    async with conn.transaction():
        await outbox.enqueue(conn, "hook", {"at": time.time()})
    started = time.monotonic()
    count = len(rx.snapshot())
    await until(lambda: len(rx.snapshot()) > count, within=20)
    return time.monotonic() - started


@pytest.mark.parametrize("how", ["default", "listen_url", "no_listen", "no_listen_supervised"])
async def test_where_a_worker_listens(
    database_url: str, conn: asyncpg.Connection, workers: list[WorkerProcess], tmp_path: Path,
    how: str,
) -> None:  # fmt: skip
    with Receiver() as rx:
        await conn.execute(
            "INSERT INTO outbox.endpoints (name, channel, url) VALUES ('hook', 'webhook', $1)",
            rx.url(),
        )
        args = {"no_listen": ["--no-listen"], "no_listen_supervised": ["--no-listen",
                "--processes", "2"]}.get(how, [])  # fmt: skip
        env = {"OUTBOX_LISTEN_URL": f"{database_url}?application_name=listener-of-test"}
        worker = WorkerProcess(
            database_url, "--poll-interval", "1.5", *args, log_dir=tmp_path,
            env=env if how == "listen_url" else None,
        )  # fmt: skip
        workers.append(worker)
        await delivered_one(conn, rx)  # the worker is up
        found = await listeners(conn)
        took = await delivered_one(conn, rx)
    if how.startswith("no_listen"):
        assert found == []
    else:
        assert len(found) == 1
        assert took < 1.0  # woken, not polled (the poll is every 1.5 s)
        expected = "listener-of-test" if how == "listen_url" else ""
        assert found[0]["application_name"] == expected
