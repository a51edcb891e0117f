"""``python -m outbox.devtools.bench.traced_worker [outbox worker flags]``: an
``outbox worker`` whose every attempt span is sampled and recorded, then
batched (the SDK's ``BatchSpanProcessor``) to an exporter that drops them:
what tracing costs the worker itself, without a collector's network and
CPU in the figure. `outbox bench http` runs it beside a worker without
tracing (needs ``opentelemetry-sdk``)."""

from __future__ import annotations

import runpy
import sys
from collections.abc import Sequence
from typing import Any


def install() -> None:
    """Make the global tracer provider one that samples everything and drops it."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON

    class Discard(SpanExporter):
        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider(sampler=ALWAYS_ON)
    provider.add_span_processor(BatchSpanProcessor(Discard()))
    trace.set_tracer_provider(provider)


def main() -> None:
    """Install the provider, then run ``outbox worker`` in this process, as
    ``python -m outbox worker ...`` would."""
    install()
    sys.argv = ["outbox", "worker", *sys.argv[1:]]
    runpy.run_module("outbox", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
