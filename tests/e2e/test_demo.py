"""`outbox demo` end to end on its own embedded PostgreSQL, as a newcomer runs it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.e2e


def test_the_demo_runs_by_itself_and_leaves_nothing_behind(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OUTBOX_DATABASE_URL"}
    started = time.time()
    done = subprocess.run(
        [
            sys.executable, "-m", "outbox", "demo", "--messages", "40", "--duration", "60",
            "--data-dir", str(tmp_path / "pgdata"), "--reset",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "starting an embedded PostgreSQL" in out
    assert "rolled-back messages that arrived: 0" in out
    assert "committed messages neither delivered, dead nor parked: 0" in out
    assert "[paused]" in out  # the 410 endpoint paused...
    parked = int(out.split("parked behind the paused endpoint: ")[1].split()[0])
    dead = int(out.split("dead letters: ")[1].split(";")[0])
    assert parked >= 1  # ...with messages waiting behind it
    assert dead >= 2  # the rejected crm message and the legacy 410s
    assert "SELECT * FROM outbox.stats" in out
    # No worker, supervisor or database server outlives it.
    leftovers = [
        p.info["cmdline"]
        for p in psutil.process_iter(["cmdline", "create_time"])
        if p.info["create_time"]
        and p.info["create_time"] >= started - 1
        and p.info["cmdline"]
        and (
            ("outbox" in " ".join(p.info["cmdline"]) and "worker" in p.info["cmdline"])
            or str(tmp_path) in " ".join(p.info["cmdline"])
        )
    ]
    assert leftovers == []
