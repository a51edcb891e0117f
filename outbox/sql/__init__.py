"""Named SQL statements, loaded once from ``queries.sql``.

``QUERIES["enqueue"]`` is the text under the ``-- enqueue --`` line.
"""

from __future__ import annotations

import re
from importlib.resources import files

_HEADER = re.compile(r"^-- ([a-z_]+) --$", re.MULTILINE)


def _load() -> dict[str, str]:
    text = files(__package__).joinpath("queries.sql").read_text(encoding="utf-8")
    parts = _HEADER.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        statement = "\n".join(
            line for line in body.strip().splitlines() if not line.startswith("--")
        ).strip()
        if name in queries:
            raise RuntimeError(f"queries.sql defines {name!r} twice")
        queries[name] = statement.rstrip(";")
    return queries


QUERIES: dict[str, str] = _load()


def roles_statements() -> list[str]:
    """The statements of ``roles.sql`` (least privilege), in order."""
    text = files(__package__).joinpath("roles.sql").read_text(encoding="utf-8")
    return [part.strip() for part in text.split("\n-- split --\n") if part.strip()]
