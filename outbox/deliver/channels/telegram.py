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
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from multidict import CIMultiDict

from outbox._redact import redact_text
from outbox.deliver.channels.http import (
    EXCERPT_CHARS,
    TRANSPORT_ERRORS,
    GuardedClients,
    Reply,
    ssrf_refusal,
    transport_failure,
)
from outbox.deliver.channels.ssrf import Network
from outbox.deliver.model import AttemptClock, AttemptResult, Claimed, Endpoint
from outbox.deliver.policy import (
    Classification,
    Health,
    Verdict,
    classify_status,
    parse_retry_after,
)
from outbox.operate.endpoint_config import TELEGRAM_API_BASE

_METHOD = re.compile(r"^[A-Za-z]{1,64}$")


class TelegramChannel:
    """Bot API calls; the API base URL is behind the same SSRF guard as webhooks
    (allow a local Bot API server's range on the endpoint or in settings)."""

    def __init__(
        self, max_connections: int, *, allow: Sequence[Network] = (), guard: bool = True
    ) -> None:
        self.clients = GuardedClients(max_connections, allow=allow, guard=guard)

    async def send(self, message: Claimed, endpoint: Endpoint) -> AttemptResult:
        clock = AttemptClock()
        result = clock.result
        secrets = endpoint.secrets

        if endpoint.secret_problem or not endpoint.secret:
            problem = endpoint.secret_problem or "the endpoint has no bot token"
            return result(
                Classification(Verdict.RETRYABLE, problem, pause=problem),
                error=f"ConfigurationError: {problem}",
            )
        payload = json.loads(message.payload)
        call = dict(payload)
        method = str(call.pop("method", "sendMessage"))
        if not _METHOD.match(method):  # outbox.enqueue() refuses these; rows written by hand
            problem = f"{method!r} is not a Bot API method name"
            return result(Classification(Verdict.PERMANENT, problem), error=problem[:200])
        if message.riders:  # coalesced: one message with every text, in key order
            texts = [str(payload.get("text", ""))]
            texts += [str(json.loads(r.payload).get("text", "")) for r in message.riders]
            call["text"] = "\n\n".join(texts)
        base = (endpoint.url or TELEGRAM_API_BASE).rstrip("/")
        refused = self.clients.refused(base, endpoint)
        if refused:
            return result(ssrf_refusal(refused), error=f"SSRFGuard: {refused}")
        url = f"{base}/bot{endpoint.secret}/{method}"
        headers = CIMultiDict(endpoint.headers)
        headers["content-type"] = "application/json"
        body = json.dumps(call, ensure_ascii=False, separators=(",", ":")).encode()
        try:
            response = await self.clients.post(endpoint, url, body, headers)
        except TRANSPORT_ERRORS as exc:
            classification, error = transport_failure(exc, endpoint, secrets)
            return result(classification, error=error)

        text = response.text
        excerpt = redact_text(text[:EXCERPT_CHARS], secrets) if text else None
        answer = _json(text)
        status = response.status
        if answer.get("ok") is True and 200 <= status < 300:
            return result(
                Classification(Verdict.DELIVERED, f"HTTP {status}", health=Health.OK),
                status_code=status,
                excerpt=excerpt,
            )
        said_code = answer.get("error_code")
        code = said_code if isinstance(said_code, int) else status
        description = redact_text(str(answer.get("description") or f"HTTP {code}"), secrets)
        parameters = answer.get("parameters")
        parameters = parameters if isinstance(parameters, dict) else {}
        error = f"Telegram {code}: {description}"[:EXCERPT_CHARS]
        classification, new_chat = _classify(
            code, description, parameters, response, payload.get("chat_id")
        )
        new_payloads = None
        if new_chat is not None:
            new_payloads = {
                m.id: _with_chat(m.payload, new_chat) for m in (message, *message.riders)
            }
        return result(
            classification,
            status_code=status,
            error=error,
            excerpt=excerpt,
            new_payloads=new_payloads,
        )

    async def aclose(self) -> None:
        await self.clients.aclose()


def _with_chat(payload: str, chat_id: int) -> str:
    rewritten = json.loads(payload)
    rewritten["chat_id"] = chat_id
    return json.dumps(rewritten, ensure_ascii=False, separators=(",", ":"))


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
