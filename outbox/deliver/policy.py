"""Retry policy: pure functions of (attempt, response, now, random source).

Nothing here does I/O. A channel classifies what an attempt's answer means
(`classify_status`, `classify_error`, or rules of its own), and `decide` says
what to do with the message next; both answers carry the reason, which goes
into the attempts ledger. Every message's fate goes through `decide`
(`outbox.deliver.outcome`).

Classification (DESIGN.md): 2xx delivered; 3xx a failure (retried: redirects
are not followed, and a temporary one may pass); 408, 425, 429, 5xx, timeouts
and connection errors retried; other 4xx permanent; 410 permanent, and it
pauses the endpoint.

Each classification also says what the attempt tells about the *endpoint*
(`Health`), which feeds the circuit breaker: 5xx, 3xx, 408, timeouts and
connection errors count as endpoint failures; a 4xx is about the message (the
receiver answered: healthy) and a 429 about our pace (neither). A 429 with a
``Retry-After`` holds the whole endpoint back for that long (``throttle``):
every message to it would get the same answer.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

RETRYABLE_STATUS = frozenset({408, 425, 429})


class Verdict(enum.Enum):
    DELIVERED = "delivered"
    RETRYABLE = "retryable"
    PERMANENT = "permanent"


class Outcome(enum.StrEnum):
    """What the ledger records for an attempt."""

    DELIVERED = "delivered"
    RETRYING = "retrying"  # failed; the message will be tried again
    DEAD = "dead"  # failed; the message moved to dead_letters
    LEASE_EXPIRED = "lease_expired"  # the worker vanished mid-attempt (reaper)


class Health(enum.Enum):
    """What one attempt says about the endpoint as a whole."""

    OK = "ok"
    FAILING = "failing"
    NEUTRAL = "neutral"


@dataclass(frozen=True, slots=True)
class Classification:
    verdict: Verdict
    reason: str
    retry_after: float | None = None  # seconds the receiver asked us to wait
    health: Health = Health.NEUTRAL
    throttle: float | None = None  # hold the whole endpoint back this long (seconds)
    pause: str | None = None  # pause the endpoint, for this reason
    immediate: bool = False  # retry at once (the request was corrected)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Backoff ``base * 2**(attempt-1)``, jittered by ±``jitter``, capped at ``cap``."""

    max_attempts: int
    retry_window: timedelta
    base: float  # OUTBOX_BACKOFF_BASE
    cap: float  # OUTBOX_BACKOFF_CAP
    jitter: float = 0.2
    retry_after_cap: float = 6 * 3600.0

    def __post_init__(self) -> None:
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")
        if self.base <= 0 or self.cap < self.base:
            raise ValueError("need 0 < base <= cap")


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    reason: str
    retry_at: datetime | None = None


def backoff_before_jitter(attempt: int, policy: RetryPolicy) -> float:
    """Delay after failed attempt number ``attempt`` (1-based), before jitter."""
    exponent = min(attempt - 1, 62)  # 2**62 s is already past any cap
    return min(policy.cap, policy.base * 2.0**exponent)


