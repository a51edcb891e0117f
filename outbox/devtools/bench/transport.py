"""The `transport` scenario: which HTTP client stack to deliver with.

The same POSTs, many at once, to a minimal receiver in a separate process:
httpx with its own transport, httpx over the aiohttp transport, and bare
aiohttp (the ceiling `outbox bench http` holds the worker against). The
channels use none of them but a client of their own
(`outbox.deliver.channels.http`); this is the measurement that says why.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import httpx

from outbox.devtools.bench.common import Figure

BODY = b'{"event":"order.created","order_id":12345}'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_receiver(*args: str) -> tuple[subprocess.Popen[bytes], str]:
    """``python -m outbox.devtools.receiver`` on a free port, with ``args``; (process, URL)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "outbox.devtools.receiver", "--port", str(port), *args]
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, f"http://127.0.0.1:{port}/bench"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the benchmark receiver did not start")


HEADERS = {"content-type": "application/json"}


def httpx_over_aiohttp(max_connections: int) -> httpx.AsyncClient:
    """httpx's API on aiohttp's transport (httpx-aiohttp)."""
    from httpx_aiohttp import AiohttpTransport

    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections
    )

    def session() -> aiohttp.ClientSession:
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=max_connections))

    return httpx.AsyncClient(
        transport=AiohttpTransport(limits=limits, trust_env=False, client=session),
        trust_env=False,
    )


async def _post_httpx(client: httpx.AsyncClient, url: str) -> None:
    (await client.post(url, content=BODY, headers=HEADERS)).raise_for_status()


async def _post_aiohttp(session: aiohttp.ClientSession, url: str) -> None:
    async with session.post(url, data=BODY, headers=HEADERS) as response:
        await response.read()
        response.raise_for_status()


async def _rate(post: Callable[[], Awaitable[None]], requests: int, concurrency: int) -> float:
    remaining = requests

    async def loop() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await post()

    for _ in range(min(200, requests)):  # warm the connection pool
        await post()
    start = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return requests / (time.perf_counter() - start)


async def run(
    *, requests: int = 5000, concurrency: int = 100, rounds: int = 3, progress: Any = None
) -> dict[str, Any]:
    proc, url = start_receiver()
    figures = {
        name: Figure(name, "requests/s") for name in ("httpx_default", "httpx_aiohttp", "aiohttp")
    }
    try:
        for _ in range(rounds):
            async with httpx.AsyncClient(limits=httpx.Limits(max_connections=concurrency)) as plain:
                figures["httpx_default"].rounds.append(
                    await _rate(functools.partial(_post_httpx, plain, url), requests, concurrency)
                )
            ours = httpx_over_aiohttp(concurrency)
            try:
                figures["httpx_aiohttp"].rounds.append(
                    await _rate(functools.partial(_post_httpx, ours, url), requests, concurrency)
                )
            finally:
                await ours.aclose()
            connector = aiohttp.TCPConnector(limit=concurrency)
            async with aiohttp.ClientSession(connector=connector) as session:
                figures["aiohttp"].rounds.append(
                    await _rate(
                        functools.partial(_post_aiohttp, session, url), requests, concurrency
                    )
                )
            if progress:
                for f in figures.values():
                    progress(f.name, f.rounds[-1])
    finally:
        proc.terminate()
        proc.wait(10)
    result: dict[str, Any] = {
        "scenario": "transport",
        "requests": requests,
        "concurrency": concurrency,
    }
    result |= {name: f.to_json() for name, f in figures.items()}
    result["httpx_aiohttp_vs_aiohttp"] = figures["httpx_aiohttp"].median / figures["aiohttp"].median
    result["httpx_aiohttp_vs_httpx_default"] = (
        figures["httpx_aiohttp"].median / figures["httpx_default"].median
    )
    return result
