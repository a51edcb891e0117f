"""The claim's plans: what it reads must not grow with what was drained since
the last vacuum, nor with the endpoints that have nothing queued.

The claim first picks the endpoints with something due. As EXISTS
subqueries that check was planned to start fast, and with many rows
estimated to match it scanned outbox.messages from the start: through every
row claimed or deleted since the last vacuum, and through all of it for an
endpoint with nothing queued, on every claim. The plans are read with
auto_explain (nested statements included), not timed.
"""

from __future__ import annotations

import uuid

import asyncpg

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
