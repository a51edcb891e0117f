"""Turn PostgreSQL errors from any driver into errors from our tree.

``outbox.enqueue()`` raises SQLSTATE ``OB001`` (unknown endpoint), ``OB002``
(invalid argument) and ``OB003`` (too large) with the message ``field: problem``
and the field in the COLUMN field. asyncpg, psycopg and SQLAlchemy's wrappers
all carry these, each in its own attribute.
"""

from __future__ import annotations

from outbox.errors import (
    DatabaseError,
    InvalidInputError,
    PayloadTooLargeError,
    UnknownEndpointError,
)

_OURS: dict[str, type[InvalidInputError]] = {
    "OB001": UnknownEndpointError,
    "OB002": InvalidInputError,
    "OB003": PayloadTooLargeError,
}
# 3F000 invalid_schema_name, 42883 undefined_function, 42P01 undefined_table
_SCHEMA_MISSING = {"3F000", "42883", "42P01"}


def _details(exc: BaseException) -> tuple[str | None, str, str | None]:
    """(sqlstate, primary message, hint) from the first error in the chain that has them."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        sqlstate = getattr(current, "sqlstate", None) or getattr(current, "pgcode", None)
        if isinstance(sqlstate, str):
            diag = getattr(current, "diag", None)
            message = getattr(diag, "message_primary", None) or getattr(current, "message", None)
            hint = getattr(diag, "message_hint", None) or getattr(current, "hint", None)
            if not isinstance(message, str):
                message = str(current).splitlines()[0] if str(current) else ""
            return sqlstate, message, hint if isinstance(hint, str) else None
        current = getattr(current, "orig", None) or current.__cause__
    return None, "", None


def translate(exc: BaseException) -> BaseException:
    """Our error for ``exc``, or ``exc`` itself when it is not one we understand."""
    sqlstate, message, hint = _details(exc)
    if sqlstate in _OURS:
        field, sep, problem = message.partition(": ")
        if not sep:
            field, problem = "input", message
        return _OURS[sqlstate](field, problem, hint=hint)
    if sqlstate in _SCHEMA_MISSING and "outbox" in message:
        return DatabaseError(
            f"the outbox schema is missing or out of date ({message}); run `outbox migrate`"
        )
    return exc
