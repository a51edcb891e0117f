"""A worker opens a channel when the first delivery asks for it (and loads its
code only then), and closes only the channels it opened."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from typing import Any

from outbox.deliver.channels import null
from outbox.deliver.channels.opened import OpenedChannels
from outbox.deliver.channels.spec import ChannelContext


def _printed(probe: str) -> list[str]:
    """What ``probe`` prints, run in a fresh interpreter (nothing imported yet)."""
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout.split()


def test_a_channel_opens_once_on_first_use_and_only_opened_ones_are_listed() -> None:
    opened: list[Any] = []

    def open_null(context: ChannelContext) -> Any:
        channel = null.SPEC.open(context)
        opened.append(channel)
        return channel

    def cannot_open(context: ChannelContext) -> Any:
        raise ImportError("no such client library")

    specs = {
        "null": replace(null.SPEC, open=open_null),
        "other": replace(null.SPEC, name="other", open=cannot_open),
    }
    channels = OpenedChannels(specs, ChannelContext(10))
    assert list(channels) == ["null", "other"]
    assert channels.opened() == []
    first = channels.get("null")
    assert first is not None
    assert channels.get("null") is first
    assert opened == [first]
    assert channels.opened() == [first]
    assert channels.get("missing") is None  # unknown: the worker retries, saying so
    assert channels.get("other") is None  # cannot open: the same, with a log line
    assert channels.opened() == [first]


def test_a_worker_loads_no_broker_code_until_a_broker_channel_is_opened() -> None:
    probe = (
        "import sys\n"
        "from outbox.deliver.channels import registry\n"
        "from outbox.deliver.channels.opened import OpenedChannels\n"
        "from outbox.deliver.channels.spec import ChannelContext\n"
        "channels = OpenedChannels(registry.channels(), ChannelContext(10))\n"
        "channels['webhook']; channels['null']\n"
        "code = ('outbox.deliver.channels.broker', 'outbox.deliver.channels.jetstream')\n"
        "print(*(m in sys.modules for m in code))\n"
        "channels['nats']\n"
        "print(*(m in sys.modules for m in code))\n"
    )
    assert _printed(probe) == ["False", "False", "True", "True"]


def test_a_worker_loads_no_http_code_until_an_http_channel_is_opened() -> None:
    # And it finds the built-in channels without reading the installed packages'
    # entry points; another name still reads them.
    probe = (
        "import sys\n"
        "import outbox.deliver.channels.registry as registry\n"
        "from outbox.deliver.channels.opened import OpenedChannels\n"
        "from outbox.deliver.channels.spec import ChannelContext\n"
        "scans = []\n"
        "real = registry.entry_points\n"
        "registry.entry_points = lambda **kw: scans.append(kw) or real(**kw)\n"
        "channels = OpenedChannels(registry.Known(), ChannelContext(10))\n"
        "channels['null']; registry.Telemetries()['webhook']\n"
        "code = ('outbox.deliver.channels.http', 'outbox.deliver.channels.webhook', 'yarl')\n"
        "print(*(m in sys.modules for m in code), len(scans))\n"
        "channels['webhook']\n"
        "print(*(m in sys.modules for m in code), len(scans))\n"
        "print(channels.get('a-channel-nobody-installed'), len(scans))\n"
    )
    assert _printed(probe) == ["False", "False", "False", "0",
                               "True", "True", "True", "0",
                               "None", "1"]  # fmt: skip
