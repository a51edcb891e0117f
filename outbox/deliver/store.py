"""The only code that runs the worker's SQL: claim, finish, release, reap.

Statements come from ``sql/queries.sql`` by name; every call is one round trip
and one short transaction.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from outbox.db.queries import QUERIES
from outbox.deliver.model import Claimed, Finished
from outbox.deliver.retention import Pruned, prune


@dataclass(frozen=True, slots=True)
class Reaped:
    """A message whose lease expired, now leased to the reaping worker."""

    id: uuid.UUID
    endpoint: str
    attempts: int
    first_attempt_at: datetime | None
    lost_worker: str | None
    expired_at: datetime
    token: uuid.UUID


@dataclass(slots=True)
class HealthReport:
    """What one worker saw of one endpoint since its last report (in completion order)."""

    endpoint: str
    ok: int = 0
    failures: int = 0
    failures_since_ok: int = 0
    last_failure: str | None = None
    throttle: float | None = None
    pause: str | None = None

    def needed(self) -> bool:
        """False when there is only good news: then it is sent only to reset a breaker."""
        return bool(self.failures or self.throttle or self.pause)


class Store:
    def __init__(self, pool: asyncpg.Pool, *, worker_id: str, lease_seconds: float) -> None:
        self.pool = pool
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds

    async def claim(
        self, limit: int, *, horizon: float = 1.0, first_share: float = 0.5
    ) -> list[Claimed]:
        token = uuid.uuid4()
        rows = await self.pool.fetch(
            QUERIES["claim"], limit, token, self.lease_seconds, self.worker_id, horizon, first_share
        )
        now = time.monotonic()
        return [
            Claimed(
                r["id"],
                r["endpoint"],
                r["payload"],
                r["headers"],
                r["key"],
                r["attempts"],
                r["first_attempt_at"],
                r["seq"],
                token,
                now + r["delay"] if r["delay"] else 0.0,
                r["probe"],
                r["lead"],
            )
            for r in rows
        ]

    async def finish(self, done: Sequence[Finished]) -> int:
        """Write a batch of results; returns how many still held their lease."""
        if not done:
            return 0
        rows = await self.pool.fetch(
            QUERIES["finish"],
            [f.id for f in done],
            [f.token for f in done],
            [f.outcome.value for f in done],
            [f.status_code for f in done],
            [_text(f.error) for f in done],
            [_text(f.excerpt) for f in done],
            [f.duration_ms for f in done],
            [f.started_at for f in done],
            [f.retry_at for f in done],
            [_text(f.reason) for f in done],
            self.worker_id,
            [f.new_payload for f in done],
        )
        return len(rows)

    async def release(self, claimed: Sequence[Claimed]) -> None:
        if claimed:
            await self.pool.execute(
                QUERIES["release"], [c.id for c in claimed], [c.token for c in claimed]
            )

    async def reap(self, limit: int) -> list[Reaped]:
        token = uuid.uuid4()
        rows = await self.pool.fetch(
            QUERIES["reap"], limit, token, self.lease_seconds, self.worker_id
        )
        return [
            Reaped(
                r["id"],
                r["endpoint"],
                r["attempts"],
                r["first_attempt_at"],
                r["lost_worker"],
                r["expired_at"],
                token,
            )
            for r in rows
        ]

    async def endpoints(self) -> list[asyncpg.Record]:
        return await self.pool.fetch(QUERIES["worker_endpoints"])

    async def report_health(self, reports: Sequence[HealthReport]) -> None:
        if reports:
            await self.pool.execute(
                QUERIES["report_health"],
                [r.endpoint for r in reports],
                [r.ok for r in reports],
                [r.failures for r in reports],
                [r.failures_since_ok for r in reports],
                [_text(r.last_failure) for r in reports],
                [r.throttle for r in reports],
                [_text(r.pause) for r in reports],
            )

    async def prune_key_limits(self, batch: int = 1000) -> int:
        result = await self.pool.execute(QUERIES["key_limits_prune"], batch)
        return int(result.split()[-1])

    async def request_wakeups(self, seconds: float) -> None:
        await self.pool.execute(QUERIES["request_wakeups"], seconds)

    async def prune(self, max_batches: int) -> Pruned | None:
        """Retention, bounded: see `outbox.deliver.retention`. None if another worker is at it."""
        async with self.pool.acquire() as conn:
            return await prune(conn, max_batches=max_batches)

    async def vacuum_if_needed(self, min_dead: int) -> bool:
        """VACUUM the hot table when its dead rows pass ``min_dead`` (and a fifth
        of its live rows), one worker at a time. True if this call vacuumed."""
        row = await self.pool.fetchrow(QUERIES["hot_table_dead_tuples"])
        if row is None or row["dead"] < max(min_dead, row["live"] // 5):
            return False
        async with self.pool.acquire() as conn:
            if not await conn.fetchval(QUERIES["vacuum_lock"]):
                return False
            try:
                await conn.execute(QUERIES["vacuum_hot_table"])
            finally:
                await conn.fetchval(QUERIES["vacuum_unlock"])
        return True


def _text(value: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL; a receiver's response body can."""
    return value.replace("\x00", "\ufffd") if value and "\x00" in value else value
