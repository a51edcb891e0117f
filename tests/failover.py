"""A primary and a streaming standby of its own (``pg_basebackup -R``), both
embedded PostgreSQL servers under /tmp, for the failover test: `promote`
crashes the primary (SIGKILL) and promotes the standby. ``url`` is the
multi-host URL producers and workers use, with
``target_session_attrs=read-write``: whichever server is the primary."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import psycopg

from outbox.devtools.embedded import EmbeddedPostgres


class Cluster:
    def __init__(self, *, synchronous: bool, lag: float = 0.0) -> None:
        self.synchronous = synchronous
        self.lag = lag  # how far behind the standby is when the primary dies (`promote`)
        self.dir = Path(tempfile.mkdtemp(prefix="outbox-failover-", dir="/tmp"))
        self.primary = EmbeddedPostgres(self.dir / "primary")
        self.primary.start()
        standby_dir = self.dir / "standby"
        standby_dir.mkdir(mode=0o700)
        user = self.primary._user
        if user is not None:
            shutil.chown(standby_dir, user, user)
        self.primary._run(
            "pg_basebackup", "-h", "127.0.0.1", "-p", str(self.primary.port), "-U", "postgres",
            "-D", str(standby_dir), "-R", "-X", "stream", "-c", "fast",
        )  # fmt: skip
        (standby_dir / "outbox-port").unlink(missing_ok=True)  # the primary's, copied
        self.standby = EmbeddedPostgres(standby_dir)
        self.standby.start()
        if synchronous:  # a commit returns once the standby has it (set after the copy:
            # the promoted standby, alone, must not wait for a standby of its own)
            self._admin(self.primary, "ALTER SYSTEM SET synchronous_standby_names = '*'")
            self._admin(self.primary, "SELECT pg_reload_conf()")
        self._wait_streaming("sync" if synchronous else "async")

    def url(self, database: str = "postgres") -> str:
        hosts = f"127.0.0.1:{self.primary.port},127.0.0.1:{self.standby.port}"
        return f"postgresql://postgres@{hosts}/{database}?target_session_attrs=read-write"

    def promote(self) -> float:
        """Crash the primary, promote the standby; seconds until it accepts writes.
        With a ``lag``, first hold the primary's WAL sender still (SIGSTOP) for
        that long: the last ``lag`` seconds of commits never leave the primary,
        as with a standby behind on a slow link."""
        if self.lag:
            sender = int(str(self._admin(self.primary, "SELECT pid FROM pg_stat_replication")))
            os.kill(sender, signal.SIGSTOP)
            time.sleep(self.lag)
        started = time.monotonic()
        self.primary.kill()  # SIGKILL, the stopped sender too
        self.standby._pg_ctl("promote")
        while self._admin(self.standby, "SELECT pg_is_in_recovery()"):
            time.sleep(0.05)
        return time.monotonic() - started

    def close(self) -> None:
        for server in (self.standby, self.primary):
            with contextlib.suppress(Exception):  # best effort, then the files go
                server.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)

    def _wait_streaming(self, sync_state: str) -> None:
        deadline = time.monotonic() + 30
        query = (
            "SELECT count(*) FROM pg_stat_replication"
            f" WHERE state = 'streaming' AND sync_state = '{sync_state}'"
        )
        while not self._admin(self.primary, query):
            if time.monotonic() > deadline:
                raise AssertionError("the standby never streamed")
            time.sleep(0.1)

    @staticmethod
    def _admin(server: EmbeddedPostgres, statement: str) -> object:
        with psycopg.connect(server.url(), autocommit=True) as c:
            cursor = c.execute(statement)
            row = cursor.fetchone() if cursor.description else None
            return row[0] if row else None
