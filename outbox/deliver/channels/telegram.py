"""The ``telegram`` channel: one Bot API call per message.

``POST {api}/bot{token}/{method}`` with the payload as the JSON body, where
``api`` is the endpoint's URL (default https://api.telegram.org; a local Bot
API server or a test double otherwise), the token is the endpoint's secret
(or ``env:NAME``) and ``method`` is the payload's ``method`` field, default
``sendMessage`` (the field itself is not sent).

What the answers mean (https://core.telegram.org/bots/api#making-requests):

* ``ok: true`` -- delivered;
* 429 with ``parameters.retry_after`` -- retried after that long, and the
  whole bot (endpoint) holds back for as long: every call would get the same;
* 400 with ``parameters.migrate_to_chat_id`` -- the group became a
  supergroup: the message's ``chat_id`` (and its key, if that was the chat id)
  becomes the new id and it is retried at once; the ledger records the change;
* 403 (bot blocked, user deactivated, kicked) and other 400s ("chat not
  found") -- permanent;
* 401 -- the token was rejected: the endpoint is paused and the message kept
  for when it is resumed with a good token;
* 5xx, timeouts, connection errors -- retried, and they count towards the
  circuit breaker.

The token is part of every URL, so nothing that could hold the URL is
logged or recorded unredacted (and the HTTP libraries' own request logs stay silenced).

What the database does for this channel is declared in its `ChannelSpec`
(`outbox.deliver.channels.http_channels.TELEGRAM`) and lives in
``outbox/db/schema/telegram.sql``: the payload check at enqueue, the chat as
the default key, group chats (negative ids) as group keys, and coalescing.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from multidict import CIMultiDict

from outbox._redact import redact_text
from outbox.deliver.channels.http import (
    EXCERPT_CHARS,
    TRANSPORT_ERRORS,
    HttpChannel,
    Reply,
    ssrf_refusal,
    transport_failure,
)
from outbox.deliver.model import AttemptClock, AttemptResult, Delivery, Endpoint, Rewrite
from outbox.deliver.policy import (
    Classification,
    Health,
    Verdict,
    classify_status,
    parse_retry_after,
)

API_BASE = "https://api.telegram.org"
_METHOD = re.compile(r"^[A-Za-z]{1,64}$")


class TelegramChannel(HttpChannel):
    """Bot API calls; the API base URL is behind the same SSRF guard as webhooks
    (allow a local Bot API server's range on the endpoint or in settings)."""

    async def send(self, delivery: Delivery, endpoint: Endpoint) -> AttemptResult:
        clock = AttemptClock()
        result = clock.result
        if endpoint.secret_problem or not endpoint.secret:
            problem = endpoint.secret_problem or "the endpoint has no bot token"
            return result(
                Classification(Verdict.RETRYABLE, problem, pause=problem),
                error=f"ConfigurationError: {problem}",
            )
        method, call = _call(delivery)
        if not _METHOD.match(method):  # outbox.enqueue() refuses these; rows written by hand
            problem = f"{method!r} is not a Bot API method name"
            return result(Classification(Verdict.PERMANENT, problem), error=problem[:200])
        base = (endpoint.url or API_BASE).rstrip("/")
        refused = self.clients.refused(base, endpoint)
        if refused:
            return result(ssrf_refusal(refused), error=f"SSRFGuard: {refused}")
        headers = CIMultiDict(endpoint.headers)
        headers["content-type"] = "application/json"
        body = json.dumps(call, ensure_ascii=False, separators=(",", ":")).encode()
        try:
            reply = await self.clients.post(
                endpoint, f"{base}/bot{endpoint.secret}/{method}", body, headers
            )
        except TRANSPORT_ERRORS as exc:
            classification, error = transport_failure(exc, endpoint, endpoint.secrets)
            return result(classification, error=error)
        return _answer(clock, reply, delivery, endpoint.secrets)


def _call(delivery: Delivery) -> tuple[str, dict[str, Any]]:
    """The Bot API method and its parameters: the payload without ``method``;
    coalesced messages send every text, joined in key order."""
    payload = json.loads(delivery.head.payload)
    call = dict(payload)
    method = str(call.pop("method", "sendMessage"))
    if len(delivery.messages) > 1:
        call["text"] = "\n\n".join(
            str(json.loads(m.payload).get("text", "")) for m in delivery.messages
        )
    return method, call


def _answer(
    clock: AttemptClock, reply: Reply, delivery: Delivery, secrets: tuple[str, ...]
) -> AttemptResult:
    """What the Bot API's answer means (its ``ok``, ``error_code`` and ``parameters``)."""
    text = reply.text
    excerpt = redact_text(text[:EXCERPT_CHARS], secrets) if text else None
    answer = _json(text)
    status = reply.status
    if answer.get("ok") is True and 200 <= status < 300:
        delivered = Classification(Verdict.DELIVERED, f"HTTP {status}", health=Health.OK)
        return clock.result(delivered, status_code=status, excerpt=excerpt)
    said_code = answer.get("error_code")
    code = said_code if isinstance(said_code, int) else status
    description = redact_text(str(answer.get("description") or f"HTTP {code}"), secrets)
    parameters = answer.get("parameters")
    parameters = parameters if isinstance(parameters, dict) else {}
    old_chat = json.loads(delivery.head.payload).get("chat_id")
    classification, new_chat = _classify(code, description, parameters, reply, old_chat)
    return clock.result(
        classification,
        status_code=status,
        error=f"Telegram {code}: {description}"[:EXCERPT_CHARS],
        excerpt=excerpt,
        rewrites=None if new_chat is None else _moved(delivery, old_chat, new_chat),
    )


def _moved(delivery: Delivery, old_chat: Any, new_chat: int) -> dict[Any, Rewrite]:
    """Every message of the delivery, sent to the chat's new id; a key that was
    the chat's id follows it."""
    rewrites = {}
    for m in delivery.messages:
        payload = json.loads(m.payload)
        payload["chat_id"] = new_chat
        key = str(new_chat) if m.key is not None and m.key == str(old_chat) else None
        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        rewrites[m.id] = Rewrite(text, key)
    return rewrites


def _classify(
    code: int,
    description: str,
    parameters: dict[str, Any],
    response: Reply,
    old_chat: Any,
) -> tuple[Classification, int | None]:
    """The policy's classification of a Bot API error, and the chat's new id if it moved."""
    said = f"Telegram {code}: {description}"
    if code == 429:
        wait = parameters.get("retry_after")
        seconds = (
            float(wait)
            if isinstance(wait, int | float) and wait >= 0
            else parse_retry_after(response.headers.get("retry-after"), datetime.now(UTC))
        )
        return (
            Classification(Verdict.RETRYABLE, said, retry_after=seconds, throttle=seconds),
            None,
        )
    migrated = parameters.get("migrate_to_chat_id")
    if code == 400 and isinstance(migrated, int) and not isinstance(migrated, bool):
        reason = f"{said}; the chat migrated: chat_id {old_chat} -> {migrated}"
        return Classification(Verdict.RETRYABLE, reason, immediate=True), migrated
    if code == 401:
        reason = f"{said}: the bot token was rejected"
        return Classification(Verdict.RETRYABLE, reason, pause=reason), None
    if code in (400, 403, 404):  # about this message or chat; the Bot API is fine
        return Classification(Verdict.PERMANENT, said, health=Health.OK), None
    classification = classify_status(code)
    return (
        Classification(
            classification.verdict,
            said,
            classification.retry_after,
            health=classification.health,
            throttle=classification.throttle,
            pause=classification.pause,
        ),
        None,
    )


def _json(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
