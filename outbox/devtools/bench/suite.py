"""Running `outbox bench`'s scenarios, and the database they measure on."""

from __future__ import annotations

import platform
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from outbox.db import migrate
from outbox.db.connect import connect
from outbox.devtools.bench import (
    backlog,
    brokers,
    claim,
    common,
    drain,
    enqueue,
    http,
    latency,
    memory,
    publish,
    startup,
    stats,
    transport,
    web,
)
from outbox.devtools.embedded import EmbeddedPostgres

# What `outbox bench` runs when no scenario is named.
DEFAULT = (
    "enqueue", "drain", "http", "latency", "backlog", "memory", "transport", "stats", "publish",
    "startup", "claim",
)  # fmt: skip
# Only when named: each needs its broker running (outbox.devtools.bench.brokers),
# and the dashboard's (the web extra).
BROKERS = brokers.NAMES
NAMED = (*BROKERS, "web")
SCENARIOS = DEFAULT + NAMED
Progress = Callable[[str, float], None]


@dataclass(frozen=True)
class Options:
    rounds: int = 3
    messages: int | None = None  # drain, http, memory, brokers: the backlog's size (else their own)
    backlog: int = 1_000_000
    rate: float = 500.0  # latency
    seconds: float = 10.0  # latency
    broker_urls: tuple[tuple[str, str], ...] = ()  # (broker, URL): else brokers.URLS
    concurrency: int = 100  # brokers: the worker's --concurrency, and the bare client's in flight
    worker_args: tuple[str, ...] = ()  # latency: more flags for its worker (--no-listen ...)
    worker_url: str | None = None  # latency, drain: the worker's own URL (a pooler's), --pooled
    backlog_processes: int = 1  # backlog: worker processes (one supervisor's)


class MeasuredDatabase:
    """The database to measure on: the one given, or else an embedded PostgreSQL
    (durable settings) in a temporary directory, removed afterwards."""

    def __init__(self, url: str | None) -> None:
        self.url = url
        self._server: EmbeddedPostgres | None = None

    def __enter__(self) -> str:
        if self.url is None:
            self._server = EmbeddedPostgres(tempfile.mkdtemp(prefix="outbox-bench-") + "/pgdata")
            self._server.start()
            self.url = self._server.url()
        migrate.upgrade(self.url)
        return self.url

    def __exit__(self, *_: object) -> None:
        if self._server is not None:
            self._server.stop()
            shutil.rmtree(self._server.data_dir.parent, ignore_errors=True)


async def run(
    url: str,
    scenarios: tuple[str, ...],
    options: Options,
    *,
    progress: Progress,
    starting: Callable[[str], None],
) -> dict[str, Any]:
    """Every scenario in turn; the report (machine, server, results)."""
    report: dict[str, Any] = {"machine": common.machine_facts(), "results": []}
    conn = await connect(url)
    report["server"] = await common.server_facts(conn)
    await conn.close()
    for scenario in scenarios or DEFAULT:
        starting(scenario)
        report["results"].append(await _scenario(url, scenario, options, progress))
    report["python"] = platform.python_version()
    return report


async def _scenario(url: str, name: str, o: Options, progress: Progress) -> dict[str, Any]:
    sized = {"messages": o.messages} if o.messages else {}
    if name == "enqueue":
        return await enqueue.run(url, rounds=o.rounds, progress=progress)
    if name == "drain":
        return await drain.run(
            url, rounds=o.rounds, progress=progress, worker_url=o.worker_url, **sized
        )
    if name == "latency":
        return await latency.run(
            url, rate=o.rate, seconds=o.seconds, rounds=o.rounds, progress=progress,
            worker_args=o.worker_args, worker_url=o.worker_url,
        )  # fmt: skip
    if name == "backlog":
        return await backlog.run(
            url, messages=o.backlog, rounds=o.rounds, processes=o.backlog_processes,
            progress=progress,
        )  # fmt: skip
    if name == "memory":
        return await memory.run(url, rounds=o.rounds, progress=progress, **sized)
    if name == "publish":
        return await publish.run(url, rounds=o.rounds, progress=progress, **sized)
    if name == "startup":
        return await startup.run(url, rounds=o.rounds, progress=progress)
    if name == "stats":
        return await stats.run(url, progress=progress)
    if name == "claim":
        return await claim.run(url, rounds=o.rounds, progress=progress)
    if name == "web":
        return await web.run(url, progress=progress)
    if name == "http":
        return await http.run(url, rounds=o.rounds, progress=progress, **sized)
    if name in BROKERS:
        return await brokers.run(
            url, name, url=dict(o.broker_urls).get(name), concurrency=o.concurrency,
            rounds=o.rounds, progress=progress, **sized,
        )  # fmt: skip
    return await transport.run(rounds=o.rounds, progress=progress)
