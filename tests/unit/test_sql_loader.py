"""Every named statement loads, once, without its comments."""

from __future__ import annotations

from outbox.db.queries import QUERIES


def test_statements_load_without_comment_lines() -> None:
    assert "enqueue" in QUERIES
    for name, statement in QUERIES.items():
        assert statement, name
        assert not any(line.startswith("--") for line in statement.splitlines()), name
        assert not statement.endswith(";"), name


def test_asyncpg_statements_use_positional_and_named_ones_use_names() -> None:
    for name, statement in QUERIES.items():
        if name.endswith("_named"):
            assert any(
                f":{name}" in statement for name in ("endpoint", "endpoints", "topic", "topics")
            )
            assert "$1" not in statement
