"""Real worker processes: several at once, killed, stopped, and a database restart and crash."""

from __future__ import annotations

import asyncio
import itertools
import shutil
import signal
import tempfile
import time
from pathlib import Path

import asyncpg
import psutil
import pytest
from support import WorkerProcess, children

import outbox
from outbox.db import migrate
from outbox.db.connect import connect
from outbox.devtools.receiver import Action, Receiver, always
from outbox.errors import DatabaseError

pytestmark = pytest.mark.e2e


async def wait_until(predicate, within: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {within}s")


async def setup(
    conn: asyncpg.Connection, url: str, n: int, *, max_attempts: int = 25
) -> list[object]:
    await conn.execute(
        "INSERT INTO outbox.endpoints (name, channel, url, max_attempts)"
        " VALUES ('hook', 'webhook', $1, $2)",
        url,
        max_attempts,
    )
    async with conn.transaction():
        return list(
            await outbox.enqueue_many(
                conn, [{"endpoint": "hook", "payload": {"i": i}} for i in range(n)]
            )
        )


async def all_finished(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval("SELECT count(*) = 0 FROM outbox.messages"))


async def test_several_processes_deliver_thousands_and_never_one_message_twice_at_once(
    database_url: str, conn: asyncpg.Connection, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    with Receiver(always(Action(delay=0.002))) as rx:
        ids = await setup(conn, rx.url(), 3000)
        supervisor = WorkerProcess(
            database_url, "--processes", "3", "--concurrency", "50", log_dir=tmp_path
        )
        workers.append(supervisor)
        await wait_until(lambda: all_finished(conn), within=120)
        supervisor.signal(signal.SIGTERM)
        assert supervisor.wait(30) == 0, supervisor.output()
    by_id = rx.by_id()
    assert set(by_id) == {str(i) for i in ids}
    for arrivals in by_id.values():
        spans = sorted((a.arrived, a.finished) for a in arrivals)
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert start >= end, "one message was being delivered by two workers at once"
    workers_seen = await conn.fetch("SELECT DISTINCT worker_id FROM outbox.attempts")
    assert len(workers_seen) == 3
    assert (
        await conn.fetchval("SELECT count(*) FROM outbox.attempts WHERE outcome = 'delivered'")
        == 3000
    )


async def test_sigkill_mid_batch_loses_nothing(
    database_url: str, conn: asyncpg.Connection, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    with Receiver(always(Action(delay=0.3))) as rx:
        ids = await setup(conn, rx.url(), 100)
        doomed = WorkerProcess(
            database_url, "--concurrency", "20", "--lease-seconds", "2", log_dir=tmp_path
        )
        workers.append(doomed)
        rx.wait_for(lambda: len(rx.snapshot()) >= 25, timeout=30)
        doomed.proc.send_signal(signal.SIGKILL)
        doomed.wait(10)
        in_flight = await conn.fetchval(
            "SELECT count(*) FROM outbox.messages WHERE lease_token IS NOT NULL"
        )
        assert in_flight > 0  # it died holding leases
        survivor = WorkerProcess(
            database_url, "--concurrency", "20", "--lease-seconds", "2", log_dir=tmp_path
        )
        workers.append(survivor)
        await wait_until(lambda: all_finished(conn), within=90)
        survivor.signal(signal.SIGTERM)
        assert survivor.wait(30) == 0
    assert rx.ids() == {str(i) for i in ids}
    delivered = await conn.fetchval(
        "SELECT count(DISTINCT message_id) FROM outbox.attempts WHERE outcome = 'delivered'"
    )
    assert delivered == 100
    lost = await conn.fetchval(
        "SELECT count(*) FROM outbox.attempts WHERE outcome = 'lease_expired'"
    )
    assert lost >= in_flight
    assert await conn.fetchval("SELECT count(*) FROM outbox.dead_letters") == 0


async def test_sigterm_finishes_in_flight_work_and_hands_back_the_rest(
    database_url: str, conn: asyncpg.Connection, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    with Receiver(always(Action(delay=1.0))) as rx:
        await setup(conn, rx.url(), 40)
        worker = WorkerProcess(
            database_url, "--concurrency", "4", "--batch-size", "4", log_dir=tmp_path
        )
        workers.append(worker)
        rx.wait_for(lambda: len(rx.snapshot()) >= 4, timeout=30)
        worker.signal(signal.SIGTERM)
        started = time.monotonic()
        assert worker.wait(20) == 0, worker.output()
        assert time.monotonic() - started < 5
    delivered = await conn.fetchval(
        "SELECT count(*) FROM outbox.attempts WHERE outcome = 'delivered'"
    )
    assert delivered == len(rx.snapshot()) >= 4
    rest = await conn.fetch("SELECT lease_token, attempts FROM outbox.messages")
    assert len(rest) == 40 - delivered
    assert all(r["lease_token"] is None and r["attempts"] == 0 for r in rest)


async def test_a_second_signal_exits_at_once(
    database_url: str, conn: asyncpg.Connection, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    with Receiver(always(Action(delay=10))) as rx:
        await setup(conn, rx.url(), 5)
        worker = WorkerProcess(
            database_url, "--concurrency", "5", "--shutdown-grace", "30", log_dir=tmp_path
        )
        workers.append(worker)
        rx.wait_for(lambda: len(rx.snapshot()) >= 5, timeout=30)
        worker.signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        worker.signal(signal.SIGTERM)
        started = time.monotonic()
        assert worker.wait(10) != 0
        assert time.monotonic() - started < 3
    # Their leases are still held: the reaper of a later worker recovers them.
    assert (
        await conn.fetchval("SELECT count(*) FROM outbox.messages WHERE lease_token IS NOT NULL")
        == 5
    )


async def test_supervisor_restarts_a_child_that_dies(
    database_url: str, conn: asyncpg.Connection, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    supervisor = WorkerProcess(database_url, "--processes", "2", log_dir=tmp_path)
    workers.append(supervisor)
    await wait_until(lambda: _async(len(children(supervisor.proc.pid)) == 2), within=30)
    for child in children(supervisor.proc.pid):  # a password on a command line shows in `ps`
        assert database_url not in " ".join(child.cmdline())
    assert database_url not in " ".join(psutil.Process(supervisor.proc.pid).cmdline())
    victim = children(supervisor.proc.pid)[0]
    victim.kill()
    await wait_until(
        lambda: _async(
            len(kids := children(supervisor.proc.pid)) == 2
            and victim.pid not in {k.pid for k in kids}
        ),
        within=30,
    )
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait(30) == 0, supervisor.output()
    assert "restarting" in supervisor.output()


async def _async(value: bool) -> bool:
    return value


async def test_worker_survives_a_postgresql_restart(
    workers: list[WorkerProcess], tmp_path: Path
) -> None:
    from outbox.devtools.embedded import EmbeddedPostgres

    data = Path(tempfile.mkdtemp(prefix="outbox-restart-", dir="/tmp"))
    server = EmbeddedPostgres(data / "pgdata")
    server.start()
    try:
        url = server.url()
        await asyncio.to_thread(migrate.upgrade, url)
        conn = await connect(url)
        with Receiver() as rx:
            await setup(conn, rx.url(), 50)
            worker = WorkerProcess(url, "--concurrency", "10", log_dir=tmp_path)
            workers.append(worker)
            await wait_until(lambda: all_finished(conn), within=60)
            await conn.close()

            await asyncio.to_thread(server.restart)

            conn = await connect(url)
            async with conn.transaction():
                more = await outbox.enqueue_many(
                    conn, [{"endpoint": "hook", "payload": {"after": i}} for i in range(50)]
                )
            await wait_until(lambda: all_finished(conn), within=60)
            assert worker.proc.poll() is None, worker.output()
            assert {str(i) for i in more} <= rx.ids()
            worker.signal(signal.SIGTERM)
            assert worker.wait(30) == 0, worker.output()
            await conn.close()
        assert "database error" in worker.output() or "cannot reach" in worker.output()
    finally:
        server.stop()
        shutil.rmtree(data, ignore_errors=True)


async def test_a_postgresql_crash_under_load_loses_nothing_committed(
    workers: list[WorkerProcess], tmp_path: Path
) -> None:
    """SIGKILL of the postmaster while producers commit and workers deliver;
    crash recovery; then every message whose commit returned is delivered,
    none rolled back is, and the duplicates (deliveries whose record the crash
    took: worker transactions commit asynchronously) are counted."""
    from outbox.devtools.embedded import EmbeddedPostgres

    data = Path(tempfile.mkdtemp(prefix="outbox-crash-", dir="/tmp"))
    server = EmbeddedPostgres(data / "pgdata")
    server.start()
    committed: set[str] = set()
    rolled_back: set[str] = set()
    in_doubt: set[str] = set()  # the commit was on the wire when the server died
    try:
        url = server.url()
        await asyncio.to_thread(migrate.upgrade, url)
        with Receiver(always(Action(delay=0.002))) as rx:
            admin = await connect(url)
            await admin.execute(
                "INSERT INTO outbox.endpoints (name, channel, url, max_attempts)"
                " VALUES ('hook', 'webhook', $1, 1000)",
                rx.url(),
            )
            await admin.close()
            for _ in range(2):
                workers.append(
                    WorkerProcess(
                        url, "--concurrency", "20", "--lease-seconds", "3", log_dir=tmp_path
                    )
                )
            stop = asyncio.Event()

            async def produce() -> None:
                conn: asyncpg.Connection | None = None
                for n in itertools.count():
                    if stop.is_set():
                        break
                    ids: list[str] = []
                    try:
                        if conn is None or conn.is_closed():
                            conn = await connect(url)
                        tx = conn.transaction()
                        await tx.start()
                        ids = [
                            str(i)
                            for i in await outbox.enqueue_many(
                                conn,
                                [
                                    {"endpoint": "hook", "payload": {"n": n, "i": i}}
                                    for i in range(3)
                                ],
                            )
                        ]
                        if n % 7 == 0:
                            await tx.rollback()
                            rolled_back.update(ids)
                        else:
                            await tx.commit()
                            committed.update(ids)
                    except (
                        OSError,
                        asyncpg.PostgresError,
                        asyncpg.InterfaceError,
                        asyncpg.InternalClientError,  # a connection broken mid-exchange
                        DatabaseError,  # connect() while the server is down
                    ):
                        in_doubt.update(ids)
                        conn = None
                        await asyncio.sleep(0.1)
                    await asyncio.sleep(0.005)
                if conn is not None:
                    await conn.close()

            producer = asyncio.create_task(produce())
            await asyncio.sleep(3)
            received_before = len(rx.ids())
            await asyncio.to_thread(server.kill)
            await asyncio.sleep(0.5)
            await asyncio.to_thread(server.start)  # crash recovery
            await asyncio.sleep(3)
            stop.set()
            await producer

            conn = await connect(url)
            await wait_until(lambda: all_finished(conn), within=90)
            await conn.close()
            received = rx.by_id()
        assert received_before > 0  # the crash came mid-delivery
        assert len(committed) > 300
        lost = committed - received.keys()
        assert not lost, f"{len(lost)} committed messages never delivered"
        assert not rolled_back & received.keys()
        twice = sum(
            1 for tries in received.values() if sum(200 <= r.action.status < 300 for r in tries) > 1
        )
        print(
            f"crash: {len(committed)} committed, {len(rolled_back)} rolled back,"
            f" {len(in_doubt)} in doubt, {twice} delivered twice"
        )
        for worker in workers:
            assert worker.proc.poll() is None, worker.output()
    finally:
        await asyncio.to_thread(server.stop)
        shutil.rmtree(data, ignore_errors=True)
