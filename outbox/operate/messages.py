"""One message's story: where it is now and every attempt it had."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

from outbox.db.queries import QUERIES
from outbox.errors import InvalidInputError
from outbox.operate.stats import plain


@dataclass(frozen=True, slots=True)
class MessageStory:
    """Where a message is and every attempt it had."""

    id: uuid.UUID
    state: str  # pending, scheduled, in flight, dead, or "finished" (delivered or unknown)
    endpoint: str | None
    details: dict[str, Any]
    attempts: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "state": self.state,
            "endpoint": self.endpoint,
            **self.details,
            "attempts": self.attempts,
        }


async def message_story(conn: asyncpg.Connection, message_id: uuid.UUID) -> MessageStory:
    """A message's state and its attempt timeline; unknown ids are an error."""
    found = await conn.fetchrow(QUERIES["message_find"], message_id)
    attempts = [plain(dict(r)) for r in await conn.fetch(QUERIES["message_attempts"], message_id)]
    if found is None and not attempts:
        raise InvalidInputError("id", f"no message {message_id} (nor any attempt of it)")
    if found is None:
        delivered = any(a["outcome"] == "delivered" for a in attempts)
        return MessageStory(
            message_id,
            "delivered" if delivered else "finished",
            attempts[-1]["endpoint"],
            {},
            attempts,
        )
    details = plain(dict(found))
    details["payload"] = json.loads(found["payload"])
    state = details.pop("state")
    endpoint = details.pop("endpoint")
    details.pop("place", None)
    return MessageStory(message_id, state, endpoint, details, attempts)
