"""Helpers the integration and end-to-end tests share: a worker in this process
with the real channels, polling, and endpoint and message setup."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import httpx
import psutil

import outbox
from outbox.deliver.channels import registry
from outbox.deliver.channels.null import NullChannel
from outbox.deliver.channels.spec import Channel, ChannelContext
from outbox.deliver.channels.ssrf import LOOPBACK, Network
from outbox.deliver.channels.telegram import TelegramChannel
from outbox.deliver.channels.webhook import WebhookChannel
from outbox.deliver.config import WorkerConfig
from outbox.deliver.listen import make_listener
from outbox.deliver.session import open_pool
from outbox.deliver.store import PostgresStore
from outbox.deliver.tracing import Tracer
from outbox.deliver.worker import Worker
from outbox.devtools.processes import spawn_worker
from outbox.settings import Settings

if TYPE_CHECKING:
    from pgbouncer import PgBouncer

# The suite's pass through a pooler (OUTBOX_TEST_THROUGH_PGBOUNCER, CI's second
# pass): conftest starts one PgBouncer in transaction mode for the session and
# puts it here (the chaos test adds one in front of its own server). The
# workers the tests start, in this process or as processes, then reach their
# database through it (--pooled), with LISTEN on a direct connection
# (OUTBOX_LISTEN_URL), as in production behind PgBouncer.
POOLER: list[PgBouncer] = []


def worker_route(url: str) -> tuple[str, dict[str, str]]:
    """Where a test's worker connects for database ``url``, and the settings that
    go with it: ``url`` itself, or the session's PgBouncer (see `POOLER`)."""
    for bouncer in POOLER:
        if bouncer.serves(url):
            return bouncer.route(url), {"OUTBOX_POOLED": "1", "OUTBOX_LISTEN_URL": url}
    return url, {}  # not a server with a PgBouncer in front (a test's own): direct


def fleet_route(named: dict[str, str]) -> tuple[str, dict[str, str], tuple[str, ...]]:
    """A fleet's databases (name: URL) as OUTBOX_DATABASE_URLS, with the settings and
    flags that go with them: through the session's pooler, if there is one, polling
    (one OUTBOX_LISTEN_URL cannot serve several databases)."""
    entries, pooled = [], False
    for name, url in named.items():
        routed, extra = worker_route(url)
        pooled = pooled or bool(extra)
        entries.append(f"{name}={routed}")
    if pooled:
        return " ".join(entries), {"OUTBOX_POOLED": "1"}, ("--no-listen",)
    return " ".join(entries), {}, ()


def worker_config(**changes: Any) -> WorkerConfig:
    """A worker's config as `Settings` makes it, with these changes (settings or the
    loop's own tuning)."""
    settings = {k: v for k, v in changes.items() if k in Settings.model_fields}
    tuning = {k: v for k, v in changes.items() if k not in Settings.model_fields}
    return WorkerConfig.from_settings(Settings(**settings), **tuning)


FAST = worker_config(
    concurrency=20,
    batch_size=50,
    lease_seconds=30,
    poll_interval=0.05,
    flush_interval=0.01,
    reap_interval=0.2,
    backoff_base=0.05,
    backoff_cap=0.2,
    shutdown_grace=5,
)


def worker_channels(concurrency: int, allow: Sequence[Network] = LOOPBACK) -> dict[str, Channel]:
    """The worker's channels; the SSRF guard allows loopback, where the test receivers live."""
    context = ChannelContext(concurrency, tuple(allow))
    return {
        **{name: spec.open(context) for name, spec in registry.channels().items()},
        "webhook": WebhookChannel(concurrency, allow=allow),
        "telegram": TelegramChannel(concurrency, allow=allow),
        "null": NullChannel(),
    }


@contextlib.asynccontextmanager
async def running_worker(
    url: str,
    config: WorkerConfig = FAST,
    *,
    listen: bool = False,
    allow: Sequence[Network] = LOOPBACK,
    server_settings: dict[str, str] | None = None,
    tracer: Tracer | None = None,
) -> AsyncIterator[Worker]:
    if server_settings is None:  # through the session's pooler, if there is one
        worker_url, _ = worker_route(url)
        pooled = worker_url != url
        pool = await open_pool(worker_url, pooled=pooled)
    else:  # settings of the test's own (a role): straight to the server
        pooled = False
        pool = await asyncpg.create_pool(
            url, min_size=1, max_size=4, server_settings=server_settings
        )
    assert pool is not None
    store = PostgresStore(
        pool, worker_id="test-worker", lease_seconds=config.lease_seconds, pooled=pooled
    )
    channels = worker_channels(config.concurrency, allow)
    worker = Worker(
        store,
        channels,
        config,
        listen=make_listener(url) if listen else None,
        tracer=tracer,
    )
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 20)
        for channel in channels.values():
            await channel.aclose()
        await pool.close()


