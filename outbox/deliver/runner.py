"""Assemble and run one worker process: pool, channels, wake-ups, metrics, signals."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import asyncpg

from outbox._redact import redact_text, redact_url
from outbox.db.connect import DB_ERRORS
from outbox.deliver import tracing
from outbox.deliver.channels import registry
from outbox.deliver.channels.opened import OpenedChannels
from outbox.deliver.channels.spec import ChannelContext
from outbox.deliver.channels.ssrf import parse_networks
from outbox.deliver.config import WorkerConfig
from outbox.deliver.listen import make_listener
from outbox.deliver.observe import MULTIPROC_ENV
from outbox.deliver.probes import serve
from outbox.deliver.session import open_pool
from outbox.deliver.store import PostgresStore
from outbox.deliver.tracing import Tracer
from outbox.deliver.worker import Worker

if TYPE_CHECKING:
    from outbox.deliver.metrics import Metrics

log = logging.getLogger("outbox.worker")

METRICS_REFRESH = 5.0
Stopper = Callable[[], Awaitable[None]]


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def open_tracer(config: WorkerConfig) -> Tracer | None:
    """The tracer of this process's attempt spans, if it makes any (`outbox.deliver.tracing`)."""
    return tracing.open_tracer(config.trace_spans, registry.Telemetries())


def open_channels(config: WorkerConfig) -> OpenedChannels:
    """A sender for every channel the registry knows, each opened on first use."""
    context = ChannelContext(config.concurrency, parse_networks(config.allow_networks))
    return OpenedChannels(registry.Known(), context)


def refusal(exc: BaseException, url: str) -> str:
    """Why a connection failed, as the server or the network said it (without
    the URL's password), with a hint where the cause is known."""
    said = redact_text(str(exc), (url,)).strip()
    reason = f"{said} ({type(exc).__name__})" if said else type(exc).__name__
    if "unsupported startup parameter" in said:
        reason += (
            "; a connection pooler (PgBouncer) refuses the session settings a worker sends "
            "at connect: run the worker with --pooled (OUTBOX_POOLED=1), or point it at "
            "PostgreSQL itself (see the README, Production)"
        )
    return reason


async def _create_pool(url: str, stop: asyncio.Event, *, pooled: bool) -> asyncpg.Pool | None:
    """A pool, retrying while the database is unreachable (until stopped)."""
    delay = 0.2
    while not stop.is_set():
        try:
            return await open_pool(url, pooled=pooled)
        except DB_ERRORS as exc:
            log.warning(
                "cannot reach %s: %s; retrying in %.1fs",
                redact_url(url),
                refusal(exc, url),
                delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, 5.0)
    return None


async def _start_metrics(
    config: WorkerConfig, store: PostgresStore, worker: Worker, metrics: Metrics | None
) -> list[Stopper]:
    """The metrics server (when this process serves one) and the loop that
    refreshes the database-derived gauges; returns their stoppers."""
    if metrics is None:
        return []

    async def refresh() -> None:
        while True:
            with contextlib.suppress(*DB_ERRORS):
                metrics.endpoints(await store.stats())
                metrics.database(await store.database_health())
            await asyncio.sleep(METRICS_REFRESH)

    task = asyncio.create_task(refresh(), name="metrics-refresh")

    async def stop_refresh() -> None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    stoppers: list[Stopper] = [stop_refresh]
    if config.metrics_port is not None:

        async def healthy() -> bool:
            try:
                async with asyncio.timeout(2):
                    return await store.answers()
            except DB_ERRORS:
                return False

        from outbox.deliver.metrics import render_registry

        stoppers.append(
            await serve(config.metrics_port, render_registry, healthy, lambda: not worker.stopping)
        )
        log.info("metrics on :%d (/metrics, /healthz, /readyz)", config.metrics_port)
    return stoppers


async def _close(
    config: WorkerConfig,
    extras: list[Stopper],
    channels: OpenedChannels,
    pool: asyncpg.Pool,
    tracer: Tracer | None,
) -> None:
    """What a stopping worker closes: its extras, the channels' connections (a
    broker's, all at once, within the grace), its pool, and its tracer."""
    for stop_extra in extras:
        with contextlib.suppress(Exception):
            await stop_extra()
    with contextlib.suppress(Exception):
        closing = (channel.aclose() for channel in channels.opened())
        await asyncio.wait_for(
            asyncio.gather(*closing, return_exceptions=True), config.shutdown_grace
        )
    with contextlib.suppress(Exception):
        await asyncio.wait_for(pool.close(), 5)
    if tracer is not None:  # the spans still batched, exported before the process ends
        await asyncio.to_thread(tracer.shutdown)


# The cyclic collector's first generation runs after this many more container
# allocations than frees (CPython's default: 700). A worker allocates a few dozen
# objects per message that plain reference counting frees; collecting every 700
# cost ~4% of a broker drain (outbox bench nats, six interleaved pairs).
GC_THRESHOLD = 20_000


def _settle_gc() -> None:
    """Move what start-up built (modules, settings, pools) out of the collector's
    sight for good (`gc.freeze`), and let it run less often on the hot path. No
    full collection first: it cost 10 ms of the start-up, for what little of
    the start-up's garbage is in cycles."""
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 50, 100)


async def run_worker(
    url: str, config: WorkerConfig, *, worker_id: str | None = None, database: str = ""
) -> int:
    """Run one worker until SIGTERM/SIGINT; a second signal exits at once. Returns the
    exit code. ``database``: its name in the metrics (never the URL)."""
    stop = asyncio.Event()
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

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)

    pool = await _create_pool(url, stop, pooled=config.pooled)
    if pool is None:
        return 0
    channels = open_channels(config)
    store = PostgresStore(
        pool,
        worker_id=worker_id or default_worker_id(),
        lease_seconds=config.lease_seconds,
        pooled=config.pooled,
    )
    metrics: Metrics | None = None
    if config.metrics_port is not None or os.environ.get(MULTIPROC_ENV):
        # prometheus-client is imported only by a process that serves or writes metrics.
        from outbox.deliver.metrics import Metrics

        metrics = Metrics(database=database)
    observers = () if metrics is None else (metrics,)
    tracer = open_tracer(config)
    listen = make_listener(config.listen_url or url) if config.listen else None
    worker = Worker(store, channels, config, listen=listen, observers=observers, tracer=tracer)
    if stop.is_set():
        worker.stop()
    log.info("worker %s started (concurrency %d)", store.worker_id, config.concurrency)
    extras = await _start_metrics(config, store, worker, metrics)
    _settle_gc()
    try:
        await worker.run()
    finally:
        await _close(config, extras, channels, pool, tracer)
    log.info("worker %s stopped: %d delivered", store.worker_id, worker.delivered)
    return 0
