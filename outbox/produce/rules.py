"""What a message must be, checked in Python before a round trip.

Pure functions, no I/O: the limits ``outbox.enqueue()`` enforces in SQL, and
the text rules PostgreSQL imposes (no NUL, no lone surrogate), so that a
mistake gets a precise message and the caller's transaction stays usable.
``outbox.enqueue()`` in SQL remains the one truth every producer, in any
language, passes through.
"""

from __future__ import annotations

import json
import re
from typing import Any

from outbox.errors import InvalidInputError

PRIORITY_MIN, PRIORITY_MAX = -32768, 32767
KEY_MAX_CHARS = 255
# Headers outbox sets itself; neither an endpoint nor a message may override them.
RESERVED_HEADERS = frozenset(
    {
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "content-length",
        "content-type",
        "host",
        "transfer-encoding",
        "connection",
    }
)
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")
_HEADER_VALUE_FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def check_headers(headers: dict[str, str]) -> dict[str, str]:
    """Header names are HTTP tokens, values single-line strings, none reserved
    (raises ValueError naming the header)."""
    for name, value in headers.items():
        if not _HEADER_NAME.match(name):
            raise ValueError(f"{name!r} is not a valid header name")
        if name.lower() in RESERVED_HEADERS:
            raise ValueError(f"{name!r} is set by outbox and cannot be overridden")
        if not isinstance(value, str):
            raise ValueError(f"{name!r} must be a string")
        if _HEADER_VALUE_FORBIDDEN.search(value):
            raise ValueError(f"{name!r} must not contain control characters")
        problem = text_problem(value)
        if problem:
            raise ValueError(f"{name!r} {problem}")
    return headers


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


def text_problem(text: str) -> str | None:
    """Why PostgreSQL cannot store ``text`` (a NUL, or a lone surrogate that is
    not Unicode text and has no UTF-8 form), or None."""
    if text.isascii():
        return "contains a NUL character, which PostgreSQL cannot store" if "\x00" in text else None
    if "\x00" in text:
        return "contains a NUL character, which PostgreSQL cannot store"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"contains {text[exc.start]!r} (a lone surrogate), which is not valid Unicode text"
    return None


def storable_text(value: str | None) -> str | None:
    """``value`` itself if PostgreSQL can store it (for pydantic validators)."""
    problem = None if value is None else text_problem(value)
    if problem:
        raise ValueError(problem)
    return value
