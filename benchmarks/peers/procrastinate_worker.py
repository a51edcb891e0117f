"""procrastinate peer (see README.md and peer_common.py for the protocol).

Settings (JSON):
    concurrency   jobs in flight in the one worker (each fetched by its own
                  statement: procrastinate fetches one job at a time)          [10]
    pool_size     the psycopg pool's min and max size; 0: psycopg's default (4)
                                                              [concurrency + 2]
    delete_jobs   "never" (keep each finished job as history: the default),
                  "successful" or "always"                                  ["never"]
    listen_notify wake on NOTIFY as well as polling                          [true]
    polling       fetch_job_polling_interval, seconds                         [5.0]
    uvloop        run on uvloop                                              [true]
    chunk         jobs per batch_defer_async() call when enqueueing         [10000]
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from peer_common import Recorder, chunks, drained_at, emit, main, now
from procrastinate import App, JobContext, PsycopgConnector


def make_app(url: str, pool_size: int) -> App:
    pool = {"min_size": pool_size, "max_size": pool_size} if pool_size > 0 else {}
    return App(connector=PsycopgConnector(conninfo=url, **pool))


async def enqueue(url: str, n: int, settings: dict[str, Any]) -> None:
    t0 = now()
    app = make_app(url, 2)

    @app.task(name="bench")
    async def bench(i: int) -> None:  # never runs here
        pass

    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        for ids in chunks(n, settings.get("chunk", 10_000)):
            await bench.batch_defer_async(*({"i": i} for i in ids))
    emit({"enqueued": n, "seconds": now() - t0})


async def work(url: str, n: int, settings: dict[str, Any]) -> None:
    concurrency = settings.get("concurrency", 10)
    app = make_app(url, settings.get("pool_size", concurrency + 2))
    rec = Recorder(n)

    @app.task(name="bench", pass_context=True)
    async def bench(context: JobContext, i: int) -> None:
        rec.record(context.job.id)

    started = now()
    async with app.open_async():
        worker = asyncio.create_task(
            app.run_worker_async(
                concurrency=concurrency,
                wait=True,
                install_signal_handlers=False,
                delete_jobs=settings.get("delete_jobs", "never"),
                listen_notify=settings.get("listen_notify", True),
                fetch_job_polling_interval=settings.get("polling", 5.0),
            )
        )
        done = asyncio.create_task(rec.done.wait())
        await asyncio.wait([done, worker], return_when=asyncio.FIRST_COMPLETED)
        if not rec.done.is_set():
            worker.result()  # raises what stopped it
            raise RuntimeError("the procrastinate worker stopped early")
        drained = await drained_at(
            url, "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
        )
        emit(rec.result(drained=drained, started=started))
        worker.cancel()  # procrastinate's documented way to stop run_worker_async
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(worker, 5)


if __name__ == "__main__":
    main(enqueue, work)
