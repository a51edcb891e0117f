"""The ``redis`` channel: ``XADD`` to a Redis stream; the reply is the ack.

``--url redis://[user:password@]host:6379/0`` (``rediss://`` for TLS; the
password may instead be ``--secret``). ``--target`` is the stream's key, a
template (``orders:{key}``); ``--max-len N`` adds ``MAXLEN ~ N``. Each entry
has the fields ``id`` (the message id: consumers deduplicate by it),
``payload`` (the JSON), ``key`` (if the message has one) and ``headers``
(the message's headers as JSON, if any).

The channel keeps one connection per endpoint and pipelines the XADDs in
flight on it: what arrives while one batch is on the wire goes in the next.

What the answers mean:

* an entry id -- delivered;
* ``NOPERM`` for the key (the user may not write that key), ``WRONGTYPE``
  (the key is not a stream), a payload over the server's
  ``proto-max-bulk-len`` (never sent: the server would drop the connection,
  and every XADD pipelined on it), any other error reply -- permanent; but
  what says the server cannot take writes now (``OOM``, ``LOADING``,
  ``BUSY``, ``MASTERDOWN``, ``TRYAGAIN``, ``READONLY``, ``CLUSTERDOWN``,
  ``NOREPLICAS``, ``MISCONF``) is retried;
* wrong credentials, or a user who may not XADD at all -- the endpoint is
  paused;
* the server unreachable, the connection lost, no reply within
  ``--timeout`` -- retried, counted by the circuit breaker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from outbox.deliver.channels.broker import (
    ID_HEADER,
    KEY_HEADER,
    BrokerChannel,
    BrokerError,
    Outbound,
    permanent,
    refused,
    retryable,
)
from outbox.deliver.model import Endpoint

BATCH = 512  # XADDs per pipeline at most
# Error replies that say the server cannot take writes now (not: never this one).
_TRANSIENT = ("OOM", "LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "READONLY", "CLUSTERDOWN",
              "NOREPLICAS", "MISCONF")  # fmt: skip
# The smallest proto-max-bulk-len a server can have (what it takes at most in
# one field), and its default: fields up to the first always fit; past it the
# channel asks the server (CONFIG GET), assuming the default if not allowed to.
BULK_LIMIT_MIN = 1024 * 1024
BULK_LIMIT_DEFAULT = 512 * 1024 * 1024


class _Pipeline:
    """One connection; commands queued while a batch is out go in the next one."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.queue: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self.flushing: asyncio.Task[None] | None = None
        self._bulk_limit: int | None = None

    def submit(self, *args: Any) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.queue.append((args, future))
        if self.flushing is None or self.flushing.done():
            self.flushing = asyncio.ensure_future(self._flush())
        return future

    async def _flush(self) -> None:
        while self.queue:
            batch, self.queue = self.queue[:BATCH], self.queue[BATCH:]
            pipe = self.client.pipeline(transaction=False)
            for args, _ in batch:
                pipe.execute_command(*args)
            try:
                replies = await pipe.execute(raise_on_error=False)
            except BaseException as exc:  # the connection failed: every command in it did
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc if isinstance(exc, Exception) else
                                             ConnectionError("cancelled"))  # fmt: skip
                if not isinstance(exc, Exception):
                    raise
                continue
            for (_, future), reply in zip(batch, replies, strict=True):
                if future.done():
                    continue
                if isinstance(reply, Exception):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)

    async def bulk_limit(self) -> int:
        """The server's ``proto-max-bulk-len`` (asked once per connection)."""
        if self._bulk_limit is None:
            from redis.exceptions import ResponseError

            try:
                reply = await self.submit("CONFIG", "GET", "proto-max-bulk-len")
            except ResponseError:  # NOPERM, or CONFIG renamed away (a managed Redis)
                self._bulk_limit = BULK_LIMIT_DEFAULT
            else:
                self._bulk_limit = _config_value(reply) or BULK_LIMIT_DEFAULT
        return self._bulk_limit

    async def close(self) -> None:
        if self.flushing is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(self.flushing), 2)
        await self.client.aclose()


