"""A channel from another package: registered through the ``outbox.channels``
entry point, it is one declaration, and ``outbox endpoint add --channel``,
``outbox.channels`` and the worker all know it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import asyncpg
from support import WorkerProcess, enqueue, until

from outbox.deliver.channels import registry

PLUGIN = '''
"""A channel of its own: each message's id and payload as a line of a file."""

import json
from datetime import UTC, datetime

from outbox.deliver.channels.spec import ChannelSpec
from outbox.deliver.model import AttemptResult
from outbox.deliver.policy import Classification, Health, Verdict


class FileSink:
    async def send(self, delivery, endpoint):
        path = endpoint.url.removeprefix("file://")
        with open(path, "a", encoding="utf-8") as out:
            for m in delivery.messages:
                out.write(json.dumps({"id": str(m.id), "payload": json.loads(m.payload)}) + "\\n")
        return AttemptResult(
            Classification(Verdict.DELIVERED, "written", health=Health.OK),
            datetime.now(UTC),
            0.0,
        )

    async def aclose(self):
        return None


def _check(url):
    if not url.startswith("file:///"):
        raise ValueError("must be a file:/// URL")
    return url


SPEC = ChannelSpec(
    name="filesink",
    summary="append each message to a file (a test's own channel)",
    open=lambda context: FileSink(),
    url="required",
    url_pattern="^file:///",
    check_url=_check,
)
'''


def install_plugin(root: Path) -> Path:
    """The plugin as an installed distribution would leave it: a module and its
    dist-info with the entry point, on a directory put on PYTHONPATH."""
    root.mkdir()
    (root / "outbox_filesink.py").write_text(textwrap.dedent(PLUGIN), encoding="utf-8")
    info = root / "outbox_filesink-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: outbox-filesink\nVersion: 0.1\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text(
        "[outbox.channels]\nfilesink = outbox_filesink:SPEC\n", encoding="utf-8"
    )
    return root


def outbox(url: str, plugin: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(plugin), "OUTBOX_DATABASE_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "outbox", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


async def test_a_channel_of_another_package_is_added_and_delivered_through(
    database_url: str, conn: asyncpg.Connection, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    plugin = install_plugin(tmp_path / "site")
    sink = tmp_path / "out.jsonl"
    refused = outbox(database_url, plugin, "endpoint", "add", "s", "--channel", "filesink",
                     "--url", "https://example.com/")  # fmt: skip
    assert refused.returncode == 2
    assert "must be a file:/// URL" in refused.stderr
    added = outbox(database_url, plugin, "endpoint", "add", "sink", "--channel", "filesink",
                   "--url", f"file://{sink}")  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert await conn.fetchval("SELECT summary FROM outbox.channels WHERE name = 'filesink'") == (
        "append each message to a file (a test's own channel)"
    )
    ids = {str(i) for i in await enqueue(conn, "sink", 5)}
    env_path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(plugin)  # the worker process finds the plugin
    try:
        workers.append(WorkerProcess(database_url, log_dir=tmp_path))
    finally:
        if env_path is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = env_path
    await until(lambda: conn.fetchval("SELECT count(*) = 0 FROM outbox.messages"), within=30)
    lines = [json.loads(line) for line in sink.read_text(encoding="utf-8").splitlines()]
    assert {line["id"] for line in lines} == ids
    assert sorted(line["payload"]["n"] for line in lines) == [0, 1, 2, 3, 4]
    assert (
        await conn.fetchval(
            "SELECT count(*) FROM outbox.attempts WHERE endpoint = 'sink' AND outcome = 'delivered'"
        )
        == 5
    )
    listed = json.loads(outbox(database_url, plugin, "endpoint", "list", "--json").stdout)
    assert [(e["name"], e["channel"]) for e in listed] == [("sink", "filesink")]


def test_without_the_package_the_channel_is_unknown(tmp_path: Path) -> None:
    done = outbox("postgresql://unused", tmp_path, "endpoint", "add", "x", "--channel",
                  "filesink")  # fmt: skip
    assert done.returncode == 2
    known = ", ".join(f"'{name}'" for name in registry.channels())
    assert f"'filesink' is not one of {known}" in done.stderr
