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
    """A NATS connection, its JetStream context, and the publishes waiting on
    each subject (a permissions violation fails them at once; the server
    refusing the credentials fails them all)."""

    def __init__(self) -> None:
        self.nc: Any = None
        self.js: Any = None
        # The tasks publishing to each subject, and the failure that stops one
        # (set, with the task cancelled, by `error`).
        self.waiting: dict[str, dict[asyncio.Task[Any], BrokerError | None]] = {}
        # Set when the server refuses the credentials: at the first connect
        # (nats-py would retry forever), or on a reconnect later.
        self.denied: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def refusal(self) -> BrokerError | None:
        if not self.denied.done():
            return None
        return refused(f"the NATS server refused the credentials: {self.denied.result()}")

    async def error(self, exc: Exception) -> None:
        text = str(exc)
        if _credentials_refused(exc):
            if not self.denied.done():
                self.denied.set_result(text.strip() or type(exc).__name__)
            for waiters in self.waiting.values():
                self._stop(waiters, self.refusal() or refused(text))
            return
        violation = _VIOLATION.search(text)
        if violation:
            on_subject = self.waiting.get(violation.group(1))
            if on_subject:
                self._stop(on_subject, permanent(f"permission denied: {text.strip()}"))
        else:
            log.debug("nats: %s", type(exc).__name__)  # texts may quote a URL

    @staticmethod
    def _stop(waiters: dict[asyncio.Task[Any], BrokerError | None], failure: BrokerError) -> None:
        for task, stopped in waiters.items():
            if stopped is None:
                waiters[task] = failure
                task.cancel()


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
        conn.js = conn.nc.jetstream()
        return conn

    async def disconnect(self, connection: Any) -> None:
        await connection.nc.close()

    async def publish(self, connection: Any, endpoint: Endpoint, out: Outbound) -> None:
        conn: _Connection = connection
        problem = subject_problem(out.target)
        if problem:
            raise permanent(problem)
        refusal = conn.refusal()
        if refusal is not None:  # since a reconnect: this connection is no good
            raise refusal
        headers = {**out.headers, "Nats-Msg-Id": out.id, "Content-Type": "application/json"}
        task = asyncio.current_task()
        assert task is not None  # a worker's deliveries run in tasks
        waiters = conn.waiting.setdefault(out.target, {})
        waiters[task] = None
        try:
            # In this task (no task or wait per publish); `error` cancels it to
            # fail it at once on a permissions violation or refused credentials.
            await conn.js.publish(out.target, out.body, timeout=endpoint.timeout, headers=headers)
        except asyncio.CancelledError:
            stopped = waiters.get(task)
            if stopped is None:
                raise
            task.uncancel()
            raise stopped from None
        finally:
            waiters.pop(task, None)
            if not waiters:
                conn.waiting.pop(out.target, None)

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
