"""The worker: claim -> deliver -> record, with leases, a reaper and wake-ups.

One process runs one `Worker`:

* the **claim loop** leases due messages in batches (never more than there is
  room for: ``concurrency`` bounds deliveries in flight, independently of the
  number of database connections) and hands them to
* ``concurrency`` **delivery coroutines**, which send through the endpoint's
  channel and ask `outbox.deliver.policy` what the result means; results go to
* the **flusher**, which records them in batches (one statement per batch:
  ledger rows, deletions, retries and dead letters, each a compare-and-set on
  the lease token);
* the **reaper** takes over messages whose lease expired and records the lost
  attempt (``lease_expired``), then they are retried like any failure;
* **wake-ups**: an idle worker LISTENs and asks producers to NOTIFY it
  (``outbox.config.wakeup_until``); polling every ``poll_interval`` remains the
  path that guarantees progress.

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
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from outbox.deliver.channels import Channel
from outbox.deliver.metrics import Metrics
from outbox.deliver.model import AttemptResult, Claimed, Endpoint, Finished
from outbox.deliver.policy import Classification, Health, Outcome, Verdict, decide
from outbox.deliver.store import HealthReport, Reaped, Store

log = logging.getLogger("outbox.worker")

WAKEUP_CHANNEL = "outbox_wakeup"
# InternalClientError: what asyncpg raises when a connection broke in the
# middle of a protocol exchange (seen when PostgreSQL restarted under a claim);
# it is not an InterfaceError, and it killed the worker before it was listed here.
_DB_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    asyncio.TimeoutError,
)


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    concurrency: int = 100
    batch_size: int = 200
    lease_seconds: float = 60.0
    poll_interval: float = 1.0
    flush_interval: float = 0.02
    flush_max: int = 500
    reap_interval: float = 5.0
    endpoint_refresh: float = 5.0
    shutdown_grace: float = 30.0
    backoff_base: float = 2.0
    backoff_cap: float = 7200.0
    wakeup_seconds: float = 5.0
    vacuum_check_interval: float = 10.0
    vacuum_min_dead: int = 5000
    # How far ahead a claim may take rate-limited endpoints' slots (seconds);
    # the worker sends each message at its slot.
    rate_horizon: float = 1.0
    # Of each endpoint's part of a claim, the share kept for first attempts,
    # so a pile of due retries cannot starve new messages.
    first_attempt_share: float = 0.5
    # Good news alone (deliveries, no failure) is reported at most this often
    # per endpoint, to reset a breaker another worker's failures moved.
    health_report_interval: float = 1.0
    # Non-public address ranges every webhook may reach (the SSRF guard's exceptions).
    allow_networks: tuple[str, ...] = ()
    # Retention runs (one worker at a time) this often, at most this many batches per table.
    prune_interval: float = 300.0
    prune_batches: int = 20
    # Serve /metrics, /healthz and /readyz on this port (None: no server).
    metrics_port: int | None = None


class Worker:
    def __init__(
        self,
        store: Store,
        channels: Mapping[str, Channel],
        config: WorkerConfig,
        *,
        listen: Callable[[Callable[[], None]], Awaitable[Callable[[], Awaitable[None]]]]
        | None = None,
        rng: random.Random | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.metrics = metrics
        self.store = store
        self.channels = channels
        self.config = config
        self._listen = listen
        self._rng = rng or random.Random()
        self._queue: asyncio.Queue[Claimed | None] = asyncio.Queue()
        self._results: list[Finished] = []
        self._endpoints: dict[str, Endpoint] = {}
        self._endpoints_loaded = 0.0
        self._busy = 0  # messages taken off the queue and not yet recorded
        self._stopping = asyncio.Event()
        self._room = asyncio.Event()
        self._wake = asyncio.Event()
        self._flush_now = asyncio.Event()
        self._stopped_claiming = asyncio.Event()
        self._refreshing = asyncio.Lock()
        self._wakeups_requested = -1e9
        self._warned: set[str] = set()
        self._health: dict[str, HealthReport] = {}
        self._health_sent: dict[str, float] = {}
        self._watch: set[str] = set()  # endpoints whose good news must be reported soon
        self.delivered = 0
        self.recorded = 0

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
        await self._refresh_endpoints(force=True)
        unlisten = await self._start_listening()
        deliverers = [
            asyncio.create_task(self._deliver_loop(), name=f"deliver-{i}")
            for i in range(self.config.concurrency)
        ]
        flusher = asyncio.create_task(self._flush_loop(), name="flush")
        reaper = asyncio.create_task(self._reap_loop(), name="reap")
        upkeep = asyncio.create_task(self._vacuum_loop(), name="vacuum")
        try:
            await self._claim_loop()
        finally:
            self._stopped_claiming.set()
            # The reaper first: once the flusher has drained, nothing may add results.
            reaper.cancel()
            upkeep.cancel()
            await asyncio.gather(reaper, upkeep, return_exceptions=True)
            await self._hand_back_unstarted()
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
            self._flush_now.set()
            try:
                await asyncio.wait_for(flusher, self.config.shutdown_grace)
            except TimeoutError:
                log.warning(
                    "could not record %d result(s) before the grace period ended; "
                    "the reaper will retry those messages",
                    len(self._results),
                )
            if unlisten is not None:
                with contextlib.suppress(*_DB_ERRORS):
                    await unlisten()

    # -- claiming ----------------------------------------------------------

    async def _claim_loop(self) -> None:
        failures = 0
        while not self.stopping:
            room = self.config.concurrency - self._busy - self._queue.qsize()
            # Under load, claim in batches: wait for a quarter of the slots
            # (or a batch) to free up rather than claiming one at a time, so
            # each claim's fixed cost is shared (a claim as often as one
            # delivery finishes cost a round trip per message).
            if room < min(self.config.batch_size, max(1, self.config.concurrency // 4)):
                self._room.clear()
                await self._room.wait()
                continue
            limit = min(self.config.batch_size, room)
            # Cleared before claiming, so a wake-up that arrives while the
            # claim is on the wire is not lost: the wait below returns at once.
            self._wake.clear()
            try:
                claimed = await self.store.claim(
                    limit,
                    horizon=self.config.rate_horizon,
                    first_share=self.config.first_attempt_share,
                )
                failures = 0
            except _DB_ERRORS as exc:
                failures += 1
                await self._db_backoff("claim", exc, failures, interruptible=True)
                continue
            if claimed and self.metrics is not None:
                self.metrics.batch.observe(len(claimed))
            for message in _with_riders(claimed):
                self._queue.put_nowait(message)
            with contextlib.suppress(*_DB_ERRORS):  # stale for a while is fine; misses reload
                await self._refresh_endpoints()
            if len(claimed) < limit:
                await self._idle()

    async def _idle(self) -> None:
        """Nothing more is due: wait for a wake-up, or poll."""
        now = time.monotonic()
        if (
            self._listen is not None
            and now - self._wakeups_requested > self.config.wakeup_seconds / 3
        ):
            # Producers NOTIFY only while outbox.config.wakeup_until is ahead.
            with contextlib.suppress(*_DB_ERRORS):
                await self.store.request_wakeups(self.config.wakeup_seconds)
                self._wakeups_requested = now
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), self.config.poll_interval)

    async def _start_listening(self) -> Callable[[], Awaitable[None]] | None:
        if self._listen is None:
            return None
        try:
            return await self._listen(self._wake.set)
        except _DB_ERRORS as exc:
            log.warning("cannot LISTEN for wake-ups (%s); polling only", type(exc).__name__)
            return None

    async def _hand_back_unstarted(self) -> None:
        unstarted: list[Claimed] = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not None:
                unstarted.extend((item, *item.riders))
        if unstarted:
            try:
                await self.store.release(unstarted)
                log.info("handed back %d claimed but unstarted message(s)", len(unstarted))
            except _DB_ERRORS as exc:
                log.warning(
                    "could not hand back %d message(s) (%s); their leases will expire",
                    len(unstarted),
                    type(exc).__name__,
                )

    # -- delivering --------------------------------------------------------

    async def _deliver_loop(self) -> None:
        while True:
            message = await self._queue.get()
            if message is None:
                return
            self._busy += 1
            if self.metrics is not None:
                self.metrics.in_flight.inc()
            try:
                for finished in await self._attempt(message):
                    self._record(finished)
            except Exception:  # never lose a deliverer: the lease expires and the reaper retries
                log.exception("unexpected error delivering message %s", message.id)
            finally:
                self._busy -= 1
                if self.metrics is not None:
                    self.metrics.in_flight.dec()
                self._room.set()

    async def _endpoint(self, name: str) -> Endpoint | None:
        """The cached endpoint; a miss reloads the cache first (it may be new)."""
        endpoint = self._endpoints.get(name)
        if endpoint is None:
            async with self._refreshing:
                endpoint = self._endpoints.get(name)
                if endpoint is None:
                    await self._refresh_endpoints(force=True)
                    endpoint = self._endpoints.get(name)
        return endpoint

    async def _attempt(self, message: Claimed) -> list[Finished]:
        """Deliver one message (with any riding on it: coalescing) and decide for each."""
        if message.send_at:
            wait = message.send_at - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        try:
            endpoint = await self._endpoint(message.endpoint)
        except _DB_ERRORS as exc:
            now = datetime.now(UTC)
            return [
                Finished(
                    m.id,
                    m.token,
                    Outcome.RETRYING,
                    now,
                    0.0,
                    f"could not load endpoint {message.endpoint!r}: {type(exc).__name__}",
                    error=f"{type(exc).__name__}: endpoint lookup failed",
                    retry_at=now,
                )
                for m in (message, *message.riders)
            ]
        if endpoint is None:
            return [
                Finished(
                    m.id,
                    m.token,
                    Outcome.DEAD,
                    datetime.now(UTC),
                    0.0,
                    f"endpoint {message.endpoint!r} no longer exists",
                    error="UnknownEndpoint: the endpoint was removed",
                )
                for m in (message, *message.riders)
            ]
        channel = self.channels.get(endpoint.channel)
        if channel is None:
            missing = Classification(
                Verdict.RETRYABLE, f"no {endpoint.channel!r} channel in this worker"
            )
            return self._decide(message, endpoint, AttemptResult(missing, datetime.now(UTC), 0.0))
        try:
            result = await channel.send(message, endpoint)
        except Exception as exc:  # a bug in a channel must not lose the message
            log.exception("channel %s failed on message %s", endpoint.channel, message.id)
            failed = Classification(Verdict.RETRYABLE, f"internal: {type(exc).__name__}")
            result = AttemptResult(
                failed, datetime.now(UTC), 0.0, error=f"{type(exc).__name__}: channel error"
            )
        return self._decide(message, endpoint, result)

    def _decide(
        self, message: Claimed, endpoint: Endpoint, result: AttemptResult
    ) -> list[Finished]:
        """What becomes of the message (and its riders) after this attempt."""
        classification = result.classification
        self._note_health(endpoint, classification, message.probe)
        now = datetime.now(UTC)
        finished: list[Finished] = []
        for m in (message, *message.riders):
            decision = decide(
                classification,
                attempt=m.attempts + 1,
                first_attempt_at=m.first_attempt_at,
                now=now,
                policy=endpoint.policy,
                rng=self._rng,
            )
            reason = decision.reason
            if m is not message:
                reason = f"{reason} (one request with {message.id}: coalesced)"
            elif message.riders:
                reason = f"{reason} (coalesced {len(message.riders) + 1} messages)"
            if decision.outcome is not Outcome.DELIVERED:
                log.info(
                    "attempt %d of message %s to %s failed (status %s, %s): %s",
                    m.attempts + 1,
                    m.id,
                    endpoint.name,
                    result.status_code,
                    result.error,
                    reason,
                    extra={
                        "message_id": str(m.id),
                        "endpoint": endpoint.name,
                        "attempt": m.attempts + 1,
                        "status": result.status_code,
                        "error": result.error,
                        "decision": decision.outcome.value,
                        "reason": reason,
                    },
                )
            done = Finished(
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
            )
            if result.new_payloads and decision.outcome is Outcome.RETRYING:
                done.new_payload = result.new_payloads.get(m.id)
            if self.metrics is not None:
                self.metrics.attempt(endpoint.name, decision.outcome.value, result.duration_ms)
            finished.append(done)
        return finished

    def _note_health(self, endpoint: Endpoint, classification: Classification, probe: bool) -> None:
        """Fold one attempt into this worker's next report on its endpoint."""
        report = self._health.get(endpoint.name)
        if report is None:
            report = self._health[endpoint.name] = HealthReport(endpoint.name)
        if classification.health is Health.OK:
            report.ok += 1
            report.failures_since_ok = 0
        elif classification.health is Health.FAILING:
            report.failures += 1
            report.failures_since_ok += 1
            report.last_failure = classification.reason
            self._watch.add(endpoint.name)
        if classification.throttle:
            report.throttle = max(report.throttle or 0.0, classification.throttle)
        if classification.pause:
            report.pause = classification.pause
        if probe or endpoint.unhealthy:
            self._watch.add(endpoint.name)

    def _due_reports(self) -> list[HealthReport]:
        now = time.monotonic()
        due = [
            report
            for name, report in self._health.items()
            if report.needed()
            or name in self._watch
            or now - self._health_sent.get(name, -1e9) >= self.config.health_report_interval
        ]
        for report in due:
            del self._health[report.endpoint]
            self._health_sent[report.endpoint] = now
            if not report.failures:
                self._watch.discard(report.endpoint)
        return due

    def _record(self, finished: Finished) -> None:
        self._results.append(finished)
        if finished.outcome is Outcome.DELIVERED:
            self.delivered += 1
        if len(self._results) >= self.config.flush_max:
            self._flush_now.set()

    # -- recording ---------------------------------------------------------

    async def _flush_loop(self) -> None:
        failures = 0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush_now.wait(), self.config.flush_interval)
            self._flush_now.clear()
            if self._results:
                batch, self._results = self._results, []
                try:
                    self.recorded += await self.store.finish(batch)
                    failures = 0
                except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as exc:
                    # Not transient: retrying would block every later result.
                    # Dropped, the leases expire and the reaper retries them.
                    log.error(
                        "could not record %d result(s) (%s: %s); they will be retried",
                        len(batch),
                        type(exc).__name__,
                        exc,
                    )
                    continue
                except _DB_ERRORS as exc:
                    # Keep them: retried on the next round. If the outage
                    # outlives the leases, the reaper records them instead.
                    self._results[:0] = batch
                    failures += 1
                    await self._db_backoff("record results", exc, failures)
                    continue
            reports = self._due_reports()
            if reports:
                try:
                    await self.store.report_health(reports)
                except _DB_ERRORS as exc:  # the next failures report again
                    log.warning("could not report endpoint health (%s)", type(exc).__name__)
            finished = self._stopped_claiming.is_set() and self._busy == 0 and self._queue.empty()
            if finished and not self._results:
                return

    # -- reaping -----------------------------------------------------------

    async def _reap_loop(self) -> None:
        failures = 0
        while True:
            await asyncio.sleep(self.config.reap_interval * (0.5 + self._rng.random()))
            try:
                reaped = await self.store.reap(self.config.flush_max)
                failures = 0
            except _DB_ERRORS as exc:
                failures += 1
                await self._db_backoff("reap", exc, failures)
                continue
            if reaped:
                log.warning("reaped %d message(s) whose lease expired", len(reaped))
                for message in reaped:
                    lost = self._lost_attempt(message)
                    if self.metrics is not None:
                        self.metrics.attempt(message.endpoint, lost.outcome.value, 0.0)
                    self._results.append(lost)
                self._flush_now.set()

    async def _vacuum_loop(self) -> None:
        """Keep the hot table's dead rows down even where autovacuum is off or behind,
        and prune what is past retention now and then."""
        next_prune = time.monotonic() + self.config.prune_interval * self._rng.random()
        while True:
            await asyncio.sleep(self.config.vacuum_check_interval * (0.5 + self._rng.random()))
            if time.monotonic() >= next_prune:
                next_prune = time.monotonic() + self.config.prune_interval
                try:
                    pruned = await self.store.prune(self.config.prune_batches)
                    if pruned is not None and pruned.total:
                        log.info(
                            "pruned %d ledger row(s), %d dead letter(s), %d idempotency key(s)",
                            pruned.attempts,
                            pruned.dead_letters,
                            pruned.idempotency_keys,
                        )
                except _DB_ERRORS as exc:
                    log.warning("retention run failed (%s)", type(exc).__name__)
            try:
                await self.store.prune_key_limits()
                if await self.store.vacuum_if_needed(self.config.vacuum_min_dead):
                    log.info("vacuumed outbox.messages")
            except asyncpg.InsufficientPrivilegeError:
                log.warning(
                    "cannot VACUUM outbox.messages (not its owner); leaving it to autovacuum"
                )
                return
            except _DB_ERRORS as exc:
                log.warning("vacuum check failed (%s)", type(exc).__name__)

    def _lost_attempt(self, message: Reaped) -> Finished:
        reason = (
            f"lease expired at {message.expired_at.isoformat()}: worker "
            f"{message.lost_worker or '?'} stopped answering mid-attempt"
        )
        endpoint = self._endpoints.get(message.endpoint)
        now = datetime.now(UTC)
        if endpoint is None:
            return Finished(
                message.id,
                message.token,
                Outcome.DEAD,
                message.expired_at,
                0.0,
                f"{reason}; endpoint {message.endpoint!r} no longer exists",
                error="LeaseExpired",
            )
        decision = decide(
            Classification(Verdict.RETRYABLE, reason),
            attempt=message.attempts + 1,
            first_attempt_at=message.first_attempt_at or now,
            now=now,
            policy=endpoint.policy,
            rng=self._rng,
        )
        outcome = (
            Outcome.LEASE_EXPIRED if decision.outcome is Outcome.RETRYING else decision.outcome
        )
        return Finished(
            message.id,
            message.token,
            outcome,
            message.expired_at,
            0.0,
            decision.reason,
            error="LeaseExpired: no result was recorded",
            retry_at=decision.retry_at,
        )

    # -- helpers -----------------------------------------------------------

    async def _refresh_endpoints(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._endpoints_loaded < self.config.endpoint_refresh:
            return
        rows = await self.store.endpoints()
        self._endpoints = {
            r["name"]: Endpoint.from_row(
                r, base=self.config.backoff_base, cap=self.config.backoff_cap
            )
            for r in rows
        }
        self._endpoints_loaded = now
        for endpoint in self._endpoints.values():
            if endpoint.timeout >= self.config.lease_seconds and endpoint.name not in self._warned:
                self._warned.add(endpoint.name)
                log.warning(
                    "endpoint %s has a %gs timeout, not shorter than the %gs lease: a slow "
                    "delivery may be reaped and sent twice; raise --lease-seconds",
                    endpoint.name,
                    endpoint.timeout,
                    self.config.lease_seconds,
                )

    async def _db_backoff(
        self, what: str, exc: BaseException, failures: int, *, interruptible: bool = False
    ) -> None:
        delay = min(5.0, 0.1 * 2**failures) * (0.5 + self._rng.random())
        if isinstance(exc, asyncpg.InternalClientError):
            # The connection's protocol state is unknown: let the pool replace
            # every connection rather than hand this one out again.
            with contextlib.suppress(Exception):
                await self.store.pool.expire_connections()
        log.warning(
            "database error during %s (%s: %s); retrying in %.1fs",
            what,
            type(exc).__name__,
            str(exc).splitlines()[0] if str(exc) else "",
            delay,
        )
        if not interruptible:
            await asyncio.sleep(delay)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay)


def _with_riders(claimed: list[Claimed]) -> list[Claimed]:
    """The messages to deliver, each carrying those that ride with it (in key order)."""
    by_id = {m.id: m for m in claimed}
    leads: list[Claimed] = []
    for m in claimed:
        lead = by_id.get(m.lead) if m.lead is not None else None
        if lead is None:
            leads.append(m)
        else:
            lead.riders.append(m)
    for lead in leads:
        if len(lead.riders) > 1:
            lead.riders.sort(key=lambda r: r.seq)
    return leads
