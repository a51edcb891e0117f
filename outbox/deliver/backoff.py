"""How the worker's loops wait after a database error: a jittered, doubling
delay (100 ms up to 5 s), logged; after a protocol-level client error the
pool's connections are replaced first."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

import asyncpg

from outbox.deliver.store import Store

log = logging.getLogger("outbox.worker")


class DbBackoff:
    """``await backoff(what, exc, failures)``: the wait after the ``failures``-th
    error in a row; ``interruptible`` waits end early once ``stopping`` is set."""

    def __init__(self, store: Store, rng: random.Random, stopping: asyncio.Event) -> None:
        self._store = store
        self._rng = rng
        self._stopping = stopping

    async def __call__(
        self, what: str, exc: BaseException, failures: int, *, interruptible: bool = False
    ) -> None:
        delay = min(5.0, 0.1 * 2**failures) * (0.5 + self._rng.random())
        if isinstance(exc, asyncpg.InternalClientError):
            # The connection's protocol state is unknown: let the pool replace
            # every connection rather than hand this one out again.
            with contextlib.suppress(Exception):
                await self._store.reconnect()
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
