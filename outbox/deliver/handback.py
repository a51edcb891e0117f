"""Claimed messages a worker gives back unsent, to be claimed again.

* At a stop: whatever was claimed and not started goes back at once, rather
  than waiting out its lease.
* A delivery whose lease ran short while it waited in the worker (claimed
  ahead of a free slot, or for its rate-limit slot): sent, it could be
  reaped while on the wire and go out twice (`policy.lease_runs_short`). It
  goes back instead, once per message in a worker's life (a second time it
  is sent: a hand-back must never keep a message from being tried), and
  never a circuit's probe (the breaker waits for the probe's answer).

A release that fails leaves the lease to expire: the reaper then records a
lost attempt, as after a crash.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

from outbox.db.connect import DB_ERRORS
from outbox.deliver.model import Claimed, Delivery
from outbox.deliver.policy import lease_runs_short
from outbox.deliver.store import Store

log = logging.getLogger("outbox.worker")

_REMEMBERED = 10_000  # message ids handed back for a short lease, before forgetting them all


class HandBack:
    def __init__(self, store: Store, *, lease_seconds: float, rate_horizon: float) -> None:
        self._store = store
        self._lease = lease_seconds
        self._horizon = rate_horizon
        self._given: set[uuid.UUID] = set()

    def lease_ran_short(self, delivery: Delivery, timeout: float, now: float) -> bool:
        """Should this delivery go back rather than out (see above)? ``now``:
        time.monotonic(); ``timeout``: its endpoint's, per attempt."""
        if not delivery.claimed_at or delivery.probe:
            return False
        head = delivery.head.id
        if head in self._given:
            self._given.discard(head)
            return False
        if not lease_runs_short(self._lease, now - delivery.claimed_at, timeout, self._horizon):
            return False
        if len(self._given) >= _REMEMBERED:
            self._given.clear()
        self._given.add(head)
        return True

    async def __call__(self, messages: Sequence[Claimed], why: str) -> None:
        """Release ``messages`` (their leases end; they are due again)."""
        if not messages:
            return
        try:
            await self._store.release(messages)
            log.info("handed back %d message(s): %s", len(messages), why)
        except DB_ERRORS as exc:
            log.warning("could not hand back %d message(s) (%s); their leases will expire",
                        len(messages), type(exc).__name__)  # fmt: skip
