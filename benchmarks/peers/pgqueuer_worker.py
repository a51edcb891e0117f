"""pgqueuer peer (see README.md and peer_common.py for the protocol).

Settings (JSON):
    consumers    PgQueuer instances (QueueManagers) in this process, each on its
                 own asyncpg connection, as pgqueuer's own benchmark runs them [5]
    batch_size   jobs per dequeue (and the size of its status-log buffer)     [100]
    uvloop       run on uvloop, as pgqueuer's benchmark and outbox's worker do [true]
    chunk        jobs per Queries.enqueue() call when enqueueing              [10000]

The tables are pgqueuer's default ("durable": all logged). A finished job is
deleted from the queue table and logged in pgqueuer_log.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import asyncpg
from peer_common import Recorder, chunks, drained_at, emit, main, now
from pgqueuer import PgQueuer
from pgqueuer.db import AsyncpgDriver
from pgqueuer.models import Job
from pgqueuer.queries import Queries


async def enqueue(url: str, n: int, settings: dict[str, Any]) -> None:
    t0 = now()
    conn = await asyncpg.connect(url)
    try:
        queries = Queries(AsyncpgDriver(conn))
        await queries.install()
        for ids in chunks(n, settings.get("chunk", 10_000)):
            await queries.enqueue(
                ["bench"] * len(ids),
                [json.dumps({"i": i}).encode() for i in ids],
                [0] * len(ids),
            )
    finally:
        await conn.close()
    emit({"enqueued": n, "seconds": now() - t0})


async def work(url: str, n: int, settings: dict[str, Any]) -> None:
    rec = Recorder(n)
    started = now()
    consumers = []
    for _ in range(settings.get("consumers", 5)):
        pgq = PgQueuer(AsyncpgDriver(await asyncpg.connect(url)))

        @pgq.entrypoint("bench")
        async def bench(job: Job) -> None:
            rec.record(job.id)

        consumers.append(pgq)
    batch_size = settings.get("batch_size", 100)
    tasks = [
        asyncio.create_task(pgq.run(batch_size=batch_size, dequeue_timeout=timedelta(seconds=30)))
        for pgq in consumers
    ]
    done = asyncio.create_task(rec.done.wait())
    await asyncio.wait([done, *tasks], return_when=asyncio.FIRST_COMPLETED)
    if not rec.done.is_set():  # a consumer stopped (or failed) before the end
        for task in tasks:
            if task.done():
                task.result()
        raise RuntimeError("a pgqueuer consumer stopped early")
    drained = await drained_at(url, "SELECT count(*) FROM pgqueuer")
    emit(rec.result(drained=drained, started=started))
    for pgq in consumers:
        pgq.shutdown.set()
    await asyncio.wait(tasks, timeout=5)


if __name__ == "__main__":
    main(enqueue, work)
