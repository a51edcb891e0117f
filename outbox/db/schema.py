"""The schema's current truth: every function, view and trigger, in ``schema/``.

Tables change through Alembic revisions, which are frozen history. Functions,
views and triggers are code: their current definitions live here, one file
per concern, and a database at the head revision has exactly these. After
``alembic upgrade head`` (``outbox migrate``), `apply` runs, in one
transaction: when the files differ from those last applied (a digest in
``outbox.schema_files``), every function, view and trigger of the outbox
schema is dropped and the files run again, with the privileges granted on
them kept. A revision's downgrade restores the set as it stood at the
revision below it, from that revision's frozen files (`restore`).

Changing a function: edit its file here; `outbox migrate` applies it. A new
revision that changes tables the files depend on first freezes the files as
they stand (its predecessor's set, for its downgrade).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any, Protocol

from outbox.db.queries import QUERIES

# In order: later files use what earlier ones define (enqueue's helpers, the
# channels' functions the catalog names).
FILES = (
    "enqueue.sql",
    "telegram.sql",
    "endpoints.sql",
    "topics.sql",
    "claim.sql",
    "health.sql",
    "rollups.sql",
    "views.sql",
    "alerts.sql",
    "operator.sql",
    "replay.sql",
)
SEPARATOR = "\n-- split --\n"


class Bind(Protocol):
    """What runs statements during a migration: a SQLAlchemy ``Connection``."""

    def exec_driver_sql(self, statement: str, parameters: Any = ..., /) -> Any: ...


def split(text: str) -> list[str]:
    """The statements of a schema file (separated by ``-- split --`` lines)."""
    return [part.strip() for part in text.split(SEPARATOR) if part.strip()]


def current() -> list[tuple[str, str]]:
    """(file name, text) of every file of the current truth, in order."""
    folder = files(__package__).joinpath("schema")
    return [(name, folder.joinpath(name).read_text(encoding="utf-8")) for name in FILES]


def digest() -> str:
    """A digest of the current files: what `apply` compares with the database's."""
    hashed = hashlib.sha256()
    for name, text in current():
        hashed.update(f"{name}\0{text}\0".encode())
    return hashed.hexdigest()


def apply(bind: Bind, channels: Iterable[Mapping[str, Any]] = ()) -> bool:
    """Give a database at the head revision the current functions, views and
    triggers (only if they changed since they were last applied), and write
    ``channels`` (catalog rows) into ``outbox.channels``. True if it applied."""
    wanted = digest()
    row = bind.exec_driver_sql(QUERIES["schema_digest"]).first()
    changed = row is None or row[0] != wanted
    if changed:
        _replace(bind, [statement for _, text in current() for statement in split(text)])
        bind.exec_driver_sql(QUERIES["schema_digest_set"], (wanted,))
    rows = list(channels)
    if rows:
        bind.exec_driver_sql(QUERIES["channels_upsert"], (json.dumps(rows),))
    return changed


def restore(bind: Bind, frozen: Sequence[Path]) -> None:
    """Put back the functions, views and triggers that ``frozen`` files (a
    revision's, in the order they were first applied) define, and nothing else."""
    _replace(bind, [s for path in frozen for s in split(path.read_text(encoding="utf-8"))])
    bind.exec_driver_sql(QUERIES["schema_digest_forget"])


def drop(bind: Bind) -> None:
    """Drop every function, view and trigger of the outbox schema (tables stay)."""
    bind.exec_driver_sql(QUERIES["schema_drop"])


def _replace(bind: Bind, statements: Sequence[str]) -> None:
    bind.exec_driver_sql(QUERIES["schema_keep_privileges"])
    drop(bind)
    for statement in statements:
        bind.exec_driver_sql(statement)
    bind.exec_driver_sql(QUERIES["schema_grant_again"])
