"""What becomes of each message after an attempt, or after it could not be made.

Every case goes through `outbox.deliver.policy.decide`: an answer (delivered,
retried with backoff, dead-lettered), a channel that failed or is missing,
an endpoint that could not be loaded or no longer exists, and a lease that
expired under a worker that vanished. Pure: the time and the random source
come in, `Finished` rows (ledger row and fate) go out.
"""

from __future__ import annotations

import random
from datetime import datetime

from outbox.deliver.model import AttemptResult, Delivery, Endpoint, Finished, Reaped
from outbox.deliver.policy import Classification, Outcome, RetryPolicy, Verdict, decide


def after_attempt(
    delivery: Delivery,
    policy: RetryPolicy,
    result: AttemptResult,
    *,
    now: datetime,
    rng: random.Random,
) -> list[Finished]:
    """Each message of a delivery after its attempt (riders share its answer)."""
    head = delivery.head
    coalesced = len(delivery.messages) > 1
    finished: list[Finished] = []
    for m in delivery.messages:
        decision = decide(
            result.classification,
            attempt=m.attempts + 1,
            first_attempt_at=m.first_attempt_at,
            now=now,
            policy=policy,
            rng=rng,
        )
        reason = decision.reason
        if m is not head:
            reason = f"{reason} (one request with {head.id}: coalesced)"
        elif coalesced:
            reason = f"{reason} (coalesced {len(delivery.messages)} messages)"
        rewrite = None
        if result.rewrites and decision.outcome is Outcome.RETRYING:
            rewrite = result.rewrites.get(m.id)
        finished.append(
            Finished(
                m.id,
                m.token,
                decision.outcome,
                result.started_at,
                result.duration_ms,
                reason,
                result.status_code,
                result.error,
                result.excerpt,
                decision.retry_at,
                rewrite,
                attempt=m.attempts + 1,
            )
        )
    return finished


def without_attempt(
    delivery: Delivery,
    policy: RetryPolicy,
    classification: Classification,
    error: str,
    *,
    now: datetime,
    rng: random.Random,
) -> list[Finished]:
    """Each message of a delivery that could not be attempted: its endpoint could
    not be loaded, no longer exists, or has a channel this worker lacks."""
    result = AttemptResult(classification, now, 0.0, error=error)
    return after_attempt(delivery, policy, result, now=now, rng=rng)


def gone(endpoint: str) -> Classification:
    """The endpoint was removed: nothing can be delivered to it again."""
    return Classification(Verdict.PERMANENT, f"endpoint {endpoint!r} no longer exists")


def lost_lease(
    message: Reaped,
    endpoint: Endpoint | None,
    fallback: RetryPolicy,
    *,
    now: datetime,
    rng: random.Random,
) -> Finished:
    """The attempt a vanished worker was making, recorded as lost: retried
    (``lease_expired``) as any failure would be, or dead-lettered when the
    policy says so or the endpoint is gone (``fallback``: the policy then)."""
    reason = (
        f"lease expired at {message.expired_at.isoformat()}: worker "
        f"{message.lost_worker or '?'} stopped answering mid-attempt"
    )
    if endpoint is None:
        classification = Classification(
            Verdict.PERMANENT, f"{reason}; endpoint {message.endpoint!r} no longer exists"
        )
        policy = fallback
    else:
        classification = Classification(Verdict.RETRYABLE, reason)
        policy = endpoint.policy
    decision = decide(
        classification,
        attempt=message.attempts + 1,
        first_attempt_at=message.first_attempt_at or now,
        now=now,
        policy=policy,
        rng=rng,
    )
    outcome = Outcome.LEASE_EXPIRED if decision.outcome is Outcome.RETRYING else decision.outcome
    return Finished(
        message.id,
        message.token,
        outcome,
        message.expired_at,
        0.0,
        decision.reason,
        error="LeaseExpired: no result was recorded",
        retry_at=decision.retry_at,
        attempt=message.attempts + 1,
    )


def channel_failed(exc: Exception, now: datetime) -> AttemptResult:
    """The result of an attempt whose channel raised: retried, as any failure."""
    failed = Classification(Verdict.RETRYABLE, f"internal: {type(exc).__name__}")
    return AttemptResult(failed, now, 0.0, error=f"{type(exc).__name__}: channel error")
