"""`outbox worker --processes N`: N worker processes under one supervisor.

The supervisor starts each child as ``python -m outbox worker --processes 1``
with the same arguments, restarts a child that dies (backing off if it keeps
dying at start), and passes SIGTERM/SIGINT on: the first signal asks every
child to stop gracefully, a second one makes them exit at once. It exits 0
when every child stopped cleanly after a signal.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from types import FrameType

from outbox.processes import worker_command

log = logging.getLogger("outbox.supervisor")

_QUICK_DEATH = 5.0  # a child that dies sooner than this after starting is crash-looping


class Supervisor:
    def __init__(
        self, child_args: list[str], processes: int, grace: float, *, database_url: str
    ) -> None:
        self.child_args = child_args
        self.database_url = database_url
        self.processes = processes
        self.grace = grace
        self.children: dict[int, subprocess.Popen[bytes]] = {}
        self.started_at: dict[int, float] = {}
        self.restart_delay: dict[int, float] = {}
        self.signals = 0
        self.restarts = 0

    def _spawn(self, slot: int) -> None:
        # The URL goes in the environment: on a command line `ps` shows its password.
        env = dict(os.environ, OUTBOX_WORKER_SLOT=str(slot), OUTBOX_DATABASE_URL=self.database_url)
        command = worker_command(*self.child_args, "--processes", "1")
        self.children[slot] = subprocess.Popen(command, env=env)  # noqa: S603 - our own interpreter
        self.started_at[slot] = time.monotonic()
        log.info("started worker process %d (pid %d)", slot, self.children[slot].pid)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.signals += 1
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signum)

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
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
                lived = now - self.started_at[slot]
                delay = self.restart_delay.get(slot, 0.0)
                delay = min(max(1.0, delay * 2), 30.0) if lived < _QUICK_DEATH else 0.0
                self.restart_delay[slot] = delay
                log.warning(
                    "worker process %d (pid %d) exited with %s; restarting in %.0fs",
                    slot,
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
