"""A private ``nats-server`` for one test: its own port, JetStream store and
config (a small ``max_payload``, users with permissions, a token), which the
shared server on 4222 cannot be given. Stopped, and restarted on the same
port and store, at will.

And `Proxy`, a TCP proxy in front of a server that holds the server's bytes
back for a while (PubAcks arrive late: a worker killed meanwhile has
published messages it never learned were stored) and can cut every
connection at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

BINARY = "/usr/sbin/nats-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class NatsServer:
    """``nats-server`` with JetStream in ``directory`` (its config, store and log).

    ``users``: name -> password, or name -> (password, permissions) with
    permissions as the server's config takes them (``{"publish": {"allow":
    [...]}}``); ``token``: the one token clients must give instead.
    """

    def __init__(
        self,
        directory: Path,
        *,
        max_payload: int | None = None,
        users: dict[str, Any] | None = None,
        token: str | None = None,
    ) -> None:
        if shutil.which(BINARY) is None:
            pytest.skip(f"{BINARY} is not installed (a private NATS server is needed)")
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.store = directory / "jetstream"
        self.config = directory / "nats.conf"
        self.log = directory / "nats.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.max_payload = max_payload
        self._write_config(users, token)

    def _write_config(self, users: dict[str, Any] | None, token: str | None) -> None:
        config: dict[str, Any] = {
            "listen": f"127.0.0.1:{self.port}",
            "jetstream": {"store_dir": str(self.store), "max_memory_store": 64 << 20,
                          "max_file_store": 256 << 20},
        }  # fmt: skip
        if self.max_payload is not None:
            config["max_payload"] = self.max_payload
        if users:
            config["authorization"] = {"users": [_user(n, v) for n, v in users.items()]}
        elif token:
            config["authorization"] = {"token": token}
        # The server's config format reads JSON.
        self.config.write_text(json.dumps(config, indent=2))

    def reconfigure(self, *, users: dict[str, Any] | None = None, token: str | None = None) -> None:
        """New users (or token), taken by the running server (a reload, SIGHUP):
        clients whose credentials no longer hold are disconnected."""
        assert self.proc is not None
        assert self.proc.poll() is None
        reloads = self._count("Reloaded server configuration")
        self._write_config(users, token)
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while self._count("Reloaded server configuration") <= reloads:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nats-server did not reload: {self.log.read_text()}")
            time.sleep(0.02)

    def _count(self, words: str) -> int:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return text.count(words)

    def url(self, user: str | None = None, password: str | None = None) -> str:
        auth = f"{user}:{password}@" if password is not None else f"{user}@" if user else ""
        return f"nats://{auth}127.0.0.1:{self.port}"

    def start(self, within: float = 10.0) -> None:
        assert self.proc is None or self.proc.poll() is not None
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [BINARY, "-c", str(self.config)], stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + within
        while not self._ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited: {self.log.read_text(errors='replace')}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"nats-server not ready in {within}s: {self.log.read_text()}")
            time.sleep(0.02)

    def _ready(self) -> bool:
        # "Server is ready" is logged once the client port listens and JetStream
        # (its store recovered) is up; count the lines, one per start.
        starts = max(1, self._count("Starting nats-server"))
        return self._count("Server is ready") >= starts and answers(self.port)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> NatsServer:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop(signal.SIGKILL)


def _user(name: str, value: Any) -> dict[str, Any]:
    password, permissions = (value, None) if isinstance(value, str) else value
    entry: dict[str, Any] = {"user": name, "password": password}
    if permissions:
        entry["permissions"] = permissions
    return entry


class Proxy:
    """``127.0.0.1:port`` -> ``127.0.0.1:target``, run by a thread of its own
    (so that worker processes and the test's event loop alike can use it).
    What the server sends reaches the client ``delay`` seconds late, in order;
    what the client sends goes on at once."""

    def __init__(self, target: int, *, delay: float = 0.0) -> None:
        self.target = target
        self.delay = delay
        self.port = 0
        self.connections = 0  # accepted so far
        self._loop = asyncio.new_event_loop()
        self._writers: set[asyncio.StreamWriter] = set()
        self._ready = threading.Event()
        self._stopped: asyncio.Event | None = None
        self._tasks: set[asyncio.Future[None]] = set()
        self._thread = threading.Thread(target=self._run, name="nats-proxy", daemon=True)

    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

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
        pumps: list[asyncio.Future[None]] = []
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target)
            writers.append(server_w)
            self._writers.add(server_w)
            pumps = [
                asyncio.ensure_future(_pump(client_r, server_w, 0.0)),
                asyncio.ensure_future(_pump(server_r, client_w, self.delay)),
            ]
            self._tasks.update(pumps)
            await asyncio.wait(pumps, return_when=asyncio.FIRST_EXCEPTION)
        except OSError:
            pass
        finally:
            for writer in writers:
                self._writers.discard(writer)
                writer.transport.abort()
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            self._tasks.difference_update(pumps)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy ``reader`` to ``writer``, each chunk ``delay`` seconds after it was read."""
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    async def send() -> None:
        while True:
            due, chunk = await queue.get()
            if not chunk:
                break
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(chunk)
            await writer.drain()
        with contextlib.suppress(OSError):
            writer.write_eof()

    sender = asyncio.ensure_future(send())
    try:
        while True:
            chunk = await reader.read(65536)
            queue.put_nowait((loop.time() + delay, chunk))
            if not chunk:
                break
        await sender
    finally:
        sender.cancel()
        with contextlib.suppress(BaseException):
            await sender
