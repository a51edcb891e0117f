"""`outbox bench` end to end, small: every scenario that has no other test
runs once against the test database and reports figures that make sense.

Small sizes, so the figures themselves mean nothing here: the real ones are
in benchmarks/RESULTS.md. What is checked is that each scenario runs, cleans
up after itself and reports what it says it reports.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from pgbouncer import PgBouncer

pytestmark = [pytest.mark.e2e, pytest.mark.single_pass]


def bench(database_url: str, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "outbox", "bench", "--database-url", database_url, *args, "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, Any] = json.loads(done.stdout)
    return report


@pytest.mark.timeout(300)
def test_backlog_reports_first_and_last_tenth_from_the_ledger(database_url: str) -> None:
    args = ("--backlog", "20000", "--backlog-processes", "2", "--rounds", "1")
    (result,) = bench(database_url, "backlog", *args)["results"]
    assert result["scenario"] == "backlog"
    assert result["processes"] == 2
    assert result["processes_that_delivered_by_round"] == [2]
    first = result["backlog_first_tenth"]["rounds"][0]
    last = result["backlog_last_tenth"]["rounds"][0]
    assert first > 0
    assert last > 0
    assert result["last_vs_first"] == pytest.approx(last / first)
    assert result["backlog_overall"]["median"] > 0


@pytest.mark.timeout(300)
def test_http_reports_the_cost_of_tracing_all_and_one_in_ten(database_url: str) -> None:
    (result,) = bench(database_url, "http", "--messages", "500", "--rounds", "1")["results"]
    plain = result["http_worker"]["median"]
    for name, cost in [("http_worker_traced", "tracing_cost"),
                       ("http_worker_traced_1_in_10", "tracing_cost_sampled")]:  # fmt: skip
        rate = result[name]["median"]
        assert rate > 0
        assert result[cost] == pytest.approx(1 - rate / plain)
    assert result["sampled_every"] == 10
    spans = result["span_costs_us"]
    # An attempt span is an SDK span and more: its attributes, its parent.
    assert 0 < spans["sdk_bare_span_us"] < spans["attempt_span_us"] < 10_000


@pytest.mark.timeout(300)
def test_memory_reports_the_workers_peak_rss(database_url: str) -> None:
    (result,) = bench(database_url, "memory", "--messages", "3000", "--rounds", "1")["results"]
    peak = result["memory_peak_rss"]["rounds"][0]
    median = result["memory_median_rss"]["rounds"][0]
    assert result["concurrency"] == 500
    # A Python worker with its imports is tens of MB; its peak is at least its median.
    assert 20 < median <= peak < 2000


@pytest.mark.timeout(300)
def test_latency_reports_medians_of_its_rounds(database_url: str) -> None:
    args = ("latency", "--rate", "100", "--seconds", "1", "--rounds", "2")
    (result,) = bench(database_url, *args)["results"]
    assert len(result["rounds"]) == 2
    assert result["received"] == result["messages"] == 200
    for key in ("p50_ms", "p99_ms"):
        values = sorted(r[key] for r in result["rounds"])
        assert result[key] == pytest.approx(sum(values) / 2)
        assert 0 < result[key] < 1000


@pytest.mark.timeout(300)
def test_latency_with_the_worker_through_pgbouncer(database_url: str, pgbouncer: PgBouncer) -> None:
    through = pgbouncer.url(database_url.rsplit("/", 1)[1])
    args = ("latency", "--rate", "50", "--seconds", "1", "--rounds", "1", "--worker-url", through,
            "--poll-interval", "5")  # fmt: skip
    (result,) = bench(database_url, *args)["results"]
    assert result["received"] == result["messages"] == 50
    assert result["worker_through"] == through
    assert 0 < result["p99_ms"] < 1000  # woken through the direct listener (polls: 5 s)
    assert f"login attempt: db={database_url.rsplit('/', 1)[1]}" in pgbouncer.log()


@pytest.mark.timeout(300)
def test_drain_also_measures_a_worker_through_pgbouncer(
    database_url: str, pgbouncer: PgBouncer
) -> None:
    through = pgbouncer.url(database_url.rsplit("/", 1)[1])
    args = ("drain", "--messages", "2000", "--rounds", "1", "--worker-url", through)
    (result,) = bench(database_url, *args)["results"]
    assert result["worker_through"] == through
    assert result["drain_worker_pooled"]["median"] > 0
    # A cold table, against the vacuumed rate of the same rounds.
    assert result["drain_worker_cold_table"]["median"] > 0
    assert result["cold_ratio_to_vacuumed"] == pytest.approx(
        result["drain_worker_cold_table"]["median"] / result["drain_worker"]["median"]
    )
    # Both ceilings, and the worker's ratio to each.
    assert result["drain_minimal_hot_path_ceiling"]["median"] > 0
    assert result["ratio_to_minimal_hot_path"] == pytest.approx(
        result["drain_worker"]["median"] / result["drain_minimal_hot_path_ceiling"]["median"]
    )
    assert result["pooled_ratio_to_direct"] == pytest.approx(
        result["drain_worker_pooled"]["median"] / result["drain_worker"]["median"]
    )
    assert f"login attempt: db={database_url.rsplit('/', 1)[1]}" in pgbouncer.log()


@pytest.mark.timeout(300)
def test_publish_reports_fan_out_against_enqueue_many_and_the_cost_of_keeping_payloads(
    database_url: str,
) -> None:
    (result,) = bench(database_url, "publish", "--messages", "2000", "--rounds", "1")["results"]
    assert result["subscribers"] == 5
    for name in (
        "publish_to_5_subscribers",
        "enqueue_many_of_5",
        "drain_keeping_payloads",
        "drain_keeping_none",
    ):
        assert result[name]["median"] > 0, name
    assert result["time_ratio_publish_to_enqueue_many"] == pytest.approx(
        result["enqueue_many_of_5"]["median"] / result["publish_to_5_subscribers"]["median"]
    )


@pytest.mark.timeout(300)
def test_startup_reports_process_start_to_first_delivery(database_url: str) -> None:
    (result,) = bench(database_url, "startup", "--rounds", "1")["results"]
    rounds = result["start_to_first_delivery"]["rounds"]
    assert len(rounds) == 5  # a median of at least 5, whatever --rounds says
    assert all(0 < ms < 30_000 for ms in rounds)


@pytest.mark.timeout(300)
async def test_claim_reports_a_small_claims_server_cpu_and_leaves_no_queue(
    database_url: str, conn: Any
) -> None:
    (result,) = bench(database_url, "claim", "--rounds", "1")["results"]
    for case in ("claim_1", "claim_40_of_20_endpoints"):
        (cpu,) = result[f"{case}_server_cpu"]["rounds"]  # the test database is on this machine
        (wall,) = result[f"{case}_wall"]["rounds"]
        assert 0 <= cpu < 1_000_000
        assert 0 < wall < 1_000_000
    left = await conn.fetchval(
        "SELECT count(*) FROM outbox.messages WHERE endpoint LIKE 'bench-claim%'"
    )
    assert left == 0


@pytest.mark.timeout(300)
def test_soak_reports_each_minute(database_url: str) -> None:
    done = subprocess.run(
        [
            *(sys.executable, "-m", "outbox", "soak", "--database-url", database_url),
            *("--minutes", "1", "--rate", "50", "--workers", "1", "--fail-share", "0.1", "--json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    minutes = report["by_minute"]
    assert len(minutes) == 1
    assert sum(m["enqueued"] for m in minutes) == report["summary"]["enqueued"] > 0
    last = minutes[-1]
    assert last["delivered"] > 0
    assert last["failed"] > 0  # the receiver's injected 503s, retried
    assert len(last["worker_rss_mb"]) == 1
    assert 20 < last["worker_rss_mb"][0] < 2000
    assert report["summary"]["worker_restarts"] == 0


@pytest.mark.timeout(300)
async def test_web_reports_each_pages_server_time(database_url: str) -> None:
    from outbox.devtools.bench import web

    result = await web.run(database_url, attempts=20_000, queued=2_000, dead=500, rounds=2)
    assert result["target_ms"] == 100
    for name in web.PAGES:
        figure = result[f"{name}_ms"]
        assert len(figure["server_runs"]) == 2
        # The server's own time is part of the client's round trip.
        assert 0 < figure["server_median"] <= figure["client_median"]
