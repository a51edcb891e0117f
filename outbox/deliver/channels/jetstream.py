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
import re
from typing import Any
from urllib.parse import urlsplit

from outbox.deliver.channels.broker import (
    BrokerChannel,
    BrokerError,
    Outbound,
    log,
    permanent,
    refused,
    retryable,
)
from outbox.deliver.channels.spec import ChannelSpec
from outbox.deliver.channels.urls import broker_url_check, broker_url_pattern
from outbox.deliver.model import Endpoint

SCHEMES = ("nats", "tls")
_TOKEN = re.compile(r"^[^\s*>.]+$")
_VIOLATION = re.compile(r"permissions violation for publish to \"?([^\"\s]+)", re.IGNORECASE)


def subject_problem(subject: str) -> str | None:
    """Why a message cannot be published to ``subject``, or None."""
    tokens = subject.split(".")
    if not subject or not all(_TOKEN.match(t) for t in tokens):
        return (
            f"the subject {subject!r} is not one a message can be published to (tokens "
            "separated by dots, none empty, no spaces and no wildcards * or >)"
        )
    return None


class _Connection:
    """A NATS connection, its JetStream context, and the publishes waiting on
    each subject (a permissions violation fails them at once)."""

    def __init__(self) -> None:
        self.nc: Any = None
        self.js: Any = None
        self.waiting: dict[str, set[asyncio.Future[None]]] = {}

    async def error(self, exc: Exception) -> None:
        text = str(exc)
        violation = _VIOLATION.search(text)
        if violation:
            for waiter in self.waiting.get(violation.group(1), ()):
                if not waiter.done():
                    waiter.set_exception(permanent(f"permission denied: {text.strip()}"))
        else:
            log.debug("nats: %s", type(exc).__name__)  # texts may quote a URL


class NatsChannel(BrokerChannel):
    name = "nats"
    library = "nats"
    extra = "nats"

    async def connect(self, client: Any, endpoint: Endpoint) -> _Connection:
        url = endpoint.url or ""
        options: dict[str, Any] = {}
        if endpoint.secret:
            if urlsplit(url.split(",")[0]).username:
                options["password"] = endpoint.secret
            else:
                options["token"] = endpoint.secret
        conn = _Connection()

        async def quiet(*_: Any) -> None:
            return None

        conn.nc = await client.connect(
            servers=[s if "://" in s else f"nats://{s}" for s in url.split(",")],
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
        conn.js = conn.nc.jetstream()
        return conn

    async def disconnect(self, connection: Any) -> None:
        await connection.nc.close()

    async def publish(self, connection: Any, endpoint: Endpoint, out: Outbound) -> None:
        conn: _Connection = connection
        problem = subject_problem(out.target)
        if problem:
            raise permanent(problem)
        headers = {**out.headers, "Nats-Msg-Id": out.id, "Content-Type": "application/json"}
        violation: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiting = conn.waiting.setdefault(out.target, set())
        waiting.add(violation)
        publish = asyncio.ensure_future(
            conn.js.publish(out.target, out.body, timeout=endpoint.timeout, headers=headers)
        )
        try:
            await asyncio.wait((publish, violation), return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiting.discard(violation)
            if not waiting:
                conn.waiting.pop(out.target, None)
        if violation.done():
            publish.cancel()
            violation.result()  # raises the permission failure
        publish.result()  # raises what the publish raised; a PubAck: delivered

    def failure(self, exc: BaseException) -> BrokerError:
        import nats.errors as ne
        import nats.js.errors as je

        if isinstance(exc, BrokerError):
            return exc
        if isinstance(exc, je.NoStreamResponseError):
            return permanent("no JetStream stream captures the subject (no responders)")
        if isinstance(exc, je.APIError):
            text = f"JetStream refused the message: {exc.description or exc} (code {exc.code})"
            return retryable(text) if exc.code == 503 else permanent(text)
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


SPEC = ChannelSpec(
    name="nats",
    summary="publish to NATS JetStream, waiting for the stream's PubAck (Nats-Msg-Id: the id)",
    open=NatsChannel.open,
    url="required",
    url_pattern=broker_url_pattern(*SCHEMES),
    check_url=broker_url_check(
        *SCHEMES,
        token_in_url="a token goes in --secret, not the URL (where it could not be masked)",
    ),
    secret_help="the password of the URL's user, or a token",
    settings=frozenset({"target"}),
    needs=frozenset({"target"}),
)
