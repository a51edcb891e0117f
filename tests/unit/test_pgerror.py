"""PostgreSQL errors from any driver become errors from our tree."""

from __future__ import annotations

from outbox.db.pgerror import translate
from outbox.errors import (
    DatabaseError,
    InvalidInputError,
    PayloadTooLargeError,
    UnknownEndpointError,
)


class FakeAsyncpgError(Exception):
    def __init__(self, sqlstate: str, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.message = message
        self.hint = hint


class FakeDiag:
    def __init__(self, message: str) -> None:
        self.message_primary = message
        self.message_hint = None


class FakePsycopgError(Exception):
    def __init__(self, sqlstate: str, message: str) -> None:
        super().__init__(message + "\nCONTEXT: ...")
        self.sqlstate = sqlstate
        self.diag = FakeDiag(message)


class FakeSQLAlchemyError(Exception):
    def __init__(self, orig: BaseException) -> None:
        super().__init__("(wrapped) ...")
        self.orig = orig


def test_unknown_endpoint_from_asyncpg() -> None:
    err = translate(FakeAsyncpgError("OB001", "endpoint: unknown endpoint 'x'", "create it"))
    assert isinstance(err, UnknownEndpointError)
    assert (err.field, err.problem, err.hint) == ("endpoint", "unknown endpoint 'x'", "create it")


def test_too_large_through_sqlalchemy_and_psycopg() -> None:
    err = translate(FakeSQLAlchemyError(FakePsycopgError("OB003", "payload: is 9 bytes, over")))
    assert isinstance(err, PayloadTooLargeError)
    assert err.field == "payload"


def test_invalid_argument_keeps_an_indexed_field() -> None:
    err = translate(FakeAsyncpgError("OB002", "messages[3].payload.chat_id: is required"))
    assert isinstance(err, InvalidInputError)
    assert err.field == "messages[3].payload.chat_id"


def test_missing_schema_points_at_migrate() -> None:
    err = translate(FakeAsyncpgError("42883", "function outbox.enqueue(...) does not exist"))
    assert isinstance(err, DatabaseError)
    assert "outbox migrate" in str(err)


def test_other_errors_pass_through_unchanged() -> None:
    original = FakeAsyncpgError("40001", "could not serialize access")
    assert translate(original) is original
    plain = ValueError("x")
    assert translate(plain) is plain
