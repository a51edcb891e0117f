"""Parts of the chaos test (tests/e2e/test_chaos.py): its endpoints, the receiver's
fault script, producers that roll back a share of their transactions, worker
processes with short leases, and the reconciliation of what the producers
committed, what the ledger says and what the receiver saw."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from support import FAST_RETRIES, WorkerProcess, worker_route

import outbox
from outbox.devtools.processes import spawn_worker
from outbox.devtools.receiver import OK, Action, Received, Receiver

# -- the destinations -----------------------------------------------------------------

TIMEOUT_MS = 1000  # every endpoint's timeout; a hang lasts HANG_SECONDS, well past it
HANG_SECONDS = 3.0
FRAGILE_MAX_ATTEMPTS = 3
REJECT_SHARE = 0.01  # of "orders" messages: always answered 400 (dead at once, key released)
DOOMED_SHARE = 0.05  # of "fragile" messages: always answered 500 (dead after 3 attempts)


@dataclass(frozen=True, slots=True)
class Destination:
    name: str
    ordered: bool
    max_attempts: int
    faulty: bool  # random 500s, 429s, hangs and resets
    weight: float  # share of the messages


DESTINATIONS = (
    Destination("orders", ordered=True, max_attempts=1000, faulty=True, weight=0.30),
    Destination("accounts", ordered=True, max_attempts=1000, faulty=True, weight=0.25),
    Destination("events", ordered=False, max_attempts=1000, faulty=True, weight=0.30),
    Destination(
        "fragile", ordered=False, max_attempts=FRAGILE_MAX_ATTEMPTS, faulty=False, weight=0.15
    ),
)
BY_NAME = {d.name: d for d in DESTINATIONS}


async def add_destinations(conn: asyncpg.Connection, rx: Receiver) -> None:
    """One webhook endpoint per destination, on its own path of the receiver. The
    breaker is out of the way (random faults would open it now and then and park
    an endpoint for its cool-down); order releases on a dead letter."""
    for d in DESTINATIONS:
        await conn.execute(
            "INSERT INTO outbox.endpoints (name, channel, url, ordered, max_attempts, timeout_ms,"
            " breaker_failures, on_dead, allow_networks)"
            " VALUES ($1, 'webhook', $2, $3, $4, $5, 1000000, 'release', '{127.0.0.0/8}')",
            d.name,
            rx.url(f"/{d.name}"),
            d.ordered,
            d.max_attempts,
            TIMEOUT_MS,
        )


# -- the receiver ---------------------------------------------------------------------

FAULTS = ("500", "429", "hang", "reset")


def fault_of(action: Action) -> str | None:
    """Which injected fault an answer was (None for a plain answer)."""
    if action.reset:
        return "reset"
    if action.delay >= HANG_SECONDS:
        return "hang"
    if action.status == 429:
        return "429"
    if action.status == 500 and action.body == "chaos":
        return "500"
    return None


def is_2xx(record: Received) -> bool:
    """Did the receiver answer this request with a 2xx (whether the client saw it or not)?"""
    a = record.action
    return 200 <= a.status < 300 and not a.reset and a.delay < HANG_SECONDS


class ChaosReceiver(Receiver):
    """Answers by the message's fate (its payload) and, on faulty paths, with random
    faults: 500s, 429 with ``Retry-After: 1`` (at most one per path every few
    seconds: each throttles the whole endpoint for that second), hangs past the
    endpoint's timeout, and connection resets."""

    def __init__(
        self,
        seed: int,
        *,
        p500: float = 0.04,
        p_hang: float = 0.015,
        p_reset: float = 0.03,
        p429: float = 0.02,
        gap429: float = 5.0,
    ) -> None:
        super().__init__()
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self._p = (p500, p_hang, p_reset, p429)
        self._gap429 = gap429
        self._last429: dict[str, float] = defaultdict(lambda: -1e9)

    def respond(self, record: Received) -> Action:
        fate = json.loads(record.body).get("fate")
        if fate == "reject":
            return Action(400, body="rejected on purpose")
        if fate == "doomed":
            return Action(500, body="doomed")
        if not BY_NAME[record.path.strip("/")].faulty:
            return OK
        p500, p_hang, p_reset, p429 = self._p
        with self._rng_lock:
            roll = self._rng.random()
            if roll < p500:
                return Action(500, body="chaos")
            roll -= p500
            if roll < p_hang:
                return Action(503, delay=HANG_SECONDS, body="hung")
            roll -= p_hang
            if roll < p_reset:
                return Action(reset=True)
            roll -= p_reset
            now = time.monotonic()
            if roll < p429 and now - self._last429[record.path] >= self._gap429:
                self._last429[record.path] = now
                return Action(429, headers={"Retry-After": "1"}, body="slow down")
        return OK


