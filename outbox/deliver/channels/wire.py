"""HTTP/1.1 on the wire: one kept-alive connection's protocol, and the bytes of a request.

What is sent: ``POST <path> HTTP/1.1``, ``Host``, ``User-Agent`` (unless the
endpoint sets one), ``Content-Length`` and the given headers (values as
UTF-8). What is read: the status, the headers (names lower-cased; the last
of repeated ones) and at most ``READ_LIMIT`` bytes of the body; a connection
whose answer was longer, or that says ``Connection: close``, is not reused.
Informational (1xx) answers are skipped. An answer cut short (before its
``Content-Length`` or last chunk) is a transport error, not a reply, as with
aiohttp. A server's ``Keep-Alive: timeout`` (less a second) bounds how long an
idle connection may be reused.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

import httptools
from yarl import URL

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


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP answer: its status, headers and the start of its body."""

    status: int
    headers: Mapping[str, str]  # names lower-cased
    text: str  # at most READ_LIMIT bytes of the body, decoded


@dataclass(frozen=True, slots=True)
class Target:
    """A URL, parsed once: where to connect and what to put in the request line."""

    tls: bool
    host: str  # for the resolver, and TLS server name
    port: int
    head: bytes  # "POST <path> HTTP/1.1\r\nHost: ...\r\n"


class Connection(asyncio.Protocol):
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
            self.keepalive = idle_limit(self._headers["keep-alive"])
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


def idle_limit(keep_alive: str) -> float:
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


def parse_url(url: str) -> Target:
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
    return Target(tls, host, port, f"POST {path} HTTP/1.1\r\nHost: {host_header}\r\n".encode())


def header_block(headers: Mapping[str, str]) -> str:
    """The header lines of a request: ``headers`` in order, then ``User-Agent``
    unless they set one (a case-insensitive mapping, or lower-case names)."""
    lines = [f"{name}: {value}\r\n" for name, value in headers.items()]
    if "user-agent" not in headers:
        lines.append(f"user-agent: {USER_AGENT}\r\n")
    return checked_block("".join(lines), len(lines))


def checked_block(block: str, lines: int) -> str:
    """``block`` if it holds exactly ``lines`` header lines: a CR or LF inside a
    name or value would start a header of its own."""
    if block.count("\n") != lines or block.count("\r") != lines:
        raise InvalidRequestError("a header name or value holds a line break")
    return block


def request_bytes(target: Target, body: bytes, headers: Mapping[str, str] | str) -> bytes:
    """The whole request; ``headers`` as a mapping, or as a `header_block`."""
    block = headers if isinstance(headers, str) else header_block(headers)
    length = f"content-length: {len(body)}\r\n\r\n"
    return b"".join((target.head, block.encode("utf-8"), length.encode(), body))