async def until(predicate: Callable[[], Any], within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"condition not met within {within}s")


async def add_endpoint(conn: asyncpg.Connection, name: str, url: str, **settings: Any) -> None:
    columns = {"name": name, "channel": "webhook", "url": url, **settings}
    names = ", ".join(columns)
    params = ", ".join(f"${i + 1}" for i in range(len(columns)))
    await conn.execute(
        f"INSERT INTO outbox.endpoints ({names}) VALUES ({params})", *columns.values()
    )


async def enqueue(
    conn: asyncpg.Connection, endpoint: str, n: int = 1, **kw: Any
) -> list[uuid.UUID]:
    async with conn.transaction():
        return await outbox.enqueue_many(
            conn, [{"endpoint": endpoint, "payload": {"n": i}, **kw} for i in range(n)]
        )


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

FAST_RETRIES = {
    "OUTBOX_BACKOFF_BASE": "0.05",
    "OUTBOX_BACKOFF_CAP": "0.2",
    "OUTBOX_LOG_LEVEL": "INFO",
    "OUTBOX_ALLOW_NETWORKS": "127.0.0.0/8",  # the receivers are on loopback
}


class WorkerProcess:
    """``outbox worker`` in a child process, its output kept in a file. ``url`` may
    be a dict of names to URLs: a fleet of several databases (`fleet_route`)."""

    def __init__(
        self,
        url: str | dict[str, str],
        *args: str,
        log_dir: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.log = log_dir / f"worker-{time.monotonic_ns()}.log"
        with self.log.open("wb") as out:
            if isinstance(url, dict):
                urls, routed, flags = fleet_route(url)
                worker_url, routed = "", {**routed, "OUTBOX_DATABASE_URLS": urls}
                args = (*flags, *args)
            else:
                worker_url, routed = worker_route(url)
            self.proc = spawn_worker(
                worker_url, "--poll-interval", "0.1", *args, log_level="INFO",
                env={**FAST_RETRIES, **routed, **(env or {})}, output=out,
            )  # fmt: skip

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class HttpProcess:
    """An HTTP server in a child process on a free loopback port, its output kept
    in a file; `ready` waits until ``probe`` answers, `stop` ends it with SIGTERM."""

    probe = "/"

    def __init__(self, command: list[str], env: dict[str, str], name: str, log_dir: Path) -> None:
        self.log = log_dir / f"{name}-{time.monotonic_ns()}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                command, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT
            )

    async def ready(self, within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        async with httpx.AsyncClient() as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise AssertionError(f"it exited: {self.output()}")
                with contextlib.suppress(httpx.TransportError):
                    await client.get(self.url + self.probe, timeout=1)
                    return
                await asyncio.sleep(0.1)
        raise AssertionError(f"it did not answer within {within}s: {self.output()}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class AppProcess(HttpProcess):
    """An example ASGI app (``examples/<module>.py``) under uvicorn."""

    probe = "/docs"

    def __init__(self, module: str, env: dict[str, str], *, log_dir: Path) -> None:
        self.port = free_port()
        command = [
            sys.executable, "-m", "uvicorn", f"{module}:app", "--app-dir", str(EXAMPLES),
            "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning",
        ]  # fmt: skip
        super().__init__(command, env, module, log_dir)


class WebProcess(HttpProcess):
    """``outbox web`` on ``database_url``, signed in with ``token``; through the
    session's pooler, if there is one (``--pooled``), as a worker would be."""

    probe = "/login"

    def __init__(self, database_url: str, token: str, *args: str, log_dir: Path) -> None:
        self.port = free_port()
        # A URL with settings of its own (?role=...) stays direct: PgBouncer
        # refuses startup parameters.
        url, routed = (database_url, {}) if "?" in database_url else worker_route(database_url)
        if routed:
            args = ("--pooled", *args)
        command = [sys.executable, "-m", "outbox", "web", "--port", str(self.port), *args]
        env = {"OUTBOX_WEB_TOKEN": token, "OUTBOX_DATABASE_URL": url}
        super().__init__(command, env, "web", log_dir)


def children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
