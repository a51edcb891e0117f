"""Fixtures for the end-to-end tests: worker processes that are always cleaned up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support import WorkerProcess, children


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for w in started:
        for child in children(w.proc.pid):
            child.kill()
        w.kill()
