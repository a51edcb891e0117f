"""The README's examples are real files, run here against a real database."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.fixture
async def shop(conn: asyncpg.Connection) -> None:
    await conn.execute(
        "CREATE TABLE orders"
        " (id serial PRIMARY KEY, customer text NOT NULL, total numeric NOT NULL);"
        "INSERT INTO outbox.endpoints (name, channel, url) VALUES"
        " ('orders-webhook', 'webhook', 'https://shop.example/hooks/orders')"
    )


def run_example(name: str, url: str) -> None:
    env = {**os.environ, "OUTBOX_DATABASE_URL": url}
    subprocess.run([sys.executable, str(ROOT / "examples" / name)], env=env, check=True, timeout=60)


def shown_part(name: str) -> str:
    """What the README shows of an example: all of it but a Python file's docstring and imports."""
    lines = (ROOT / "examples" / name).read_text(encoding="utf-8").splitlines()
    if name.endswith(".py"):
        last_import = max(
            i for i, line in enumerate(lines) if line.startswith(("import ", "from "))
        )
        lines = lines[last_import + 1 :]
    return "\n".join(lines).strip()


@pytest.mark.parametrize(
    "name", ["produce_asyncpg.py", "produce_sqlalchemy.py", "produce.sql", "produce_node.js"]
)
def test_the_readme_shows_each_example_verbatim(name: str) -> None:
    assert shown_part(name) in README


@pytest.mark.usefixtures("shop")
async def test_asyncpg_example_commits_order_and_message_together(
    database_url: str, conn: asyncpg.Connection
) -> None:
    run_example("produce_asyncpg.py", database_url)
    order_id = await conn.fetchval("SELECT id FROM orders WHERE customer = 'ada'")
    row = await conn.fetchrow("SELECT payload, key, idempotency_key FROM outbox.messages")
    assert row is not None
    assert row["payload"]["order_id"] == order_id
    assert (row["key"], row["idempotency_key"]) == ("customer-ada", f"order-{order_id}")


@pytest.mark.usefixtures("shop")
async def test_sqlalchemy_example_writes_both_ways(
    database_url: str, conn: asyncpg.Connection
) -> None:
    run_example("produce_sqlalchemy.py", database_url)
    assert await conn.fetchval("SELECT count(*) FROM orders") == 2
    assert await conn.fetchval("SELECT count(*) FROM outbox.messages") == 102


@pytest.mark.usefixtures("shop")
async def test_sql_example_works_from_psql_style_text(conn: asyncpg.Connection) -> None:
    await conn.execute((ROOT / "examples" / "produce.sql").read_text(encoding="utf-8"))
    row = await conn.fetchrow("SELECT payload, key FROM outbox.messages")
    assert row is not None
    assert row["payload"] == {"event": "order.created", "total": 42}
    assert row["key"] == "customer-dee"


def test_quickstart_runs_end_to_end(database_url: str) -> None:
    """examples/quickstart.py: orders committed and rolled back, a worker process, retries."""
    env = {**os.environ, "OUTBOX_DATABASE_URL": database_url}
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK: every committed message arrived, no rolled-back one did" in done.stdout
    assert "rolled-back messages that arrived: 0" in done.stdout


@pytest.fixture(scope="session")
def node_pg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with node-postgres installed from the npm registry."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not installed")
    where = tmp_path_factory.mktemp("node")
    done = subprocess.run(
        ["npm", "install", "--silent", "--no-audit", "--no-fund", "pg@8"],
        cwd=where,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"npm could not install pg: {done.stderr[-300:]}")
    return where


@pytest.mark.usefixtures("shop")
async def test_node_example_commits_order_and_message_together(
    database_url: str, conn: asyncpg.Connection, node_pg: Path
) -> None:
    script = node_pg / "produce_node.js"
    shutil.copy(ROOT / "examples" / "produce_node.js", script)
    done = await asyncio.to_thread(
        subprocess.run,
        ["node", str(script)],
        env={**os.environ, "OUTBOX_DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    message_id = done.stdout.strip()
    row = await conn.fetchrow("SELECT id, payload, key FROM outbox.messages")
    order_id = await conn.fetchval("SELECT id FROM orders WHERE customer = 'grace'")
    assert str(row["id"]) == message_id
    assert row["payload"] == {"event": "order.created", "order_id": order_id}
    assert row["key"] == "customer-grace"


@pytest.mark.parametrize(
    ("name", "start"),
    [("fastapi_app.py", '@app.post("/orders"'), ("fastapi_receiver.py", '@app.post("/hooks')],
)
def test_the_readme_shows_the_fastapi_handlers_as_they_are_in_the_examples(
    name: str, start: str
) -> None:
    source = (ROOT / "examples" / name).read_text(encoding="utf-8")
    blocks = [b.split("```", 1)[0] for b in README.split("```python\n")[1:]]
    shown = [b.strip() for b in blocks if b.startswith(start) and "BackgroundTasks" not in b]
    assert shown, f"the README shows no handler of {name}"
    for block in shown:
        assert block in source
