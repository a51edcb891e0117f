"""Run the Alembic migrations programmatically (`outbox migrate`, tests, demo)."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from alembic import command
from outbox._redact import redact_text
from outbox.errors import DatabaseError

_PACKAGE = Path(__file__).resolve().parent.parent  # outbox/


def _locations() -> tuple[Path, Path]:
    """(alembic.ini, alembic/) in a source checkout, else the copies in the wheel."""
    root = _PACKAGE.parent
    if (root / "alembic.ini").is_file() and (root / "alembic" / "env.py").is_file():
        return root / "alembic.ini", root / "alembic"
    return _PACKAGE / "_alembic.ini", _PACKAGE / "_alembic"


def alembic_config(url: str) -> Config:
    ini, scripts = _locations()
    cfg = Config(str(ini))
    cfg.set_main_option("script_location", str(scripts))
    cfg.set_main_option("version_locations", str(scripts / "versions"))
    cfg.attributes["database_url"] = url
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """``alembic upgrade <revision>``; idempotent at head."""
    _run(lambda: command.upgrade(alembic_config(url), revision), url)


def downgrade(url: str, revision: str = "base") -> None:
    """``alembic downgrade <revision>``."""
    _run(lambda: command.downgrade(alembic_config(url), revision), url)


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config("postgresql://unused")).get_current_head()
    assert head is not None
    return head


def _run(action: object, url: str) -> None:
    assert callable(action)
    try:
        action()
    except DatabaseError:
        raise
    except Exception as exc:
        if type(exc).__module__.startswith(("sqlalchemy", "asyncpg", "alembic")) or isinstance(
            exc, OSError
        ):
            raise DatabaseError(
                f"migration failed: {redact_text(str(exc).splitlines()[0], (url,))}"
            ) from None
        raise


def current_revision(sync_url: str) -> str | None:
    """The revision a database is at (takes a synchronous SQLAlchemy URL)."""
    engine = create_engine(sync_url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"version_table_schema": "outbox"})
            return ctx.get_current_revision()
    finally:
        engine.dispose()
