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

The SSRF guard (`outbox.deliver.channels.ssrf.GuardedResolver`) resolves every host before a
connection is opened, and the connection goes to one of the addresses it
let through: the address checked is the address connected to. Literal IP
hosts are checked before the request (`GuardedClients.refused`).

What is sent: ``POST <path> HTTP/1.1``, ``Host``, ``User-Agent`` (unless the
endpoint sets one), ``Content-Length`` and the given headers (values as
UTF-8). What is read: the status, the headers (names lower-cased; the last
of repeated ones) and at most ``READ_LIMIT`` bytes of the body; a connection
whose answer was longer, or that says ``Connection: close``, is not reused.
Informational (1xx) answers are skipped. An answer cut short (before its
``Content-Length`` or last chunk) is a transport error, not a reply, as with
aiohttp. A request is never sent twice: one written onto a kept-alive
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
from dataclasses import dataclass
from typing import cast

import certifi
import httptools
from yarl import URL

from outbox._redact import redact_text
from outbox.deliver.channels.ssrf import (
    GuardedResolver,
    Network,
    Resolver,
    blocked_reason,
    literal_host_problem,
    parse_networks,
)
from outbox.deliver.endpoints import Endpoint
from outbox.deliver.policy import Classification, Verdict, classify_error

EXCERPT_CHARS = 1024
READ_LIMIT = 64 * 1024
USER_AGENT = "outbox/0.1 (+https://github.com/outbox)"
KEEPALIVE_SECONDS = 30.0  # an idle connection older than this is closed, not reused
# A server's own idle timeout (``Keep-Alive: timeout=N``) is respected with
# this much margin: a request must not be written onto a connection the
# server is about to close (Node's default is 5 s).
KEEPALIVE_MARGIN = 1.0


class ConnectError(ConnectionError):
    """No connection could be opened (refused, unreachable, a failed lookup)."""


class ConnectTimeoutError(TimeoutError):
    """No connection within the endpoint's connect timeout."""


class ServerDisconnectedError(ConnectionError):
    """The connection closed before a whole answer's head arrived."""


class InvalidResponseError(ConnectionError):
    """What came back is not HTTP."""


class InvalidRequestError(ValueError):
    """A URL or header this client cannot send (a scheme other than http(s), a line break)."""


