"""Channels turn a claimed message into one delivery attempt.

A channel builds the request for its kind of endpoint, sends it and reports
what came back as an `AttemptResult` with a `Classification`; it never decides
about retries (that is `outbox.deliver.policy`) and never touches the database.
"""

from __future__ import annotations

from typing import Protocol

from outbox._redact import guard_loggers
from outbox.deliver.model import AttemptResult, Claimed, Endpoint

guard_loggers()


class Channel(Protocol):
    async def send(self, message: Claimed, endpoint: Endpoint) -> AttemptResult: ...

    async def aclose(self) -> None: ...
