"""The ``null`` channel: every attempt succeeds at once (benchmarks, tests)."""

from __future__ import annotations

from datetime import UTC, datetime

from outbox.deliver.channels.spec import ChannelContext, ChannelSpec
from outbox.deliver.model import AttemptResult, Delivery, Endpoint
from outbox.deliver.policy import Classification, Verdict

_DELIVERED = Classification(Verdict.DELIVERED, "null channel")


class NullChannel:
    @classmethod
    def open(cls, _context: ChannelContext) -> NullChannel:
        return cls()

    async def send(self, delivery: Delivery, endpoint: Endpoint) -> AttemptResult:
        return AttemptResult(_DELIVERED, datetime.now(UTC), 0.0)

    async def aclose(self) -> None:
        return None


SPEC = ChannelSpec(
    name="null",
    summary="deliver nothing, at once: every attempt succeeds (benchmarks, tests)",
    open=NullChannel.open,
)
