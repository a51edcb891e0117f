"""Chaos: break everything on purpose while tens of thousands of messages flow, then count.

Four producers run business transactions (an order row and 1-4 messages, by
``outbox.enqueue`` / ``outbox.enqueue_many``) and roll back a tenth of them on
purpose. Four webhook endpoints, two of them ordered per key, deliver to a
receiver that answers at random with 500s, 429 with ``Retry-After: 1``, hangs
past the endpoint's 1 s timeout and connection resets; one endpoint rejects a
known 1% of its messages with a 400 and one (``max_attempts = 3``) answers a
known 5% with 500s every time. Three ``outbox worker`` processes deliver; every
few seconds one of them (in turn) is killed with SIGKILL and replaced. Once,
mid-run, PostgreSQL itself is restarted: a server this test starts and owns
(embedded, under /tmp), never the shared test server.

At the end, with nothing left pending, it checks that:

* every committed message was delivered at least once or dead-lettered exactly
  as the policy says (a 400 at once; the doomed ones after exactly 3 attempts);
  lost = 0;
* no message of a rolled-back transaction reached the receiver, the ledger or
  the dead letters (a transaction broken by the restart at COMMIT counts as
  committed if and only if its order row exists);
* the ledger (``outbox.attempts``) agrees with what the receiver saw: every
  attempt a worker recorded with a status arrived and got that status (one
  recorded without an answer, a timeout, might not have arrived), every request the
  ledger has no row for was sent by a worker that lost its lease (a ledger
  ``lease_expired`` row), and every lease expiry belongs to a killed worker or
  the PostgreSQL restart;
* duplicates (a message answered 2xx more than once) come only from those lease
  expiries or from a client-side timeout on an answer the receiver did give;
* per-key order held on the ordered endpoints: every try of a message arrived
  before any try of its key's next message;
* the workers that lived through the restart reconnected and delivered again.

The figures are printed and, when ``OUTBOX_CHAOS_REPORT`` names a file,
written there as JSON.

Run it alone: ``pytest -m chaos -s``. The CI setting (20,000 messages produced
over 90 s) takes about two minutes on two cores (two and a half with a core busy).
A soak run, for example::

    OUTBOX_CHAOS_MESSAGES=200000 OUTBOX_CHAOS_SECONDS=600 \\
    OUTBOX_CHAOS_REPORT=chaos.json .venv/bin/python -m pytest -m chaos -s

Settings: ``OUTBOX_CHAOS_MESSAGES`` (messages in transactions meant to commit,
default 20000), ``OUTBOX_CHAOS_SECONDS`` (production time, default 90),
``OUTBOX_CHAOS_KILL_EVERY`` (seconds between SIGKILLs, default 3),
``OUTBOX_CHAOS_SEED`` (the receiver's faults, default 7),
``OUTBOX_CHAOS_REPORT`` (a JSON file for the figures). The drain after
production is bounded by 120 s plus a second per 1,000 messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import support
from chaos_support import (
    BY_NAME,
    DESTINATIONS,
    FAULTS,
    LEASE_SECONDS,
    ChaosReceiver,
    ChaosWorker,
    Ledger,
    Production,
    add_destinations,
    fault_of,
    is_2xx,
    lost_lease,
    order_violations,
    produce,
    receipts_by_id,
)
from pgbouncer import PgBouncer
from support import WorkerProcess

from outbox.db import migrate
from outbox.devtools.embedded import EmbeddedPostgres

MESSAGES = int(os.environ.get("OUTBOX_CHAOS_MESSAGES", "20000"))
SECONDS = float(os.environ.get("OUTBOX_CHAOS_SECONDS", "90"))
KILL_EVERY = float(os.environ.get("OUTBOX_CHAOS_KILL_EVERY", "3"))
SEED = int(os.environ.get("OUTBOX_CHAOS_SEED", "7"))
REPORT = os.environ.get("OUTBOX_CHAOS_REPORT")
PRODUCERS = 4
KEYS_PER_PRODUCER = 50
ROLLBACK_SHARE = 0.10
FLEET = 3
DRAIN_SECONDS = 120 + MESSAGES / 1000
QUIET_AFTER_RESTART = 10.0  # no kills for this long: the survivors must show they reconnected

pytestmark = [pytest.mark.e2e, pytest.mark.chaos]


@pytest.fixture
def own_server() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL server of this test's own, which it may restart."""
    data = Path(tempfile.mkdtemp(prefix="outbox-chaos-", dir="/tmp"))
    server = EmbeddedPostgres(data / "pgdata")
    server.start()
    # The suite's pass through PgBouncer: the workers reach this server through one too.
    bouncer = PgBouncer(server.url()) if os.environ.get("OUTBOX_TEST_THROUGH_PGBOUNCER") else None
    if bouncer is not None:
        support.POOLER.append(bouncer)
    try:
        yield server
    finally:
        try:
            if bouncer is not None:
                support.POOLER.remove(bouncer)
                bouncer.stop()
            server.stop("immediate")
        finally:
            shutil.rmtree(data, ignore_errors=True)


