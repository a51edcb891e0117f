"""A readable summary of `outbox bench` results."""

from __future__ import annotations

from typing import Any


def _median(result: dict[str, Any], name: str) -> float:
    return float(result[name]["median"])


def render(report: dict[str, Any]) -> str:
    machine = report["machine"]
    server = report.get("server", {})
    lines = [
        f"machine: {machine['cpu']} x{machine['cores']}, Python {machine['python']}",
        f"server: PostgreSQL {server.get('server_version')}, fsync={server.get('fsync')}, "
        f"synchronous_commit={server.get('synchronous_commit')}",
        "",
    ]
    for r in report["results"]:
        s = r["scenario"]
        if s == "enqueue":
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
                        f"         ...while idle workers ask for wake-ups: {_median(r, waking):>9,.0f}/s"
                        f"  ratio {r[f'ratio_{n}_producers_waking_idle_workers']:.0%}"
                    )
            for key in r:
                if key.startswith("enqueue_many_"):
                    lines.append(
                        f"enqueue_many, {key.rsplit('_', 1)[1]} per call: {_median(r, key):,.0f}/s"
                    )
        elif s == "drain":
            lines.append(
                f"drain    worker {_median(r, 'drain_worker'):,.0f}/s  raw SQL ceiling "
                f"{_median(r, 'drain_raw_sql_ceiling'):,.0f}/s  ratio {r['ratio_to_ceiling']:.0%}"
            )
        elif s == "latency":
            lines.append(
                f"latency  at {r['rate_per_second']:g}/s (medians of runs): p50 {r['p50_ms']:.1f} ms  p95 {r['p95_ms']:.1f} ms"
                f"  p99 {r['p99_ms']:.1f} ms  ({r['received']}/{r['messages']} received)"
            )
        elif s == "backlog":
            lines.append(
                f"backlog  {r['messages']:,} messages: first tenth {_median(r, 'backlog_first_tenth'):,.0f}/s"
                f"  last tenth {_median(r, 'backlog_last_tenth'):,.0f}/s"
                f"  ratio {r['last_vs_first']:.0%}  (overall {_median(r, 'backlog_overall'):,.0f}/s)"
            )
        elif s == "memory":
            lines.append(
                f"memory   worker at --concurrency {r['concurrency']}: peak RSS "
                f"{_median(r, 'memory_peak_rss'):,.0f} MB (max {r['max_peak_rss_mb']:,.0f} MB), "
                f"median while delivering {_median(r, 'memory_median_rss'):,.0f} MB"
            )
        elif s == "http":
            lines.append(
                f"http     worker {_median(r, 'http_worker'):,.0f}/s  bare aiohttp "
                f"{_median(r, 'http_bare_aiohttp'):,.0f}/s  ratio {r['ratio_to_ceiling']:.0%}"
            )
        elif s == "stats":
            lines.append(
                f"stats    SELECT * FROM outbox.stats: {r['stats_ms']['median']:.1f} ms (median of "
                f"{len(r['stats_ms']['runs'])}) with {r['attempts']:,} ledger rows in the last "
                f"hour and {r['queued']:,} queued"
            )
        elif s == "transport":
            lines.append(
                f"transport httpx {_median(r, 'httpx_default'):,.0f}/s  httpx+aiohttp "
                f"{_median(r, 'httpx_aiohttp'):,.0f}/s  aiohttp {_median(r, 'aiohttp'):,.0f}/s"
            )
    return "\n".join(lines)
