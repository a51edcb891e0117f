"""``python -m outbox.devtools.bench.traced_worker [outbox worker flags]``: an
``outbox worker`` whose every attempt span is sampled and recorded, then
batched (the SDK's ``BatchSpanProcessor``) to an exporter that drops them:
what tracing costs the worker itself, without a collector's network and
CPU in the figure. `outbox bench http` runs it beside a worker without
tracing (needs ``opentelemetry-sdk``).

``OUTBOX_BENCH_SAMPLER=parent`` samples as the SDK does by default
(``ParentBased(ALWAYS_ON)``: an attempt is recorded when the producer's
``traceparent`` says sampled) instead of every attempt. ``--span-costs``
prints, instead of running a worker, what one span costs in this process:
a bare SDK span, and an attempt span as the worker makes it (JSON, µs)."""

from __future__ import annotations

import runpy
import sys
from collections.abc import Sequence
from typing import Any


def install(sampler: str = "always") -> None:
    """Make the global tracer provider one that drops what it records; it
    records every span (``always``) or the sampled producers' (``parent``)."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased

    class Discard(SpanExporter):
        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider(sampler=ParentBased(ALWAYS_ON) if sampler == "parent" else ALWAYS_ON)
    provider.add_span_processor(BatchSpanProcessor(Discard()))
    trace.set_tracer_provider(provider)


def span_costs(n: int = 30_000) -> dict[str, float]:
    """µs per span in this process, under the provider `install` made: a bare
    ``start_span().end()``, and `OtelTracer.begin` + ``end`` of one webhook
    attempt (a sampled parent, the attributes the worker sets)."""
    import time
    import uuid
    from datetime import UTC, datetime, timedelta

    from opentelemetry import trace

    from outbox.deliver.channels.spec import Telemetry
    from outbox.deliver.endpoints import Endpoint
    from outbox.deliver.model import AttemptResult, Claimed, Delivery, Finished
    from outbox.deliver.otel import OtelTracer
    from outbox.deliver.policy import Classification, Health, Outcome, RetryPolicy, Verdict

    tracer = OtelTracer(trace.get_tracer_provider(), {"webhook": Telemetry("http")})
    endpoint = Endpoint(
        name="bench", channel="webhook", policy=RetryPolicy(25, timedelta(days=1), 1.0, 60.0),
        settings={"url": "http://127.0.0.1:8080/hook"},
    )  # fmt: skip
    now = datetime.now(UTC)
    answer = AttemptResult(Classification(Verdict.DELIVERED, "HTTP 200", health=Health.OK),
                           now, 1.0, status_code=200)  # fmt: skip
    ids = [uuid.uuid4() for _ in range(n)]
    claims = [Claimed(i, "bench", "{}", None, None, 0, now, k, i,
                      f"00-{k + 1:032x}-{k + 1:016x}-01") for k, i in enumerate(ids)]  # fmt: skip
    done = [[Finished(c.id, c.token, Outcome.DELIVERED, now, 1.0, "HTTP 200", 200)]
            for c in claims]  # fmt: skip
    deliveries = [Delivery([c]) for c in claims]
    bare = trace.get_tracer("bench")

    def per_span(one: Any) -> float:
        started = time.perf_counter()
        for k in range(n):
            one(k)
        return (time.perf_counter() - started) / n * 1e6

    def attempt(k: int) -> None:
        tracer.end(tracer.begin(deliveries[k], endpoint), answer, done[k])

    per_span(lambda _k: bare.start_span("warm-up").end())
    return {
        "sdk_bare_span_us": per_span(lambda _k: bare.start_span("bare").end()),
        "attempt_span_us": per_span(attempt),
    }


def main() -> None:
    """Install the provider, then run ``outbox worker`` in this process, as
    ``python -m outbox worker ...`` would (or, with ``--span-costs``, print
    `span_costs` as JSON)."""
    import os

    install(os.environ.get("OUTBOX_BENCH_SAMPLER", "always"))
    if sys.argv[1:] == ["--span-costs"]:
        import json

        print(json.dumps(span_costs()))
        return
    sys.argv = ["outbox", "worker", *sys.argv[1:]]
    runpy.run_module("outbox", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
