"""Named SQL statements, loaded once from the files in ``sql/``.

Each file holds what one kind of caller runs (``produce.sql``,
``deliver.sql``, ``upkeep.sql``, ``operate.sql``, ``web.sql`` for the
dashboard, and ``schema.sql`` for migrations); ``QUERIES["enqueue"]`` is the text under the
``-- enqueue --`` line of whichever file has it (a name is used once across
all of them).
"""

from __future__ import annotations

import re
from importlib.resources import files

_HEADER = re.compile(r"^-- ([a-z_]+) --$", re.MULTILINE)
_FILES = ("produce.sql", "deliver.sql", "upkeep.sql", "operate.sql", "web.sql", "schema.sql")


def _load() -> dict[str, str]:
    queries: dict[str, str] = {}
    folder = files(__package__).joinpath("sql")
    for filename in _FILES:
        parts = _HEADER.split(folder.joinpath(filename).read_text(encoding="utf-8"))
        for name, body in zip(parts[1::2], parts[2::2], strict=True):
            statement = "\n".join(
                line for line in body.strip().splitlines() if not line.startswith("--")
            ).strip()
            if name in queries:
                raise RuntimeError(f"{filename} defines {name!r}, which another file has too")
            queries[name] = statement.rstrip(";")
    return queries


QUERIES: dict[str, str] = _load()


def roles_statements() -> list[str]:
    """The statements of ``roles.sql`` (least privilege), in order."""
    text = files(__package__).joinpath("roles.sql").read_text(encoding="utf-8")
    return [part.strip() for part in text.split("\n-- split --\n") if part.strip()]
