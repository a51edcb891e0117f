"""A worker process's log: JSON lines with the event's fields, and no secret."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import asyncpg
import pytest
from support import WorkerProcess

import outbox
from outbox.devtools.fake_telegram import Call, FakeTelegram, reply
from outbox.devtools.receiver import Action, Receiver, fail_first

pytestmark = pytest.mark.e2e

TOKEN = "555555555:AAJsonLogsMustNeverShowThisToken_xyz123"


async def test_json_logs_carry_each_failure_and_no_secret(
    database_url: str, conn: asyncpg.Connection, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    def bot(call: Call) -> Action:
        return Action(500, body=f"/bot{TOKEN}/x failed") if call.nth == 1 else reply()

    with Receiver(fail_first(1, Action(503))) as rx, FakeTelegram(bot) as tg:
        await conn.execute(
            "INSERT INTO outbox.endpoints (name, channel, url, secret) VALUES"
            " ('hook', 'webhook', $1, 'whsec_c2VjcmV0LXNpZ25pbmcta2V5LTEyMzQ1Njc4OQ=='),"
            " ('bot', 'telegram', $2, $3)",
            rx.url(),
            tg.api_url,
            TOKEN,
        )
        async with conn.transaction():
            [hook_id, bot_id] = await outbox.enqueue_many(
                conn,
                [
                    {"endpoint": "hook", "payload": {"n": 1}},
                    {"endpoint": "bot", "payload": {"chat_id": 1, "text": "hi"}},
                ],
            )
        worker = WorkerProcess(database_url, "--log-format", "json", log_dir=tmp_path)
        workers.append(worker)
        for _ in range(300):
            if not await conn.fetchval("SELECT count(*) FROM outbox.messages"):
                break
            await asyncio.sleep(0.1)
        worker.signal(signal.SIGTERM)
        assert worker.wait(30) == 0, worker.output()
    lines = [json.loads(line) for line in worker.output().splitlines() if line.startswith("{")]
    assert lines, worker.output()
    assert all({"ts", "level", "logger", "message"} <= set(line) for line in lines)
    failures = {line["message_id"]: line for line in lines if "message_id" in line}
    hook = failures[str(hook_id)]
    assert (hook["endpoint"], hook["attempt"], hook["status"], hook["decision"]) == (
        "hook",
        1,
        503,
        "retrying",
    )
    assert failures[str(bot_id)]["status"] == 500
    assert TOKEN.split(":")[1] not in worker.output()
    assert "c2VjcmV0LXNpZ25pbmcta2V5" not in worker.output()
