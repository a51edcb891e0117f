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
* ``NOPERM`` (the user may not write that key), ``WRONGTYPE`` (the key is
  not a stream), any other error reply -- permanent; but ``OOM``, ``LOADING``,
  ``BUSY``, ``MASTERDOWN``, ``TRYAGAIN`` and ``READONLY`` are retried;
* wrong credentials -- the endpoint is paused;
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
from outbox.deliver.channels.spec import ChannelSpec
from outbox.deliver.channels.urls import broker_url_check, broker_url_pattern
from outbox.deliver.model import Endpoint

SCHEMES = ("redis", "rediss")
BATCH = 512  # XADDs per pipeline at most
_TRANSIENT = ("OOM", "LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "READONLY", "CLUSTERDOWN")


class _Pipeline:
    """One connection; commands queued while a batch is out go in the next one."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.queue: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self.flushing: asyncio.Task[None] | None = None

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
        redis = client.Redis.from_url(
            endpoint.url,
            socket_connect_timeout=endpoint.connect_timeout,
            socket_timeout=endpoint.timeout,
            single_connection_client=True,
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
        await pipeline.submit(*args)

    def failure(self, exc: BaseException) -> BrokerError:
        import redis.exceptions as re_

        if isinstance(exc, BrokerError):
            return exc
        if isinstance(exc, re_.AuthenticationError | re_.AuthenticationWrongNumberOfArgsError):
            return refused(f"Redis refused the credentials: {exc}")
        if isinstance(exc, re_.NoPermissionError):
            return permanent(f"permission denied: {exc}")
        if isinstance(exc, re_.ConnectionError | re_.TimeoutError | OSError):
            return retryable(f"cannot reach Redis: {type(exc).__name__}: {exc}", drop=True)
        if isinstance(exc, re_.ResponseError):
            text = str(exc)
            if text.split(" ", 1)[0].upper() in _TRANSIENT:
                return retryable(f"Redis cannot take it now: {text}")
            return permanent(f"Redis refused the XADD: {text}")
        return retryable(f"{type(exc).__name__}: {exc}", drop=True)


SPEC = ChannelSpec(
    name="redis",
    summary="XADD to a Redis stream (fields id, payload, key, headers); the reply is the ack",
    open=RedisChannel.open,
    url="required",
    url_pattern=broker_url_pattern(*SCHEMES),
    check_url=broker_url_check(*SCHEMES),
    secret_help="the password of the URL's user (or of the default user)",
    settings=frozenset({"target", "max_len"}),
    needs=frozenset({"target"}),
)
