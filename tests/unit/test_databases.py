"""The databases one fleet serves: entries, names, and what is refused (without
ever echoing a URL, which may hold a password)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from outbox.deliver.metrics import Metrics
from outbox.errors import ConfigurationError
from outbox.settings import Settings
from outbox.settings.databases import default_name, parse_databases, split_urls

SECRET = "pw-9f3e"


def test_an_entry_is_a_url_or_a_named_url() -> None:
    dbs = parse_databases(
        [f"postgresql://app:{SECRET}@db1/orders", f"billing=postgres://app:{SECRET}@db2/app"]
    )
    assert [(d.name, d.url) for d in dbs] == [
        ("orders", f"postgresql://app:{SECRET}@db1/orders"),
        ("billing", f"postgres://app:{SECRET}@db2/app"),
    ]
    assert SECRET not in repr(dbs)


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("postgresql://u@h/shop", "shop"),
        ("postgresql://u@h1:5432,h2:5433/shop?target_session_attrs=read-write", "shop"),
        ("postgresql://h/?dbname=ledger", "ledger"),
        ("postgresql://alice:pw@h", "alice"),  # libpq: the database is the user's name
        ("postgresql://h", "postgres"),
        ("postgresql://u@h/caf%C3%A9", "café"),
    ],
)
def test_an_unnamed_database_is_named_as_its_url_names_it(url: str, name: str) -> None:
    assert default_name(url) == name


def test_entries_are_separated_by_whitespace_not_by_the_commas_of_a_multi_host_url() -> None:
    text = "a=postgresql://h1,h2/x\n  postgresql://h3/y\tb=postgresql://h4/z "
    assert [d.name for d in parse_databases(split_urls(text))] == ["a", "y", "b"]


def test_entries_may_be_separated_by_commas_as_the_design_writes_them() -> None:
    text = "postgresql://h1:5432,h2:5433/x?target_session_attrs=read-write,b=postgres://h4/z, postgresql://h5/w"
    assert [(d.name, d.url) for d in parse_databases(split_urls(text))] == [
        ("x", "postgresql://h1:5432,h2:5433/x?target_session_attrs=read-write"),
        ("b", "postgres://h4/z"),
        ("w", "postgresql://h5/w"),
    ]


@pytest.mark.parametrize(
    ("entries", "says"),
    [
        ([f"mysql://root:{SECRET}@h/db"], "database 1: must be a postgresql:// URL"),
        ([f"orders:postgresql://u:{SECRET}@h/db"], "database 1: must be a postgresql:// URL"),
        (
            ["ok=postgresql://h/a", f"bad name=postgresql://u:{SECRET}@h/b"],
            "database 2: a database.s name must be",
        ),
        (["postgresql://h1/shop", f"postgresql://u:{SECRET}@h2/shop"], "both named 'shop'"),
        ([], "no database configured"),
    ],
)
def test_a_bad_list_is_refused_naming_the_entry_and_never_showing_it(
    entries: list[str], says: str
) -> None:
    with pytest.raises(ConfigurationError, match=says) as caught:
        parse_databases(entries)
    assert SECRET not in str(caught.value)


def test_flags_come_before_database_urls_which_come_before_database_url() -> None:
    both = Settings(
        database_url="postgresql://h/one",  # type: ignore[arg-type]
        database_urls="a=postgresql://h/two b=postgresql://h/three",  # type: ignore[arg-type]
    )
    assert [d.name for d in both.databases()] == ["a", "b"]
    assert [d.name for d in both.databases(["postgresql://h/four"])] == ["four"]
    single = Settings(database_url="postgresql://h/one", database_name="main")  # type: ignore[arg-type]
    assert [(d.name, d.url) for d in single.databases()] == [("main", "postgresql://h/one")]


def test_a_one_database_command_takes_a_single_entry_but_will_not_guess_among_several() -> None:
    one = Settings(database_urls="x=postgresql://h/only")  # type: ignore[arg-type]
    assert one.require_database_url() == "postgresql://h/only"
    two = Settings(database_urls=f"x=postgresql://u:{SECRET}@h/a y=postgresql://h/b")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"names 2 databases \(x, y\)") as caught:
        two.require_database_url()
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    "url", ["postgresql://u@h/caf%C3%A9", "postgresql://user%40corp@h", "postgresql://h/app$1"]
)
def test_a_url_whose_database_name_cannot_name_it_must_be_named(url: str) -> None:
    with pytest.raises(ConfigurationError, match="give it one, as NAME=postgresql://"):
        parse_databases([url])
    assert parse_databases([f"shop={url}"])[0].name == "shop"


def test_a_bad_name_is_refused_without_being_shown() -> None:
    with pytest.raises(ConfigurationError, match="the name is not shown") as caught:
        parse_databases([f"u:{SECRET}@h=postgresql://h/db"])
    assert SECRET not in str(caught.value)


def test_a_blank_database_urls_is_unset_and_a_bad_one_is_checked_only_when_used() -> None:
    blank = Settings(database_url="postgresql://h/one", database_urls="  ")  # type: ignore[arg-type]
    assert [d.name for d in blank.databases()] == ["one"]
    bad = Settings(database_url="postgresql://h/one", database_urls="oops")  # type: ignore[arg-type]
    assert bad.require_database_url() == "postgresql://h/one"  # a one-database command
    with pytest.raises(ConfigurationError, match="database 1: must be a postgresql:// URL"):
        bad.databases()


def test_a_bad_database_name_setting_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="OUTBOX_DATABASE_NAME"):
        Settings(database_name="a b")


def test_every_metric_names_the_database_of_its_process() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry, database="orders")
    metrics.attempt("crm", "delivered", 12.0)
    metrics.attempt("crm", "dead", 3.0)
    metrics.claimed(5)
    metrics.delivering(1)
    metrics.endpoints([{"endpoint": "crm", "oldest_pending_seconds": 2.5, "pending": 7}])
    metrics.database({"holder_seconds": 0, "dead_rows": 10})
    text = generate_latest(registry).decode()
    series = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert series
    for line in series:
        assert 'database="orders"' in line, line
    assert 'outbox_attempts_total{database="orders",endpoint="crm",outcome="delivered"} 1.0' in text
