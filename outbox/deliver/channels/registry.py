"""Every channel this installation knows: the built-in ones and those that
installed packages register under the entry point group ``outbox.channels``
(each entry point names a `ChannelSpec`).

What drives from here: the channels a worker opens, the choices of ``outbox
endpoint add --channel``, the rows of ``outbox.channels`` (which every
endpoint's channel must have; `outbox migrate` writes them) and the docs.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from importlib.metadata import entry_points
from types import MappingProxyType

from outbox.deliver.channels import brokers, http_channels, null
from outbox.deliver.channels.spec import ChannelSpec, Telemetry
from outbox.errors import ConfigurationError, InvalidInputError

ENTRY_POINTS = "outbox.channels"
BUILT_IN: tuple[ChannelSpec, ...] = (
    http_channels.WEBHOOK,
    http_channels.TELEGRAM,
    brokers.NATS,
    brokers.AMQP,
    brokers.REDIS,
    brokers.MQTT,
    null.SPEC,
)


@functools.cache
def channels() -> Mapping[str, ChannelSpec]:
    """Every known channel by name: the built-in ones first, then the installed
    packages' in the order of their entry point names."""
    known = {spec.name: spec for spec in BUILT_IN}
    for point in sorted(entry_points(group=ENTRY_POINTS), key=lambda p: p.name):
        try:
            spec = point.load()
        except Exception as exc:
            raise ConfigurationError(
                f"cannot load the channel {point.name!r} ({point.value}): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(spec, ChannelSpec):
            raise ConfigurationError(
                f"the entry point {point.name!r} ({point.value}) of group {ENTRY_POINTS} "
                f"names a {type(spec).__name__}, not a ChannelSpec"
            )
        if spec.name in known:
            raise ConfigurationError(
                f"two channels are called {spec.name!r} (one from {point.value})"
            )
        known[spec.name] = spec
    return MappingProxyType(known)


_BUILT_IN = {spec.name: spec for spec in BUILT_IN}


class _AllKnown:
    """Going through every known channel (names, count) reads the entry points."""

    def __iter__(self) -> Iterator[str]:
        return iter(channels())

    def __len__(self) -> int:
        return len(channels())


class Known(_AllKnown, Mapping[str, ChannelSpec]):
    """`channels()`, except that a built-in channel is found without reading the
    installed packages' entry points (2-4 ms of a worker's start-up, more with
    many packages): what a worker looks its endpoints' channels up in. Any other
    name, and going through them all, reads the entry points."""

    def __getitem__(self, name: str) -> ChannelSpec:
        spec = _BUILT_IN.get(name)
        return spec if spec is not None else channels()[name]


class Telemetries(_AllKnown, Mapping[str, Telemetry]):
    """Each known channel's span shape (`ChannelSpec.telemetry`), looked up as `Known` does."""

    def __getitem__(self, name: str) -> Telemetry:
        return Known()[name].telemetry


def channel(name: str) -> ChannelSpec:
    """The channel called ``name``; an unknown one is an error naming the known ones."""
    spec = channels().get(name)
    if spec is None:
        raise InvalidInputError(
            "channel", f"unknown channel {name!r}; known: {', '.join(channels())}"
        )
    return spec


def table() -> str:
    """The channels as the README lists them (a test holds the README to this)."""
    rows = [
        "| channel | what it does | `--url` | `--secret` | its defaults | settings only it takes |",
        "|---|---|---|---|---|---|",
    ]
    for spec in channels().values():
        defaults = ", ".join(f"`{k}` {v}" for k, v in spec.defaults.items()) or "—"
        only = (
            ", ".join(
                f"`{s}`" + (" (required)" if s in spec.needs else "") for s in sorted(spec.settings)
            )
            or "—"
        )
        rows.append(
            f"| `{spec.name}` | {spec.summary} | {spec.url} | {spec.secret} | {defaults} | {only} |"
        )
    return "\n".join(rows)
