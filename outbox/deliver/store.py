"""The worker's database: a narrow `Store` interface, and `PostgresStore`.

The worker loop, the recorder and upkeep talk to the database only through
`Store`, so a store in memory can drive them in unit tests. `PostgresStore`
runs the named statements of ``outbox/db/sql/deliver.sql`` and
``upkeep.sql`` on an asyncpg pool; every call is one short transaction
(pooled: one that sets the worker's settings first, `outbox.deliver.session`).
"""

from __future__ import annotations

import contextlib
import functools
import time
import uuid
from collections.abc import Sequence
from typing import Any, Protocol

import asyncpg

from outbox.db.connect import DB_ERRORS
from outbox.db.literals import epochs, epochs_or_null, literal, literal_or_null, nullable
from outbox.db.queries import QUERIES
from outbox.deliver.health import HealthReport
from outbox.deliver.model import Claimed, Delivery, Finished, Reaped
from outbox.deliver.retention import Pruned, prune
from outbox.deliver.session import POOLED_BEGIN
from outbox.settings import endpoint as declared


class Store(Protocol):
    """What a worker needs from the database."""

    worker_id: str

    async def claim(self, limit: int, *, horizon: float, first_share: float) -> list[Delivery]:
        """Lease up to ``limit`` due messages, grouped into deliveries."""

    async def finish(self, done: Sequence[Finished]) -> int:
        """Record results; how many still held their lease."""

    async def release(self, claimed: Sequence[Claimed]) -> None:
        """Hand back messages claimed but never started."""

    async def reap(self, limit: int) -> list[Reaped]:
        """Take over messages whose lease expired."""

    async def endpoints(self) -> Sequence[Any]:
        """Every endpoint's row (``worker_endpoints``): mappings of column to value."""

    async def report_health(self, reports: Sequence[HealthReport]) -> None: ...

    async def request_wakeups(self, seconds: float) -> None: ...

    async def prune(self, max_batches: int) -> Pruned | None: ...

    async def prune_key_limits(self) -> int: ...

    async def vacuum_if_needed(self, min_dead: int) -> bool: ...

    async def database_health(self) -> dict[str, Any] | None:
        """``outbox.database_health``: the hot table's dead rows and what holds vacuum back."""

    async def alert_horizon(self, seconds: float) -> bool:
        """Alert if vacuum has been held back more than ``seconds``; whether it was."""

    async def stats(self) -> list[dict[str, Any]]:
        """``outbox.stats`` with each endpoint's state (for the metrics)."""

    async def answers(self) -> bool:
        """Does the database answer (``/healthz``)?"""

    async def reconnect(self) -> None:
        """Replace every connection (after one broke mid-exchange)."""


