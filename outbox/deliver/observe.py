"""Watching a worker: one hook that logs and metrics observe attempts through.

The worker tells its `Observer` when it claims, when a delivery starts and
ends, and every attempt it records (with the answer, when there was one).
`Observers` passes each event on to several; `AttemptLog` writes the log line
of a failed attempt (`outbox.deliver.metrics.Metrics` counts them all).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from outbox.deliver.model import AttemptResult, Finished
from outbox.deliver.policy import Outcome

# Where prometheus-client's multiprocess mode keeps each process's values
# (`outbox.deliver.metrics`); set by the supervisor that serves them.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

log = logging.getLogger("outbox.worker")
_DELIVERED = Outcome.DELIVERED


class Observer(Protocol):
    def claimed(self, n: int) -> None:
        """A claim returned ``n`` deliveries' worth of messages."""

    def delivering(self, delta: int) -> None:
        """A delivery started (+1) or ended (-1)."""

    def attempted(self, endpoint: str, finished: Finished, result: AttemptResult | None) -> None:
        """An attempt is about to be recorded; ``result`` is None when no request was
        made (its lease expired under a worker that vanished)."""


class Quiet:
    """An observer that hears nothing: a base for those that watch some events only."""

    def claimed(self, n: int) -> None:
        return None

    def delivering(self, delta: int) -> None:
        return None

    def attempted(self, endpoint: str, finished: Finished, result: AttemptResult | None) -> None:
        return None


def _nothing(*_args: object) -> None:
    return None


def _fan(name: str, observers: Sequence[Observer]) -> Callable[..., None]:
    """One callable for an event: the observers that hear it (not `Quiet`'s), called
    in turn; a single one is called directly, none costs a no-op (the hot path)."""
    heard = [
        getattr(o, name) for o in observers if getattr(type(o), name) is not getattr(Quiet, name)
    ]
    if not heard:
        return _nothing
    if len(heard) == 1:
        return heard[0]  # type: ignore[no-any-return]

    def all_of(*args: object) -> None:
        for hear in heard:
            hear(*args)

    return all_of


class Observers:
    """Several observers as one."""

    def __init__(self, observers: Sequence[Observer] = ()) -> None:
        self.observers = tuple(observers)
        self.claimed: Callable[[int], None] = _fan("claimed", observers)
        self.delivering: Callable[[int], None] = _fan("delivering", observers)
        self.attempted: Callable[[str, Finished, AttemptResult | None], None] = _fan(
            "attempted", observers
        )


class AttemptLog(Quiet):
    """One log line per failed attempt, with its fields for JSON logs
    (`outbox.deliver.logs`): message id, endpoint, attempt, status, error,
    decision and reason. Lost leases are reported by the reaper, in one line."""

    def attempted(self, endpoint: str, finished: Finished, result: AttemptResult | None) -> None:
        if result is None or finished.outcome is _DELIVERED:
            return
        log.info(
            "attempt %d of message %s to %s failed (status %s, %s): %s",
            finished.attempt,
            finished.id,
            endpoint,
            finished.status_code,
            finished.error,
            finished.reason,
            extra={
                "message_id": str(finished.id),
                "endpoint": endpoint,
                "attempt": finished.attempt,
                "status": finished.status_code,
                "error": finished.error,
                "decision": finished.outcome.value,
                "reason": finished.reason,
            },
        )
