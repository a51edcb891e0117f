"""The databases one fleet serves: ``--database-url`` given more than once, or
``OUTBOX_DATABASE_URLS`` (separated by commas or whitespace), each entry
``URL`` or ``NAME=URL``.

A database's name is what its logs and metrics carry (``database="orders"``),
never its URL, which may hold a password. Unnamed, it is the URL's database
name (libpq's default when the URL has none: the user's name). Two entries
may not share a name; naming them tells them apart.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from outbox.errors import ConfigurationError

_SCHEMES = ("postgresql://", "postgres://", "postgresql+asyncpg://")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}")


@dataclass(frozen=True)
class Database:
    """One database of the fleet: its name in logs and metrics, and its URL."""

    name: str
    url: str

    def __repr__(self) -> str:  # the URL may hold a password
        return f"Database({self.name!r})"


# A comma starts a new entry only where a URL (or NAME=URL) follows it: inside
# a multi-host URL (postgresql://h1,h2/db) a host follows it.
_SEPARATOR = re.compile(
    r"\s+|,\s*(?=(?:[A-Za-z0-9_][A-Za-z0-9_.-]*=)?(?:postgresql|postgres)(?:\+asyncpg)?://)"
)


def split_urls(text: str) -> list[str]:
    """``OUTBOX_DATABASE_URLS``: entries separated by commas or whitespace (a URL
    holds no whitespace; the commas between the hosts of one multi-host URL do
    not separate entries)."""
    return [entry for entry in _SEPARATOR.split(text.strip()) if entry]


def default_name(url: str) -> str:
    """The database name a URL connects to: its path, else ``?dbname=``, else the
    user's name (libpq's default), else ``postgres``."""
    parts = urlsplit(url)
    name = unquote(parts.path.lstrip("/"))
    if not name:
        name = (parse_qs(parts.query).get("dbname") or [""])[0]
    if not name:
        userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""
        name = unquote(userinfo.partition(":")[0]) or "postgres"
    return name


def check_name(name: str, what: str) -> str:
    """``name`` if it can be a database's name in logs and metrics (a bad one is
    not shown: it may be a piece of a URL)."""
    if not _NAME.fullmatch(name):
        raise ConfigurationError(
            f"{what}: a database's name must be 1-63 letters, digits, '_', '.' or '-' "
            "(the name is not shown)"
        )
    return name


def parse_entry(entry: str, position: int) -> Database:
    """One entry: ``URL`` or ``NAME=URL`` (``position`` counts from 1, for errors)."""
    name, url = "", entry.strip()
    if not url.startswith(_SCHEMES):
        name, sep, url = url.partition("=")
        if not sep or not url.startswith(_SCHEMES):
            # The entry may hold a password: never echo it.
            raise ConfigurationError(
                f"database {position}: must be a postgresql:// URL or NAME=postgresql://... "
                "(the value is not shown)"
            )
        check_name(name, f"database {position}")
        return Database(name, url)
    if not _NAME.fullmatch(default := default_name(url)):
        raise ConfigurationError(
            f"database {position}: the database name in its URL cannot name it in logs and "
            "metrics (1-63 letters, digits, '_', '.' or '-'): give it one, as "
            "NAME=postgresql://..."
        )
    return Database(default, url)


def parse_databases(entries: Iterable[str]) -> list[Database]:
    """Every entry parsed; refuses an empty list and two entries of one name."""
    databases = [parse_entry(entry, i) for i, entry in enumerate(entries, 1)]
    if not databases:
        raise ConfigurationError(
            "no database configured: set OUTBOX_DATABASE_URL (or OUTBOX_DATABASE_URLS) "
            "or pass --database-url"
        )
    seen: dict[str, int] = {}
    for i, database in enumerate(databases, 1):
        if database.name in seen:
            raise ConfigurationError(
                f"databases {seen[database.name]} and {i} are both named {database.name!r}: "
                "name them apart, as NAME=postgresql://..."
            )
        seen[database.name] = i
    return databases
