"""compose.yaml, the Dockerfile and the Prometheus config: what can be checked
without a Docker engine. The file validates against the Compose specification
(``docker-compose config``, Debian's package; CI installs it), every command
it runs parses as the command line the test suite exercises, and the image
installs the project the way the README says."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from outbox.cli import main
from outbox.devtools.receiver import command_line
from outbox.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"


def services() -> dict[str, Any]:
    spec = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    found: dict[str, Any] = spec["services"]
    return found


def outbox_args(service: dict[str, Any]) -> list[str]:
    """The arguments an `outbox` service passes to the image's `outbox` entrypoint."""
    assert "entrypoint" not in service
    return [str(a) for a in service["command"]]


def parse(args: list[str]) -> click.Context:
    """Parse ``outbox ARGS`` as click would, down to the subcommand, without running it."""
    ctx = click.Context(main, info_name="outbox")
    command: click.Command = main
    while isinstance(command, click.Group):
        name, *args = args
        sub = command.get_command(ctx, name)
        assert sub is not None, f"no command {name!r}"
        ctx = sub.make_context(name, list(args), parent=ctx)
        command = sub
    return ctx


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_compose_file_validates_against_the_compose_specification() -> None:
    done = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def test_every_outbox_command_in_compose_parses() -> None:
    found = services()
    migrate = parse(outbox_args(found["migrate"]))
    assert migrate.command.name == "migrate"
    worker = parse(outbox_args(found["worker"]))
    assert worker.command.name == "worker"
    assert worker.params["metrics_port"] == 9464
    receiver = found["receiver"]
    assert receiver["entrypoint"] == ["python", "-m", "outbox.devtools.receiver"]
    assert receiver["build"]["args"]["EXTRAS"] == "[demo]"  # the receiver is a devtool
    parsed = command_line().parse_args([str(a) for a in receiver["command"]])
    assert (parsed.host, parsed.port) == ("0.0.0.0", 8080)


def test_workers_stop_gracefully_and_report_health() -> None:
    worker = services()["worker"]
    grace = Settings().shutdown_grace
    assert worker["stop_signal"] == "SIGTERM"
    assert float(worker["stop_grace_period"].rstrip("s")) > grace
    assert worker["deploy"]["replicas"] >= 2
    assert "/healthz" in " ".join(worker["healthcheck"]["test"])
    assert worker["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    environment = worker["environment"]
    Settings(
        database_url=environment["OUTBOX_DATABASE_URL"],
        allow_networks=environment["OUTBOX_ALLOW_NETWORKS"],
        log_format=environment["OUTBOX_LOG_FORMAT"],
    )  # the values are ones our settings accept
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text(encoding="utf-8"))
    [job] = prometheus["scrape_configs"]
    assert job["dns_sd_configs"][0]["port"] == 9464
    assert job["dns_sd_configs"][0]["names"] == ["worker"]


def test_the_image_installs_the_project_as_the_readme_says() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    # The runtime dependencies only, unless the build asks for an extra.
    assert 'ARG EXTRAS=""' in dockerfile
    assert 'RUN pip install --no-cache-dir ".${EXTRAS}"' in dockerfile
    assert "`pip install --no-cache-dir .`" in readme
    for needed in ("COPY alembic ./alembic", "alembic.ini", "COPY outbox ./outbox"):
        assert needed in dockerfile  # `outbox migrate` needs the migrations in the image
    assert 'ENTRYPOINT ["outbox"]' in dockerfile
    assert "STOPSIGNAL SIGTERM" in dockerfile


def test_the_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [
        f"OUTBOX_{f.upper()}" for f in Settings.model_fields if f"OUTBOX_{f.upper()}" not in readme
    ]
    assert missing == []
