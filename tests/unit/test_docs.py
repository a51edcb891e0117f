"""The README says what the code declares: its channels table is the registry's."""

from __future__ import annotations

from pathlib import Path

from outbox.deliver.channels import registry

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_lists_every_channel_as_the_registry_declares_it() -> None:
    assert registry.table() in README.read_text(encoding="utf-8")


def test_every_channel_has_a_summary_and_opens_a_sender() -> None:
    from outbox.deliver.channels.spec import ChannelContext

    for spec in registry.channels().values():
        assert spec.summary
        sender = spec.open(ChannelContext(concurrency=2))
        assert callable(sender.send)
        assert callable(sender.aclose)