# -- the producers --------------------------------------------------------------------


class IntendedRollbackError(Exception):
    """Raised inside a producer's transaction to roll it back on purpose."""


@dataclass(slots=True)
class Planned:
    """One message a producer enqueued (its transaction may not have committed)."""

    id: str
    txn: int
    endpoint: str
    key: str
    n: int  # the producer's counter: enqueue order within each of its keys
    fate: str | None  # "reject" (400), "doomed" (always 500) or None


@dataclass(slots=True)
class Production:
    """What every producer did: transactions by intent, and each message."""

    messages: dict[str, Planned] = field(default_factory=dict)
    intended_rollbacks: set[int] = field(default_factory=set)
    errors: Counter[str] = field(default_factory=Counter)  # transactions broken by the database
    broken: set[int] = field(default_factory=set)  # their ids: committed only if the order row is
    queued: int = 0  # messages in transactions meant to commit


async def _connect(url: str, stop: asyncio.Event) -> asyncpg.Connection | None:
    """A connection, retrying while the server restarts (None once stopped)."""
    while not stop.is_set():
        try:
            return await asyncpg.connect(url, timeout=5)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            await asyncio.sleep(0.2)
    return None


async def produce(
    url: str,
    producer: int,
    *,
    target: int,
    seconds: float,
    rollback_share: float,
    keys: int,
    production: Production,
    stop: asyncio.Event,
) -> None:
    """Business transactions, each an order row and 1-4 messages, until ``target``
    messages were queued in transactions meant to commit; paced over ``seconds``.

    A share of the transactions rolls back on purpose after enqueueing. One the
    database breaks (the PostgreSQL restart) is in doubt if it broke at COMMIT:
    whether it committed is read back from the business table at the end.
    """
    rng = random.Random(1000 + producer)
    counter = 0
    queued = 0
    started = time.monotonic()
    conn = await _connect(url, stop)
    try:
        while conn is not None and queued < target and not stop.is_set():
            txn = producer * 10_000_000 + counter
            intent_rollback = rng.random() < rollback_share
            batch: list[Planned] = []
            for _ in range(rng.randint(1, 4)):
                counter += 1
                d = rng.choices(DESTINATIONS, weights=[d.weight for d in DESTINATIONS])[0]
                fate = None
                if d.name == "orders" and rng.random() < REJECT_SHARE:
                    fate = "reject"
                elif d.name == "fragile" and rng.random() < DOOMED_SHARE:
                    fate = "doomed"
                key = f"p{producer}-k{rng.randrange(keys)}"
                batch.append(Planned("", txn, d.name, key, counter, fate))
            try:
                async with conn.transaction():
                    await conn.execute(
                        "INSERT INTO chaos_orders (txn, items) VALUES ($1, $2)", txn, len(batch)
                    )
                    payloads = [{"txn": txn, "key": p.key, "n": p.n, "fate": p.fate} for p in batch]
                    if len(batch) == 1:
                        ids = [
                            await outbox.enqueue(
                                conn, batch[0].endpoint, payloads[0], key=batch[0].key
                            )
                        ]
                    else:
                        ids = await outbox.enqueue_many(
                            conn,
                            [
                                {"endpoint": p.endpoint, "payload": pl, "key": p.key}
                                for p, pl in zip(batch, payloads, strict=True)
                            ],
                        )
                    for p, i in zip(batch, ids, strict=True):
                        p.id = str(i)
                        production.messages[p.id] = p
                    if intent_rollback:
                        production.intended_rollbacks.add(txn)
                        raise IntendedRollbackError
            except IntendedRollbackError:
                pass
            except Exception as exc:  # the restart: reconnect and carry on
                production.errors[type(exc).__name__] += 1
                production.broken.add(txn)
                with contextlib.suppress(Exception):
                    await conn.close(timeout=1)
                conn = await _connect(url, stop)
                continue
            if not intent_rollback:
                queued += len(batch)
                production.queued += len(batch)
            # Pace: no further ahead than the share of the time gone by.
            ahead = queued / target - (time.monotonic() - started) / seconds
            if ahead > 0:
                await asyncio.sleep(min(ahead * seconds, 0.5))
    finally:
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close(timeout=1)


