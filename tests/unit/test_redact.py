"""Secrets are masked in any text that may reach a log line or an error."""

from __future__ import annotations

import pytest

from outbox._redact import redact_text, redact_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://app:pw@db:5432/x", "postgresql://app:***@db:5432/x"),
        ("postgresql://app@db/x", "postgresql://app@db/x"),
        (  # a multi-host URL (failover): urlsplit cannot read its port
            "postgresql://app:pw@h1:5432,h2:5433/x?target_session_attrs=read-write",
            "postgresql://app:***@h1:5432,h2:5433/x?target_session_attrs=read-write",
        ),
        ("postgresql://app:p@ss@db/x", "postgresql://app:***@db/x"),
        ("postgresql://app:p%40ss@[::1]:5432/x", "postgresql://app:***@[::1]:5432/x"),
        (
            "postgresql://db/x?password=pw&sslmode=require",
            "postgresql://db/x?password=***&sslmode=require",
        ),
    ],
)
def test_redact_url_masks_the_password(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redact_text_masks_urls_tokens_and_named_secrets() -> None:
    token = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
    text = (
        f"GET https://api.telegram.org/bot{token}/sendMessage failed; "
        "dsn=postgresql://u:hunter2@h/db; signing key whsec_abc"
    )
    out = redact_text(text, ("whsec_abc",))
    assert token not in out
    assert "hunter2" not in out
    assert "whsec_abc" not in out
    assert "https://api.telegram.org/bot***/sendMessage" in out
