"""The channels one worker process sends through, each opened on first use.

A worker used to open every channel the registry knows when it started,
importing the code of each (the broker clients' wrappers among them) whether
or not any endpoint used it. Now a channel opens when the first delivery to
one of its endpoints (or a broker endpoint's warm-up) asks for it, and only
channels that were opened are closed at shutdown.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping

from outbox.deliver.channels.spec import Channel, ChannelContext, ChannelSpec

log = logging.getLogger("outbox.worker")


class OpenedChannels(Mapping[str, Channel]):
    def __init__(self, specs: Mapping[str, ChannelSpec], context: ChannelContext) -> None:
        self._specs = specs
        self._context = context
        self._open: dict[str, Channel] = {}

    def __getitem__(self, name: str) -> Channel:
        channel = self._open.get(name)
        if channel is None:
            channel = self._open[name] = self._specs[name].open(self._context)
        return channel

    def get(self, name: str, default: Channel | None = None) -> Channel | None:  # type: ignore[override]
        """The channel, opened if need be; ``default`` if unknown or it cannot open
        (the delivery is then retried, saying there is no such channel here)."""
        try:
            return self[name]
        except KeyError:
            return default
        except Exception:
            log.exception("cannot open the %r channel", name)
            return default

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    def opened(self) -> list[Channel]:
        """The channels opened so far (those to close)."""
        return list(self._open.values())