async def _fetchval(url: str, query: str) -> Any:
    """One value on a fresh connection (the server may be restarting: retried)."""
    for _ in range(100):
        try:
            conn = await asyncpg.connect(url, timeout=5)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            await asyncio.sleep(0.2)
            continue
        try:
            return await conn.fetchval(query)
        finally:
            await conn.close()
    raise AssertionError(f"cannot reach {url}")


class Chaos:
    """Kills a worker every few seconds, in turn, and restarts PostgreSQL once."""

    def __init__(
        self, server: EmbeddedPostgres, fleet: list[ChaosWorker], everyone: list[WorkerProcess]
    ) -> None:
        self.server = server
        self.url = server.url()
        self.fleet = fleet
        self.everyone = everyone
        self.kills = 0
        self.restarts = 0
        self.restart_window: tuple[float, float] | None = None
        self.lived_through_restart: list[ChaosWorker] = []
        self.died_on_their_own: list[str] = []
        self.done = asyncio.Event()

    async def run(self, log_dir: Path, restart_after: float) -> None:
        start = time.monotonic()
        next_kill = start + KILL_EVERY
        victim = 0
        while not self.done.is_set():
            now = time.monotonic()
            if not self.restarts and now - start >= restart_after:
                began = time.time()
                await asyncio.to_thread(self.server.restart)
                self.restart_window = (began, time.time())
                self.restarts += 1
                self.lived_through_restart = [w for w in self.fleet if w.proc.poll() is None]
                next_kill = time.monotonic() + QUIET_AFTER_RESTART
            elif now >= next_kill:
                doomed = self.fleet[victim]
                if doomed.proc.poll() is not None:  # it died, and not by our hand
                    self.died_on_their_own.append(doomed.output()[-3000:])
                doomed.signal(signal.SIGKILL)
                await asyncio.to_thread(doomed.wait, 10)
                doomed.killed = time.time()
                self.kills += 1
                fresh = ChaosWorker(self.url, log_dir=log_dir)
                self.everyone.append(fresh)
                self.fleet[victim] = fresh
                victim = (victim + 1) % len(self.fleet)
                next_kill += KILL_EVERY
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.done.wait(), 0.05)


_LOST_WORKER = re.compile(r"worker (\S+) stopped answering")


