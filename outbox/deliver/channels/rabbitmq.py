"""The ``amqp`` channel: publish to RabbitMQ (AMQP 0-9-1) with publisher confirms.

``--url amqp://user:password@host:5672/vhost`` (``amqps://`` for TLS; the
password may instead be ``--secret``). ``--exchange`` is the exchange (none:
the default exchange, which routes to the queue named by the routing key);
``--target`` is the routing key, a template (``orders.{key}``). Each message
is published persistent (delivery mode 2), ``mandatory``, with ``message_id``
= the message id, ``content_type`` application/json, and the message's
headers, ``outbox-id`` and ``outbox-key`` as AMQP headers; the channel is in
confirm mode, so a message counts as delivered only once the broker acks it.

What the answers mean:

* ``basic.ack`` -- delivered;
* ``basic.return`` (mandatory: no queue is bound for the routing key) --
  permanent, "unroutable";
* ``basic.nack`` -- retried (the connection stays: a nack, a full queue's
  ``x-overflow: reject-publish`` for one, says nothing against it);
* the exchange does not exist (404), no write permission on it (403), a
  message over ``max_message_size`` (406) -- permanent. Each of these closes
  the AMQP channel, and aiormq fails every publish in flight on it with the
  same error: a message that is not itself over the size limit is retried;
* wrong credentials, or no access to the vhost (it does not exist, the user
  has no permissions there) -- the endpoint is paused;
* the broker unreachable, the connection lost, no confirm within
  ``--timeout`` -- retried, counted by the circuit breaker. Only the first
  failure on a connection drops it: the publishes in flight on a connection
  being closed fail too, and must not drop the one opened since.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from outbox.deliver.channels.broker import (
    BrokerChannel,
    BrokerError,
    Outbound,
    permanent,
    refused,
    retryable,
)
from outbox.deliver.model import Endpoint

MAX_ROUTING_KEY = 255  # bytes (a shortstr)
# RabbitMQ's text when a message is over max_message_size (its channel closes, 406).
_TOO_BIG = re.compile(r"larger than configured max size (\d+)")


class _Connection:
    def __init__(self, connection: Any, channel: Any) -> None:
        self.connection = connection
        self.channel = channel
        # Dropped already (or about to be): a failure on it asks for no new drop,
        # which would close the connection that replaced it.
        self.dropped = False


def with_password(url: str, password: str | None) -> str:
    """``url`` with ``password`` for its user (guest if it names none)."""
    if not password:
        return url
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    user = quote(parts.username or "guest", safe="")
    return parts._replace(netloc=f"{user}:{quote(password, safe='')}@{host}").geturl()


class RabbitChannel(BrokerChannel):
    name = "amqp"
    library = "aiormq"
    extra = "amqp"

    async def connect(self, client: Any, endpoint: Endpoint) -> _Connection:
        url = with_password(endpoint.url or "", endpoint.secret)
        try:
            connection = await client.connect(url)
        except client.exceptions.InvalidFrameError as exc:
            # RabbitMQ answers connection.open (the vhost) with connection.close
            # (530 NOT_ALLOWED); aiormq reports the unexpected frame, not its code.
            if "Connection.Close" not in str(exc):
                raise
            raise refused(
                f"the broker refused access to the vhost {_vhost(url)!r}: it does not exist, "
                "or the user has no permissions there (or is over a connection limit)"
            ) from None
        try:
            channel = await connection.channel(publisher_confirms=True)
        except BaseException:
            await connection.close()
            raise
        return _Connection(connection, channel)

    async def disconnect(self, connection: Any) -> None:
        connection.dropped = True
        await connection.connection.close()

    async def publish(self, connection: Any, endpoint: Endpoint, out: Outbound) -> None:
        conn: _Connection = connection
        try:
            await self._publish(conn, endpoint, out)
            return
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # --timeout, or the worker stopping
            # aiormq cancels the confirms it waits for when their connection closes.
            failed = retryable(
                "the AMQP connection closed before the broker confirmed the message", drop=True
            )
        except BrokerError as exc:
            failed = exc
        except Exception as exc:
            failed = self._failure(exc, out)
        if failed.drop:
            if conn.dropped:
                failed.drop = False
            else:
                conn.dropped = True
        raise failed

    async def _publish(self, conn: _Connection, endpoint: Endpoint, out: Outbound) -> None:
        import aiormq
        from pamqp import commands

        if len(out.target.encode()) > MAX_ROUTING_KEY:
            raise permanent(
                f"the routing key is {len(out.target.encode())} bytes, over AMQP's limit of "
                f"{MAX_ROUTING_KEY}"
            )
        if conn.channel.is_closed:
            raise retryable("the AMQP channel was closed", drop=True)
        exchange = endpoint.settings.get("exchange") or ""
        properties = aiormq.spec.Basic.Properties(
            delivery_mode=2,
            message_id=out.id,
            content_type="application/json",
            headers=dict(out.headers),
        )
        try:
            confirm = await conn.channel.basic_publish(
                out.body,
                exchange=exchange,
                routing_key=out.target,
                properties=properties,
                mandatory=True,
            )
        except aiormq.exceptions.PublishError as exc:
            frame: Any = exc.frame
            raise permanent(
                f"unroutable: exchange {exchange or '(default)'!r} has no queue bound for "
                f"routing key {out.target!r} ({frame.reply_code} {frame.reply_text})"
            ) from None
        except aiormq.exceptions.DeliveryError as exc:  # aiormq raises it for a basic.nack
            if isinstance(exc.frame, commands.Basic.Nack):
                raise retryable("the broker nacked the message (basic.nack)") from None
            raise
        if isinstance(confirm, commands.Basic.Nack):
            raise retryable("the broker nacked the message (basic.nack)")
        if not isinstance(confirm, commands.Basic.Ack):
            raise retryable(f"no confirm from the broker ({type(confirm).__name__})", drop=True)

    def _failure(self, exc: BaseException, out: Outbound) -> BrokerError:
        """What an error of a publish means for this message."""
        import aiormq.exceptions as ae

        if isinstance(exc, ae.ChannelPreconditionFailed):
            too_big = _TOO_BIG.search(_reply(exc))
            if too_big and len(out.body) <= int(too_big.group(1)):
                # Another message on the channel was over the limit: not this one.
                return retryable(
                    f"the AMQP channel closed over another message: {_reply(exc)}", drop=True
                )
        return self.failure(exc)

    def failure(self, exc: BaseException) -> BrokerError:
        import aiormq.exceptions as ae

        if isinstance(exc, BrokerError):
            return exc
        if isinstance(exc, ae.ChannelNotFoundEntity):
            return permanent(f"not found: {_reply(exc)}", drop=True)
        if isinstance(exc, ae.ChannelAccessRefused):
            return permanent(f"permission denied: {_reply(exc)}", drop=True)
        if isinstance(exc, ae.ChannelPreconditionFailed):
            return permanent(f"refused by the broker: {_reply(exc)}", drop=True)
        if isinstance(exc, ae.AuthenticationError | ae.ProbableAuthenticationError):
            return refused(f"the broker refused the credentials: {type(exc).__name__}")
        if isinstance(exc, ae.ConnectionNotAllowed):
            return refused(f"the broker refused access to the vhost: {_reply(exc)}")
        if isinstance(exc, ae.ChannelInvalidStateError):
            return retryable("the AMQP channel was closed (by an error on it)", drop=True)
        if isinstance(exc, ae.ChannelClosed):
            return retryable(f"the AMQP channel closed: {_reply(exc)}", drop=True)
        if type(exc) is Exception and not exc.args:
            # What aiormq sets on the futures in flight of a connection it closes.
            return retryable("the AMQP connection closed with the message in flight", drop=True)
        if isinstance(exc, ae.AMQPConnectionError | ConnectionError | OSError):
            return retryable(f"cannot reach the AMQP broker: {type(exc).__name__}", drop=True)
        if isinstance(exc, ValueError):  # aiormq's own checks of what it is asked to send
            return permanent(f"{type(exc).__name__}: {exc}")
        return retryable(f"{type(exc).__name__}: {exc}", drop=True)


def _vhost(url: str) -> str:
    """The vhost a URL names, as aiormq reads it (none: ``/``)."""
    try:
        path = urlsplit(url).path
    except ValueError:
        return "/"
    return unquote(path[1:]) if len(path) > 1 else "/"


def _reply(exc: BaseException) -> str:
    """A channel or connection close's code and text, which never hold the URL."""
    args = getattr(exc, "args", ())
    return " ".join(str(a) for a in args if isinstance(a, int | str)) or type(exc).__name__
