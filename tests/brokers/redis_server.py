"""The Redis side of the redis channel's tests.

`RedisServer`: a private ``redis-server`` for one test, on a port and in a
directory of its own, with the ACL users, limits and persistence the shared
server on 6379 must not be given; killed, and started again on the same port
and directory (its append-only file), at will. `admin` is a client of the
test's own on it (the consumer, and who reconfigures it).

And `Proxy`, a TCP proxy in front of a server that holds the server's replies
back for a while (XADDs applied that the client has not heard of yet: in
flight when a connection is cut or a worker is killed) and can cut every
connection at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

BINARY = "/usr/bin/redis-server"
ADMIN_PASSWORD = "admin-pw-c41e7b"  # the test's own user on every private server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def pong(port: int) -> bool:
    """Does a server on ``port`` answer PING (not just accept: not while LOADING)?"""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


class RedisServer:
    """``redis-server`` on a port of its own, its files in ``directory``.

    ``users``: ACL rules per user (``{"app": "on >pw ~ok:* +@all"}``), besides
    ``admin`` (every right, `ADMIN_PASSWORD`); ``default``: the rules of the
    default user (``off``: a client must log in); ``appendonly``: an
    append-only file fsynced on every write (``appendfsync always``), so
    that what the server acknowledged survives it being killed; ``config``:
    any other directive.
    """

    def __init__(
        self,
        directory: Path,
        *,
        users: dict[str, str] | None = None,
        default: str = "on nopass ~* &* +@all",
        appendonly: bool = False,
        config: dict[str, str] | None = None,
    ) -> None:
        if shutil.which(BINARY) is None:
            pytest.skip(f"{BINARY} is not installed (a private Redis is needed)")
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log = directory / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.args = [
            BINARY, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(directory),
            "--logfile", str(self.log), "--daemonize", "no", "--save", "",
            "--appendonly", "yes" if appendonly else "no", "--appendfsync", "always",
        ]  # fmt: skip
        for name, value in (config or {}).items():
            self.args += [f"--{name}", value]
        rules = {"default": default, "admin": f"on >{ADMIN_PASSWORD} ~* &* +@all", **(users or {})}
        for name, rule in rules.items():
            self.args += ["--user", name, *rule.split()]

    def url(self, user: str | None = None, password: str | None = None) -> str:
        auth = f"{user}:{password}@" if password is not None else f"{user}@" if user else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, within: float = 10.0) -> None:
        assert self.proc is None or self.proc.poll() is not None
        self.proc = subprocess.Popen(
            self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + within
        while not pong(self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.log_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server not answering in {within}s: {self.log_text()}")
            time.sleep(0.02)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop it (SIGKILL: at once, no final write; the append-only file has it all)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    @contextlib.asynccontextmanager
    async def admin(self) -> AsyncIterator[aioredis.Redis]:
        """A client with every right (closed afterwards)."""
        client = aioredis.Redis(
            host="127.0.0.1", port=self.port, username="admin", password=ADMIN_PASSWORD,
            client_name="outbox-test-admin",
        )  # fmt: skip
        try:
            yield client
        finally:
            await client.aclose()

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop(signal.SIGKILL)


class Proxy:
    """``127.0.0.1:port`` -> ``127.0.0.1:target``, run by a thread of its own
    (worker processes and the test's event loop alike can use it). What the
    server sends reaches the client ``delay`` seconds late, in order; what
    the client sends goes on at once."""

    def __init__(self, target: int, *, delay: float = 0.0) -> None:
        self.target = target
        self.delay = delay
        self.port = 0
        self.connections = 0  # accepted so far
        self._loop = asyncio.new_event_loop()
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Future[None]] = set()
        self._ready = threading.Event()
        self._stopped: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="redis-proxy", daemon=True)

    def url(self, user: str | None = None, password: str | None = None) -> str:
        auth = f"{user}:{password}@" if password is not None else f"{user}@" if user else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def __enter__(self) -> Proxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the proxy did not start")
        return self

    def __exit__(self, *_: object) -> None:
        if self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(10)

    def cut(self) -> None:
        """Close every connection now (the clients see the server go away)."""
        done = threading.Event()

        def close() -> None:
            for writer in list(self._writers):
                writer.transport.abort()
            done.set()

        self._loop.call_soon_threadsafe(close)
        done.wait(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._stopped = asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await self._stopped.wait()
        finally:
            server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await server.wait_closed()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(client_w)
        writers = [client_w]
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            client_w.transport.abort()
            self._writers.discard(client_w)
            return
        writers.append(server_w)
        self._writers.add(server_w)
        pumps = [
            asyncio.ensure_future(_pump(client_r, server_w, 0.0)),
            asyncio.ensure_future(_pump(server_r, client_w, self.delay)),
        ]
        self._tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            self._tasks.difference_update(pumps)
            for writer in writers:
                writer.transport.abort()
                self._writers.discard(writer)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy ``reader`` to ``writer``, each chunk ``delay`` seconds after it came
    (what came before the end too)."""
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def forward() -> None:
        while True:
            at, chunk = await chunks.get()
            if not chunk:
                return
            wait = at - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(chunk)
            await writer.drain()

    sender = asyncio.ensure_future(forward())
    try:
        while not sender.done():
            chunk = await reader.read(65536)
            await chunks.put((loop.time() + delay, chunk))
            if not chunk:
                break
        await sender
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
