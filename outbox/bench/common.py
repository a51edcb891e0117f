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


async def rate_for(duration: float, step: Callable[[], Awaitable[int]], workers: int) -> float:
    """Run ``step`` in ``workers`` concurrent loops for ``duration`` s; items per second."""
    import asyncio

    done = 0
    deadline = time.perf_counter() + duration

    async def loop() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            n = await step()  # not `done += await step()`: that reads `done` before awaiting
            done += n

    start = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(workers)))
    return done / (time.perf_counter() - start)


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
