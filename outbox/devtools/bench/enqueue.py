"""The `enqueue` scenario: what a producer pays for `outbox.enqueue()`.

Single-row enqueue, each in its own transaction, at 1 and at 32 concurrent
producers, against a bare ``INSERT`` of the same row into a copy of
``outbox.messages`` (same columns, defaults and indexes; no function, no
checks, no wake-up) in the same run; rounds alternate between the two so
drift hits both. Then the batch form: 10,000 messages per call.
"""

from __future__ import annotations

import asyncio
import json
import statistics
from typing import Any

import asyncpg

from outbox.db.connect import connect
from outbox.devtools.bench.common import Figure, ensure_endpoint, postmaster_pid, rate_for
from outbox.produce.enqueue import enqueue, enqueue_many

ENDPOINT = "bench-null"
PAYLOAD = {"event": "order.created", "order_id": 12345, "amount": "19.99", "currency": "EUR"}

_SETUP = """
DROP TABLE IF EXISTS public.outbox_bench_bare;
CREATE TABLE public.outbox_bench_bare (LIKE outbox.messages INCLUDING ALL);
"""
# LIKE copies columns, defaults and indexes but not storage parameters; the
# copy gets the hot table's autovacuum settings so both pay the same upkeep.
_COPY_OPTIONS = """
SELECT 'ALTER TABLE public.outbox_bench_bare SET (' || array_to_string(reloptions, ', ') || ')'
  FROM pg_class WHERE oid = 'outbox.messages'::regclass AND reloptions IS NOT NULL
"""
_BARE_INSERT = (
    "INSERT INTO public.outbox_bench_bare (id, endpoint, payload, key, priority, available_at) "
    "VALUES (gen_random_uuid(), $1, $2::text::jsonb, $3, $4, now())"
)
_CLEAN = f"""
DELETE FROM outbox.messages WHERE endpoint = '{ENDPOINT}';
DELETE FROM outbox.idempotency_keys WHERE endpoint = '{ENDPOINT}';
TRUNCATE public.outbox_bench_bare;
"""


async def run(
    url: str,
    *,
    producers: tuple[int, ...] = (1, 32),
    seconds: float = 3.0,
    rounds: int = 3,
    batch_size: int = 10_000,
    progress: Any = None,
) -> dict[str, Any]:
    admin = await connect(url)
    postmaster = await postmaster_pid(admin)  # server CPU: this server's processes only
    await ensure_endpoint(admin, ENDPOINT)
    await admin.execute(_SETUP)
    copy_options = await admin.fetchval(_COPY_OPTIONS)
    if copy_options:
        await admin.execute(copy_options)
    # A listener, so that wake-ups have someone to wake: their cost is included.
    listener = await connect(url)
    await listener.add_listener("outbox_wakeup", lambda *_: None)
    results: dict[str, Any] = {"scenario": "enqueue", "seconds_per_round": seconds}
    try:
        for n in producers:
            conns = [await connect(url) for _ in range(n)]
            try:
                results |= await _producers(admin, conns, postmaster, seconds, rounds, progress)
            finally:
                for c in conns:
                    await c.close()
        results |= await _batch(admin, batch_size, rounds, progress)
    finally:
        await admin.execute("UPDATE outbox.config SET wakeup_until = '-infinity'")
        await admin.execute(_CLEAN + "DROP TABLE IF EXISTS public.outbox_bench_bare;")
        await admin.close()
        await listener.close()
    return results


async def _producers(
    admin: asyncpg.Connection,
    conns: list[asyncpg.Connection],
    postmaster: int | None,
    seconds: float,
    rounds: int,
    progress: Any,
) -> dict[str, Any]:
    """The figures at ``len(conns)`` producers: outbox.enqueue(), the same while
    idle workers ask for wake-ups, and a bare INSERT; rounds alternate."""
    n = len(conns)
    ours = Figure(f"enqueue_{n}_producers", "messages/s")
    # The same, while a worker asks for wake-ups the whole time: the worst case
    # of the wake-up design (busy workers never ask).
    waking = Figure(f"enqueue_{n}_producers_waking_idle_workers", "messages/s")
    bare = Figure(f"bare_insert_{n}_producers", "rows/s")
    cpu: dict[str, list[tuple[float, float]]] = {ours.name: [], waking.name: [], bare.name: []}
    variants = (
        (ours, _enqueue_step, "-infinity"),
        (waking, _enqueue_step, "infinity"),
        (bare, _bare_step, "-infinity"),
    )
    for _ in range(rounds):
        for figure, step, wakeup_until in variants:
            await admin.execute(
                "UPDATE outbox.config SET wakeup_until = $1::text::timestamptz", wakeup_until
            )
            await admin.execute(_CLEAN)
            await admin.execute("CHECKPOINT")
            pool: asyncio.Queue[asyncpg.Connection] = asyncio.Queue()
            for c in conns:
                pool.put_nowait(c)
            rate = await rate_for(seconds, step(pool), n, postmaster=postmaster)
            figure.rounds.append(rate.per_second)
            cpu[figure.name].append((rate.client_cpu_us, rate.server_cpu_us))
            if progress:
                progress(figure.name, rate.per_second)
    results: dict[str, Any] = {
        figure.name: figure.to_json()
        | {
            "client_cpu_us_per_item": statistics.median(c for c, _ in cpu[figure.name]),
            "server_cpu_us_per_item": statistics.median(s for _, s in cpu[figure.name]),
        }
        for figure in (ours, waking, bare)
    }
    results[f"ratio_{n}_producers"] = ours.median / bare.median
    results[f"ratio_{n}_producers_waking_idle_workers"] = waking.median / bare.median
    results[f"ratio_{n}_producers_by_round"] = [
        o / b for o, b in zip(ours.rounds, bare.rounds, strict=True)
    ]
    return results


async def _batch(
    admin: asyncpg.Connection, batch_size: int, rounds: int, progress: Any
) -> dict[str, Any]:
    """enqueue_many of ``batch_size`` messages in one call."""
    batch = Figure(f"enqueue_many_{batch_size}", "messages/s")
    messages = [{"endpoint": ENDPOINT, "payload": PAYLOAD} for _ in range(batch_size)]
    for _ in range(rounds):
        await admin.execute(_CLEAN)
        await admin.execute("CHECKPOINT")
        loop = asyncio.get_running_loop()
        start = loop.time()
        async with admin.transaction():
            await enqueue_many(admin, messages)
        batch.rounds.append(batch_size / (loop.time() - start))
        if progress:
            progress(batch.name, batch.rounds[-1])
    return {batch.name: batch.to_json()}


def _enqueue_step(pool: asyncio.Queue[asyncpg.Connection]) -> Any:
    async def step() -> int:
        conn = pool.get_nowait()
        try:
            async with conn.transaction():
                await enqueue(conn, ENDPOINT, PAYLOAD, key="customer-42")
        finally:
            pool.put_nowait(conn)
        return 1

    return step


def _bare_step(pool: asyncio.Queue[asyncpg.Connection]) -> Any:
    async def step() -> int:
        conn = pool.get_nowait()
        try:
            async with conn.transaction():
                # The same serialisation a producer would do, then the plain INSERT.
                body = json.dumps(PAYLOAD, separators=(",", ":"))
                await conn.execute(_BARE_INSERT, ENDPOINT, body, "customer-42", 0)
        finally:
            pool.put_nowait(conn)
        return 1

    return step
