"""Assemble and run one worker process: pool, channels, wake-ups, signals."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable

import asyncpg

from outbox._redact import redact_url
from outbox.db.connect import asyncpg_url
from outbox.db.queries import QUERIES
from outbox.deliver.channels import Channel
from outbox.deliver.channels.null import NullChannel
from outbox.deliver.channels.ssrf import parse_networks
from outbox.deliver.channels.telegram import TelegramChannel
from outbox.deliver.channels.webhook import WebhookChannel
from outbox.deliver.metrics import Metrics, multiprocess, render_registry, serve
from outbox.deliver.store import Store
from outbox.deliver.worker import WAKEUP_CHANNEL, Worker, WorkerConfig

log = logging.getLogger("outbox.worker")


# The worker's statements each have one right plan: walk messages_first_idx or
# messages_retry_idx
# (or messages_lease_idx) in order and stop after the batch. The hot table's
# statistics are always stale (a bulk enqueue lands between two autoanalyze
# runs); with 50,000 fresh rows and old statistics the planner chose a bitmap
# scan that sorted the whole backlog on every claim (22 ms per claim, and
# growing with the backlog) instead of 0.5 ms. These settings apply only to
# the worker's own connections.
WORKER_SESSION_SETTINGS = {
    "enable_seqscan": "off",
    "enable_bitmapscan": "off",
    "enable_sort": "off",
    # With sorts disabled, any plan that must sort costs ~1e10, which is past
    # jit_above_cost: each such statement was JIT-compiled (~110 ms, every time).
    "jit": "off",
    "application_name": "outbox-worker",
    "synchronous_commit": "off",
}


async def _start_metrics(
    config: WorkerConfig,
    pool: asyncpg.Pool,
    worker: Worker,
    metrics: Metrics | None,
    started: asyncio.Event,
) -> list[Callable[[], Awaitable[None]]]:
    """The metrics server (when this process serves one) and the loop that
    refreshes the database-derived gauges; returns their stoppers."""
    if metrics is None:
        return []

    async def refresh() -> None:
        while True:
            with contextlib.suppress(*_REFRESH_ERRORS):
                metrics.endpoints([dict(r) for r in await pool.fetch(QUERIES["stats"])])
            await asyncio.sleep(METRICS_REFRESH)

    task = asyncio.create_task(refresh(), name="metrics-refresh")

    async def stop_refresh() -> None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    stoppers: list[Callable[[], Awaitable[None]]] = [stop_refresh]
    if config.metrics_port is not None:

        async def healthy() -> bool:
            try:
                async with asyncio.timeout(2):
                    return bool(await pool.fetchval("SELECT 1"))
            except (*_REFRESH_ERRORS, TimeoutError):
                return False

        stoppers.append(
            await serve(
                config.metrics_port,
                render_registry,
                healthy,
                lambda: started.is_set() and not worker.stopping,
            )
        )
        log.info("metrics on :%d (/metrics, /healthz, /readyz)", config.metrics_port)
    return stoppers


METRICS_REFRESH = 5.0
_REFRESH_ERRORS = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Return a connection to the pool as it is. asyncpg's default reset (advisory
    unlock, CLOSE ALL, UNLISTEN, RESET ALL) is a round trip on every release, 5%
    of a worker's time under load; worker connections keep no state between
    uses: session settings are the connection's own (server_settings), the
    advisory locks vacuum and prune take are released in ``finally`` blocks,
    and LISTEN runs on a connection of its own outside the pool. A transaction
    left open is still rolled back: asyncpg does that before calling this."""


async def _create_pool(url: str, stop: asyncio.Event) -> asyncpg.Pool | None:
    """A pool, retrying while the database is unreachable (until stopped)."""
    delay = 0.2
    while not stop.is_set():
        try:
            pool = await asyncpg.create_pool(
                asyncpg_url(url),
                min_size=1,
                max_size=4,
                command_timeout=60,
                server_settings=WORKER_SESSION_SETTINGS,
                reset=_keep_session,
            )
            assert pool is not None
            return pool
        except _REFRESH_ERRORS as exc:
            log.warning(
                "cannot reach %s (%s); retrying in %.1fs",
                redact_url(url),
                type(exc).__name__,
                delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, 5.0)
    return None


def make_listener(
    url: str,
) -> Callable[[Callable[[], None]], Awaitable[Callable[[], Awaitable[None]]]]:
    """LISTEN on a dedicated connection, reconnecting whenever it drops."""

    async def listen(wake: Callable[[], None]) -> Callable[[], Awaitable[None]]:
        closed = asyncio.Event()

        async def keep_listening() -> None:
            delay = 0.2
            while not closed.is_set():
                try:
                    conn = await asyncpg.connect(asyncpg_url(url))
                except _REFRESH_ERRORS:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                delay = 0.2
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                try:
                    await conn.add_listener(WAKEUP_CHANNEL, lambda *_: wake())
                    wake()  # anything committed while we were not listening
                    waiter = asyncio.create_task(closed.wait())
                    await asyncio.wait(
                        [waiter, asyncio.create_task(lost.wait())],
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    waiter.cancel()
                except _REFRESH_ERRORS:
                    pass
                finally:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close(), 2)

        task = asyncio.create_task(keep_listening(), name="listen")

        async def unlisten() -> None:
            closed.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 3)

        return unlisten

    return listen


async def run_worker(url: str, config: WorkerConfig, *, worker_id: str | None = None) -> int:
    """Run one worker until SIGTERM/SIGINT; a second signal exits at once. Returns the exit code."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    worker: Worker | None = None
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            log.warning("second signal: exiting now; leases will expire and be reaped")
            os._exit(1)
        log.info("stopping: finishing deliveries in flight (signal again to exit at once)")
        stop.set()
        if worker is not None:
            worker.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)

    pool = await _create_pool(url, stop)
    if pool is None:
        return 0
    allow = parse_networks(config.allow_networks)
    channels: dict[str, Channel] = {
        "webhook": WebhookChannel(config.concurrency, allow=allow),
        "telegram": TelegramChannel(config.concurrency, allow=allow),
        "null": NullChannel(),
    }
    store = Store(
        pool, worker_id=worker_id or default_worker_id(), lease_seconds=config.lease_seconds
    )
    metrics = Metrics() if config.metrics_port is not None or multiprocess() else None
    worker = Worker(store, channels, config, listen=make_listener(url), metrics=metrics)
    if stop.is_set():
        worker.stop()
    log.info("worker %s started (concurrency %d)", store.worker_id, config.concurrency)
    started = asyncio.Event()
    extras = await _start_metrics(config, pool, worker, metrics, started)
    try:
        started.set()
        await worker.run()
    finally:
        for stop_extra in extras:
            with contextlib.suppress(Exception):
                await stop_extra()
        for channel in channels.values():
            with contextlib.suppress(Exception):
                await channel.aclose()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pool.close(), 5)
    log.info("worker %s stopped: %d delivered", store.worker_id, worker.delivered)
    return 0
