"""What the message-broker channels share: one connection per endpoint per
worker process, reconnected with backoff, and attempts that count as
delivered only when the broker acknowledged them.

A broker channel (`BrokerChannel`) says how to connect (`connect`), how to
publish one message and wait for the broker's acknowledgement (`publish`),
and what its client library's errors mean (`failure`). Everything else is
here, the same for every broker:

* the target (``--target``, a template of the message's key, id and payload
  fields) rendered per message; a message that lacks a field it needs is a
  permanent failure naming the field (``outbox.enqueue()`` refuses most);
* one connection per endpoint, shared by every delivery in flight, opened at
  the first send; after a connection fails, the next attempt waits out a
  backoff (0.1 s, doubling to 5 s) and fails fast, saying why, until then;
  an error that says the connection is gone drops it, and the next send
  reconnects;
* ``--timeout`` bounds the wait for the acknowledgement: a timeout is
  retried and counts against the endpoint (circuit breaker), as a broker
  that cannot be reached does;
* credentials (the URL's password, ``--secret``) masked in every error text;
* the client library is an optional extra: without it the endpoint is
  paused, saying which extra to install.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

from outbox._redact import redact_text
from outbox.deliver.channels.deadlines import Deadlines
from outbox.deliver.channels.spec import ChannelContext
from outbox.deliver.model import (
    AttemptClock,
    AttemptResult,
    Claimed,
    Delivery,
    Endpoint,
    put_topic,
    put_trace,
)
from outbox.deliver.policy import Classification, Health, Verdict
from outbox.settings.template import Template, TemplateError, parse

log = logging.getLogger("outbox.worker")

BACKOFF_FIRST = 0.1
BACKOFF_CAP = 5.0
CLOSE_WITHIN = 5.0  # seconds a connection may take to close on shutdown
# Headers outbox sets on every broker message (where the protocol has headers).
ID_HEADER = "outbox-id"
KEY_HEADER = "outbox-key"
ACKNOWLEDGED = Classification(Verdict.DELIVERED, "acknowledged", health=Health.OK)


@dataclass(frozen=True, slots=True)
class Outbound:
    """One message as a broker channel publishes it."""

    message: Claimed
    target: str  # the rendered --target
    body: bytes  # the payload's JSON text, UTF-8
    # The endpoint's, the message's own, then ours: traceparent/tracestate, outbox-id, outbox-key.
    headers: dict[str, str]
    id: str = ""  # the message's id as text (filled in when not given)

    def __post_init__(self) -> None:
        if not self.id:
            object.__setattr__(self, "id", str(self.message.id))


class BrokerError(Exception):
    """What a channel's `publish` raises for an answer that is not an
    acknowledgement: its classification, and the error text for the ledger."""

    def __init__(self, classification: Classification, error: str, *, drop: bool = False) -> None:
        super().__init__(error)
        self.classification = classification
        self.error = error
        self.drop = drop  # the connection is no good any more


def retryable(reason: str, *, drop: bool = False) -> BrokerError:
    """The broker could not be reached or did not answer: retried, counted by the breaker."""
    return BrokerError(Classification(Verdict.RETRYABLE, reason, health=Health.FAILING), reason,
                   drop=drop)  # fmt: skip


def permanent(reason: str, *, drop: bool = False) -> BrokerError:
    """The broker answered that this message cannot go (no stream, no route, too big)."""
    return BrokerError(
        Classification(Verdict.PERMANENT, reason, health=Health.OK), reason, drop=drop
    )


def refused(reason: str) -> BrokerError:
    """The broker refused our credentials or rights: the message stays, the
    endpoint is paused until someone fixes them and resumes it."""
    return BrokerError(Classification(Verdict.RETRYABLE, reason, pause=reason), reason, drop=True)


@dataclass(slots=True)
class _Link:
    """An endpoint's connection, and its state between attempts."""

    identity: tuple[Any, ...]  # what it was opened with (url, secret): a change reopens it
    connection: Any = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    failures: int = 0
    retry_at: float = 0.0  # time.monotonic() before which no reconnect is tried
    last_error: BrokerError | None = None


