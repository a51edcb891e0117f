"""The `claim` scenario: what one claim costs the server when it is small.

A worker under light load, or one whose messages spread over many endpoints,
claims a few messages at a time: then a claim's cost is its statements, not
its rows. Two figures, each the server CPU of one claim (the backend's, from
/proc) and its round trip, in a worker's session settings:

* ``claim_1``: claims of 1 message from one endpoint's backlog (what a
  worker at a steady trickle runs, and what commit-to-receipt latency waits
  for);
* ``claim_40_of_20_endpoints``: claims of 40 over 20 endpoints with
  messages due, 2 each (the per-endpoint part of a claim).

Claimed messages are left leased; the endpoints' queues are removed after.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

import asyncpg

from outbox.db.connect import connect
from outbox.db.queries import QUERIES
from outbox.deliver.session import WORKER_SESSION_SETTINGS
from outbox.devtools.bench.common import Figure, _stat, ensure_endpoint, fill_backlog

SPREAD = 20  # endpoints of the second figure
CLAIMS = 300  # per round and figure


def _backend_cpu(pid: int) -> float | None:
    """CPU seconds a backend on this machine has used, or None (another machine)."""
    stat = _stat(str(pid))
    if stat is None:
        return None
    fields = stat[1]
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _claims(url: str, size: int) -> tuple[float | None, float]:
    """(server CPU, wall time) per claim of ``size``, in µs, over `CLAIMS` claims."""
    conn = await asyncpg.connect(url, server_settings=WORKER_SESSION_SETTINGS)
    try:
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        claim = QUERIES["claim"]
        for _ in range(10):  # past the plan cache's first plans
            await conn.fetch(claim, size, uuid.uuid4(), 60.0, "bench", 1.0, 0.5)
        cpu0, start = _backend_cpu(pid), time.perf_counter()
        for _ in range(CLAIMS):
            await conn.fetch(claim, size, uuid.uuid4(), 60.0, "bench", 1.0, 0.5)
        wall = (time.perf_counter() - start) / CLAIMS * 1e6
        cpu1 = _backend_cpu(pid)
        cpu = None if cpu0 is None or cpu1 is None else (cpu1 - cpu0) / CLAIMS * 1e6
        return cpu, wall
    finally:
        await conn.close()


_CLEAR = "DELETE FROM outbox.messages WHERE endpoint LIKE 'bench-claim%'"


async def _fill(url: str, names: list[str], each: int) -> None:
    conn = await connect(url)
    try:
        await conn.execute(_CLEAR)
        for name in names:
            await ensure_endpoint(conn, name)
            await fill_backlog(conn, name, each, vacuum=name == names[-1])
    finally:
        await conn.close()


async def _clear(url: str) -> None:
    conn = await connect(url)
    try:
        await conn.execute(_CLEAR)
    finally:
        await conn.close()


async def run(url: str, *, rounds: int = 3, progress: Any = None) -> dict[str, Any]:
    figures: dict[str, tuple[Figure, Figure]] = {}
    cases = (
        ("claim_1", ["bench-claim"], 1, 2 * CLAIMS),
        (f"claim_40_of_{SPREAD}_endpoints", [f"bench-claim-{i}" for i in range(SPREAD)], 40, 2_000),
    )
    try:
        for _ in range(rounds):
            for name, endpoints, size, each in cases:
                await _fill(url, endpoints, each + 100)
                cpu, wall = await _claims(url, size)
                server, trip = figures.setdefault(
                    name, (Figure(f"{name}_server_cpu", "µs"), Figure(f"{name}_wall", "µs"))
                )
                if cpu is not None:
                    server.rounds.append(cpu)
                trip.rounds.append(wall)
                if progress:
                    progress(f"{name} server CPU (µs)", cpu if cpu is not None else float("nan"))
    finally:
        await _clear(url)
    result: dict[str, Any] = {"scenario": "claim", "claims_per_round": CLAIMS}
    for server, trip in figures.values():
        if server.rounds:
            result[server.name] = server.to_json()
        result[trip.name] = trip.to_json()
    return result
