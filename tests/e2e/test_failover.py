"""A failover under load: a primary and its streaming standby (``pg_basebackup
-R``); producers commit and three worker processes deliver through a
multi-host URL (``target_session_attrs=read-write``); mid-run the primary
crashes (SIGKILL) and the standby is promoted. Nobody restarts: producers and
workers follow the new primary on their own.

* **Synchronous standby:** nothing a producer saw committed is lost.
* **Asynchronous standby:** what was lost is counted: the commits the standby
  had not received when the primary died are gone from the new primary (with
  the business data of their transactions); those a worker had not yet
  delivered are never delivered. Caught up (loopback), that is a handful at
  most; held 1 s behind (the primary's WAL sender stopped for a second before the
  crash), it is the last second of commits, and the test checks the count
  sees them.
* Either way nothing rolled back is sent, every worker is alive at the end,
  and each duplicate carries the same ``webhook-id`` and body.

The figures are printed and, when ``OUTBOX_FAILOVER_REPORT`` names a file,
written there as JSON (one key per mode).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from failover import Cluster
from support import WorkerProcess

import outbox
from outbox.db import migrate
from outbox.devtools.receiver import Receiver

pytestmark = [pytest.mark.e2e, pytest.mark.single_pass]

PRODUCERS = 3
BEFORE, AFTER = 6.0, 6.0  # seconds of production before and after the failover
REPORT = os.environ.get("OUTBOX_FAILOVER_REPORT")
DB_ERRORS = (
    OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError,
    TimeoutError,
)  # fmt: skip


@pytest.fixture(params=["synchronous", "asynchronous", "asynchronous, 1 s behind"])
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    mode = str(request.param)
    c = Cluster(synchronous=mode == "synchronous", lag=1.0 if "behind" in mode else 0.0)
    try:
        yield c
    finally:
        c.close()


class Production:
    def __init__(self) -> None:
        self.committed: set[str] = set()
        self.rolled_back: set[str] = set()
        self.in_doubt = 0  # broken at COMMIT: the producer cannot know
        self.errors = Counter[str]()


async def produce(url: str, producer: int, out: Production, stop: asyncio.Event) -> None:
    rng = random.Random(producer)
    conn: asyncpg.Connection | None = None
    while not stop.is_set():
        if conn is None or conn.is_closed():
            try:
                conn = await asyncpg.connect(url, timeout=3)
            except DB_ERRORS as exc:
                out.errors[f"connect: {type(exc).__name__}"] += 1
                await asyncio.sleep(0.1)
                continue
        rollback = rng.random() < 0.1
        transaction = conn.transaction()
        message_id = None
        try:
            await transaction.start()
            message_id = str(await outbox.enqueue(conn, "hook", {"p": producer}))
            if rollback:
                await transaction.rollback()
                out.rolled_back.add(message_id)
            else:
                await transaction.commit()
                out.committed.add(message_id)
        except DB_ERRORS as exc:
            out.errors[type(exc).__name__] += 1
            if message_id is not None and not rollback:
                out.in_doubt += 1
            conn.terminate()
            conn = None
        await asyncio.sleep(0.01)
    if conn is not None:
        conn.terminate()


@pytest.mark.timeout(300)
async def test_a_failover_under_load(
    cluster: Cluster, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    mode = "synchronous" if cluster.synchronous else "asynchronous"
    mode += ", 1 s behind" if cluster.lag else ""
    await asyncio.to_thread(migrate.upgrade, cluster.primary.url())
    with Receiver() as rx:
        admin = await asyncpg.connect(cluster.primary.url())
        await admin.execute(
            "INSERT INTO outbox.endpoints (name, channel, url) VALUES ('hook', 'webhook', $1)",
            rx.url(),
        )
        await admin.close()
        env = {"OUTBOX_REAP_INTERVAL": "1"}
        for _ in range(3):
            workers.append(
                WorkerProcess(cluster.url(), "--lease-seconds", "5", log_dir=tmp_path, env=env)
            )
        out, stop = Production(), asyncio.Event()
        producers = [
            asyncio.create_task(produce(cluster.url(), i, out, stop)) for i in range(PRODUCERS)
        ]
        await asyncio.sleep(BEFORE)
        committed_before = len(out.committed)
        took = await asyncio.to_thread(cluster.promote)
        await asyncio.sleep(AFTER)
        stop.set()
        await asyncio.gather(*producers)
        drained = await _drained(cluster.standby.url(), rx, out)
        records = rx.snapshot()
        kept = await _kept(cluster.standby.url())
    by_id: dict[str, list[object]] = {}
    for r in records:
        if r.message_id:
            by_id.setdefault(r.message_id, []).append(r)
    received = set(by_id)
    duplicates = {i: rs for i, rs in by_id.items() if len(rs) > 1}
    lost = len(out.committed - received)
    gone = out.committed - kept  # committed on the old primary, absent from the new one
    figures = {
        "standby": mode,
        "messages_committed": len(out.committed),
        "committed_before_the_failover": committed_before,
        "messages_rolled_back": len(out.rolled_back),
        "in_doubt_broken_at_commit": out.in_doubt,
        "delivered": len(out.committed & received),
        "lost": lost,
        "gone_from_the_new_primary": len(gone),
        "of_which_delivered_before_the_crash": len(gone & received),
        "rolled_back_sent": len(out.rolled_back & received),
        "duplicates": sum(len(rs) - 1 for rs in duplicates.values()),
        "failover_seconds": round(took, 2),
        "producer_errors": dict(out.errors),
        "drained": drained,
    }
    print(f"\nfailover figures ({mode}):\n" + json.dumps(figures, indent=2))
    if REPORT:
        await asyncio.to_thread(_report, Path(REPORT), mode, figures)
    for w in workers:  # nobody restarted them, and none died
        assert w.proc.poll() is None, w.output()[-3000:]
    assert out.committed, "nothing committed"
    assert len(out.committed) > committed_before, "no producer followed the new primary"
    assert figures["rolled_back_sent"] == 0
    for rs in duplicates.values():  # the same message each time
        assert len({(r.headers["webhook-id"], r.body) for r in rs}) == 1  # type: ignore[attr-defined]
    if mode == "synchronous":
        assert lost == 0, sorted(out.committed - received)[:5]
        assert drained
    if cluster.synchronous:
        assert not gone
    if cluster.lag:  # what an asynchronous standby loses: the commits it had not received
        assert gone


async def _drained(url: str, rx: Receiver, out: Production, within: float = 90) -> bool:
    """Until the new primary holds no message, then until everything committed
    arrived or 10 s passed (asynchronous: what never reached the standby never
    arrives). Whether everything committed arrived."""
    deadline = time.monotonic() + within
    conn = await asyncpg.connect(url)
    try:
        while await conn.fetchval("SELECT count(*) FROM outbox.messages"):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.2)
    finally:
        await conn.close()
    settle = time.monotonic() + 10
    while not out.committed <= rx.ids() and time.monotonic() < settle:  # noqa: ASYNC110
        await asyncio.sleep(0.2)
    return out.committed <= rx.ids()


async def _kept(url: str) -> set[str]:
    """Every message id the (new) primary knows: queued, in the ledger or dead."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT id::text FROM outbox.messages UNION SELECT message_id::text"
            " FROM outbox.attempts UNION SELECT message_id::text FROM outbox.dead_letters"
        )
    finally:
        await conn.close()
    return {r[0] for r in rows}


def _report(path: Path, mode: str, figures: dict[str, object]) -> None:
    previous = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**previous, mode: figures}, indent=2) + "\n")