# -- the fleet ------------------------------------------------------------------------

LEASE_SECONDS = 5.0
WORKER_ENV = {**FAST_RETRIES, "OUTBOX_REAP_INTERVAL": "1", "OUTBOX_LOG_LEVEL": "WARNING"}


class ChaosWorker(WorkerProcess):
    """``outbox worker`` with short leases and a fast reaper (killed workers' messages
    come back within seconds); cleaned up by the e2e ``workers`` fixture."""

    def __init__(self, url: str, *, log_dir: Path) -> None:
        self.log = log_dir / f"worker-{time.monotonic_ns()}.log"
        with self.log.open("wb") as out:
            worker_url, routed = worker_route(url)
            self.proc = spawn_worker(
                worker_url,
                *("--concurrency", "30", "--batch-size", "50", "--poll-interval", "0.1"),
                *("--lease-seconds", str(LEASE_SECONDS)),
                log_level="WARNING",
                env={**WORKER_ENV, **routed},
                output=out,
            )
        self.started = time.time()
        self.killed: float | None = None


# -- reconciliation -------------------------------------------------------------------


@dataclass(slots=True)
class Ledger:
    """outbox.attempts and outbox.dead_letters, by message."""

    rows: dict[str, list[asyncpg.Record]]
    dead: dict[str, asyncpg.Record]

    @classmethod
    async def read(cls, conn: asyncpg.Connection) -> Ledger:
        rows: dict[str, list[asyncpg.Record]] = defaultdict(list)
        for r in await conn.fetch(
            "SELECT message_id::text AS id, endpoint, attempt, started_at, status_code, outcome,"
            " error, reason, worker_id FROM outbox.attempts ORDER BY message_id, attempt"
        ):
            rows[r["id"]].append(r)
        dead = {
            r["id"]: r
            for r in await conn.fetch(
                "SELECT message_id::text AS id, endpoint, attempts, reason, last_error"
                " FROM outbox.dead_letters"
            )
        }
        return cls(dict(rows), dead)

    def lost_leases(self, message_id: str) -> int:
        return sum(1 for r in self.rows.get(message_id, []) if lost_lease(r))

    def delivered(self) -> set[str]:
        return {
            i for i, rows in self.rows.items() if any(r["outcome"] == "delivered" for r in rows)
        }


def lost_lease(row: asyncpg.Record) -> bool:
    """A ledger row the reaper wrote for a worker that vanished mid-attempt: outcome
    lease_expired, or dead when that lost attempt was the last one allowed."""
    return bool(
        row["outcome"] == "lease_expired" or (row["error"] or "").startswith("LeaseExpired")
    )


def receipts_by_id(records: Iterable[Received]) -> dict[str, list[Received]]:
    out: dict[str, list[Received]] = defaultdict(list)
    for r in records:
        out[r.message_id or ""].append(r)
    return dict(out)


def order_violations(
    records: list[Received], production: Production, ordered: set[str]
) -> list[tuple[str, str, list[int]]]:
    """(endpoint, key, arrivals) for each key of an ordered endpoint whose requests
    did not arrive in enqueue order: every try of a message must arrive before any
    try of the key's next message (the notion of tests/e2e/test_fleet_limits.py)."""
    arrivals: dict[tuple[str, str], list[int]] = defaultdict(list)
    for r in sorted(records, key=lambda r: r.arrived):
        planned = production.messages.get(r.message_id or "")
        if planned is not None and planned.endpoint in ordered:
            arrivals[(planned.endpoint, planned.key)].append(planned.n)
    return [
        (endpoint, key, ns) for (endpoint, key), ns in sorted(arrivals.items()) if ns != sorted(ns)
    ]
