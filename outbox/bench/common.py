"""Shared pieces of the benchmark scenarios: timing rounds, medians, machine facts."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
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


def _server_cpu_seconds() -> float:
    """CPU time used so far by every process named postgres on this machine (Linux)."""
    total = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="utf-8") as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        if name.startswith(("postgres", "postmaster")):
            fields = stat[stat.rindex(")") + 2 :].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


async def rate_for(duration: float, step: Callable[[], Awaitable[int]], workers: int) -> Rate:
    """Run ``step`` in ``workers`` concurrent loops for ``duration`` s."""
    import asyncio

    done = 0
    deadline = time.perf_counter() + duration

    async def loop() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            n = await step()  # not `done += await step()`: that reads `done` before awaiting
            done += n

    server0, client0 = _server_cpu_seconds(), time.process_time()
    start = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(workers)))
    elapsed = time.perf_counter() - start
    client, server = time.process_time() - client0, _server_cpu_seconds() - server0
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
