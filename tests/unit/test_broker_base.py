"""What every broker channel shares (`outbox.deliver.channels.broker`), on a
broker made up in memory: connections kept and reopened, backoff, timeouts,
credentials masked, a missing client library."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from outbox.deliver.channels.broker import BrokerChannel, BrokerError, Outbound, retryable
from outbox.deliver.channels.spec import ChannelContext
from outbox.deliver.model import Claimed, Delivery, Endpoint
from outbox.deliver.policy import Health, RetryPolicy, Verdict


class Memory(BrokerChannel):
    name = "memory"
    library = "json"  # any importable module
    extra = "memory"

    def __init__(self, context: ChannelContext) -> None:
        super().__init__(context)
        self.opened: list[str] = []
        self.closed: list[str] = []
        self.published: list[Outbound] = []
        self.connect_error: Exception | None = None
        self.publish_delay = 0.0
        self.publish_error: Exception | None = None

    async def connect(self, client: Any, endpoint: Endpoint) -> Any:
        if self.connect_error is not None:
            raise self.connect_error
        self.opened.append(endpoint.url or "")
        return endpoint.url

    async def disconnect(self, connection: Any) -> None:
        self.closed.append(connection)

    async def publish(self, connection: Any, endpoint: Endpoint, out: Outbound) -> None:
        await asyncio.sleep(self.publish_delay)
        if self.publish_error is not None:
            raise self.publish_error
        self.published.append(out)

    def failure(self, exc: BaseException) -> BrokerError:
        return retryable(f"{type(exc).__name__}: {exc}", drop=True)


def endpoint(url: str = "memory://u:pa55@h", **settings: Any) -> Endpoint:
    return Endpoint(
        "e", "memory", RetryPolicy(3, timedelta(hours=1), 0.1, 1.0),
        settings={"url": url, "target": "t.{key}", "timeout": 0.2, "connect_timeout": 0.2,
                  **settings},
        secret="s3cret",
    )  # fmt: skip


def delivery(key: str | None = "k", headers: str | None = None) -> Delivery:
    message = Claimed(uuid.uuid4(), "e", '{"n": 1}', headers, key, 0, datetime.now(UTC), 1,
                      uuid.uuid4())  # fmt: skip
    return Delivery([message])


@pytest.fixture
def channel() -> Memory:
    return Memory(ChannelContext(10))


async def test_a_delivery_is_published_with_its_target_and_headers(channel: Memory) -> None:
    sent = delivery(headers='{"x-trace": "1"}')
    result = await channel.send(sent, endpoint(headers={"source": "shop", "x-trace": "0"}))
    assert result.classification.verdict is Verdict.DELIVERED
    (out,) = channel.published
    assert out.target == "t.k"
    assert out.body == b'{"n": 1}'
    assert out.headers == {
        "source": "shop",  # the endpoint's
        "x-trace": "1",  # the message's own win over the endpoint's
        "outbox-id": str(sent.head.id),
        "outbox-key": "k",
    }


async def test_one_connection_serves_every_send_until_the_url_changes(channel: Memory) -> None:
    await asyncio.gather(*(channel.send(delivery(), endpoint()) for _ in range(20)))
    assert channel.opened == ["memory://u:pa55@h"]
    await channel.send(delivery(), endpoint("memory://other"))
    await asyncio.sleep(0)
    assert channel.opened == ["memory://u:pa55@h", "memory://other"]
    assert channel.closed == ["memory://u:pa55@h"]
    await channel.aclose()
    assert channel.closed == ["memory://u:pa55@h", "memory://other"]


async def test_a_failed_connect_waits_out_a_backoff_failing_fast(channel: Memory) -> None:
    channel.connect_error = ConnectionRefusedError("refused by memory://u:pa55@h")
    first = await channel.send(delivery(), endpoint())
    assert first.classification.verdict is Verdict.RETRYABLE
    channel.connect_error = None
    second = await channel.send(delivery(), endpoint())  # within the 0.1 s backoff
    assert second.error is not None
    assert "next connect in" in second.error
    assert channel.opened == []
    await asyncio.sleep(0.15)
    third = await channel.send(delivery(), endpoint())
    assert third.classification.verdict is Verdict.DELIVERED


async def test_no_ack_within_the_timeout_is_retried_and_counts_against_it(channel: Memory) -> None:
    channel.publish_delay = 1.0
    result = await channel.send(delivery(), endpoint())
    assert result.classification.verdict is Verdict.RETRYABLE
    assert result.classification.health is Health.FAILING
    assert "no acknowledgement from the broker within 0.2s" in result.classification.reason


async def test_credentials_never_reach_what_an_attempt_records(channel: Memory) -> None:
    channel.publish_error = RuntimeError("auth pa55 and s3cret for memory://u:pa55@h failed")
    result = await channel.send(delivery(), endpoint())
    recorded = f"{result.error} {result.classification.reason} {result.classification.pause}"
    assert "RuntimeError: auth *** and ***" in recorded
    assert "pa55" not in recorded
    assert "s3cret" not in recorded


async def test_a_message_lacking_its_target_field_is_dead_lettered(channel: Memory) -> None:
    result = await channel.send(delivery(key=None), endpoint())
    assert result.classification.verdict is Verdict.PERMANENT
    assert "key: is required" in result.classification.reason


async def test_without_the_client_library_the_endpoint_is_paused(channel: Memory) -> None:
    channel.library = "outbox_no_such_module"
    result = await channel.send(delivery(), endpoint())
    assert result.classification.verdict is Verdict.RETRYABLE
    assert result.classification.pause is not None
    assert "pip install 'outbox[memory]'" in result.classification.pause


async def test_a_publish_cancelled_by_its_library_is_retried(channel: Memory) -> None:
    channel.publish_error = asyncio.CancelledError()  # e.g. aiormq, its connection closing
    result = await channel.send(delivery(), endpoint())  # this task goes on
    assert result.classification.verdict is Verdict.RETRYABLE
    assert "cancelled" in result.classification.reason


async def test_a_late_failure_leaves_the_connection_that_replaced_its_own(
    channel: Memory,
) -> None:
    release = asyncio.Event()
    first_publish = Memory.publish

    async def slow_then_fail(self: Memory, connection: Any, ep: Endpoint, out: Outbound) -> None:
        if connection == "memory://u:pa55@h" and not release.is_set():
            await release.wait()
            raise ConnectionResetError("the old connection broke")
        await first_publish(self, connection, ep, out)

    channel.publish = slow_then_fail.__get__(channel)  # type: ignore[method-assign]
    late = asyncio.ensure_future(channel.send(delivery(), endpoint()))
    await asyncio.sleep(0.01)
    channel._drop("e")  # the connection is replaced meanwhile ...
    assert (await channel.send(delivery(), endpoint("memory://u:pa55@h2"))).classification.verdict \
        is Verdict.DELIVERED  # fmt: skip
    release.set()
    assert (await late).classification.verdict is Verdict.RETRYABLE  # ... then the old one fails
    await asyncio.sleep(0)
    assert channel._links["e"].connection == "memory://u:pa55@h2"  # the new one stays open
