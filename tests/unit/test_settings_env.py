"""Settings read their ``OUTBOX_*`` variables themselves (no pydantic-settings):
any case, the constructor's values first, unknown variables ignored, a bad
value named by its variable."""

from __future__ import annotations

import sys

import pytest

from outbox.errors import ConfigurationError
from outbox.settings import load_settings
from outbox.settings.process import Settings


def test_variables_are_read_in_any_case_and_flags_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTBOX_CONCURRENCY", "7")
    monkeypatch.setenv("outbox_listen", "false")
    monkeypatch.setenv("OUTBOX_NOT_A_SETTING", "whatever")
    settings = load_settings(poll_interval=0.5)
    assert settings.concurrency == 7
    assert settings.listen is False
    assert settings.poll_interval == 0.5
    assert Settings(concurrency=3).concurrency == 3  # the constructor's value wins


def test_a_bad_value_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTBOX_CONCURRENCY", "many")
    with pytest.raises(ConfigurationError, match="OUTBOX_CONCURRENCY: Input should be"):
        load_settings()


def test_reading_settings_does_not_import_pydantic_settings() -> None:
    load_settings()
    assert "pydantic_settings" not in sys.modules
