"""`outbox worker --processes N`, or several databases: N worker processes for
each database, under one supervisor.

The supervisor starts each child as ``python -m outbox worker --processes 1``
with the same arguments and one database (its URL and name in the child's
environment), restarts a child that dies (backing off if it keeps dying at
start) without touching the others, and passes SIGTERM/SIGINT on: the first signal asks every
child to stop gracefully, a second one makes them exit at once. It exits 0
when every child stopped cleanly after a signal.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType

from outbox.deliver.metrics import MULTIPROC_ENV, render_registry
from outbox.settings.databases import Database

log = logging.getLogger("outbox.supervisor")

_QUICK_DEATH = 5.0  # a child that dies sooner than this after starting is crash-looping


def worker_command(*args: str) -> list[str]:
    """The command line of ``outbox worker`` run by this interpreter."""
    return [sys.executable, "-m", "outbox", "worker", *args]


class Supervisor:
    def __init__(
        self,
        child_args: list[str],
        processes: int,
        grace: float,
        *,
        databases: list[Database],
        metrics_port: int | None = None,
    ) -> None:
        self.child_args = child_args
        self.metrics_port = metrics_port
        # Slot i serves slots[i]: `processes` slots for each database, in turn.
        self.slots = [db for db in databases for _ in range(processes)]
        self.processes = len(self.slots)
        self.grace = grace
        self.children: dict[int, subprocess.Popen[bytes]] = {}
        self.started_at: dict[int, float] = {}
        self.restart_delay: dict[int, float] = {}
        self.signals = 0
        self.restarts = 0

    def _spawn(self, slot: int) -> None:
        database = self.slots[slot]
        # The URL goes in the environment: on a command line `ps` shows its password.
        env = dict(
            os.environ,
            OUTBOX_WORKER_SLOT=str(slot),
            OUTBOX_DATABASE_URL=database.url,
            OUTBOX_DATABASE_NAME=database.name,
        )
        env.pop("OUTBOX_DATABASE_URLS", None)
        command = worker_command(*self.child_args, "--processes", "1")
        self.children[slot] = subprocess.Popen(command, env=env)  # noqa: S603 - our own interpreter
        self.started_at[slot] = time.monotonic()
        log.info(
            "started worker process %d for database %s (pid %d)",
            slot,
            database.name,
            self.children[slot].pid,
        )

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.signals += 1
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signum)

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        server = self._serve_metrics() if self.metrics_port is not None else None
        try:
            return self._supervise()
        finally:
            if server is not None:
                server.shutdown()
                server.server_close()
                shutil.rmtree(os.environ.get(MULTIPROC_ENV, ""), ignore_errors=True)

    def _serve_metrics(self) -> ThreadingHTTPServer:
        """The children's metrics, summed (prometheus-client's multiprocess
        mode: each child writes its values to files in a fresh directory), and
        health answers for all of them, from a thread."""
        os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="outbox-metrics-")
        supervisor = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    body, content_type = render_registry()
                    status = 200
                elif self.path in ("/healthz", "/readyz"):
                    # /healthz: the supervisor is alive, and restarts what dies (a
                    # liveness probe must not restart every database's processes for
                    # one that keeps failing); /readyz: every process is alive.
                    alive = supervisor.alive()
                    ready = alive == supervisor.processes
                    status = 200 if self.path == "/healthz" or ready else 503
                    body = supervisor.health_text().encode()
                    content_type = "text/plain"
                else:
                    status, body, content_type = 404, b"not found\n", "text/plain"
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: object) -> None:  # no access log
                return

        server = ThreadingHTTPServer(("0.0.0.0", self.metrics_port or 0), Handler)  # noqa: S104
        threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
        log.info("metrics of %d worker processes on :%d", self.processes, self.metrics_port)
        return server

    def alive(self, database: str | None = None) -> int:
        """Children alive (of ``database``'s, or of all)."""
        return sum(
            1
            for slot, child in self.children.items()
            if child.poll() is None and database in (None, self.slots[slot].name)
        )

    def health_text(self) -> str:
        """``/healthz``'s body: processes alive, in all and per database."""
        lines = [f"{self.alive()}/{self.processes} worker processes alive"]
        names = dict.fromkeys(db.name for db in self.slots)
        if len(names) > 1:
            per = self.processes // len(names)
            lines += [f"{name}: {self.alive(name)}/{per}" for name in names]
        return "\n".join(lines) + "\n"

    def _supervise(self) -> int:
        for slot in range(self.processes):
            self._spawn(slot)
        pending_restart: dict[int, float] = {}
        while not self.signals:
            time.sleep(0.1)
            now = time.monotonic()
            for slot, child in list(self.children.items()):
                code = child.poll()
                if code is None or slot in pending_restart:
                    continue
                if MULTIPROC_ENV in os.environ:  # its live gauges stop counting
                    from prometheus_client import multiprocess

                    multiprocess.mark_process_dead(child.pid)  # type: ignore[no-untyped-call]
                lived = now - self.started_at[slot]
                delay = self.restart_delay.get(slot, 0.0)
                delay = min(max(1.0, delay * 2), 30.0) if lived < _QUICK_DEATH else 0.0
                self.restart_delay[slot] = delay
                log.warning(
                    "worker process %d for database %s (pid %d) exited with %s; "
                    "restarting in %.0fs",
                    slot,
                    self.slots[slot].name,
                    child.pid,
                    code,
                    delay,
                )
                pending_restart[slot] = now + delay
            for slot, when in list(pending_restart.items()):
                if now >= when and not self.signals:
                    del pending_restart[slot]
                    self.restarts += 1
                    self._spawn(slot)
        return self._wait_for_children()

    def _wait_for_children(self) -> int:
        deadline = time.monotonic() + self.grace + 10
        codes: dict[int, int] = {}
        while time.monotonic() < deadline:
            for slot, child in self.children.items():
                code = child.poll()
                if code is not None:
                    codes[slot] = code
            if len(codes) == len(self.children):
                break
            time.sleep(0.05)
        for slot, child in self.children.items():
            if slot not in codes:
                log.warning("worker process %d did not stop in time; killing it", slot)
                child.kill()
                codes[slot] = child.wait()
        # A child that got the signal before installing its handlers dies of
        # it; it had claimed nothing yet, so that is a clean stop too.
        clean = {0, -signal.SIGTERM, -signal.SIGINT}
        return 0 if all(code in clean for code in codes.values()) else 1
