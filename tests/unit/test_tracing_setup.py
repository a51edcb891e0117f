"""When a worker makes attempt spans, and how it reads the OTEL_* variables (no I/O)."""

from __future__ import annotations

import pytest

from outbox.deliver.otel import parent_context, provider_from_env
from outbox.deliver.tracing import exporter_requested, open_tracer
from outbox.errors import ConfigurationError


@pytest.mark.parametrize(
    ("environ", "requested"),
    [
        ({}, False),
        ({"OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp,console"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, False),
        ({"OTEL_SERVICE_NAME": "orders"}, False),  # naming a service asks for no export
    ],
)
def test_which_variables_ask_for_export(environ: dict[str, str], requested: bool) -> None:
    assert exporter_requested(environ) is requested


def test_no_tracer_when_off_or_when_nothing_asks_for_one() -> None:
    assert open_tracer("off", {}, {"OTEL_TRACES_EXPORTER": "console"}) is None
    assert open_tracer("child", {}, {}) is None  # no provider set in this process, no variable


def test_an_exporter_that_is_not_installed_is_named_with_the_installed_ones() -> None:
    with pytest.raises(ConfigurationError) as raised:
        provider_from_env({"OTEL_TRACES_EXPORTER": "console,zipkin-ish"})
    assert "'zipkin-ish'" in str(raised.value)
    assert "console" in str(raised.value)


@pytest.mark.parametrize(
    ("traceparent", "tracestate", "valid"),
    [
        ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", None, True),
        ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "a=1,b=2", True),
        ("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00-more", None, True),
        (None, None, False),
        ("garbage", None, False),
        ("00-0af7651916cd43dd8448eb211c80319c-zzzzzzzzzzzzzzzz-01", None, False),
    ],
)
def test_a_stored_context_becomes_a_remote_parent(
    traceparent: str | None, tracestate: str | None, valid: bool
) -> None:
    context = parent_context(traceparent, tracestate)
    assert (context is not None) is valid
    if context is not None and traceparent is not None:
        assert context.is_remote
        assert f"{context.trace_id:032x}" == traceparent[3:35]
        assert f"{context.span_id:016x}" == traceparent[36:52]
        assert context.trace_flags == int(traceparent[53:55], 16)
        assert context.trace_state.to_header() == (tracestate or "")
