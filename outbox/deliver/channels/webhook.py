"""The ``webhook`` channel: POST the payload with Standard Webhooks headers.

The request goes through the shared HTTP client (`outbox.deliver.channels.http`:
kept-alive connections, the SSRF guard resolving every host, redirects never
followed, the endpoint's connect timeout and overall timeout). An endpoint whose host
resolves only to loopback, private, link-local or other non-public addresses
is refused, and the message dead-lettered with the reason, unless the range
is allowed in settings (``OUTBOX_ALLOW_NETWORKS``) or on the endpoint
(``--allow-network``).

During a secret rotation's grace period the request carries one signature
per secret, space-separated, as the Standard Webhooks scheme allows.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from outbox._redact import redact_text
from outbox.deliver.channels.http import (
    EXCERPT_CHARS,
    TRANSPORT_ERRORS,
    HttpChannel,
    ssrf_refusal,
    transport_failure,
)
from outbox.deliver.channels.ssrf import Network
from outbox.deliver.channels.webhook_headers import HeaderBlocks
from outbox.deliver.model import AttemptClock, AttemptResult, Delivery, Endpoint
from outbox.deliver.policy import Classification, Verdict, classify_status, parse_retry_after


class WebhookChannel(HttpChannel):
    def __init__(
        self, max_connections: int, *, allow: Sequence[Network] = (), guard: bool = True
    ) -> None:
        super().__init__(max_connections, allow=allow, guard=guard)
        self.blocks = HeaderBlocks()

    async def send(self, delivery: Delivery, endpoint: Endpoint) -> AttemptResult:
        message = delivery.head  # webhooks never coalesce: one message per request
        clock = AttemptClock()
        result = clock.result
        secrets = endpoint.secrets

        if endpoint.secret_problem:
            return result(
                Classification(Verdict.RETRYABLE, endpoint.secret_problem),
                error=f"ConfigurationError: {endpoint.secret_problem}",
            )
        if not endpoint.url:
            return result(
                Classification(Verdict.PERMANENT, "the endpoint has no URL"),
                error="ConfigurationError: the endpoint has no URL",
            )
        refused = self.clients.refused(endpoint.url, endpoint)
        if refused:
            return result(ssrf_refusal(refused), error=f"SSRFGuard: {refused}")
        body = message.payload.encode()
        try:
            headers = self.blocks.block(message, endpoint, body, delivery.onward_trace())
            reply = await self.clients.post(endpoint, endpoint.url, body, headers)
        except TRANSPORT_ERRORS as exc:
            classification, error = transport_failure(exc, endpoint, secrets)
            return result(classification, error=error)
        hint = reply.headers.get("retry-after")
        retry_after = parse_retry_after(hint, datetime.now(UTC)) if hint else None
        classification = classify_status(reply.status, retry_after)
        excerpt = reply.text[:EXCERPT_CHARS]
        return result(
            classification,
            status_code=reply.status,
            error=None if classification.verdict is Verdict.DELIVERED else f"HTTP {reply.status}",
            excerpt=redact_text(excerpt, secrets) if excerpt else None,
        )
