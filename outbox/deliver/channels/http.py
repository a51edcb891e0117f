"""The HTTP client the channels share: one POST, a bounded read of the answer.

Why not a general-purpose client: profiled inside a worker, httpx's request
and response models took over half of the webhook channel's time, and with
bare aiohttp the client still cost ~80 µs of CPU per request, most of a
worker's time (benchmarks/RESULTS.md). A channel needs very little of HTTP:
POST a body with headers over a kept-alive HTTP/1.1 connection, read the
status, the headers and the start of the answer, never follow a redirect,
never use a proxy, bound the connect and the whole attempt. That is what this
does, on asyncio's transports with the llhttp parser (httptools), at a
fraction of the cost.

The SSRF guard (`outbox.deliver.channels.ssrf.GuardedResolver`) resolves
every host before a connection is opened, and the connection goes to one of
the addresses it let through: the address checked is the address connected
to. Literal IP hosts are checked before the request (`GuardedClients.refused`).
What goes over a connection is `outbox.deliver.channels.wire`'s. A request is
never sent twice: one written onto a kept-alive
connection just as the server closes it (its idle timeout) fails as a
`ServerDisconnectedError`, and the outbox retries it like any network error;
to make that rare, a connection idle for longer than the server's own
``Keep-Alive: timeout`` (less a second) or 30 s is not reused.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Mapping, Sequence
from typing import Self

import certifi
from yarl import URL

from outbox._redact import redact_text
from outbox.deliver.channels.spec import ChannelContext
from outbox.deliver.channels.ssrf import (
    GuardedResolver,
    Network,
    Resolver,
    blocked_reason,
    literal_host_problem,
    parse_networks,
)
from outbox.deliver.channels.wire import (
    READ_LIMIT,
    ConnectError,
    Connection,
    ConnectTimeoutError,
    InvalidRequestError,
    InvalidResponseError,
    Reply,
    ServerDisconnectedError,
    Target,
    parse_url,
    request_bytes,
)
from outbox.deliver.endpoints import Endpoint
from outbox.deliver.policy import Classification, Verdict, classify_error

__all__ = [
    "EXCERPT_CHARS",
    "READ_LIMIT",
    "TRANSPORT_ERRORS",
    "ConnectError",
    "ConnectTimeoutError",
    "GuardedClients",
    "HttpChannel",
    "InvalidRequestError",
    "InvalidResponseError",
    "Reply",
    "ServerDisconnectedError",
    "error_text",
    "ssrf_refusal",
    "transport_failure",
]

EXCERPT_CHARS = 1024
# Everything a request can fail with short of an HTTP answer.
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (TimeoutError, OSError, InvalidRequestError)


class GuardedClients:
    """HTTP connections behind the SSRF guard, pooled per host and set of
    allowances (endpoints allowed different ranges resolve through guards of
    their own); ``guard=False`` turns the guard off (tools only)."""

    def __init__(
        self, max_connections: int, *, allow: Sequence[Network] = (), guard: bool = True
    ) -> None:
        self._max_idle = max_connections
        self._allow = tuple(allow)
        self._guard = guard
        self._resolvers: dict[tuple[str, ...], Resolver] = {}
        self._idle: dict[tuple[tuple[str, ...], bool, str, int], list[Connection]] = {}
        self._busy: set[Connection] = set()
        self._targets: dict[str, Target] = {}
        self._literal: dict[tuple[str, tuple[str, ...]], str | None] = {}
        self._ssl: ssl.SSLContext | None = None
        self._swept = 0.0  # when idle connections were last swept (monotonic)

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

    async def post(
        self,
        endpoint: Endpoint,
        url: str,
        body: bytes,
        headers: Mapping[str, str] | str,
        *,
        limit: int = READ_LIMIT,
    ) -> Reply:
        """POST ``body`` with ``headers`` (or their `wire.header_block`); the
        answer with at most ``limit`` bytes of its body. Redirects are answers,
        never followed. Raises one of TRANSPORT_ERRORS."""
        target = self._target(url)
        data = request_bytes(target, body, headers)
        async with asyncio.timeout(endpoint.timeout):
            conn = await self._acquire(target, endpoint)
            reused = False
            try:
                reply = await conn.request(data, limit)
                reused = conn.reusable
            finally:
                self._release(target, endpoint, conn, reused)
        return reply

    async def aclose(self) -> None:
        for pool in self._idle.values():
            for conn in pool:
                conn.close()
        for conn in self._busy:
            conn.close()
        self._idle.clear()
        self._busy.clear()
        self._resolvers.clear()

    # -- connections -------------------------------------------------------

    async def _acquire(self, target: Target, endpoint: Endpoint) -> Connection:
        pool = self._idle.get((endpoint.allow_networks, target.tls, target.host, target.port))
        now = time.monotonic()
        while pool:
            conn = pool.pop()
            if not conn.closed and now - conn.idle_since < conn.keepalive:
                self._busy.add(conn)
                return conn
            conn.close()
        conn = await self._connect(target, endpoint)
        self._busy.add(conn)
        return conn

    def _release(self, target: Target, endpoint: Endpoint, conn: Connection, reuse: bool) -> None:
        self._busy.discard(conn)
        if not reuse or conn.closed:
            conn.close()
            return
        key = (endpoint.allow_networks, target.tls, target.host, target.port)
        pool = self._idle.setdefault(key, [])
        if len(pool) >= self._max_idle:
            conn.close()
            return
        now = conn.idle_since = time.monotonic()
        pool.append(conn)
        if now - self._swept >= 1.0:
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        """Close idle connections past their keep-alive, in every pool (at most once
        a second): a pool is used from its newest end, so under steady traffic the
        older ones below would otherwise stay open, as would those of hosts no
        longer sent to."""
        self._swept = now
        for key, pool in list(self._idle.items()):
            kept = []
            for conn in pool:
                if not conn.closed and now - conn.idle_since < conn.keepalive:
                    kept.append(conn)
                else:
                    conn.close()
            if kept:
                self._idle[key] = kept
            else:
                del self._idle[key]

    async def _connect(self, target: Target, endpoint: Endpoint) -> Connection:
        loop = asyncio.get_running_loop()
        resolver = self._resolver(endpoint)
        tls = self._tls() if target.tls else None
        where = f"{target.host}:{target.port}"
        try:
            async with asyncio.timeout(endpoint.connect_timeout):
                try:
                    addresses = await resolver.resolve(target.host, target.port)
                except OSError as exc:
                    if blocked_reason(exc):
                        raise
                    raise ConnectError(f"cannot resolve {target.host}: {exc}") from exc
                except UnicodeError as exc:  # getaddrinfo: an empty or 64+ character label
                    raise InvalidRequestError(f"{target.host} is not a valid host name") from exc
                last: OSError | None = None
                for host, port in addresses:
                    try:
                        _, conn = await loop.create_connection(
                            Connection,
                            host,
                            port,
                            ssl=tls,
                            server_hostname=target.host if tls else None,
                        )
                    except OSError as exc:
                        last = exc
                        continue
                    return conn
                raise ConnectError(f"cannot connect to {where}: {last}") from last
        except TimeoutError:
            raise ConnectTimeoutError(
                f"could not connect to {where} within {endpoint.connect_timeout:g}s"
            ) from None

    def _resolver(self, endpoint: Endpoint) -> Resolver:
        resolver = self._resolvers.get(endpoint.allow_networks)
        if resolver is None:
            if self._guard:
                allowed = self._allow + parse_networks(endpoint.allow_networks)
                resolver = GuardedResolver(allowed)
            else:
                resolver = Resolver()
            self._resolvers[endpoint.allow_networks] = resolver
        return resolver

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context(cafile=certifi.where())
        return self._ssl

    def _target(self, url: str) -> Target:
        target = self._targets.get(url)
        if target is None:
            if len(self._targets) > 10_000:
                self._targets.clear()
            target = self._targets[url] = parse_url(url)
        return target


class HttpChannel:
    """What the HTTP channels share: their pool of guarded connections, opened
    with the worker's concurrency and the ranges every endpoint may reach."""

    def __init__(
        self, max_connections: int, *, allow: Sequence[Network] = (), guard: bool = True
    ) -> None:
        self.clients = GuardedClients(max_connections, allow=allow, guard=guard)

    @classmethod
    def open(cls, context: ChannelContext) -> Self:
        return cls(context.concurrency, allow=context.allow)

    async def aclose(self) -> None:
        await self.clients.aclose()


def transport_failure(
    exc: BaseException, endpoint: Endpoint, secrets: tuple[str, ...]
) -> tuple[Classification, str]:
    """What an attempt that got no HTTP answer means, and the error to record."""
    blocked = blocked_reason(exc)
    if blocked:
        return ssrf_refusal(blocked), f"SSRFGuard: {blocked}"
    if isinstance(exc, ConnectTimeoutError):
        detail = f"could not connect within {endpoint.connect_timeout:g}s"
        return classify_error("timeout", detail), error_text(exc, secrets, detail)
    if isinstance(exc, TimeoutError):
        detail = f"no response within {endpoint.timeout:g}s"
        return classify_error("timeout", detail), error_text(exc, secrets, detail)
    text = error_text(exc, secrets)
    if isinstance(exc, ConnectError):
        return classify_error("connect", text), text
    if isinstance(exc, InvalidRequestError):
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
