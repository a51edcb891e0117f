"""Endpoints as a worker sees them: their settings, their secrets resolved.

`Endpoint` holds every setting the declaration marks for workers
(`outbox.settings.endpoint`), the secrets resolved (``env:NAME`` is read at
load time) and the retry policy. `EndpointCache` keeps them in memory,
reloads them every few seconds, and at once when a message names one it has
not seen (a new endpoint).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from outbox.deliver.policy import RetryPolicy
from outbox.settings import endpoint as declared

log = logging.getLogger("outbox.worker")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An endpoint's delivery settings, as a worker caches them."""

    name: str
    channel: str
    policy: RetryPolicy
    # Every setting workers load, by name (url, headers, timeout, ... and any
    # setting a channel of its own declares).
    settings: Mapping[str, Any] = field(default_factory=dict)
    secret: str | None = None  # resolved (an env:NAME reference is read at load time)
    secret_problem: str | None = None  # why the secret could not be resolved, if it could not
    # During a secret rotation's grace period: the previous secret, resolved.
    previous_secret: str | None = None
    # The breaker's shared state was not clean when the cache was loaded.
    unhealthy: bool = False
    version: datetime | None = None  # its updated_at when loaded

    @property
    def url(self) -> str | None:
        value: str | None = self.settings.get("url")
        return value

    @property
    def headers(self) -> Mapping[str, str]:
        value: Mapping[str, str] = self.settings.get("headers") or {}
        return value

    @property
    def timeout(self) -> float:
        return float(self.settings["timeout"])

    @property
    def connect_timeout(self) -> float:
        return float(self.settings["connect_timeout"])

    @property
    def allow_networks(self) -> tuple[str, ...]:
        """Non-public address ranges this endpoint may reach (the SSRF guard's exceptions)."""
        value: tuple[str, ...] = self.settings.get("allow_networks") or ()
        return value

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every secret to sign with (current first) and to redact."""
        return tuple(s for s in (self.secret, self.previous_secret) if s)

    @classmethod
    def from_row(cls, row: Mapping[str, Any], *, base: float, cap: float) -> Endpoint:
        """From a row of the ``worker_endpoints`` query (an endpoint's columns and more)."""
        settings = {s.name: s.kind.from_db(row[s.column]) for s in declared.for_workers()}
        stored = settings.pop("secret", None)
        secret, problem = resolve_secret(stored.get_secret_value() if stored else None)
        previous, _ = resolve_secret(row["previous_secret_in_grace"])
        policy = RetryPolicy(
            settings["max_attempts"], settings["retry_window"], base=base, cap=max(cap, base)
        )
        return cls(
            name=row["name"],
            channel=row["channel"],
            policy=policy,
            settings=settings,
            secret=secret,
            secret_problem=problem,
            previous_secret=previous,
            unhealthy=bool(row["unhealthy"]),
            version=row.get("updated_at"),
        )


def resolve_secret(stored: str | None) -> tuple[str | None, str | None]:
    """(secret, problem): ``env:NAME`` reads $NAME; the problem never holds the value."""
    if stored is None or not stored.startswith("env:"):
        return stored, None
    name = stored[len("env:") :]
    value = os.environ.get(name)
    if not value:
        return None, f"the environment variable {name} named by the endpoint's secret is not set"
    return value, None


Load = Callable[[], Awaitable[Sequence[Any]]]


class EndpointCache:
    """Endpoints by name, reloaded every ``refresh`` seconds and on a miss."""

    def __init__(
        self, load: Load, *, base: float, cap: float, lease_seconds: float, refresh: float = 5.0
    ) -> None:
        self._load = load
        self._base, self._cap = base, cap
        self._lease = lease_seconds
        self._refresh = refresh
        self._endpoints: dict[str, Endpoint] = {}
        self._loaded = -1e9
        self._lock = asyncio.Lock()
        self._warned: set[str] = set()

    def all(self) -> list[Endpoint]:
        """Every endpoint as last loaded."""
        return list(self._endpoints.values())

    def cached(self, name: str) -> Endpoint | None:
        """The endpoint as last loaded, without reloading."""
        return self._endpoints.get(name)

    async def get(self, name: str) -> Endpoint | None:
        """The endpoint; a miss reloads first (it may be new). None: it does not exist."""
        endpoint = self._endpoints.get(name)
        if endpoint is None:
            async with self._lock:
                endpoint = self._endpoints.get(name)
                if endpoint is None:
                    await self.refresh(force=True)
                    endpoint = self._endpoints.get(name)
        return endpoint

    async def refresh(self, *, force: bool = False) -> None:
        """Reload if the last load is older than ``refresh`` seconds (or ``force``)."""
        now = time.monotonic()
        if not force and now - self._loaded < self._refresh:
            return
        rows = await self._load()
        self._endpoints = {
            r["name"]: Endpoint.from_row(r, base=self._base, cap=self._cap) for r in rows
        }
        self._loaded = now
        for endpoint in self._endpoints.values():
            self._warn_if_slower_than_lease(endpoint)

    def _warn_if_slower_than_lease(self, endpoint: Endpoint) -> None:
        if endpoint.timeout >= self._lease and endpoint.name not in self._warned:
            self._warned.add(endpoint.name)
            log.warning(
                "endpoint %s has a %gs timeout, not shorter than the %gs lease: a slow "
                "delivery may be reaped and sent twice; raise --lease-seconds",
                endpoint.name,
                endpoint.timeout,
                self._lease,
            )
