"""A local HTTP receiver that records what it gets and injects faults on purpose.

Used by the tests (in a background thread), by ``outbox demo`` and by
``outbox bench``. A `Script` decides, per request, what to do: answer with a
status (and headers, after a delay), hang past the client's timeout, or reset
the connection. Every request is recorded with its arrival and finish time on
the receiver's clock, so tests can check ordering, concurrency and
``Retry-After`` from the receiving side.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web
from multidict import CIMultiDict


@dataclass(frozen=True, slots=True)
class Action:
    """What the receiver does with one request."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: str = "ok"
    delay: float = 0.0  # seconds before answering (a hang, if past the timeout)
    reset: bool = False  # drop the connection without an answer


OK = Action()


@dataclass(slots=True)
class Received:
    path: str
    message_id: str | None
    headers: CIMultiDict[str]  # case-insensitive, as HTTP headers are
    body: bytes
    arrived: float  # time.time() on arrival
    finished: float = 0.0
    action: Action = OK
    nth: int = 1  # how many times this message id had arrived, this one included

    def json(self) -> Any:
        return json.loads(self.body)


# A script maps (path, message id, how many times this id arrived) to an action.
Script = Callable[[str, str | None, int], Action]


def always(action: Action) -> Script:
    return lambda _path, _id, _nth: action


def fail_first(n: int, action: Action) -> Script:
    """``action`` for the first ``n`` arrivals of each message, then 200."""
    return lambda _path, _id, nth: action if nth <= n else OK


class Receiver:
    """``with Receiver() as rx:`` serves on 127.0.0.1 in a background thread."""

    def __init__(self, script: Script | None = None, *, port: int = 0) -> None:
        self.script: Script = script or always(OK)
        self.port = port
        self.received: list[Received] = []
        self._seen: dict[str | None, int] = defaultdict(int)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    # -- running -------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._serve, name="receiver", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the receiver did not start")

    def stop(self) -> None:
        if self._loop is not None and self._runner is not None:
            future = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
            with contextlib.suppress(Exception):
                future.result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        loop.run_until_complete(site.start())
        server = site._server  # aiohttp keeps the bound port here
        assert isinstance(server, asyncio.Server)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        message_id = self.identify(request.headers, body)
        with self._lock:
            self._seen[message_id] += 1
            nth = self._seen[message_id]
            record = Received(
                request.path, message_id, CIMultiDict(request.headers), body, time.time(), nth=nth
            )
            self.received.append(record)
        action = self.respond(record)
        record.action = action
        try:
            if action.delay:
                await asyncio.sleep(action.delay)
            if action.reset:
                if request.transport is not None:
                    request.transport.abort()
                raise ConnectionResetError("reset on purpose")
            return web.Response(status=action.status, text=action.body, headers=action.headers)
        finally:
            record.finished = time.time()

    # -- what a request is and what it gets (subclasses: other protocols) -----

    def identify(self, headers: Any, body: bytes) -> str | None:
        """The message a request carries: the Standard Webhooks ``webhook-id``."""
        value = headers.get("webhook-id")
        return value if isinstance(value, str) else None

    def respond(self, record: Received) -> Action:
        return self.script(record.path, record.message_id, record.nth)

    # -- reading what arrived ------------------------------------------------

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def ids(self) -> set[str]:
        return {r.message_id for r in self.snapshot() if r.message_id}

    def by_id(self) -> dict[str, list[Received]]:
        out: dict[str, list[Received]] = defaultdict(list)
        for r in self.snapshot():
            if r.message_id:
                out[r.message_id].append(r)
        return out

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.02)
        return predicate()


def command_line() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 in a container")
    parser.add_argument(
        "--fail-share",
        type=float,
        default=0.0,
        help="answer this share of requests (at random) with 503 (soak runs)",
    )
    return parser


def main() -> None:
    """``python -m outbox.devtools.receiver --port P [--host H] [--fail-share F]``: answer
    200 to everything, or 503 to a random share (benchmarks, soak runs;
    compose.yaml's example receiver)."""
    args = command_line().parse_args()
    if not 0.0 <= args.fail_share <= 1.0:
        raise SystemExit(f"--fail-share must be between 0 and 1, not {args.fail_share}")
    fail_share: float = args.fail_share

    async def ok(_request: web.Request) -> web.Response:
        if fail_share and random.random() < fail_share:
            return web.Response(status=503, text="unavailable (injected)")
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", ok)
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
