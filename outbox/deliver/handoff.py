"""The hand-off from a worker's claim loop to its deliverers: a FIFO of claimed
deliveries that idle deliverers wait on.

The part of `asyncio.Queue` a worker uses, for less: no task accounting, no
bound, and a `get` that returns at once without a future when something is
waiting (the common case under load). `asyncio.Queue`'s `get` and
`put_nowait` were about a tenth of a draining worker's profile.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class Handoff(Generic[T]):
    __slots__ = ("_handed", "_items", "_waiters")

    def __init__(self) -> None:
        self._items: deque[T] = deque()
        self._waiters: deque[asyncio.Future[T]] = deque()
        self._handed = 0  # given to a waiting deliverer that has not run yet

    def qsize(self) -> int:
        """Items not yet taken up by a deliverer: those waiting in line and those
        handed to a deliverer that has not woken yet (as `asyncio.Queue` counts
        an item until its getter runs)."""
        return len(self._items) + self._handed

    def empty(self) -> bool:
        return not self._items and not self._handed

    def put_nowait(self, item: T) -> None:
        """To the longest-waiting deliverer, else to the end of the line."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():  # a cancelled waiter wants nothing
                waiter.set_result(item)
                self._handed += 1
                return
        self._items.append(item)

    def take_waiting(self) -> list[T]:
        """Every item still in line (not those already handed to a deliverer)."""
        items = list(self._items)
        self._items.clear()
        return items

    async def get(self) -> T:
        """The first item, waiting for one if there is none."""
        if self._items:
            return self._items.popleft()
        waiter: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            item = await waiter
        except asyncio.CancelledError:
            # Handed an item, then cancelled before it ran: the item goes back
            # to the front of the line, never lost.
            if waiter.done() and not waiter.cancelled():
                self._handed -= 1
                self._items.appendleft(waiter.result())
            raise
        self._handed -= 1
        return item
