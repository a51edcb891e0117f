"""A PgBouncer of the test's own in front of the test server (Debian's
``pgbouncer`` package, 1.18): transaction pooling, trust auth, a free port, its
files in a directory of its own under /tmp; stopped and removed afterwards.

Without the binary, tests that need it skip, naming the package, except where
``OUTBOX_REQUIRE_PGBOUNCER`` is set (CI), where they fail.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

BINARY = shutil.which("pgbouncer") or (
    "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
)


class PgBouncer:
    def __init__(self, server_url: str, *, pool_mode: str = "transaction") -> None:
        if BINARY is None:
            message = "pgbouncer is not installed: apt-get install pgbouncer"
            if os.environ.get("OUTBOX_REQUIRE_PGBOUNCER"):
                pytest.fail(message)
            pytest.skip(message)
        parts = urlsplit(server_url)
        self.server = (parts.hostname or "127.0.0.1", parts.port or 5432)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.user = parts.username or "postgres"
        # Directly under /tmp: readable by the user it runs as when the tests run as root.
        self.dir = Path(tempfile.mkdtemp(prefix="outbox-pgbouncer-", dir="/tmp"))
        (self.dir / "users.txt").write_text(f'"{self.user}" ""\n')
        (self.dir / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host={parts.hostname or '127.0.0.1'} port={parts.port or 5432}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {self.dir / 'users.txt'}\n"
            f"pool_mode = {pool_mode}\nmax_client_conn = 200\ndefault_pool_size = 20\n"
            # After a failed server login PgBouncer refuses every client for this long
            # (default 15 s): a restarted PostgreSQL would stay unreachable that much
            # longer. The README's production settings say the same.
            "server_login_retry = 1\n"
            f"logfile = {self.dir / 'pgbouncer.log'}\npidfile = {self.dir / 'pgbouncer.pid'}\n"
        )
        command = [BINARY, str(self.dir / "pgbouncer.ini")]
        if os.geteuid() == 0:  # it refuses to run as root
            shutil.chown(self.dir, "postgres")
            for name in ("users.txt", "pgbouncer.ini"):
                shutil.chown(self.dir / name, "postgres")
            command[1:1] = ["-u", "postgres"]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"pgbouncer did not start: {self.log()}")
            time.sleep(0.05)

    def url(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def serves(self, url: str) -> bool:
        """Is ``url`` on the server this PgBouncer is in front of?"""
        parts = urlsplit(url)
        try:
            return (parts.hostname or "127.0.0.1", parts.port or 5432) == self.server
        except ValueError:  # a multi-host URL (the failover test's own servers)
            return False

    def route(self, url: str) -> str:
        """``url`` (on the server behind this PgBouncer) through it: same user,
        password and database, this PgBouncer's address."""
        parts = urlsplit(url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@127.0.0.1:{self.port}" if userinfo else f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    def log(self) -> str:
        path = self.dir / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # immediate shutdown
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)
