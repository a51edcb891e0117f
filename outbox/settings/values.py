"""Values outbox takes, parsed and checked (pure): durations, address ranges,
header sets, and text PostgreSQL can store."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from outbox.errors import InvalidInputError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: str, field: str) -> timedelta:
    """``90``, ``90s``, ``15m``, ``2h``, ``5d`` or ``250ms`` as a timedelta."""
    match = _DURATION.match(value)
    if not match:
        raise InvalidInputError(
            field, f"{value!r} is not a duration (e.g. 30s, 15m, 2h, 5d; a bare number is seconds)"
        )
    try:
        return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])
    except OverflowError:
        raise InvalidInputError(field, f"{value!r} is too long a duration") from None


def parse_when(value: str, field: str) -> datetime:
    """An ISO 8601 time (UTC if no offset), or an age such as ``2h`` (that long ago)."""
    try:
        return datetime.now(UTC) - parse_duration(value, field)
    except InvalidInputError:
        pass
    except OverflowError:
        raise InvalidInputError(field, f"{value!r} reaches before year 1") from None
    try:
        moment = datetime.fromisoformat(value.strip())
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError):
        raise InvalidInputError(
            field, f"{value!r} is neither a time (2026-11-22T10:00:00Z) nor an age (2h)"
        ) from None


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """CIDR ranges (or single addresses); a bad one raises ValueError naming it."""
    networks: list[Network] = []
    for value in values:
        text = value.strip()
        if not text:
            continue
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(f"{text!r} is not an address range (e.g. 10.0.0.0/8)") from None
    return tuple(networks)


def check_networks(values: Iterable[str]) -> tuple[str, ...]:
    """Address ranges in canonical CIDR form; a bad one names itself."""
    return tuple(str(n) for n in parse_networks(values))


_EXCHANGE = re.compile(r"^[A-Za-z0-9_.:-]{0,127}$")


def check_exchange(name: str) -> str:
    """An AMQP exchange name (letters, digits, ``-_.:``, at most 127; '' is the default)."""
    if not _EXCHANGE.match(name):
        raise ValueError(
            f"{name!r} is not an exchange name (letters, digits and -_.: only, at most 127)"
        )
    return name


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
        "outbox-topic",  # what it was published as, and a replay's mark: the worker's say
        "outbox-replay",
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
