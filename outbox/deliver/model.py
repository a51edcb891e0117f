"""The data that flows through a worker: claimed messages, deliveries, attempt
results and the ledger rows they become."""

from __future__ import annotations

import time
import uuid
from collections.abc import MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from outbox.deliver.endpoints import Endpoint
from outbox.deliver.policy import Classification, Outcome

__all__ = [
    "AttemptClock",
    "AttemptResult",
    "Claimed",
    "Delivery",
    "Endpoint",
    "Finished",
    "Reaped",
    "Rewrite",
    "put_topic",
    "put_trace",
]


@dataclass(slots=True)
class Claimed:
    """A message this worker holds a lease on."""

    id: uuid.UUID
    endpoint: str
    payload: str  # the JSON text, sent as is
    headers: str | None  # JSON text of per-message headers
    key: str | None
    attempts: int  # attempts before this one
    first_attempt_at: datetime
    seq: int
    token: uuid.UUID
    traceparent: str | None = None  # the producer's W3C trace context
    tracestate: str | None = None
    topic: str | None = None  # what it was published as (outbox.publish)
    replay: bool = False  # sent again after it was delivered (outbox message resend, replay)


@dataclass(slots=True)
class Delivery:
    """One send: a claimed message, and those riding with it when its channel
    coalesces (in key order), which go out in the same request."""

    messages: list[Claimed]
    send_at: float = 0.0  # time.monotonic() before which it must not be sent (a rate-limit slot)
    probe: bool = False  # the one send let through a half-open circuit
    claimed_at: float = 0.0  # time.monotonic() just before the claim that leased it
    # The trace context the receiver gets: the attempt span's, when the worker
    # traces (`outbox.deliver.tracing`); None: the head message's own, unchanged.
    trace: tuple[str, str | None] | None = None

    def onward_trace(self) -> tuple[str | None, str | None]:
        """(traceparent, tracestate) for the receiver's headers (None: no header)."""
        if self.trace is not None:
            return self.trace
        head = self.messages[0]
        return head.traceparent, head.tracestate

    @property
    def head(self) -> Claimed:
        return self.messages[0]

    @property
    def endpoint(self) -> str:
        return self.messages[0].endpoint


# The headers that tell a receiver what a message was published as, and that
# it was delivered before (every channel that has headers sends them).
TOPIC_HEADER = "outbox-topic"
REPLAY_HEADER = "outbox-replay"


def put_topic(headers: MutableMapping[str, str], message: Claimed) -> None:
    """Write a message's topic and replay mark into outgoing headers: ours win,
    and a message with neither sends neither, whatever was given before."""
    if message.topic is not None:
        headers[TOPIC_HEADER] = message.topic
    else:
        headers.pop(TOPIC_HEADER, None)
    if message.replay:
        headers[REPLAY_HEADER] = "1"
    else:
        headers.pop(REPLAY_HEADER, None)


def put_trace(headers: MutableMapping[str, str], trace: tuple[str | None, str | None]) -> None:
    """Write a trace context (`Delivery.onward_trace`) into outgoing headers: ours
    win over a ``traceparent`` or ``tracestate`` given before; none, none written."""
    traceparent, tracestate = trace
    if traceparent is None:
        return
    headers["traceparent"] = traceparent
    if tracestate is not None:
        headers["tracestate"] = tracestate
    else:
        headers.pop("tracestate", None)


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


@dataclass(frozen=True, slots=True)
class Rewrite:
    """What a message becomes for its retry, after an answer that asked for it
    (a chat that moved): its new payload (JSON text), and its new key (None: keep)."""

    payload: str
    key: str | None = None


@dataclass(slots=True)
class AttemptResult:
    """What one delivery attempt produced, before the policy decides."""

    classification: Classification
    started_at: datetime
    duration_ms: float
    status_code: int | None = None
    error: str | None = None
    excerpt: str | None = None
    # What messages become if they are retried, by message id.
    rewrites: dict[uuid.UUID, Rewrite] | None = None


class AttemptClock:
    """Times one attempt from its creation; `result` builds the attempt's result."""

    __slots__ = ("_t0", "started_at")

    def __init__(self) -> None:
        self.started_at = datetime.now(UTC)
        self._t0 = time.perf_counter()

    def elapsed(self) -> float:
        """Seconds since the attempt started."""
        return time.perf_counter() - self._t0

    def result(self, classification: Classification, **fields: Any) -> AttemptResult:
        return AttemptResult(classification, self.started_at, self.elapsed() * 1000, **fields)


@dataclass(slots=True)
class Finished:
    """One ledger row to write, and what becomes of its message."""

    id: uuid.UUID
    token: uuid.UUID
    outcome: Outcome
    started_at: datetime
    duration_ms: float
    reason: str
    status_code: int | None = None
    error: str | None = None
    excerpt: str | None = None
    retry_at: datetime | None = None
    rewrite: Rewrite | None = None
    attempt: int = 0  # its number (the ledger counts it again from the message's row)
