"""The broker channels' ``--timeout`` (`outbox.deliver.channels.broker`): one
timer for every publish in flight, with ``asyncio.timeout``'s semantics."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from outbox.deliver.channels.broker import BrokerChannel, BrokerError, Outbound, retryable
from outbox.deliver.channels.spec import ChannelContext
from outbox.deliver.model import Claimed, Delivery, Endpoint
from outbox.deliver.policy import RetryPolicy, Verdict


class Slow(BrokerChannel):
    """Publishes take the delay their endpoint's ``delay`` header says."""

    name = "slow"
    library = "json"
    extra = "slow"

    async def connect(self, client: Any, endpoint: Endpoint) -> Any:
        return object()

    async def disconnect(self, connection: Any) -> None:
        return None

    async def publish(self, connection: Any, endpoint: Endpoint, out: Outbound) -> None:
        await asyncio.sleep(float(endpoint.headers.get("delay", "0")))

    def failure(self, exc: BaseException) -> BrokerError:
        return retryable(f"{type(exc).__name__}: {exc}")


def endpoint(name: str, timeout: float, delay: float) -> Endpoint:
    settings = {"url": "slow://h", "target": "t", "timeout": timeout, "connect_timeout": 1.0,
                "headers": {"delay": str(delay)}}  # fmt: skip
    return Endpoint(name, "slow", RetryPolicy(3, timedelta(hours=1), 0.1, 1.0), settings=settings)


def delivery() -> Delivery:
    message = Claimed(uuid.uuid4(), "e", "{}", None, None, 0, datetime.now(UTC), 1, uuid.uuid4())
    return Delivery([message])


@pytest.fixture
async def channel() -> Any:
    slow = Slow(ChannelContext(10))
    yield slow
    await slow.aclose()


async def test_each_publish_times_out_at_its_own_deadline(channel: Slow) -> None:
    """A long timeout armed first does not delay a shorter one armed after it."""
    started = time.monotonic()
    patient = asyncio.ensure_future(channel.send(delivery(), endpoint("a", 5.0, 0.3)))
    await asyncio.sleep(0.01)
    hasty = await channel.send(delivery(), endpoint("b", 0.1, 1.0))
    assert 0.09 < time.monotonic() - started < 0.25
    assert hasty.classification.verdict is Verdict.RETRYABLE
    assert "no acknowledgement from the broker within 0.1s" in hasty.classification.reason
    assert (await patient).classification.verdict is Verdict.DELIVERED


async def test_many_in_flight_only_the_late_ones_time_out(channel: Slow) -> None:
    sends = [channel.send(delivery(), endpoint("a", 0.2, d)) for d in (0.0, 0.05, 0.5, 0.01, 0.6)]
    verdicts = [r.classification.verdict for r in await asyncio.gather(*sends)]
    assert verdicts == [Verdict.DELIVERED, Verdict.DELIVERED, Verdict.RETRYABLE,
                        Verdict.DELIVERED, Verdict.RETRYABLE]  # fmt: skip


async def test_a_timeout_leaves_no_cancellation_pending(channel: Slow) -> None:
    async def send_then_sleep() -> int:
        await channel.send(delivery(), endpoint("a", 0.05, 1.0))
        await asyncio.sleep(0.01)  # a cancellation left pending would raise here
        task = asyncio.current_task()
        assert task is not None
        return task.cancelling()

    assert await asyncio.ensure_future(send_then_sleep()) == 0


async def test_a_cancellation_from_outside_stays_one(channel: Slow) -> None:
    task = asyncio.ensure_future(channel.send(delivery(), endpoint("a", 5.0, 1.0)))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
