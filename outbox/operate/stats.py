"""``outbox.stats``: one row per endpoint, with its state; of one database or of
every database a fleet serves; and its table for a terminal."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg

from outbox.db.connect import DB_ERRORS, command_connection, describe
from outbox.db.queries import QUERIES
from outbox.errors import OutboxError
from outbox.settings.databases import Database


async def stats(conn: asyncpg.Connection | asyncpg.Pool) -> list[dict[str, Any]]:
    """``outbox.stats`` (one row per endpoint) with each endpoint's state."""
    return [plain(dict(r)) for r in await conn.fetch(QUERIES["stats"])]


async def fleet_stats(
    databases: Sequence[Database], connect_within: float = 10.0
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """``outbox.stats`` of every database, all at once: the rows, each with its
    ``database`` name, and for each database that could not answer, why (without
    its URL's password)."""

    async def one(database: Database) -> list[dict[str, Any]]:
        async with command_connection(database.url, timeout=connect_within) as conn:
            return [{"database": database.name, **row} for row in await stats(conn)]

    answers = await asyncio.gather(*(one(db) for db in databases), return_exceptions=True)
    rows: list[dict[str, Any]] = []
    errors: dict[str, str] = {}
    for database, answer in zip(databases, answers, strict=True):
        if isinstance(answer, BaseException):
            if not isinstance(answer, (OutboxError, *DB_ERRORS)):
                raise answer
            if isinstance(answer, OutboxError):
                errors[database.name] = str(answer)
            elif isinstance(answer, TimeoutError):
                errors[database.name] = f"no answer in {connect_within:g}s"
            else:
                errors[database.name] = describe(answer)
        else:
            rows += answer
    return rows, errors


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


def stats_table(rows: list[dict[str, Any]], *, by_database: bool = False) -> Any:
    """The rows as a table; ``by_database``: with a column naming each one's database."""
    from rich.table import Table

    table = Table(
        *(["database"] if by_database else []),
        "endpoint", "state", "pending", "scheduled", "in flight", "dead",
        "delivered/h", "failed/h", "success", "p50 ms", "p95 ms", "p99 ms", "lag s",
        title=f"outbox at {datetime.now(UTC).isoformat(timespec='seconds')}",
    )  # fmt: skip
    for r in rows:
        rate = r["success_rate_last_hour"]
        table.add_row(
            *([r["database"]] if by_database else []),
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
