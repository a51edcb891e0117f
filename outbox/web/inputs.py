"""What the dashboard takes from a query string, a path or a form: text
PostgreSQL can store (no NUL, no lone surrogate), not overlong; anything
else is an `InvalidInputError` naming the field (a 400 page, never a 500)."""

from __future__ import annotations

from typing import Any

from outbox.errors import InvalidInputError
from outbox.settings.values import text_problem

MAX_CHARS = 1000


def text(value: Any, field: str) -> str:
    """``value`` as stripped text, checked; absent is ``""``."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidInputError(field, "must be text")
    problem = text_problem(value)
    if problem:
        raise InvalidInputError(field, problem)
    if len(value) > MAX_CHARS:
        raise InvalidInputError(field, f"is longer than {MAX_CHARS} characters")
    return value.strip()
