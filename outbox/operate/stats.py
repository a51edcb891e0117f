"""``outbox.stats``: one row per endpoint, with its state; and its table for a terminal."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg

from outbox.db.queries import QUERIES


async def stats(conn: asyncpg.Connection | asyncpg.Pool) -> list[dict[str, Any]]:
    """``outbox.stats`` (one row per endpoint) with each endpoint's state."""
    return [plain(dict(r)) for r in await conn.fetch(QUERIES["stats"])]


def plain(row: dict[str, Any]) -> dict[str, Any]:
    """JSON-friendly values: timestamps as ISO strings, decimals as floats."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, uuid.UUID):
            value = str(value)
        elif value is not None and type(value).__name__ == "Decimal":
            value = float(value)
        out[key] = value
    return out


def stats_table(rows: list[dict[str, Any]]) -> Any:
    from rich.table import Table

    table = Table(
        "endpoint", "state", "pending", "scheduled", "in flight", "dead",
        "delivered/h", "failed/h", "success", "p50 ms", "p95 ms", "p99 ms", "lag s",
        title=f"outbox at {datetime.now(UTC).isoformat(timespec='seconds')}",
    )  # fmt: skip
    for r in rows:
        rate = r["success_rate_last_hour"]
        table.add_row(
            r["endpoint"],
            r["state"] or "",
            str(r["pending"]),
            str(r["scheduled"]),
            str(r["in_flight"]),
            str(r["dead"]),
            str(r["delivered_last_hour"]),
            str(r["failed_attempts_last_hour"]),
            "" if rate is None else f"{rate:.1%}",
            _ms(r["p50_latency_ms_last_hour"]),
            _ms(r["p95_latency_ms_last_hour"]),
            _ms(r["p99_latency_ms_last_hour"]),
            f"{r['oldest_pending_seconds']:.1f}",
        )
    return table


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.0f}"