# Everything a request can fail with short of an HTTP answer.
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (TimeoutError, OSError, InvalidRequestError)


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP answer: its status, headers and the start of its body."""

    status: int
    headers: Mapping[str, str]  # names lower-cased
    text: str  # at most READ_LIMIT bytes of the body, decoded


@dataclass(frozen=True, slots=True)
class _Target:
    """A URL, parsed once: where to connect and what to put in the request line."""

    tls: bool
    host: str  # for the resolver, and TLS server name
    port: int
    head: bytes  # "POST <path> HTTP/1.1\r\nHost: ...\r\n"


class _Connection(asyncio.Protocol):
    """One kept-alive HTTP/1.1 connection, one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.reusable = True
        self.idle_since = 0.0
        self.keepalive = KEEPALIVE_SECONDS
        self.waiter: asyncio.Future[Reply] | None = None
        self._status = 0
        self._headers: dict[str, str] = {}
        self._chunks: list[bytes] = []
        self._size = 0
        self._limit = READ_LIMIT
        self._head_done = False

    # -- asyncio.Protocol --------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self.waiter is None or self.waiter.done():
            self.close()  # bytes nobody asked for, or the rest of a body we stopped reading
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # 101: the answer, and the end of HTTP here
            self._complete()
            self.close()
        except httptools.HttpParserError as exc:
            self._fail(InvalidResponseError(f"invalid HTTP response: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            if self._head_done and not self._length_delimited():
                self._complete()  # a body delimited by the end of the connection
            elif self._head_done:
                error = ServerDisconnectedError("the connection closed in the middle of the answer")
                error.__cause__ = exc
                self._fail(error)
            else:
                error = ServerDisconnectedError(
                    "the server closed the connection without answering"
                )
                error.__cause__ = exc
                self._fail(error)

    # -- httptools callbacks -------------------------------------------------

    def on_message_begin(self) -> None:
        if self.waiter is None or self.waiter.done():
            # An answer nobody asked for, in the same read as the one we did:
            # stop parsing (the reply must keep its headers) and drop the connection.
            raise InvalidResponseError("an answer that no request asked for")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._status = self.parser.get_status_code()
        self._head_done = not 100 <= self._status < 200 or self._status == 101

    def on_body(self, body: bytes) -> None:
        if self._size < self._limit:
            piece = body[: self._limit - self._size]
            self._chunks.append(piece)
            self._size += len(piece)
            if self._size >= self._limit:  # enough: the rest is not read
                self.reusable = False
                self._complete()

    def on_message_complete(self) -> None:
        if not self._head_done:  # 1xx: the real answer follows
            self._headers = {}
            return
        if not self.parser.should_keep_alive():
            self.reusable = False
        elif "keep-alive" in self._headers:
            self.keepalive = _idle_limit(self._headers["keep-alive"])
        self._complete()

    # -- requests ----------------------------------------------------------

    async def request(self, data: bytes, limit: int) -> Reply:
        assert self.transport is not None
        self._status, self._headers, self._chunks, self._size = 0, {}, [], 0
        self._limit = limit
        self._head_done = False
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        try:
            return await self.waiter
        finally:
            self.waiter = None

    def _complete(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            text = b"".join(self._chunks).decode("utf-8", "replace")
            self.waiter.set_result(Reply(self._status, self._headers, text))

    def _length_delimited(self) -> bool:
        return "content-length" in self._headers or (
            "chunked" in self._headers.get("transfer-encoding", "").lower()
        )

    def _fail(self, exc: BaseException) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


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
        self._idle: dict[tuple[tuple[str, ...], bool, str, int], list[_Connection]] = {}
        self._busy: set[_Connection] = set()
        self._targets: dict[str, _Target] = {}
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
        headers: Mapping[str, str],
        *,
        limit: int = READ_LIMIT,
    ) -> Reply:
        """POST ``body``; the answer with at most ``limit`` bytes of its body.
        Redirects are answers, never followed. Raises one of TRANSPORT_ERRORS."""
        target = self._target(url)
        data = _request(target, body, headers)
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

    async def _acquire(self, target: _Target, endpoint: Endpoint) -> _Connection:
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

    def _release(self, target: _Target, endpoint: Endpoint, conn: _Connection, reuse: bool) -> None:
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

    async def _connect(self, target: _Target, endpoint: Endpoint) -> _Connection:
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
                            _Connection,
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

    def _target(self, url: str) -> _Target:
        target = self._targets.get(url)
        if target is None:
            if len(self._targets) > 10_000:
                self._targets.clear()
            target = self._targets[url] = _parse(url)
        return target


def _idle_limit(keep_alive: str) -> float:
    """How long a connection may sit idle, from a ``Keep-Alive: timeout=N, max=M``
    header: N less the margin, at most KEEPALIVE_SECONDS."""
    for part in keep_alive.split(","):
        name, _, value = part.partition("=")
        if name.strip().lower() == "timeout":
            try:
                return min(KEEPALIVE_SECONDS, float(value.strip()) - KEEPALIVE_MARGIN)
            except ValueError:
                break
    return KEEPALIVE_SECONDS


def _parse(url: str) -> _Target:
    try:
        parsed = URL(url)
    except ValueError as exc:
        raise InvalidRequestError(f"not a URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.raw_host:
        raise InvalidRequestError(f"only http and https URLs with a host are sent, not {url!r}")
    tls = parsed.scheme == "https"
    port = parsed.port or (443 if tls else 80)
    host = parsed.raw_host
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if parsed.is_default_port() else f"{shown}:{port}"
    path = parsed.raw_path_qs or "/"
    return _Target(tls, host, port, f"POST {path} HTTP/1.1\r\nHost: {host_header}\r\n".encode())


def _request(target: _Target, body: bytes, headers: Mapping[str, str]) -> bytes:
    lines = [f"{name}: {value}\r\n" for name, value in headers.items()]
    if "user-agent" not in headers:
        lines.append(f"user-agent: {USER_AGENT}\r\n")
    lines.append(f"content-length: {len(body)}\r\n\r\n")
    head = "".join(lines)
    # One line per header: a CR or LF inside a name or value would start a new one.
    if head.count("\n") != len(lines) + 1 or head.count("\r") != len(lines) + 1:
        raise InvalidRequestError("a header name or value holds a line break")
    return target.head + head.encode("utf-8") + body


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
