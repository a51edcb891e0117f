"""`outbox bench http`: deliveries through the webhook channel, ledger and
all, against the ceiling a bare aiohttp client reaches on the same receiver.

The receiver (``python -m outbox.devtools.receiver``, always 200) runs in a process of
its own; one worker process delivers a pre-inserted backlog to it, timed from
the first delivery to the last, and in the same round a bare aiohttp client
posts as many requests at the same concurrency.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
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


SAMPLED_EVERY = 10  # the "producer samples 10%" round


async def worker_rate(
    db: str, url: str, n: int, concurrency: int, *, traced: bool = False, sampled_every: int = 1
) -> float:
    """Deliveries/s of one worker process. Every message carries a trace context;
    with ``traced`` the worker makes a span of every attempt (batched to an
    exporter that drops them: `traced_worker`), without it the worker has no
    SDK and passes each context on unchanged. With ``sampled_every`` > 1 only
    one message in that many says "sampled", and the worker samples as the
    SDK does by default (by the parent): the others get non-recording spans."""
    conn = await connect(db)
    try:
        await add_endpoint(conn, url)
        await fill_backlog(conn, ENDPOINT, n, traced=True, sampled_every=sampled_every)
        since = await conn.fetchval("SELECT clock_timestamp()")
        proc = spawn_worker(
            db, "--concurrency", str(concurrency), "--poll-interval", "0.05", traced=traced,
            env={"OUTBOX_BENCH_SAMPLER": "parent"} if sampled_every > 1 else None,
        )  # fmt: skip
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
    sampled = Figure(f"http_worker_traced_1_in_{SAMPLED_EVERY}", "deliveries/s")
    bare = Figure("http_bare_aiohttp", "requests/s")
    try:
        for _ in range(rounds):
            ours.rounds.append(await worker_rate(db, url, messages, concurrency))
            traced.rounds.append(await worker_rate(db, url, messages, concurrency, traced=True))
            sampled.rounds.append(
                await worker_rate(
                    db, url, messages, concurrency, traced=True, sampled_every=SAMPLED_EVERY
                )
            )
            bare.rounds.append(await aiohttp_rate(url, messages, concurrency))
            if progress:
                for figure in (ours, traced, sampled, bare):
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
        sampled.name: sampled.to_json(),
        "ratio_to_ceiling": ours.median / bare.median,
        # What tracing costs: 1 - traced / untraced, medians of the same run (target <= 15%).
        "tracing_cost": 1 - traced.median / ours.median,
        "tracing_cost_by_round": [
            1 - t / o for t, o in zip(traced.rounds, ours.rounds, strict=True)
        ],
        "tracing_cost_sampled": 1 - sampled.median / ours.median,
        "sampled_every": SAMPLED_EVERY,
        "span_costs_us": span_costs(),
        "ratio_by_round": [o / b for o, b in zip(ours.rounds, bare.rounds, strict=True)],
    }


def span_costs() -> dict[str, float]:
    """µs per span in a process of its own (`traced_worker.span_costs`): a bare
    SDK span, and an attempt span as the worker makes it."""
    output = subprocess.run(
        [sys.executable, "-m", "outbox.devtools.bench.traced_worker", "--span-costs"],
        capture_output=True, check=True, timeout=300, text=True,
    ).stdout  # fmt: skip
    costs: dict[str, float] = json.loads(output)
    return costs
