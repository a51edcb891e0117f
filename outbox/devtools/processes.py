"""Starting ``outbox worker`` as a child process (benchmarks, quickstart, tests, supervisor)."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import IO, Any

from outbox.deliver.supervisor import worker_command


def spawn_worker(
    database_url: str,
    *args: str,
    log_level: str = "WARNING",
    env: dict[str, str] | None = None,
    output: IO[Any] | int | None = None,
    traced: bool = False,
) -> subprocess.Popen[bytes]:
    """Start a worker on ``database_url`` (``traced``: with every attempt span
    sampled, `outbox.devtools.bench.traced_worker`); an empty ``database_url``
    leaves the databases to ``env`` (OUTBOX_DATABASE_URLS).

    The URL travels in the child's environment, not on its command line,
    where ``ps`` would show a password to every user of the host.
    """
    child_env = {
        **os.environ,
        "OUTBOX_LOG_LEVEL": log_level,
        **(env or {}),
        "OUTBOX_DATABASE_URL": database_url,
    }
    if not database_url:
        del child_env["OUTBOX_DATABASE_URL"]
    return subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "outbox.devtools.bench.traced_worker", *args]
        if traced
        else worker_command(*args),
        env=child_env,
        stdout=output,
        stderr=subprocess.STDOUT if output is not None else None,
    )


def spawn_web(database_url: str, port: int, token: str) -> subprocess.Popen[bytes]:
    """Start ``outbox web`` on 127.0.0.1:``port`` for ``database_url``, signed in
    with ``token``; both travel in its environment, not on its command line."""
    env = {**os.environ, "OUTBOX_DATABASE_URL": database_url, "OUTBOX_WEB_TOKEN": token}
    return subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "outbox", "web", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
