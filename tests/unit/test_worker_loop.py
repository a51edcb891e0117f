"""The worker loop driven through its narrow interfaces: a store in memory and
a scripted channel, no database and no network. What the loop does with
answers, removed endpoints and a stop, exactly as with PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import asyncpg

from outbox.deliver.config import WorkerConfig
from outbox.deliver.handback import HandBack
from outbox.deliver.health import HealthReport
from outbox.deliver.model import (
    AttemptClock,
    AttemptResult,
    Claimed,
    Delivery,
    Endpoint,
    Finished,
    Reaped,
)
from outbox.deliver.policy import Outcome, classify_status
from outbox.deliver.retention import Pruned
from outbox.deliver.worker import Worker
from outbox.settings import Settings
from outbox.settings import endpoint as declared

CONFIG = WorkerConfig.from_settings(
    Settings(concurrency=4, batch_size=10, poll_interval=0.01, backoff_base=0.01, backoff_cap=0.02),
    flush_interval=0.005,
)


def endpoint_row(name: str, channel: str = "script") -> dict[str, Any]:
    """A row of ``worker_endpoints`` with every setting at its declared default."""
    row: dict[str, Any] = {s.column: s.column_default for s in declared.SETTINGS}
    return row | {"name": name, "channel": channel, "previous_secret_in_grace": None,
                  "unhealthy": False}  # fmt: skip


class MemoryStore:
    """`outbox.deliver.store.Store` in memory: messages, leases and the ledger."""

    worker_id = "memory"

    def __init__(self, endpoints: list[dict[str, Any]]) -> None:
        self.rows = endpoints
        self.waiting: dict[uuid.UUID, Claimed] = {}
        self.leased: dict[uuid.UUID, Claimed] = {}
        self.ledger: list[Finished] = []
        self.dead: list[uuid.UUID] = []

    def add(self, endpoint: str, n: int = 1) -> list[uuid.UUID]:
        ids = [uuid.uuid4() for _ in range(n)]
        for i, message_id in enumerate(ids):
            self.waiting[message_id] = Claimed(
                message_id, endpoint, "{}", None, None, 0, datetime.now(UTC), i, uuid.uuid4()
            )
        return ids

    async def claim(self, limit: int, *, horizon: float, first_share: float) -> list[Delivery]:
        token = uuid.uuid4()
        taken = list(self.waiting.values())[:limit]
        for m in taken:
            del self.waiting[m.id]
            m.token = token
            self.leased[m.id] = m
        return [Delivery([m]) for m in taken]

    async def finish(self, done: Sequence[Finished]) -> int:
        kept = 0
        for f in done:
            m = self.leased.get(f.id)
            if m is None or m.token != f.token:  # a stale result writes nothing
                continue
            kept += 1
            self.ledger.append(f)
            del self.leased[f.id]
            if f.outcome is Outcome.DEAD:
                self.dead.append(f.id)
            elif f.outcome is not Outcome.DELIVERED:
                m.attempts += 1
                self.waiting[m.id] = m
        return kept

    async def release(self, claimed: Sequence[Claimed]) -> None:
        for m in claimed:
            self.leased.pop(m.id, None)
            self.waiting[m.id] = m

    async def reap(self, limit: int) -> list[Reaped]:
        return []

    async def endpoints(self) -> Sequence[Any]:
        return self.rows

    async def report_health(self, reports: Sequence[HealthReport]) -> None:
        return None

    async def request_wakeups(self, seconds: float) -> None:
        return None

    async def prune(self, max_batches: int) -> Pruned | None:
        return None

    async def prune_key_limits(self) -> int:
        return 0

    async def vacuum_if_needed(self, min_dead: int) -> bool:
        return False

    async def database_health(self) -> dict[str, Any] | None:
        return None

    async def alert_horizon(self, seconds: float) -> bool:
        return False

    async def stats(self) -> list[dict[str, Any]]:
        return []

    async def answers(self) -> bool:
        return True

    async def reconnect(self) -> None:
        return None


class Script:
    """A channel answering each message with the next status of its script."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = statuses
        self.sent: dict[uuid.UUID, int] = {}
        self.finished = 0

    async def send(self, delivery: Delivery, endpoint: Endpoint) -> AttemptResult:
        clock = AttemptClock()
        n = self.sent.get(delivery.head.id, 0)
        self.sent[delivery.head.id] = n + 1
        status = self.statuses[min(n, len(self.statuses) - 1)]
        self.finished += 1
        return clock.result(classify_status(status), status_code=status)

    async def aclose(self) -> None:
        return None


