"""The hot path's plans, read with auto_explain and EXPLAIN ANALYZE, not timed.

The claim: what it reads must not grow with what was drained since the last
vacuum, nor with the endpoints that have nothing queued.

The claim first picks the endpoints with something due. As EXISTS
subqueries that check was planned to start fast, and with many rows
estimated to match it scanned outbox.messages from the start: through every
row claimed or deleted since the last vacuum, and through all of it for an
endpoint with nothing queued, on every claim.

The finish: only an ordered endpoint's keyed messages look up their key's
next message (to bring back one parked behind them); for every other keyed
message that index walk was a third of the finish's cost.
"""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from outbox.deliver import outcome
from outbox.deliver.model import AttemptResult
from outbox.deliver.policy import Classification, RetryPolicy, Verdict
from outbox.deliver.session import open_pool
from outbox.deliver.store import PostgresStore
from outbox.devtools.bench.common import ensure_endpoint, fill_backlog


async def _claim_plans(conn: asyncpg.Connection, limit: int) -> tuple[list[str], int]:
    """The plans of every statement one claim ran, and how many it leased."""
    notices: list[str] = []

    def heard(_: object, message: asyncpg.PostgresLogMessage) -> None:
        notices.append(message.message)

    conn.add_log_listener(heard)
    try:
        async with conn.transaction():
            await conn.execute(
                "LOAD 'auto_explain';"
                " SET LOCAL auto_explain.log_min_duration = 0;"
                " SET LOCAL auto_explain.log_nested_statements = on;"
                " SET LOCAL auto_explain.log_level = notice;"
                " SET LOCAL client_min_messages = notice"
            )
            rows = await conn.fetch(
                "SELECT id FROM outbox._claim($1, $2, 60, 'plans', 1.0, 0.5)", limit, uuid.uuid4()
            )
    finally:
        conn.remove_log_listener(heard)
    return notices, len(rows)


async def test_a_claim_reads_the_queue_by_index_after_a_drain_with_idle_endpoints(
    conn: asyncpg.Connection,
) -> None:
    await ensure_endpoint(conn, "plans-busy")
    for i in range(3):
        await ensure_endpoint(conn, f"plans-idle-{i}")
    await fill_backlog(conn, "plans-busy", 20_000)  # VACUUM ANALYZE: the stats of a backlog
    # Drain half as a worker would, with no vacuum since: dead rows at the table's start.
    for _ in range(50):
        token = uuid.uuid4()
        ids = await conn.fetchval(
            "SELECT array_agg(id) FROM outbox._claim(200, $1, 60, 'plans', 1.0, 0.5)", token
        )
        await conn.execute("DELETE FROM outbox.messages WHERE id = any($1::uuid[])", ids)
    plans, leased = await _claim_plans(conn, 25)
    assert leased == 25
    assert any("messages_first_idx" in p for p in plans), plans  # the plans were heard
    scans = [p for p in plans if "Seq Scan on messages" in p]
    assert not scans, scans


async def test_a_claim_plans_its_statements_once_per_session(conn: asyncpg.Connection) -> None:
    """Generic plans under the claim (its SET plan_cache_mode): with the default
    mode the plan cache kept building a custom plan for the pick on every claim,
    a quarter of a small claim's server time. A custom plan shows the
    endpoint's name as a constant where a generic one has a parameter."""
    name = "plans-generic"
    await ensure_endpoint(conn, name)
    await fill_backlog(conn, name, 20_000)  # VACUUM ANALYZE: the stats of a backlog
    for _ in range(8):  # past the five custom plans the plan cache tries first
        await conn.fetch("SELECT id FROM outbox._claim(1, $1, 60, 'plans', 1.0, 0.5)", uuid.uuid4())
    plans, leased = await _claim_plans(conn, 1)
    assert leased == 1
    assert any("messages_first_idx" in p for p in plans), plans  # the plans were heard
    custom = [p for p in plans if f"'{name}'::text" in p]
    assert not custom, custom


def _loops(plan: dict[str, Any], index: str) -> int:
    """How many times the plan's scans of ``index`` ran (0: never executed)."""
    here = plan.get("Actual Loops", 0) if plan.get("Index Name") == index else 0
    return int(here) + sum(_loops(p, index) for p in plan.get("Plans", []))


async def _finish_walks_key_index(database_url: str, conn: asyncpg.Connection, name: str) -> int:
    """Claim 50 of ``name``'s keyed messages as a worker does, and EXPLAIN ANALYZE
    the finish that records them delivered (rolled back): its key index scans."""
    pool = await open_pool(database_url, pooled=False)
    try:
        store = PostgresStore(pool, worker_id="plans", lease_seconds=60)
        deliveries = await store.claim(50)
        now = datetime.now(UTC)
        delivered = AttemptResult(Classification(Verdict.DELIVERED, "ok"), now, 0.1)
        policy = RetryPolicy(5, timedelta(hours=1), 1.0, 60.0)
        done = [
            f
            for d in deliveries
            for f in outcome.after_attempt(d, policy, delivered, now=now, rng=random.Random())
        ]
        assert len(done) == 50
        captured: list[tuple[str, tuple[Any, ...]]] = []

        async def capture(query: str, *args: Any) -> list[Any]:
            captured.append((query, args))
            return []

        store._fetch = capture  # type: ignore[method-assign]
        await store.finish(done)
    finally:
        await pool.close()
    [(query, args)] = captured
    tx = conn.transaction()
    await tx.start()
    try:
        value = await conn.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + query, *args)
        [plan] = json.loads(value) if isinstance(value, str) else value
    finally:
        await tx.rollback()
    return _loops(plan["Plan"], "messages_key_idx")


async def test_the_finish_looks_up_keys_next_message_only_on_ordered_endpoints(
    database_url: str, conn: asyncpg.Connection
) -> None:
    await ensure_endpoint(conn, "plans-unordered")
    await fill_backlog(conn, "plans-unordered", 1_000, key=lambda i: f"k{i % 10}")
    assert await _finish_walks_key_index(database_url, conn, "plans-unordered") == 0
    await conn.execute("DELETE FROM outbox.messages")
    await ensure_endpoint(conn, "plans-ordered", ordered=True)
    await fill_backlog(conn, "plans-ordered", 1_000, key=lambda i: f"k{i}")
    assert await _finish_walks_key_index(database_url, conn, "plans-ordered") > 0  # seen when due
