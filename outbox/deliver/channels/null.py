"""The ``null`` channel: every attempt succeeds at once (benchmarks, tests)."""

from __future__ import annotations

from datetime import UTC, datetime

from outbox.deliver.model import AttemptResult, Claimed, Endpoint
from outbox.deliver.policy import Classification, Verdict

_DELIVERED = Classification(Verdict.DELIVERED, "null channel")


class NullChannel:
    async def send(self, message: Claimed, endpoint: Endpoint) -> AttemptResult:
        return AttemptResult(_DELIVERED, datetime.now(UTC), 0.0)

    async def aclose(self) -> None:
        return None