def backoff(attempt: int, policy: RetryPolicy, rng: random.Random) -> float:
    """The jittered delay: within ±jitter of the schedule, never above the cap."""
    delay = backoff_before_jitter(attempt, policy)
    jittered = delay * (1.0 + policy.jitter * (2.0 * rng.random() - 1.0))
    return min(policy.cap, jittered)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """``Retry-After`` as seconds from ``now``: delta-seconds or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def classify_status(status: int, retry_after: float | None = None) -> Classification:
    if 200 <= status < 300:
        return Classification(Verdict.DELIVERED, f"HTTP {status}", health=Health.OK)
    if 300 <= status < 400:
        return Classification(
            Verdict.RETRYABLE,
            f"HTTP {status}: redirects are not followed",
            retry_after,
            health=Health.FAILING,
        )
    if status == 429:
        return Classification(
            Verdict.RETRYABLE, f"HTTP {status}", retry_after, throttle=retry_after or None
        )
    if status >= 500 or status == 408:  # the receiver is failing or too slow
        return Classification(
            Verdict.RETRYABLE, f"HTTP {status}", retry_after, health=Health.FAILING
        )
    if status in RETRYABLE_STATUS:
        return Classification(Verdict.RETRYABLE, f"HTTP {status}", retry_after)
    if status == 410:
        reason = "HTTP 410: the receiver says it is gone"
        return Classification(Verdict.PERMANENT, reason, pause=reason)
    if 400 <= status < 500:
        # The receiver is up and answering, about this message: for the
        # breaker that is a sign of health (a half-open probe closes on it).
        return Classification(
            Verdict.PERMANENT, f"HTTP {status}: rejected by the receiver", health=Health.OK
        )
    return Classification(
        Verdict.RETRYABLE, f"unexpected HTTP status {status}", retry_after, health=Health.FAILING
    )


def classify_error(kind: str, detail: str) -> Classification:
    """A delivery that got no HTTP response: ``kind`` is timeout, connect or network
    (retried, and the endpoint is failing); anything else is permanent."""
    if kind in {"timeout", "connect", "network"}:
        return Classification(Verdict.RETRYABLE, f"{kind}: {detail}", health=Health.FAILING)
    return Classification(Verdict.PERMANENT, f"{kind}: {detail}")


def decide(
    classification: Classification,
    *,
    attempt: int,
    first_attempt_at: datetime,
    now: datetime,
    policy: RetryPolicy,
    rng: random.Random,
) -> Decision:
    """What happens to a message after attempt number ``attempt`` (1-based).

    A retry is scheduled at the later of the jittered backoff and the
    receiver's ``Retry-After`` (capped); a retry that would land past the
    retry window, or an attempt that used the last one, dead-letters instead.
    """
    if classification.verdict is Verdict.DELIVERED:
        return Decision(Outcome.DELIVERED, classification.reason)
    if classification.verdict is Verdict.PERMANENT:
        return Decision(Outcome.DEAD, f"permanent failure: {classification.reason}")
    if attempt >= policy.max_attempts:
        return Decision(
            Outcome.DEAD,
            f"{classification.reason}; gave up after {attempt} attempt(s) (max_attempts)",
        )
    if classification.immediate:
        return Decision(
            Outcome.RETRYING, f"{classification.reason}; retry #{attempt + 1} at once", now
        )
    delay = backoff(attempt, policy, rng)
    source = "backoff"
    if classification.retry_after is not None:
        hint = min(classification.retry_after, policy.retry_after_cap)
        if hint > delay:
            delay, source = hint, "Retry-After"
    retry_at = now + timedelta(seconds=delay)
    if retry_at > first_attempt_at + policy.retry_window:
        return Decision(
            Outcome.DEAD,
            f"{classification.reason}; next retry would pass the retry window "
            f"({policy.retry_window})",
        )
    return Decision(
        Outcome.RETRYING,
        f"{classification.reason}; retry #{attempt + 1} in {delay:.1f}s ({source})",
        retry_at,
    )


# What a lease must still cover, past the endpoint's timeout, for a send to start.
LEASE_MARGIN = 1.0


def lease_runs_short(lease_seconds: float, waited: float, timeout: float, horizon: float) -> bool:
    """Should a delivery that has waited ``waited`` seconds since its claim (in
    the worker's queue, for a slot or its rate-limit slot) be handed back rather
    than sent? Yes when what is left of its lease would not cover an attempt
    (the endpoint's timeout and `LEASE_MARGIN`) but a fresh lease surely would:
    after a claim's round trip and queue (`LEASE_MARGIN` again) and a
    rate-limit slot up to ``horizon`` ahead. Sent, it could be reaped while on
    the wire and go out twice. A lease that leaves no such room (a warned
    misconfiguration, or a timeout close to the lease) sends as it always did."""
    needed = timeout + LEASE_MARGIN
    return lease_seconds - waited < needed <= lease_seconds - horizon - LEASE_MARGIN
