"""``outbox demo``, ``outbox bench`` and ``outbox soak``: the tools for trying
and measuring outbox (`outbox.devtools`, in the ``demo`` and ``bench`` extras)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from outbox.cli.app import database_option, main, run, run_fast
from outbox.errors import ConfigurationError
from outbox.settings import load_settings

# What `outbox bench` runs when no scenario is named (outbox.devtools.bench.suite.DEFAULT),
# then those it runs only when named: each needs its message broker, or the web extra.
DEFAULT = (
    "enqueue", "drain", "http", "latency", "backlog", "memory", "transport", "stats", "publish",
    "startup", "claim",
)  # fmt: skip
SCENARIOS = (*DEFAULT, "nats", "amqp", "redis", "mqtt", "web")


@contextlib.contextmanager
def _needs(extra: str) -> Iterator[None]:
    """Imports of devtools modules; a clear error when their extra is not installed."""
    try:
        yield
    except ImportError as exc:
        raise ConfigurationError(
            f"this command needs the {extra} extra ({exc.name} is missing): "
            f"pip install 'outbox[{extra}]'"
        ) from None


def _given_url(database_url: str | None) -> str | None:
    settings = load_settings()
    if database_url:
        return database_url
    return settings.database_url.get_secret_value() if settings.database_url else None


@main.command("demo")
@database_option
@click.option("--messages", type=int, default=120, show_default=True, help="Orders to place.")
@click.option(
    "--duration", type=float, default=45.0, show_default=True, help="Longest run, seconds."
)
@click.option("--reset", is_flag=True, help="Start the embedded database afresh.")
@click.option(
    "--keep", is_flag=True,
    help="Afterwards, keep the database, workers and receivers running, with the dashboard "
    "(outbox web), until Ctrl-C.",
)  # fmt: skip
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="The embedded database's directory [default: a per-user cache directory].",
)
@click.pass_context
def demo_cmd(
    ctx: click.Context,
    database_url: str | None,
    messages: int,
    duration: float,
    reset: bool,
    keep: bool,
    data_dir: Path | None,
) -> None:
    """See outbox work: an embedded PostgreSQL (unless OUTBOX_DATABASE_URL is set),
    receivers that fail on purpose, business transactions (some rolled back),
    worker processes, live progress, then the stats. About half a minute."""
    with _needs("demo"):
        from outbox.devtools import demo
    try:
        code = run(
            demo.run(_given_url(database_url), messages=messages, duration=duration,
                     reset=reset, data_dir=data_dir, say=click.echo, keep=keep)
        )  # fmt: skip
    except KeyboardInterrupt:
        if not keep:
            raise
        click.echo("stopped")
        code = 0
    ctx.exit(code)


@main.command("bench")
@database_option
@click.argument("scenarios", nargs=-1, type=click.Choice(SCENARIOS))
@click.option(
    "--rounds",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Rounds per figure (medians).",
)
@click.option(
    "--messages",
    type=click.IntRange(min=100),
    default=None,
    help="drain, http, memory, publish, nats, amqp, redis, mqtt: backlog size "
    "[defaults: 50,000, 20,000, 50,000, 50,000, 20,000 for each broker].",
)
@click.option(
    "--backlog",
    "backlog_messages",
    type=click.IntRange(min=100),
    default=1_000_000,
    show_default=True,
    help="backlog: messages to drain.",
)
@click.option(
    "--backlog-processes",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="backlog: worker processes draining it (outbox worker --processes).",
)
@click.option("--rate", type=float, default=500.0, show_default=True, help="latency: messages/s.")
@click.option("--seconds", type=float, default=10.0, show_default=True, help="latency: duration.")
@click.option(
    "--no-listen",
    is_flag=True,
    help="latency: the worker polls only (outbox worker --no-listen), every --poll-interval.",
)
@click.option(
    "--poll-interval", type=click.FloatRange(min=0.001), default=None,
    help="latency: the worker's --poll-interval [default: its own].",
)  # fmt: skip
@click.option(
    "--worker-url",
    metavar="URL",
    default=None,
    help="latency: the worker connects here (a PgBouncer in front of the database), "
    "with --pooled; it LISTENs on the database's own URL unless --no-listen. drain: a "
    "worker through it as well, beside the direct one, in the same rounds.",
)
@click.option(
    "--broker-url",
    "broker_urls",
    multiple=True,
    metavar="URL",
    help="nats, amqp, redis, mqtt: the broker, by the URL's scheme (repeatable) "
    "[defaults: nats://127.0.0.1:4222, amqp://guest:guest@127.0.0.1:5672/, "
    "redis://127.0.0.1:6379/0, mqtt://127.0.0.1:1883].",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="nats, amqp, redis, mqtt: the worker's --concurrency and the bare client's in flight.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def bench_cmd(
    database_url: str | None, scenarios: tuple[str, ...], as_json: bool, **flags: Any
) -> None:
    """Measure outbox against its ceilings (default: every scenario but the
    broker ones, which run only when named).

    enqueue: outbox.enqueue() vs a bare INSERT at 1 and 32 producers, and the
    batch form. drain: one worker process vs a raw-SQL claim-and-complete loop.
    http: one worker delivering webhooks (ledger included) to a receiver
    process, without tracing and with every attempt span sampled, vs a bare
    aiohttp client posting to it. latency: commit-to-receipt at a steady
    rate. backlog: the first and the last tenth of a 1,000,000-message drain.
    memory: a worker's peak resident memory at --concurrency 500. transport:
    httpx vs httpx over aiohttp vs bare aiohttp.
    stats: SELECT * FROM outbox.stats with 1,000,000 ledger rows in the last
    hour and 100,000 queued messages (written and removed again). publish:
    outbox.publish() to 5 subscribers vs enqueue_many() of the same 5
    messages, and a worker's drain keeping delivered payloads for replay vs
    keeping none. startup: from starting a worker process to its first
    delivery, a backlog waiting (median of at least 5). claim: the server
    CPU of one small claim (1 message; 40 over 20 endpoints).

    nats, amqp, redis, mqtt (not in the default set: each needs its broker,
    see --broker-url, and the channel's extra): one worker delivering a
    backlog to the broker, acknowledgements and ledger included, vs a bare
    client of the same library publishing as many with the same
    acknowledgements and as many in flight (nats-py js.publish, aiormq with
    publisher confirms, redis-py pipelined XADDs, aiomqtt at QoS 1). What
    each needs on the broker (a JetStream stream, a durable exchange and
    queue, a stream key) is created and removed again.

    Without a database URL an embedded PostgreSQL (durable settings) is
    started in a temporary directory.
    """
    with _needs("bench"):
        from outbox.devtools.bench import common, report, suite
    common.BARS = not as_json
    options = _bench_options(**flags)

    def progress(name: str, value: float) -> None:
        if not as_json:
            click.echo(f"  {name}: {value:,.1f}", err=True)

    def starting(scenario: str) -> None:
        if not as_json:
            click.echo(f"{scenario} ...", err=True)

    with suite.MeasuredDatabase(_given_url(database_url)) as url:
        results = run_fast(suite.run(url, scenarios, options, progress=progress, starting=starting))
    click.echo(json.dumps(results, indent=2, default=str) if as_json else report.render(results))


def _bench_options(
    *, rounds: int, messages: int | None, backlog_messages: int, rate: float, seconds: float,
    no_listen: bool, poll_interval: float | None, worker_url: str | None,
    broker_urls: tuple[str, ...], concurrency: int, backlog_processes: int,
) -> Any:  # fmt: skip
    """The scenarios' options from `outbox bench`'s flags."""
    from outbox.devtools.bench import brokers, suite

    try:
        urls = tuple((brokers.broker_for(u), u) for u in broker_urls)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--broker-url") from None
    worker_args: tuple[str, ...] = ("--no-listen",) if no_listen else ()
    if poll_interval is not None:
        worker_args += ("--poll-interval", str(poll_interval))
    return suite.Options(
        rounds, messages, backlog_messages, rate, seconds, urls, concurrency, worker_args,
        worker_url, backlog_processes,
    )  # fmt: skip


@main.command("soak")
@database_option
@click.option("--minutes", type=click.FloatRange(min=1), default=30.0, show_default=True)
@click.option(
    "--rate", type=click.FloatRange(min=1), default=1000.0, show_default=True, help="Messages/s."
)
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--concurrency", type=click.IntRange(min=1), default=100, show_default=True)
@click.option(
    "--fail-share",
    type=click.FloatRange(0, 1),
    default=0.02,
    show_default=True,
    help="Share of requests the receiver answers with 503.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def soak_cmd(
    database_url: str | None,
    minutes: float,
    rate: float,
    workers: int,
    concurrency: int,
    fail_share: float,
    as_json: bool,
) -> None:
    """Constant load for a long time; memory and throughput minute by minute.

    A producer commits --rate webhook messages a second; --workers worker
    processes deliver them to a local receiver that answers --fail-share of
    requests with 503. Each minute: enqueued, delivered and failed (from
    outbox.throughput), delivery latency, queue length, each worker's
    resident memory and the outbox tables' size; lines follow wall-clock
    minutes, the first being the part of a minute the run started in. Without
    a database URL an embedded PostgreSQL is started in a temporary directory.
    """
    with _needs("bench"):
        from outbox.devtools.bench import common, soak, suite

    def line(minute: soak.Minute) -> None:
        click.echo(soak.render_minute(minute), err=as_json)  # with --json, on stderr

    with suite.MeasuredDatabase(_given_url(database_url)) as url:
        result = run_fast(
            soak.run(url, minutes=minutes, rate=rate, workers=workers, concurrency=concurrency,
                     fail_share=fail_share, on_minute=line)
        )  # fmt: skip
    report = result.to_json() | {"machine": common.machine_facts()}
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
    else:
        click.echo(json.dumps(report["summary"], indent=2))
