"""The ``webhook`` channel: POST the payload with Standard Webhooks headers.

One shared httpx client per process, over the aiohttp transport: with many
concurrent requests httpx's own transport ran at ~0.6-1.5k requests/s on our
2-core machines and this one at ~5k/s, with the same httpx API (see
benchmarks/). Redirects are never followed; the endpoint's connect timeout
bounds connecting and its timeout bounds the whole attempt.

The SSRF guard (`outbox.ssrf`) sits in the client's resolver: an endpoint
whose host resolves only to loopback, private, link-local or other non-public
addresses is refused, and the message dead-lettered with the reason, unless
the range is allowed in settings (``OUTBOX_ALLOW_NETWORKS``) or on the
endpoint (``--allow-network``). Endpoints with their own allowances get a
client (and connection pool) of their own.

During a secret rotation's grace period the request carries one signature
per secret, space-separated, as the Standard Webhooks scheme allows.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from outbox._redact import redact_text
from outbox.delivery import AttemptClock, AttemptResult, Claimed, Endpoint
from outbox.policy import (
    Classification,
    Verdict,
    classify_error,
    classify_status,
    parse_retry_after,
)
from outbox.signing import signature_header
from outbox.ssrf import (
    GuardedResolver,
    Network,
    blocked_reason,
    literal_host_problem,
    parse_networks,
)

EXCERPT_CHARS = 1024
_READ_LIMIT = 64 * 1024
USER_AGENT = "outbox/0.1 (+https://github.com/outbox)"


def make_client(
    max_connections: int, *, allow: Sequence[Network] | None = None
) -> httpx.AsyncClient:
    """An httpx client over aiohttp; ``allow`` given, its resolver is the SSRF
    guard with those ranges allowed (None: no guard, for benchmarks and tools)."""
    limits = httpx.Limits(
        max_connections=max_connections,
        max_keepalive_connections=max_connections,
        keepalive_expiry=30.0,
    )
    ssl_context = httpx.create_ssl_context(trust_env=False)

    def session() -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=max_connections,
            keepalive_timeout=30.0,
            ssl=ssl_context,
            resolver=GuardedResolver(allow) if allow is not None else None,
        )
        return aiohttp.ClientSession(connector=connector)

    return httpx.AsyncClient(
        transport=AiohttpTransport(limits=limits, trust_env=False, client=session),
        follow_redirects=False,
        trust_env=False,
        headers={"user-agent": USER_AGENT},
    )


class GuardedClients:
    """HTTP clients behind the SSRF guard, one per set of allowances (the guard
    lives in a client's resolver, so endpoints allowed different ranges need
    clients of their own); ``guard=False`` turns the guard off (tools only)."""

    def __init__(
        self, max_connections: int, *, allow: Sequence[Network] = (), guard: bool = True
    ) -> None:
        self._max_connections = max_connections
        self._allow = tuple(allow)
        self._guard = guard
        self._clients: dict[tuple[str, ...], httpx.AsyncClient] = {}
        self._literal: dict[tuple[str, tuple[str, ...]], str | None] = {}

    def client(self, endpoint: Endpoint) -> httpx.AsyncClient:
        client = self._clients.get(endpoint.allow_networks)
        if client is None:
            allowed = self._allow + parse_networks(endpoint.allow_networks)
            client = make_client(self._max_connections, allow=allowed if self._guard else None)
            self._clients[endpoint.allow_networks] = client
        return client

    def refused(self, url: str, endpoint: Endpoint) -> str | None:
        """The guard's verdict on a URL whose host is an IP literal (cached per URL);
        host names are judged where they resolve."""
        if not self._guard:
            return None
        key = (url, endpoint.allow_networks)
        if key not in self._literal:
            if len(self._literal) > 10_000:
                self._literal.clear()
            allowed = self._allow + parse_networks(endpoint.allow_networks)
            self._literal[key] = literal_host_problem(httpx.URL(url).host, allowed)
        return self._literal[key]

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()


class WebhookChannel:
    def __init__(
        self, max_connections: int, *, allow: Sequence[Network] = (), guard: bool = True
    ) -> None:
        self.clients = GuardedClients(max_connections, allow=allow, guard=guard)

    async def send(self, message: Claimed, endpoint: Endpoint) -> AttemptResult:
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
        client = self.clients.client(endpoint)
        refused = self.clients.refused(endpoint.url, endpoint)
        if refused:
            return result(ssrf_refusal(refused), error=f"SSRFGuard: {refused}")
        body = message.payload.encode()
        headers = self.headers_for(message, endpoint, body)
        timeout = httpx.Timeout(endpoint.timeout, connect=endpoint.connect_timeout)
        try:
            async with asyncio.timeout(endpoint.timeout):
                request = client.build_request(
                    "POST", endpoint.url, content=body, headers=headers, timeout=timeout
                )
                response = await client.send(request, stream=True)
                try:
                    excerpt = await read_excerpt(response)
                finally:
                    await response.aclose()
        except (TimeoutError, httpx.TransportError, aiohttp.ClientError) as exc:
            classification, error = transport_failure(exc, endpoint, secrets, clock.elapsed())
            return result(classification, error=error)
        retry_after = parse_retry_after(response.headers.get("retry-after"), datetime.now(UTC))
        classification = classify_status(response.status_code, retry_after)
        return result(
            classification,
            status_code=response.status_code,
            error=None
            if classification.verdict is Verdict.DELIVERED
            else f"HTTP {response.status_code}",
            excerpt=redact_text(excerpt, secrets) if excerpt else None,
        )

    @staticmethod
    def headers_for(message: Claimed, endpoint: Endpoint, body: bytes) -> dict[str, str]:
        """Endpoint headers, then per-message headers, then ours (which always win)."""
        headers = dict(endpoint.headers)
        if message.headers:
            headers.update(json.loads(message.headers))
        timestamp = int(time.time())
        headers["content-type"] = "application/json"
        headers["webhook-id"] = str(message.id)
        headers["webhook-timestamp"] = str(timestamp)
        secrets = endpoint.secrets
        if secrets:
            headers["webhook-signature"] = signature_header(
                list(secrets), str(message.id), timestamp, body
            )
        return headers

    async def aclose(self) -> None:
        await self.clients.aclose()


def transport_failure(
    exc: BaseException, endpoint: Endpoint, secrets: tuple[str, ...], elapsed: float
) -> tuple[Classification, str]:
    """What an attempt that got no HTTP response means, and the error to record.

    httpx-aiohttp reports every failure to connect (a refused connection, a
    failed or refused lookup) as ``ConnectTimeout``; one that came before the
    connect timeout is told apart and kept with its own message."""
    blocked = blocked_reason(exc)
    if blocked:
        return ssrf_refusal(blocked), f"SSRFGuard: {blocked}"
    if isinstance(exc, httpx.ConnectTimeout) and elapsed < endpoint.connect_timeout * 0.9:
        text = error_text(exc, secrets)
        return classify_error("connect", text), text
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        detail = f"no response within {endpoint.timeout:g}s"
        if isinstance(exc, httpx.ConnectTimeout):
            detail = f"could not connect within {endpoint.connect_timeout:g}s"
        return classify_error("timeout", detail), error_text(exc, secrets, detail)
    text = error_text(exc, secrets)
    if isinstance(exc, httpx.ConnectError):
        return classify_error("connect", text), text
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return classify_error("invalid_request", text), text
    return classify_error("network", text), text


def ssrf_refusal(problem: str) -> Classification:
    return Classification(
        Verdict.PERMANENT,
        f"refused by the SSRF guard: {problem}; allow the range with --allow-network "
        "or OUTBOX_ALLOW_NETWORKS if this is intended",
    )


async def read_excerpt(response: httpx.Response, limit: int | None = EXCERPT_CHARS) -> str:
    """The start of the body (at most 64 KiB are read), decoded, cut to ``limit`` characters."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_raw():
        chunks.append(chunk)
        size += len(chunk)
        if size >= _READ_LIMIT:
            break
    return b"".join(chunks).decode("utf-8", "replace")[:limit]


def error_text(exc: BaseException, secrets: tuple[str, ...], detail: str | None = None) -> str:
    text = detail or str(exc) or exc.__class__.__name__
    return f"{type(exc).__name__}: {redact_text(text, secrets)}"[:EXCERPT_CHARS]
