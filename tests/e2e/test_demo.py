"""`outbox demo` end to end on its own embedded PostgreSQL, as a newcomer runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.single_pass]


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
    # Its database stopped with it: no psql line that would be refused, but --keep.
    assert "SELECT * FROM outbox.stats" not in out
    assert "outbox demo --keep" in out
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


@pytest.mark.timeout(240)
def test_demo_keep_leaves_the_dashboard_running_until_ctrl_c(database_url: str) -> None:
    env = {**os.environ, "OUTBOX_DATABASE_URL": database_url}
    demo = subprocess.Popen(
        [sys.executable, "-m", "outbox", "demo", "--keep", "--messages", "20", "--duration", "40"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert demo.stdout is not None
    seen: list[str] = []
    try:
        for line in demo.stdout:
            seen.append(line)
            if line.startswith("dashboard: "):
                break
        out = "".join(seen)
        assert "rolled-back messages that arrived: 0" in out, out
        assert "Try these while it runs" in out  # the database is still up
        link = seen[-1].split("dashboard: ", 1)[1].strip()
        deadline = time.monotonic() + 30
        while True:
            try:
                page = httpx.get(link, follow_redirects=True, timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the dashboard did not answer"
                time.sleep(0.2)
        assert page.status_code == 200
        assert 'data-endpoint="orders"' in page.text
        assert 'data-endpoint="legacy"' in page.text
        children = psutil.Process(demo.pid).children(recursive=True)
        assert any("web" in p.cmdline() for p in children)
        assert any("worker" in p.cmdline() for p in children)
        demo.send_signal(signal.SIGINT)
        rest = demo.communicate(timeout=90)[0]
        assert demo.returncode == 0, out + rest
        assert "stopped" in rest
        assert not [p for p in children if p.is_running() and p.status() != "zombie"]
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(10)
