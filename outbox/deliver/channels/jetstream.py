"""The ``nats`` channel: publish to NATS JetStream and wait for the stream's PubAck.

``--url nats://host:4222`` (``tls://`` for TLS; several servers
comma-separated; a user and password in the URL, or ``--secret``: the
password of the URL's user, or else a token). ``--target`` is the subject, a
template (``orders.{key}``). Every message carries ``Nats-Msg-Id`` = the
message id, so a redelivery within the stream's duplicate window (2 minutes
by default) is dropped by JetStream and a consumer sees each message once.
The payload is the body; the message's headers, ``outbox-id`` and
``outbox-key`` are NATS headers.

What the answers mean:

* a PubAck -- delivered (a duplicate's too: the stream has it);
* no stream captures the subject (no responders) -- permanent;
* a JetStream error answer (message too large, ...) -- permanent, but 503
  (JetStream unavailable) is retried;
* a payload over the server's ``max_payload`` -- permanent;
* "Permissions Violation for Publish" -- permanent;
* wrong credentials -- the endpoint is paused (``outbox endpoint resume`` once fixed);
* no server, a connection lost, no PubAck within ``--timeout`` -- retried,
  counted by the circuit breaker.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import re
from typing import Any
from urllib.parse import unquote, urlsplit

from outbox.deliver.channels.broker import (
    CLOSE_WITHIN,
    BrokerChannel,
    BrokerError,
    Outbound,
    log,
    permanent,
    refused,
    retryable,
)
from outbox.deliver.model import Endpoint

_TOKEN = re.compile(r"^[^\s*>.]+$")
_VIOLATION = re.compile(r"permissions violation for publish to \"?([^\"\s]+)", re.IGNORECASE)


@functools.lru_cache(maxsize=4096)
def subject_problem(subject: str) -> str | None:
    """Why a message cannot be published to ``subject``, or None."""
    tokens = subject.split(".")
    if not subject or not all(_TOKEN.match(t) for t in tokens):
        return (
            f"the subject {subject!r} is not one a message can be published to (tokens "
            "separated by dots, none empty, no spaces and no wildcards * or >)"
        )
    return None


def _credentials_refused(exc: BaseException) -> bool:
    """Is ``exc`` the server refusing the credentials ('Authorization Violation')?"""
    import nats.errors as ne

    return isinstance(exc, ne.AuthorizationError) or "authorization" in str(exc).lower()


class _Connection:
    """A NATS connection and the publishes awaiting their PubAck.

    Each publish carries a reply subject of its own under one wildcard
    subscription (``_INBOX.<nuid>.*``, opened at connect), and its answer is
    read here: a PubAck, a JetStream error, or a no-responders status. That
    is what nats-py's ``js.publish`` does through ``request``, without a
    random token, a ``wait_for`` and a parsed ``PubAck`` per message (the
    deadline is the channel's own timer). A permissions violation fails the
    publishes to its subject at once; the server refusing the credentials
    fails them all."""

    def __init__(self) -> None:
        self.nc: Any = None
        self.prefix = ""
        self._tokens = itertools.count()
        # reply token -> (the answer awaited, the subject published to)
        self.answers: dict[str, tuple[asyncio.Future[None], str]] = {}
        # Set when the server refuses the credentials: at the first connect
        # (nats-py would retry forever), or on a reconnect later.
        self.denied: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def listen(self) -> None:
        self.prefix = self.nc.new_inbox() + "."
        await self.nc.subscribe(self.prefix + "*", cb=self._answered)

    async def publish(self, subject: str, body: bytes, headers: dict[str, str]) -> None:
        token = str(next(self._tokens))
        answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.answers[token] = (answer, subject)
        try:
            await self.nc.publish(subject, body, reply=self.prefix + token, headers=headers)
            await answer
        finally:
            self.answers.pop(token, None)
            if answer.done() and not answer.cancelled():
                answer.exception()  # failed by `fail` while the publish itself raised: seen

    async def _answered(self, msg: Any) -> None:
        entry = self.answers.pop(msg.subject[len(self.prefix) :], None)
        if entry is None or entry[0].done():  # given up already (timed out)
            return
        failure = answer_failure(msg.headers, msg.data)
        if failure is None:
            entry[0].set_result(None)
        else:
            entry[0].set_exception(failure)

    def fail(self, failure: BrokerError, subject: str | None = None) -> None:
        """Fail the publishes awaiting an answer (on ``subject`` only, if given)."""
        for answer, on in list(self.answers.values()):
            if not answer.done() and (subject is None or on == subject):
                answer.set_exception(failure)

    def refusal(self) -> BrokerError | None:
        if not self.denied.done():
            return None
        return refused(f"the NATS server refused the credentials: {self.denied.result()}")

    async def error(self, exc: Exception) -> None:
        text = str(exc)
        if _credentials_refused(exc):
            if not self.denied.done():
                self.denied.set_result(text.strip() or type(exc).__name__)
            self.fail(self.refusal() or refused(text))
            return
        violation = _VIOLATION.search(text)
        if violation:
            self.fail(permanent(f"permission denied: {text.strip()}"), violation.group(1))
        else:
            log.debug("nats: %s", type(exc).__name__)  # texts may quote a URL


def answer_failure(headers: dict[str, str] | None, data: bytes) -> BrokerError | None:
    """What JetStream's answer to a publish means: None for a PubAck (a
    duplicate's too: the stream has it), else the failure."""
    if headers:
        status = headers.get("Status")
        if status == "503":
            return permanent("no JetStream stream captures the subject (no responders)")
        if status:
            return retryable(f"JetStream answered the publish with status {status}, not a PubAck")
    if b'"error"' not in data and data.startswith(b'{"stream"'):
        return None  # the PubAck's usual shape, read without parsing it
    try:
        answer = json.loads(data)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        return retryable("JetStream's answer to the publish is not a PubAck")
    error = answer.get("error")
    if isinstance(error, dict):
        code = error.get("code")
        text = f"JetStream refused the message: {error.get('description') or error} (code {code})"
        return retryable(text) if code == 503 else permanent(text)
    if "stream" in answer:
        return None
    return retryable("JetStream's answer to the publish is not a PubAck")


class NatsChannel(BrokerChannel):
    name = "nats"
    library = "nats"
    extra = "nats"

    async def connect(self, client: Any, endpoint: Endpoint) -> _Connection:
        servers = [s if "://" in s else f"nats://{s}" for s in (endpoint.url or "").split(",")]
        options: dict[str, Any] = {}
        if endpoint.secret:
            user = urlsplit(servers[0]).username
            if user:
                # nats-py sends a password only with a user; without one it
                # would send the URL's user name as a token.
                options["user"], options["password"] = unquote(user), endpoint.secret
            else:
                options["token"] = endpoint.secret
        conn = _Connection()

        async def quiet(*_: Any) -> None:
            return None

        conn.nc = client.NATS()
        # nats-py retries a first connect forever (max_reconnect_attempts=-1),
        # refused credentials included: race it against the refusal, and
        # close what it left behind if it is given up (refused, or the
        # --connect-timeout of the caller).
        connecting = asyncio.ensure_future(
            conn.nc.connect(
                servers=servers,
                connect_timeout=endpoint.connect_timeout,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                allow_reconnect=True,
                error_cb=conn.error,
                disconnected_cb=quiet,
                reconnected_cb=quiet,
                closed_cb=quiet,
                name="outbox",
                **options,
            )
        )
        try:
            await asyncio.wait((connecting, conn.denied), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not connecting.done():
                connecting.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await connecting
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.nc.close(), CLOSE_WITHIN)
        refusal = conn.refusal()
        if refusal is not None and (connecting.cancelled() or connecting.exception()):
            raise refusal
        connecting.result()  # raises what connect raised
        await conn.listen()
        return conn

    async def disconnect(self, connection: Any) -> None:
        conn: _Connection = connection
        try:
            await conn.nc.close()
        finally:
            conn.fail(retryable("the NATS connection was closed", drop=True))

    async def publish(self, connection: Any, endpoint: Endpoint, out: Outbound) -> None:
        conn: _Connection = connection
        problem = subject_problem(out.target)
        if problem:
            raise permanent(problem)
        refusal = conn.refusal()
        if refusal is not None:  # since a reconnect: this connection is no good
            raise refusal
        headers = {**out.headers, "Nats-Msg-Id": out.id, "Content-Type": "application/json"}
        await conn.publish(out.target, out.body, headers)

    def failure(self, exc: BaseException) -> BrokerError:
        import nats.errors as ne

        if isinstance(exc, BrokerError):
            return exc
        if isinstance(exc, ne.MaxPayloadError):
            return permanent(f"the payload is over the server's max_payload: {exc}")
        if isinstance(exc, ne.AuthorizationError) or "authorization" in str(exc).lower():
            return refused(f"the NATS server refused the credentials: {exc}")
        if isinstance(exc, ne.NoServersError | OSError):
            return retryable(
                f"cannot reach the NATS server: {type(exc).__name__}: {exc}", drop=True
            )
        if isinstance(exc, ne.ConnectionClosedError | ne.StaleConnectionError):
            return retryable(f"the NATS connection is gone: {type(exc).__name__}", drop=True)
        if isinstance(exc, ne.TimeoutError | asyncio.TimeoutError):
            return retryable("no PubAck from JetStream in time")
        return retryable(f"{type(exc).__name__}: {exc}")
