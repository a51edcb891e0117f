"""`Message`: one message to enqueue, with the same fields as ``outbox.enqueue()``."""

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
_Key = Annotated[str, StringConstraints(min_length=1, max_length=KEY_MAX_CHARS)]


class Message(BaseModel):
    """One message to enqueue. The same fields as ``outbox.enqueue()``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    endpoint: EndpointName
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
