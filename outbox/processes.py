"""Starting ``outbox worker`` as a child process (benchmarks, quickstart, tests, supervisor)."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import IO, Any


def worker_command(*args: str) -> list[str]:
    """The command line of ``outbox worker`` run by this interpreter."""
    return [sys.executable, "-m", "outbox", "worker", *args]


def spawn_worker(
    database_url: str,
    *args: str,
    log_level: str = "WARNING",
    env: dict[str, str] | None = None,
    output: IO[Any] | int | None = None,
) -> subprocess.Popen[bytes]:
    """Start a worker on ``database_url``; the URL is passed as a flag, never inherited."""
    child_env = {**os.environ, "OUTBOX_LOG_LEVEL": log_level, **(env or {})}
    child_env.pop("OUTBOX_DATABASE_URL", None)
    return subprocess.Popen(  # noqa: S603 - our own interpreter and module
        worker_command("--database-url", database_url, *args),
        env=child_env,
        stdout=output,
        stderr=subprocess.STDOUT if output is not None else None,
    )
