"""Drain the same N no-op jobs with four other PostgreSQL job queues, beside outbox.

    python benchmarks/peers/run.py --jobs 50000 --rounds 3 --out peers.json
    python benchmarks/peers/run.py --jobs 50000 --sweep --out peers-sweep.json

Standard library only (Python 3.11). The peers run in throwaway environments
this script makes under /tmp/outbox-peers: node/ (``npm ci`` from the pinned
package.json and package-lock.json beside this file) and venv/ (``pip install
-r requirements-peers.txt``). Each peer has a database of its own, dropped and
created again for every round. See README.md for the method and the caveats.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SCRATCH = Path("/tmp/outbox-peers")  # noqa: S108 (the scratch place, by design)
NODE_DIR = SCRATCH / "node"
VENV_DIR = SCRATCH / "venv"
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass(frozen=True)
class Engine:
    key: str
    name: str
    database: str
    runtime: str  # "node" or "python"
    script: str
    packages: tuple[str, ...]  # whose installed versions are recorded


ENGINES = {
    e.key: e
    for e in (
        Engine(
            "graphile", "graphile-worker", "peers_graphile", "node", "graphile_worker.mjs",
            ("graphile-worker", "pg"),
        ),
        Engine("pgboss", "pg-boss", "peers_pgboss", "node", "pgboss.mjs", ("pg-boss", "pg")),
        Engine(
            "pgqueuer", "pgqueuer", "peers_pgqueuer", "python", "pgqueuer_worker.py",
            ("pgqueuer", "asyncpg", "uvloop"),
        ),
        Engine(
            "procrastinate", "procrastinate", "peers_procrastinate", "python",
            "procrastinate_worker.py", ("procrastinate", "psycopg", "psycopg-pool", "uvloop"),
        ),
    )
}  # fmt: skip


@dataclass
class Config:
    engine: str
    label: str
    settings: dict[str, Any]
    # Set on the peer's database (ALTER DATABASE ... SET): outbox's worker runs its
    # own sessions with synchronous_commit off, so by default the peers do too.
    synchronous_commit: str = "off"
    rounds: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)


OUTBOX_DB = "peers_outbox"
GRAPHILE_BATCHED = {"localQueueSize": 500, "completeJobBatchDelay": 0, "failJobBatchDelay": 0}

# The settings each peer is measured at (each chosen from a --sweep; see README.md).
BEST: list[tuple[str, str, dict[str, Any]]] = [
    # The preset, and the best of the sweep of 2026-12-04 (local queue 1000).
    ("graphile", "batched", {"concurrency": 10, **GRAPHILE_BATCHED}),
    (
        "graphile",
        "batched queue 1000",
        {"concurrency": 10, **GRAPHILE_BATCHED, "localQueueSize": 1000},
    ),
    ("graphile", "plain", {"concurrency": 10}),
    ("pgboss", "batch", {"batchSize": 1000, "localConcurrency": 8, "burstWhenBatchFull": True}),
    ("pgqueuer", "batch", {"consumers": 5, "batch_size": 500}),
    ("procrastinate", "c5", {"concurrency": 5}),
]


def sweep_configs() -> list[tuple[str, str, dict[str, Any], str]]:
    """(engine, label, settings, synchronous_commit) for --sweep: one round each."""
    out: list[tuple[str, str, dict[str, Any], str]] = []

    def add(engine: str, label: str, settings: dict[str, Any], sync: str = "off") -> None:
        out.append((engine, label, settings, sync))

    batched = GRAPHILE_BATCHED
    for c in (5, 10, 20, 50):
        add("graphile", f"plain c{c}", {"concurrency": c})
    for c in (5, 10, 20, 50):
        add("graphile", f"batched c{c}", {"concurrency": c, **batched})
    for size in (100, 1000):
        add(
            "graphile",
            f"batched c10 queue {size}",
            {"concurrency": 10, **batched, "localQueueSize": size},
        )
    add("graphile", "batched c10 sync on", {"concurrency": 10, **batched}, "on")

    for batch, workers in ((100, 4), (500, 4), (1000, 1), (1000, 2), (1000, 4), (1000, 8)):
        s = {"batchSize": batch, "localConcurrency": workers, "burstWhenBatchFull": True}
        add("pgboss", f"burst batch {batch} x{workers}", s)
    s = {"batchSize": 1000, "localConcurrency": 4}
    add("pgboss", "polling 0.5 s batch 1000 x4", {**s, "burstWhenBatchFull": False})
    s2 = {**s, "burstWhenBatchFull": False, "pollingIntervalSeconds": 2}
    add("pgboss", "polling 2 s (its default) batch 1000 x4", s2)
    add("pgboss", "burst batch 1000 x4 sync on", {**s, "burstWhenBatchFull": True}, "on")

    for consumers, batch in ((1, 100), (2, 100), (5, 10), (5, 100), (5, 500), (10, 100)):
        add(
            "pgqueuer",
            f"{consumers} consumers batch {batch}",
            {"consumers": consumers, "batch_size": batch},
        )
    add("pgqueuer", "5 consumers batch 100 sync on", {"consumers": 5, "batch_size": 100}, "on")

    for c in (1, 2, 5, 10, 20, 50):
        add("procrastinate", f"c{c}", {"concurrency": c})
    add("procrastinate", "c10 pool 4 (psycopg default)", {"concurrency": 10, "pool_size": 0})
    add("procrastinate", "c10 delete successful", {"concurrency": 10, "delete_jobs": "successful"})
    add("procrastinate", "c10 sync on", {"concurrency": 10}, "on")
    return out


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_cmd(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)  # noqa: S603


def digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        if p.exists():
            h.update(p.read_bytes())
    return h.hexdigest()


# ---------------------------------------------------------------- environments


def setup_node(node: str) -> None:
    NODE_DIR.mkdir(parents=True, exist_ok=True)
    manifest, lock = HERE / "package.json", HERE / "package-lock.json"
    stamp = NODE_DIR / ".installed"
    want = digest(manifest, lock)
    if not (stamp.exists() and stamp.read_text() == want and (NODE_DIR / "node_modules").is_dir()):
        log(f"npm: installing the pinned Node peers into {NODE_DIR}")
        shutil.copy(manifest, NODE_DIR / "package.json")
        if lock.exists():
            shutil.copy(lock, NODE_DIR / "package-lock.json")
        npm = shutil.which("npm") or "npm"
        verb = "ci" if lock.exists() else "install"
        # The peers declare engines newer than Node 20 (see README.md); npm only warns.
        run_cmd([npm, verb, "--no-audit", "--no-fund", "--loglevel=error"], cwd=NODE_DIR)
        stamp.write_text(want)
    # The scripts are copied beside node_modules: ES modules resolve packages from
    # the importing file's own directory, not from the working directory.
    for script in HERE.glob("*.mjs"):
        shutil.copy(script, NODE_DIR / script.name)
    run_cmd([node, "--version"])


def setup_venv(python: str) -> None:
    req = HERE / "requirements-peers.txt"
    stamp = VENV_DIR / ".installed"
    want = digest(req)
    if stamp.exists() and stamp.read_text() == want:
        return
    log(f"pip: installing the pinned Python peers into {VENV_DIR}")
    if VENV_DIR.exists():
        shutil.rmtree(VENV_DIR)
    run_cmd([python, "-m", "venv", str(VENV_DIR)])
    pip = [str(VENV_DIR / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    run_cmd([*pip, "install", "--quiet", "-r", str(req)])
    stamp.write_text(want)


def installed_versions(runtimes: set[str], node: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "node" in runtimes:
        out["node"] = run_cmd([node, "--version"]).stdout.strip()
        for pkg in ("graphile-worker", "pg-boss", "pg"):
            meta = NODE_DIR / "node_modules" / pkg / "package.json"
            out[pkg] = json.loads(meta.read_text())["version"]
    if "python" in runtimes:
        code = (
            "import importlib.metadata as m, json, platform; print(json.dumps("
            "{'python': platform.python_version(), **{p: m.version(p) for p in "
            "('pgqueuer', 'procrastinate', 'asyncpg', 'psycopg', 'psycopg-pool', 'uvloop')}}))"
        )
        out.update(json.loads(run_cmd([str(VENV_DIR / "bin" / "python"), "-c", code]).stdout))
    return out


# -------------------------------------------------------------------- database


class Postgres:
    """The server, through psql (this script has no database driver of its own)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.psql = shutil.which("psql")
        if self.psql is None:
            sys.exit("psql is needed (PostgreSQL's client) to create and vacuum the databases")

    def db_url(self, database: str) -> str:
        base, _, _ = self.url.rpartition("/")
        return f"{base}/{database}"

    def sql(self, statement: str, database: str | None = None) -> str:
        url = self.db_url(database) if database else self.url
        cmd = [self.psql, url, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", statement]
        return run_cmd(cmd).stdout.strip()

    def recreate(self, database: str, synchronous_commit: str) -> None:
        self.sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        self.sql(f'CREATE DATABASE "{database}"')
        self.sql(f'ALTER DATABASE "{database}" SET synchronous_commit = {synchronous_commit}')

    def drop(self, database: str) -> None:
        self.sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

    def facts(self) -> dict[str, Any]:
        names = ("server_version", "synchronous_commit", "fsync", "shared_buffers", "max_wal_size")
        return {
            "version": self.sql("SELECT version()"),
            **{n: self.sql(f"SHOW {n}") for n in names},
        }


# ---------------------------------------------------------------------- peers


def worker_cmd(engine: Engine, node: str) -> tuple[list[str], Path]:
    if engine.runtime == "node":
        return [node, str(NODE_DIR / engine.script)], NODE_DIR
    return [str(VENV_DIR / "bin" / "python"), str(HERE / engine.script)], HERE


def last_json_line(text: str) -> dict[str, Any]:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("no JSON line in the output")


def run_phase(
    cmd: list[str], cwd: Path, timeout: float
) -> tuple[dict[str, Any] | None, str | None]:
    """One worker process; (its JSON line, None) or (None, why it failed). A worker
    that hangs past ``timeout`` is killed, with its whole process group."""
    proc = subprocess.Popen(  # noqa: S603
        cmd, cwd=cwd, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return None, f"timed out after {timeout:.0f} s; stderr: {err.strip()[-2000:]}"
    if proc.returncode != 0:
        return None, f"exit code {proc.returncode}; stderr: {err.strip()[-2000:]}"
    try:
        return last_json_line(out), None
    except ValueError as exc:
        return None, f"{exc}; stdout: {out.strip()[-500:]}; stderr: {err.strip()[-1500:]}"


def one_round(
    pg: Postgres, config: Config, n: int, node: str, timeout: float
) -> dict[str, Any] | str:
    """Schema, N jobs in bulk, VACUUM ANALYZE and CHECKPOINT, then the worker until
    it has started all N: the round's figures, or why it failed."""
    engine = ENGINES[config.engine]
    pg.recreate(engine.database, config.synchronous_commit)
    url = pg.db_url(engine.database)
    base, cwd = worker_cmd(engine, node)
    settings = json.dumps(config.settings)
    enq, why = run_phase([*base, "enqueue", url, str(n), settings], cwd, timeout)
    if enq is None:
        return f"enqueue: {why}"
    pg.sql("VACUUM ANALYZE", engine.database)
    pg.sql("CHECKPOINT", engine.database)
    res, why = run_phase([*base, "work", url, str(n), settings], cwd, timeout)
    if res is None:
        return f"work: {why}"
    if res["count"] != n:
        return f"work: {res['count']} of {n} jobs started"
    span = res["last"] - res["first"]
    drained = res.get("drained")
    return {
        "jobs_per_s": (n - 1) / span if span > 0 else float("inf"),
        # First start to the moment the queue showed no unfinished job (polled
        # every 10 ms after the last start): what finishing the tail costs.
        "jobs_per_s_to_drained": (n - 1) / (drained - res["first"]) if drained else None,
        "startup_s": res["first"] - res["started"],
        "enqueue_s": enq.get("seconds"),
        "duplicates": res["calls"] - res["count"],
        **{k: res[k] for k in ("count", "calls", "first", "last", "drained")},
    }


# --------------------------------------------------------------------- outbox


def find_outbox(given: str | None) -> str | None:
    if given:
        return given
    beside = Path(sys.executable).parent / "outbox"
    for candidate in (str(beside), shutil.which("outbox"), "/work/venv/bin/outbox"):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def run_outbox(
    binary: str, url: str, n: int, rounds: int, raw_path: Path, timeout: float
) -> dict[str, Any]:
    """`outbox bench drain` (one worker process vs its ceilings), its JSON kept."""
    cmd = [binary, "bench", "drain", "--database-url", url, "--messages", str(n)]
    cmd += ["--rounds", str(rounds), "--json"]
    log(f"outbox: {' '.join(cmd)}")
    env = {**os.environ, "OUTBOX_DATABASE_URL": url}
    try:
        proc = subprocess.run(  # noqa: S603
            cmd, env=env, text=True, capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {"command": cmd, "error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        return {"command": cmd, "error": f"exit {proc.returncode}: {proc.stderr.strip()[-2000:]}"}
    raw_path.write_text(proc.stdout)
    raw = json.loads(proc.stdout)
    drain = next(r for r in raw["results"] if r["scenario"] == "drain")

    def fig(name: str) -> dict[str, Any] | None:
        f = drain.get(name)
        return {"median": f["median"], "rounds": f["rounds"]} if f else None

    return {
        "command": cmd,
        "raw_json": str(raw_path),
        "concurrency": drain.get("concurrency"),
        "drain_worker": fig("drain_worker"),
        "drain_minimal_hot_path_ceiling": fig("drain_minimal_hot_path_ceiling"),
        "drain_raw_sql_ceiling": fig("drain_raw_sql_ceiling"),
        "drain_worker_cold_table": fig("drain_worker_cold_table"),
        "raw": raw,
    }


# ---------------------------------------------------------------------- report


def machine_facts() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    nproc = shutil.which("nproc")
    return {
        "nproc": int(run_cmd([nproc]).stdout) if nproc else os.cpu_count(),
        "cpu": cpu,
        "platform": platform.platform(),
        "driver_python": platform.python_version(),
        "load_average_at_start": os.getloadavg(),
    }


def median_or_none(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def settings_text(c: Config) -> str:
    parts = [f"{k}={json.dumps(v)}" for k, v in c.settings.items()]
    if c.synchronous_commit != "off":
        parts.append(f"synchronous_commit={c.synchronous_commit}")
    return ", ".join(parts)


def markdown(report: dict[str, Any]) -> str:
    ob = report.get("outbox") or {}
    ours = (ob.get("drain_worker") or {}).get("median")
    versions = report["versions"]
    lines = [
        f"{report['jobs']:,} no-op jobs, {report['rounds']} round(s), medians; "
        f"{report['machine']['nproc']} cores, PostgreSQL {report['postgresql']['server_version']}",
        "",
        "| engine | settings | rounds | median jobs/s | ratio to outbox's one worker |",
        "|---|---|---|---:|---:|",
    ]
    if ours is not None:
        rounds = len(ob["drain_worker"]["rounds"])
        conc = ob.get("concurrency")
        lines.append(
            f"| outbox (one worker) | `bench drain`, concurrency {conc} | {rounds} "
            f"| {ours:,.0f} | 1.00 |"
        )
        for key, label, how in (
            ("drain_minimal_hot_path_ceiling", "outbox: minimal hot path (ceiling)",
             "its own minimal tables, 2 loops, batches of 200"),
            ("drain_raw_sql_ceiling", "outbox: raw-SQL loop (ceiling)",
             "the real schema, 1 loop, batches of 500"),
        ):  # fmt: skip
            f = ob.get(key)
            if f:
                lines.append(
                    f"| {label} | {how} | {len(f['rounds'])} | {f['median']:,.0f} "
                    f"| {f['median'] / ours:.2f} |"
                )
    elif ob.get("error"):
        lines.append(f"| outbox | failed: {ob['error'][:80]} | | | |")
    for r in report["results"]:
        engine = ENGINES[r["engine"]]
        version = versions.get(engine.name, "?")
        med = r["median_jobs_per_s"]
        ok = len(r["rounds"])
        failed = len(r["failures"])
        rounds = f"{ok}" + (f" ({failed} failed)" if failed else "")
        rate = f"{med:,.0f}" if med is not None else "failed"
        ratio = f"{med / ours:.2f}" if (med is not None and ours) else ""
        lines.append(
            f"| {engine.name} {version} ({r['label']}) | {r['settings_text']} | {rounds} "
            f"| {rate} | {ratio} |"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--jobs", type=int, default=50_000, help="jobs per round (default 50,000)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per setting (default 3)")
    p.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(ENGINES)}")
    p.add_argument("--sweep", action="store_true", help="several settings per peer, one round each")
    p.add_argument(
        "--settings",
        action="append",
        default=[],
        metavar="ENGINE=JSON",
        help="measure ENGINE at these settings instead of its defaults (repeatable)",
    )
    p.add_argument(
        "--peer-synchronous-commit",
        choices=("off", "on"),
        default="off",
        help="synchronous_commit on the peers' databases (default off, as outbox's worker)",
    )
    p.add_argument("--skip-outbox", action="store_true", help="do not run `outbox bench drain`")
    p.add_argument("--out", type=Path, required=True, help="where to write the JSON report")
    p.add_argument("--database-url", default=DEFAULT_URL, help=f"(default {DEFAULT_URL})")
    p.add_argument("--outbox-bin", help="the outbox command (default: found beside python)")
    p.add_argument("--node", default=shutil.which("node") or "node", help="the node binary")
    p.add_argument("--python", default=sys.executable, help="base Python for the peers' venv")
    p.add_argument(
        "--timeout", type=float, default=900.0, help="seconds per worker process (default 900)"
    )
    p.add_argument("--keep-databases", action="store_true", help="leave the peers_* databases")
    return p.parse_args(argv)


def build_configs(a: argparse.Namespace, keys: list[str]) -> list[Config]:
    custom: dict[str, list[dict[str, Any]]] = {}
    for item in a.settings:
        engine, _, raw = item.partition("=")
        if engine not in ENGINES:
            sys.exit(f"--settings: unknown engine {engine!r}")
        custom.setdefault(engine, []).append(json.loads(raw))
    configs: list[Config] = []
    if a.sweep:
        for engine, label, s, sync in sweep_configs():
            if engine in keys and engine not in custom:
                configs.append(Config(engine, label, s, sync))
    else:
        for engine, label, s in BEST:
            if engine in keys and engine not in custom:
                configs.append(Config(engine, label, s, a.peer_synchronous_commit))
    for engine, items in custom.items():
        if engine in keys:
            for i, s in enumerate(items, 1):
                configs.append(Config(engine, f"custom {i}", s, a.peer_synchronous_commit))
    return configs


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    keys = [k.strip() for k in a.only.split(",") if k.strip()] or list(ENGINES)
    if unknown := [k for k in keys if k not in ENGINES]:
        sys.exit(f"--only: unknown engine(s) {unknown}; known: {', '.join(ENGINES)}")
    rounds = 1 if a.sweep else a.rounds
    configs = build_configs(a, keys)
    pg = Postgres(a.database_url)
    SCRATCH.mkdir(parents=True, exist_ok=True)

    runtimes = {ENGINES[c.engine].runtime for c in configs}
    if "node" in runtimes:
        setup_node(a.node)
    if "python" in runtimes:
        setup_venv(a.python)

    started = dt.datetime.now(dt.UTC)
    report: dict[str, Any] = {
        "benchmark": "peers",
        "date": started.isoformat(timespec="seconds"),
        "command": [sys.argv[0], *(sys.argv[1:] if argv is None else argv)],
        "jobs": a.jobs,
        "rounds": rounds,
        "sweep": a.sweep,
        "method": (
            "per round: the peer's database dropped and created, its schema installed, "
            "N jobs enqueued in bulk, VACUUM ANALYZE, CHECKPOINT, then one worker process "
            "started; each handler only records its start (wall clock). jobs/s = "
            "(N - 1) / (last start - first start); medians over rounds."
        ),
        "machine": machine_facts(),
        "postgresql": pg.facts(),
        "versions": installed_versions(runtimes, a.node),
        "outbox": None,
        "results": [],
    }

    if not a.skip_outbox:
        binary = find_outbox(a.outbox_bin)
        if binary is None:
            report["outbox"] = {"error": "no outbox command found (see --outbox-bin)"}
        else:
            raw_path = SCRATCH / f"outbox-drain-{started:%Y%m%dT%H%M%S}.json"
            timeout = a.timeout * max(1, rounds) * 4
            # A database of its own, as each peer has (not the server's default one).
            pg.recreate(OUTBOX_DB, "on")
            try:
                url = pg.db_url(OUTBOX_DB)
                report["outbox"] = run_outbox(binary, url, a.jobs, rounds, raw_path, timeout)
            finally:
                if not a.keep_databases:
                    pg.drop(OUTBOX_DB)
            if err := report["outbox"].get("error"):
                log(f"outbox failed: {err}")
            else:
                log(f"outbox drain_worker: {report['outbox']['drain_worker']['median']:,.0f}/s")

    try:
        # Rounds interleaved: round 1 of every setting, then round 2, ... so that the
        # machine's drift spreads over all of them alike.
        for r in range(rounds):
            for c in configs:
                tag = f"{ENGINES[c.engine].name} ({c.label}) round {r + 1}/{rounds}"
                t0 = time.monotonic()
                out = one_round(pg, c, a.jobs, a.node, a.timeout)
                if isinstance(out, str):
                    c.failures.append({"round": r + 1, "error": out})
                    log(f"{tag}: FAILED {out[:300]}")
                else:
                    c.rounds.append(out)
                    log(
                        f"{tag}: {out['jobs_per_s']:,.0f} jobs/s "
                        f"({time.monotonic() - t0:.1f} s with setup)"
                    )
    finally:
        if not a.keep_databases:
            for key in keys:
                pg.drop(ENGINES[key].database)

    for c in configs:
        report["results"].append(
            {
                "engine": c.engine,
                "name": ENGINES[c.engine].name,
                "label": c.label,
                "settings": c.settings,
                "synchronous_commit": c.synchronous_commit,
                "settings_text": settings_text(c),
                "median_jobs_per_s": median_or_none([x["jobs_per_s"] for x in c.rounds]),
                "median_jobs_per_s_to_drained": median_or_none(
                    [x["jobs_per_s_to_drained"] for x in c.rounds]
                ),
                "rounds": c.rounds,
                "failures": c.failures,
            }
        )
    ours = ((report["outbox"] or {}).get("drain_worker") or {}).get("median")
    for res in report["results"]:
        med = res["median_jobs_per_s"]
        res["ratio_to_outbox_worker"] = med / ours if (med is not None and ours) else None
    report["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    report["markdown"] = markdown(report)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=2) + "\n")
    print(report["markdown"])
    log(f"written: {a.out}")
    return 1 if any(c.failures for c in configs) else 0


if __name__ == "__main__":
    sys.exit(main())
