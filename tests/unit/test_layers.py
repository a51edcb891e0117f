"""The package's layers hold: who may import whom, and no import cycle.

Read from the source (``ast``), every import counted, also those inside a
function: a lazy import is still a dependency. Below, a package may import
only from the layers listed for it (and from itself); ``errors``, ``_redact``
and ``settings`` are the ground everything may stand on.
"""

from __future__ import annotations

import ast
from collections.abc import Collection, Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "outbox"
GROUND = {"outbox.errors", "outbox._redact", "outbox.settings"}
# What each part may import, besides itself and the ground.
ALLOWED: dict[str, set[str]] = {
    "outbox.settings": {"outbox.errors"},
    "outbox.db": set(),
    "outbox.produce": {"outbox.db"},
    "outbox.deliver": {"outbox.db"},
    "outbox.receive": {"outbox.deliver"},
    "outbox.web": {"outbox.db", "outbox.operate"},
    "outbox.operate": {"outbox.db", "outbox.produce", "outbox.deliver"},
    "outbox.cli": {
        "outbox.db",
        "outbox.produce",
        "outbox.deliver",
        "outbox.operate",
        "outbox.devtools",
        "outbox.web",
    },
    "outbox.devtools": {
        "outbox.db",
        "outbox.produce",
        "outbox.deliver",
        "outbox.operate",
        "outbox",
    },
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, known: Collection[str]) -> Iterator[str]:
    """Every outbox module ``path`` imports: ``from outbox.deliver import retention``
    counts as outbox.deliver.retention when that is a module, else as outbox.deliver."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.split(".")[0] == "outbox")
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != "outbox":
                continue
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                yield submodule if submodule in known else node.module


def part(module: str) -> str:
    """The layer a module belongs to: its subpackage, or the module itself at the top."""
    pieces = module.split(".")
    return ".".join(pieces[:2]) if len(pieces) > 1 else module


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_breaches(found: dict[str, Path]) -> list[str]:
    breaches = []
    for module, path in found.items():
        own = part(module)
        if own not in ALLOWED:
            continue
        allowed = ALLOWED[own] | GROUND | {own}
        for imported in imports(path, found):
            target = part(imported) if part(imported) in found or imported in found else imported
            if target == "outbox" and own != "outbox.devtools":
                # `import outbox` / `from outbox import X` (the public API) is above every layer.
                breaches.append(f"{module} imports the top package ({imported})")
            elif target != "outbox" and target not in allowed:
                breaches.append(f"{module} imports {imported}")
    return breaches


def cycles(found: dict[str, Path]) -> list[list[str]]:
    """Import cycles between modules (strongly connected groups of two or more)."""
    graph = {m: {i for i in imports(p, found) if i in found and i != m} for m, p in found.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in graph:
        if node not in index:
            visit(node)
    return groups


def test_every_layer_imports_only_what_is_below_it() -> None:
    assert layer_breaches(modules()) == []


def test_no_module_imports_itself_round_a_circle() -> None:
    assert cycles(modules()) == []


def test_the_rules_catch_a_breach_and_a_circle(tmp_path: Path) -> None:
    """The checks themselves: a deliver module importing the CLI, and two modules
    importing each other, are both reported."""
    worker = tmp_path / "worker.py"
    worker.write_text("from outbox.cli import main\n", encoding="utf-8")
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("import outbox.deliver.b\n", encoding="utf-8")
    b.write_text("from outbox.deliver import a\n", encoding="utf-8")
    found = {
        "outbox.deliver.worker": worker,
        "outbox.cli": tmp_path / "cli.py",
        "outbox.deliver.a": a,
        "outbox.deliver.b": b,
    }
    (tmp_path / "cli.py").write_text("", encoding="utf-8")
    assert layer_breaches(found) == ["outbox.deliver.worker imports outbox.cli"]
    assert cycles(found) == [["outbox.deliver.a", "outbox.deliver.b"]]


def test_no_module_is_longer_than_400_lines_nor_a_function_than_60() -> None:
    long = []
    for path in modules().values():
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) > 400:
            long.append(f"{path.relative_to(PACKAGE.parent)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > 60:
                    long.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}")
    assert long == []
