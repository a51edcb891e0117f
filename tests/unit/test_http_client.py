"""The channels' HTTP client against local servers speaking raw HTTP bytes, so
each edge case (1xx, chunked, close-delimited, oversized, stalled, closed
idle connections, TLS, IPv6) is exactly what the server sends."""

from __future__ import annotations

import asyncio
import logging
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import pytest

from outbox.deliver.channels.http import (
    READ_LIMIT,
    TRANSPORT_ERRORS,
    ConnectTimeoutError,
    GuardedClients,
    InvalidRequestError,
    ServerDisconnectedError,
    transport_failure,
)
from outbox.deliver.channels.ssrf import LOOPBACK
from outbox.deliver.endpoints import Endpoint
from outbox.deliver.policy import RetryPolicy, Verdict

Handler = Callable[[int, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def _endpoint(timeout: float = 5.0, connect_timeout: float = 2.0) -> Endpoint:
    policy = RetryPolicy(max_attempts=1, retry_window=timedelta(hours=1), base=1, cap=1)
    settings = {"timeout": timeout, "connect_timeout": connect_timeout}
    return Endpoint("e", "webhook", policy, settings)


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes] | None:
    """One request's head and body, or None at the end of the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head, await reader.readexactly(length)


class _Server:
    """A local server handing each connection (numbered from 0) to ``handler``."""

    def __init__(
        self, handler: Handler, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None
    ) -> None:
        self.handler = handler
        self.host = host
        self.tls = tls
        self.connections = 0
        self.closed_by_client = 0  # connections whose end the client reached first
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> _Server:
        self._server = await asyncio.start_server(self._serve, self.host, 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        self._server.close()
        for writer in self._writers:  # ends the handlers (cancelling them would log errors)
            writer.transport.abort()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2)
        await self._server.wait_closed()

    def url(self, path: str = "/hook") -> str:
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{shown}:{self.port}{path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.append(writer)
        index = self.connections
        self.connections += 1
        try:
            await self.handler(index, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def until_closed(self, reader: asyncio.StreamReader) -> None:
        """Wait for the client to end the connection, and count it."""
        try:
            while await reader.read(65536):
                pass
        except (ConnectionError, ssl.SSLError):
            pass
        self.closed_by_client += 1


def _answering(*answers: bytes) -> Handler:
    """Every request on every connection gets the next of ``answers`` (the last repeats)."""
    sent = 0

    async def handler(_: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        while await _read_request(reader) is not None:
            writer.write(answers[min(sent, len(answers) - 1)])
            sent += 1
            await writer.drain()

    return handler


@pytest.fixture
async def clients() -> AsyncIterator[GuardedClients]:
    pool = GuardedClients(2, allow=LOOPBACK)
    try:
        yield pool
    finally:
        await pool.aclose()


async def test_a_request_is_exact_and_the_connection_kept_alive(clients: GuardedClients) -> None:
    seen: list[tuple[bytes, bytes]] = []

    async def handler(_: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (request := await _read_request(reader)) is not None:
            seen.append(request)
            writer.write(b"HTTP/1.1 202 Accepted\r\nX-Seen: Yes\r\nContent-Length: 4\r\n\r\nfine")

    async with _Server(handler) as server:
        for body in (b'{"a":1}', b"{}"):
            reply = await clients.post(_endpoint(), server.url("/hook?x=1"), body, {"X-K": "é"})
            assert (reply.status, reply.headers["x-seen"], reply.text) == (202, "Yes", "fine")
    assert server.connections == 1
    head, body = seen[0]
    assert (
        head
        == (
            f"POST /hook?x=1 HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nX-K: é\r\n"
            "user-agent: outbox/0.1 (+https://github.com/outbox)\r\ncontent-length: 7\r\n\r\n"
        ).encode()
    )
    assert body == b'{"a":1}'


async def test_an_ipv6_literal_is_bracketed_in_the_host_header(clients: GuardedClients) -> None:
    heads: list[bytes] = []

    async def handler(_: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (request := await _read_request(reader)) is not None:
            heads.append(request[0])
            writer.write(OK)

    async with _Server(handler, host="::1") as server:
        reply = await clients.post(_endpoint(), server.url(), b"{}", {})
    assert reply.status == 200
    assert f"\r\nHost: [::1]:{server.port}\r\n".encode() in heads[0]


async def test_connection_close_is_not_reused(clients: GuardedClients) -> None:
    answer = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    async with _Server(_answering(answer)) as server:
        for _ in range(2):
            assert (await clients.post(_endpoint(), server.url(), b"{}", {})).text == "ok"
    assert server.connections == 2


async def test_the_servers_keep_alive_timeout_is_respected(clients: GuardedClients) -> None:
    # Keep-Alive: timeout=1 leaves no idle time once the margin is taken: the
    # connection is not reused, though this server would keep it open. With
    # timeout=30 it is.
    for timeout, connections in (("1", 2), ("30", 1)):
        answer = (
            f"HTTP/1.1 200 OK\r\nKeep-Alive: timeout={timeout}, max=100\r\n"
            "Content-Length: 2\r\n\r\nok"
        ).encode()
        async with _Server(_answering(answer)) as server:
            for _ in range(2):
                assert (await clients.post(_endpoint(), server.url(), b"{}", {})).text == "ok"
        assert server.connections == connections, timeout


def test_keep_alive_headers_give_theidle_limit() -> None:
    from outbox.deliver.channels.wire import KEEPALIVE_SECONDS, idle_limit

    assert idle_limit("timeout=5, max=1000") == 4.0
    assert idle_limit("max=10, Timeout = 2.5") == 1.5
    assert idle_limit("timeout=600") == KEEPALIVE_SECONDS
    assert idle_limit("timeout=soon") == KEEPALIVE_SECONDS
    assert idle_limit("max=5") == KEEPALIVE_SECONDS


async def test_a_body_delimited_by_the_close_is_read_whole(clients: GuardedClients) -> None:
    async def handler(_: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 500 Oops\r\n\r\nbroken ")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"down")

    async with _Server(handler) as server:
        reply = await clients.post(_endpoint(), server.url(), b"{}", {})
        assert (reply.status, reply.text) == (500, "broken down")
        assert (await clients.post(_endpoint(), server.url(), b"{}", {})).status == 500
    assert server.connections == 2


async def test_informational_answers_are_skipped(clients: GuardedClients) -> None:
    async def handler(_: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await _read_request(reader) is not None:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.02)
            writer.write(b"HTTP/1.1 201 Created\r\nX-Final: yes\r\nContent-Length: 4\r\n\r\ndone")

    async with _Server(handler) as server:
        for _ in range(2):
            reply = await clients.post(_endpoint(), server.url(), b"{}", {})
            assert (reply.status, reply.text) == (201, "done")
            assert reply.headers == {"x-final": "yes", "content-length": "4"}
    assert server.connections == 1


async def test_a_chunked_body_is_decoded_across_writes(clients: GuardedClients) -> None:
    async def handler(_: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await _read_request(reader) is not None:
            for piece in (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
                b"lo\r",
            ):
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0.01)
            writer.write(b"\n6\r\n world\r\n0\r\n\r\n")

    async with _Server(handler) as server:
        for _ in range(2):
            assert (await clients.post(_endpoint(), server.url(), b"{}", {})).text == "hello world"
    assert server.connections == 1


async def test_a_body_past_the_limit_is_cut_and_its_connection_dropped(
    clients: GuardedClients,
) -> None:
    big = b"x" * (READ_LIMIT + 10_000)
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(big), big)
    async with _Server(_answering(answer)) as server:
        reply = await clients.post(_endpoint(), server.url(), b"{}", {})
        assert reply.text == "x" * READ_LIMIT
        small = await clients.post(_endpoint(), server.url(), b"{}", {}, limit=10)
        assert small.text == "x" * 10
    assert server.connections == 2


async def test_a_connection_the_server_closed_while_idle_is_not_used(
    clients: GuardedClients,
) -> None:
    async def handler(_: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(OK)  # kept alive as far as the client knows, then closed

    async with _Server(handler) as server:
        await clients.post(_endpoint(), server.url(), b"{}", {})
        await asyncio.sleep(0.1)
        assert (await clients.post(_endpoint(), server.url(), b"{}", {})).text == "ok"
    assert server.connections == 2


async def test_a_connection_the_server_closes_as_it_is_reused_fails_retryably(
    clients: GuardedClients,
) -> None:
    # A server may close an idle connection at any moment (its keep-alive
    # timeout). A request written just before the close is seen fails as a
    # retryable network error -- it is not sent again on another connection
    # (as with aiohttp, for a POST): every arrival at a receiver is one attempt
    # in the ledger. The next request gets a new connection.
    async def handler(_: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(OK)

    async with _Server(handler) as server:
        assert (await clients.post(_endpoint(), server.url(), b"{}", {})).text == "ok"
        with pytest.raises(ServerDisconnectedError) as caught:
            await clients.post(_endpoint(), server.url(), b"{}", {})
        classification, error = transport_failure(caught.value, _endpoint(), ())
        assert classification.verdict is Verdict.RETRYABLE
        assert error.startswith("ServerDisconnectedError: ")
        assert (await clients.post(_endpoint(), server.url(), b"{}", {})).text == "ok"
    assert server.connections == 2


async def test_a_new_connection_closed_unanswered_fails_as_a_transport_error(
    clients: GuardedClients,
) -> None:
    async def handler(_: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)

    async with _Server(handler) as server:
        with pytest.raises(ServerDisconnectedError):
            await clients.post(_endpoint(), server.url(), b"{}", {})
    assert server.connections == 1  # a fresh connection is not tried twice


@pytest.mark.parametrize(
    "cut",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\npart",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\npart\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Le",
    ],
)
async def test_an_answer_cut_short_is_a_transport_error_and_not_resent(
    clients: GuardedClients, cut: bytes
) -> None:
    # The second request goes on the kept-alive connection; part of its answer
    # came back, so it is not sent again either.
    async def handler(_: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(OK)
        await _read_request(reader)
        writer.write(cut)

    async with _Server(handler) as server:
        await clients.post(_endpoint(), server.url(), b"{}", {})
        with pytest.raises(ServerDisconnectedError) as caught:
            await clients.post(_endpoint(), server.url(), b"{}", {})
    assert server.connections == 1
    classification, _ = transport_failure(caught.value, _endpoint(), ())
    assert classification.verdict is Verdict.RETRYABLE


async def test_a_timed_out_exchange_never_lends_its_connection(clients: GuardedClients) -> None:
    async def handler(i: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if i == 0:  # the head, part of the body, then the rest too late
            await _read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
            await asyncio.sleep(0.5)
            writer.write(b"defghij")
            await _answering(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale")(
                i, reader, writer
            )
        else:
            await _answering(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh")(
                i, reader, writer
            )

    endpoint = _endpoint(timeout=0.2)
    async with _Server(handler) as server:
        with pytest.raises(TimeoutError) as caught:
            await clients.post(endpoint, server.url(), b"{}", {})
        classification, error = transport_failure(caught.value, endpoint, ())
        assert classification.verdict is Verdict.RETRYABLE
        assert "no response within 0.2s" in error
        assert (await clients.post(endpoint, server.url(), b"{}", {})).text == "fresh"
    assert server.connections == 2


async def test_a_cancelled_request_closes_its_connection(clients: GuardedClients) -> None:
    arrived = asyncio.Event()

    async def handler(i: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if i == 0:
            await _read_request(reader)
            arrived.set()
            await server.until_closed(reader)
        else:
            await _answering(OK)(i, reader, writer)

    async with _Server(handler) as server:
        task = asyncio.create_task(clients.post(_endpoint(), server.url(), b"{}", {}))
        await arrived.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (await clients.post(_endpoint(), server.url(), b"{}", {})).text == "ok"
        await asyncio.sleep(0.05)
        assert server.closed_by_client == 1
    assert server.connections == 2


async def test_more_answers_than_asked_for_never_reach_a_reply(clients: GuardedClients) -> None:
    # A second (unrequested) answer in the same segment as the first: the
    # first reply keeps its own headers and the connection is not lent again.
    stale = b"HTTP/1.1 500 Stale\r\nX-Stale: 1\r\nContent-Length: 5\r\n\r\n"
    async with _Server(_answering(OK + stale, OK)) as server:
        reply = await clients.post(_endpoint(), server.url(), b"{}", {})
        assert (reply.status, reply.text) == (200, "ok")
        assert "x-stale" not in reply.headers
        second = await clients.post(_endpoint(), server.url(), b"{}", {})
        assert (second.status, second.text) == (200, "ok")
    assert server.connections == 2


async def test_a_switching_protocols_answer_is_an_answer_not_a_crash(
    clients: GuardedClients, caplog: pytest.LogCaptureFixture
) -> None:
    answer = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    )
    async with _Server(_answering(answer, OK)) as server:
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            reply = await clients.post(_endpoint(), server.url(), b"{}", {})
            await asyncio.sleep(0.05)
        assert reply.status == 101
        assert (await clients.post(_endpoint(), server.url(), b"{}", {})).status == 200
    assert not [r for r in caplog.records if r.name == "asyncio"], caplog.text
    assert server.connections == 2


async def test_idle_connections_beyond_the_limit_are_closed() -> None:
    clients = GuardedClients(2, allow=LOOPBACK)
    everyone_asked = asyncio.Event()
    waiting = 0

    async def handler(_: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal waiting
        while await _read_request(reader) is not None:
            waiting += 1
            if waiting == 4:
                everyone_asked.set()
            await everyone_asked.wait()
            writer.write(OK)
        server.closed_by_client += 1

    try:
        async with _Server(handler) as server:
            posts = [clients.post(_endpoint(), server.url(), b"{}", {}) for _ in range(4)]
            assert [r.text for r in await asyncio.gather(*posts)] == ["ok"] * 4
            assert server.connections == 4
            await asyncio.sleep(0.05)
            assert server.closed_by_client == 2  # two kept idle, two closed
            for _ in range(3):
                await clients.post(_endpoint(), server.url(), b"{}", {})
            assert server.connections == 4  # the idle ones serve what follows
    finally:
        await clients.aclose()


async def test_aclose_fails_the_requests_in_flight(clients: GuardedClients) -> None:
    arrived = asyncio.Event()

    async def handler(_: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\npart")
        arrived.set()
        await server.until_closed(reader)

    async with _Server(handler) as server:
        task = asyncio.create_task(clients.post(_endpoint(), server.url(), b"{}", {}))
        await arrived.wait()
        await asyncio.sleep(0.02)
        await clients.aclose()
        async with asyncio.timeout(1):  # not the endpoint's 5 s
            with pytest.raises(ServerDisconnectedError, match="in the middle of the answer"):
                await task
        await asyncio.sleep(0.05)
        assert server.closed_by_client == 1


@pytest.mark.parametrize(
    "headers",
    [
        {"X-A": "1\r\nX-Injected: 2"},
        {"X-A": "1\nX-Injected: 2"},
        {"X-A": "1\rX-Injected: 2"},
        {"X-A\r\nX-Injected": "2"},
    ],
)
async def test_a_line_break_in_a_header_is_refused_before_connecting(
    clients: GuardedClients, headers: dict[str, str]
) -> None:
    async with _Server(_answering(OK)) as server:
        with pytest.raises(InvalidRequestError) as caught:
            await clients.post(_endpoint(), server.url(), b"{}", headers)
    assert server.connections == 0
    classification, _ = transport_failure(caught.value, _endpoint(), ())
    assert classification.verdict is Verdict.PERMANENT


async def test_a_host_no_resolver_can_encode_is_a_transport_error() -> None:
    # An empty or 64+ character label passes the URL parser but makes
    # getaddrinfo raise UnicodeError, which no channel catches.
    clients = GuardedClients(2, allow=LOOPBACK)
    try:
        for url in ("http://a..example:9/", f"http://{'a' * 64}.example:9/"):
            with pytest.raises(TRANSPORT_ERRORS) as caught:
                await clients.post(_endpoint(), url, b"{}", {})
            classification, error = transport_failure(caught.value, _endpoint(), ())
            assert classification.verdict is Verdict.PERMANENT, error
    finally:
        await clients.aclose()


async def test_a_bot_token_in_the_path_stays_out_of_errors(clients: GuardedClients) -> None:
    token = "not-a-standard-token-but-secret"
    endpoint = _endpoint()
    async with _Server(_answering(OK)) as server:
        port = server.port
    urls = [f"ftp://127.0.0.1/bot{token}/sendMessage", f"http://127.0.0.1:{port}/bot{token}/x"]
    for url in urls:
        with pytest.raises(TRANSPORT_ERRORS) as caught:
            await clients.post(endpoint, url, b"{}", {})
        _, error = transport_failure(caught.value, endpoint, (token,))
        assert token not in error
        assert error


# -- TLS ----------------------------------------------------------------------


Certificates = dict[str, tuple[Path, Path]]


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """Self-signed certificates (each its own CA): one for the name localhost,
    one for the loopback addresses."""
    made: Certificates = {}
    for kind, names in (("names", "DNS:localhost"), ("ips", "IP:127.0.0.1,IP:::1")):
        where = tmp_path_factory.mktemp(kind)
        cert, key = where / "cert.pem", where / "key.pem"
        subprocess.run(
            [
                *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt"),
                *("ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=test"),
                *("-addext", f"subjectAltName={names}", "-keyout", str(key), "-out", str(cert)),
            ],
            check=True,
            capture_output=True,
        )
        made[kind] = (cert, key)
    return made


def _server_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return context


async def _tls_post(certificate: tuple[Path, Path], host: str, times: int = 1) -> _Server:
    clients = GuardedClients(2, allow=LOOPBACK)
    clients._ssl = ssl.create_default_context(cafile=str(certificate[0]))  # trust it
    listen = "::1" if host == "::1" else "127.0.0.1"
    try:
        async with _Server(_answering(OK), host=listen, tls=_server_tls(certificate)) as server:
            url = server.url().replace(listen, host)
            for _ in range(times):
                assert (await clients.post(_endpoint(), url, b"{}", {})).text == "ok"
        return server
    finally:
        await clients.aclose()


@pytest.mark.parametrize(
    ("host", "kind"), [("127.0.0.1", "ips"), ("::1", "ips"), ("localhost", "names")]
)
async def test_tls_verifies_the_host_named_or_the_ip_literal(
    certificates: Certificates, host: str, kind: str
) -> None:
    server = await _tls_post(certificates[kind], host, times=2)
    assert server.connections == 1


@pytest.mark.parametrize(("host", "kind"), [("127.0.0.1", "names"), ("localhost", "ips")])
async def test_tls_refuses_a_certificate_for_another_host(
    certificates: Certificates, host: str, kind: str
) -> None:
    with pytest.raises(TRANSPORT_ERRORS) as caught:
        await _tls_post(certificates[kind], host)
    assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError), caught.value


async def test_an_untrusted_certificate_is_a_transport_error(
    clients: GuardedClients, certificates: Certificates
) -> None:
    async with _Server(_answering(OK), tls=_server_tls(certificates["ips"])) as server:
        with pytest.raises(TRANSPORT_ERRORS) as caught:
            await clients.post(_endpoint(), server.url(), b"{}", {})
    assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)
    classification, _ = transport_failure(caught.value, _endpoint(), ())
    assert classification.verdict is Verdict.RETRYABLE


async def test_a_stalled_tls_handshake_times_out_and_leaves_nothing_open(
    clients: GuardedClients,
) -> None:
    async def handler(_: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.until_closed(reader)  # TCP accepted, TLS never answered

    endpoint = _endpoint(timeout=5.0, connect_timeout=0.2)
    async with _Server(handler) as server:
        url = server.url().replace("http://", "https://")
        with pytest.raises(ConnectTimeoutError) as caught:
            await clients.post(endpoint, url, b"{}", {})
        _, error = transport_failure(caught.value, endpoint, ())
        assert "could not connect within 0.2s" in error
        task = asyncio.create_task(clients.post(endpoint, url, b"{}", {}))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.05)
        assert server.closed_by_client == 2


async def test_idle_connections_past_their_keep_alive_are_closed_everywhere(
    clients: GuardedClients,
) -> None:
    # A burst opens several connections; steady traffic afterwards reuses only
    # the newest, and the older ones must still be closed once past their
    # keep-alive (here the server's timeout=2 leaves one second), not left open.
    answer = b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=2\r\nContent-Length: 2\r\n\r\nok"
    ended = 0

    async def handler(_: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal ended
        while await _read_request(reader) is not None:
            writer.write(answer)
            await writer.drain()
        ended += 1  # the client ended the connection

    async with _Server(handler) as server:
        endpoint = _endpoint()
        await asyncio.gather(*(clients.post(endpoint, server.url(), b"{}", {}) for _ in range(5)))
        assert server.connections == 5
        for _ in range(25):  # 2.5 s of a request every 0.1 s
            assert (await clients.post(endpoint, server.url(), b"{}", {})).text == "ok"
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.1)
        assert ended >= 4
