"""What a message must be, checked in Python before a round trip.

Pure functions, no I/O: the limits ``outbox.enqueue()`` enforces in SQL, and
what PostgreSQL's jsonb cannot store (no NUL, no lone surrogate), so that a
mistake gets a precise message and the caller's transaction stays usable.
``outbox.enqueue()`` in SQL remains the one truth every producer, in any
language, passes through.
"""

from __future__ import annotations

import json
import re
from typing import Any

from outbox.errors import InvalidInputError
from outbox.settings.values import text_problem

PRIORITY_MIN, PRIORITY_MAX = -32768, 32767
KEY_MAX_CHARS = 255


def payload_json(payload: dict[str, Any], field: str = "payload") -> str:
    """Serialise a payload for jsonb, rejecting what PostgreSQL cannot store."""
    try:
        text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except RecursionError:
        raise InvalidInputError(
            field, "nests too deeply to serialise (Python's recursion limit)"
        ) from None
    except ValueError as exc:
        if "Out of range float" in str(exc):
            raise InvalidInputError(
                field, "contains NaN or Infinity, which JSON cannot represent"
            ) from None
        raise InvalidInputError(field, f"cannot be serialised as JSON: {exc}") from None
    except TypeError as exc:
        raise InvalidInputError(field, f"is not JSON-serialisable: {exc}") from None
    if "\\u0000" in text and escaped_nul(text):
        raise InvalidInputError(
            field, "contains a NUL character (\\u0000), which PostgreSQL jsonb cannot store"
        )
    problem = text_problem(text)
    if problem:
        raise InvalidInputError(field, problem)
    return text


# JSON text's escape for a NUL: \u0000 after an even number of backslashes (an
# odd number makes it the six characters "\u0000" in a string, which is fine).
_ESCAPED_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def escaped_nul(json_text: str) -> bool:
    """Does this JSON text hold a NUL character (which jsonb cannot store)?"""
    return _ESCAPED_NUL.search(json_text) is not None
