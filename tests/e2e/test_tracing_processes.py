"""Tracing in real worker processes: set up from the standard ``OTEL_*``
variables, absent without the extra, and never in the way of a trace.

A ``sitecustomize`` module on the child's PYTHONPATH reports, when the process
exits, which ``opentelemetry`` modules it imported; with ``BLOCK_OTEL`` set it
also makes them unimportable, as in an installation without the ``otel`` extra.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from support import FAST_RETRIES, add_endpoint, until

import outbox
from outbox.devtools.processes import spawn_worker
from outbox.devtools.receiver import Receiver

pytestmark = pytest.mark.e2e

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

SITECUSTOMIZE = textwrap.dedent(
    """
    import atexit, importlib.abc, json, os, sys

    class _NoOpenTelemetry(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "opentelemetry" or name.startswith("opentelemetry."):
                raise ImportError(f"No module named {name!r} (blocked: no otel extra)")
            return None

    if os.environ.get("BLOCK_OTEL"):
        sys.meta_path.insert(0, _NoOpenTelemetry())

    def _report():
        loaded = sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")
        with open(os.environ["OTEL_MODULES_REPORT"], "w") as out:
            json.dump(loaded, out)

    atexit.register(_report)
    """
)


def child_env(tmp_path: Path, *, block: bool, **extra: str) -> dict[str, str]:
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
    env = {
        **FAST_RETRIES,
        "PYTHONPATH": str(site),
        "OTEL_MODULES_REPORT": str(tmp_path / "modules.json"),
        **extra,
    }
    if block:
        env["BLOCK_OTEL"] = "1"
    return env


def loaded_modules(tmp_path: Path) -> list[str]:
    value: list[str] = json.loads((tmp_path / "modules.json").read_text(encoding="utf-8"))
    return value


async def deliver_with_a_worker(
    database_url: str, env: dict[str, str], log: Path, within: float = 30.0
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        with log.open("wb") as out:
            proc = spawn_worker(database_url, "--poll-interval", "0.05", env=env, output=out)
            try:

                async def drained() -> bool:
                    return bool(await conn.fetchval("SELECT count(*) = 0 FROM outbox.messages"))

                await until(drained, within=within)
            finally:
                proc.send_signal(signal.SIGTERM)
                code = proc.wait(30)
        assert code == 0, log.read_bytes().decode(errors="replace")  # noqa: ASYNC240
    finally:
        await conn.close()


async def test_a_worker_without_the_extra_forwards_the_producers_context_unchanged(
    database_url: str, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    with Receiver() as rx:
        await add_endpoint(conn, "hook", rx.url())
        await conn.execute(
            "SELECT outbox.enqueue('hook', '{}', traceparent => $1, tracestate => 'congo=t61')",
            TRACEPARENT,
        )
        env = child_env(tmp_path, block=True, OTEL_TRACES_EXPORTER="console")
        await deliver_with_a_worker(database_url, env, tmp_path / "worker.log")
    [got] = rx.snapshot()
    assert got.headers["traceparent"] == TRACEPARENT
    assert got.headers["tracestate"] == "congo=t61"
    assert loaded_modules(tmp_path) == []
    assert "opentelemetry-sdk is not installed" in (tmp_path / "worker.log").read_text()


async def test_with_the_extra_but_no_sdk_set_up_a_worker_imports_nothing_of_it(
    database_url: str, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    with Receiver() as rx:
        await add_endpoint(conn, "hook", rx.url())
        await conn.execute("SELECT outbox.enqueue('hook', '{}', traceparent => $1)", TRACEPARENT)
        await deliver_with_a_worker(
            database_url, child_env(tmp_path, block=False), tmp_path / "w.log"
        )
    assert rx.snapshot()[0].headers["traceparent"] == TRACEPARENT
    assert loaded_modules(tmp_path) == []


PRODUCER = textwrap.dedent(
    """
    import asyncio, sys
    import asyncpg, outbox

    async def main(url):
        conn = await asyncpg.connect(url)
        async with conn.transaction():
            await outbox.enqueue(conn, "hook", {"n": 1})
            await outbox.enqueue_many(conn, [{"endpoint": "hook", "payload": {"n": 2}}])
        await conn.close()

    asyncio.run(main(sys.argv[1]))
    """
)


@pytest.mark.parametrize("block", [True, False], ids=["extra-absent", "extra-unused"])
async def test_a_producer_without_opentelemetry_in_use_imports_none_of_it(
    database_url: str, conn: asyncpg.Connection, tmp_path: Path, block: bool
) -> None:
    await add_endpoint(conn, "hook", "https://example.com/in")
    done = subprocess.run(  # noqa: ASYNC221 - the producer is the process under test
        [sys.executable, "-c", PRODUCER, database_url],
        env={**os.environ, **child_env(tmp_path, block=block)},
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert loaded_modules(tmp_path) == []
    rows = await conn.fetch("SELECT traceparent FROM outbox.messages")
    assert [r["traceparent"] for r in rows] == [None, None]


def console_spans(text: str) -> list[dict[str, Any]]:
    """The spans the SDK's console exporter printed (indented JSON objects)."""
    decoder = json.JSONDecoder()
    spans, at = [], text.find('{\n    "name"')
    while at != -1:
        span, end = decoder.raw_decode(text, at)
        spans.append(span)
        at = text.find('{\n    "name"', end)
    return spans


async def test_a_worker_sets_up_the_sdk_from_the_otel_variables(
    database_url: str, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    with Receiver() as rx:
        await add_endpoint(conn, "hook", rx.url())
        async with conn.transaction():
            message_id = await outbox.enqueue(conn, "hook", {}, traceparent=TRACEPARENT)
        env = child_env(
            tmp_path, block=False, OTEL_TRACES_EXPORTER="console", OTEL_SERVICE_NAME="orders-fleet"
        )
        await deliver_with_a_worker(database_url, env, tmp_path / "worker.log")
    output = (tmp_path / "worker.log").read_text(errors="replace")
    [span] = [s for s in console_spans(output) if s["name"] == "POST hook"]
    assert span["context"]["trace_id"] == "0x" + TRACEPARENT[3:35]
    assert span["parent_id"] == "0x" + TRACEPARENT[36:52]
    assert span["kind"] == "SpanKind.CLIENT"
    assert span["attributes"]["outbox.message.id"] == str(message_id)
    assert span["resource"]["attributes"]["service.name"] == "orders-fleet"
    _, trace_id, parent_id, _ = rx.snapshot()[0].headers["traceparent"].split("-")
    assert "0x" + parent_id == span["context"]["span_id"]
    assert "0x" + trace_id == span["context"]["trace_id"]
    assert "opentelemetry.sdk.trace" in loaded_modules(tmp_path)