@pytest.mark.timeout(int(SECONDS * 2 + DRAIN_SECONDS + 240))
async def test_chaos_nothing_committed_is_lost_nothing_rolled_back_is_sent(
    own_server: EmbeddedPostgres, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    began = time.monotonic()
    url = own_server.url()
    await asyncio.to_thread(migrate.upgrade, url)
    production = Production()
    with ChaosReceiver(SEED) as rx:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("CREATE TABLE chaos_orders (txn bigint PRIMARY KEY, items int)")
            await add_destinations(conn, rx)
        finally:
            await conn.close()

        fleet = [ChaosWorker(url, log_dir=tmp_path) for _ in range(FLEET)]
        workers.extend(fleet)
        chaos = Chaos(own_server, fleet, workers)
        stop = asyncio.Event()
        producing = time.monotonic()
        chaos_task = asyncio.create_task(chaos.run(tmp_path, restart_after=SECONDS * 0.4))
        producers = [
            asyncio.create_task(
                produce(
                    url,
                    p,
                    target=MESSAGES // PRODUCERS,
                    seconds=SECONDS,
                    rollback_share=ROLLBACK_SHARE,
                    keys=KEYS_PER_PRODUCER,
                    production=production,
                    stop=stop,
                )
            )
            for p in range(PRODUCERS)
        ]
        try:
            async with asyncio.timeout(SECONDS * 2 + 60):
                await asyncio.gather(*producers)
        finally:
            stop.set()
            chaos.done.set()
            await chaos_task
        produced = time.monotonic()

        deadline = time.monotonic() + DRAIN_SECONDS
        left = -1
        while time.monotonic() < deadline:
            left = await _fetchval(url, "SELECT count(*) FROM outbox.messages")
            if left == 0:
                break
            await asyncio.sleep(0.5)
        drained = time.monotonic()
        for w in fleet:  # only our kills may have ended a worker
            if w.proc.poll() is not None:
                chaos.died_on_their_own.append(w.output()[-3000:])
            w.signal(signal.SIGTERM)
        exits = [await asyncio.to_thread(w.wait, 30) for w in fleet]
        records = rx.snapshot()
    assert chaos.died_on_their_own == [], chaos.died_on_their_own[0]
    assert exits == [0] * FLEET, [w.output()[-3000:] for w in fleet]
    assert left == 0, f"{left} message(s) still pending after {DRAIN_SECONDS:.0f}s of draining"

    conn = await asyncpg.connect(url)
    try:
        committed_txns = {r["txn"] for r in await conn.fetch("SELECT txn FROM chaos_orders")}
        ledger = await Ledger.read(conn)
        stats = await conn.fetch(
            "SELECT endpoint, pending, scheduled, in_flight, dead FROM outbox.stats"
        )
    finally:
        await conn.close()
    elapsed = time.monotonic() - began

    # -- committed or not: the business table says -------------------------------------
    messages = production.messages
    committed = {i for i, p in messages.items() if p.txn in committed_txns}
    rolled_back = set(messages) - committed
    orphan_orders = committed_txns - {p.txn for p in messages.values()}
    assert not (committed_txns & production.intended_rollbacks)
    assert not orphan_orders  # an order row whose messages were never enqueued: not atomic
    by_id = receipts_by_id(records)
    assert set(by_id) <= set(messages), "the receiver got a message no producer enqueued"

    # -- nothing rolled back was sent; nothing committed was lost ------------------------
    sent_rolled_back = rolled_back & (set(by_id) | set(ledger.rows) | set(ledger.dead))
    assert not sent_rolled_back, sorted(sent_rolled_back)[:5]
    delivered = ledger.delivered()
    dead = set(ledger.dead)
    assert not (delivered & dead)
    lost = committed - delivered - dead
    assert not lost, sorted(lost)[:5]

    # -- dead letters exactly as the policy says -----------------------------------------
    expected_dead = {i for i in committed if messages[i].fate is not None}
    assert expected_dead <= dead, sorted(expected_dead - dead)[:5]
    dead_by_max_attempts = dead_after_2xx = 0
    for i in dead:
        rows = ledger.rows[i]
        outcomes = [r["outcome"] for r in rows]
        assert ledger.dead[i]["attempts"] == len(rows), (i, ledger.dead[i], outcomes)
        assert outcomes[-1] == "dead", (i, outcomes)
        assert set(outcomes[:-1]) <= {"retrying", "lease_expired"}, (i, outcomes)
        fate = messages[i].fate
        if fate == "reject":  # permanent at once (earlier rows only lost leases)
            assert rows[-1]["status_code"] == 400, (i, outcomes)
            assert set(outcomes[:-1]) <= {"lease_expired"}, (i, outcomes)
        else:  # retried until max_attempts: the doomed ones, or 3 lost leases on "fragile"
            assert len(rows) == BY_NAME[messages[i].endpoint].max_attempts, (i, outcomes)
            # Unplanned: a "fragile" message whose attempts all failed on the worker's side
            # (lost leases, or client timeouts on answers the receiver gave late).
            dead_by_max_attempts += fate is None
            dead_after_2xx += any(is_2xx(r) for r in by_id.get(i, []))

    # -- the ledger agrees with what the receiver saw ------------------------------------
    disagreements: list[tuple[str, str]] = []
    unseen = 0
    unseen_errors = Counter[str]()
    for i in committed:
        rows = ledger.rows.get(i, [])
        recs = by_id.get(i, [])
        if [r["attempt"] for r in rows] != list(range(1, len(rows) + 1)):
            disagreements.append((i, "attempt numbers not 1..n"))
        requests = [r for r in rows if not lost_lease(r)]
        lease_lost = len(rows) - len(requests)
        if len(recs) < len(requests):
            # Only an attempt that got no answer may be missing at the receiver: a client
            # timeout before the receiver's (starved) thread read the request, say.
            no_answer = [r for r in requests if r["status_code"] is None]
            if len(requests) - len(recs) > len(no_answer):
                disagreements.append((i, f"{len(requests)} recorded, {len(recs)} arrived"))
            unseen += len(requests) - len(recs)
            unseen_errors.update((r["error"] or "")[:60] for r in no_answer)
        if len(recs) - len(requests) > lease_lost:
            disagreements.append((i, f"{len(recs) - len(requests)} arrivals not in the ledger"))
        answered = Counter(
            r.action.status for r in recs if not r.action.reset and fault_of(r.action) != "hang"
        )
        recorded = Counter(r["status_code"] for r in requests if r["status_code"] is not None)
        if recorded - answered:
            disagreements.append((i, f"statuses recorded {recorded}, answered {answered}"))
        if i in delivered and not any(is_2xx(r) for r in recs):
            disagreements.append((i, "delivered with no 2xx at the receiver"))
    assert not disagreements, disagreements[:10]

    # -- every lease expiry: a killed worker, or the PostgreSQL restart -------------------
    killed_ids = {f":{w.proc.pid}" for w in workers if isinstance(w, ChaosWorker) and w.killed}
    assert chaos.restart_window is not None
    restart_from, restart_to = chaos.restart_window
    lease_expiries = Counter[str]()
    for rows in ledger.rows.values():
        for r in rows:
            if not lost_lease(r):
                continue
            match = _LOST_WORKER.search(r["reason"] or "")
            lost_worker = match.group(1) if match else ""
            expired = r["started_at"].timestamp()
            if any(lost_worker.endswith(k) for k in killed_ids):
                lease_expiries["killed worker"] += 1
            elif restart_from <= expired <= restart_to + LEASE_SECONDS + 5:
                lease_expiries["restart"] += 1
            else:
                lease_expiries[f"unexplained ({lost_worker}, {r['started_at']})"] += 1
    unexplained = [k for k in lease_expiries if k.startswith("unexplained")]
    assert not unexplained, unexplained[:5]

    # -- duplicates: from lost leases or a client-side timeout only ------------------------
    duplicates = Counter[str]()
    for i in committed:
        if sum(1 for r in by_id.get(i, []) if is_2xx(r)) < 2:
            continue
        if ledger.lost_leases(i):
            duplicates["lease expired"] += 1
        elif any(
            r["status_code"] is None and "timeout" in (r["error"] or "").lower()
            for r in ledger.rows.get(i, [])
        ):
            duplicates["client timeout"] += 1
        else:
            duplicates["unexplained"] += 1
    assert not duplicates["unexplained"], duplicates

    # -- per-key order on the ordered endpoints -------------------------------------------
    ordered = {d.name for d in DESTINATIONS if d.ordered}
    violations = order_violations(records, production, ordered)
    assert not violations, violations[:3]

    # -- the workers that lived through the restart delivered after it ---------------------
    after_restart = {
        r["worker_id"]
        for rows in ledger.rows.values()
        for r in rows
        if r["outcome"] == "delivered" and r["started_at"].timestamp() > restart_to
    }
    for w in chaos.lived_through_restart:
        if w.killed is not None and w.killed < restart_to + QUIET_AFTER_RESTART:
            continue  # never: kills pause after the restart
        assert any(x.endswith(f":{w.proc.pid}") for x in after_restart), w.output()[-3000:]
    assert chaos.lived_through_restart

    # -- the views agree -----------------------------------------------------------------
    assert sum(r["pending"] + r["scheduled"] + r["in_flight"] for r in stats) == 0
    dead_by_endpoint = Counter(ledger.dead[i]["endpoint"] for i in dead)
    assert {r["endpoint"]: r["dead"] for r in stats} == {
        d.name: dead_by_endpoint[d.name] for d in DESTINATIONS
    }

    # -- the chaos really happened ----------------------------------------------------------
    faults = Counter(f for r in records if (f := fault_of(r.action)) is not None)
    assert all(faults[k] > 0 for k in FAULTS), faults
    assert chaos.kills >= 3
    assert chaos.restarts == 1
    assert production.intended_rollbacks
    assert sum(lease_expiries.values()) > 0  # kills landed mid-delivery

    figures = {
        "messages_committed": len(committed),
        "messages_rolled_back": len(rolled_back),
        "transactions_committed": len(committed_txns),
        "transactions_rolled_back_on_purpose": len(production.intended_rollbacks),
        "transactions_broken_by_the_restart": dict(production.errors),
        "of_which_committed": len(production.broken & committed_txns),
        "delivered": len(delivered & committed),
        "dead_lettered": len(dead),
        "dead_lettered_expected": len(expected_dead),
        "dead_lettered_unplanned": dead_by_max_attempts,
        "dead_lettered_after_a_2xx_the_worker_never_saw": dead_after_2xx,
        "lost": len(lost),
        "rolled_back_sent": len(sent_rolled_back),
        "duplicates": sum(duplicates.values()),
        "duplicates_by_cause": dict(duplicates),
        "lease_expiries": dict(lease_expiries),
        "order_violations": len(violations),
        "requests_received": len(records),
        "attempts_that_never_reached_the_receiver": unseen,
        "unanswered_attempt_errors_on_those": dict(unseen_errors),
        "ledger_rows": sum(len(rows) for rows in ledger.rows.values()),
        "faults": {k: faults[k] for k in FAULTS},
        "kills": chaos.kills,
        "postgres_restarts": chaos.restarts,
        "postgres_restart_seconds": round(restart_to - restart_from, 2),
        "setup_seconds": round(producing - began, 1),
        "producing_seconds": round(produced - producing, 1),
        "draining_seconds": round(drained - produced, 1),
        "elapsed_seconds": round(elapsed, 1),
        "workers_through_pgbouncer": bool(os.environ.get("OUTBOX_TEST_THROUGH_PGBOUNCER")),
    }
    print("\nchaos figures:\n" + json.dumps(figures, indent=2))
    if REPORT:
        await asyncio.to_thread(Path(REPORT).write_text, json.dumps(figures, indent=2) + "\n")
