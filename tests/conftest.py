"""Shared fixtures: a PostgreSQL server, a migrated template, a fresh database per test.

The server is chosen once per session, first match wins:

1. ``OUTBOX_TEST_DATABASE_URL`` — an admin URL of a server you run (the role needs
   CREATEDB: every test gets its own database on it);
2. a testcontainers ``postgres:16-alpine`` container, when a Docker engine answers;
3. an embedded server (`outbox.devtools.embedded`) in a temporary directory under /tmp,
   removed at the end of the session.

The choice is shown in the pytest header. Migrations run once, into a template
database; each test then gets ``CREATE DATABASE ... TEMPLATE`` of it.

With ``OUTBOX_TEST_THROUGH_PGBOUNCER`` set, one PgBouncer in transaction mode
sits in front of that server for the session, and the workers the tests start
connect through it (`support.worker_route`); producers and the tests' own
checks still connect directly.
"""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import socket
import tempfile
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import psycopg
import pytest
import support
from pgbouncer import PgBouncer
from psycopg import sql
from support import WorkerProcess, children

from outbox._redact import redact_url
from outbox.db import migrate
from outbox.db.connect import asyncpg_url, connect

URL_VARIABLE = "OUTBOX_TEST_DATABASE_URL"
POOLER_VARIABLE = "OUTBOX_TEST_THROUGH_PGBOUNCER"
CONTAINER_IMAGE = "postgres:16-alpine"


def with_database(url: str, database: str) -> str:
    """``url`` (normalised to ``postgresql://``) naming ``database`` instead."""
    return urlsplit(asyncpg_url(url))._replace(path=f"/{database}").geturl()


def _unique_name(prefix: str) -> str:
    return f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"


def _admin(server_url: str, statement: sql.Composed) -> None:
    """Run one statement (CREATE/DROP DATABASE) outside a transaction."""
    with psycopg.connect(asyncpg_url(server_url), autocommit=True) as admin:
        admin.execute(statement)


