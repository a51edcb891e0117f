"""The ``webhook`` channel: POST the payload with Standard Webhooks headers.

One shared httpx client per process, over the aiohttp transport: with many
concurrent requests httpx's own transport ran at ~0.6-1.5k requests/s on our
2-core machines and this one at ~5k/s, with the same httpx API (see
benchmarks/). Redirects are never followed; the endpoint's connect timeout
bounds connecting and its timeout bounds the whole attempt.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime

import httpx
from httpx_aiohttp import AiohttpTransport

from outbox._redact import redact_text
from outbox.delivery import AttemptResult, Claimed, Endpoint
from outbox.policy import (
    Classification,
    Verdict,
    classify_error,
    classify_status,
    parse_retry_after,
)
from outbox.signing import signature_header

EXCERPT_CHARS = 1024
_READ_LIMIT = 64 * 1024
USER_AGENT = "outbox/0.1 (+https://github.com/outbox)"


def make_client(max_connections: int) -> httpx.AsyncClient:
    limits = httpx.Limits(
        max_connections=max_connections,
        max_keepalive_connections=max_connections,
        keepalive_expiry=30.0,
    )
    return httpx.AsyncClient(
        transport=AiohttpTransport(limits=limits, trust_env=False),
        follow_redirects=False,
        trust_env=False,
        headers={"user-agent": USER_AGENT},
    )


class WebhookChannel:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def send(self, message: Claimed, endpoint: Endpoint) -> AttemptResult:
        started_at = datetime.now(UTC)
        t0 = time.perf_counter()
        secrets = (endpoint.secret,) if endpoint.secret else ()

        def result(classification: Classification, **fields: object) -> AttemptResult:
            return AttemptResult(
                classification,
                started_at,
                (time.perf_counter() - t0) * 1000,
                **fields,  # type: ignore[arg-type]
            )

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
        body = message.payload.encode()
        headers = self.headers_for(message, endpoint, body)
        timeout = httpx.Timeout(endpoint.timeout, connect=endpoint.connect_timeout)
        try:
            async with asyncio.timeout(endpoint.timeout):
                request = self.client.build_request(
                    "POST", endpoint.url, content=body, headers=headers, timeout=timeout
                )
                response = await self.client.send(request, stream=True)
                try:
                    excerpt = await _read_excerpt(response)
                finally:
                    await response.aclose()
        except (TimeoutError, httpx.TimeoutException) as exc:
            detail = f"no response within {endpoint.timeout:g}s"
            if isinstance(exc, httpx.ConnectTimeout):
                detail = f"could not connect within {endpoint.connect_timeout:g}s"
            return result(classify_error("timeout", detail), error=_error(exc, secrets, detail))
        except httpx.ConnectError as exc:
            text = _error(exc, secrets)
            return result(classify_error("connect", text), error=text)
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            text = _error(exc, secrets)
            return result(classify_error("invalid_request", text), error=text)
        except httpx.TransportError as exc:
            text = _error(exc, secrets)
            return result(classify_error("network", text), error=text)
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
        if endpoint.secret:
            headers["webhook-signature"] = signature_header(
                [endpoint.secret], str(message.id), timestamp, body
            )
        return headers

    async def aclose(self) -> None:
        await self.client.aclose()


async def _read_excerpt(response: httpx.Response) -> str:
    """The start of the body (at most 64 KiB are read), decoded, cut to 1 KiB."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_raw():
        chunks.append(chunk)
        size += len(chunk)
        if size >= _READ_LIMIT:
            break
    return b"".join(chunks).decode("utf-8", "replace")[:EXCERPT_CHARS]


def _error(exc: BaseException, secrets: tuple[str, ...], detail: str | None = None) -> str:
    text = detail or str(exc) or exc.__class__.__name__
    return f"{type(exc).__name__}: {redact_text(text, secrets)}"[:EXCERPT_CHARS]
