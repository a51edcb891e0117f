"""Prometheus metrics and health endpoints of real worker processes."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import urllib.request
from pathlib import Path

import asyncpg
import pytest
from support import WorkerProcess

import outbox
from outbox.devtools.receiver import Action, Receiver, always, fail_first

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus exposition text (0 if absent)."""
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if line.split("{")[0].split(" ")[0] == name and all(
            found.get(k) == v for k, v in labels.items()
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def deliver(conn: asyncpg.Connection, url: str, n: int) -> None:
    await conn.execute(
        "INSERT INTO outbox.endpoints (name, channel, url, allow_networks, breaker_failures)"
        " VALUES ('hook', 'webhook', $1, '{127.0.0.0/8}', 1000)",  # every first try fails
        url,
    )
    async with conn.transaction():
        await outbox.enqueue_many(
            conn, [{"endpoint": "hook", "payload": {"i": i}} for i in range(n)]
        )


async def until_drained(conn: asyncpg.Connection) -> None:
    for _ in range(600):
        if not await conn.fetchval("SELECT count(*) FROM outbox.messages"):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("not drained")


async def until_served(port: int, path: str, want: str) -> str:
    text = ""
    for _ in range(100):
        try:
            _, text = await asyncio.to_thread(get, port, path)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        if want in text:
            return text
        await asyncio.sleep(0.1)
    raise AssertionError(f"{want!r} never showed on {path}: {text[-500:]}")


async def test_one_process_counts_attempts_and_answers_health(
    database_url: str, conn: asyncpg.Connection, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    port = free_port()
    with Receiver(fail_first(1, Action(500))) as rx:
        await deliver(conn, rx.url(), 20)
        worker = WorkerProcess(database_url, "--metrics-port", str(port), log_dir=tmp_path)
        workers.append(worker)
        await until_drained(conn)
        text = await until_served(port, "/metrics", 'outcome="delivered"')
        for _ in range(50):  # the last batch's counters land with its flush
            _, text = await asyncio.to_thread(get, port, "/metrics")
            if sample(text, "outbox_attempts_total", outcome="delivered") == 20:
                break
            await asyncio.sleep(0.1)
        assert sample(text, "outbox_attempts_total", endpoint="hook", outcome="delivered") == 20
        assert sample(text, "outbox_attempts_total", endpoint="hook", outcome="retrying") == 20
        assert sample(text, "outbox_attempt_duration_seconds_count", endpoint="hook") == 40
        assert sample(text, "outbox_claim_batch_size_count") >= 1
        assert "outbox_in_flight" in text
        text = await until_served(port, "/metrics", "outbox_pending{")
        assert sample(text, "outbox_circuit_open", endpoint="hook") == 0
        assert await asyncio.to_thread(get, port, "/healthz") == (200, "ok\n")
        assert await asyncio.to_thread(get, port, "/readyz") == (200, "ready\n")
        worker.signal(signal.SIGTERM)
        assert worker.wait(30) == 0, worker.output()
    assert len(rx.snapshot()) == 40


async def test_a_supervisor_serves_the_sum_of_its_children(
    database_url: str, conn: asyncpg.Connection, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    port = free_port()
    with Receiver(always(Action(delay=0.02))) as rx:
        await deliver(conn, rx.url(), 0)
        supervisor = WorkerProcess(
            database_url, "--processes", "3", "--metrics-port", str(port), "--concurrency", "5",
            log_dir=tmp_path,
        )  # fmt: skip
        workers.append(supervisor)
        # Every child up before there is work: then each of them takes part.
        await until_served(port, "/healthz", "3/3 worker processes alive")
        for _ in range(50):
            pools = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE application_name = 'outbox-worker' AND datname = current_database()"
            )
            if pools >= 3:
                break
            await asyncio.sleep(0.1)
        messages = [{"endpoint": "hook", "payload": {"i": i}} for i in range(300)]
        async with conn.transaction():
            await outbox.enqueue_many(conn, messages)
        await until_drained(conn)
        text = ""
        for _ in range(100):
            try:
                _, text = await asyncio.to_thread(get, port, "/metrics")
            except OSError:
                text = ""
            if sample(text, "outbox_attempts_total", outcome="delivered") == 300:
                break
            await asyncio.sleep(0.1)
        assert sample(text, "outbox_attempts_total", endpoint="hook", outcome="delivered") == 300
        claimers = await conn.fetchval("SELECT count(DISTINCT worker_id) FROM outbox.attempts")
        assert claimers > 1  # the sum really is over several processes
        status, body = await asyncio.to_thread(get, port, "/healthz")
        assert (status, body) == (200, "3/3 worker processes alive\n")
        supervisor.signal(signal.SIGTERM)
        assert supervisor.wait(30) == 0, supervisor.output()
    assert len(rx.ids()) == 300


async def test_a_transaction_held_open_shows_in_the_vacuum_gauge(
    database_url: str, conn: asyncpg.Connection, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    port = free_port()
    holder = await asyncpg.connect(database_url)
    try:
        await holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        await holder.fetchval("SELECT 1")
        await asyncio.sleep(1.5)
        worker = WorkerProcess(database_url, "--metrics-port", str(port), log_dir=tmp_path)
        workers.append(worker)
        text = await until_served(port, "/metrics", "outbox_vacuum_held_back_seconds ")
        for _ in range(100):  # the gauges refresh every few seconds
            if sample(text, "outbox_vacuum_held_back_seconds") >= 1.5:
                break
            await asyncio.sleep(0.1)
            _, text = await asyncio.to_thread(get, port, "/metrics")
        assert sample(text, "outbox_vacuum_held_back_seconds") >= 1.5
        assert "outbox_hot_table_dead_rows " in text
    finally:
        await holder.close()
