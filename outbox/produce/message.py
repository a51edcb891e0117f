"""`Message`: one message to enqueue, with the same fields as ``outbox.enqueue()``;
`Event`: one event to publish on a topic, with those of ``outbox.publish()``."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

from outbox.produce.rules import KEY_MAX_CHARS, PRIORITY_MAX, PRIORITY_MIN
from outbox.settings.endpoint import ENDPOINT_NAME_PATTERN
from outbox.settings.values import check_headers, storable_text

EndpointName = Annotated[str, StringConstraints(pattern=ENDPOINT_NAME_PATTERN)]
# Dot-separated words, as outbox._publish() checks them.
TOPIC_PATTERN = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$"
TOPIC_MAX_CHARS = 255
Topic = Annotated[str, StringConstraints(pattern=TOPIC_PATTERN, max_length=TOPIC_MAX_CHARS)]
_Key = Annotated[str, StringConstraints(min_length=1, max_length=KEY_MAX_CHARS)]


class _Fields(BaseModel):
    """What a message and an event share: everything but where they go."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    payload: dict[str, Any]
    key: _Key | None = None
    idempotency_key: _Key | None = None
    priority: Annotated[int, Field(ge=PRIORITY_MIN, le=PRIORITY_MAX)] = 0
    deliver_at: AwareDatetime | None = None
    headers: dict[str, str] | None = None
    # W3C Trace Context, checked at enqueue (outbox.produce.trace); None: the current span's.
    traceparent: str | None = None
    tracestate: str | None = None

    @field_validator("headers")
    @classmethod
    def _headers_ok(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return None if value is None else check_headers(value)

    @field_validator("key", "idempotency_key")
    @classmethod
    def _storable(cls, value: str | None) -> str | None:
        return storable_text(value)


class Message(_Fields):
    """One message to enqueue. The same fields as ``outbox.enqueue()``."""

    endpoint: EndpointName


class Event(_Fields):
    """One event to publish: a message for each subscribed endpoint. The same
    fields as ``outbox.publish()``."""

    topic: Topic
