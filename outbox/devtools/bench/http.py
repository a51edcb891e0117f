"""`outbox bench http`: deliveries through the webhook channel, ledger and
all, against the ceiling a bare aiohttp client reaches on the same receiver.

The receiver (``python -m outbox.devtools.receiver``, always 200) runs in a process of
its own; one worker process delivers a pre-inserted backlog to it, timed from
the first delivery to the last, and in the same round a bare aiohttp client
posts as many requests at the same concurrency.
"""

from __future__ import annotations

import functools
from typing import Any

import aiohttp

from outbox.db.connect import connect
from outbox.devtools.bench.common import Figure, drain_rate, ensure_endpoint, fill_backlog
from outbox.devtools.bench.transport import _post_aiohttp, _rate, start_receiver
from outbox.devtools.processes import spawn_worker

ENDPOINT = "bench-http"


async def add_endpoint(conn: Any, url: str, name: str = ENDPOINT) -> None:
    """A benchmark's webhook endpoint: the receiver is on loopback, which the SSRF
    guard refuses unless allowed; the breaker never opens."""
    await ensure_endpoint(
        conn,
        name,
        "webhook",
        url=url,
        allow_networks=("127.0.0.0/8",),
        breaker_failures=1_000_000,
    )


async def worker_rate(
    db: str, url: str, n: int, concurrency: int, *, traced: bool = False
) -> float:
    """Deliveries/s of one worker process. Every message carries a sampled trace
    context; with ``traced`` the worker makes a span of every attempt (all
    sampled, batched to an exporter that drops them: `traced_worker`),
    without it the worker has no SDK and passes each context on unchanged."""
    conn = await connect(db)
    try:
        await add_endpoint(conn, url)
        await fill_backlog(conn, ENDPOINT, n, traced=True)
        since = await conn.fetchval("SELECT clock_timestamp()")
        proc = spawn_worker(
            db, "--concurrency", str(concurrency), "--poll-interval", "0.05", traced=traced
        )
        try:
            return await drain_rate(conn, ENDPOINT, n, since)
        finally:
            proc.terminate()
            proc.wait(30)
    finally:
        await conn.close()


async def aiohttp_rate(url: str, n: int, concurrency: int) -> float:
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        return await _rate(functools.partial(_post_aiohttp, session, url), n, concurrency)


async def run(
    db: str,
    *,
    messages: int = 20_000,
    concurrency: int = 100,
    rounds: int = 3,
    progress: Any = None,
) -> dict[str, Any]:
    receiver, url = start_receiver()
    ours = Figure("http_worker", "deliveries/s")
    traced = Figure("http_worker_traced", "deliveries/s")
    bare = Figure("http_bare_aiohttp", "requests/s")
    try:
        for _ in range(rounds):
            ours.rounds.append(await worker_rate(db, url, messages, concurrency))
            traced.rounds.append(await worker_rate(db, url, messages, concurrency, traced=True))
            bare.rounds.append(await aiohttp_rate(url, messages, concurrency))
            if progress:
                for figure in (ours, traced, bare):
                    progress(figure.name, figure.rounds[-1])
    finally:
        receiver.terminate()
        receiver.wait(10)
    return {
        "scenario": "http",
        "messages": messages,
        "concurrency": concurrency,
        ours.name: ours.to_json(),
        bare.name: bare.to_json(),
        traced.name: traced.to_json(),
        "ratio_to_ceiling": ours.median / bare.median,
        # What tracing costs: 1 - traced / untraced, medians of the same run (target <= 15%).
        "tracing_cost": 1 - traced.median / ours.median,
        "tracing_cost_by_round": [
            1 - t / o for t, o in zip(traced.rounds, ours.rounds, strict=True)
        ],
        "ratio_by_round": [o / b for o, b in zip(ours.rounds, bare.rounds, strict=True)],
    }
