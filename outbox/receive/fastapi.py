"""FastAPI dependencies for a webhook receiver: verify the signature, record the id.

    receiver = WebhookReceiver(secret=os.environ["WEBHOOK_SECRET"])

    @app.post("/hooks/orders")
    async def order_event(
        receipt: Annotated[Receipt, Depends(receiver.once(get_session))],
        session: Annotated[AsyncSession, Depends(get_session)],
    ) -> dict[str, str]:
        if receipt.first:
            session.add(Shipment(order_id=receipt.json()["order_id"]))
            await session.commit()
        return {"status": "ok"}  # a duplicate is answered 2xx too

`once(get_session)` verifies the request (400 for a missing or unreadable
header, 401 for a bad signature or timestamp, before any database work),
then inserts the ``webhook-id`` into the inbox through the session your own
dependency yields. FastAPI hands the same session to the endpoint, so the id
commits or rolls back with the effect. It never commits: the endpoint (or the
session dependency) does. `verified` is the signature check alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi import Depends, HTTPException, Request

from outbox.receive.inbox import INBOX_TABLE, first_delivery
from outbox.receive.signature import DEFAULT_TOLERANCE, SignatureError, Verified, verify

Secrets = str | Sequence[str]


@dataclass(frozen=True, slots=True)
class Receipt:
    """A verified webhook and whether this is its first delivery."""

    verified: Verified
    first: bool

    @property
    def webhook_id(self) -> str:
        return self.verified.webhook_id

    @property
    def timestamp(self) -> datetime:
        return self.verified.timestamp

    @property
    def body(self) -> bytes:
        return self.verified.body

    @property
    def duplicate(self) -> bool:
        return not self.first

    @property
    def topic(self) -> str | None:
        return self.verified.topic

    @property
    def replay(self) -> bool:
        """Sent again after it was delivered: the inbox has its id (``first`` is
        False) unless the first copy was lost; act on it if replays are wanted."""
        return self.verified.replay

    def json(self) -> Any:
        return self.verified.json()


class WebhookReceiver:
    """Verifies Standard Webhooks signatures with ``secret`` (one, several while
    rotating, or a callable that returns them when asked) and keeps an inbox
    in ``table``."""

    def __init__(
        self,
        secret: Secrets | Callable[[], Secrets],
        *,
        tolerance: float = DEFAULT_TOLERANCE,
        table: str = INBOX_TABLE,
    ) -> None:
        self._secret = secret
        self.tolerance = tolerance
        self.table = table

    def __repr__(self) -> str:  # never the secret
        return f"WebhookReceiver(table={self.table!r}, tolerance={self.tolerance:g})"

    async def verified(self, request: Request) -> Verified:
        """Dependency: the verified webhook, or 400/401."""
        secret = self._secret() if callable(self._secret) else self._secret
        body = await request.body()
        try:
            return verify(request.headers, body, secret, tolerance=self.tolerance)
        except SignatureError as exc:
            status = 400 if exc.malformed else 401
            raise HTTPException(status_code=status, detail=str(exc)) from None

    def once(self, session: Callable[..., Any]) -> Callable[..., Any]:
        """Dependency: a `Receipt`, its id recorded in the transaction of the
        session that the dependency ``session`` yields (asyncpg connection in a
        transaction, or SQLAlchemy ``AsyncSession``/``AsyncConnection``)."""
        table = self.table

        async def receipt(
            verified: Verified = Depends(self.verified),  # noqa: B008 (FastAPI's idiom)
            db: Any = Depends(session),  # noqa: B008
        ) -> Receipt:
            return Receipt(verified, await first_delivery(db, verified.webhook_id, table=table))

        return receipt