async def until(condition: Any, within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 - polling the store is the point
            await asyncio.sleep(0.005)


async def test_failures_are_retried_by_the_policy_until_delivered() -> None:
    store = MemoryStore([endpoint_row("hook")])
    [message_id] = store.add("hook")
    channel = Script(503, 503, 200)
    worker = Worker(store, {"script": channel}, CONFIG)
    task = asyncio.create_task(worker.run())
    await until(lambda: any(f.outcome is Outcome.DELIVERED for f in store.ledger))
    worker.stop()
    await task
    assert [(f.attempt, f.outcome, f.status_code) for f in store.ledger] == [
        (1, Outcome.RETRYING, 503),
        (2, Outcome.RETRYING, 503),
        (3, Outcome.DELIVERED, 200),
    ]
    assert all("retry #" in f.reason for f in store.ledger[:2])
    assert channel.sent == {message_id: 3}


async def test_a_message_whose_endpoint_is_gone_is_dead_lettered_by_the_policy() -> None:
    store = MemoryStore([])
    [message_id] = store.add("removed")
    worker = Worker(store, {"script": Script(200)}, CONFIG)
    task = asyncio.create_task(worker.run())
    await until(lambda: store.dead == [message_id])
    worker.stop()
    await task
    [row] = store.ledger
    assert row.reason == "permanent failure: endpoint 'removed' no longer exists"
    assert row.error == "UnknownEndpoint: the endpoint was removed"


async def test_a_channel_that_raises_loses_nothing_the_policy_retries_it() -> None:
    class Breaks(Script):
        async def send(self, delivery: Delivery, endpoint: Endpoint) -> AttemptResult:
            if not self.sent:
                self.sent[delivery.head.id] = 1
                raise RuntimeError("a bug in a channel")
            return await super().send(delivery, endpoint)

    store = MemoryStore([endpoint_row("hook")])
    store.add("hook")
    worker = Worker(store, {"script": Breaks(200)}, CONFIG)
    task = asyncio.create_task(worker.run())
    await until(lambda: len(store.ledger) == 2)
    worker.stop()
    await task
    first, second = store.ledger
    assert (first.outcome, first.error) == (Outcome.RETRYING, "RuntimeError: channel error")
    assert first.reason.startswith("internal: RuntimeError; retry #2 in")
    assert second.outcome is Outcome.DELIVERED


async def test_a_database_that_cannot_answer_at_start_is_waited_for() -> None:
    """Through a pooler the pool opens while PostgreSQL is still down: the first
    load of the endpoints fails, and the worker must wait, not die."""

    class DownAtFirst(MemoryStore):
        failures = 2

        async def endpoints(self) -> Sequence[Any]:
            if self.failures:
                self.failures -= 1
                raise asyncpg.CannotConnectNowError("the database system is starting up")
            return await super().endpoints()

    store = DownAtFirst([endpoint_row("hook")])
    [message_id] = store.add("hook")
    channel = Script(200)
    worker = Worker(store, {"script": channel}, CONFIG)
    task = asyncio.create_task(worker.run())
    await until(lambda: any(f.outcome is Outcome.DELIVERED for f in store.ledger), within=10)
    worker.stop()
    await task
    assert store.failures == 0
    assert channel.sent == {message_id: 1}


async def test_a_stop_while_waiting_for_the_database_ends_the_run() -> None:
    class Down(MemoryStore):
        async def endpoints(self) -> Sequence[Any]:
            raise asyncpg.CannotConnectNowError("the database system is starting up")

    worker = Worker(Down([]), {"script": Script(200)}, CONFIG)
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(0.3)
    worker.stop()
    await asyncio.wait_for(task, 5)


class Counting(MemoryStore):
    """Notes, after each claim, how many claimed messages are not finished yet
    (in flight, or claimed ahead and waiting for a slot)."""

    def __init__(self, endpoints: list[dict[str, Any]], channel: Script) -> None:
        super().__init__(endpoints)
        self.channel = channel
        self.claimed = 0
        self.unfinished_after_claims: list[int] = []

    async def claim(self, limit: int, *, horizon: float, first_share: float) -> list[Delivery]:
        claimed = await super().claim(limit, horizon=horizon, first_share=first_share)
        self.claimed += len(claimed)
        self.unfinished_after_claims.append(self.claimed - self.channel.finished)
        return claimed


class Slow(Script):
    def __init__(self, seconds: float) -> None:
        super().__init__(200)
        self.seconds = seconds

    async def send(self, delivery: Delivery, endpoint: Endpoint) -> AttemptResult:
        await asyncio.sleep(self.seconds)
        return await super().send(delivery, endpoint)


async def test_fast_deliveries_get_the_next_ones_claimed_ahead_slow_ones_do_not() -> None:
    config = WorkerConfig.from_settings(
        Settings(concurrency=8, batch_size=50, poll_interval=0.01), flush_interval=0.005
    )
    channel = Script(200)
    fast = Counting([endpoint_row("hook")], channel)
    fast.add("hook", 20_000)
    worker = Worker(fast, {"script": channel}, config)
    task = asyncio.create_task(worker.run())
    await until(lambda: len(fast.ledger) == 20_000, within=60)
    worker.stop()
    await task
    # Up to half the slots claimed ahead of the 8 in flight, never more.
    assert max(fast.unfinished_after_claims) > 8
    assert max(fast.unfinished_after_claims) <= 12

    # 4 slots of 0.25 s: even the 4 finishing at once, within the rate's 100 ms
    # window, count as 40/s, less than one delivery in the 20 ms ahead: none.
    config = WorkerConfig.from_settings(
        Settings(concurrency=4, batch_size=50, poll_interval=0.01), flush_interval=0.005
    )
    channel = Slow(0.25)
    slow = Counting([endpoint_row("hook")], channel)
    slow.add("hook", 20)
    worker = Worker(slow, {"script": channel}, config)
    task = asyncio.create_task(worker.run())
    await until(lambda: len(slow.ledger) >= 12, within=10)
    worker.stop()
    await task
    assert max(slow.unfinished_after_claims) <= 4


class SlowClaims(MemoryStore):
    """Its claims take ``seconds`` (the first ``slow`` of them): what a delivery
    claimed ahead can spend waiting for a slot."""

    def __init__(self, endpoints: list[dict[str, Any]], seconds: float, slow: int) -> None:
        super().__init__(endpoints)
        self.seconds, self.slow = seconds, slow
        self.released: list[uuid.UUID] = []

    async def claim(self, limit: int, *, horizon: float, first_share: float) -> list[Delivery]:
        claimed = await super().claim(limit, horizon=horizon, first_share=first_share)
        if claimed and self.slow > 0:
            self.slow -= 1
            await asyncio.sleep(self.seconds)
        return claimed

    async def release(self, claimed: Sequence[Claimed]) -> None:
        self.released.extend(m.id for m in claimed)
        await super().release(claimed)


# A 3 s lease, slots up to 0.1 s ahead, a 0.5 s timeout: an attempt needs 1.5 s
# of the lease, and a delivery that waited 1.6 s since its claim has 1.4 left.
SHORT_LEASE = replace(
    WorkerConfig.from_settings(
        Settings(concurrency=1, batch_size=1, poll_interval=0.01, lease_seconds=3.0),
        flush_interval=0.005,
    ),
    rate_horizon=0.1,
)


async def deliver_after_slow_claims(slow: int) -> tuple[SlowClaims, Script, uuid.UUID]:
    store = SlowClaims([endpoint_row("hook") | {"timeout_ms": 500}], 1.6, slow)
    [message_id] = store.add("hook")
    channel = Script(200)
    worker = Worker(store, {"script": channel}, SHORT_LEASE)
    task = asyncio.create_task(worker.run())
    await until(lambda: len(store.ledger) == 1, within=10)
    worker.stop()
    await task
    return store, channel, message_id


async def test_a_delivery_whose_lease_ran_short_while_it_waited_is_handed_back_not_sent() -> None:
    store, channel, message_id = await deliver_after_slow_claims(slow=1)
    # Handed back unsent, claimed again on a fresh lease, sent once: one attempt.
    assert store.released == [message_id]
    assert channel.sent == {message_id: 1}
    [(attempt, result)] = [(f.attempt, f.outcome) for f in store.ledger]
    assert (attempt, result) == (1, Outcome.DELIVERED)


async def test_a_message_is_handed_back_for_its_lease_once_then_sent_whatever_its_wait() -> None:
    store, channel, message_id = await deliver_after_slow_claims(slow=5)
    assert store.released == [message_id]  # not again: a hand-back never blocks a message
    assert channel.sent == {message_id: 1}
    assert [f.outcome for f in store.ledger] == [Outcome.DELIVERED]


def test_a_probe_and_a_delivery_from_elsewhere_are_never_handed_back() -> None:
    hand_back = HandBack(MemoryStore([]), lease_seconds=60.0, rate_horizon=1.0)
    store = MemoryStore([])
    [message_id] = store.add("hook")
    message = store.waiting[message_id]
    assert hand_back.lease_ran_short(Delivery([message], claimed_at=1.0), 10.0, now=100.0)
    assert not hand_back.lease_ran_short(
        Delivery([message], claimed_at=1.0, probe=True), 10.0, now=100.0
    )
    assert not hand_back.lease_ran_short(Delivery([message]), 10.0, now=100.0)  # not claimed here
