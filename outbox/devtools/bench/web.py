"""`outbox bench web`: how fast the dashboard's pages answer on big tables.

The history of `outbox bench stats` (by default 1,000,000 ledger rows, all in
the last hour, and 100,000 queued messages over 10 endpoints) plus 20,000
dead letters; then ``outbox web`` in a process of its own, signed in, each page
asked for ``rounds`` times. The figure is the server's own time for each
answer (its ``Server-Timing`` header: the handler, the queries and the
template), median of the rounds; the client's round trip is reported beside it.
Target: the overview and the dead-letter page under 100 ms."""

from __future__ import annotations

import asyncio
import re
import secrets
import socket
import statistics
import subprocess
import time
from typing import Any

import httpx

from outbox.db.connect import connect
from outbox.devtools.bench.stats import PREFIX, clear, fill_history
from outbox.devtools.processes import spawn_web

PAGES = {
    "overview": "/",
    "overview_refresh": "/fragments/overview",
    "chart_data": "/api/throughput",
    "dead_letters": "/dead",
    "dead_letters_filtered": f"/dead?endpoint={PREFIX}3&error=timeout",
    "messages": f"/messages?endpoint={PREFIX}3",
    "endpoint": f"/endpoints/{PREFIX}3",
}
TARGET_MS = 100.0
_TIMING = re.compile(r"app;dur=([0-9.]+)")


async def run(
    url: str, *, attempts: int = 1_000_000, queued: int = 100_000, dead: int = 20_000,
    rounds: int = 9, progress: Any = None,
) -> dict[str, Any]:  # fmt: skip
    conn = await connect(url)
    try:
        await fill_history(conn, attempts, queued, dead)
        server, base, token = _start(url)
        try:
            timings = await _measure(base, token, rounds, progress)
        finally:
            server.terminate()
            server.wait(15)
    finally:
        await clear(conn)
        await conn.close()
    results: dict[str, Any] = {
        "scenario": "web", "attempts": attempts, "queued": queued, "dead": dead,
        "rounds": rounds, "target_ms": TARGET_MS,
    }  # fmt: skip
    for name, (server_ms, client_ms) in timings.items():
        results[f"{name}_ms"] = {
            "server_median": statistics.median(server_ms), "server_runs": server_ms,
            "client_median": statistics.median(client_ms),
        }  # fmt: skip
    return results


def _start(url: str) -> tuple[subprocess.Popen[bytes], str, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    token = secrets.token_urlsafe(16)
    server = spawn_web(url, port, token)
    return server, f"http://127.0.0.1:{port}", token


async def _measure(
    base: str, token: str, rounds: int, progress: Any
) -> dict[str, tuple[list[float], list[float]]]:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        deadline = time.monotonic() + 30
        while True:
            try:
                signed = await client.get("/login", params={"token": token})
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
        if signed.status_code != 303:
            raise RuntimeError(f"could not sign in to outbox web (HTTP {signed.status_code})")
        for path in PAGES.values():  # warm: the pool's connections, the plans
            await client.get(path)
        timings: dict[str, tuple[list[float], list[float]]] = {n: ([], []) for n in PAGES}
        for _ in range(rounds):
            for name, path in PAGES.items():
                started = time.perf_counter()
                answer = await client.get(path)
                client_ms = (time.perf_counter() - started) * 1000
                found = _TIMING.search(answer.headers.get("server-timing", ""))
                if answer.status_code != 200 or found is None:
                    raise RuntimeError(f"{path}: HTTP {answer.status_code}")
                timings[name][0].append(float(found.group(1)))
                timings[name][1].append(client_ms)
                if progress:
                    progress(f"{name}_ms", float(found.group(1)))
    return timings