class RedisChannel(BrokerChannel):
    name = "redis"
    library = "redis.asyncio"
    extra = "redis"

    async def connect(self, client: Any, endpoint: Endpoint) -> _Pipeline:
        options: dict[str, Any] = {}
        if endpoint.secret:
            options["password"] = endpoint.secret
        # One connection: the pool's only one, which the PING and then every
        # pipeline take in turn (a single-connection client would keep the
        # PING's to itself and its pipelines would open a second).
        redis = client.Redis.from_url(
            endpoint.url,
            socket_connect_timeout=endpoint.connect_timeout,
            socket_timeout=endpoint.timeout,
            max_connections=1,
            decode_responses=False,
            retry_on_timeout=False,
            **options,
        )
        try:
            await redis.ping()
        except BaseException:
            await redis.aclose()
            raise
        return _Pipeline(redis)

    async def publish(self, connection: Any, endpoint: Endpoint, out: Outbound) -> None:
        pipeline: _Pipeline = connection
        args: list[Any] = ["XADD", out.target]
        max_len = endpoint.settings.get("max_len")
        if max_len:
            args += ["MAXLEN", "~", max_len]
        args += ["*", "id", out.id, "payload", out.body]
        if out.message.key is not None:
            args += ["key", out.message.key]
        own = {k: v for k, v in out.headers.items() if k not in (ID_HEADER, KEY_HEADER)}
        if own:
            args += ["headers", json.dumps(own)]
        if len(out.body) > BULK_LIMIT_MIN:  # the other fields are small
            limit = await pipeline.bulk_limit()
            if len(out.body) > limit:
                raise permanent(
                    f"the payload is {len(out.body)} bytes, over the Redis server's "
                    f"proto-max-bulk-len ({limit} bytes): it would not take the XADD"
                )
        await pipeline.submit(*args)

    def failure(self, exc: BaseException) -> BrokerError:
        import redis.exceptions as re_

        if isinstance(exc, BrokerError):
            return exc
        if isinstance(exc, re_.AuthenticationError | re_.AuthenticationWrongNumberOfArgsError):
            return refused(f"Redis refused the credentials: {exc}")
        if isinstance(exc, re_.NoPermissionError):
            if "command" in str(exc):  # not this key: the user may not XADD at all
                return refused(f"permission denied: {exc}")
            return permanent(f"permission denied: {exc}")
        # redis-py takes the code off the errors it has a class for ("OOM ...",
        # "LOADING ..."): put it back, so they are recognised (and recorded) as such.
        text = str(exc)
        for kind, code in (
            (re_.OutOfMemoryError, "OOM"),
            (re_.BusyLoadingError, "LOADING"),
            (re_.ReadOnlyError, "READONLY"),
            (re_.TryAgainError, "TRYAGAIN"),
            (re_.MasterDownError, "MASTERDOWN"),
            (re_.ClusterDownError, "CLUSTERDOWN"),
        ):
            if isinstance(exc, kind):
                if not text.startswith(code):
                    text = f"{code} {text}"
                return retryable(f"Redis cannot take it now: {text}")
        if isinstance(exc, re_.ConnectionError | re_.TimeoutError | OSError):
            return retryable(f"cannot reach Redis: {type(exc).__name__}: {exc}", drop=True)
        if isinstance(exc, re_.ResponseError):
            if text.split(" ", 1)[0].upper() in _TRANSIENT:
                return retryable(f"Redis cannot take it now: {text}")
            return permanent(f"Redis refused the XADD: {text}")
        return retryable(f"{type(exc).__name__}: {exc}", drop=True)


def _config_value(reply: Any) -> int | None:
    """The number in a ``CONFIG GET`` reply (a dict, or a flat name-value list)."""
    if isinstance(reply, dict):
        values = list(reply.values())
    elif isinstance(reply, list | tuple):
        values = list(reply[1::2])
    else:
        return None
    try:
        return int(values[0])
    except (IndexError, TypeError, ValueError):
        return None
