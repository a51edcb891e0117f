"""The data that flows through a worker: claimed messages, endpoints, attempt results."""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from outbox.deliver.policy import Classification, Outcome, RetryPolicy


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
    send_at: float = 0.0  # time.monotonic() before which it must not be sent (a rate-limit slot)
    probe: bool = False  # the one message let through a half-open circuit
    lead: uuid.UUID | None = None  # coalescing: the message this one rides with
    riders: list[Claimed] = field(default_factory=list)  # coalescing: the ones riding with it


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An endpoint's delivery settings, as a worker caches them."""

    name: str
    channel: str
    url: str | None
    secret: str | None  # resolved (an env:NAME reference is read at load time)
    secret_problem: str | None  # why the secret could not be resolved, if it could not
    headers: dict[str, str]
    timeout: float
    connect_timeout: float
    policy: RetryPolicy
    # During a secret rotation's grace period: the previous secret, resolved.
    previous_secret: str | None = None
    # Non-public address ranges this endpoint may reach (the SSRF guard's exceptions).
    allow_networks: tuple[str, ...] = ()
    # The breaker's shared state was not clean when the cache was loaded.
    unhealthy: bool = False

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every secret to sign with (current first) and to redact."""
        return tuple(s for s in (self.secret, self.previous_secret) if s)

    @classmethod
    def from_row(cls, row: Any, *, base: float, cap: float) -> Endpoint:
        import json

        secret, problem = resolve_secret(row["secret"])
        previous, _ = resolve_secret(row["previous_secret"])
        return cls(
            name=row["name"],
            channel=row["channel"],
            url=row["url"],
            secret=secret,
            secret_problem=problem,
            headers=json.loads(row["headers"]),
            timeout=row["timeout_ms"] / 1000,
            connect_timeout=row["connect_timeout_ms"] / 1000,
            policy=RetryPolicy(
                max_attempts=row["max_attempts"],
                retry_window=timedelta(seconds=row["retry_window_seconds"]),
                base=base,
                cap=max(cap, base),
            ),
            previous_secret=previous,
            allow_networks=tuple(row["allow_networks"] or ()),
            unhealthy=bool(row["unhealthy"]),
        )


def resolve_secret(stored: str | None) -> tuple[str | None, str | None]:
    """(secret, problem): ``env:NAME`` reads $NAME; the problem never holds the value."""
    if stored is None or not stored.startswith("env:"):
        return stored, None
    name = stored[len("env:") :]
    value = os.environ.get(name)
    if not value:
        return None, f"the environment variable {name} named by the endpoint's secret is not set"
    return value, None


@dataclass(slots=True)
class AttemptResult:
    """What one delivery attempt produced, before the policy decides."""

    classification: Classification
    started_at: datetime
    duration_ms: float
    status_code: int | None = None
    error: str | None = None
    excerpt: str | None = None
    # JSON text a message's payload becomes (retries only), by message id.
    new_payloads: dict[uuid.UUID, str] | None = None


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
    new_payload: str | None = None
