"""Whether, and how, a worker traces its attempts (OpenTelemetry).

A worker makes one span per attempt only when an OpenTelemetry SDK is
configured, in one of two ways (the README's "Tracing" says which to pick):

* the process runs under ``opentelemetry-instrument`` (or the application
  set a tracer provider before starting the worker): the global provider is
  used as it is;
* ``opentelemetry-sdk`` is installed and the standard variables ask for an
  exporter (``OTEL_TRACES_EXPORTER``, or an ``OTEL_EXPORTER_OTLP_ENDPOINT``):
  the worker builds the provider itself (`outbox.deliver.otel.provider_from_env`).

Otherwise nothing is imported and no span is made, and each message's own
trace context still goes onward unchanged (`Delivery.onward_trace`): a
trace never breaks at the outbox. ``OUTBOX_TRACE_SPANS`` says how the
spans hang together: ``child`` (of the producer's span; the default),
``link`` (in a trace of their own, linked to it) or ``off``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence
from importlib.util import find_spec
from typing import TYPE_CHECKING, Literal, Protocol

from outbox.deliver.model import AttemptResult, Delivery, Endpoint, Finished

if TYPE_CHECKING:
    from outbox.deliver.channels.spec import Telemetry

log = logging.getLogger("outbox.worker")

TraceSpans = Literal["child", "link", "off"]
# What asks for an exporter, per the OpenTelemetry SDK's environment variables.
EXPORTER_VARIABLES = (
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
)


class Tracer(Protocol):
    """Makes the span of each attempt. `begin` runs just before the channel
    sends (and sets ``delivery.trace``, the context sent onward); `end` once
    the outcome is decided. Neither may raise."""

    def begin(self, delivery: Delivery, endpoint: Endpoint) -> object: ...

    def end(self, span: object, result: AttemptResult, finished: Sequence[Finished]) -> None: ...

    def shutdown(self) -> None: ...


def exporter_requested(environ: Mapping[str, str]) -> bool:
    """Do the standard variables ask for spans to be exported?"""
    exporters = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters:
        return exporters != "none"
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def open_tracer(
    spans: TraceSpans,
    telemetry: Mapping[str, Telemetry],
    environ: Mapping[str, str] | None = None,
) -> Tracer | None:
    """The worker's tracer, or None when it should make no span (see above).
    ``telemetry``: each channel's span shape (`ChannelSpec.telemetry`)."""
    if spans == "off":
        return None
    environ = os.environ if environ is None else environ
    api = sys.modules.get("opentelemetry.trace")
    provider = None
    if api is not None:  # under opentelemetry-instrument, or set up by the application
        candidate = api.get_tracer_provider()
        if not isinstance(candidate, api.ProxyTracerProvider | api.NoOpTracerProvider):
            provider = candidate
    owned = False
    if provider is None:
        if not exporter_requested(environ):
            return None
        if not _installed("opentelemetry.sdk"):
            log.warning(
                "the OTEL_* variables ask for trace export, but opentelemetry-sdk is not "
                "installed: no spans (pip install opentelemetry-sdk and an exporter); "
                "trace context is still passed on"
            )
            return None
    from outbox.deliver import otel  # the extra is there: the SDK's API came with it

    if provider is None:
        provider = otel.provider_from_env(environ)
        owned = True
    return otel.OtelTracer(provider, telemetry, links=spans == "link", owned=owned)


def _installed(module: str) -> bool:
    """Is ``module`` importable? (Finding it imports its parent package, which
    may itself be missing.)"""
    try:
        return find_spec(module) is not None
    except ImportError:
        return False
