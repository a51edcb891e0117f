"""``--metrics-port``: ``/metrics``, ``/healthz`` and ``/readyz`` from the worker's loop.

A minimal HTTP/1.1 server on asyncio's streams: it answers ``GET`` of those
three paths (anything else is 404, another method 405) and closes the
connection after each answer. It exists so that a worker needs no web
framework; a scraper or a probe is all that talks to it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}
_HEAD_LIMIT = 8192


async def serve(
    port: int,
    render: Callable[[], tuple[bytes, str]],
    healthy: Callable[[], Awaitable[bool]],
    ready: Callable[[], bool],
    host: str = "0.0.0.0",  # noqa: S104 -- scraped from outside the host
) -> Callable[[], Awaitable[None]]:
    """Serve until the returned stopper is awaited."""

    async def answer(path: str) -> tuple[int, bytes, str]:
        if path == "/metrics":
            body, content_type = render()
            return 200, body, content_type
        if path == "/healthz":
            ok = await healthy()
            return (200, b"ok\n", "text/plain") if ok else (503, b"unhealthy\n", "text/plain")
        if path == "/readyz":
            ok = ready()
            return (200, b"ready\n", "text/plain") if ok else (503, b"not ready\n", "text/plain")
        return 404, b"not found\n", "text/plain"

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                head = await reader.readuntil(b"\r\n\r\n")
            method, _, rest = head[:_HEAD_LIMIT].decode("latin-1").partition(" ")
            path = rest.partition(" ")[0].partition("?")[0]
            if method != "GET":
                status, body, content_type = 405, b"method not allowed\n", "text/plain"
            else:
                status, body, content_type = await answer(path)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            status, body, content_type = 400, b"bad request\n", "text/plain"
        except ConnectionError:
            writer.close()
            return
        writer.write(
            f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, host, port, limit=_HEAD_LIMIT)

    async def stop() -> None:
        server.close()
        await server.wait_closed()

    return stop
