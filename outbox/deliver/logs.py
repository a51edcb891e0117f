"""Log lines: JSON for machines, readable text on a terminal; secrets never.

``outbox worker`` logs one event per failed attempt with its message id,
endpoint, attempt number, status, error and what happens next (the worker
passes them as ``extra`` fields); in JSON each is a key of its own. Both
formats redact passwords in URLs and Telegram bot tokens from the message and
from any exception text, whatever logger the line comes from.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal

from outbox._redact import guard_loggers, redact_text

LogFormat = Literal["auto", "json", "text"]

# Fields the worker attaches to a record (``extra=``) that belong in the JSON.
EVENT_FIELDS = (
    "database",
    "message_id",
    "endpoint",
    "attempt",
    "status",
    "error",
    "decision",
    "reason",
)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact_text(record.getMessage()),
        }
        for field in EVENT_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                line[field] = redact_text(value) if isinstance(value, str) else value
        if record.exc_info:
            line["exception"] = redact_text(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message`` (``logger [database]:`` when the process
    serves a named database), redacted, traceback included."""

    def __init__(self, database: str | None = None) -> None:
        where = "%(name)s" if database is None else f"%(name)s [{database}]"
        super().__init__(f"%(asctime)s %(levelname)s {where}: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))


class _Database(logging.Filter):
    """Stamps every record with the name of the database this process serves."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name_ = name

    def filter(self, record: logging.LogRecord) -> bool:
        record.database = self.name_
        return True


def configure(level: str, fmt: LogFormat = "auto", *, database: str | None = None) -> None:
    """Log to stderr at ``level``; ``auto`` is text on a terminal, JSON otherwise.
    ``database``: the name of the database this process serves, on every line."""
    if fmt == "auto":
        fmt = "text" if sys.stderr.isatty() else "json"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter(database))
    if database is not None:
        handler.addFilter(_Database(database))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    guard_loggers()
    # httpx logs every request URL at INFO; a Telegram URL holds the bot
    # token. It is redacted anyway; our own attempt records carry what matters.
    for noisy in ("httpx", "httpcore", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
