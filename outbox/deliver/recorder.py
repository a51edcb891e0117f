"""Recording results in batches: the ledger, and the health the fleet shares.

Results collect in memory and go to the database in one statement per batch
(every ``flush_interval``, or at once when ``flush_max`` are waiting):
ledger rows, deletions, retries and dead letters, each a compare-and-set on
its lease token. With each batch go the endpoint health reports that are
due (`outbox.deliver.health`). A database error keeps the batch for the
next round; if the outage outlives the leases, the reaper records those
messages instead. Results the database refuses as data are dropped, with a
log line: their leases expire and they are retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import asyncpg

from outbox.db.connect import DB_ERRORS
from outbox.deliver.health import HealthBook
from outbox.deliver.model import Finished
from outbox.deliver.policy import Outcome
from outbox.deliver.store import Store

log = logging.getLogger("outbox.worker")
_DELIVERED = Outcome.DELIVERED

Backoff = Callable[[str, BaseException, int], Awaitable[None]]


class Recorder:
    def __init__(
        self,
        store: Store,
        health: HealthBook,
        backoff: Backoff,
        *,
        interval: float,
        batch: int,
    ) -> None:
        self.store = store
        self.health = health
        self._backoff = backoff
        self._interval = interval
        self._batch = batch
        self._results: list[Finished] = []
        self._now = asyncio.Event()
        self.delivered = 0  # results recorded as delivered, in this process
        self.recorded = 0  # ledger rows written (results whose lease still held)

    @property
    def waiting(self) -> int:
        return len(self._results)

    def record(self, finished: Finished) -> None:
        """Keep a result for the next batch."""
        self._results.append(finished)
        if finished.outcome is _DELIVERED:
            self.delivered += 1
        if len(self._results) >= self._batch:
            self._now.set()

    def flush_soon(self) -> None:
        """Write what is waiting without waiting for the interval."""
        self._now.set()

    async def run(self, done: Callable[[], bool]) -> None:
        """Flush until ``done()`` and nothing is waiting."""
        failures = 0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._now.wait(), self._interval)
            self._now.clear()
            if self._results:
                failures = await self._flush(failures)
                if failures:
                    continue
            await self._report_health()
            if done() and not self._results:
                return

    async def _flush(self, failures: int) -> int:
        """Write one batch; the failures in a row after it (0: written or dropped)."""
        batch, self._results = self._results, []
        try:
            self.recorded += await self.store.finish(batch)
        except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as exc:
            # Not transient: retrying would block every later result.
            log.error(
                "could not record %d result(s) (%s: %s); they will be retried",
                len(batch),
                type(exc).__name__,
                exc,
            )
        except DB_ERRORS as exc:
            self._results[:0] = batch
            await self._backoff("record results", exc, failures + 1)
            return failures + 1
        return 0

    async def _report_health(self) -> None:
        reports = self.health.due(time.monotonic())
        if reports:
            try:
                await self.store.report_health(reports)
            except DB_ERRORS as exc:  # the next failures report again
                log.warning("could not report endpoint health (%s)", type(exc).__name__)
