"""Log formatting: JSON fields, and redaction of message and traceback."""

from __future__ import annotations

import json
import logging

import pytest

from outbox.deliver.logs import JsonFormatter, TextFormatter, configure

TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw_x"


def record(message: str, *, exc: BaseException | None = None, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("outbox.worker", logging.WARNING, __file__, 1, message, None, None)
    if exc is not None:
        try:
            raise exc
        except type(exc):
            import sys

            rec.exc_info = sys.exc_info()
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_json_lines_carry_the_event_fields() -> None:
    line = json.loads(
        JsonFormatter().format(
            record("attempt failed", message_id="m1", endpoint="hook", attempt=2, status=503)
        )
    )
    assert line["message"] == "attempt failed"
    assert (line["message_id"], line["endpoint"], line["attempt"], line["status"]) == (
        "m1",
        "hook",
        2,
        503,
    )
    assert line["level"] == "warning"
    assert line["logger"] == "outbox.worker"


def test_both_formats_redact_message_fields_and_tracebacks() -> None:
    url = f"https://api.telegram.org/bot{TOKEN}/sendMessage"
    rec = record(f"failed {url}", exc=RuntimeError(f"boom at {url}"), error=f"x {url}")
    for formatter in (JsonFormatter(), TextFormatter()):
        text = formatter.format(rec)
        assert "boom at" in text  # the traceback is there...
        assert TOKEN.split(":")[1] not in text  # ...without the token
        rec.exc_text = None
    pw = record("cannot reach postgresql://app:S3cretPw@db/x")
    assert "S3cretPw" not in JsonFormatter().format(pw)


def test_a_process_serving_a_named_database_puts_its_name_on_every_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for fmt, expect in (("json", '"database": "orders"'), ("text", "outbox.test [orders]: hello")):
        configure("INFO", fmt, database="orders")  # type: ignore[arg-type]
        logging.getLogger("outbox.test").info("hello")
        assert expect in capsys.readouterr().err
    configure("INFO", "json")
    logging.getLogger("outbox.test").info("hello")
    assert "database" not in json.loads(capsys.readouterr().err)
