"""The ``mqtt`` channel: publish at QoS 1 to an MQTT broker and wait for its PUBACK.

``--url mqtt://[user:password@]host:1883`` (``mqtts://`` for TLS, port 8883
by default; the password may instead be ``--secret``). ``--target`` is the
topic, a template (``orders/{key}``); ``--retain`` publishes retained (off
by default). The connection speaks MQTT 5: the payload goes with content
type application/json, and the message's headers, ``outbox-id`` and
``outbox-key`` as user properties.

What the answers mean:

* a PUBACK with a success reason code ("no matching subscribers" included:
  the broker took it) -- delivered;
* a PUBACK refusing it: not authorized, topic name invalid, packet too
  large, payload format invalid -- permanent; quota exceeded -- retried.
  Mosquitto answers "packet too large" (0x95) to a payload over its
  ``message_size_limit``, a code MQTT 5 does not allow in a PUBACK, which
  paho would take for a malformed packet and drop the connection over: it
  is read as the refusal it is;
* a message over the Maximum Packet Size the broker gave in its CONNACK
  (Mosquitto's ``max_packet_size``) -- permanent, and not sent: a broker
  drops the connection of a client that sends one;
* a topic with a wildcard (+ or #), or empty -- permanent;
* wrong credentials, or a client not authorized to connect -- the endpoint
  is paused;
* the broker unreachable, the connection lost, no PUBACK within
  ``--timeout`` -- retried, counted by the circuit breaker.
"""

from __future__ import annotations

import asyncio
import functools
import os
import secrets as random
import struct
from typing import Any
from urllib.parse import unquote, urlsplit

from outbox.deliver.channels.broker import (
    BrokerChannel,
    BrokerError,
    Outbound,
    permanent,
    refused,
    retryable,
)
from outbox.deliver.model import Endpoint

INFLIGHT = 1000  # QoS 1 messages awaiting their PUBACK at most, per connection
_RETRIED = {0x97: "quota exceeded", 0x89: "server busy"}
# Names of the refusals a broker may send although MQTT 5 does not list them for a PUBACK.
_UNLISTED = {0x89: "Server busy", 0x95: "Packet too large", 0x96: "Message rate too high"}
_AUTH = (0x04, 0x05, 0x86, 0x87, 0x8C)  # CONNACK: bad user name or password, not authorized


def topic_problem(topic: str) -> str | None:
    if not topic or "+" in topic or "#" in topic or "\x00" in topic:
        return (
            f"the topic {topic!r} is not one a message can be published to (not empty, "
            "no wildcards + or #)"
        )
    if len(topic.encode()) > 65535:
        return "the topic is over MQTT's limit of 65,535 bytes"
    return None


@functools.cache
def _client_class(aiomqtt: Any) -> Any:
    """aiomqtt's client, keeping each PUBACK's reason code (aiomqtt itself drops it)."""

    class Client(aiomqtt.Client):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.acks: dict[int, asyncio.Future[Any]] = {}
            self.max_packet_size: int | None = None  # the broker's, from its CONNACK
            _read_any_puback_code(self._client)

        def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any,
                        properties: Any = None) -> None:  # fmt: skip
            size = getattr(properties, "MaximumPacketSize", None)
            self.max_packet_size = size if isinstance(size, int) and size > 0 else None
            super()._on_connect(client, userdata, flags, reason_code, properties)

        def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any,
                        properties: Any) -> None:  # fmt: skip
            future = self.acks.pop(mid, None)
            if future is not None and not future.done():
                future.set_result(reason_code)
            super()._on_publish(client, userdata, mid, reason_code, properties)

        def _on_disconnect(self, *args: Any, **kwargs: Any) -> None:
            for future in self.acks.values():
                if not future.done():
                    future.set_exception(ConnectionError("the MQTT connection was lost"))
            self.acks.clear()
            super()._on_disconnect(*args, **kwargs)

    return Client


def _read_any_puback_code(client: Any) -> None:
    """Have paho read a PUBACK whatever its reason code: it refuses, as a
    malformed packet, one that MQTT 5 does not list for a PUBACK (Mosquitto
    answers 0x95 "packet too large" to a payload over ``message_size_limit``),
    and drops the connection, so the refusal would look like a lost connection
    and the message be retried. Such a PUBACK goes to ``on_publish`` with its
    code as an int."""
    from paho.mqtt.exception import MalformedPacket
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    strict = getattr(client, "_handle_pubackcomp", None)
    if strict is None or not hasattr(client, "_in_packet"):  # another paho: left as it is
        return

    def handle(cmd: str) -> Any:
        try:
            return strict(cmd)
        except MalformedPacket:
            packet = client._in_packet.get("packet", b"")
            if cmd != "PUBACK" or len(packet) < 3 or packet[2] < 0x80:
                raise
            (mid,) = struct.unpack("!H", packet[:2])
            with client._out_message_mutex:
                if mid in client._out_messages:
                    return client._do_on_publish(
                        mid,
                        int(packet[2]),
                        Properties(PacketTypes.PUBACK),  # type: ignore[no-untyped-call]
                    )
            return 0

    client._handle_pubackcomp = handle


