"""The retry policy: backoff, jitter, Retry-After, classification and decisions."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from outbox.deliver.policy import (
    Classification,
    Health,
    Outcome,
    RetryPolicy,
    Verdict,
    backoff,
    backoff_before_jitter,
    classify_error,
    classify_status,
    decide,
    lease_runs_short,
    parse_retry_after,
)

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def a_policy(**changes: object) -> RetryPolicy:
    """The policy of an endpoint with the default settings, and these changes."""
    values: dict[str, object] = {
        "max_attempts": 25,
        "retry_window": timedelta(days=1),
        "base": 2.0,
        "cap": 7200.0,
    }
    return RetryPolicy(**(values | changes))  # type: ignore[arg-type]


POLICY = a_policy()
policies = st.builds(
    RetryPolicy,
    max_attempts=st.just(25),
    retry_window=st.just(timedelta(days=1)),
    base=st.floats(0.01, 60),
    cap=st.floats(60, 86400),
    jitter=st.floats(0, 0.99),
)


@given(policies, st.integers(1, 10_000), st.integers(0, 2**32))
def test_delays_are_capped_and_within_jitter_bounds(
    policy: RetryPolicy, attempt: int, seed: int
) -> None:
    delay = backoff(attempt, policy, random.Random(seed))
    scheduled = backoff_before_jitter(attempt, policy)
    assert 0 < delay <= policy.cap
    assert scheduled * (1 - policy.jitter) - 1e-9 <= delay <= scheduled * (1 + policy.jitter) + 1e-9


@given(policies, st.integers(1, 200))
def test_schedule_before_jitter_is_monotone(policy: RetryPolicy, attempt: int) -> None:
    assert backoff_before_jitter(attempt, policy) <= backoff_before_jitter(attempt + 1, policy)


def test_schedule_doubles_from_the_base() -> None:
    assert [backoff_before_jitter(a, POLICY) for a in (1, 2, 3, 4)] == [2, 4, 8, 16]
    assert backoff_before_jitter(50, POLICY) == POLICY.cap


def test_default_schedule_spans_about_a_day() -> None:
    total = sum(backoff_before_jitter(a, POLICY) for a in range(1, POLICY.max_attempts))
    assert timedelta(hours=20) < timedelta(seconds=total) < timedelta(hours=36)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("Sun, 22 Nov 2026 12:01:30 GMT", 90.0),
        ("Sun, 22 Nov 2026 11:00:00 GMT", 0.0),  # in the past: no wait
        ("soon", None),
        ("-5", None),
        (None, None),
    ],
)
def test_retry_after_seconds_or_http_date(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, NOW) == seconds


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, Verdict.DELIVERED),
        (204, Verdict.DELIVERED),
        (299, Verdict.DELIVERED),
        (301, Verdict.RETRYABLE),
        (302, Verdict.RETRYABLE),
        (408, Verdict.RETRYABLE),
        (425, Verdict.RETRYABLE),
        (429, Verdict.RETRYABLE),
        (500, Verdict.RETRYABLE),
        (503, Verdict.RETRYABLE),
        (599, Verdict.RETRYABLE),
        (400, Verdict.PERMANENT),
        (401, Verdict.PERMANENT),
        (404, Verdict.PERMANENT),
        (410, Verdict.PERMANENT),
        (422, Verdict.PERMANENT),
    ],
)
def test_status_classification(status: int, verdict: Verdict) -> None:
    assert classify_status(status).verdict is verdict


def test_network_errors_retry_and_other_errors_do_not() -> None:
    assert classify_error("timeout", "read timed out").verdict is Verdict.RETRYABLE
    assert classify_error("connect", "refused").verdict is Verdict.RETRYABLE
    assert classify_error("invalid_request", "bad URL").verdict is Verdict.PERMANENT


def run(c: Classification, attempt: int = 1, policy: RetryPolicy = POLICY, now: datetime = NOW):  # type: ignore[no-untyped-def]
    return decide(
        c, attempt=attempt, first_attempt_at=NOW, now=now, policy=policy, rng=random.Random(1)
    )


def test_success_is_delivered() -> None:
    assert run(classify_status(200)).outcome is Outcome.DELIVERED


def test_permanent_failure_dead_letters_at_once() -> None:
    decision = run(classify_status(400))
    assert decision.outcome is Outcome.DEAD
    assert "HTTP 400" in decision.reason


def test_retryable_failure_schedules_the_next_attempt() -> None:
    decision = run(classify_status(500), attempt=3)
    assert decision.outcome is Outcome.RETRYING
    assert decision.retry_at is not None
    assert timedelta(seconds=8 * 0.8) <= decision.retry_at - NOW <= timedelta(seconds=8 * 1.2)
    assert "backoff" in decision.reason


def test_last_attempt_dead_letters() -> None:
    decision = run(classify_status(500), attempt=POLICY.max_attempts)
    assert decision.outcome is Outcome.DEAD
    assert "max_attempts" in decision.reason


def test_retry_after_wins_when_later_than_the_schedule() -> None:
    decision = run(classify_status(429, retry_after=300.0))
    assert decision.retry_at == NOW + timedelta(seconds=300)
    assert "Retry-After" in decision.reason


def test_retry_after_earlier_than_the_schedule_is_not_followed() -> None:
    decision = run(classify_status(503, retry_after=0.5), attempt=5)
    assert decision.retry_at is not None
    assert decision.retry_at - NOW >= timedelta(seconds=32 * 0.8)


def test_retry_after_is_capped() -> None:
    decision = run(classify_status(429, retry_after=10 * 86400.0))
    assert decision.retry_at == NOW + timedelta(seconds=POLICY.retry_after_cap)


def test_retry_past_the_window_dead_letters() -> None:
    policy = a_policy(retry_window=timedelta(minutes=1))
    decision = run(classify_status(500), attempt=8, policy=policy)  # ~256 s away
    assert decision.outcome is Outcome.DEAD
    assert "retry window" in decision.reason


@given(st.floats(0, 10 * 86400), st.integers(1, 24), st.integers(0, 2**32))
def test_retry_after_is_always_honoured_up_to_its_cap(hint: float, attempt: int, seed: int) -> None:
    policy = a_policy(retry_window=timedelta(days=30))
    decision = decide(
        classify_status(429, retry_after=hint),
        attempt=attempt,
        first_attempt_at=NOW,
        now=NOW,
        policy=policy,
        rng=random.Random(seed),
    )
    assert decision.outcome is Outcome.RETRYING
    assert decision.retry_at is not None
    waited = (decision.retry_at - NOW).total_seconds()
    assert waited >= min(hint, policy.retry_after_cap) - 1e-6
    assert waited <= max(policy.cap, policy.retry_after_cap) + 1e-6


# -- what an attempt says about the endpoint (breaker, throttle, pause) -------


@pytest.mark.parametrize(
    ("status", "health"),
    [
        (200, Health.OK),
        (204, Health.OK),
        (301, Health.FAILING),
        (408, Health.FAILING),
        (500, Health.FAILING),
        (503, Health.FAILING),
        (400, Health.OK),  # about the message: the receiver answered
        (404, Health.OK),
        (422, Health.OK),
        (429, Health.NEUTRAL),  # about our pace
    ],
)
def test_which_answers_count_against_the_endpoint(status: int, health: Health) -> None:
    assert classify_status(status).health is health


def test_a_429_with_retry_after_throttles_the_endpoint_and_410_pauses_it() -> None:
    assert classify_status(429, 30.0).throttle == 30.0
    assert classify_status(429).throttle is None
    assert classify_status(503, 30.0).throttle is None
    gone = classify_status(410)
    assert gone.verdict is Verdict.PERMANENT
    assert gone.pause is not None
    assert "410" in gone.pause


def test_network_failures_count_against_the_endpoint() -> None:
    for kind in ("timeout", "connect", "network"):
        assert classify_error(kind, "x").health is Health.FAILING
    assert classify_error("invalid_request", "x").health is Health.NEUTRAL


def test_an_immediate_retry_is_scheduled_now_but_still_bounded() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    moved = Classification(Verdict.RETRYABLE, "chat migrated", immediate=True)
    decision = decide(
        moved, attempt=1, first_attempt_at=now, now=now, policy=POLICY, rng=random.Random(1)
    )
    assert decision.outcome is Outcome.RETRYING
    assert decision.retry_at == now
    last = decide(
        moved,
        attempt=3,
        first_attempt_at=now,
        now=now,
        policy=a_policy(max_attempts=3),
        rng=random.Random(1),
    )
    assert last.outcome is Outcome.DEAD


@given(policies, st.integers(1, 30), st.floats(0, 10 * 86400), st.integers(0, 2**32))
def test_a_retry_lands_at_the_later_of_the_jittered_schedule_and_the_capped_hint(
    policy: RetryPolicy, attempt: int, hint: float, seed: int
) -> None:
    """Jitter applies to the schedule only; Retry-After (capped) is never jittered."""
    policy = RetryPolicy(
        base=policy.base,
        cap=policy.cap,
        jitter=policy.jitter,
        retry_window=timedelta(days=60),
        max_attempts=31,
    )
    decision = decide(
        classify_status(503, retry_after=hint),
        attempt=attempt,
        first_attempt_at=NOW,
        now=NOW,
        policy=policy,
        rng=random.Random(seed),
    )
    jittered = backoff(attempt, policy, random.Random(seed))
    assert decision.retry_at is not None
    waited = (decision.retry_at - NOW).total_seconds()
    assert waited == pytest.approx(max(jittered, min(hint, policy.retry_after_cap)), abs=1e-5)


@given(st.integers(0, 10**9), st.integers(-3 * 86400, 30 * 86400))
def test_retry_after_reads_seconds_and_http_dates(seconds: int, offset: int) -> None:
    from email.utils import format_datetime

    assert parse_retry_after(str(seconds), NOW) == float(seconds)
    when = NOW + timedelta(seconds=offset)
    assert parse_retry_after(format_datetime(when, usegmt=True), NOW) == max(0.0, float(offset))


def test_a_lease_that_no_longer_covers_an_attempt_is_handed_back_only_if_a_new_one_would() -> None:
    # 60 s lease, 10 s timeout, slots up to 1 s ahead: an attempt needs 11 s of it.
    assert not lease_runs_short(60.0, 0.0, 10.0, 1.0)
    assert not lease_runs_short(60.0, 48.9, 10.0, 1.0)
    assert lease_runs_short(60.0, 49.1, 10.0, 1.0)
    assert lease_runs_short(60.0, 70.0, 10.0, 1.0)
    # A fresh lease would be no better: a timeout within the horizon and a
    # margin of the lease, or not shorter than it (warned about at start).
    assert not lease_runs_short(2.0, 1.5, 1.0, 1.0)
    assert not lease_runs_short(60.0, 59.0, 58.5, 1.0)
    assert not lease_runs_short(10.0, 5.0, 10.0, 1.0)