class PostgresStore:
    """`Store` on an asyncpg pool."""

    def __init__(
        self, pool: asyncpg.Pool, *, worker_id: str, lease_seconds: float, pooled: bool = False
    ) -> None:
        self.pool = pool
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self.pooled = pooled

    async def _fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        """Run one named statement as its own transaction; its rows."""
        if not self.pooled:
            return await self.pool.fetch(query, *args)
        async with self.pool.acquire() as conn:
            await conn.execute(POOLED_BEGIN)
            try:
                rows = await conn.fetch(query, *args)
            except BaseException:
                if not conn.is_closed() and conn.is_in_transaction():
                    with contextlib.suppress(*DB_ERRORS):
                        await conn.execute("ROLLBACK")
                raise
            await conn.execute("COMMIT")
            return rows

    async def claim(
        self, limit: int, *, horizon: float = 1.0, first_share: float = 0.5
    ) -> list[Delivery]:
        token = uuid.uuid4()
        rows = await self._fetch(
            QUERIES["claim"], limit, token, self.lease_seconds, self.worker_id, horizon, first_share
        )
        return deliveries(rows, token, time.monotonic())

    async def finish(self, done: Sequence[Finished]) -> int:
        if not done:
            return 0
        # Uuids, numbers and times as array literals, and arrays of nothing but
        # NULLs as NULL: the least the client encodes (`outbox.db.literals`).
        tokens = {t: str(t) for t in {f.token for f in done}}
        rows = await self._fetch(
            QUERIES["finish"],
            literal([f.id for f in done]),
            literal([tokens[f.token] for f in done]),
            literal([f.outcome for f in done]),  # a StrEnum: its members are their text
            literal_or_null([f.status_code for f in done]),
            nullable([_text(f.error) for f in done]),
            nullable([_text(f.excerpt) for f in done]),
            literal([f.duration_ms for f in done]),
            epochs([f.started_at for f in done]),
            epochs_or_null([f.retry_at for f in done]),
            [_text(f.reason) for f in done],
            self.worker_id,
            nullable([f.rewrite.payload if f.rewrite else None for f in done]),
            nullable([f.rewrite.key if f.rewrite else None for f in done]),
        )
        return len(rows)

    async def release(self, claimed: Sequence[Claimed]) -> None:
        if claimed:
            await self._fetch(
                QUERIES["release"], [c.id for c in claimed], [c.token for c in claimed]
            )

    async def reap(self, limit: int) -> list[Reaped]:
        token = uuid.uuid4()
        rows = await self._fetch(QUERIES["reap"], limit, token, self.lease_seconds, self.worker_id)
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
        return await self._fetch(worker_endpoints_query())

    async def report_health(self, reports: Sequence[HealthReport]) -> None:
        if reports:
            await self._fetch(
                QUERIES["report_health"],
                [r.endpoint for r in reports],
                [r.ok for r in reports],
                [r.failures for r in reports],
                [r.failures_since_ok for r in reports],
                [_text(r.last_failure) for r in reports],
                [r.throttle for r in reports],
                [_text(r.pause) for r in reports],
                [r.pause_version for r in reports],
            )

    async def request_wakeups(self, seconds: float) -> None:
        await self._fetch(QUERIES["request_wakeups"], seconds)

    async def prune(self, max_batches: int) -> Pruned | None:
        """Retention, bounded: see `outbox.deliver.retention` (each batch its own
        transaction). None if another worker is at it."""
        async with self.pool.acquire() as conn:
            return await prune(conn, max_batches=max_batches)

    async def prune_key_limits(self, batch: int = 1000) -> int:
        rows = await self._fetch(QUERIES["key_limits_prune"], batch)
        return int(rows[0][0])

    async def vacuum_if_needed(self, min_dead: int) -> bool:
        """VACUUM the hot table when its dead rows pass ``min_dead`` (and a fifth
        of its live rows), one worker at a time (another one's vacuum is
        skipped, not waited for). True if this call vacuumed; `NotPermittedError`
        if this role may not vacuum the table."""
        rows = await self._fetch(QUERIES["hot_table_dead_tuples"])
        row = rows[0] if rows else None
        if row is None or row["dead"] < max(min_dead, row["live"] // 5):
            return False
        said: list[Any] = []

        def heard(_conn: Any, message: Any) -> None:
            said.append(message)

        async with self.pool.acquire() as conn:
            conn.add_log_listener(heard)
            try:
                await conn.execute(QUERIES["vacuum_hot_table"])  # never in a transaction
            finally:
                conn.remove_log_listener(heard)
        return vacuumed(said)

    async def database_health(self) -> dict[str, Any] | None:
        rows = await self._fetch(QUERIES["database_health"])
        return dict(rows[0]) if rows else None

    async def alert_horizon(self, seconds: float) -> bool:
        rows = await self._fetch(QUERIES["alert_horizon"], seconds)
        return bool(rows[0][0])

    async def stats(self) -> list[dict[str, Any]]:
        return [dict(r) for r in await self.pool.fetch(QUERIES["stats"])]

    async def answers(self) -> bool:
        return bool(await self.pool.fetchval("SELECT 1"))

    async def reconnect(self) -> None:
        await self.pool.expire_connections()


class NotPermittedError(Exception):
    """This role may not do that (its warning, as PostgreSQL gave it)."""


def vacuumed(warnings: Sequence[Any]) -> bool:
    """Did a ``VACUUM (SKIP_LOCKED)`` run, from the warnings it raised? Skipped
    (lock_not_available, 55P03: another vacuum is at it): False. Any other
    warning is PostgreSQL skipping a table this role may not vacuum (it warns
    rather than fails): `NotPermittedError`."""
    for warning in warnings:
        if getattr(warning, "sqlstate", None) == "55P03":
            return False
        if str(getattr(warning, "severity_en", None) or warning.severity) == "WARNING":
            raise NotPermittedError(str(warning.message))
    return True


def deliveries(rows: Sequence[Any], token: uuid.UUID, now: float) -> list[Delivery]:
    """Claimed rows as deliveries: each row that rides with another (``lead``)
    joins that one's delivery, in key order; ``delay`` is its rate-limit slot."""
    out: list[Delivery] = []
    riders: list[tuple[uuid.UUID, Delivery]] = []
    # Unpacked by position (the claim statement's column order): a lookup by
    # name per column cost a third of this function.
    for (id_, endpoint, payload, headers, key, attempts, first_attempt_at, seq, delay, probe,
         lead, traceparent, tracestate, topic, replay) in rows:  # fmt: skip
        claimed = Claimed(id_, endpoint, payload, headers, key, attempts, first_attempt_at, seq,
                          token, traceparent, tracestate, topic, replay)  # fmt: skip
        alone = Delivery([claimed], now + delay if delay else 0.0, probe)
        if lead is None:
            out.append(alone)
        else:
            riders.append((lead, alone))
    if riders:
        by_id = {d.head.id: d for d in out}
        for lead, alone in riders:
            delivery = by_id.get(lead)
            if delivery is None:  # its lead was not claimed with it: it goes on its own
                out.append(alone)
            else:
                delivery.messages.append(alone.head)
        for delivery in out:
            if len(delivery.messages) > 2:
                delivery.messages[1:] = sorted(delivery.messages[1:], key=lambda m: m.seq)
    return out


@functools.cache
def worker_endpoints_query() -> str:
    """``worker_endpoints`` with the columns of the settings workers load."""
    columns = ", ".join(
        f"{s.kind.read(f'e.{s.column}')} AS {s.column}" for s in declared.for_workers()
    )
    return QUERIES["worker_endpoints"].replace("{settings}", columns)


def _text(value: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL; a receiver's response body can."""
    return value.replace("\x00", "\ufffd") if value and "\x00" in value else value