def packet_size(topic: str, body: bytes, properties: Any) -> int:
    """The size of the QoS 1 PUBLISH packet paho sends (MQTT 5)."""
    remaining = 2 + len(topic.encode()) + 2 + len(properties.pack()) + len(body)
    length = 1
    while remaining >= 128**length:
        length += 1
    return 1 + length + remaining


class MqttChannel(BrokerChannel):
    name = "mqtt"
    library = "aiomqtt"
    extra = "mqtt"

    async def connect(self, client: Any, endpoint: Endpoint) -> Any:
        parts = urlsplit(endpoint.url or "")
        tls = parts.scheme == "mqtts"
        password = endpoint.secret or (unquote(parts.password) if parts.password else None)
        mqtt = _client_class(client)(
            parts.hostname or "",
            parts.port or (8883 if tls else 1883),
            username=unquote(parts.username) if parts.username else None,
            password=password,
            identifier=f"outbox-{os.getpid()}-{random.token_hex(4)}",
            protocol=client.ProtocolVersion.V5,
            timeout=endpoint.connect_timeout,
            max_inflight_messages=INFLIGHT,
            tls_params=client.TLSParameters() if tls else None,
        )
        await mqtt.__aenter__()
        return mqtt

    async def disconnect(self, connection: Any) -> None:
        gone = connection._disconnected
        if gone.done() and not gone.cancelled():
            gone.exception()  # seen: else asyncio logs it as "never retrieved"
        await connection.__aexit__(None, None, None)

    async def publish(self, connection: Any, endpoint: Endpoint, out: Outbound) -> None:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        problem = topic_problem(out.target)
        if problem:
            raise permanent(problem)
        if connection._disconnected.done():
            raise retryable("the MQTT connection was lost", drop=True)
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.ContentType = "application/json"
        properties.UserProperty = list(out.headers.items())
        limit = connection.max_packet_size
        if limit is not None:
            size = packet_size(out.target, out.body, properties)
            if size > limit:
                raise permanent(
                    f"the message is over the broker's maximum packet size: a {size}-byte "
                    f"packet, the broker takes at most {limit} bytes"
                )
        info = connection._client.publish(
            out.target, out.body, qos=1, retain=bool(endpoint.settings.get("retain")),
            properties=properties,
        )  # fmt: skip
        if info.rc != 0:
            raise _code_failure(info.rc)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        connection.acks[info.mid] = future
        try:
            code = await future
        finally:
            connection.acks.pop(info.mid, None)
        value = int(getattr(code, "value", code) or 0)
        if value >= 0x80:
            name = _UNLISTED.get(value, "refused") if isinstance(code, int) else str(code)
            text = f"the broker refused the message: {name} (reason code 0x{value:02X})"
            if value in _RETRIED:
                raise retryable(text)
            raise permanent(text)

    def failure(self, exc: BaseException) -> BrokerError:
        import aiomqtt
        from aiomqtt.exceptions import MqttConnectError

        if isinstance(exc, BrokerError):
            return exc
        if isinstance(exc, MqttConnectError):
            rc: Any = exc.rc
            value = int(getattr(rc, "value", rc) or 0)
            if value in _AUTH:
                return refused(f"the MQTT broker refused the connection: {exc}")
            return retryable(f"the MQTT broker refused the connection: {exc}", drop=True)
        if isinstance(exc, aiomqtt.MqttCodeError):
            return _code_failure(exc.rc)
        if isinstance(exc, aiomqtt.MqttError | ConnectionError | OSError):
            return retryable(f"cannot reach the MQTT broker: {type(exc).__name__}: {exc}",
                             drop=True)  # fmt: skip
        return retryable(f"{type(exc).__name__}: {exc}", drop=True)


def _code_failure(rc: Any) -> BrokerError:
    """paho's refusal to send (an MQTT_ERR_* code)."""
    import paho.mqtt.client as paho

    value = int(getattr(rc, "value", rc) or 0)
    text = paho.error_string(value) if isinstance(rc, int) else str(rc)
    if value == paho.MQTT_ERR_PAYLOAD_SIZE:
        return permanent(f"the message is over the broker's maximum packet size ({text})")
    if value in (paho.MQTT_ERR_NO_CONN, paho.MQTT_ERR_CONN_LOST):
        return retryable(f"the MQTT connection was lost ({text})", drop=True)
    return retryable(f"the MQTT client could not publish: {text}", drop=True)
