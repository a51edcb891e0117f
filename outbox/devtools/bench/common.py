"""Shared pieces of the benchmark scenarios: timing rounds, medians, machine facts."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg


@dataclass
class Figure:
    """One measured quantity: every round's value, reported as the median."""

    name: str
    unit: str
    rounds: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.rounds) if self.rounds else float("nan")

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "unit": self.unit, "median": self.median, "rounds": self.rounds}


@dataclass(frozen=True)
class Rate:
    """Items per second, and the CPU each item cost in this process and in PostgreSQL."""

    per_second: float
    client_cpu_us: float
    server_cpu_us: float


def _stat(pid: str) -> tuple[str, list[str]] | None:
    """(process name, the fields after it) from /proc/<pid>/stat, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()


def _server_cpu_seconds(postmaster: int | None = None) -> float:
    """CPU time used so far by PostgreSQL on this machine (Linux).

    With ``postmaster``: that server's processes, plus what its children that
    have already exited used (autovacuum workers, closed connections), which
    the kernel adds to the postmaster's children's times. Without: every
    process named postgres, whichever server it belongs to.
    """
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        stat = _stat(entry.name)
        if stat is None:
            continue
        name, fields = stat
        if postmaster is None:
            if name.startswith(("postgres", "postmaster")):
                total += int(fields[11]) + int(fields[12])  # utime, stime
        elif int(entry.name) == postmaster:
            total += sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
        elif int(fields[1]) == postmaster:  # ppid
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


async def postmaster_pid(conn: asyncpg.Connection) -> int | None:
    """The postmaster of ``conn``'s server if it runs on this machine (Linux), else None."""
    backend = await conn.fetchval("SELECT pg_backend_pid()")
    stat = _stat(str(backend))
    if stat is None or not stat[0].startswith(("postgres", "postmaster")):
        return None  # another machine, or a pid namespace we cannot see into
    return int(stat[1][1])


async def rate_for(
    duration: float,
    step: Callable[[], Awaitable[int]],
    workers: int,
    *,
    postmaster: int | None = None,
) -> Rate:
    """Run ``step`` in ``workers`` concurrent loops for ``duration`` s.

    Server CPU is that of ``postmaster``'s server (see `postmaster_pid`), or
    of every PostgreSQL process on the machine when it is not given.
    """
    import asyncio

    done = 0
    deadline = time.perf_counter() + duration

    async def loop() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            n = await step()  # not `done += await step()`: that reads `done` before awaiting
            done += n

    server0, client0 = _server_cpu_seconds(postmaster), time.process_time()
    start = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(workers)))
    elapsed = time.perf_counter() - start
    client = time.process_time() - client0
    server = _server_cpu_seconds(postmaster) - server0
    return Rate(done / elapsed, client / done * 1e6, server / done * 1e6)


async def server_facts(conn: asyncpg.Connection) -> dict[str, Any]:
    names = ("server_version", "fsync", "synchronous_commit", "shared_buffers", "max_connections")
    facts: dict[str, Any] = {}
    for name in names:
        facts[name] = await conn.fetchval(f"SHOW {name}")
    return facts


def machine_facts() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


# Set by the CLI when it prints for a person: long phases show a progress bar on stderr.
BARS = False


@contextlib.contextmanager
def bar(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar for a long phase (when `BARS`); yields ``update(done)``."""
    if not BARS:
        yield lambda _done: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    columns = (
        TextColumn("  {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda done: progress.update(task, completed=done)


async def ensure_endpoint(conn: Any, name: str, channel: str = "null", **settings: Any) -> None:
    """A benchmark's endpoint, through the operators' API: added, or given these
    settings if it exists (from an earlier run)."""
    from outbox import operate
    from outbox.errors import EndpointExistsError
    from outbox.operate.endpoint_config import EndpointConfig, EndpointUpdate

    try:
        await operate.add_endpoint(conn, EndpointConfig(name=name, channel=channel, **settings))
    except EndpointExistsError:
        if settings:
            await operate.update_endpoint(conn, name, EndpointUpdate(**settings))


async def fill_backlog(
    conn: Any,
    endpoint: str,
    n: int,
    *,
    key: Callable[[int], str] | None = None,
    traced: bool = False,
    sampled_every: int = 1,
    vacuum: bool = True,
) -> None:
    """Replace ``endpoint``'s queue with ``n`` fresh messages (10,000 per call),
    message ``i`` with the key ``key(i)`` if given, and with ``traced`` a trace
    context of its own, as from a traced service's requests: sampled for one
    message in ``sampled_every``, as a producer sampling at that ratio sets it.
    Then ``VACUUM ANALYZE``, unless not ``vacuum``: a cold table, its statistics
    those of the table when it was empty, as right after a burst."""
    from outbox.produce.enqueue import enqueue_many

    await conn.execute("DELETE FROM outbox.messages WHERE endpoint = $1", endpoint)
    await conn.execute("DELETE FROM outbox.attempts WHERE endpoint = $1", endpoint)
    if not vacuum:  # the statistics of an empty table, as a burst outruns autoanalyze
        await conn.execute("VACUUM ANALYZE outbox.messages")
    with bar(f"enqueueing {endpoint}", n) as update:
        for start in range(0, n, 10_000):
            async with conn.transaction():
                await enqueue_many(
                    conn,
                    [
                        {"endpoint": endpoint, "payload": {"i": i}}
                        | ({"key": key(i)} if key else {})
                        | ({"traceparent": _traceparent(i, sampled_every)} if traced else {})
                        for i in range(start, min(n, start + 10_000))
                    ],
                )
            update(min(n, start + 10_000))
    if vacuum:
        await conn.execute("VACUUM ANALYZE outbox.messages")


def _traceparent(i: int, sampled_every: int) -> str:
    return f"00-{i + 1:032x}-{i + 1:016x}-{'01' if i % sampled_every == 0 else '00'}"


async def remaining(conn: Any, endpoint: str) -> int:
    value = await conn.fetchval(
        "SELECT count(*) FROM outbox.messages WHERE endpoint = $1", endpoint
    )
    return int(value)


async def drain_rate(conn: Any, endpoint: str, n: int, since: datetime) -> float:
    """Messages/s while a worker (already started) empties ``endpoint``'s backlog of
    ``n``, from its first delivery to its last: start-up is not counted.

    The times come from the ledger afterwards (each attempt row has its start),
    and the queue is looked at only five times a second: counting it fifty
    times a second takes a fifth of a core from the server being measured. ``since``: a time before the worker started.
    """
    deadline = time.monotonic() + 600
    with bar(f"draining {endpoint}", n) as update:
        while (left := await remaining(conn, endpoint)) > 0:
            if time.monotonic() > deadline:  # a worker that died, or never started
                raise RuntimeError(f"{left} of {n} messages still queued after 10 minutes")
            update(n - left)
            await asyncio.sleep(0.2)
    row = await conn.fetchrow(
        "SELECT count(*) AS n, min(started_at) AS first, max(started_at) AS last"
        "  FROM outbox.attempts WHERE endpoint = $1 AND started_at >= $2",
        endpoint,
        since,
    )
    if row["n"] < n:
        raise RuntimeError(f"only {row['n']} of {n} deliveries were recorded")
    return float(row["n"] - 1) / float((row["last"] - row["first"]).total_seconds())
