"""A readable summary of `outbox bench` results: a line or two per scenario."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Result = dict[str, Any]


def _median(result: Result, name: str) -> float:
    return float(result[name]["median"])


def _enqueue(r: Result) -> list[str]:
    lines = []
    for n in (1, 32):
        if f"enqueue_{n}_producers" in r:
            lines.append(
                f"enqueue  {n:>2} producer(s): {_median(r, f'enqueue_{n}_producers'):>9,.0f}/s"
                f"  bare INSERT {_median(r, f'bare_insert_{n}_producers'):>9,.0f}/s"
                f"  ratio {r[f'ratio_{n}_producers']:.0%}"
            )
        waking = f"enqueue_{n}_producers_waking_idle_workers"
        if waking in r:
            lines.append(
                "         ...while idle workers ask for wake-ups: "
                f"{_median(r, waking):>9,.0f}/s"
                f"  ratio {r[f'ratio_{n}_producers_waking_idle_workers']:.0%}"
            )
    lines += [
        f"enqueue_many, {key.rsplit('_', 1)[1]} per call: {_median(r, key):,.0f}/s"
        for key in r
        if key.startswith("enqueue_many_")
    ]
    return lines


def _drain(r: Result) -> list[str]:
    lines = [
        f"drain    worker {_median(r, 'drain_worker'):,.0f}/s  raw SQL ceiling "
        f"{_median(r, 'drain_raw_sql_ceiling'):,.0f}/s  ratio {r['ratio_to_ceiling']:.0%}"
    ]
    if "drain_minimal_hot_path_ceiling" in r:
        lines.append(
            f"         minimal hot path {_median(r, 'drain_minimal_hot_path_ceiling'):,.0f}/s"
            f"  ratio {r['ratio_to_minimal_hot_path']:.0%}"
        )
    if "drain_worker_cold_table" in r:
        lines.append(
            f"         cold table (no ANALYZE after the burst) "
            f"{_median(r, 'drain_worker_cold_table'):,.0f}/s"
            f"  {r['cold_ratio_to_vacuumed']:.0%} of the vacuumed rate"
        )
    if "drain_worker_pooled" in r:
        lines.append(
            f"         through {r['worker_through']} (--pooled) "
            f"{_median(r, 'drain_worker_pooled'):,.0f}/s  "
            f"{r['pooled_ratio_to_direct']:.0%} of direct"
        )
    return lines


def _latency(r: Result) -> list[str]:
    return [
        f"latency  at {r['rate_per_second']:g}/s (medians of runs): p50 {r['p50_ms']:.1f} ms"
        f"  p95 {r['p95_ms']:.1f} ms  p99 {r['p99_ms']:.1f} ms"
        f"  ({r['received']}/{r['messages']} received)"
    ]


def _backlog(r: Result) -> list[str]:
    return [
        f"backlog  {r['messages']:,} messages: first tenth "
        f"{_median(r, 'backlog_first_tenth'):,.0f}/s"
        f"  last tenth {_median(r, 'backlog_last_tenth'):,.0f}/s"
        f"  ratio {r['last_vs_first']:.0%}  (overall {_median(r, 'backlog_overall'):,.0f}/s)"
    ]


def _memory(r: Result) -> list[str]:
    return [
        f"memory   worker at --concurrency {r['concurrency']}: peak RSS "
        f"{_median(r, 'memory_peak_rss'):,.0f} MB (max {r['max_peak_rss_mb']:,.0f} MB), "
        f"median while delivering {_median(r, 'memory_median_rss'):,.0f} MB"
    ]


def _http(r: Result) -> list[str]:
    return [
        f"http     worker {_median(r, 'http_worker'):,.0f}/s  bare aiohttp "
        f"{_median(r, 'http_bare_aiohttp'):,.0f}/s  ratio {r['ratio_to_ceiling']:.0%}",
        *(
            [
                f"         traced {_median(r, 'http_worker_traced'):,.0f}/s  tracing costs "
                f"{r['tracing_cost']:.0%} (target <= 15%)",
                *(
                    [
                        f"         1 in {r['sampled_every']} sampled: tracing costs "
                        f"{r['tracing_cost_sampled']:.0%}; one span costs "
                        f"{r['span_costs_us']['attempt_span_us']:.0f} µs "
                        f"(a bare SDK span {r['span_costs_us']['sdk_bare_span_us']:.0f} µs)"
                    ]
                    if "tracing_cost_sampled" in r
                    else []
                ),
            ]
            if "tracing_cost" in r
            else []
        ),
    ]


def _broker(r: Result) -> list[str]:
    bare = r["bare"].split("_bare_", 1)[1].replace("_", "-")
    return [
        f"{r['scenario']:<8} worker {_median(r, r['worker']):,.0f}/s  bare {bare} "
        f"{_median(r, r['bare']):,.0f}/s  ratio {r['ratio_to_ceiling']:.0%}"
    ]


def _web(r: Result) -> list[str]:
    lines = [f"web      {r['attempts']:,} ledger rows in the last hour, {r['queued']:,} queued, "
             f"{r['dead']:,} dead: server time per page, median of {r['rounds']} "
             f"(target < {r['target_ms']:.0f} ms for the overview and dead letters)"]  # fmt: skip
    for key, value in r.items():
        if key.endswith("_ms") and isinstance(value, dict):
            lines.append(f"         {key[:-3]:<22} {value['server_median']:7.1f} ms "
                         f"(round trip {value['client_median']:.1f} ms)")  # fmt: skip
    return lines


def _stats(r: Result) -> list[str]:
    return [
        f"stats    SELECT * FROM outbox.stats: {r['stats_ms']['median']:.1f} ms (median of "
        f"{len(r['stats_ms']['runs'])}) with {r['attempts']:,} ledger rows in the last "
        f"hour and {r['queued']:,} queued"
    ]


def _transport(r: Result) -> list[str]:
    return [
        f"transport httpx {_median(r, 'httpx_default'):,.0f}/s  httpx+aiohttp "
        f"{_median(r, 'httpx_aiohttp'):,.0f}/s  aiohttp {_median(r, 'aiohttp'):,.0f}/s"
    ]


def _publish(r: Result) -> list[str]:
    return [
        f"publish  to {r['subscribers']} subscribers {_median(r, 'publish_to_5_subscribers'):,.0f}/s"
        f"  enqueue_many of 5 {_median(r, 'enqueue_many_of_5'):,.0f}/s"
        f"  time ratio {r['time_ratio_publish_to_enqueue_many']:.2f} (target <= 1.5)",
        f"         drain keeping payloads {_median(r, 'drain_keeping_payloads'):,.0f}/s"
        f"  keeping none {_median(r, 'drain_keeping_none'):,.0f}/s"
        f"  ratio {r['drain_ratio_keeping_to_none']:.0%}",
    ]


def _claim(r: Result) -> list[str]:
    lines = []
    for case, label in (
        ("claim_1", "1 message"),
        ("claim_40_of_20_endpoints", "40 over 20 endpoints"),
    ):
        cpu = r.get(f"{case}_server_cpu")
        lines.append(
            f"claim    {label}: "
            + (f"{cpu['median']:,.0f} µs server CPU, " if cpu else "")
            + f"{_median(r, f'{case}_wall'):,.0f} µs round trip"
        )
    return lines


def _startup(r: Result) -> list[str]:
    ms = r["start_to_first_delivery"]
    return [
        f"startup  process start to first delivery: {ms['median']:.0f} ms (median of "
        f"{len(ms['rounds'])}; target <= 200 ms)"
    ]


_LINES: dict[str, Callable[[Result], list[str]]] = {
    "startup": _startup,
    "claim": _claim,
    "publish": _publish,
    "enqueue": _enqueue,
    "drain": _drain,
    "latency": _latency,
    "backlog": _backlog,
    "memory": _memory,
    "http": _http,
    "stats": _stats,
    "web": _web,
    "transport": _transport,
    "nats": _broker,
    "amqp": _broker,
    "redis": _broker,
    "mqtt": _broker,
}


def render(report: dict[str, Any]) -> str:
    machine = report["machine"]
    server = report.get("server", {})
    lines = [
        f"machine: {machine['cpu']} x{machine['cores']}, Python {machine['python']}",
        f"server: PostgreSQL {server.get('server_version')}, fsync={server.get('fsync')}, "
        f"synchronous_commit={server.get('synchronous_commit')}",
        "",
    ]
    for result in report["results"]:
        lines += _LINES[result["scenario"]](result)
    return "\n".join(lines)
