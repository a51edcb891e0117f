"""Assemble and run one worker process: pool, channels, wake-ups, metrics, signals."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable

import asyncpg

from outbox._redact import redact_text, redact_url
from outbox.db.connect import DB_ERRORS, asyncpg_url
from outbox.deliver import tracing
from outbox.deliver.channels import registry
from outbox.deliver.channels.spec import Channel, ChannelContext
from outbox.deliver.channels.ssrf import parse_networks
from outbox.deliver.config import WorkerConfig
from outbox.deliver.listen import make_listener
from outbox.deliver.metrics import Metrics, multiprocess, render_registry
from outbox.deliver.probes import serve
from outbox.deliver.store import PostgresStore
from outbox.deliver.tracing import Tracer
from outbox.deliver.worker import Worker

log = logging.getLogger("outbox.worker")

# The worker's statements each have one right plan: walk messages_first_idx or
# messages_retry_idx (or messages_lease_idx) in order and stop after the
# batch. The hot table's statistics are always stale (a bulk enqueue lands
# between two autoanalyze runs); with 50,000 fresh rows and old statistics the
# planner chose a bitmap scan that sorted the whole backlog on every claim
# (22 ms per claim, and growing with the backlog) instead of 0.5 ms. These
# settings apply only to the worker's own connections.
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
METRICS_REFRESH = 5.0
Stopper = Callable[[], Awaitable[None]]


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def open_tracer(config: WorkerConfig) -> Tracer | None:
    """The tracer of this process's attempt spans, if it makes any (`outbox.deliver.tracing`)."""
    specs = registry.channels()
    return tracing.open_tracer(config.trace_spans, {n: s.telemetry for n, s in specs.items()})


def open_channels(config: WorkerConfig) -> dict[str, Channel]:
    """A sender for every channel the registry knows."""
    context = ChannelContext(config.concurrency, parse_networks(config.allow_networks))
    return {name: spec.open(context) for name, spec in registry.channels().items()}


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Return a connection to the pool as it is. asyncpg's default reset (advisory
    unlock, CLOSE ALL, UNLISTEN, RESET ALL) is a round trip on every release, 5%
    of a worker's time under load; worker connections keep no state between
    uses: session settings are the connection's own (server_settings), the
    advisory locks vacuum and prune take are released in ``finally`` blocks,
    and LISTEN runs on a connection of its own outside the pool. A transaction
    left open is still rolled back: asyncpg does that before calling this."""


def refusal(exc: BaseException, url: str) -> str:
    """Why a connection failed, as the server or the network said it (without
    the URL's password), with a hint where the cause is known."""
    said = redact_text(str(exc), (url,)).strip()
    reason = f"{said} ({type(exc).__name__})" if said else type(exc).__name__
    if "unsupported startup parameter" in said:
        reason += (
            "; a connection pooler (PgBouncer) refuses the session settings a worker sends "
            "at connect: point the worker at PostgreSQL itself (see the README, Deploying)"
        )
    return reason


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

        stoppers.append(
            await serve(config.metrics_port, render_registry, healthy, lambda: not worker.stopping)
        )
        log.info("metrics on :%d (/metrics, /healthz, /readyz)", config.metrics_port)
    return stoppers


async def run_worker(url: str, config: WorkerConfig, *, worker_id: str | None = None) -> int:
    """Run one worker until SIGTERM/SIGINT; a second signal exits at once. Returns the exit code."""
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

    pool = await _create_pool(url, stop)
    if pool is None:
        return 0
    channels = open_channels(config)
    store = PostgresStore(
        pool, worker_id=worker_id or default_worker_id(), lease_seconds=config.lease_seconds
    )
    metrics = Metrics() if config.metrics_port is not None or multiprocess() else None
    observers = () if metrics is None else (metrics,)
    tracer = open_tracer(config)
    listen = make_listener(config.listen_url or url) if config.listen else None
    worker = Worker(store, channels, config, listen=listen, observers=observers, tracer=tracer)
    if stop.is_set():
        worker.stop()
    log.info("worker %s started (concurrency %d)", store.worker_id, config.concurrency)
    extras = await _start_metrics(config, store, worker, metrics)
    try:
        await worker.run()
    finally:
        for stop_extra in extras:
            with contextlib.suppress(Exception):
                await stop_extra()
        # The channels' connections (a broker's), all at once, within the grace.
        with contextlib.suppress(Exception):
            closing = (channel.aclose() for channel in channels.values())
            await asyncio.wait_for(
                asyncio.gather(*closing, return_exceptions=True), config.shutdown_grace
            )
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pool.close(), 5)
        if tracer is not None:  # the spans still batched, exported before the process ends
            await asyncio.to_thread(tracer.shutdown)
    log.info("worker %s stopped: %d delivered", store.worker_id, worker.delivered)
    return 0