class BrokerChannel(ABC):
    """A channel that publishes to a message broker."""

    name: ClassVar[str]  # the channel's name
    library: ClassVar[str]  # the module the client library installs
    extra: ClassVar[str]  # the extra of outbox that installs it

    def __init__(self, context: ChannelContext) -> None:
        self.context = context
        self._links: dict[str, _Link] = {}
        self._templates: dict[str, tuple[Template, bool]] = {}  # and: does it need the payload?
        self._client: Any = None
        self._importing = asyncio.Lock()
        self._closing: set[asyncio.Future[None]] = set()
        self._deadlines = Deadlines()

    @classmethod
    def open(cls, context: ChannelContext) -> BrokerChannel:
        return cls(context)

    # -- what each broker says -------------------------------------------------

    @abstractmethod
    async def connect(self, client: Any, endpoint: Endpoint) -> Any:
        """A new connection for ``endpoint`` (raise; `failure` classifies it)."""

    @abstractmethod
    async def publish(self, connection: Any, endpoint: Endpoint, out: Outbound) -> None:
        """Publish ``out`` and return once the broker acknowledged it; raise
        `BrokerError` for any other answer."""

    @abstractmethod
    def failure(self, exc: BaseException) -> BrokerError:
        """What an exception of the client library means."""

    async def disconnect(self, connection: Any) -> None:
        """Close a connection (the default: ``await connection.close()``)."""
        await connection.close()

    # -- the same for every broker --------------------------------------------

    async def send(self, delivery: Delivery, endpoint: Endpoint) -> AttemptResult:
        clock = AttemptClock()
        used: Any = None  # the connection this send published on
        try:
            out = self._outbound(delivery.head, endpoint, delivery.onward_trace())
            link = self._links.get(endpoint.name)
            if (
                link is None
                or link.connection is None
                or link.identity != (endpoint.url, endpoint.secret)
            ):
                link = await self._link(endpoint)
            used = link.connection
            await self._publish_within(used, endpoint, out)
        except BrokerError as failed:
            return self._failed(clock, endpoint, failed, used)
        except TimeoutError:
            timeout = retryable(
                f"no acknowledgement from the broker within {endpoint.timeout:g}s (--timeout)"
            )
            return self._failed(clock, endpoint, timeout, used)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the worker's own cancellation (shutdown): let it through
            # A client library cancelled the publish (its connection closing):
            # that must not kill the worker's delivering task.
            lost = retryable("the publish was cancelled (the connection closed)", drop=True)
            return self._failed(clock, endpoint, lost, used)
        except Exception as exc:
            return self._failed(clock, endpoint, self.failure(exc), used)
        return clock.result(ACKNOWLEDGED)

    async def _publish_within(self, connection: Any, endpoint: Endpoint, out: Outbound) -> None:
        """`publish`, raising TimeoutError past ``--timeout`` (asyncio.timeout's
        semantics, on the channel's one timer: `Deadlines`)."""
        task = asyncio.current_task()
        if task is None:  # not in a task (nothing to cancel): never in a worker
            async with asyncio.timeout(endpoint.timeout):
                await self.publish(connection, endpoint, out)
            return
        cancelling = task.cancelling()
        self._deadlines.start(task, asyncio.get_running_loop().time() + endpoint.timeout)
        try:
            await self.publish(connection, endpoint, out)
        except BaseException as exc:
            if self._deadlines.stop(task):  # the timer cancelled it: take that back
                expired = task.uncancel() <= cancelling
                if expired and isinstance(exc, asyncio.CancelledError):
                    raise TimeoutError from None
            raise
        if self._deadlines.stop(task):  # expired as it returned (or it swallowed the cancel)
            task.uncancel()

    def _failed(
        self, clock: AttemptClock, endpoint: Endpoint, failure: BrokerError, used: Any
    ) -> AttemptResult:
        if failure.drop and used is not None:  # only the one it used: a later one stays
            self._drop(endpoint.name, used)
        secrets = credentials(endpoint)
        c = failure.classification
        reason = redact_text(c.reason, secrets)
        if reason != c.reason:
            pause = None if c.pause is None else redact_text(c.pause, secrets)
            c = Classification(c.verdict, reason, c.retry_after, c.health, c.throttle, pause)
        return clock.result(c, error=redact_text(failure.error, secrets))

    def _outbound(
        self,
        message: Claimed,
        endpoint: Endpoint,
        trace: tuple[str | None, str | None] = (None, None),
    ) -> Outbound:
        if endpoint.secret_problem:
            raise refused(endpoint.secret_problem)
        if not endpoint.url:
            raise permanent(f"the endpoint has no URL (a {self.name} endpoint needs --url)")
        template, needs_payload = self._template(endpoint)
        payload = json.loads(message.payload) if needs_payload else None
        try:
            target = template.render(message.id, message.key, payload)
        except TemplateError as exc:
            raise permanent(str(exc)) from None
        # The endpoint's --header values, then the message's own, then ours
        # (the trace context sent onward, W3C traceparent and tracestate, among them).
        headers: dict[str, str] = dict(endpoint.headers)
        if message.headers:
            headers.update(json.loads(message.headers))
        put_trace(headers, trace)
        put_topic(headers, message)
        headers[ID_HEADER] = text_id = str(message.id)
        if message.key is not None:
            headers[KEY_HEADER] = message.key
        return Outbound(message, target, message.payload.encode(), headers, text_id)

    def _template(self, endpoint: Endpoint) -> tuple[Template, bool]:
        text = endpoint.settings.get("target")
        if not text:
            raise permanent(f"the endpoint has no --target (a {self.name} endpoint needs one)")
        known = self._templates.get(text)
        if known is None:
            try:
                template = parse(text)
            except ValueError as exc:
                raise permanent(f"target: {exc}") from None
            known = self._templates[text] = (template, template.needs_payload)
        return known

    def _import(self) -> Any:
        if self._client is None:
            try:
                self._client = importlib.import_module(self.library)
            except ImportError:
                raise refused(
                    f"the {self.name} channel needs the {self.library!r} package: "
                    f"pip install 'outbox[{self.extra}]' where the workers run"
                ) from None
        return self._client

    async def _library(self) -> Any:
        """The client library, imported off the event loop the first time (an
        import takes a few hundred milliseconds, which would stall every delivery)."""
        if self._client is None:
            async with self._importing:
                if self._client is None:
                    await asyncio.to_thread(self._import)
        return self._client

    async def warm(self, endpoint: Endpoint) -> None:
        """Import the library and open ``endpoint``'s connection ahead of its
        first send (a worker calls this before its first claim); a failure
        here is only reported by the sends that meet it."""
        with contextlib.suppress(Exception):
            if endpoint.url and endpoint.settings.get("target") and not endpoint.secret_problem:
                await self._link(endpoint)

    async def _link(self, endpoint: Endpoint) -> _Link:
        identity = (endpoint.url, endpoint.secret)
        link = self._links.get(endpoint.name)
        if link is None or link.identity != identity:
            if link is not None:
                self._drop(endpoint.name)
            link = self._links[endpoint.name] = _Link(identity)
        if link.connection is not None:
            return link
        async with link.lock:  # one connect at a time; the others wait for it
            if link.connection is None:
                await self._connect(link, endpoint)
        return link

    async def _connect(self, link: _Link, endpoint: Endpoint) -> None:
        wait = link.retry_at - time.monotonic()
        if wait > 0 and link.last_error is not None:
            last = link.last_error
            raise BrokerError(last.classification, f"{last.error} (next connect in {wait:.1f}s)")
        client = await self._library()
        try:
            async with asyncio.timeout(endpoint.connect_timeout):
                link.connection = await self.connect(client, endpoint)
        except Exception as exc:
            failure = (
                retryable(
                    f"cannot connect within {endpoint.connect_timeout:g}s (--connect-timeout)"
                )
                if isinstance(exc, TimeoutError)
                else self.failure(exc)
            )
            link.failures += 1
            link.retry_at = time.monotonic() + min(
                BACKOFF_CAP, BACKOFF_FIRST * 2 ** (link.failures - 1)
            )
            link.last_error = failure
            raise failure from None
        link.failures, link.last_error = 0, None

    def _drop(self, name: str, only: Any = None) -> None:
        """Close ``name``'s connection (``only``: if it is still that one)."""
        link = self._links.get(name)
        if link is None or link.connection is None:
            return
        if only is not None and link.connection is not only:
            return
        connection, link.connection = link.connection, None
        task = asyncio.ensure_future(self._quietly_close(connection))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _quietly_close(self, connection: Any) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_WITHIN):
                await self.disconnect(connection)

    async def aclose(self) -> None:
        """Close every connection (each within a few seconds)."""
        self._deadlines.close()
        for name in list(self._links):
            self._drop(name)
        self._links.clear()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


def credentials(endpoint: Endpoint) -> tuple[str, ...]:
    """Everything to mask in what an attempt records: the secrets and the URL's password."""
    found = list(endpoint.secrets)
    if endpoint.url:
        with contextlib.suppress(ValueError):
            parts = urlsplit(endpoint.url.split(",")[0])
            password = parts.password
            if password:
                found += [password, unquote(password)]
            elif parts.username:  # a lone user name, which NATS takes as a token
                found += [parts.username, unquote(parts.username)]
    return tuple(found)
