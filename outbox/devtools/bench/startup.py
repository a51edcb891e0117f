"""The `startup` scenario: from starting a worker process to its first delivery.

A backlog of null-channel messages waits; each round starts one ``outbox
worker`` process and takes the time from just before it is started to the
``started_at`` of the first attempt in the ledger (the same host's clock),
then stops it. What a rolling restart pays on every process: the
interpreter, the imports, the pool, the first endpoint load and the first
claim. The package's bytecode is compiled first, as ``pip install`` does:
under ``PYTHONDONTWRITEBYTECODE`` every start would otherwise compile the
package's source again (about 100 ms here).
"""

from __future__ import annotations

import asyncio
import compileall
import time
from pathlib import Path
from typing import Any

from outbox.db.connect import connect
from outbox.devtools.bench.common import Figure, ensure_endpoint, fill_backlog
from outbox.devtools.processes import spawn_worker

ENDPOINT = "bench-startup"


async def run(url: str, *, rounds: int = 5, progress: Any = None) -> dict[str, Any]:
    import outbox

    compileall.compile_dir(Path(outbox.__file__).parent, quiet=1)
    conn = await connect(url)
    first = Figure("start_to_first_delivery", "ms")
    try:
        await ensure_endpoint(conn, ENDPOINT)
        for _ in range(max(rounds, 5)):  # a median of at least 5
            await fill_backlog(conn, ENDPOINT, 1000)
            since = await conn.fetchval("SELECT clock_timestamp()")
            started = time.time()
            proc = spawn_worker(url)
            try:
                while (at := await _first(conn, since)) is None:
                    if proc.poll() is not None:
                        raise RuntimeError(f"the worker exited with {proc.returncode}")
                    await asyncio.sleep(0.002)
            finally:
                proc.terminate()
                proc.wait(30)
            first.rounds.append((at.timestamp() - started) * 1000)
            if progress:
                progress(first.name, first.rounds[-1])
    finally:
        await conn.execute("DELETE FROM outbox.messages WHERE endpoint = $1", ENDPOINT)
        await conn.close()
    return {"scenario": "startup", first.name: first.to_json()}


async def _first(conn: Any, since: Any) -> Any:
    return await conn.fetchval(
        "SELECT min(started_at) FROM outbox.attempts WHERE endpoint = $1 AND started_at >= $2",
        ENDPOINT,
        since,
    )
