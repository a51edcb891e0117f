"""Wake-ups: LISTEN on a connection of its own, reconnecting whenever it drops.

An idle worker asks producers to NOTIFY ``outbox_wakeup`` (see
``outbox._wake_workers()``); this is the other end. It is an optimisation:
polling remains the path that guarantees progress, and a listener that
cannot connect only means polling.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import asyncpg

from outbox.db.connect import DB_ERRORS, asyncpg_url

WAKEUP_CHANNEL = "outbox_wakeup"
Unlisten = Callable[[], Awaitable[None]]


def make_listener(url: str) -> Callable[[Callable[[], None]], Awaitable[Unlisten]]:
    """``listen(wake)`` calls ``wake()`` on every NOTIFY (and after each reconnect:
    anything committed while it was not listening); it returns the stopper."""

    async def listen(wake: Callable[[], None]) -> Unlisten:
        closed = asyncio.Event()
        task = asyncio.create_task(_keep_listening(url, wake, closed), name="listen")

        async def unlisten() -> None:
            closed.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 3)

        return unlisten

    return listen


async def _keep_listening(url: str, wake: Callable[[], None], closed: asyncio.Event) -> None:
    delay = 0.2
    while not closed.is_set():
        try:
            conn = await asyncpg.connect(asyncpg_url(url))
        except DB_ERRORS:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
            continue
        delay = 0.2
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _c, lost=lost: lost.set())
        try:
            await conn.add_listener(WAKEUP_CHANNEL, lambda *_: wake())
            wake()  # anything committed while we were not listening
            waiter = asyncio.create_task(closed.wait())
            await asyncio.wait(
                [waiter, asyncio.create_task(lost.wait())], return_when=asyncio.FIRST_COMPLETED
            )
            waiter.cancel()
        except DB_ERRORS:
            pass
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2)
