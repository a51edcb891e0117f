"""The `publish` scenario: what fan-out costs a producer, and what keeping
delivered payloads for replay costs a worker.

* One producer, each event in its own transaction: ``outbox.publish()`` of an
  event five endpoints subscribe to, against ``enqueue_many()`` of the same
  five messages, rounds alternating (the target: at most 1.5 times the time).
* One worker process draining null-channel messages with
  ``outbox.config.delivered_retention`` at its default (7 days: every
  delivered payload is kept) and at 0 (none kept), in the same rounds, with
  ``outbox.delivered`` already holding `KEPT_BEFORE` drains' worth of rows
  (1,000,000 for the default 50,000: its indexes are not small).
"""

from __future__ import annotations

import statistics
from typing import Any

import asyncpg

from outbox.db.connect import connect
from outbox.devtools.bench import drain
from outbox.devtools.bench.common import Figure, ensure_endpoint, postmaster_pid, rate_for
from outbox.produce.enqueue import enqueue_many
from outbox.produce.publish import publish

SUBSCRIBERS = tuple(f"bench-sub-{i}" for i in range(5))
TOPIC = "bench.order.created"
PAYLOAD = {"event": "order.created", "order_id": 12345, "amount": "19.99", "currency": "EUR"}
_CLEAN = "DELETE FROM outbox.messages WHERE endpoint LIKE 'bench-sub-%'"
KEPT_BEFORE = 20
_PREFILL = """
INSERT INTO outbox.delivered (message_id, endpoint, topic, payload, attempts, created_at, delivered_at)
SELECT gen_random_uuid(), 'bench-kept', 'bench.order.created', '{"event": "order.created", "n": 1}',
       1, now() - interval '1 day', now() - interval '1 day' + g * interval '1 ms'
  FROM generate_series(1, $1) AS g
"""


async def run(
    url: str,
    *,
    seconds: float = 3.0,
    rounds: int = 3,
    messages: int = 50_000,
    progress: Any = None,
) -> dict[str, Any]:
    admin = await connect(url)
    kept_for = await admin.fetchval("SELECT delivered_retention FROM outbox.config")
    try:
        for name in SUBSCRIBERS:
            await ensure_endpoint(admin, name)
            await admin.execute(
                "INSERT INTO outbox.subscriptions (endpoint, topic) VALUES ($1, 'bench.order.*')"
                " ON CONFLICT DO NOTHING",
                name,
            )
        results: dict[str, Any] = {"scenario": "publish", "subscribers": len(SUBSCRIBERS)}
        results |= await _fan_out(admin, url, seconds, rounds, progress)
        results |= await _retention(admin, url, messages, rounds, progress)
    finally:
        await admin.execute(_CLEAN)
        await admin.execute("DELETE FROM outbox.subscriptions WHERE endpoint LIKE 'bench-sub-%'")
        await admin.execute("UPDATE outbox.config SET delivered_retention = $1", kept_for)
        await admin.close()
    return results


async def _fan_out(
    admin: asyncpg.Connection, url: str, seconds: float, rounds: int, progress: Any
) -> dict[str, Any]:
    postmaster = await postmaster_pid(admin)
    conn = await connect(url)
    ours = Figure("publish_to_5_subscribers", "events/s")
    many = Figure("enqueue_many_of_5", "calls/s")
    cpu: dict[str, list[float]] = {ours.name: [], many.name: []}
    five = [{"endpoint": name, "payload": PAYLOAD} for name in SUBSCRIBERS]

    async def publish_step() -> int:
        async with conn.transaction():
            await publish(conn, TOPIC, PAYLOAD)
        return 1

    async def enqueue_step() -> int:
        async with conn.transaction():
            await enqueue_many(conn, five)
        return 1

    try:
        for _ in range(rounds):
            for figure, step in ((ours, publish_step), (many, enqueue_step)):
                await admin.execute(_CLEAN)
                await admin.execute("CHECKPOINT")
                rate = await rate_for(seconds, step, 1, postmaster=postmaster)
                figure.rounds.append(rate.per_second)
                cpu[figure.name].append(rate.server_cpu_us)
                if progress:
                    progress(figure.name, rate.per_second)
    finally:
        await conn.close()
    return {
        ours.name: ours.to_json() | {"server_cpu_us_per_call": statistics.median(cpu[ours.name])},
        many.name: many.to_json() | {"server_cpu_us_per_call": statistics.median(cpu[many.name])},
        # Time per call, publish over enqueue_many: the target is at most 1.5.
        "time_ratio_publish_to_enqueue_many": many.median / ours.median,
        "time_ratio_by_round": [m / o for o, m in zip(ours.rounds, many.rounds, strict=True)],
    }


async def _retention(
    admin: asyncpg.Connection, url: str, messages: int, rounds: int, progress: Any
) -> dict[str, Any]:
    kept = Figure("drain_keeping_payloads", "messages/s")
    none = Figure("drain_keeping_none", "messages/s")
    await admin.execute("TRUNCATE outbox.delivered")
    await admin.execute(_PREFILL, KEPT_BEFORE * messages)
    await admin.execute("VACUUM ANALYZE outbox.delivered")
    last = await admin.fetchval("SELECT max(id) FROM outbox.delivered")
    variants = [(kept, "7 days"), (none, "0")]
    try:
        for n in range(rounds):
            # Alternating which goes first, so that neither is always the first drain.
            for figure, retention in variants if n % 2 == 0 else variants[::-1]:
                await admin.execute(
                    "UPDATE outbox.config SET delivered_retention = $1::text::interval", retention
                )
                figure.rounds.append(await drain.worker_rate(url, messages, 500))
                if progress:
                    progress(figure.name, figure.rounds[-1])
                await admin.execute("DELETE FROM outbox.delivered WHERE id > $1", last)
                await admin.execute("VACUUM outbox.delivered")
    finally:
        await admin.execute("TRUNCATE outbox.delivered")
    return {
        "drain_messages": messages,
        "kept_before": KEPT_BEFORE * messages,
        kept.name: kept.to_json(),
        none.name: none.to_json(),
        "drain_ratio_keeping_to_none": kept.median / none.median,
    }
