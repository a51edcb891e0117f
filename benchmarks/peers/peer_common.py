"""What the Python peers' worker scripts share (see README.md).

    python <peer>_worker.py enqueue URL N [SETTINGS_JSON]   create the schema, add N jobs
    python <peer>_worker.py work    URL N [SETTINGS_JSON]   drain them; one JSON line, exit

Settings come as one JSON object (the fourth argument, or the PEER_SETTINGS
environment variable); each script documents its keys. These scripts run in
the peers' own virtual environment (/tmp/outbox-peers/venv), never in outbox's.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any


def now() -> float:
    """Wall-clock time in seconds since the epoch (sub-microsecond resolution)."""
    return time.time()


def args() -> tuple[str, str, int, dict[str, Any]]:
    argv = sys.argv[1:]
    if len(argv) < 3 or argv[0] not in ("enqueue", "work") or not argv[2].isdigit():
        sys.exit(f"usage: {sys.argv[0]} enqueue|work URL N [SETTINGS_JSON]")
    raw = argv[3] if len(argv) > 3 else os.environ.get("PEER_SETTINGS", "{}")
    return argv[0], argv[1], int(argv[2]), json.loads(raw)


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


Run = Callable[[str, int, dict[str, Any]], Awaitable[None]]


def main(enqueue: Run, work: Run) -> None:
    """A worker script's entry point: ``enqueue`` or ``work``, on uvloop unless
    the settings say ``"uvloop": false``."""
    mode, url, n, settings = args()
    run = enqueue if mode == "enqueue" else work
    if settings.get("uvloop", True):
        import uvloop

        uvloop.run(run(url, n, settings))
    else:
        asyncio.run(run(url, n, settings))


def chunks(n: int, size: int) -> Iterator[range]:
    for start in range(0, n, size):
        yield range(start, min(n, start + size))


class Recorder:
    """Each handler's start: the first and the last, how many distinct jobs
    started and how many calls there were (a job run twice shows as calls >
    count). ``done`` is set once ``n`` distinct jobs have started."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.first: float | None = None
        self.last: float | None = None
        self.calls = 0
        self.seen: set[Any] = set()
        self.done = asyncio.Event()

    def record(self, job_id: Any, t: float | None = None) -> None:
        t = now() if t is None else t
        if self.first is None:
            self.first = t
        self.last = t
        self.calls += 1
        self.seen.add(job_id)
        if len(self.seen) == self.n:
            self.done.set()

    def result(self, **extra: Any) -> dict[str, Any]:
        return {
            "count": len(self.seen),
            "calls": self.calls,
            "first": self.first,
            "last": self.last,
            **extra,
        }


async def drained_at(url: str, sql: str, limit_s: float = 60.0) -> float | None:
    """After the last start: poll ``sql`` (a count of jobs not yet completed)
    every 10 ms until it is 0; the time it first was. Outside the measured window."""
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        deadline = now() + limit_s
        while True:
            if await conn.fetchval(sql) == 0:
                return now()
            if now() > deadline:
                return None
            await asyncio.sleep(0.01)
    finally:
        await conn.close()
