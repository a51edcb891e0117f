"""The HTTP client the channels share: bare aiohttp behind the SSRF guard.

Why aiohttp and not httpx: `outbox bench transport` posted the same requests
to the same receiver with httpx's own transport (~500/s), httpx over aiohttp
(~3,700/s) and bare aiohttp (~13,500/s); profiled inside a worker, httpx's
request and response models took over half of the channel's time. The
channels need little of a client: one POST with a body and headers, no
redirects, timeouts, a bounded read of the answer.

One `aiohttp.ClientSession` (with its connection pool) per set of SSRF
allowances: the guard is the session's resolver, so the address checked is
the address connected to (`outbox.ssrf`). ``connect_timeout`` bounds getting
a connection, ``timeout`` the whole attempt, the answer's body included.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import aiohttp
import certifi
from multidict import CIMultiDictProxy
from yarl import URL

from outbox._redact import redact_text
from outbox.delivery import Endpoint
from outbox.policy import Classification, Verdict, classify_error
from outbox.ssrf import (
    GuardedResolver,
    Network,
    blocked_reason,
    literal_host_problem,
    parse_networks,
)

EXCERPT_CHARS = 1024
READ_LIMIT = 64 * 1024
USER_AGENT = "outbox/0.1 (+https://github.com/outbox)"

# Everything a request can fail with short of an HTTP answer.
TRANSPORT_ERRORS = (TimeoutError, aiohttp.ClientError, OSError)


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP answer: its status, headers and the start of its body."""

    status: int
    headers: CIMultiDictProxy[str]
    text: str  # at most READ_LIMIT bytes of the body, decoded


def make_session(
    max_connections: int, *, allow: Sequence[Network] | None = None
) -> aiohttp.ClientSession:
    """A session whose resolver is the SSRF guard with ``allow`` ranges allowed
    (None: no guard, for benchmarks and tools). Proxies and netrc from the
    environment are ignored: a proxy would connect where the guard cannot see."""
    connector = aiohttp.TCPConnector(
        limit=max_connections,
        keepalive_timeout=30.0,
        ssl=ssl.create_default_context(cafile=certifi.where()),
        resolver=GuardedResolver(allow) if allow is not None else None,
    )
    return aiohttp.ClientSession(
        connector=connector,
        headers={"user-agent": USER_AGENT},
        trust_env=False,
        auto_decompress=True,
        cookie_jar=aiohttp.DummyCookieJar(),
    )


class GuardedClients:
    """HTTP sessions behind the SSRF guard, one per set of allowances (the guard
    lives in a session's resolver, so endpoints allowed different ranges need
    sessions of their own); ``guard=False`` turns the guard off (tools only)."""

    def __init__(
        self, max_connections: int, *, allow: Sequence[Network] = (), guard: bool = True
    ) -> None:
        self._max_connections = max_connections
        self._allow = tuple(allow)
        self._guard = guard
        self._sessions: dict[tuple[str, ...], aiohttp.ClientSession] = {}
        self._literal: dict[tuple[str, tuple[str, ...]], str | None] = {}
        self._timeouts: dict[tuple[float, float], aiohttp.ClientTimeout] = {}

    def session(self, endpoint: Endpoint) -> aiohttp.ClientSession:
        session = self._sessions.get(endpoint.allow_networks)
        if session is None:
            allowed = self._allow + parse_networks(endpoint.allow_networks)
            session = make_session(self._max_connections, allow=allowed if self._guard else None)
            self._sessions[endpoint.allow_networks] = session
        return session

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
            self._literal[key] = literal_host_problem(URL(url).raw_host or "", allowed)
        return self._literal[key]

    def timeout(self, endpoint: Endpoint) -> aiohttp.ClientTimeout:
        key = (endpoint.timeout, endpoint.connect_timeout)
        timeout = self._timeouts.get(key)
        if timeout is None:
            timeout = aiohttp.ClientTimeout(total=key[0], connect=key[1])
            self._timeouts[key] = timeout
        return timeout

    async def post(
        self,
        endpoint: Endpoint,
        url: str | URL,
        body: bytes,
        headers: Mapping[str, str],
        *,
        limit: int = READ_LIMIT,
    ) -> Reply:
        """POST ``body``; the answer with at most ``limit`` bytes of its body.
        Redirects are answers, never followed. Raises one of TRANSPORT_ERRORS."""
        session = self.session(endpoint)
        async with session.post(
            url,
            data=body,
            headers=headers,
            allow_redirects=False,
            timeout=self.timeout(endpoint),
        ) as response:
            chunks: list[bytes] = []
            size = 0
            while size < limit:
                chunk = await response.content.read(limit - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            return Reply(
                response.status, response.headers, b"".join(chunks).decode("utf-8", "replace")
            )

    async def aclose(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()


def transport_failure(
    exc: BaseException, endpoint: Endpoint, secrets: tuple[str, ...]
) -> tuple[Classification, str]:
    """What an attempt that got no HTTP answer means, and the error to record."""
    blocked = blocked_reason(exc)
    if blocked:
        return ssrf_refusal(blocked), f"SSRFGuard: {blocked}"
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        detail = f"could not connect within {endpoint.connect_timeout:g}s"
        return classify_error("timeout", detail), error_text(exc, secrets, detail)
    if isinstance(exc, TimeoutError):
        detail = f"no response within {endpoint.timeout:g}s"
        return classify_error("timeout", detail), error_text(exc, secrets, detail)
    text = error_text(exc, secrets)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return classify_error("connect", text), text
    if isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        return classify_error("invalid_request", text), text
    return classify_error("network", text), text


def ssrf_refusal(problem: str) -> Classification:
    return Classification(
        Verdict.PERMANENT,
        f"refused by the SSRF guard: {problem}; allow the range with --allow-network "
        "or OUTBOX_ALLOW_NETWORKS if this is intended",
    )


def error_text(exc: BaseException, secrets: tuple[str, ...], detail: str | None = None) -> str:
    text = detail or str(exc) or exc.__class__.__name__
    return f"{type(exc).__name__}: {redact_text(text, secrets)}"[:EXCERPT_CHARS]
