"""Kinds of endpoint setting: how a value is checked, stored and shown.

A kind knows the Python type of its values (a pydantic annotation, with its
bounds), how a value goes into its column and comes back, what it looks like
in ``outbox endpoint list --json``, and what kind of command-line flag takes
it (the CLI turns that into a click option).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, SecretStr

from outbox._redact import redact_url
from outbox.settings.template import check_template
from outbox.settings.values import check_exchange, check_headers, check_networks, storable_text

Flag = Literal["text", "int", "float", "duration", "switch", "choice", "header", "repeat"]


@dataclass(frozen=True, slots=True)
class Kind:
    """Plain values: stored as they are, listed under the column's name."""

    annotation: Any
    flag: Flag = "text"

    def to_db(self, value: Any) -> Any:
        return value

    def from_db(self, value: Any) -> Any:
        return value

    def cast(self) -> str:
        """What a bound parameter of this kind is cast through in SQL."""
        return ""

    def read(self, column: str) -> str:
        """How a query reads the column for `from_db` (as it is, unless said)."""
        return column

    def listed(self, column: str, value: Any) -> dict[str, Any]:
        """The setting in ``outbox endpoint list --json`` (as its column holds it)."""
        return {column: self.to_db(value)}

    def literal(self, value: Any) -> str:
        """A column value (what `to_db` gives) as a SQL literal: its server default."""
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int | float):
            return f"{value:g}" if isinstance(value, float) else str(value)
        return "'" + str(value).replace("'", "''") + "'"


def number(python: type[int] | type[float], **bounds: Any) -> Kind:
    """An integer or a float within ``bounds`` (pydantic's ge, gt, le)."""
    return Kind(Annotated[python, Field(**bounds)], "int" if python is int else "float")


def choice(*values: str) -> Kind:
    return Kind(Literal[values], "choice")


SWITCH = Kind(bool, "switch")
TEXT = Kind(str)
TEMPLATE = Kind(Annotated[str, AfterValidator(storable_text), AfterValidator(check_template)])
EXCHANGE = Kind(Annotated[str, AfterValidator(check_exchange)])


@dataclass(frozen=True, slots=True)
class Url(Kind):
    """A URL, listed with any password masked (a broker's URL may hold one)."""

    def listed(self, column: str, value: Any) -> dict[str, Any]:
        return {column: None if value is None else redact_url(value)}


URL = Url(str)


@dataclass(frozen=True, slots=True)
class Millis(Kind):
    """Seconds (a float) in Python, whole milliseconds in the column (``*_ms``)."""

    def to_db(self, value: Any) -> Any:
        return None if value is None else max(1, round(value * 1000))

    def from_db(self, value: Any) -> Any:
        return None if value is None else value / 1000


def millis(*, gt: float = 0, le: float, flag: Flag = "duration") -> Millis:
    return Millis(Annotated[float, Field(gt=gt, le=le)], flag)


@dataclass(frozen=True, slots=True)
class Interval(Kind):
    """A ``timedelta``, an interval column, listed as ``<column>_seconds``."""

    def listed(self, column: str, value: Any) -> dict[str, Any]:
        return {f"{column}_seconds": None if value is None else value.total_seconds()}

    def literal(self, value: Any) -> str:
        return f"'{value.total_seconds():g} seconds'::interval"


def interval(*, gt: timedelta = timedelta(0)) -> Interval:
    return Interval(Annotated[timedelta, Field(gt=gt)], "duration")


@dataclass(frozen=True, slots=True)
class Secret(Kind):
    """A secret: a ``SecretStr`` in Python (its repr hides it), never listed
    (only whether it is set)."""

    def to_db(self, value: Any) -> Any:
        return value.get_secret_value() if isinstance(value, SecretStr) else value

    def from_db(self, value: Any) -> Any:
        return None if value is None else SecretStr(value)

    def listed(self, column: str, value: Any) -> dict[str, Any]:
        return {f"has_{column}": value is not None}


@dataclass(frozen=True, slots=True)
class Headers(Kind):
    """Extra HTTP headers: a JSON object; listed by name only (values may be credentials)."""

    def to_db(self, value: Any) -> Any:
        return json.dumps(value)

    def from_db(self, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else dict(value)

    def cast(self) -> str:
        return "::text::jsonb"

    def listed(self, column: str, value: Any) -> dict[str, Any]:
        return {column: sorted(value or {})}

    def literal(self, value: Any) -> str:
        return f"'{value}'::jsonb"


@dataclass(frozen=True, slots=True)
class Networks(Kind):
    """Address ranges (CIDR), an array of cidr; none is stored as NULL."""

    def to_db(self, value: Any) -> Any:
        return list(value) or None

    def from_db(self, value: Any) -> Any:
        return tuple(str(n) for n in value or ())

    def cast(self) -> str:
        return "::text[]::cidr[]"

    def read(self, column: str) -> str:
        # As text: asyncpg has no codec of its own for cidr[] and looks the type
        # up on each new connection first (about 10 ms, the worker's start-up).
        return f"{column}::text[]"

    def listed(self, column: str, value: Any) -> dict[str, Any]:
        return {column: list(value or ())}


SECRET = Secret(SecretStr)
HEADERS = Headers(Annotated[dict[str, str], AfterValidator(check_headers)], "header")
NETWORKS = Networks(Annotated[tuple[str, ...], AfterValidator(check_networks)], "repeat")
