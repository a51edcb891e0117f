"""One exception tree for everything `outbox` raises.

Every error names what was wrong and, where it helps, what to do about it.
Driver errors are wrapped with ``raise ... from exc`` so the cause stays on
the traceback, but the message itself never carries a database password.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


class OutboxError(Exception):
    """Base class of every error raised by `outbox`."""


class ConfigurationError(OutboxError):
    """A setting is missing or malformed (for example ``OUTBOX_DATABASE_URL``)."""


class DatabaseError(OutboxError):
    """The database could not be reached or answered with an unexpected error."""


class InvalidInputError(OutboxError, ValueError):
    """An input was rejected; nothing was written.

    ``field`` names the offending input (``payload``, ``headers.X-Foo``,
    ``messages[3].priority``), ``problem`` says what is wrong with it.
    """

    def __init__(self, field: str, problem: str, *, hint: str | None = None) -> None:
        self.field = field
        self.problem = problem
        self.hint = hint
        text = f"{field}: {problem}"
        if hint:
            text = f"{text} ({hint})"
        super().__init__(text)


class UnknownEndpointError(InvalidInputError):
    """The named endpoint does not exist (SQLSTATE ``OB001``)."""


class PayloadTooLargeError(InvalidInputError):
    """The payload is over ``outbox.config.max_payload_bytes`` (SQLSTATE ``OB003``)."""


class EndpointExistsError(InvalidInputError):
    """``endpoint add`` named an endpoint that already exists."""


class EndpointInUseError(OutboxError):
    """An endpoint still has unfinished messages and cannot be removed."""

    def __init__(self, endpoint: str, unfinished: int) -> None:
        self.endpoint = endpoint
        self.unfinished = unfinished
        super().__init__(
            f"endpoint {endpoint!r} still has {unfinished} unfinished message(s); "
            "wait for them to be delivered or dead-lettered, or pause the endpoint, "
            "then remove it"
        )


class NotInTransactionError(OutboxError):
    """A producer call was made outside an open transaction.

    Enqueueing outside a transaction silently loses the outbox guarantee
    (the message commits even if the business write later fails).
    """


def to_input_error(exc: ValidationError, prefix: str = "") -> InvalidInputError:
    """The first error pydantic found, as an `InvalidInputError` naming its field
    (``prefix`` goes in front of it: ``messages[3].``)."""
    err = exc.errors(include_url=False, include_input=False)[0]
    field = (
        prefix + ".".join(str(part) for part in err["loc"]) if err["loc"] else prefix.rstrip(".")
    )
    message = err["msg"]
    if err["type"] == "dict_type":
        message = "must be a JSON object"
    elif err["type"] == "recursion_loop":
        message = "nests too deeply to check (Python's recursion limit)"
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    return InvalidInputError(field or "input", message[:1].lower() + message[1:])
