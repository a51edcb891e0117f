"""Prometheus metrics and health endpoints for workers (``--metrics-port``).

One worker process serves ``/metrics``, ``/healthz`` (the process is alive
and its database answers) and ``/readyz`` (it is claiming) itself, from its
event loop (`outbox.deliver.probes`). Under ``--processes N`` the children
write their metrics to files in a directory the supervisor owns
(prometheus-client's multiprocess mode)
and the supervisor serves the sum of them on the one port; its ``/healthz``
and ``/readyz`` answer for all children.

What is counted (every series also carries ``database``, the name of the
database the process serves: see `outbox.settings.databases`):

* ``outbox_attempts_total{endpoint, outcome}`` -- every recorded attempt
  (outcome: delivered, retrying, dead, lease_expired);
* ``outbox_dead_lettered_total{endpoint}``;
* ``outbox_attempt_duration_seconds{endpoint}`` -- a histogram;
* ``outbox_in_flight`` -- deliveries under way;
* ``outbox_claim_batch_size`` -- a histogram of messages per claim;
* ``outbox_oldest_pending_seconds{endpoint}``, ``outbox_pending{endpoint}``
  and ``outbox_circuit_open{endpoint}`` (1 when not delivering: circuit
  open/probing, paused, disabled or throttled) -- read from the database every
  few seconds.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from outbox.deliver.model import AttemptResult, Finished
from outbox.deliver.observe import MULTIPROC_ENV as MULTIPROC_ENV

_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


def multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


class Metrics:
    """The worker's instruments; cheap enough for the hot path (children per
    endpoint are cached, so no label lookup per message)."""

    def __init__(self, registry: CollectorRegistry | None = None, *, database: str = "") -> None:
        # In multiprocess mode metrics must live in the default registry (the
        # values go to files); otherwise a registry of our own keeps tests apart.
        kw: dict[str, Any] = {} if registry is None else {"registry": registry}
        self.database_name = database
        db = ["database"]
        self.attempts = Counter(
            "outbox_attempts", "Delivery attempts recorded.", [*db, "endpoint", "outcome"], **kw
        )
        self.dead = Counter(
            "outbox_dead_lettered", "Messages moved to dead_letters.", [*db, "endpoint"], **kw
        )
        self.duration = Histogram(
            "outbox_attempt_duration_seconds",
            "Time from sending a request to its answer (or failure).",
            [*db, "endpoint"],
            buckets=_DURATION_BUCKETS,
            **kw,
        )
        in_flight = Gauge(
            "outbox_in_flight", "Deliveries under way.", db, multiprocess_mode="livesum", **kw
        )
        self.in_flight = in_flight.labels(database)
        batch = Histogram(
            "outbox_claim_batch_size", "Messages per claim.", db, buckets=_BATCH_BUCKETS, **kw
        )
        self.batch = batch.labels(database)
        self.oldest_pending = Gauge(
            "outbox_oldest_pending_seconds",
            "How long the oldest due message has waited.",
            [*db, "endpoint"],
            multiprocess_mode="livemax",
            **kw,
        )
        self.pending = Gauge(
            "outbox_pending",
            "Due messages not yet claimed.",
            [*db, "endpoint"],
            multiprocess_mode="livemax",
            **kw,
        )
        self.held_back = Gauge(
            "outbox_circuit_open",
            "1 while an endpoint is not being delivered to (circuit open or probing, "
            "paused, disabled, throttled).",
            [*db, "endpoint"],
            multiprocess_mode="livemax",
            **kw,
        )
        held, dead_rows = _database_gauges(kw)
        self.vacuum_held_back, self.dead_rows = held.labels(database), dead_rows.labels(database)
        self._per_endpoint: dict[str, tuple[Any, Any]] = {}

    # -- the worker's Observer (outbox.deliver.observe) -------------------------------

    def claimed(self, n: int) -> None:
        if n:
            self.batch.observe(n)

    def delivering(self, delta: int) -> None:
        self.in_flight.inc(delta)

    def attempted(self, endpoint: str, finished: Finished, result: AttemptResult | None) -> None:
        self.attempt(endpoint, finished.outcome.value, finished.duration_ms)

    def attempt(self, endpoint: str, outcome: str, duration_ms: float) -> None:
        children = self._per_endpoint.get(endpoint)
        if children is None:
            db = self.database_name
            children = (self.duration.labels(db, endpoint), self.dead.labels(db, endpoint))
            self._per_endpoint[endpoint] = children
        self.attempts.labels(self.database_name, endpoint, outcome).inc()
        if duration_ms:
            children[0].observe(duration_ms / 1000)
        if outcome == "dead":
            children[1].inc()

    def endpoints(self, rows: list[dict[str, Any]]) -> None:
        """Refresh the database-derived gauges from ``outbox.stats`` rows."""
        for row in rows:
            name, db = row["endpoint"], self.database_name
            self.oldest_pending.labels(db, name).set(row["oldest_pending_seconds"] or 0)
            self.pending.labels(db, name).set(row["pending"] or 0)
            self.held_back.labels(db, name).set(0 if row.get("state") in (None, "active") else 1)

    def database(self, health: dict[str, Any] | None) -> None:
        """Refresh the vacuum watchdog's gauges from ``outbox.database_health``."""
        if health is not None:
            self.vacuum_held_back.set(health["holder_seconds"] or 0)
            self.dead_rows.set(health["dead_rows"] or 0)


def _database_gauges(kw: dict[str, Any]) -> tuple[Gauge, Gauge]:
    """The vacuum watchdog's gauges (from ``outbox.database_health``)."""
    return (
        Gauge(
            "outbox_vacuum_held_back_seconds",
            "How long the oldest transaction holding back the hot table's vacuum has been "
            "open (0: none; a replication slot has no age: see outbox.database_health).",
            multiprocess_mode="livemax",
            labelnames=["database"],
            **kw,
        ),
        Gauge(
            "outbox_hot_table_dead_rows",
            "Dead rows in outbox.messages, as the statistics collector estimates them.",
            labelnames=["database"],
            multiprocess_mode="livemax",
            **kw,
        ),
    )


def render_registry(registry: CollectorRegistry | None = None) -> tuple[bytes, str]:
    """The exposition text of ``registry`` (default: the process's own, or in
    multiprocess mode the sum of every process's files)."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

    if registry is None and multiprocess():
        from prometheus_client import multiprocess as mp

        registry = CollectorRegistry()
        mp.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry or REGISTRY), CONTENT_TYPE_LATEST
