"""Reading what people type: payloads, headers, durations, times, ids; and a
progress bar for long operations."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from outbox.errors import InvalidInputError
from outbox.operate.dead import BATCH
from outbox.settings.values import parse_duration, parse_when


def parse_headers(values: tuple[str, ...], option: str = "--header") -> dict[str, str]:
    """``'Name: value'`` pairs as a dict."""
    headers: dict[str, str] = {}
    for raw in values:
        name, sep, value = raw.partition(":")
        if not sep or not name.strip():
            raise InvalidInputError(option, f"{raw!r} is not of the form 'Name: value'")
        headers[name.strip()] = value.strip()
    return headers


def read_payload(value: str, option: str = "--payload") -> dict[str, Any]:
    """A JSON object given inline, as ``@FILE`` or as ``-`` (stdin)."""
    if value == "-":
        value = sys.stdin.read()
    elif value.startswith("@"):
        try:
            value = Path(value[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidInputError(option, f"cannot read {value[1:]!r}: {exc.strerror}") from None
    try:
        payload = json.loads(value)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(option, f"is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise InvalidInputError(option, f"must be a JSON object, not {type(payload).__name__}")
    return payload


def seconds(value: str | None, option: str) -> int | None:
    """A duration (``30d``) in whole seconds."""
    return None if value is None else round(parse_duration(value, option).total_seconds())


def message_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidInputError("id", f"{value!r} is not a message id (a UUID)") from None


def when(value: str | None, option: str) -> datetime | None:
    """An ISO 8601 time (UTC if no offset), or an age such as ``2h`` (that long ago)."""
    return None if value is None else parse_when(value, option)


class Progress:
    """A progress bar on stderr when the total is known and large enough to matter."""

    def __init__(self, what: str, total: int | None) -> None:
        self.what = what
        self.total = total
        self._bar: Any = None

    def __enter__(self) -> Callable[[int], None]:
        if self.total and self.total > BATCH:
            from rich.console import Console
            from rich.progress import Progress as Bar

            self._bar = Bar(console=Console(stderr=True), transient=True)
            self._bar.start()
            task = self._bar.add_task(self.what, total=self.total)
            return lambda n: self._bar.advance(task, n)
        return lambda _n: None

    def __exit__(self, *_: object) -> None:
        if self._bar is not None:
            self._bar.stop()
