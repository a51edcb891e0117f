"""The worker: claim -> deliver -> record, with leases, upkeep and wake-ups.

One process runs one `Worker`:

* the **claim loop** leases due messages in batches (never more than there is
  room for: ``concurrency`` bounds deliveries in flight, independently of the
  number of database connections, and at most what they finish in 20 ms is
  claimed ahead) and queues them as deliveries for
* ``concurrency`` **delivery coroutines**, which send each through its
  endpoint's channel; `outbox.deliver.outcome` turns the answer into each
  message's fate (every case through `outbox.deliver.policy.decide`), and
* the **recorder** (`outbox.deliver.recorder`) writes results in batches;
* **upkeep** (`outbox.deliver.upkeep`) reaps expired leases, vacuums and prunes;
* **wake-ups**: an idle worker LISTENs and asks producers to NOTIFY it
  (``outbox.config.wakeup_until``); polling every ``poll_interval`` remains the
  path that guarantees progress.

Logs and metrics observe it through one hook (`outbox.deliver.observe`).
`stop()` stops claiming, hands back claimed-but-unstarted messages at once,
lets deliveries in flight finish within the grace period and records
everything. Database errors never kill the worker: it logs, backs off and
carries on (asyncpg's pool reconnects).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime

from outbox._redact import redact_text
from outbox.db.connect import DB_ERRORS
from outbox.deliver import outcome
from outbox.deliver.backoff import DbBackoff
from outbox.deliver.channels.spec import Channel
from outbox.deliver.config import WorkerConfig
from outbox.deliver.endpoints import EndpointCache
from outbox.deliver.handback import HandBack
from outbox.deliver.health import HealthBook
from outbox.deliver.model import AttemptResult, Delivery, Finished
from outbox.deliver.observe import AttemptLog, Observer, Observers
from outbox.deliver.policy import Classification, Verdict
from outbox.deliver.recorder import Recorder
from outbox.deliver.store import Store
from outbox.deliver.tracing import Tracer
from outbox.deliver.upkeep import Upkeep

log = logging.getLogger("outbox.worker")

# Claim ahead what the deliveries finish in this long (at most half of
# `concurrency`), so a delivery that ends finds the next one claimed: a claim's
# round trip left slots idle (+5% on outbox bench nats). The rate is measured,
# so slow endpoints get nothing claimed ahead to wait on their leases.
AHEAD_SECONDS = 0.02

Listen = Callable[[Callable[[], None]], Awaitable[Callable[[], Awaitable[None]]]]


class Worker:
    def __init__(
        self,
        store: Store,
        channels: Mapping[str, Channel],
        config: WorkerConfig,
        *,
        listen: Listen | None = None,
        rng: random.Random | None = None,
        observers: tuple[Observer, ...] = (),
        tracer: Tracer | None = None,
    ) -> None:
        self.store = store
        self.tracer = tracer  # None: no spans; each message's trace context goes on as it is
        self.channels = channels
        self.config = config
        self.observer = Observers((AttemptLog(), *observers))
        self._listen = listen
        self._rng = rng or random.Random()
        self.endpoints = EndpointCache(
            store.endpoints,
            base=config.backoff_base,
            cap=config.backoff_cap,
            lease_seconds=config.lease_seconds,
            refresh=config.endpoint_refresh,
        )
        self.health = HealthBook(config.health_report_interval)
        self._stopping = asyncio.Event()
        self._hand_back = HandBack(store, lease_seconds=config.lease_seconds,
                                   rate_horizon=config.rate_horizon)  # fmt: skip
        self._db_backoff = DbBackoff(store, self._rng, self._stopping)
        self.recorder = Recorder(
            store,
            self.health,
            self._db_backoff,
            interval=config.flush_interval,
            batch=config.flush_max,
        )
        self.upkeep = Upkeep(
            store, self.endpoints, self.recorder, self.observer, config, self._db_backoff, self._rng
        )
        self._queue: asyncio.Queue[Delivery | None] = asyncio.Queue()
        self._busy = 0  # deliveries taken off the queue and not yet recorded
        self._finished = 0  # deliveries done, for the rate `_prefetch` follows
        self._rate_mark = (time.monotonic(), 0)
        self._prefetch = 0  # claimed ahead of the free slots (see `_claim_ahead`)
        self._room = asyncio.Event()  # set once a claim's worth of slots is free
        # Under load, claim in batches of a quarter of the slots (or a batch): a
        # claim (and a wake-up of the claim loop) per delivery cost a round trip each.
        self._claim_at = min(config.batch_size, max(1, config.concurrency // 4))
        self._wake = asyncio.Event()
        self._stopped_claiming = asyncio.Event()
        self._wakeups_requested = -1e9

    @property
    def delivered(self) -> int:
        return self.recorder.delivered

    # -- lifecycle ---------------------------------------------------------

    def stop(self) -> None:
        """Begin a graceful stop (idempotent)."""
        self._stopping.set()
        self._wake.set()
        self._room.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def run(self) -> None:
        """Run until `stop()`; returns once everything claimed is recorded or handed back."""
        await self._first_refresh()
        await self._warm_channels()
        unlisten = await self._start_listening()
        deliverers = [
            asyncio.create_task(self._deliver_loop(), name=f"deliver-{i}")
            for i in range(self.config.concurrency)
        ]
        recorder = asyncio.create_task(self.recorder.run(self._all_done), name="record")
        upkeep = [
            asyncio.create_task(self.upkeep.reap(), name="reap"),
            asyncio.create_task(self.upkeep.tidy(), name="tidy"),
        ]
        try:
            await self._claim_loop()
        finally:
            self._stopped_claiming.set()
            # Upkeep first: once the recorder has drained, nothing may add results.
            for task in upkeep:
                task.cancel()
            await asyncio.gather(*upkeep, return_exceptions=True)
            await self._hand_back_unstarted()
            await self._finish_deliveries(deliverers)
            await self._finish_recording(recorder)
            if unlisten is not None:
                with contextlib.suppress(*DB_ERRORS):
                    await unlisten()

    async def _first_refresh(self) -> None:
        """Load the endpoints, retrying while the database cannot answer: through a
        pooler the pool opens (the pooler answers) while PostgreSQL is still down."""
        delay = 0.2
        while True:
            try:
                await self.endpoints.refresh(force=True)
                return
            except DB_ERRORS as exc:
                log.warning(
                    "cannot load endpoints: %s; retrying in %.1fs", redact_text(str(exc)), delay
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
                return  # stopped meanwhile: nothing was claimed
            delay = min(delay * 2, 5.0)

    async def _warm_channels(self) -> None:
        """Let channels that can (the brokers') open their endpoints' connections
        before the first claim: a first send that waits for a client library or a
        connection would let the rate slots passing meanwhile go out at once."""
        warming = [
            warm(endpoint)
            for endpoint in self.endpoints.all()
            if (warm := getattr(self.channels.get(endpoint.channel), "warm", None)) is not None
        ]
        if warming:
            longest = max(e.connect_timeout for e in self.endpoints.all())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*warming, return_exceptions=True), min(longest, 10.0)
                )

    def _all_done(self) -> bool:
        return self._stopped_claiming.is_set() and self._busy == 0 and self._queue.empty()

    async def _finish_deliveries(self, deliverers: list[asyncio.Task[None]]) -> None:
        for _ in deliverers:
            self._queue.put_nowait(None)
        _, pending = await asyncio.wait(deliverers, timeout=self.config.shutdown_grace)
        for task in pending:  # past the grace period: the reaper will recover these
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if pending:
            log.warning(
                "shutdown grace period over: %d delivery(ies) cancelled; their leases "
                "will expire and the reaper will retry them",
                len(pending),
            )

    async def _finish_recording(self, recorder: asyncio.Task[None]) -> None:
        self.recorder.flush_soon()
        try:
            await asyncio.wait_for(recorder, self.config.shutdown_grace)
        except TimeoutError:
            log.warning(
                "could not record %d result(s) before the grace period ended; "
                "the reaper will retry those messages",
                self.recorder.waiting,
            )

    # -- claiming ----------------------------------------------------------

    async def _claim_loop(self) -> None:
        failures = 0
        while not self.stopping:
            self._claim_ahead()
            room = self._room_left()
            if room < self._claim_at:
                self._room.clear()
                await self._room.wait()
                continue
            limit = min(self.config.batch_size, room)
            # Cleared before claiming, so a wake-up that arrives while the
            # claim is on the wire is not lost: the wait below returns at once.
            self._wake.clear()
            asked = time.monotonic()  # no later than the lease's start, in the database
            try:
                claimed = await self.store.claim(
                    limit,
                    horizon=self.config.rate_horizon,
                    first_share=self.config.first_attempt_share,
                )
                failures = 0
            except DB_ERRORS as exc:
                failures += 1
                await self._db_backoff("claim", exc, failures, interruptible=True)
                continue
            messages = sum(len(d.messages) for d in claimed)
            self.observer.claimed(messages)
            for delivery in claimed:
                delivery.claimed_at = asked
                self._queue.put_nowait(delivery)
            with contextlib.suppress(*DB_ERRORS):  # stale for a while is fine; misses reload
                await self.endpoints.refresh()
            if messages < limit:
                await self._idle()

    def _room_left(self) -> int:
        """Slots to claim for: free ones, and `_prefetch` ahead of them."""
        return self.config.concurrency + self._prefetch - self._busy - self._queue.qsize()

    def _claim_ahead(self) -> None:
        """`_prefetch` from the rate of the last 100 ms or more (see `AHEAD_SECONDS`)."""
        now, (then, finished) = time.monotonic(), self._rate_mark
        if now - then >= 0.1:
            rate = (self._finished - finished) / (now - then)
            self._prefetch = min(self.config.concurrency // 2, int(rate * AHEAD_SECONDS))
            self._rate_mark = (now, self._finished)

    async def _idle(self) -> None:
        """Nothing more is due: wait for a wake-up, or poll."""
        now = time.monotonic()
        if (
            self._listen is not None
            and now - self._wakeups_requested > self.config.wakeup_seconds / 3
        ):
            # Producers NOTIFY only while outbox.config.wakeup_until is ahead: past
            # the poll below too (a window shorter than the poll lapsed during it).
            with contextlib.suppress(*DB_ERRORS):
                await self.store.request_wakeups(
                    self.config.poll_interval + self.config.wakeup_seconds
                )
                self._wakeups_requested = now
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), self.config.poll_interval)

    async def _start_listening(self) -> Callable[[], Awaitable[None]] | None:
        if self._listen is None:
            return None
        try:
            return await self._listen(self._wake.set)
        except DB_ERRORS as exc:
            log.warning("cannot LISTEN for wake-ups (%s); polling only", type(exc).__name__)
            return None

    async def _hand_back_unstarted(self) -> None:
        unstarted = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not None:
                unstarted.extend(item.messages)
        await self._hand_back(unstarted, "claimed, not started")

    # -- delivering --------------------------------------------------------

    async def _deliver_loop(self) -> None:
        while True:
            delivery = await self._queue.get()
            if delivery is None:
                return
            self._busy += 1
            self.observer.delivering(1)
            results: list[Finished] = []
            try:
                for finished in (results := await self._attempt(delivery)):
                    self.recorder.record(finished)
            except Exception:  # never lose a deliverer: the lease expires and the reaper retries
                log.exception("unexpected error delivering message %s", delivery.head.id)
            finally:
                self._busy -= 1
                self.observer.delivering(-1)
                self._finished += 1 if results else 0  # handed back: not the rate claimed ahead
                if self._room_left() >= self._claim_at:
                    self._room.set()

    async def _attempt(self, delivery: Delivery) -> list[Finished]:
        """Deliver one delivery (at its rate-limit slot) and decide for each message."""
        if delivery.send_at:
            wait = delivery.send_at - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        name = delivery.endpoint
        try:
            endpoint = self.endpoints.cached(name) or await self.endpoints.get(name)
        except DB_ERRORS as exc:
            problem = f"could not load endpoint {name!r}: {type(exc).__name__}"
            return self._unattempted(delivery, Classification(Verdict.RETRYABLE, problem),
                                     f"{type(exc).__name__}: endpoint lookup failed")  # fmt: skip
        if endpoint is None:
            return self._unattempted(
                delivery, outcome.gone(name), "UnknownEndpoint: the endpoint was removed"
            )
        if self._hand_back.lease_ran_short(delivery, endpoint.timeout, time.monotonic()):
            await self._hand_back(delivery.messages, "too little lease left after waiting")
            return []
        channel = self.channels.get(endpoint.channel)
        tracer, span = self.tracer, None
        if channel is None:
            missing = Classification(
                Verdict.RETRYABLE, f"no {endpoint.channel!r} channel in this worker"
            )
            result = AttemptResult(missing, datetime.now(UTC), 0.0)
        else:
            if tracer is not None:
                span = tracer.begin(delivery, endpoint)
            try:
                result = await channel.send(delivery, endpoint)
            except Exception as exc:  # a bug in a channel must not lose the message
                log.exception("channel failed on message %s", delivery.head.id)
                result = outcome.channel_failed(exc, datetime.now(UTC))
        self.health.note(
            endpoint.name,
            result.classification,
            probe=delivery.probe,
            unhealthy=endpoint.unhealthy,
            version=endpoint.version,
        )
        finished = outcome.after_attempt(
            delivery, endpoint.policy, result, now=datetime.now(UTC), rng=self._rng
        )
        for done in finished:
            self.observer.attempted(endpoint.name, done, result)
        if tracer is not None and span is not None:
            tracer.end(span, result, finished)
        return finished

    def _unattempted(
        self, delivery: Delivery, classification: Classification, error: str
    ) -> list[Finished]:
        finished = outcome.without_attempt(
            delivery,
            self.config.fallback_policy,
            classification,
            error,
            now=datetime.now(UTC),
            rng=self._rng,
        )
        for done in finished:
            self.observer.attempted(delivery.endpoint, done, None)
        return finished