def _docker_answers(timeout: float = 1.0) -> bool:
    """Does a Docker engine answer ``GET /_ping``?

    Plain sockets rather than the docker SDK: without a daemon the SDK leaks a
    socket (a ResourceWarning, an error under ``filterwarnings = error``).
    Only ``DOCKER_HOST`` (unix:// or plain tcp://) and the default socket are tried.
    """
    target = urlsplit(os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock")
    request = b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n"
    try:
        if target.scheme == "unix":
            if not Path(target.path).exists():
                return False
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                sock.connect(target.path)
                sock.sendall(request)
                reply = sock.recv(64)
        elif target.scheme == "tcp" and target.hostname:
            address = (target.hostname, target.port or 2375)
            with socket.create_connection(address, timeout=timeout) as sock:
                sock.sendall(request)
                reply = sock.recv(64)
        else:
            return False
    except OSError:
        return False
    return reply.startswith(b"HTTP/1.") and b" 200 " in reply


@functools.cache
def _backend() -> str:
    """``url``, ``docker`` or ``embedded`` (decided once per session)."""
    if os.environ.get(URL_VARIABLE):
        return "url"
    return "docker" if _docker_answers() else "embedded"


def pytest_report_header(config: pytest.Config) -> str:
    descriptions = {
        "url": f"{URL_VARIABLE}={redact_url(os.environ.get(URL_VARIABLE, ''))}",
        "docker": f"testcontainers {CONTAINER_IMAGE} (a Docker engine answered)",
        "embedded": "embedded PostgreSQL (outbox.devtools.embedded) in a temporary dir under /tmp",
    }
    through = " (workers through PgBouncer)" if os.environ.get(POOLER_VARIABLE) else ""
    return f"outbox test database: {descriptions[_backend()]}{through}"


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """Admin URL (``postgresql://``) of the session's server; see the module docstring."""
    backend = _backend()
    if backend == "url":
        yield asyncpg_url(os.environ[URL_VARIABLE])
    elif backend == "docker":
        from testcontainers.community.postgres import PostgresContainer

        container = PostgresContainer(CONTAINER_IMAGE, driver=None)
        with warnings.catch_warnings():  # third-party deprecations are not ours to fix here
            warnings.simplefilter("ignore", DeprecationWarning)
            container.start()
        try:
            yield container.get_connection_url()
        finally:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                container.stop()
    else:
        from outbox.devtools.embedded import EmbeddedPostgres

        # Directly under /tmp: a short socket path, and traversable by the unprivileged
        # user the server runs as when the tests run as root.
        workdir = Path(tempfile.mkdtemp(prefix="outbox-test-pg-", dir="/tmp"))
        server = EmbeddedPostgres(workdir / "pgdata")
        try:
            server.start()
            yield server.url()
        finally:
            try:
                server.stop("immediate")  # the data is thrown away: skip the checkpoint
            finally:
                shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def template_database(pg_server_url: str) -> Iterator[str]:
    """Name of a database migrated to head once per session; the per-test template."""
    name = _unique_name("outbox_tpl")
    _admin(pg_server_url, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        migrate.upgrade(with_database(pg_server_url, name))
        yield name
    finally:
        drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
        _admin(pg_server_url, drop.format(sql.Identifier(name)))


@pytest.fixture
def database_url(pg_server_url: str, template_database: str) -> Iterator[str]:
    """URL of a fresh, migrated database of this test's own; dropped afterwards."""
    name = _unique_name("outbox_test")
    create = sql.SQL("CREATE DATABASE {} TEMPLATE {}")
    _admin(pg_server_url, create.format(sql.Identifier(name), sql.Identifier(template_database)))
    try:
        yield with_database(pg_server_url, name)
    finally:
        drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
        _admin(pg_server_url, drop.format(sql.Identifier(name)))


@pytest.fixture
def new_database(pg_server_url: str, template_database: str) -> Iterator[Callable[..., str]]:
    """Makes more fresh, migrated databases for one test (a fleet's):
    ``new_database()``, or ``new_database(name)``, returns its URL. All are
    dropped afterwards."""
    made: list[str] = []

    def make(name: str | None = None) -> str:
        name = name or _unique_name("outbox_more")
        create = sql.SQL("CREATE DATABASE {} TEMPLATE {}")
        _admin(
            pg_server_url, create.format(sql.Identifier(name), sql.Identifier(template_database))
        )
        made.append(name)
        return with_database(pg_server_url, name)

    try:
        yield make
    finally:
        drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
        for name in made:
            _admin(pg_server_url, drop.format(sql.Identifier(name)))


@pytest.fixture
def blank_database_url(pg_server_url: str) -> Iterator[str]:
    """URL of an empty database of this test's own (no outbox schema): a receiver's,
    say; dropped afterwards."""
    name = _unique_name("outbox_blank")
    _admin(pg_server_url, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_database(pg_server_url, name)
    finally:
        drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
        _admin(pg_server_url, drop.format(sql.Identifier(name)))


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """An asyncpg connection (`outbox.db.connect`) to this test's database."""
    connection = await connect(database_url)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
def pgbouncer(pg_server_url: str) -> Iterator[PgBouncer]:
    """A PgBouncer in transaction mode in front of the test server (`pgbouncer.PgBouncer`)."""
    bouncer = PgBouncer(pg_server_url)
    try:
        yield bouncer
    finally:
        bouncer.stop()


@pytest.fixture(scope="session", autouse=True)
def _workers_through_pgbouncer(request: pytest.FixtureRequest) -> Iterator[None]:
    """The session's PgBouncer for the workers, with ``OUTBOX_TEST_THROUGH_PGBOUNCER``."""
    if not os.environ.get(POOLER_VARIABLE):
        yield
        return
    bouncer = PgBouncer(request.getfixturevalue("pg_server_url"))
    support.POOLER.append(bouncer)
    try:
        yield
    finally:
        support.POOLER.clear()
        bouncer.stop()


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    """Worker processes (`support.WorkerProcess`) a test starts, always killed at
    the end, with any children."""
    started: list[WorkerProcess] = []
    yield started
    for w in started:
        for child in children(w.proc.pid):
            child.kill()
        w.kill()
