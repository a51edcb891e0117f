"""The MQTT side of the mqtt channel's tests.

`MosquittoServer`: a private Mosquitto for one test, with its own port,
users, ACL, store and limits, which the shared broker on 1883 (anonymous, no
limits) cannot be given; stopped, and started again on the same port and
store, at will. `Subscriber`: a real MQTT 5 client subscribed at QoS 1 that
keeps every message it receives, reconnecting (to its persistent session,
if asked) when the broker goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

BINARY = "/usr/sbin/mosquitto"
PASSWD = "/usr/bin/mosquitto_passwd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class MosquittoServer:
    """``mosquitto`` on a port of its own, its config, password file, ACL,
    store and log in ``directory``.

    ``users``: name -> password (without any, anonymous clients are let in);
    ``acl``: the ACL file's lines (``user NAME`` / ``topic write a/#`` ...);
    ``max_packet_size``: the largest packet the broker takes (it says so in
    its CONNACK); ``message_size_limit``: the largest payload it takes.
    """

    def __init__(
        self,
        directory: Path,
        *,
        users: dict[str, str] | None = None,
        acl: list[str] | None = None,
        max_packet_size: int | None = None,
        message_size_limit: int | None = None,
    ) -> None:
        if shutil.which(BINARY) is None or shutil.which(PASSWD) is None:
            message = f"{BINARY} is not installed (a private Mosquitto is needed)"
            if os.environ.get("OUTBOX_REQUIRE_BROKERS"):  # as conftest.require_broker
                pytest.fail(message)
            pytest.skip(message)
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.store = directory / "store"
        self.store.mkdir(exist_ok=True)
        self.config = directory / "mosquitto.conf"
        self.log = directory / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None
        lines = [
            f"listener {self.port} 127.0.0.1",
            "persistence true",
            f"persistence_location {self.store}/",
            f"log_dest file {self.log}",
            "log_type all",
            "connection_messages true",
        ]
        if os.geteuid() == 0:  # else it drops to the mosquitto user, who cannot read tmp_path
            lines.append("user root")
        if users:
            passwd = directory / "passwd"
            for n, (name, password) in enumerate(users.items()):
                create = ["-c"] if n == 0 else []
                subprocess.run([PASSWD, "-b", *create, str(passwd), name, password],
                               check=True, capture_output=True)  # fmt: skip
            passwd.chmod(0o600)
            lines += ["allow_anonymous false", f"password_file {passwd}"]
        else:
            lines.append("allow_anonymous true")
        if acl is not None:
            acl_file = directory / "acl"
            acl_file.write_text("\n".join(acl) + "\n")
            acl_file.chmod(0o600)
            lines.append(f"acl_file {acl_file}")
        if max_packet_size is not None:
            lines.append(f"max_packet_size {max_packet_size}")
        if message_size_limit is not None:
            lines.append(f"message_size_limit {message_size_limit}")
        self.config.write_text("\n".join(lines) + "\n")

    def url(self, user: str | None = None, password: str | None = None) -> str:
        auth = f"{user}:{password}@" if password is not None else f"{user}@" if user else ""
        return f"mqtt://{auth}127.0.0.1:{self.port}"

    def start(self, within: float = 10.0) -> None:
        assert self.proc is None or self.proc.poll() is not None
        self.proc = subprocess.Popen(
            [BINARY, "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + within
        while not answers(self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log_text()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto not listening in {within}s: {self.log_text()}")
            time.sleep(0.02)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop it (SIGTERM: it saves its store first)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def __enter__(self) -> MosquittoServer:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop(signal.SIGKILL)


@dataclass(frozen=True)
class Received:
    """One message as the subscriber got it."""

    arrived: float  # time.monotonic()
    topic: str
    payload: bytes
    qos: int
    retain: bool  # as published (the subscription asks for it)
    user_properties: list[tuple[str, str]]
    content_type: str | None

    @property
    def outbox_id(self) -> str | None:
        return dict(self.user_properties).get("outbox-id")


class Subscriber:
    """An MQTT 5 client subscribed to ``topic`` (a filter) at QoS 1, with
    retain-as-published, keeping what it receives in ``received``.

    ``persistent``: a session the broker keeps (client id fixed, clean start
    off, a session expiry), so what is published while it is away, the broker
    restarting included, reaches it when it reconnects. It reconnects after
    any loss of the connection until stopped.
    """

    def __init__(
        self, url: str, topic: str, *, persistent: bool = False, user: str | None = None,
        password: str | None = None,
    ) -> None:  # fmt: skip
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 1883
        self.user = user
        self.password = password
        self.topic = topic
        self.persistent = persistent
        self.identifier = f"test-subscriber-{uuid.uuid4().hex[:12]}"
        self.received: list[Received] = []
        self.connections = 0  # connections made (1 + reconnects)
        self._subscribed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def _client(self) -> aiomqtt.Client:
        properties = None
        if self.persistent:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = 600
        return aiomqtt.Client(
            self.host, self.port, username=self.user, password=self.password,
            identifier=self.identifier, protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=not self.persistent, properties=properties, timeout=5,
        )  # fmt: skip

    async def _run(self) -> None:
        while True:
            try:
                async with self._client() as client:
                    self.connections += 1
                    await client.subscribe(
                        self.topic, options=SubscribeOptions(qos=1, retainAsPublished=True)
                    )
                    self._subscribed.set()
                    async for message in client.messages:
                        self.received.append(_received(message))
            except aiomqtt.MqttError:
                await asyncio.sleep(0.05)

    async def __aenter__(self) -> Subscriber:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._subscribed.wait(), 10)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def ids(self) -> list[str]:
        return [r.outbox_id for r in self.received if r.outbox_id is not None]


def _received(message: aiomqtt.Message) -> Received:
    props: Any = message.properties
    user = [tuple(p) for p in getattr(props, "UserProperty", None) or []]
    payload = message.payload if isinstance(message.payload, bytes) else b""
    return Received(
        time.monotonic(), message.topic.value, payload, message.qos, message.retain,
        user, getattr(props, "ContentType", None),
    )  # fmt: skip


async def publish(url: str, topic: str, payload: bytes, *, retain: bool = False) -> None:
    """One message from the test itself (a marker, or clearing a retained one)."""
    parts = urlsplit(url)
    async with aiomqtt.Client(
        parts.hostname or "127.0.0.1", parts.port or 1883, protocol=aiomqtt.ProtocolVersion.V5
    ) as client:
        await client.publish(topic, payload, qos=1, retain=retain)
