"""The shared fixtures in tests/conftest.py, and the embedded server behind them."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from outbox.db import migrate
from outbox.db.connect import connection
from outbox.devtools.embedded import EmbeddedPostgres

_databases_seen: set[str] = set()


@pytest.mark.parametrize("run", ["first", "second"])
async def test_each_test_gets_its_own_migrated_database_without_earlier_rows(
    conn: asyncpg.Connection, template_database: str, run: str
) -> None:
    name = await conn.fetchval("SELECT current_database()")
    assert name != template_database
    assert name not in _databases_seen
    _databases_seen.add(name)

    assert await conn.fetchval("SELECT to_regclass('outbox.messages')") is not None
    assert await conn.fetchval("SELECT count(*) FROM outbox.messages") == 0
    # A row the other run wrote is not here.
    assert await conn.fetchval("SELECT to_regclass('public.written_by_a_test')") is None
    await conn.execute("CREATE TABLE public.written_by_a_test AS SELECT $1::text AS run", run)


async def test_the_template_database_is_migrated_to_head(
    pg_server_url: str, template_database: str
) -> None:
    async with connection(pg_server_url, database=template_database) as tpl:
        version = await tpl.fetchval("SELECT version_num FROM outbox.alembic_version")
    assert version == migrate.head_revision()


@pytest.fixture
def scratch_dir() -> Iterator[Path]:
    # Under /tmp: the server user must be able to reach it when the tests run as root.
    path = Path(tempfile.mkdtemp(prefix="outbox-embedded-test-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_embedded_server_keeps_its_port_and_data_across_stop_restart_and_kill(
    scratch_dir: Path,
) -> None:
    server = EmbeddedPostgres(scratch_dir / "pgdata")
    with server:
        port = server.port
        async with connection(server.url()) as db:
            await db.execute("CREATE TABLE kept (n int); INSERT INTO kept VALUES (1)")

        server.stop()
        assert not server.is_running()
        server.start()
        server.restart()
        server.kill()  # a crash: committed rows survive recovery
        assert not server.is_running()
        server.start()

        assert server.is_running()
        assert server.port == port
        assert server.url() == f"postgresql://postgres@127.0.0.1:{port}/postgres"
        async with connection(server.url()) as db:
            assert await db.fetchval("SELECT n FROM kept") == 1
    assert not server.is_running()
